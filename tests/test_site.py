"""Bring your own site (issue 18): a site file describes the site, its resolved spec is recorded with
every log, run and model, and a policy is refused on a site whose inputs or actions mean something else."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from envs.elevator.config import PRESETS, PROFILES
from envs.elevator.traffic import generate
from envs.registry import make_env
from envs.site import SiteMismatchError, compare, to_toml
from trainer.cli import main
from trainer.logs.errors import LogValidationError
from trainer.rollout import run_episode

torch.set_num_threads(1)

SHORT = {"hours": 0.05, "warmup": 60.0}  # three simulated minutes: an episode in a fraction of a second
HQ = """\
env = "elevator"
name = "hq"

[building]  # a 16-floor tower with 6 cars of 13 persons, given by its physics
n_floors = 16
n_cars = 6
capacity = {capacity}
floor_height = 3.5
speed = 2.5
acceleration = 1.0
door_open = 1.8
door_close = 2.6

[traffic]
profile = "{profile}"
hours = 0.05
warmup = 60.0
"""


def _site(tmp: Path, name: str, capacity: int = 13, profile: str = "lunch") -> str:
    path = tmp / f"{name}.toml"
    path.write_text(HQ.format(capacity=capacity, profile=profile))
    return f"site:{path}"


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


def _data_columns(log: Path) -> dict:
    """Every row of a log (agent_steps and env_steps), without the schema metadata."""
    out = {}
    for kind in ("agent_steps", "env_steps"):
        files = sorted((log / kind).rglob("*.parquet"))
        out[kind] = [pq.read_table(f).replace_schema_metadata(None).to_pylist() for f in files]
    return out


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_builtin_preset_and_profile_is_expressible_as_a_site_file(preset, tmp_path):
    """The resolved spec of a built-in env, written as a site file, rebuilds the same building and traffic."""
    for profile in sorted(PROFILES):
        env = make_env(f"elevator:{preset}:{profile}:1.1")
        path = tmp_path / f"{preset}-{profile}.toml"
        path.write_text(to_toml(env.site_spec))
        site = make_env(f"site:{path}")
        assert site.env_id == "site:" + env.env_id.replace(":", "-")
        assert dataclasses.replace(site.building, name=preset) == env.building
        assert site.traffic.schedule() == env.traffic.schedule()
        assert site.traffic.start_hour == env.traffic.start_hour
        assert site.traffic.intensity == env.traffic.intensity == 1.1
        for seed in (0, 7):
            a, b = generate(env.building, env.traffic, seed), generate(site.building, site.traffic, seed)
            assert all(
                np.array_equal(x, y)
                for x, y in zip(dataclasses.astuple(a), dataclasses.astuple(b), strict=True)
            )
        options = {k: v for k, v in site.site_spec["options"].items() if k != "name"}
        assert options == {k: v for k, v in env.site_spec["options"].items() if k != "name"}


def test_hand_written_site_files_give_byte_identical_episodes(tmp_path):
    """office16x6 from its physics and the Crites & Barto down-peak table as demand bins: the same log rows."""
    bins = "".join(
        f"\n[[demand]]\nseconds = 300\npct5 = {n / 100}\nup = 0.0\ndown = 1.0\ninter = 0.0\n"
        for n in (1, 2, 4, 4, 18, 12, 8, 7, 18, 5, 3, 2)
    )
    site = tmp_path / "office.toml"
    site.write_text(
        'env = "elevator"\nname = "office"\nstart_hour = 17.0\nhours = 0.05\nwarmup = 60.0\n'
        "n_floors = 16\nn_cars = 6\ncapacity = 16\nfloor_height = 3.5\nspeed = 2.5\nacceleration = 1.0\n"
        "door_open = 1.8\ndoor_close = 2.6\nboarding_time = 1.2\npopulation_per_floor = 80.0\n" + bins
    )
    built = make_env(f"site:{site}")
    assert dataclasses.replace(built.building, name="office16x6") == PRESETS["office16x6"]
    from trainer.collect import collect

    collect(
        "elevator:office16x6:downpeak",
        tmp_path / "preset",
        "etd@eps=0.1",
        2,
        env_kwargs=SHORT,
        progress=False,
    )
    collect(f"site:{site}", tmp_path / "site", "etd@eps=0.1", 2, progress=False)
    assert _data_columns(tmp_path / "preset") == _data_columns(tmp_path / "site")


def test_custom_building_is_recorded_and_checked_from_collect_to_serving(tmp_path, capsys):
    hq = _site(tmp_path, "hq")
    log, run = tmp_path / "logs" / "hq", tmp_path / "runs" / "hq"
    code, err = _cli(
        capsys, "collect", "--env", hq, "--controller", "etd@eps=0.2", "--episodes", "3", "--out", str(log)
    )
    assert code == 0, err

    # the log's metadata and the dataset card hold the resolved building, not a preset's name
    part = next((log / "agent_steps").rglob("*.parquet"))
    spec = json.loads(pq.read_schema(part).metadata[b"site_spec"])
    assert spec["env_id"] == "site:hq" and spec["family"] == "elevator"
    assert (spec["options"]["n_floors"], spec["options"]["n_cars"], spec["options"]["capacity"]) == (
        16,
        6,
        13,
    )
    assert spec["options"]["floor_time"] == 3.5 / 2.5 and spec["options"]["profile"] == "lunch"
    assert main(["data", "inspect", str(log), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["site_spec"] == spec and card["env_id"] == "site:hq"
    assert main(["data", "inspect", str(log)]) == 0
    assert "capacity *" in capsys.readouterr().out

    # train evaluates on the log's own site (from its metadata) and records it in the run directory
    train = ["train", "--algo", "bc", "--data", str(log), "--out", str(run), "--set", "iterations=4"]
    code, err = _cli(capsys, *train, "--set", "hidden=16,16", "--eval-every", "4", "--eval-episodes", "1")
    assert code == 0, err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "eval/return" in rows[-1]
    assert json.loads((run / "config.json").read_text())["site_spec"] == spec
    policy = json.loads((run / "policy" / "policy.json").read_text())
    assert policy["site_spec"] == spec and len(policy["agent_ids"]) == 6

    # eval: the same site runs; equal sizes but capacity 20 is refused naming the field; another demand is said
    code, err = _cli(capsys, "eval", "--env", hq, "--controller", str(run), "--seeds", "1")
    assert code == 0, err
    other = _site(tmp_path, "hq20", capacity=20)
    code, err = _cli(capsys, "eval", "--env", other, "--controller", str(run), "--seeds", "1")
    assert code == 2 and "site mismatch: capacity 13 (policy) vs 20 (env)" in err and "Traceback" not in err
    down = _site(tmp_path, "hq-down", profile="downpeak")
    code, err = _cli(capsys, "eval", "--env", down, "--controller", str(run), "--seeds", "1")
    assert code == 0 and 'profile "lunch" -> "downpeak"' in err and "same site structure" in err
    # the same building through --env-arg on a preset id: checked the same way
    sized = ["--env-arg", "n_floors=16", "--env-arg", "n_cars=6", "--env-arg", "capacity=13"]
    code, err = _cli(
        capsys, "eval", "--env", "elevator:cb10x4:lunch", *sized, "--controller", str(run), "--seeds", "1"
    )
    assert code == 2 and "site mismatch: floor_time 1.4 (policy) vs 1.45 (env)" in err

    # --env-arg alone changes options of the log's own site: another demand is said, another capacity refused
    code, err = _cli(
        capsys,
        *train[:-4],
        "--out",
        str(tmp_path / "run3"),
        "--set",
        "iterations=1",
        "--env-arg",
        "intensity=2",
    )
    assert code == 0 and "intensity 1.0 -> 2.0" in err
    code, err = _cli(capsys, *train[:-4], "--out", str(tmp_path / "run4"), "--env-arg", "capacity=20")
    assert code == 2 and "evaluation env: site mismatch: capacity 13 (log) vs 20 (env)" in err

    # off-policy evaluation refuses a log of another building
    log20 = tmp_path / "logs" / "hq20"
    code, err = _cli(
        capsys,
        "collect",
        "--env",
        other,
        "--controller",
        "etd@eps=0.2",
        "--episodes",
        "1",
        "--out",
        str(log20),
    )
    assert code == 0, err
    code, err = _cli(capsys, "ope", "--policy", str(run), "--data", str(log20))
    assert code == 2 and "site mismatch: capacity 13 (policy) vs 20 (log)" in err

    # train refuses to evaluate on another building than the log's
    code, err = _cli(
        capsys, *train[:-4], "--out", str(tmp_path / "run2"), "--env", other, "--eval-every", "4"
    )
    assert code == 2 and "evaluation env: site mismatch: capacity 13 (log) vs 20 (env)" in err

    # the model repository's policy.json carries the spec; in-process ONNX and gRPC clients check it
    from trainer.demo import start_runtime
    from trainer.export import export_run
    from trainer.served_policies import grpc_controller, onnx_controller

    version = export_run(run, tmp_path / "models", "hq")
    assert json.loads((version / "policy.json").read_text())["site_spec"] == spec
    wrong, same_building = make_env(other), make_env(down)
    with pytest.raises(SiteMismatchError, match="capacity 13 \\(policy\\) vs 20 \\(env\\)"):
        onnx_controller(version, wrong)
    onnx_controller(version, same_building)
    assert "same site structure" in capsys.readouterr().err
    runtime = start_runtime(tmp_path / "models", tmp_path / "decision-log", tmp_path)
    try:
        with pytest.raises(SiteMismatchError, match="capacity 13 \\(policy\\) vs 20 \\(env\\)"):
            grpc_controller(f"{runtime.url}/hq", wrong)
        served = grpc_controller(f"{runtime.url}/hq", make_env(hq), deterministic=False, report_outcomes=True)
        run_episode(make_env(hq), served, 0)
        served.close()
    finally:
        runtime.stop()  # graceful: flushes the decision log
    # the runtime's decision log records the served model's site
    from trainer.logs import load_log

    assert load_log(tmp_path / "decision-log" / "hq").site_spec == spec


def test_a_log_mixing_two_buildings_is_refused_naming_the_field(tmp_path):
    from trainer.collect import collect
    from trainer.logs import load_log
    from trainer.logs.combine import combine_logs

    hq = _site(tmp_path, "hq")
    log = tmp_path / "log"
    collect(hq, log, "etd", 1, progress=False)
    files = sorted(log.rglob("*.parquet"))
    with pytest.raises(ValueError, match="site mismatch: capacity 13 .* vs 20 \\(this collection\\)"):
        collect(hq, log, "etd", 1, start_seed=1, progress=False, env_kwargs={"capacity": 20})
    assert sorted(log.rglob("*.parquet")) == files  # refused before anything ran
    collect(
        hq, log, "etd", 1, start_seed=1, progress=False, env_kwargs={"intensity": 2.0}
    )  # other demand: fine
    # a log mixed by other means is refused when read
    collect(hq, tmp_path / "other", "etd", 1, start_seed=2, progress=False, env_kwargs={"capacity": 20})
    for part in (tmp_path / "other").rglob("*.parquet"):
        target = log / part.relative_to(tmp_path / "other")
        target.parent.mkdir(parents=True, exist_ok=True)
        part.rename(target)
    with pytest.raises(LogValidationError, match="site_spec: site mismatch: capacity 13 .* vs 20"):
        load_log(log)
    # inspo data combine keeps the site of logs that share it and refuses to mix buildings
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    collect(hq, a, "etd", 1, progress=False)
    collect(hq, b, "etd", 1, start_seed=1, progress=False, env_kwargs={"capacity": 20})
    collect(hq, c, "etd", 1, start_seed=2, progress=False, env_kwargs={"intensity": 2.0})
    combine_logs(tmp_path / "ac", [a, c])
    assert load_log(tmp_path / "ac").site_spec == load_log(a).site_spec
    with pytest.raises(
        ValueError, match="cannot combine logs of different sites: site mismatch: capacity 13"
    ):
        combine_logs(tmp_path / "ab", [a, b])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--env", "elevator:cb10x4:lunch", "--env-arg", "n_cars=abc"],
            "elevator option n_cars expects an integer",
        ),
        (
            ["--env", "elevator:cb10x4:lunch", "--env-arg", "colour=red"],
            "unknown elevator options colour; known:",
        ),
        (
            ["--env", "elevator:cb10x4:lunch", "--env-arg", "lobby_floors=x"],
            "option lobby_floors expects a list",
        ),
        (["--env", "xor", "--env-arg", "n_actions=3"], "xor option n_actions expects 2 (from payoff)"),
        (["--env", "xor", "--env-arg", "payoff=[[1,0],[-2]]"], "xor option payoff expects a payoff table"),
        (["--env", "mne", "--env-arg", "payoff=[[1,0],[-2,1]]"], "mne option payoff expects shape [3, 3]"),
        (["--env", "bridge", "--env-arg", "size=3"], "unknown bridge options size; known: none"),
        (
            ["--env", "sumo:grid4x4", "--env-arg", "num_seconds=abc"],
            "sumo option num_seconds expects an integer",
        ),
        (["--env", "site:missing.toml"], "site file not found: missing.toml"),
    ],
)
def test_bad_env_options_are_one_line_errors(args, expected, tmp_path, capsys):
    for command in (
        ["eval", "--controller", "random", "--seeds", "1"],
        ["collect", "--controller", "random", "--episodes", "1", "--out", str(tmp_path / "log")],
    ):
        code, err = _cli(capsys, *command, *args)
        assert code == 2 and expected in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1, err


def test_a_payoff_table_game_needs_no_code(tmp_path, capsys):
    """A 3-agent game from a site file collects and trains; a relabelled XOR comes from --env-arg."""
    site = tmp_path / "three.toml"
    site.write_text(
        'env = "matrix"\nname = "three"\naction_names = ["left", "right"]\n'
        "payoff = [[[0, 0], [0, 1]], [[0, 1], [1, 3]]]  # all three pick right: 3\n"
    )
    log, run = tmp_path / "log", tmp_path / "run"
    code, err = _cli(
        capsys,
        "collect",
        "--env",
        f"site:{site}",
        "--controller",
        "uniform",
        "--episodes",
        "64",
        "--out",
        str(log),
    )
    assert code == 0, err
    train = ["train", "--algo", "bc", "--data", str(log), "--out", str(run), "--set", "iterations=3"]
    code, err = _cli(capsys, *train, "--set", "hidden=8,8", "--eval-every", "3", "--eval-episodes", "1")
    assert code == 0, err
    policy = json.loads((run / "policy" / "policy.json").read_text())
    assert policy["agent_ids"] == ["agent_0", "agent_1", "agent_2"] and policy["action_names"] == [
        "left",
        "right",
    ]
    assert policy["site_spec"]["options"]["n_agents"] == 3
    # a 2-agent game with 2 actions is another game for this policy
    code, err = _cli(
        capsys, "eval", "--env", "matrix", "--env-arg", "payoff=[[1,0],[0,1]]", "--controller", str(run)
    )
    assert code == 2 and "site mismatch: n_agents 3 (policy) vs 2 (env)" in err

    relabelled = tmp_path / "xor"
    code, err = _cli(
        capsys, "collect", "--env", "xor", "--env-arg", "payoff=[[1,0],[-2,1]]", "--env-arg", 'action_names=["L","R"]',
        "--controller", "uniform", "--episodes", "4", "--out", str(relabelled),
    )  # fmt: skip
    assert code == 0, err
    assert main(["data", "inspect", str(relabelled), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["action_names"] == ["L", "R"] and card["site_spec"]["options"]["payoff"] == [
        [1.0, 0.0],
        [-2.0, 1.0],
    ]


@pytest.mark.parametrize("env_id", ["xor", "mne", "bridge"])
def test_games_round_trip_through_site_files(env_id, tmp_path):
    env = make_env(env_id)
    (tmp_path / "game.toml").write_text(to_toml(env.site_spec))
    site = make_env(f"site:{tmp_path / 'game.toml'}")
    assert (
        site.site_spec["options"] == env.site_spec["options"] and site.possible_agents == env.possible_agents
    )


def test_a_two_floor_building_runs():
    """One upper floor: no inter-floor trips (generating them used to misalign the passenger arrays)."""
    from envs.controllers import build_controller

    env = make_env("elevator:cb10x4:lunch", n_floors=2, hours=0.05, warmup=60.0)
    assert run_episode(env, build_controller("elevator:cb10x4:lunch", "etd"), 0).metrics["passengers"] > 0


def test_floor_shares_weight_the_upper_floors():
    shares = [0.0] * 8 + [1.0]  # every upper-floor trip end on the top floor
    env = make_env("elevator:cb10x4:downpeak", floor_shares=shares, warmup=0.0)
    people = generate(env.building, env.traffic, 3)
    assert len(people) > 100 and set(people.origin.tolist()) == {9} and set(people.dest.tolist()) == {0}
    with pytest.raises(ValueError, match=r"floor_shares expects 9 values \(one per upper floor\), got 2"):
        make_env("elevator:cb10x4:downpeak", floor_shares=[0.5, 0.5])
    with pytest.raises(ValueError, match="floor_shares expects .*they sum to 0.5, not 1"):
        make_env("elevator:cb10x4:downpeak", floor_shares=[0.5])


def test_demand_differences_are_notes_and_structure_differences_refusals():
    base = make_env("elevator:cb10x4:lunch").site_spec
    assert compare(base, base) is None
    note = compare(base, make_env("elevator:cb10x4:downpeak", intensity=1.3, backend="numpy").site_spec)
    assert note and "intensity 1.0 -> 1.3" in note and "backend" not in note
    for option, value in (("n_floors", 12), ("capacity", 16), ("stop_time", 6.0), ("assignment_obs", False)):
        with pytest.raises(SiteMismatchError, match=f"site mismatch: {option} "):
            compare(base, make_env("elevator:cb10x4:lunch", **{option: value}).site_spec)
    with pytest.raises(SiteMismatchError, match="family elevator \\(policy\\) vs xor"):
        compare(base, make_env("xor").site_spec)


@pytest.mark.sumo
@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in ("sumo_rl", "libsumo", "sumo")), reason="SUMO not installed"
)
def test_a_sumo_site_is_its_files_contents(tmp_path):
    """Run in a subprocess (libsumo: one simulation per process, and this test process never loads it)."""
    script = textwrap.dedent(
        f"""
        import json, shutil
        from pathlib import Path
        from envs.registry import make_env
        from envs.site import SiteMismatchError, compare
        from envs.traffic.nets import builtin_net

        net, route, _ = builtin_net("grid4x4")
        tmp = Path({str(tmp_path)!r})
        shutil.copy(net, tmp / "net.xml"); shutil.copy(route, tmp / "route.xml")
        env = make_env("sumo:grid4x4", num_seconds=60); builtin = env.site_spec; env.close()
        (tmp / "grid.toml").write_text(
            f'env = "sumo:mygrid"\\nnet_file = "{{tmp / "net.xml"}}"\\nroute_file = "{{tmp / "route.xml"}}"\\n'
        )
        env = make_env(f"site:{{tmp / 'grid.toml'}}"); copied = env.site_spec; env.close()
        out = {{"builtin": builtin, "copied": copied, "note": compare(builtin, copied)}}
        (tmp / "net.xml").write_text((tmp / "net.xml").read_text().replace("<net ", "<!-- edited -->\\n<net ", 1))
        env = make_env(f"site:{{tmp / 'grid.toml'}}"); edited = env.site_spec; env.close()
        try:
            compare(builtin, edited)
        except SiteMismatchError as err:
            out["refused"] = str(err)
        print(json.dumps(out))
        """
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["builtin"]["files"] == out["copied"]["files"] and out["builtin"]["options"]["net_file"] == ""
    assert out["copied"]["options"]["net_file"].endswith("net.xml")
    assert "num_seconds 60 -> 3600" in out["note"]
    assert out["refused"].startswith("site mismatch: net_file sha256")
