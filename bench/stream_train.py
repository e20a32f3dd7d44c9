"""Streaming training (trainer/algos/store.py): throughput against the in-memory path, and peak memory
against log size.

    .venv/bin/python bench/stream_train.py [--sizes 6,18,54] [--iterations 40] [--out bench/.cache/stream]
        [--dp-iterations 150]

1. Throughput: BC samples/s (transitions drawn x steps) on the smallest log, three ways in one run:
   in memory (``load_log`` + ``build_transitions``), streamed with a budget the log fits (one shard),
   and streamed through shards of about a quarter of it (shard swaps included). Ratios against the
   first; the goal is >= 0.7x.
2. Memory: ``inspo train`` (BC, a few iterations) on synthetic wide logs of the given episode counts
   (1000 steps, 2 agents, obs 2048: 15.7 MB of padded arrays per episode), each in its own process,
   in memory vs streamed with a 64 MB budget (the row store built beforehand, as a second run finds
   it). Peak anonymous memory (RssAnon, polled every 20 ms) and peak RSS (VmHWM: memory-mapped file
   pages included; the kernel can drop those) per run; a PNG of both against the log's array size.
   Also the time to build the array cache and the row store (the one-off pass) per log.
3. Data-parallel: ``inspo train --processes 1`` vs ``2`` (BC on the middle log, wall time of the
   training loop measured from the metrics' ``time_s``, so process start-up is left out).
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "tests"))

BC = {"iterations": 1, "steps_per_iteration": 1, "batch_size": 256, "hidden": "64,64"}
_CHILD = """
import json, sys
from trainer.logs import load_log
from trainer.train_loop import train
mode, log, out, iterations = sys.argv[1:5]
data = load_log(log) if mode == "memory" else log
over = {**json.loads(sys.argv[5]), "iterations": int(iterations)}
train("bc", data, out, overrides=over, progress=False, memory_budget_mb=64, stop_after=int(iterations) - 1)
st = open("/proc/self/status").read()
print(json.dumps({"hwm_kb": int(st.split("VmHWM:")[1].split()[0])}))
"""


def _status_kb(pid: int, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(text.split(f"{key}:")[1].split()[0]) if f"{key}:" in text else 0


def peak_memory(mode: str, log: Path, out: Path, env: dict, iterations: int = 3) -> dict:
    """Run one training in a child; poll its anonymous memory; return the peaks in MB."""
    args = [sys.executable, "-c", _CHILD, mode, str(log), str(out), str(iterations), json.dumps(BC)]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    anon = 0
    while child.poll() is None:
        anon = max(anon, _status_kb(child.pid, "RssAnon"))
        time.sleep(0.02)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"{mode} training failed: {stderr[-800:]}")
    hwm = json.loads(stdout.strip().splitlines()[-1])["hwm_kb"]
    return {"anon_mb": anon / 1024, "rss_mb": hwm / 1024}


def throughput(log: Path, iterations: int) -> tuple[dict[str, float], dict[str, int]]:
    """BC samples/s in this process: in memory, streamed (one shard), streamed (about 4 shards)."""
    import torch

    from trainer.algos import make_algorithm
    from trainer.algos.store import open_stored_log
    from trainer.logs import load_log

    torch.set_num_threads(1)
    over = {**BC, "iterations": iterations, "steps_per_iteration": 10}
    stored = open_stored_log(log, 0.99, "step", 0.0, budget_mb=4096)
    episode = int(np.diff(stored.store.offsets).max()) * stored.store.row_bytes() / 2**20
    quarter = max(stored.store.rows * stored.store.row_bytes() / 4 / 2**20, episode * 1.01)
    sources = {
        "memory": load_log(log),
        "streamed, 1 shard": stored,
        "streamed, 1/4 budget": open_stored_log(log, 0.99, "step", 0.0, budget_mb=quarter),
    }
    out, shards = {}, {}
    for name, data in sources.items():
        algo = make_algorithm("bc", None, over)
        algo.setup(data)
        start = time.perf_counter()
        algo.fit()
        elapsed = time.perf_counter() - start
        out[name] = iterations * over["steps_per_iteration"] * over["batch_size"] / elapsed
        if algo.shards is not None:
            shards[name] = len(algo.shards.ranges)
    return out, shards


def data_parallel_rate(log: Path, out: Path, processes: int, iterations: int, env: dict) -> float:
    """BC samples/s of ``inspo train --processes N`` (training loop only: metrics' time_s)."""
    over = ["--set", f"iterations={iterations}", "--set", "batch_size=512", "--set", "hidden=64,64"]
    args = ["train", "--algo", "bc", "--data", str(log), "--out", str(out), *over, "--log-every", "10"]
    cli = [sys.executable, "-m", "trainer.cli", *args, "--processes", str(processes)]
    subprocess.run(cli, check=True, capture_output=True, env=env)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    samples = (last["iteration"] - first["iteration"]) * 10 * 512  # steps_per_iteration = 10
    return samples / (last["time_s"] - first["time_s"])


def main() -> None:
    from streaming_helpers import write_wide_log

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="6,18,54", help="episode counts of the synthetic logs")
    parser.add_argument("--iterations", type=int, default=40, help="BC iterations (10 steps each) for speed")
    parser.add_argument("--out", default="bench/.cache/stream", help="where the PNG and JSON go")
    parser.add_argument(
        "--dp-iterations", type=int, default=150, help="BC iterations for the data-parallel run"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="inspo-stream-bench-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "INSPO_CACHE_DIR": str(tmp / "cache")}
        os.environ["INSPO_CACHE_DIR"] = env["INSPO_CACHE_DIR"]
        from trainer.algos.store import open_stored_log
        from trainer.logs.stream import load_log_cached

        logs, build_s = {}, {}
        for episodes in sizes:
            logs[episodes] = tmp / f"log-{episodes}"
            write_wide_log(logs[episodes], episodes=episodes, steps=1000, obs_dim=2048)
            start = time.perf_counter()
            open_stored_log(logs[episodes], 0.99, "step", 0.0, budget_mb=64)  # the one-off pass, timed
            build_s[episodes] = time.perf_counter() - start

        speed, shards = throughput(logs[sizes[0]], args.iterations)
        base = speed["memory"]
        print(f"BC throughput on the {sizes[0]}-episode log ({args.iterations} iterations x 10 steps x 256):")
        for name, value in speed.items():
            note = f" ({shards[name]} shards)" if name in shards else ""
            print(f"  {name:22s} {value:9.0f} samples/s = {value / base:.2f}x in memory{note}")

        rows = []
        for episodes, log in logs.items():
            cache = load_log_cached(log).directory
            array_mb = sum(p.stat().st_size for p in cache.glob("*.npy")) / 2**20  # the padded arrays
            row = {"episodes": episodes, "array_mb": array_mb, "build_s": build_s[episodes]}
            for mode in ("memory", "streamed"):
                peaks = peak_memory(mode, log, tmp / f"run-{mode}-{episodes}", env)
                row.update({f"{mode}_{k}": v for k, v in peaks.items()})
            rows.append(row)
            print(
                f"log of {episodes:3d} episodes ({array_mb:6.0f} MB of arrays): peak anonymous memory "
                f"in memory {row['memory_anon_mb']:6.0f} MB, streamed {row['streamed_anon_mb']:5.0f} MB; "
                f"peak RSS {row['memory_rss_mb']:6.0f} / {row['streamed_rss_mb']:5.0f} MB; "
                f"cache + rows built in {row['build_s']:.1f} s ({array_mb / row['build_s']:.0f} MB/s of arrays)"
            )
        middle = logs[sizes[len(sizes) // 2]]
        parallel = {
            n: data_parallel_rate(middle, tmp / f"dp-{n}", n, args.dp_iterations, env) for n in (1, 2)
        }
        print(
            f"data-parallel BC on the {sizes[len(sizes) // 2]}-episode log: 1 process {parallel[1]:.0f} "
            f"samples/s, 2 processes {parallel[2]:.0f} samples/s = {parallel[2] / parallel[1]:.2f}x "
            f"(on {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})"
        )
    record = {"throughput": speed, "memory": rows, "data_parallel": parallel}
    (out_dir / "stream_train.json").write_text(json.dumps(record, indent=2))
    _plot(rows, out_dir / "stream_train_memory.png")
    print(f"wrote {out_dir / 'stream_train_memory.png'} and {out_dir / 'stream_train.json'}")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["array_mb"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, style in (("memory", "o-"), ("streamed", "s-")):
        ax.plot(x, [r[f"{mode}_anon_mb"] for r in rows], style, label=f"{mode}: peak anonymous")
        ax.plot(x, [r[f"{mode}_rss_mb"] for r in rows], style, alpha=0.4, label=f"{mode}: peak RSS")
    ax.set_xlabel("log's padded arrays (MB)")
    ax.set_ylabel("MB")
    ax.set_title("inspo train (BC) peak memory vs log size; streamed: --memory-budget 64", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
