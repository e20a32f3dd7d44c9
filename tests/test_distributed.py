"""``inspo train --processes 2``: data-parallel BC (torch.distributed, gloo) ends where one process does."""

import json

import pytest
import torch

from trainer.cli import main
from trainer.collect import collect
from trainer.distributed import train_data_parallel

BC = ["--set", "iterations=6", "--set", "batch_size=128", "--set", "hidden=32,32", "--log-every", "1"]


def test_two_processes_train_bc_to_the_weights_of_one(tmp_path):
    log = tmp_path / "log"
    collect("elevator:cb10x4:downpeak", log, "etd@eps=0.2", 3, env_kwargs={"hours": 0.05}, progress=False)
    runs = {}
    for processes in (1, 2):
        out = tmp_path / f"run-{processes}"
        argv = ["train", "--algo", "bc", "--data", str(log), "--out", str(out), "--seed", "4", *BC]
        assert main([*argv, "--processes", str(processes)]) == 0
        state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        losses = [json.loads(line)["bc_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
        runs[processes] = (state["modules"]["actor"], losses, state["iteration"])
    one, two = runs[1], runs[2]
    assert one[2] == two[2] == 6 and (tmp_path / "run-2" / "policy" / "policy.json").exists()
    # the same batches, split and averaged: equal up to the order of float sums
    assert two[1] == pytest.approx(one[1], rel=1e-6)
    for name, value in one[0].items():
        torch.testing.assert_close(two[0][name], value, rtol=1e-5, atol=1e-6)
    # and it is not trivially equal: another seed trains elsewhere
    assert runs[1][1] != pytest.approx(
        [json.loads(x)["bc_loss"] for x in _other_seed(log, tmp_path).read_text().splitlines()], rel=1e-6
    )


def _other_seed(log, tmp_path):
    out = tmp_path / "other"
    argv = ["train", "--algo", "bc", "--data", str(log), "--out", str(out), "--seed", "5", *BC]
    assert main(argv) == 0
    return out / "metrics.jsonl"


def test_algorithms_whose_batches_do_not_split_are_refused(tmp_path):
    with pytest.raises(
        ValueError, match=r"\(--processes > 1, torchrun\) trains bc only .* train inspo with one"
    ):
        train_data_parallel("inspo", tmp_path, tmp_path / "run", 2)


def test_torchrun_starts_the_same_training_as_processes(tmp_path):
    """``torchrun ... -m trainer.cli train``: each rank joins the group from RANK/WORLD_SIZE (how
    several machines run it); on one machine it ends where ``--processes 2`` does."""
    import os
    import subprocess
    import sys

    log = tmp_path / "log"
    collect("elevator:cb10x4:downpeak", log, "etd@eps=0.2", 3, env_kwargs={"hours": 0.05}, progress=False)
    common = ["--algo", "bc", "--data", str(log), "--seed", "4", *BC]
    assert main(["train", *common, "--out", str(tmp_path / "spawned"), "--processes", "2"]) == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    run = subprocess.run(
        [*launcher, "-m", "trainer.cli", "train", *common, "--out", str(tmp_path / "torchrun")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("data-parallel training done") == 1  # rank 0 only
    spawned, launched = (
        torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=True)["modules"]["actor"]
        for name in ("spawned", "torchrun")
    )
    for name, value in spawned.items():
        assert torch.equal(launched[name], value), name  # the same group arithmetic, bit for bit
