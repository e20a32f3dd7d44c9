"""Rule controllers for traffic signals (envs/controllers.py): fixed-time, max-pressure and loop-count.

``max-pressure-keep`` and ``max-pressure-cap`` are max-pressure with one change each (hysteresis on a
near-tie, a cap on a green's length): the headroom the logged experiment's ``keep`` / ``end`` alternatives
put in a log (envs/traffic/experiment.py), kept as rules for scale beside what a learner makes of it.

``random`` (uniform over legal phases) is :class:`envs.controllers.RandomLegal`. Exploration
(``@eps=``, ``@temp=``) comes from the shared wrappers; max-pressure is a
:class:`~envs.controllers.ScoringController`, so ``max-pressure@temp=2`` is a softmax over pressures.
"""

from __future__ import annotations

import numpy as np

from envs.controllers import Controller, ScoringController, best_legal, masks_of, one_hot
from envs.traffic.env import TrafficEnv
from envs.traffic.nets import is_green


class MaxPressure(ScoringController):
    """Pick the green phase with the largest pressure: sum over its green links of (in-lane - out-lane vehicles).

    Ties go to the lowest phase index (as in the reference baseline). Inside min-green the mask
    leaves only the current phase, so the rule keeps it, as sumo-rl would.
    """

    name = "max-pressure"

    def scores(self, env: TrafficEnv, obs, infos):
        pressure = env.phase_pressure()
        return {a: pressure[i] for i, a in enumerate(env.possible_agents)}


KEEP_MARGIN = 1.0  # vehicles of pressure: how near a tie ``max-pressure-keep`` keeps its green through
CAP_S = 25.0  # seconds since its switch after which ``max-pressure-cap`` ends a green the rule would keep


def best_other(ranking: np.ndarray, mask: np.ndarray, green: int) -> int | None:
    """The legal phase other than ``green`` that ranks highest (ties: the lowest index); None if none is legal."""
    others = np.flatnonzero(mask & (np.arange(len(mask)) != green))
    return int(others[np.argmax(np.asarray(ranking)[others])]) if len(others) else None


def keeps_green(scores: np.ndarray, mask: np.ndarray, green: int, margin: float = KEEP_MARGIN) -> bool:
    """Whether a rule with hysteresis keeps the current ``green``: its score is within ``margin`` of the best
    legal one's (a tie included, which max-pressure would otherwise break towards the lowest index)."""
    return bool(mask[green]) and float(scores[green]) + margin >= float(np.max(scores[mask]))


def near_tie_switch(scores: np.ndarray, mask: np.ndarray, green: int, margin: float = KEEP_MARGIN) -> bool:
    """Whether the rule leaves ``green`` where the rule with hysteresis would keep it: the decisions the logged
    experiment's ``keep`` alternative randomises (envs/traffic/experiment.py)."""
    return best_legal(scores, mask) != green and keeps_green(scores, mask, green, margin)


class MaxPressureKeep(MaxPressure):
    """Max-pressure that keeps the current green while its pressure is within one vehicle of the best phase's.

    Why it exists: max-pressure switches on near-ties and pays the yellow for it. On grid4x4's 900-s
    episodes this hysteresis alone is 0.86x max-pressure's trip delay (32 tuning seeds; on cologne8 it
    costs, 1.07x; bench/traffic_headroom.py, docs/traffic.md "Headroom around max-pressure"). It is the
    ``keep`` alternative of the logged experiment (envs/traffic/experiment.py) taken every time: a rule for
    scale beside a learner.
    """

    name = "max-pressure-keep"

    def __init__(self, margin: float = KEEP_MARGIN):
        self.margin = float(margin)

    def distribution(self, env, obs, infos):
        out = super().distribution(env, obs, infos)
        scores, green = self.scores(env, obs, infos), env.current_phases()
        for i, (agent, mask) in enumerate(masks_of(env, infos).items()):
            if keeps_green(np.asarray(scores[agent], dtype=np.float64), mask, int(green[i]), self.margin):
                out[agent] = one_hot(env.n_actions, int(green[i]))
        return out


class MaxPressureCap(MaxPressure):
    """Max-pressure that ends a green once it has run ``cap_s`` seconds, for the best other phase.

    Why it exists: on cologne8 max-pressure holds a busy approach's green long while the cross streets
    queue; capping the green at 25 s is 0.95x max-pressure's trip delay there on 32 tuning seeds, 0.99x on
    the evaluation seeds (bench/traffic_headroom.py, docs/traffic.md "Headroom around max-pressure"). It is
    the ``end`` alternative of the logged experiment (envs/traffic/experiment.py) taken every time: a rule
    for scale beside a learner.
    """

    name = "max-pressure-cap"

    def __init__(self, cap_s: float = CAP_S):
        self.cap_s = float(cap_s)

    def distribution(self, env, obs, infos):
        out = super().distribution(env, obs, infos)
        scores, green, since = self.scores(env, obs, infos), env.current_phases(), env.time_in_phase()
        for i, (agent, mask) in enumerate(masks_of(env, infos).items()):
            g = int(green[i])
            other = best_other(scores[agent], mask, g)
            if since[i] >= self.cap_s and out[agent][g] == 1.0 and other is not None:
                out[agent] = one_hot(env.n_actions, other)
        return out


class LoopCount(ScoringController):
    """Pick the green phase with the most vehicles counted between its loops (advance in, stop bar out).

    What a cabinet can run from its own detectors: max-pressure's rule on incoming vehicles within the
    advance loops' reach, no exits. Ties go to the lowest phase index, as max-pressure's do. Its choices
    are a function of the detector observation, unlike max-pressure's (docs/traffic.md).
    """

    name = "loop-count"

    def scores(self, env: TrafficEnv, obs, infos):
        counts = env.detector_counts()
        return {a: counts[i] for i, a in enumerate(env.possible_agents)}


class FixedTime(Controller):
    """The net's own static program, driven through actions so that the log's phases and observations agree.

    At each decision the controller requests the green phase the net's program shows at that point
    of its cycle (during the program's yellow/red transitions, the next green). Switches happen on
    the decision grid (``delta_time``) with the env's yellow time, so splits are the program's
    rounded to ``delta_time``. (sumo-rl's ``fixed_ts=True`` runs the program natively but then
    reports phase 0 in every observation; it cannot be logged. See docs/traffic.md for the
    difference it makes to delay.)
    """

    name = "fixed"

    def __init__(self):
        self._schedules: dict[str, tuple[np.ndarray, np.ndarray, float, float]] = {}

    def reset(self, env: TrafficEnv, seed: int) -> None:
        if self._schedules and set(self._schedules) == set(env.possible_agents):
            return
        self._schedules = {}
        for a in env.possible_agents:
            program = env.programs[a]
            durations = np.array([d for d, _ in program.phases], dtype=np.float64)
            green_index, k = [], -1
            for _, state in program.phases:
                k = k + 1 if is_green(state) else k
                green_index.append(k)
            n_green = len(env.green_states[a])
            # a transition phase leads to the next green in cycle order
            target = [
                (g + 1) % n_green if not is_green(s) else g
                for g, (_, s) in zip(green_index, program.phases, strict=True)
            ]
            ends = np.cumsum(durations)
            self._schedules[a] = (ends, np.array(target, dtype=np.int64), float(ends[-1]), program.offset)

    def planned_phase(self, agent: str, t: float) -> int:
        ends, target, cycle, offset = self._schedules[agent]
        pos = (t - offset) % cycle
        return int(target[int(np.searchsorted(ends, pos, side="right"))])

    def distribution(self, env: TrafficEnv, obs, infos):
        t = env.sim_time()
        out = {}
        for a, mask in masks_of(env, infos).items():
            want = self.planned_phase(a, t)
            if not mask[want]:
                want = int(infos[a]["green_phase"])
            out[a] = one_hot(env.n_actions, want)
        return out
