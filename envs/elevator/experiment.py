"""A logged parking experiment on top of any dispatch rule (``etd@exp=0.2``).

Why: the improvement a learner can find over ETD at down-peak is mostly *where idle cars wait*
(docs/elevator.md, "Headroom"), and parking k floors up takes k consecutive deviations that an
epsilon- or softmax-explored log almost never contains. An operator can afford a small randomised
experiment instead: at the start of an idle spell (a car with no riders and no assigned call at an
idle decision), with probability ``p`` the car is sent to a parking floor drawn uniformly from all
floors (the one it is on included); otherwise the rule acts as usual. The spell ends when the car
gets work. ``cars`` limits the experiment to some cars (the others follow the rule throughout): a
round that settles one car's parking at a time (bench/sequential_rounds.py).

``assign = q`` adds a second documented alternative, for the decisions outside idle spells: with
probability ``q``, independently per car and decision, the car acts as it would under ETD's assignment
*without its delay term* (``delay_weight = 0``: a call goes to the car that reaches it first, loaded or
not) instead of the rule's. Why: at down-peak that assignment alone is worth more than parking
(docs/elevator.md, "Headroom beyond parking"), and a log of the rule never varies who stops for a call.
Only where the two assignments give the car different actions is anything randomised; the logged
probability is exact (1 - q for the rule's action, q for the other).

The draw is never stored: at each step the controller keeps the posterior over the candidate targets
("the rule's own choice" with weight 1 - p and each floor with p / F) that are consistent with the
actions taken so far in the spell, and its distribution is their predictive mixture. Sampling actions
from it step by step is the same as drawing the target at the spell's start, and the logged
probability of each executed action is exact (its product over a spell is the probability of the
whole move).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.controllers import Controller, masks_of
from envs.elevator.controllers import ETD, ElevatorDispatch, _View
from envs.elevator.core import IDLE

RULE = -1  # the candidate "no experiment: the rule's own parking choice"
ASSIGN = -2  # the candidate "ETD's assignment without its delay term" (``assign = q``), outside idle spells


class ParkingExperiment(Controller):
    """``base`` with a randomised parking floor at the start of an idle spell, with probability ``p``, and
    (``assign = q``) ETD's assignment without its delay term at other decisions, with probability ``q``."""

    def __init__(
        self, base: ElevatorDispatch, p: float, cars: Sequence[int] | None = None, assign: float = 0.0
    ):
        if not isinstance(base, ElevatorDispatch):
            raise TypeError(
                f"the parking experiment needs an elevator dispatch rule, got {base.describe()!r}"
            )
        if not 0.0 < p <= 1.0:
            raise ValueError(f"experiment probability must be in (0, 1], got {p}")
        if not 0.0 <= assign <= 1.0:
            raise ValueError(f"assign= expects a probability in [0, 1], got {assign}")
        if assign and not isinstance(base, ETD):
            raise ValueError(f"assign= varies ETD's delay term; {base.describe()!r} is not an ETD rule")
        self.base, self.p, self.assign = base, float(p), float(assign)
        self.alternative = ETD(delay_weight=0.0) if assign else None
        self.cars = None if cars is None else frozenset(int(c) for c in cars)
        self.name = f"{base.describe()}@exp={p:g}" + (f"@assign={assign:g}" if assign else "")
        if self.cars is not None:
            self.name += " on cars " + ",".join(map(str, sorted(self.cars)))
        self.spells: list[dict[int, float] | None] = []  # per car: candidate target -> posterior weight
        self._actions: list[dict[int, int]] = []  # per car: candidate -> its action at this step

    def reset(self, env, seed):
        self.base.reset(env, seed)
        self.spells = [None] * env.building.n_cars
        self._actions = [{} for _ in range(env.building.n_cars)]

    def observe(self, env, rewards, terminations, truncations):
        self.base.observe(env, rewards, terminations, truncations)

    def distribution(self, env, obs, infos):
        v = _View(env)
        assigned = self.base.assign(v)
        other = self.alternative.assign(v) if self.alternative is not None else None
        masks = masks_of(env, infos)
        out = {}
        for c, agent in enumerate(env.possible_agents):
            mask = masks[agent]
            has_work = bool(v.car_calls[c] or assigned[c] or v.load[c])
            if has_work:
                self.spells[c] = None
            elif (
                self.spells[c] is None
                and v.mode[c] == IDLE
                and v.idle_decide[c]
                and (self.cars is None or c in self.cars)
            ):
                self.spells[c] = {RULE: 1.0 - self.p, **{f: self.p / v.F for f in range(v.F)}}
            spell = self.spells[c]
            if spell is None:
                self._actions[c] = {RULE: _legal(self.base.preferred(v, c, assigned[c]), mask)}
                spell = {RULE: 1.0}
                if other is not None:  # the assignment alternative: only outside a parking spell
                    self._actions[c][ASSIGN] = _legal(self.base.preferred(v, c, other[c]), mask)
                    spell = {RULE: 1.0 - self.assign, ASSIGN: self.assign}
            else:
                self._actions[c] = {
                    target: _legal(
                        self.base.preferred(v, c, assigned[c], park=None if target == RULE else target),
                        mask,
                    )
                    for target in spell
                }
            dist = np.zeros(env.n_actions)
            for target, weight in spell.items():
                dist[self._actions[c][target]] += weight
            out[agent] = dist / dist.sum()
        return out

    def act(self, env, obs, infos, rng):
        actions, probs = super().act(env, obs, infos, rng)
        self.condition_on(env, actions)
        return actions, probs

    def condition_on(self, env, actions: dict[str, int]) -> None:
        """Keep the candidate targets that agree with the actions taken after :meth:`distribution`.

        ``act`` does this with the sampled actions; a lookahead that forces an action on a copy does it
        itself. An action no candidate would take (only a forced one can be) ends the car's spell.
        """
        for c, agent in enumerate(env.possible_agents):
            spell = self.spells[c]
            if spell is not None:
                kept = {t: w for t, w in spell.items() if self._actions[c][t] == actions[agent]}
                total = sum(kept.values())
                self.spells[c] = {t: w / total for t, w in kept.items()} if total > 0 else None


def _legal(action: int, mask: np.ndarray) -> int:
    """What a scoring rule executes: its preferred action if legal, else the first legal one."""
    return action if mask[action] else int(np.argmax(mask))


__all__ = ["ParkingExperiment"]
