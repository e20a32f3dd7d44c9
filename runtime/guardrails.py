"""Guardrails: operator-set action constraints, enforced after the policy and before the response.

Per model (``[models.<name>.guardrails]``, :class:`runtime.config.GuardrailConfig`): forbidden actions per
agent, a minimum hold time (keep the current action, e.g. a minimum green) and a maximum hold time
(switch away from it). Each row gets an *allowed* set: the request's mask, minus forbidden actions
(unless that leaves nothing), then narrowed to the current action (min hold) or without it (max hold,
unless nothing else is allowed). A policy row whose action lies outside its allowed set is answered from
the policy's distribution restricted to that set (argmax, or a sample); a rule / fallback row gets the
current action if allowed, else the first allowed one. The probability returned (and logged as
``behavior_prob``) is the restricted, renormalised one, so decision logs stay exact off-policy data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.config import GuardrailConfig

RULES = ("forbidden", "min_hold", "max_hold")


@dataclass
class Enforced:
    action: np.ndarray  # int64 [n]
    chosen: np.ndarray  # float32 [n]
    probs: np.ndarray  # float32 [n, A]
    changed: dict[int, str]  # row -> rule that replaced the policy's action
    infeasible: dict[str, int]  # rule -> rows where it could not be applied (a stronger constraint won)
    missing_state: int  # rows where the hold rules lacked the current action or its elapsed time


class Guardrails:
    """One model's constraints compiled against its agent list (``forbidden`` as an ``[N, A]`` table)."""

    def __init__(self, cfg: GuardrailConfig, agent_ids: list[str], n_actions: int):
        self.cfg = cfg
        self.n_actions = n_actions
        self.forbidden = np.zeros((len(agent_ids), n_actions), dtype=bool)
        index = {a: i for i, a in enumerate(agent_ids)}
        for agent, actions in cfg.forbidden.items():
            rows = range(len(agent_ids)) if agent == "*" else [index[agent]] if agent in index else []
            for r in rows:
                for a in actions:
                    if 0 <= int(a) < n_actions:
                        self.forbidden[r, int(a)] = True
        self.hold = cfg.min_hold > 0 or cfg.max_hold > 0
        self.enabled = cfg.enabled

    def current_state(
        self,
        obs: np.ndarray,
        current: list | None,
        elapsed: list | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row the current action (-1 = unknown) and how long it has run (NaN = unknown)."""
        n = len(obs)
        cur = np.full(n, -1, dtype=np.int64)
        el = np.full(n, np.nan, dtype=np.float64)
        cfg = self.cfg
        if 0 <= cfg.current_obs_index < obs.shape[1]:
            v = obs[:, cfg.current_obs_index].astype(np.float64)
            ok = np.isfinite(v)
            cur[ok] = np.rint(v[ok]).astype(np.int64)
        if 0 <= cfg.elapsed_obs_index < obs.shape[1]:
            el = obs[:, cfg.elapsed_obs_index].astype(np.float64) * cfg.elapsed_scale
        if current is not None:
            for i, c in enumerate(current):
                if c is not None:
                    cur[i] = int(c)
        if elapsed is not None:
            for i, e in enumerate(elapsed):
                if e is not None:
                    el[i] = float(e)  # the request gives seconds; the scale is for obs units
        cur[(cur < 0) | (cur >= self.n_actions)] = -1
        return cur, el

    def allowed(
        self, agents: np.ndarray, mask: np.ndarray, cur: np.ndarray, el: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int], int]:
        """``(allowed [n, A], min_hold rows, max_hold rows, infeasible counts, missing-state rows)``."""
        n = len(agents)
        allowed = mask & ~self.forbidden[agents]
        empty = ~allowed.any(axis=1)
        infeasible = {r: 0 for r in RULES}
        if empty.any():
            allowed[empty] = mask[empty]
            infeasible["forbidden"] = int(empty.sum())
        hold_min = np.zeros(n, dtype=bool)
        hold_max = np.zeros(n, dtype=bool)
        missing = 0
        if self.hold:
            known = (cur >= 0) & np.isfinite(el)
            missing = int((~known).sum())
            rows = np.arange(n)
            cur_ok = known & allowed[rows, np.maximum(cur, 0)]
            if self.cfg.min_hold > 0:
                want = known & (el < self.cfg.min_hold)
                hold_min = want & cur_ok
                infeasible["min_hold"] = int((want & ~cur_ok).sum())
                if hold_min.any():
                    allowed[hold_min] = False
                    allowed[hold_min, cur[hold_min]] = True
            if self.cfg.max_hold > 0:
                want = known & (el >= self.cfg.max_hold) & ~hold_min
                others = allowed.sum(axis=1) - cur_ok.astype(np.int64)
                hold_max = want & cur_ok & (others > 0)
                infeasible["max_hold"] = int((want & cur_ok & (others == 0)).sum())
                if hold_max.any():
                    allowed[hold_max, cur[hold_max]] = False
        return allowed, hold_min, hold_max, infeasible, missing

    def enforce(
        self,
        agents: np.ndarray,
        obs: np.ndarray,
        mask: np.ndarray,
        current: list | None,
        elapsed: list | None,
        probs: np.ndarray,
        action: np.ndarray,
        chosen: np.ndarray,
        fixed: np.ndarray,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> Enforced:
        """Apply the constraints; ``fixed`` marks rows a rule answered (fallback, rule incumbent)."""
        n = len(agents)
        cur, el = self.current_state(obs, current, elapsed)
        allowed, hold_min, hold_max, infeasible, missing = self.allowed(agents, mask, cur, el)
        rows = np.arange(n)
        restricted = (allowed != mask).any(axis=1)
        if not restricted.any():
            return Enforced(action, chosen, probs, {}, infeasible, missing)
        action = np.array(action, dtype=np.int64)
        chosen = np.array(chosen, dtype=np.float32)
        probs = np.array(probs, dtype=np.float32)
        violating = ~allowed[rows, action]
        changed: dict[int, str] = {}
        for i in np.flatnonzero(restricted):
            a = int(action[i])
            if violating[i]:
                if self.forbidden[agents[i], a] and mask[i, a]:
                    changed[int(i)] = "forbidden"
                elif hold_min[i]:
                    changed[int(i)] = "min_hold"
                elif hold_max[i]:
                    changed[int(i)] = "max_hold"
                else:
                    changed[int(i)] = "forbidden"
            p = probs[i].astype(np.float64) * allowed[i]
            total = p.sum()
            if fixed[i] or total <= 0.0:
                if violating[i]:
                    c = int(cur[i])
                    a = c if c >= 0 and allowed[i, c] else int(np.flatnonzero(allowed[i])[0])
                    probs[i] = 0.0
                    probs[i, a] = 1.0
                    action[i], chosen[i] = a, 1.0
                continue
            q = p / total
            if violating[i]:
                if deterministic:
                    a = int(np.argmax(q))
                else:
                    cdf = np.cumsum(q)
                    a = int(
                        min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), self.n_actions - 1)
                    )
                    if not allowed[i, a]:  # float edge at the end of the cdf
                        a = int(np.argmax(q))
                action[i] = a
            probs[i] = q
            chosen[i] = q[action[i]]
        return Enforced(action, chosen, probs, changed, infeasible, missing)
