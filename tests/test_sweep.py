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


def test_trials_validate_on_the_env_the_log_was_collected_on(tmp_path):
    from trainer.collect import collect
    from trainer.integrations.sweep import validation_env
    from trainer.logs import load_log

    env_id = "elevator:cb10x4:downpeak"
    collect(env_id, tmp_path / "log", "etd", 1, env_kwargs={"hours": 0.05}, progress=False)
    data = load_log(tmp_path / "log")
    env = validation_env(data)
    assert env.site_spec == data.site_spec and env.site_spec["options"]["hours"] == 0.05
    default = validation_env(type(data)(**{**data.__dict__, "site_spec": None}))  # a log recording no site
    assert default.site_spec["options"]["hours"] != 0.05


def _config(value: str, mean: float, stopped_at: list[int], last: float) -> dict:
    done = not stopped_at
    return {
        "params": {"lr": value},
        "trials": 1,
        "completed": int(done),
        "mean": mean if done else float("nan"),
        "std": 0.0 if done else float("nan"),
        "stopped_at": stopped_at,
        "last_mean": last,
    }


def test_the_one_key_plot_shows_every_grid_point_and_marks_the_stopped_ones(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    from trainer.integrations.sweep import sweep_figure

    values = ["0.0003", "0.001", "0.003", "0.01", "0.03"]
    spec = SweepSpec(data="x", algo="bc", grid={"lr": values}, seeds=[0], out=str(tmp_path))
    configs = [
        _config("0.0003", -3.0, [], -3.0),
        _config("0.001", -2.0, [], -2.0),
        _config("0.003", float("nan"), [10], -5.0),
        _config("0.01", -1.0, [], -1.0),
        _config("0.03", float("nan"), [10, 30], -7.0),
    ]
    fig = sweep_figure(spec, configs)
    ax = fig.axes[0]
    try:
        assert [t.get_text() for t in ax.get_xticklabels()] == values  # every grid value on the axis
        line = ax.lines[0]
        assert list(line.get_xdata()) == [0.0003, 0.001, 0.01] and list(line.get_ydata()) == [-3, -2, -1]
        marks = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert [tuple(xy) for m in marks for xy in m.get_offsets()] == [(0.003, -5.0), (0.03, -7.0)]
        notes = sorted(t.get_text() for t in ax.texts)
        assert notes == ["stopped at 10", "stopped at 10,30"]
    finally:
        plt.close(fig)
