"""Training that streams a log from its row store (trainer/algos/store.py): the same rows and first
losses as the in-memory path on a log that fits, shards that move and resume exactly, and training
under a memory cap that the in-memory path cannot live with."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from streaming_helpers import write_wide_log

from trainer.algos import make_algorithm
from trainer.algos.data import build_transitions
from trainer.algos.store import RowStore, ShardCycle, exact_quantile, open_stored_log
from trainer.collect import collect
from trainer.logs import load_log
from trainer.train_loop import train

ENV = "elevator:cb10x4:downpeak"
TINY_INSPO = {
    "iterations": 4,
    "mu_steps": 20,
    "critic_warmup": 5,
    "local_q_steps": 2,
    "actor_steps": 2,
    "value_steps": 20,
    "adv_warmup": 10,
    "adv_members": 2,
    "batch_size": 64,
    "hidden": "32,32",
    "critic_hidden": "32,32",
}
TINY = {
    "bc": {"iterations": 4, "steps_per_iteration": 3, "batch_size": 64, "hidden": "32,32"},
    "inspo": TINY_INSPO,
    "inspo-residual": {**TINY_INSPO, "estimator": "residual"},
    "inspo-residual-credit": {**TINY_INSPO, "estimator": "residual", "reward_credit": "local"},
    "inspo-residual-linear": {
        **TINY_INSPO,
        "estimator": "residual",
        "adv_heads": "linear",
        "adv_refit_every": 2,
    },
}


@pytest.fixture(scope="module")
def small_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    collect(ENV, root / "log", "etd@eps=0.2", 8, env_kwargs={"hours": 0.05}, progress=False)
    return root / "log"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("INSPO_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("discount", ["step", "time"])
def test_stored_rows_are_the_in_memory_transitions(small_log, discount):
    horizon = 60.0 if discount == "time" else 0.0
    want = build_transitions(load_log(small_log), 0.97, discount=discount, horizon_s=horizon)
    stored = open_stored_log(small_log, 0.97, discount, horizon, budget_mb=64)
    got = ShardCycle(stored, None).load(0)
    assert got.reward_scale == want.reward_scale
    for name, value in vars(want).items():
        other = getattr(got, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value.nan_to_num(-7.0), other.nan_to_num(-7.0)), name
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other, err_msg=name)


def test_quantiles_by_counting_equal_numpys():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(size=997) * 1e3, [-0.0, 0.0, -5e-300, 7.0, 7.0]])
    for q in (0.0, 0.05, 0.5, 0.95, 1.0):
        assert exact_quantile(values, q, budget_rows=64) == np.quantile(values, q)  # counting passes
        assert exact_quantile(values, q, budget_rows=10_000) == np.quantile(values, q)  # in RAM


@pytest.mark.parametrize(
    "algo", ["bc", "inspo", "inspo-residual", "inspo-residual-credit", "inspo-residual-linear"]
)
def test_a_streamed_log_that_fits_trains_to_the_same_first_losses(small_log, tmp_path, algo):
    rows = {}
    for mode, data in (("memory", load_log(small_log)), ("streamed", small_log)):
        run = tmp_path / mode
        name = algo.split("-residual")[0]
        train(name, data, run, overrides=TINY[algo], seed=3, log_every=1, stop_after=1, progress=False)
        first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
        first.pop("time_s")
        rows[mode] = first
    assert len(rows["memory"]) >= 2 and rows["streamed"] == rows["memory"]  # iteration + every loss


def _weights(algo) -> list[torch.Tensor]:
    """Every module's parameters and buffers (the linear heads' coefficients are buffers)."""
    return [t.detach().clone() for m in algo.modules().values() for t in (*m.parameters(), *m.buffers())]


@pytest.mark.parametrize("algo", ["inspo-residual", "inspo-residual-linear"])
def test_shards_move_through_the_log_and_a_resumed_run_ends_where_an_uninterrupted_one_does(
    small_log, tmp_path, algo
):
    stored = open_stored_log(small_log, 0.99, "step", 0.0, budget_mb=2.5)  # 2-3 episodes per shard
    config = {**TINY[algo], "iterations": 6, "batch_size": 256}

    def fresh():
        algo = make_algorithm("inspo", None, {**config, "seed": 1})
        algo.setup(stored)
        return algo

    torch.set_num_threads(1)  # as inspo train does (trainer/threads.py): many threads crawl on 2 busy cores
    whole = fresh()
    assert len(whole.shards.ranges) >= 2
    seen = set()
    whole.fit(callback=lambda a, m: seen.add(a.shards.index))
    assert len(seen) >= 2  # it trained on more than one shard

    first = fresh()
    first.fit(3)
    first.save(tmp_path / "ckpt.pt")
    resumed = fresh()
    resumed.load(tmp_path / "ckpt.pt")
    resumed.fit()
    assert resumed.shards.state() == whole.shards.state()
    for a, b in zip(_weights(resumed), _weights(whole), strict=True):
        assert torch.equal(a, b)


def test_shards_are_runs_of_whole_episodes_within_the_budget():
    meta = {"rows": 50, "n_agents": 1, "obs_dim": 1, "n_actions": 1, "state_dim": 1}
    store = RowStore(Path("unused"), meta, np.array([0, 10, 20, 30, 40, 50]))  # 5 episodes of 10 rows
    rows = store.row_bytes()
    assert store.shards(100 * rows) == [(0, 5)]  # it fits: one shard, the in-memory case
    assert store.shards(25 * rows) == [(0, 2), (2, 4), (4, 5)]
    assert store.shards(25 * rows, min_episodes=2) == [(0, 2), (2, 4), (3, 5)]  # the tail borrows one
    assert store.shards(35 * rows, min_episodes=2) == [(0, 3), (3, 5)]


def test_a_budget_below_one_shard_is_a_clear_error(small_log):
    stored = open_stored_log(small_log, 0.99, "step", 0.0, budget_mb=0.01)
    with pytest.raises(ValueError, match=r"memory budget 0.01 MB is below one shard of 1 whole episode"):
        ShardCycle(stored, None)


CAP_MB = 700  # RLIMIT_DATA (anonymous memory) of the capped runs; torch and the interpreter take ~350 MB
_RUN = """
import sys
from trainer.logs import load_log
from trainer.train_loop import train
mode, algo, log, out = sys.argv[1:5]
data = load_log(log) if mode == "memory" else log
over = {over!r}[algo]
train(algo.removesuffix("-residual"), data, out, overrides=over, stop_after=2, progress=False, memory_budget_mb=80)
st = open("/proc/self/status").read()
print("VmData", st.split("VmData:")[1].split()[0])
"""


def _capped(args: list[str], env: dict) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_DATA, (CAP_MB << 20, CAP_MB << 20))

    return subprocess.run(args, capture_output=True, text=True, preexec_fn=limit, env=env, timeout=300)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_DATA caps anonymous memory on Linux")
@pytest.mark.parametrize(
    "episodes",
    [18, pytest.param(140, marks=pytest.mark.slow)],  # padded arrays 283 MB (0.4x the cap); 2.2 GB (3.1x)
)
def test_training_streams_a_log_the_in_memory_path_cannot_hold_under_a_memory_cap(tmp_path, episodes):
    log = tmp_path / "wide"
    write_wide_log(log, episodes=episodes, steps=1000, obs_dim=2048)  # 15.7 MB of arrays per episode
    env = {**os.environ, "INSPO_CACHE_DIR": str(tmp_path / "cache")}
    code = _RUN.replace("{over!r}", repr(TINY))

    def run(mode: str, algo: str) -> subprocess.CompletedProcess:
        out = str(tmp_path / f"{mode}-{algo}")
        return _capped([sys.executable, "-c", code, mode, algo, str(log), out], env)

    memory = run("memory", "bc")
    out_of_memory = ("MemoryError", "realloc of size", "can't allocate memory")  # numpy, Arrow, torch
    assert memory.returncode != 0 and any(m in memory.stderr for m in out_of_memory), memory.stderr[-1500:]
    for algo in ("bc", "inspo", "inspo-residual"):  # the first builds the cache and rows under the cap
        streamed = run("streamed", algo)
        assert streamed.returncode == 0, f"{algo}: {streamed.stderr[-1500:]}"
        assert (tmp_path / f"streamed-{algo}" / "checkpoints" / "last.pt").exists()
    inspect = _capped([sys.executable, "-m", "trainer.cli", "data", "inspect", str(log), "--json"], env)
    assert inspect.returncode == 0, inspect.stderr[-1500:]
    assert json.loads(inspect.stdout)["episodes"] == episodes
