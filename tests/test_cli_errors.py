"""Bad input to any ``inspo`` subcommand: one ``inspo <cmd>: error: ...`` line naming the argument or field,
a non-zero exit, no traceback, and nothing left behind; a real bug still shows its traceback."""

import argparse

import pytest

from trainer.cli import main, user_error_message


@pytest.fixture(scope="module")
def xor_log(tmp_path_factory):
    from trainer.collect import collect

    path = tmp_path_factory.mktemp("logs") / "xor"
    collect("xor", path, controller="balanced", episodes=20, progress=False)
    return path


@pytest.fixture(scope="module")
def xor_run(xor_log, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "bc"
    args = ["train", "--algo", "bc", "--data", str(xor_log), "--out", str(run), "--set", "iterations=2"]
    assert main([*args, "--set", "hidden=8"]) == 0
    return run


def _fails(capsys, argv: list[str], *expected: str) -> str:
    """Run ``inspo argv``; it must exit 2 with one error line holding every ``expected`` text. Returns stderr."""
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, f"inspo {' '.join(argv)} exited {code}: {err}"
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"inspo {argv[0]}"), err
    for text in expected:
        assert text in lines[0], lines[0]
    return err


def _collect(out, *extra: str) -> list[str]:
    return [
        "collect",
        "--env",
        "xor",
        "--controller",
        "balanced",
        "--episodes",
        "2",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--episodes", "-5"], ["--episodes", "-5"]),
        (["--episodes", "0"], ["--episodes", ">= 1"]),
        (["--episodes", "many"], ["--episodes", "'many'"]),
        (["--workers", "0"], ["--workers"]),
        (["--epsilon", "1.5"], ["--epsilon"]),
        (["--seed", "-1"], ["--seed -1"]),
        (["--controller", "balanced@eps=abc"], ["'balanced@eps=abc'", "eps", "'abc'"]),
        (["--controller", "balanced@eps=2"], ["'balanced@eps=2'", "epsilon"]),
        (["--controller", "balanced@temp=2"], ["'balanced@temp=2'", "temp"]),
        (["--controller", "nosuch"], ["'nosuch'"]),
        (["--env", "nosuch"], ["'nosuch'"]),
        (["--site", "../elsewhere"], ["--site", "'../elsewhere'"]),
        (["--env", "elevator:cb10x4:lunch", "--controller", "etd", "--env-arg", "colour=1"], ["colour"]),
    ],
)
def test_collect_rejects_bad_arguments_and_leaves_nothing(capsys, tmp_path, extra, expected):
    out = tmp_path / "log"
    err = _fails(capsys, _collect(out, *extra), *expected)
    assert "ep/s" not in err  # every check runs before the progress bar starts
    assert list(tmp_path.iterdir()) == []  # no --out folder, no staging folder


def test_collect_that_fails_midway_removes_what_it_wrote_but_keeps_an_existing_log(tmp_path, monkeypatch):
    import trainer.collect as collect_module

    log = tmp_path / "log"
    assert main(_collect(log)) == 0
    before = sorted(p.relative_to(log) for p in log.rglob("*"))
    real = collect_module.run_episode
    calls = {"n": 0}

    def failing_episode(env, controller, seed, writer=None):
        calls["n"] += 1
        if calls["n"] > 17:  # after a whole chunk (16 episodes) reached the disk
            raise RuntimeError("simulator crashed")
        return real(env, controller, seed, writer=writer)

    monkeypatch.setattr(collect_module, "run_episode", failing_episode)
    with pytest.raises(RuntimeError, match="simulator crashed"):  # a crash, not a user error: traceback
        main(_collect(log, "--episodes", "40", "--seed", "100"))
    assert calls["n"] == 18
    assert sorted(p.relative_to(log) for p in log.rglob("*")) == before  # the earlier log, untouched
    calls["n"] = 0
    with pytest.raises(RuntimeError, match="simulator crashed"):
        main(_collect(tmp_path / "new", "--episodes", "40"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["iterations=-1"], ["iterations", ">= 1", "-1"]),
        (["iterations=0"], ["iterations"]),
        (["iterations=abc"], ["iterations", "'abc'"]),
        (["lr=-0.1"], ["lr"]),
        (["lr=nan"], ["lr"]),
        (["hidden=a,b"], ["hidden"]),
        (["batch_size=0"], ["batch_size"]),
        (["nosuch=1"], ["'nosuch'"]),
        (["iterations"], ["--set", "'iterations'"]),
    ],
)
def test_train_rejects_bad_config_values_and_saves_nothing(capsys, xor_log, tmp_path, overrides, expected):
    argv = ["train", "--algo", "bc", "--data", str(xor_log), "--out", str(tmp_path / "run")]
    for item in overrides:
        argv += ["--set", item]
    _fails(capsys, argv, *expected)
    assert not (tmp_path / "run" / "policy").exists()


@pytest.mark.parametrize(
    "overrides, expected",
    [(["gamma=2"], ["gamma"]), (["update=foo"], ["update", "'foo'"]), (["mu_floor=0"], ["mu_floor"])],
)
def test_inspo_config_ranges(capsys, xor_log, tmp_path, overrides, expected):
    argv = ["train", "--algo", "inspo", "--data", str(xor_log), "--out", str(tmp_path / "run")]
    _fails(capsys, [*argv, *[x for o in overrides for x in ("--set", o)]], *expected)


def test_train_rejects_bad_paths_counts_and_config_files(capsys, xor_log, tmp_path):
    base = ["train", "--algo", "bc", "--data", str(xor_log), "--out", str(tmp_path / "run")]
    _fails(capsys, [*base[:4], str(tmp_path / "missing"), *base[5:]], "--data", "missing")
    _fails(capsys, [*base, "--config", str(tmp_path / "missing.toml")], "--config")
    bad = tmp_path / "bad.toml"
    bad.write_text("iterations = [\n")
    _fails(capsys, [*base, "--config", str(bad)], "bad.toml")
    for flag in ("--eval-episodes", "--log-every", "--checkpoint-every", "--stop-after"):
        _fails(capsys, [*base, flag, "0"], flag)
    _fails(capsys, [*base, "--threads", "-1"], "--threads")


def test_eval_export_ope_data_sweep_serve_reject_bad_arguments(capsys, xor_log, xor_run, tmp_path):
    ev = ["eval", "--env", "xor", "--controller"]
    _fails(capsys, [*ev, str(xor_run), "--seeds", "0"], "--seeds")
    _fails(capsys, [*ev, str(xor_run), "--seeds", "33"], "--seeds")
    _fails(capsys, [*ev, "balanced@eps=abc", "--seeds", "2"], "'balanced@eps=abc'", "'abc'")
    _fails(capsys, [*ev, str(tmp_path / "no-run"), "--seeds", "2"], "no-run")
    _fails(capsys, [*ev, f"{tmp_path / 'no-run'}:sample", "--seeds", "2"], "no-run")
    _fails(capsys, [*ev, "grpc://127.0.0.1:1/m", "--seeds", "1"], "grpc://127.0.0.1:1/m")
    ex = ["export", str(xor_run), "--models", str(tmp_path / "models"), "--name", "m"]
    _fails(capsys, [*ex[:1], str(tmp_path / "no-run"), *ex[2:]], "no-run")
    _fails(capsys, [*ex, "--version", "0"], "--version")
    _fails(capsys, [*ex, "--atol", "-1"], "--atol")
    assert not (tmp_path / "models").exists()
    ope = ["ope", "--policy", str(xor_run), "--data", str(xor_log)]
    _fails(capsys, [*ope[:3], "--data", str(tmp_path / "missing")], "--data")
    _fails(capsys, [*ope, "--gamma", "0"], "--gamma")
    _fails(capsys, [*ope, "--bootstrap", "-1"], "--bootstrap")
    _fails(capsys, ["ope", "--policy", f"{tmp_path / 'no-run'}:sample", *ope[3:]], "--policy", "no-run")
    _fails(capsys, ["data", "inspect", str(tmp_path / "missing")], "missing")
    _fails(capsys, ["data", "combine", "--out", str(tmp_path / "c"), str(xor_log), "--min-length", "0"])
    sweep = ["sweep", "--data", str(xor_log), "--algo", "bc", "--out", str(tmp_path / "sweep")]
    _fails(capsys, [*sweep, "--grid", "lr=abc"], "lr", "'abc'")
    _fails(capsys, [*sweep, "--grid", "lr=0.1", "--seeds", "0"], "--seeds")
    _fails(capsys, [*sweep, "--grid", "lr=0.1", "--reduction-factor", "1"], "--reduction-factor")
    _fails(capsys, ["serve", "--port", "-1"], "--port")
    _fails(capsys, ["serve", "--config", str(tmp_path / "missing.toml")], "missing.toml")


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only the project's own user errors become one line: a TypeError or a library's ValueError is a bug."""
    import numpy as np

    import trainer.commands.data as data_command

    def broken(args: argparse.Namespace) -> int:
        return np.zeros(2).reshape(3)  # ValueError raised inside numpy

    monkeypatch.setattr(data_command, "run_inspect", broken)
    with pytest.raises(ValueError, match="reshape"):
        main(["data", "inspect", "."])
    assert user_error_message(TypeError("unsupported operand")) is None
    try:
        raise ValueError("checked by the project")
    except ValueError as err:  # a `raise` in a test file is not the project's code either
        assert user_error_message(err) is None
    assert "missing.toml" in user_error_message(FileNotFoundError(2, "No such file", "missing.toml"))
