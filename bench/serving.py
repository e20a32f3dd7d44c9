"""Serving benchmark: one run prints every figure of docs/benchmarks.md (serving section) as ratios.

    .venv/bin/python bench/serving.py [--quick] [--pin] [--json out.json]

Servers run in their own processes on loopback (``--pin``: server on cpu0, clients on cpu1):
  1. unary Act, 1 agent: our runtime vs an empty grpc.aio handler of the same method (the floor);
  2. 64 agents per request (packed): decisions/s with 1, 4, 8 and 16 concurrent clients;
  1b/2b. the same two figures for a *minimal* model handler (decode the packed or per-agent
     observations, one ONNX Runtime call, answer; no validation, metrics, fallback or guardrails):
     what any handler that runs the model in this Python process costs on this machine, i.e. how much
     of each goal is reachable at all;
  3. in-process inference: our wrapper (LoadedModel.infer) vs raw session.run vs torch eager;
  4. ActStream ping-pong vs unary;
  5. dynamic batching off/on with 64 concurrent single-agent clients.
Model: PolicyNet obs 64, hidden 256x256, 8 actions, 64 agents (the reference MLP plus the agent one-hot).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OBS, AGENTS, ACTIONS = 64, 64, 8
IDS = [f"a{i}" for i in range(AGENTS)]
CONCURRENCY = (1, 4, 8, 16)  # concurrent clients for the 64-agent throughput figures


def make_model(repo: Path) -> None:
    import torch

    from contract.obs_reference import build_reference
    from trainer.export import export_policy
    from trainer.nets import PolicyNet

    torch.manual_seed(0)
    policy = PolicyNet(OBS, AGENTS, ACTIONS, hidden=(256, 256))
    # a training distribution, as an exported trained model has: the runtime then feeds its drift window
    reference = build_reference(np.random.default_rng(1).standard_normal((8192, OBS)), episode_rows=8192)
    meta = {"agent_ids": IDS, "env_id": "bench", "obs_reference": reference}
    export_policy(policy, meta, repo, "bench", 1, parity_samples=64)


# -- the empty handler (the floor) ------------------------------------------------------------
def empty_server(ready: str) -> None:

    from protos.inspo.runtime.v1 import policy_pb2

    async def act(request, context):
        return policy_pb2.ActResponse()

    async def stream(request_iterator, context):
        async for _ in request_iterator:
            yield policy_pb2.ActResponse()

    _serve(ready, act, stream)


def _serve(ready: str, act, stream=None) -> None:
    """A bare grpc.aio server with these PolicyService handlers on a free loopback port."""
    import grpc

    from protos.inspo.runtime.v1 import policy_pb2

    handlers = {
        "Act": grpc.unary_unary_rpc_method_handler(
            act, policy_pb2.ActRequest.FromString, policy_pb2.ActResponse.SerializeToString
        ),
    }
    if stream is not None:
        handlers["ActStream"] = grpc.stream_stream_rpc_method_handler(
            stream, policy_pb2.ActRequest.FromString, policy_pb2.ActResponse.SerializeToString
        )

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("inspo.runtime.v1.PolicyService", handlers),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        Path(ready).write_text(json.dumps({"port": port}))
        await server.wait_for_termination()

    asyncio.run(main())


# -- the minimal model handler (what inference alone costs inside a grpc.aio server) -------------
def minimal_server(ready: str, model_dir: str) -> None:
    """Decode, one ONNX Runtime call, answer: the least a handler that serves the model can do.

    Same model file, session options and native ``run`` as the runtime (``runtime.model``), agent
    lists resolved once per distinct list like the runtime's cache; nothing else.
    """
    import onnxruntime as ort

    from protos.inspo.runtime.v1 import policy_pb2
    from runtime.model import fast_run, session_options

    session = ort.InferenceSession(str(Path(model_dir) / "policy.onnx"), session_options(1, 1))
    run = fast_run(session)
    outputs = [o.name for o in session.get_outputs()]
    index = {a: k for k, a in enumerate(IDS)}
    resolved: dict[tuple, np.ndarray] = {}
    legal = np.ones((AGENTS, ACTIONS), dtype=bool)

    async def act(request, context):
        if request.HasField("packed"):
            ids = request.packed.agent_ids
            obs = np.frombuffer(request.packed.obs_raw, dtype="<f4").reshape(len(ids), OBS)
        else:
            ids = [item.agent_id for item in request.agents]
            obs = np.frombuffer(b"".join(item.obs_raw for item in request.agents), dtype="<f4")
            obs = obs.reshape(len(ids), OBS)
        key = tuple(ids)
        agents = resolved.get(key)
        if agents is None:
            agents = resolved[key] = np.fromiter((index[a] for a in ids), dtype=np.int64, count=len(ids))
        probs, action = run(outputs, {"obs": obs, "agent": agents, "action_mask": legal[: len(ids)]})
        response = policy_pb2.ActResponse(model=request.model, model_version="1")
        chosen = probs[np.arange(len(ids)), action].tolist()
        if request.HasField("packed"):
            response.packed.action.extend(action.tolist())
            response.packed.probability.extend(chosen)
        else:
            for a, k, c in zip(ids, action.tolist(), chosen, strict=True):
                response.actions.add(agent_id=a, action=k, probability=c)
        return response

    _serve(ready, act)


class Proc:
    def __init__(self, args: list[str], pin: str | None, tmp: Path, name: str):
        self.ready = tmp / f"{name}.ready"
        cmd = [sys.executable, *args, "--ready-file", str(self.ready)]
        if pin:
            cmd = ["taskset", "-c", pin, *cmd]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} server did not start")
            time.sleep(0.05)
        time.sleep(0.1)
        self.port = json.loads(self.ready.read_text())["port"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def runtime_server(tmp: Path, pin: str | None, name: str, batching: bool = False) -> Proc:
    from runtime.launch import free_port

    cfg = tmp / f"{name}.toml"
    cfg.write_text(
        f'model_repository = "{tmp / "models"}"\nport = 0\nmetrics_port = 0\npoll_interval_s = 0\n'
        f'metrics_agent_label = true\nlog_level = "WARNING"\n'
        f"[models.default.batching]\nenabled = {str(batching).lower()}\nmax_batch_size = 64\nmax_queue_delay_us = 500\n"
    )
    proc = Proc(
        ["-m", "runtime.server", "--config", str(cfg), "--metrics-port", str(free_port())], pin, tmp, name
    )
    return proc


def pct(samples: list[float]) -> tuple[float, float]:
    a = np.asarray(samples) * 1e6
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


# -- measurements ------------------------------------------------------------------------------
def unary_latency(port: int, n: int, warmup: int = 300) -> tuple[float, float]:
    from runtime.client import PolicyClient, build_request

    request = build_request("bench", np.zeros((1, OBS), np.float32), IDS[:1], deterministic=True)
    with PolicyClient(f"127.0.0.1:{port}") as c:
        for _ in range(warmup):
            c.act_raw(request)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            c.act_raw(request)
            times.append(time.perf_counter() - t0)
    return pct(times)


def stream_latency(port: int, n: int, warmup: int = 300) -> tuple[float, float]:
    from runtime.client import AsyncPolicyClient, build_request

    request = build_request("bench", np.zeros((1, OBS), np.float32), IDS[:1], deterministic=True)

    async def go():
        async with AsyncPolicyClient(f"127.0.0.1:{port}", timeout=None) as c:
            s = c.stream()
            for _ in range(warmup):
                await s.act_raw(request)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await s.act_raw(request)
                times.append(time.perf_counter() - t0)
            await s.close()
            return times

    return pct(asyncio.run(go()))


def aio_unary_latency(port: int, n: int, warmup: int = 300) -> tuple[float, float]:
    from runtime.client import AsyncPolicyClient, build_request

    request = build_request("bench", np.zeros((1, OBS), np.float32), IDS[:1], deterministic=True)

    async def go():
        async with AsyncPolicyClient(f"127.0.0.1:{port}") as c:
            for _ in range(warmup):
                await c.act_raw(request)
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await c.act_raw(request)
                times.append(time.perf_counter() - t0)
            return times

    return pct(asyncio.run(go()))


def throughput(port: int, concurrency: int, agents: int, seconds: float, packed: bool = True) -> dict:
    """Closed loop: ``concurrency`` tasks each send one request at a time for ``seconds``."""
    from runtime.client import AsyncPolicyClient, build_request

    rng = np.random.default_rng(0)
    requests = [
        build_request(
            "bench",
            rng.standard_normal((agents, OBS)).astype(np.float32),
            IDS[:agents] if agents > 1 else [IDS[k % AGENTS]],
            packed=packed,
        )
        for k in range(concurrency)
    ]

    async def go():
        async with AsyncPolicyClient(f"127.0.0.1:{port}") as c:
            for r in requests:
                await c.act_raw(r)
            times: list[float] = []
            stop = time.perf_counter() + seconds

            async def loop(r):
                while time.perf_counter() < stop:
                    t0 = time.perf_counter()
                    await c.act_raw(r)
                    times.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            await asyncio.gather(*(loop(r) for r in requests))
            return times, time.perf_counter() - t0

    times, elapsed = asyncio.run(go())
    p50, p99 = pct(times)
    return {
        "rps": len(times) / elapsed,
        "decisions_per_s": len(times) * agents / elapsed,
        "p50_us": p50,
        "p99_us": p99,
    }


def inference(repo: Path, n: int) -> dict:
    import onnxruntime as ort
    import torch

    from runtime.config import ModelConfig
    from runtime.model import load_version, session_options
    from trainer.nets import ExportedPolicy, PolicyNet

    torch.set_num_threads(1)
    model = load_version(repo / "bench" / "1", "bench", ModelConfig())
    raw = ort.InferenceSession(
        str(repo / "bench" / "1" / "policy.onnx"), session_options(1, 1), providers=["CPUExecutionProvider"]
    )
    torch.manual_seed(0)
    net = ExportedPolicy(PolicyNet(OBS, AGENTS, ACTIONS, hidden=(256, 256))).eval()
    out = {}
    for b in (1, 64):
        obs = np.random.default_rng(0).standard_normal((b, OBS)).astype(np.float32)
        agent = (np.arange(b) % AGENTS).astype(np.int64)
        mask = np.ones((b, ACTIONS), bool)
        feeds = {"obs": obs, "agent": agent, "action_mask": mask}
        t_obs, t_agent, t_mask = torch.from_numpy(obs), torch.from_numpy(agent), torch.from_numpy(mask)

        def bench(fn):
            for _ in range(300):
                fn()
            ts = []
            for _ in range(n):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            return pct(ts)

        def torch_call(t_obs=t_obs, t_agent=t_agent, t_mask=t_mask):
            with torch.no_grad():
                net(t_obs, t_agent, t_mask)

        # interleave to share the noise
        wrapper, session, eager = [], [], []
        for _ in range(3):
            wrapper.append(bench(lambda: model.infer(obs, agent, mask)))  # noqa: B023
            session.append(bench(lambda: raw.run(["probs", "action"], feeds)))  # noqa: B023
            eager.append(bench(torch_call))
        out[b] = {
            k: tuple(np.median(np.array(v), axis=0))
            for k, v in (("wrapper", wrapper), ("session_run", session), ("torch_eager", eager))
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run, noisier)")
    parser.add_argument("--pin", action="store_true", help="servers on cpu0, clients on cpu1 (taskset)")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--empty-server", help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", help=argparse.SUPPRESS)
    parser.add_argument("--minimal-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.empty_server:
        empty_server(args.ready_file)
        return
    if args.minimal_server:
        minimal_server(args.ready_file, args.minimal_server)
        return
    n = 1500 if args.quick else 5000
    secs = 1.5 if args.quick else 4.0
    server_cpu = "0" if args.pin else None
    if args.pin:
        os.sched_setaffinity(0, {1})
    results: dict = {"cpus": os.cpu_count(), "n": n, "seconds": secs, "pinned": args.pin}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_model(tmp / "models")
        results["inference_us"] = inference(tmp / "models", n)
        empty = Proc([__file__, "--empty-server", "1"], server_cpu, tmp, "empty")
        ours = runtime_server(tmp, server_cpu, "ours")
        minimal = Proc(
            [__file__, "--minimal-server", str(tmp / "models" / "bench" / "1")], server_cpu, tmp, "minimal"
        )
        try:
            # interleave floor and ours in rounds so drift hits both alike
            floor, act, floor_stream, act_stream, act_aio, least = [], [], [], [], [], []
            for _ in range(3):
                floor.append(unary_latency(empty.port, n // 3))
                act.append(unary_latency(ours.port, n // 3))
                least.append(unary_latency(minimal.port, n // 3))
                floor_stream.append(stream_latency(empty.port, n // 3))
                act_stream.append(stream_latency(ours.port, n // 3))
                act_aio.append(aio_unary_latency(ours.port, n // 3))
            med = lambda xs: tuple(float(v) for v in np.median(np.array(xs), axis=0))  # noqa: E731
            results["unary_1_agent_us"] = {
                "empty_handler": med(floor),
                "runtime": med(act),
                "runtime_aio_client": med(act_aio),
                "minimal_model_handler": med(least),
            }
            results["stream_1_agent_us"] = {"empty_handler": med(floor_stream), "runtime": med(act_stream)}
            # ours, the minimal model handler and the empty one (no model at all) under the same load,
            # interleaved per concurrency level; up to 16 clients to find each server's peak
            for key in ("packed_64_agents", "packed_64_agents_minimal", "packed_64_agents_empty"):
                results[key] = {}
            for c in CONCURRENCY:
                for key, port in (
                    ("packed_64_agents", ours.port),
                    ("packed_64_agents_minimal", minimal.port),
                    ("packed_64_agents_empty", empty.port),
                ):
                    results[key][c] = throughput(port, c, 64, secs)
            results["per_agent_64_agents"] = {
                c: throughput(ours.port, c, 64, secs, packed=False) for c in (1, 4)
            }
        finally:
            empty.stop()
            ours.stop()
            minimal.stop()
        batched = {}
        for on in (False, True):
            server = runtime_server(tmp, server_cpu, f"batch{int(on)}", batching=on)
            try:
                batched["on" if on else "off"] = throughput(server.port, 64, 1, secs)
            finally:
                server.stop()
        results["batching_64_single_agent_clients"] = batched
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


def report(r: dict) -> None:
    u, s, inf = r["unary_1_agent_us"], r["stream_1_agent_us"], r["inference_us"]
    print(f"serving benchmark ({r['cpus']} CPUs, pinned={r['pinned']}, {r['n']} calls per latency figure)")
    f50, f99 = u["empty_handler"]
    a50, a99 = u["runtime"]
    print(
        f"1. unary Act, 1 agent: runtime p50/p99 {a50:.0f}/{a99:.0f} µs vs empty grpc.aio handler {f50:.0f}/{f99:.0f} µs"
        f" -> ratio p50 {a50 / f50:.2f}x (goal <= 1.15x), p99 {a99 / f99:.2f}x; aio client {u['runtime_aio_client'][0]:.0f}/{u['runtime_aio_client'][1]:.0f} µs"
    )
    for c, v in r["packed_64_agents"].items():
        print(
            f"2. 64 agents/request (packed), {c} concurrent client(s): {v['decisions_per_s'] / 1e3:.0f}k decisions/s "
            f"({v['rps']:.0f} req/s, p50 {v['p50_us']:.0f} µs) (goal >= 150k/s with concurrency)"
        )
    m50, m99 = u["minimal_model_handler"]
    print(
        f"1b. minimal model handler (decode + session.run + answer) p50/p99 {m50:.0f}/{m99:.0f} µs -> {m50 / f50:.2f}x "
        f"the empty handler: the least any in-process model handler costs here; ours is {a50 / m50:.2f}x it"
    )
    for c, v in r["packed_64_agents"].items():
        least, empty = r["packed_64_agents_minimal"][c], r["packed_64_agents_empty"][c]
        print(
            f"2b. 64 agents/request, {c} client(s): minimal model handler {least['decisions_per_s'] / 1e3:.0f}k, "
            f"empty handler {empty['decisions_per_s'] / 1e3:.0f}k decisions/s -> ours is "
            f"{v['decisions_per_s'] / least['decisions_per_s']:.2f}x the minimal handler"
        )
    peak = {k: max(v["decisions_per_s"] for v in r[k].values()) for k in
            ("packed_64_agents", "packed_64_agents_minimal", "packed_64_agents_empty")}  # fmt: skip
    print(
        f"2c. peak over {len(r['packed_64_agents'])} concurrency levels: ours {peak['packed_64_agents'] / 1e3:.0f}k, "
        f"minimal model handler {peak['packed_64_agents_minimal'] / 1e3:.0f}k, empty handler "
        f"{peak['packed_64_agents_empty'] / 1e3:.0f}k decisions/s (goal >= 150k)"
    )
    for c, v in r["per_agent_64_agents"].items():
        print(
            f"   64 agents/request (per-agent messages), {c} client(s): {v['decisions_per_s'] / 1e3:.0f}k decisions/s"
        )
    for b, v in inf.items():
        w, sr, te = v["wrapper"], v["session_run"], v["torch_eager"]
        print(
            f"3. inference batch {b}: wrapper p50 {w[0]:.1f} µs vs session.run {sr[0]:.1f} µs -> {w[0] / sr[0]:.2f}x (goal <= 1.2x); "
            f"torch eager {te[0]:.1f} µs -> ORT wrapper is {te[0] / w[0]:.1f}x faster"
        )
    s50, s99 = s["runtime"]
    print(
        f"4. ActStream ping-pong p50/p99 {s50:.0f}/{s99:.0f} µs vs unary {a50:.0f}/{a99:.0f} µs -> {s50 / a50:.2f}x "
        f"(empty stream handler {s['empty_handler'][0]:.0f} µs -> {s50 / s['empty_handler'][0]:.2f}x floor)"
    )
    off, on = r["batching_64_single_agent_clients"]["off"], r["batching_64_single_agent_clients"]["on"]
    print(
        f"5. 64 concurrent single-agent clients: batching off {off['rps']:.0f} req/s p50 {off['p50_us']:.0f} µs p99 {off['p99_us']:.0f} µs; "
        f"on {on['rps']:.0f} req/s p50 {on['p50_us']:.0f} µs p99 {on['p99_us']:.0f} µs -> throughput {on['rps'] / off['rps']:.2f}x"
    )


if __name__ == "__main__":
    main()
