"""SIGTERM under load on the real ``inspo-runtime`` process: health goes NOT_SERVING at once while calls
are still answered for the drain delay, no call sent before the signal fails, the decision log holds
exactly the decisions that were served, and liveness stays SERVING."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pyarrow.dataset as ds
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import AGENTS, OBS_DIM, export, make_run

from runtime.client import AsyncPolicyClient

ROOT = Path(__file__).resolve().parents[1]


def test_sigterm_drains_in_flight_calls_and_flushes_the_log(tmp_path):
    export(make_run(tmp_path / "run"), tmp_path / "models")
    # A 150 ms batching delay keeps many calls in flight at any moment.
    (tmp_path / "runtime.toml").write_text(
        f"""
model_repository = "{tmp_path / "models"}"
port = 0
metrics_port = 0
poll_interval_s = 0
grace_period_s = 10
drain_delay_s = 1.0
[decision_log]
dir = "{tmp_path / "log"}"
[models.default.batching]
enabled = true
max_batch_size = 4096
max_queue_delay_us = 150000
"""
    )
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.server",
            "--config",
            str(tmp_path / "runtime.toml"),
            "--ready-file",
            str(ready),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        port = json.loads(ready.read_text())["port"]
        results = {"served": 0, "failed_in_flight": [], "refused": 0, "served_after_signal": 0}
        sigterm_at = [float("inf")]

        async def client(k):
            async with AsyncPolicyClient(f"127.0.0.1:{port}", timeout=20) as c:
                t = 0
                while True:
                    started = time.monotonic()
                    try:
                        r = await c.act(
                            "grid", np.zeros((2, OBS_DIM)), AGENTS[:2], episode_id=f"ep{k}", t=t, packed=True
                        )
                    except grpc.RpcError as err:
                        if started < sigterm_at[0]:  # sent before the signal: it must be answered
                            results["failed_in_flight"].append((err.code(), sigterm_at[0] - started))
                        results["refused"] += 1
                        return
                    results["served"] += len(r.actions)
                    if started > sigterm_at[0]:
                        results["served_after_signal"] += 1
                    t += 1

        async def health(service: str) -> int:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
                check = health_pb2_grpc.HealthStub(ch).Check
                return (await check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status

        async def main():
            tasks = [asyncio.create_task(client(k)) for k in range(8)]
            await asyncio.sleep(1.0)
            sigterm_at[0] = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.sleep(0.3)  # within the drain delay: not ready, still alive, still answering
            results["health"] = (await health(""), await health("liveness"))
            await asyncio.wait_for(asyncio.gather(*tasks), 30)

        asyncio.run(main())
        assert proc.wait(30) == 0, proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert results["failed_in_flight"] == []
    assert results["served"] > 0 and results["served_after_signal"] > 0
    serving = health_pb2.HealthCheckResponse
    assert results["health"] == (serving.NOT_SERVING, serving.SERVING)
    # decisions without a reported outcome are written to the separate no-outcome log
    rows = sum(
        ds.dataset(tmp_path / "log" / "grid" / sub / "agent_steps", partitioning="hive").count_rows()
        for sub in (".", "no-outcome")
        if (tmp_path / "log" / "grid" / sub / "agent_steps").exists()
    )
    assert rows == results["served"]
