"""Logged experiments (``<rule>@exp=p``): exact behaviour probabilities of the alternatives they add."""

import numpy as np
import pytest

from envs.controllers import build_controller
from envs.elevator.core import CONTINUE, IDLE, UP
from envs.registry import make_env
from envs.traffic.controllers import CAP_S, KEEP_MARGIN, best_other
from trainer.rollout import action_rng, run_episode


def _steps(env, controller, seed):
    """Yield (infos, distribution, cars whose idle spell began at this step) for every step of an episode."""
    obs, infos = env.reset(seed=seed)
    controller.reset(env, seed)
    rng = action_rng(seed)
    while env.agents:
        before = [spell is None for spell in controller.spells]
        actions, _ = controller.act(env, obs, infos, rng)
        began = [c for c, was_none in enumerate(before) if was_none and controller.spells[c] is not None]
        yield infos, controller.last_distribution, began
        obs, _, _, _, infos = env.step(actions)


def test_parking_experiment_draws_a_uniform_floor_at_the_start_of_an_idle_spell():
    env = make_env("elevator:cb10x4:downpeak", hours=0.25)
    p, floors = 0.2, env.building.n_floors
    ctl = build_controller(env.env_id, f"etd@exp={p}")
    etd = build_controller(env.env_id, "etd")
    seen = 0
    for infos, dist, began in _steps(env, ctl, seed=3):
        for c, agent in enumerate(env.possible_agents):
            at_lobby = c in began and env.core.l_mode[c] == IDLE and env.core.l_floor[c] == 0
            # at the lobby ETD holds: the car holds unless the draw is a floor above
            if at_lobby and etd.distribution(env, {}, infos)[agent][CONTINUE] == 1.0:
                assert dist[agent][CONTINUE] == pytest.approx(1 - p + p / floors)
                assert dist[agent][UP] == pytest.approx(p * (floors - 1) / floors)
                seen += 1
            assert dist[agent].sum() == pytest.approx(1.0)
            assert np.all(dist[agent][~infos[agent]["action_mask"]] == 0)
    assert seen > 0


def test_parking_experiment_logs_valid_probabilities_and_moves_cars_the_rule_would_not(tmp_path):
    from contract.logformat import LogWriter
    from trainer.logs import load_log
    from trainer.rollout import log_meta

    env = make_env("elevator:cb10x4:downpeak", hours=0.25)
    ctl = build_controller(env.env_id, "etd@exp=0.5")
    with LogWriter(tmp_path / "log", log_meta(env)) as writer:
        for seed in (1, 2):
            run_episode(env, ctl, seed, writer=writer)
    data = load_log(tmp_path / "log")  # validates every probability in (0, 1]
    probs = data.behavior_prob[data.filled]
    assert np.all((probs > 0) & (probs <= 1))
    assert (probs < 1).mean() > 0.01  # the experiment is in the log
    assert data.ts is not None and np.all(np.diff(data.ts[0][data.filled[0]]) >= 0)


def test_parking_experiment_on_some_cars_leaves_the_others_to_the_rule_and_their_floors():
    """A sequential round (bench/sequential_rounds.py): settled cars keep the rule and park at their floors
    with probability 1; only the open cars draw."""
    env = make_env("elevator:cb10x4:downpeak", hours=0.25)
    ctl = build_controller(env.env_id, "etd-park:7.-.-.-@exp=1")
    assert ctl.describe() == "etd-park 7,-,-,-@exp=1 on cars 1,2,3"
    drew, at_floor_7 = set(), 0
    for _, dist, began in _steps(env, ctl, seed=4):
        drew.update(began)
        assert dist[env.possible_agents[0]].max() == 1.0  # the settled car never randomises
        at_floor_7 += env.core.l_mode[0] == IDLE and env.core.l_floor[0] == 7
    assert 0 not in drew and drew == {1, 2, 3}
    assert at_floor_7 > 50  # and it waits at its floor


def test_parking_layout_spec_errors_are_clear():
    env = make_env("elevator:cb10x4:downpeak", hours=0.25)
    with pytest.raises(ValueError, match="only etd-park takes a parking layout"):
        build_controller(env.env_id, "etd:6.-.-.-")
    with pytest.raises(ValueError, match="bad parking layout '6.x.4.-'"):
        build_controller(env.env_id, "etd-park:6.x.4.-")
    # evaluation reads a source with a slash as a run directory; a layout is a rule there too
    from trainer.policies import load_controller

    assert load_controller("etd-park:6.8.4.2", env.env_id).describe() == "etd-park 6,8,4,2"
    for layout in ("6.8.4", "6.8.4.10"):  # a floor per car, inside the building
        with pytest.raises(ValueError, match="does not fit the building"):
            run_episode(env, build_controller(env.env_id, f"etd-park:{layout}"), seed=0)


def test_assignment_alternative_randomises_only_where_etd_without_its_delay_term_acts_otherwise():
    """``@assign=q``: outside idle spells each car takes ETD's action with 1 - q and, where ETD without its delay
    term would act otherwise, that action with q; never anything else."""
    from envs.elevator.controllers import ETD

    env = make_env("elevator:cb10x4:downpeak", hours=0.25)
    q = 0.3
    ctl = build_controller(env.env_id, f"etd@exp=1@assign={q}")
    assert ctl.describe() == "etd@exp=1@assign=0.3"
    rule, other = build_controller(env.env_id, "etd"), ETD(delay_weight=0.0)
    differs = agrees = 0
    for infos, dist, _ in _steps(env, ctl, seed=3):
        a_rule, a_other = rule.distribution(env, {}, infos), other.distribution(env, {}, infos)
        for c, agent in enumerate(env.possible_agents):
            if ctl.spells[c] is not None:
                continue  # the parking experiment's own decisions (tested above)
            mine, theirs = int(np.argmax(a_rule[agent])), int(np.argmax(a_other[agent]))
            expected = np.zeros_like(dist[agent])
            expected[mine] += 1 - q
            expected[theirs] += q
            if infos[agent]["action_mask"][theirs]:
                np.testing.assert_allclose(dist[agent], expected)
                differs += mine != theirs
                agrees += mine == theirs
    assert differs > 10 and agrees > differs  # it varies who stops for a call, and only there


def test_experiment_spec_errors_are_clear():
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        build_controller("elevator:cb10x4:downpeak", "etd@exp=1.5")
    with pytest.raises(ValueError, match="no logged experiment"):
        build_controller("xor", "random@exp=0.2")
    with pytest.raises(ValueError, match="give exp= too"):
        build_controller("elevator:cb10x4:downpeak", "etd@assign=0.5")
    with pytest.raises(ValueError, match="not an ETD rule"):
        build_controller("elevator:cb10x4:downpeak", "sector@exp=1@assign=0.5")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        build_controller("elevator:cb10x4:downpeak", "etd@exp=1@assign=1.5")
    with pytest.raises(ValueError, match="takes no option assign="):  # the elevator's option, not traffic's
        build_controller("sumo:grid4x4", "max-pressure@exp=0.2@assign=0.5")


@pytest.mark.sumo
def test_green_experiment_holds_or_ends_the_green_with_the_logged_mixture():
    env = make_env("sumo:grid4x4", num_seconds=120)
    p = 0.4
    ctl = build_controller(env.env_id, f"max-pressure@exp={p}")
    rule = build_controller(env.env_id, "max-pressure")
    checked = 0
    try:
        obs, infos = env.reset(seed=5)
        ctl.reset(env, 5)
        rng = action_rng(5)
        while env.agents:
            base = rule.distribution(env, obs, infos)
            actions, probs = ctl.act(env, obs, infos, rng)
            dist = ctl.last_distribution
            for i, agent in enumerate(env.possible_agents):
                mask = infos[agent]["action_mask"]
                assert dist[agent].sum() == pytest.approx(1.0) and probs[agent] > 0
                if mask.sum() > 1:  # a switchable decision: the rule's mass shrinks to 1 - p
                    green = int(env.current_phases()[i])
                    assert dist[agent][green] >= (1 - p) * base[agent][green] + p / 2 - 1e-9
                    checked += 1
            obs, _, _, _, infos = env.step(actions)
    finally:
        env.close()
    assert checked > 0


def _green_decisions(env, ctl, *references, seed: int):
    """Play ``ctl`` for an episode; per step and intersection yield (mask, current green, its pressure row,
    seconds in phase, ``ctl``'s distribution, then each reference controller's, asked at the same state)."""
    try:
        obs, infos = env.reset(seed=seed)
        for c in (ctl, *references):
            c.reset(env, seed)
        rng = action_rng(seed)
        while env.agents:
            asked = [c.distribution(env, obs, infos) for c in references]
            pressure, green, since = env.phase_pressure(), env.current_phases(), env.time_in_phase()
            actions, probs = ctl.act(env, obs, infos, rng)
            for i, agent in enumerate(env.possible_agents):
                dist = ctl.last_distribution[agent]
                assert dist.sum() == pytest.approx(1.0) and probs[agent] > 0
                mask = infos[agent]["action_mask"]
                yield mask, int(green[i]), pressure[i], since[i], dist, *(d[agent] for d in asked)
            obs, _, _, _, infos = env.step(actions)
    finally:
        env.close()


@pytest.mark.sumo
def test_keep_alternative_randomises_only_near_tie_switches_with_the_logged_probability():
    """``@keep=q``: where the rule would leave a green whose pressure is within one vehicle of the best, the
    current green gets (1 - p) q + p/2; elsewhere the distribution is the plain experiment's."""
    env = make_env("sumo:grid4x4", num_seconds=300)
    p, q = 0.2, 0.5
    ctl = build_controller(env.env_id, f"max-pressure@exp={p}@keep={q}")
    plain = build_controller(env.env_id, f"max-pressure@exp={p}")
    assert ctl.describe() == "max-pressure@exp=0.2@keep=0.5"
    kept = same = 0
    for mask, g, pressure, since, dist, reference in _green_decisions(env, ctl, plain, seed=7):
        near_tie = pressure[g] + KEEP_MARGIN >= pressure[mask].max()
        rule_leaves = int(np.argmax(np.where(mask, pressure, -np.inf))) != g
        if mask.sum() > 1 and near_tie and rule_leaves and since < 60:
            assert dist[g] == pytest.approx((1 - p) * q + p / 2)
            kept += 1
        else:
            np.testing.assert_allclose(dist, reference)
            same += 1
    assert kept > 0 and same > 0


def test_keep_alternative_spec_errors_name_the_problem():
    with pytest.raises(ValueError, match="keep= is part of the logged experiment"):
        build_controller("sumo:grid4x4", "max-pressure@keep=0.5")
    with pytest.raises(ValueError, match="has none"):  # fixed-time has no scores to compare
        build_controller("sumo:grid4x4", "fixed@exp=0.1@keep=0.5")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        build_controller("sumo:grid4x4", "max-pressure@exp=0.1@keep=1.5")
    with pytest.raises(ValueError, match="takes no option keep="):  # traffic's option, not the elevator's
        build_controller("elevator:cb10x4:downpeak", "etd@exp=1@keep=0.5")


@pytest.mark.sumo
def test_end_alternative_moves_the_rules_mass_off_a_long_green_with_the_logged_probability():
    """``@end=q``: where a green has run 25 s and max-pressure keeps it, the best other phase gets
    (1 - p) q + p/2; elsewhere the distribution is the plain experiment's. ``max-pressure-cap`` takes it always."""
    env = make_env("sumo:cologne8", num_seconds=300)
    p, q = 0.2, 0.5
    ctl = build_controller(env.env_id, f"max-pressure@exp={p}@end={q}")
    plain = build_controller(env.env_id, f"max-pressure@exp={p}")
    cap = build_controller(env.env_id, "max-pressure-cap")
    ended = same = 0
    for mask, g, pressure, since, dist, reference, capped in _green_decisions(env, ctl, plain, cap, seed=3):
        rule_keeps = int(np.argmax(np.where(mask, pressure, -np.inf))) == g
        if mask.sum() > 1 and rule_keeps and since >= CAP_S:
            other = best_other(pressure, mask, g)
            held = since < 60  # past max_green the experiment only ends, never holds
            assert dist[other] == pytest.approx((1 - p) * q + (p / 2 if held else p))
            assert capped[other] == 1.0
            ended += 1
        else:
            np.testing.assert_allclose(dist, reference)
            same += 1
    assert ended > 0 and same > 0
    with pytest.raises(ValueError, match="end= is part of the logged experiment"):
        build_controller("sumo:grid4x4", "max-pressure@end=0.5")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        build_controller("sumo:grid4x4", "max-pressure@exp=0.1@end=-0.1")
