"""A logged green-time experiment on top of any signal rule (``max-pressure@exp=0.1``).

Why: a learner can only reweight what the log contains. Around a rule like max-pressure the
decisions worth learning are *when to end a green*: hold it a little longer or end it early. At a
decision point where the intersection may switch (outside min-green), with probability ``p`` the
controller runs the experiment instead of the rule: with equal chance it holds the current green
(``hold``) or ends it and serves the rule's best *other* phase (``end early``). A green that has
lasted ``max_green`` seconds is never held by the experiment. The logged probability is the exact
mixture ``(1 - p) rule + p/2 hold + p/2 end-early``.

``keep = q`` adds a second documented alternative, for scoring rules: with probability ``q``,
independently per intersection and decision, the intersection acts as the rule *with hysteresis*
would (``max-pressure-keep``, envs/traffic/controllers.py): it keeps the current green while that green's
score is within ``keep_margin`` (one vehicle of pressure) of the best phase's, instead of switching on a
near-tie. Why: on grid4x4's 900-s episodes that rule alone is 0.86x max-pressure's trip delay
(docs/traffic.md, "Headroom around max-pressure"), and a log of the rule never varies it, nor does
``hold``, which is drawn independently of the pressures. Only where the two rules act differently is
anything randomised; the rule's share of the mixture is ``(1 - p)((1 - q) rule + q keep)``, exact in every
case.

``end = q`` is the opposite change: where a green has run ``end_after`` seconds (25) and the rule would keep
it, with probability ``q`` the intersection ends it for the rule's best other phase, as ``max-pressure-cap``
would (envs/traffic/controllers.py). Why: on cologne8 that cap alone is 0.95x max-pressure's trip delay
(docs/traffic.md, "Headroom around max-pressure"). The rule's mass on the current green moves to that phase
with probability ``q``; where the rule switches anyway nothing changes.
"""

from __future__ import annotations

import numpy as np

from envs.controllers import Controller, ScoringController, masks_of
from envs.traffic.controllers import CAP_S, KEEP_MARGIN, best_other, keeps_green


class GreenExperiment(Controller):
    """``base`` with probability ``p`` of holding or ending the current green early at a switchable decision,
    and (``keep = q``) with probability ``q`` of keeping a near-tie green, (``end = q``) of ending a long one."""

    def __init__(
        self,
        base: Controller,
        p: float,
        max_green: float = 60.0,
        keep: float = 0.0,
        keep_margin: float = KEEP_MARGIN,
        end: float = 0.0,
        end_after: float = CAP_S,
    ):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"experiment probability must be in (0, 1], got {p}")
        for option, q in (("keep", keep), ("end", end)):
            if not 0.0 <= q <= 1.0:
                raise ValueError(f"{option}= expects a probability in [0, 1], got {q}")
        if keep and not isinstance(base, ScoringController):
            raise ValueError(f"keep= compares the rule's scores; {base.describe()!r} has none")
        self.base, self.p, self.max_green = base, float(p), float(max_green)
        self.keep, self.keep_margin = float(keep), float(keep_margin)
        self.end, self.end_after = float(end), float(end_after)
        self.name = (
            f"{base.describe()}@exp={p:g}"
            + (f"@keep={keep:g}" if keep else "")
            + (f"@end={end:g}" if end else "")
        )

    def reset(self, env, seed):
        self.base.reset(env, seed)

    def observe(self, env, rewards, terminations, truncations):
        self.base.observe(env, rewards, terminations, truncations)

    def distribution(self, env, obs, infos):
        rule = self.base.distribution(env, obs, infos)
        scores = self.base.scores(env, obs, infos) if isinstance(self.base, ScoringController) else None
        green = env.current_phases()
        since = env.time_in_phase()
        out = {}
        for i, (agent, mask) in enumerate(masks_of(env, infos).items()):
            g = int(green[i])
            # end early: the rule's favourite among the other phases (its scores, else its own mass)
            ranking = scores[agent] if scores is not None else rule[agent]
            end_early = best_other(ranking, mask, g)
            if not mask[g] or end_early is None:  # no switchable decision here: the rule as it is
                out[agent] = rule[agent]
                continue
            inner = np.array(rule[agent], dtype=np.float64)  # a copy: the alternatives move its mass
            s = np.asarray(scores[agent], dtype=np.float64) if self.keep else None
            if self.keep and since[i] < self.max_green and keeps_green(s, mask, g, self.keep_margin):
                inner = (1.0 - self.keep) * inner  # a near-tie: the hysteresis rule keeps g
                inner[g] += self.keep
            if self.end and since[i] >= self.end_after:  # a long green: the capped rule ends it
                moved = self.end * inner[g]
                inner[g] -= moved
                inner[end_early] += moved
            alternatives = [end_early] if since[i] >= self.max_green else [g, end_early]
            dist = (1.0 - self.p) * inner
            for a in alternatives:
                dist[a] += self.p / len(alternatives)
            out[agent] = dist
        return out


__all__ = ["GreenExperiment"]
