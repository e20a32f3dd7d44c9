"""A logged green-time experiment on top of any signal rule (``max-pressure@exp=0.1``).

Why: a learner can only reweight what the log contains. Around a rule like max-pressure the
decisions worth learning are *when to end a green*: hold it a little longer or end it early. At a
decision point where the intersection may switch (outside min-green), with probability ``p`` the
controller runs the experiment instead of the rule: with equal chance it holds the current green
(``hold``) or ends it and serves the rule's best *other* phase (``end early``). A green that has
lasted ``max_green`` seconds is never held by the experiment. The logged probability is the exact
mixture ``(1 - p) rule + p/2 hold + p/2 end-early``.
"""

from __future__ import annotations

import numpy as np

from envs.controllers import Controller, ScoringController, masks_of


class GreenExperiment(Controller):
    """``base`` with probability ``p`` of holding or ending the current green early at a switchable decision."""

    def __init__(self, base: Controller, p: float, max_green: float = 60.0):
        if not 0.0 < p <= 1.0:
            raise ValueError(f"experiment probability must be in (0, 1], got {p}")
        self.base, self.p, self.max_green = base, float(p), float(max_green)
        self.name = f"{base.describe()}@exp={p:g}"

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
            others = np.flatnonzero(mask & (np.arange(len(mask)) != g))
            if not mask[g] or len(others) == 0:  # no switchable decision here: the rule as it is
                out[agent] = rule[agent]
                continue
            # end early: the rule's favourite among the other phases (its scores, else its own mass)
            ranking = scores[agent] if scores is not None else rule[agent]
            end_early = int(others[np.argmax(np.asarray(ranking)[others])])
            alternatives = [end_early] if since[i] >= self.max_green else [g, end_early]
            dist = (1.0 - self.p) * np.asarray(rule[agent], dtype=np.float64)
            for a in alternatives:
                dist[a] += self.p / len(alternatives)
            out[agent] = dist
        return out


__all__ = ["GreenExperiment"]
