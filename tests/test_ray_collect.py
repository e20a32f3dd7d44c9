"""``inspo collect --backend ray`` writes the same bytes as the local process pool (local Ray, 2 CPUs)."""

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
        r for rs in run_chunks("bridge", {}, chunks, None, str(shipped), None, ship_files=True) for r in rs
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
