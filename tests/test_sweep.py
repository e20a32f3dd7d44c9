"""``inspo sweep`` pieces that need no Ray: grid parsing, the ASHA rule, best.toml, the local backend."""

import pytest

from trainer.algos.config import config_dict, make_config
from trainer.integrations.sweep import LocalASHA, SweepSpec, parse_grid, validate_spec, write_best_toml


def test_parse_grid():
    assert parse_grid(["alpha=0.1,0.3,1", "beta=0, 0.3"]) == {
        "alpha": ["0.1", "0.3", "1"],
        "beta": ["0", "0.3"],
    }
    for bad in (["alpha"], ["alpha="], ["=1,2"], ["alpha=1", "alpha=2"], []):
        with pytest.raises(ValueError):
            parse_grid(bad)


def test_bad_specs_fail_before_training(tmp_path):
    spec = SweepSpec(data="x", algo="inspo", grid={"alpha": ["0.1"]}, seeds=[0], out=str(tmp_path))
    validate_spec(spec)
    for change in (
        {"grid": {"alhpa": ["1"]}},
        {"grid": {"seed": ["1"]}},
        {"metric": "eval/x"},
        {"seeds": []},
    ):
        with pytest.raises((KeyError, ValueError)):
            validate_spec(SweepSpec(**{**spec.__dict__, **change}))


def test_local_asha_keeps_the_top_third_at_each_rung():
    asha = LocalASHA(max_t=90, grace_period=10, reduction_factor=3, mode="max")
    assert asha.milestones == [10, 30]
    assert asha.keep_going(10, 0.5, set())  # the first trial at a rung always continues
    assert asha.keep_going(10, 0.9, set())
    assert not asha.keep_going(10, 0.1, set())  # below the 67th percentile of [0.5, 0.9]
    reached = set()
    assert asha.keep_going(10, 1.0, reached) and reached == {10}
    assert asha.keep_going(20, 0.0, reached)  # between milestones nothing is judged
    low = LocalASHA(max_t=90, grace_period=10, reduction_factor=3, mode="min")
    assert low.keep_going(10, 0.5, set()) and not low.keep_going(10, 0.9, set())


def test_best_toml_is_a_config_inspo_train_accepts(tmp_path):
    spec = SweepSpec(
        data="x",
        algo="inspo",
        grid={"alpha": ["0.3"], "beta": ["0"]},
        seeds=[0],
        out=str(tmp_path),
        overrides={"hidden": "16,16", "mu_floor": "0.01"},
        iterations=40,
    )
    path = write_best_toml(spec, {"alpha": "0.3", "beta": "0"}, tmp_path / "best.toml", "note\nline two")
    loaded = make_config("inspo", path)
    expected = spec.config_for({"alpha": "0.3", "beta": "0"})
    assert config_dict(loaded) == config_dict(expected)
    assert (
        loaded.alpha == 0.3 and loaded.beta == 0.0 and loaded.hidden == (16, 16) and loaded.iterations == 40
    )
    assert make_config("inspo", path, {"seed": 3}).seed == 3  # the seed stays the train command's
