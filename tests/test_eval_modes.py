"""``inspo eval`` honours a run directory's ``:sample`` / ``:greedy`` suffix (docs: ``inspo eval --help``)."""

import csv

import pytest

from trainer.cli import main


@pytest.fixture(scope="module")
def stochastic_run(tmp_path_factory):
    """BC on XOR's balanced log: the policy puts mass on both actions, so sampling differs from argmax."""
    from trainer.collect import collect

    root = tmp_path_factory.mktemp("modes")
    collect("xor", root / "log", controller="balanced", episodes=40, progress=False)
    argv = ["train", "--algo", "bc", "--data", str(root / "log"), "--out", str(root / "run")]
    assert main([*argv, "--set", "iterations=3", "--set", "hidden=8"]) == 0
    return root / "run"


def _episodes(tmp_path, name: str, *argv: str) -> dict[str, list[tuple[str, str]]]:
    out = tmp_path / name
    assert main(["eval", "--env", "xor", "--seeds", "16", "--out", str(out), *argv]) == 0
    rows: dict[str, list[tuple[str, str]]] = {}
    with (out / "episodes.csv").open() as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["controller"], []).append((row["seed"], row["return"]))
    return rows


def test_sample_suffix_samples_and_greedy_suffix_equals_the_plain_run(stochastic_run, tmp_path):
    run = str(stochastic_run)
    rows = _episodes(
        tmp_path,
        "eval",
        *("--controller", run, "--controller", f"{run}:sample", "--controller", f"{run}:greedy"),
    )
    assert rows[run] == rows[f"{run}:greedy"]  # argmax is the default
    assert rows[run] != rows[f"{run}:sample"]  # the suffix is honoured, not overridden
    assert len({r for _, r in rows[f"{run}:sample"]}) > 1  # sampled: both outcomes of XOR appear
    # --stochastic changes the default only: a :greedy suffix still wins, and the plain run now samples
    flipped = _episodes(
        tmp_path, "flipped", "--stochastic", "--controller", run, "--controller", f"{run}:greedy"
    )
    assert flipped[f"{run}:greedy"] == rows[run]
    assert flipped[run] == rows[f"{run}:sample"]
    # a glob of runs carries the suffix to every run it matches
    glob_rows = _episodes(tmp_path, "glob", "--controller", f"{run[:-1]}*:sample")
    assert list(glob_rows.values())[0] == rows[f"{run}:sample"]
