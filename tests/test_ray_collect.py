"""``inspo collect --backend ray`` writes the same bytes as the local process pool (local Ray, 2 CPUs)."""

import os
import signal
import subprocess
import sys

import pytest

ray = pytest.importorskip("ray")

from trainer.cli import main  # noqa: E402
from trainer.collect import collect, plan_chunks  # noqa: E402
from trainer.integrations.ray_collect import run_chunks  # noqa: E402


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for every Ray test module (start-up is slow); Ray shuts it down at exit."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    return ray


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.parquet"))}


def test_ray_collection_is_byte_identical_to_the_local_pool(ray_session, tmp_path):
    args = ["--env", "bridge", "--controller", "optimal,random", "--episodes", "40", "--seed", "7"]
    local = collect("bridge", tmp_path / "local", "optimal,random", 40, start_seed=7, progress=False)
    assert main(["collect", *args, "--out", str(tmp_path / "ray"), "--backend", "ray", "--workers", "2"]) == 0

    expected = _files(tmp_path / "local")
    assert len(expected) == 6  # 3 chunks of <= 16 episodes, agent_steps + env_steps each
    assert _files(tmp_path / "ray") == expected
    assert not list((tmp_path / "ray").glob(".ray-probe-*"))  # the probe file is removed

    # The path for clusters without a shared file system: part files come back through Ray.
    chunks = plan_chunks([("optimal,random", 40)], 7, 16)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    results = [
        r for rs in run_chunks("bridge", {}, chunks, None, str(shipped), None, 2, ship_files=True) for r in rs
    ]
    assert _files(shipped) == expected
    assert sorted((r.seed, r.episode_return) for r in results) == [(r.seed, r.episode_return) for r in local]

    other = collect("bridge", tmp_path / "other", "optimal,random", 40, start_seed=8, progress=False)
    assert other and _files(tmp_path / "other") != expected  # the comparison can tell logs apart


def test_the_core_never_imports_ray():
    code = (
        "import sys, trainer.cli, trainer.collect, trainer.logs, trainer.logs.stream, "
        "trainer.integrations.sweep, trainer.commands.collect, trainer.commands.sweep\n"
        "trainer.cli.build_parser()\n"
        "print('ray' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Its own Ray (2 CPUs) in a subprocess with a timeout: the old code hung on this, and a hang must fail.
_MORE_WORKERS_THAN_CPUS = """
import ray
from trainer.collect import collect
from trainer.integrations import ray_collect
ray_collect.PLACEMENT_TIMEOUT_S = 3.0
ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
results = collect("bridge", {out!r}, "random", 6, chunk_size=1, workers=3, backend="ray", progress=False)
print("seeds", sorted(r.seed for r in results))

@ray.remote(num_cpus=1)
class Hog:
    def ready(self):
        return True

hogs = [Hog.remote() for _ in range(2)]
ray.get([h.ready.remote() for h in hogs])
try:
    collect("bridge", {out!r} + "-busy", "random", 2, chunk_size=1, workers=3, backend="ray", progress=False)
except ValueError as err:
    print("error", err)
"""


def test_more_workers_than_free_cpus_finishes_and_a_full_cluster_is_a_clear_error(tmp_path):
    script = _MORE_WORKERS_THAN_CPUS.format(out=str(tmp_path / "log"))
    # Its own process group, so a hung run's Ray processes are killed with it.
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("a Ray collect with workers=3 on 2 CPUs did not finish in 120 s (unplaced actors hang)")
    assert proc.returncode == 0, stderr[-2000:]
    assert "seeds [0, 1, 2, 3, 4, 5]" in stdout
    assert "error the Ray cluster placed no collect worker in 3 s (2 CPUs in total, none free)" in stdout
    assert not (tmp_path / "log-busy").exists()  # nothing half-written
