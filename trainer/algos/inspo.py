"""InSPO: In-Sample Sequential Policy Optimization (Liu et al., AAAI 2025).

Reads top to bottom: behaviour cloning of ``mu``, then per iteration the joint critic (Eq. 10), a new
agent permutation, and each agent's local Q and actor update (Eq. 13) in that order. docs/algorithm.md
says what each step computes and why ("The code, top to bottom", "The tabular check behind the estimator").
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.algos import advantage, linear_heads, losses
from trainer.algos.base import Algorithm, agent_logits, all_agents_logits, clip_step, polyak_
from trainer.algos.config import InSPOConfig
from trainer.nets import Normalizer, mlp


class JointCritic(nn.Module):
    """``Q(s, a)`` on the global state and the one-hot joint action (only ever fed logged actions)."""

    def __init__(self, state_dim: int, n_agents: int, n_actions: int, hidden, state_mean, state_std):
        super().__init__()
        self.n_actions = n_actions
        self.normalizer = Normalizer(state_dim, state_mean, state_std)
        self.body = mlp(state_dim + n_agents * n_actions, hidden, 1)

    def forward(self, state: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(actions, self.n_actions).flatten(1).to(state.dtype)
        return self.body(torch.cat([self.normalizer(state), one_hot], -1)).squeeze(-1)


class LocalQ(nn.Module):
    """``Q^i(s, o^i, i) -> [A]``: agent ``i``'s teammate-marginalised Q, one head per own action."""

    def __init__(self, state_dim: int, obs_dim: int, n_agents: int, n_actions: int, hidden, norms):
        super().__init__()
        self.n_agents = n_agents
        self.state_norm = Normalizer(state_dim, norms[0], norms[1])
        self.obs_norm = Normalizer(obs_dim, norms[2], norms[3])
        self.body = mlp(state_dim + obs_dim + n_agents, hidden, n_actions)

    def inputs(self, state: torch.Tensor, obs: torch.Tensor, agent: int) -> torch.Tensor:
        """The body's input; computed once when the same rows are evaluated more than once."""
        one_hot = torch.zeros(state.shape[0], self.n_agents, dtype=state.dtype)
        one_hot[:, agent] = 1.0
        return torch.cat([self.state_norm(state), self.obs_norm(obs), one_hot], -1)

    def forward(self, state: torch.Tensor, obs: torch.Tensor, agent: int) -> torch.Tensor:
        return self.body(self.inputs(state, obs, agent))


CERTAIN = 1.0 - 1e-6  # a logged action this probable counts as certain (no information about an advantage)


@dataclass
class _Batch:
    """One iteration's rows, gathered once; per-agent fields are lists indexed by agent."""

    states: torch.Tensor  # [B, S]
    joint_actions: torch.Tensor  # [B, N]
    obs: list[torch.Tensor]  # [B, O] each
    actions: list[torch.Tensor]  # [B]
    masks: list[torch.Tensor]  # [B, A]
    log_mu_all: list[torch.Tensor]  # [B, A] floored log mu of every action
    rows: torch.Tensor  # [B] the rows of the training data they are


class InSPO(Algorithm):
    name = "inspo"

    def __init__(self, config: InSPOConfig | None = None, name: str = "inspo"):
        config = config or InSPOConfig()
        config.validate()  # the one place every field's range is checked (trainer/algos/config.py)
        super().__init__(config)
        self.name = name
        self.log_ratio_min = math.log(config.ratio_min)
        self.log_ratio_max = math.log(config.ratio_max)

    # -- networks -----------------------------------------------------------------------------
    def _build(self, neighbors: dict[str, list[str]] | None) -> None:
        c, d = self.config, self.data
        assert d is not None
        n, a = d.n_agents, d.n_actions
        self.mu = self.make_actor()
        self.actor = self.make_actor()
        self.critic = JointCritic(d.state_dim, n, a, c.critic_hidden, d.state_mean, d.state_std)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        norms = (d.state_mean, d.state_std, d.obs_mean, d.obs_std)
        self.local_q = LocalQ(d.state_dim, d.obs_dim, n, a, c.critic_hidden, norms)
        self.mu_opt = torch.optim.Adam(self.mu.parameters(), lr=c.mu_lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr)
        self.local_q_opt = torch.optim.Adam(self.local_q.parameters(), lr=c.local_q_lr)
        self.teammates = torch.ones(n, n) - torch.eye(n)  # row i: whose ratios enter agent i's weight
        if c.use_neighbors and neighbors is not None:
            index = {agent: k for k, agent in enumerate(self.agent_ids)}
            self.teammates.zero_()
            for agent, nbrs in neighbors.items():
                for other in nbrs:
                    if other != agent:
                        self.teammates[index[agent], index[other]] = 1.0
        self.mu_done = False
        self.log_mu_all: torch.Tensor | None = None  # [K, N, A], filled after mu is fitted
        self.adv_heads: advantage.AdvantageHeads | linear_heads.LinearAdvantageHeads | None = None
        self.adv_opt: torch.optim.Optimizer | None = None  # the network heads' (linear heads are solved)
        if c.estimator == "residual" and c.adv_heads == "linear":
            self.adv_heads = linear_heads.LinearAdvantageHeads(
                d.obs_dim,
                n,
                a,
                c.adv_members,
                d.obs_mean,
                d.obs_std,
                self.ordinal_blocks(),
                self.teammate_features(),
                self.decision_context(),
            )
        elif c.estimator == "residual":
            self.adv_heads = advantage.AdvantageHeads(
                d.state_dim, d.obs_dim, n, a, c.adv_members, c.critic_hidden, norms
            )
            self.adv_opt = torch.optim.Adam(self.adv_heads.parameters(), lr=c.adv_lr)
        # linear heads: each episode's block (folds, bootstrap), the ridge and the all-agents fit (the prior)
        self.linear_blocks: torch.Tensor | None = None
        self.linear_ridge = 0.0
        self.linear_prior: torch.Tensor | None = None
        # agent -> the effective share of its rows its teammates' weights left at its last refit
        self.refit_ess: dict[int, float] = {}
        self.residual: torch.Tensor | None = None  # [K] G - V(s), cross-fitted ([K, N] with reward_credit)
        self.baseline_value: torch.Tensor | None = None  # [K] the cross-fitted V(s) itself (same shape)
        self.credit = advantage.credit_matrix(c.reward_credit, self.agent_ids, neighbors)
        self.propensity_all: torch.Tensor | None = None  # [K, N, A] e(a) (residual estimator)
        self.informative: torch.Tensor | None = None  # rows where some agent's logged action was not certain
        self.adv_scale = torch.ones(())  # running typical size of the advantages (adv_normalize)
        self.logged_log_prob = self._logged_log_prob()
        # Polyak average of the actor (the deployed policy when actor_ema > 0); starts as the first iterate
        self.actor_avg = copy.deepcopy(self.actor).requires_grad_(False) if c.actor_ema > 0 else None
        self.avg_started = False

    def ordinal_blocks(self) -> list[tuple[int, int]]:
        """The observation's ordered one-hot blocks the linear heads read smoothly (``adv_ordinal``)."""
        from envs.registry import ordinal_blocks

        return (
            self._env_declared("adv_ordinal", ordinal_blocks, "ordered one-hot block")
            if self.config.adv_ordinal
            else []
        )

    def teammate_features(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """The env's teammate features for the linear heads (``adv_teammates``)."""
        from envs.registry import teammate_features

        return (
            self._env_declared("adv_teammates", teammate_features, "teammate features")
            if self.config.adv_teammates
            else None
        )

    def decision_context(self) -> list[int] | None:
        """The observation columns the linear heads read with ``adv_features = "context"`` (None: all)."""
        from envs.registry import decision_context

        if self.config.adv_features == "obs":
            return None
        ranges = self._env_declared("adv_features='context'", decision_context, "decision context")
        return [k for start, stop in ranges for k in range(start, stop)]

    def _env_declared(self, option: str, lookup: Callable[[str, int], Any], what: str) -> Any:
        """What the log's env declares for the linear heads' ``option`` (an envs/registry.py lookup, asked with
        the env id whose observation layout the log has: a site log records its family's base env); an env
        that declares nothing is refused."""
        assert self.data is not None
        env_id = self.site_spec["base"] if self.site_spec else self.env_id
        found = lookup(env_id, self.data.obs_dim) if env_id else None
        if not found:
            raise ValueError(
                f"config {option}=true, but the log's env {env_id!r} declares no {what} for its "
                f"{self.data.obs_dim}-wide observation (only the elevator does)"
            )
        return found

    def modules(self) -> dict[str, nn.Module]:
        out = {
            "mu": self.mu,
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "local_q": self.local_q,
        }
        if self.actor_avg is not None:
            out["actor_avg"] = self.actor_avg
        if self.adv_heads is not None:
            out["adv_heads"] = self.adv_heads
        return out

    def deployed_actor(self):
        """The averaged actor when ``actor_ema > 0`` (after the first iteration), else the iterate."""
        if self.actor_avg is not None and self.avg_started:
            return self.actor_avg
        return super().deployed_actor()

    @torch.no_grad()
    def _update_average(self) -> None:
        assert self.actor is not None and self.actor_avg is not None
        if self.avg_started:
            polyak_(self.actor_avg, self.actor, 1.0 - self.config.actor_ema)
        else:  # the first iterate (after mu is fitted and, with actor_init="mu", copied)
            self.actor_avg.load_state_dict(self.actor.state_dict())
            self.avg_started = True

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        out = {
            "mu": self.mu_opt,
            "actor": self.actor_opt,
            "critic": self.critic_opt,
            "local_q": self.local_q_opt,
        }
        if self.adv_opt is not None:
            out["adv_heads"] = self.adv_opt
        return out

    def extra_state(self) -> dict[str, Any]:
        return {
            "mu_done": self.mu_done,
            "teammates": self.teammates,
            "avg_started": self.avg_started,
            "residual": self.residual,
            "baseline_value": self.baseline_value,
            "adv_scale": self.adv_scale,
            "linear_blocks": self.linear_blocks,
            "linear_ridge": self.linear_ridge,
            "linear_prior": self.linear_prior,
            "refit_ess": self.refit_ess,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.teammates = state["teammates"]
        self.mu_done = bool(state["mu_done"])
        self.avg_started = bool(state.get("avg_started", False))
        self.residual = state.get("residual")
        self.baseline_value = state.get("baseline_value")
        self.adv_scale = state.get("adv_scale", torch.ones(()))
        self.linear_blocks = state.get("linear_blocks")
        self.linear_ridge = float(state.get("linear_ridge", 0.0))
        self.linear_prior = state.get("linear_prior")
        self.refit_ess = dict(state.get("refit_ess", {}))
        self.logged_log_prob = self._logged_log_prob()  # of the restored shard, for a streamed log
        self.log_mu_all = self._compute_log_mu() if self.mu_done else None
        if self.mu_done and self.adv_heads is not None:
            self._set_propensities()

    def on_new_shard(self) -> None:
        """A streamed log moved to its next shard (trainer/algos/store.py): every per-row quantity anew,
        the residuals re-fitted on the shard's episodes."""
        self.logged_log_prob = self._logged_log_prob()
        self.log_mu_all = self._compute_log_mu() if self.mu_done else None
        if self.mu_done and self.adv_heads is not None:
            self._set_propensities()
        if self.residual is not None:
            self.fit_residuals()
            if self.config.adv_heads == "linear":  # the shard's own rows: solved afresh
                self.fit_linear_heads()

    # -- 1. behaviour policy ------------------------------------------------------------------
    def fit_mu(self) -> dict[str, float]:
        """Behaviour cloning of every agent's logged actions; then precompute floored ``log mu``."""
        c, d = self.config, self.data
        assert d is not None
        loss = torch.zeros(())
        for _ in range(c.mu_steps):
            rows = self.sample_rows(c.batch_size)
            logits = all_agents_logits(self.mu, d.obs[rows], d.masks[rows])
            loss = losses.bc_loss(logits.flatten(0, 1), d.actions[rows].flatten())
            clip_step(self.mu_opt, loss, self.mu.parameters(), c.grad_clip)
        self.mu.requires_grad_(False)
        if c.actor_init == "mu":  # start from the behaviour policy, perturbed to break symmetry
            assert self.actor is not None
            with torch.no_grad():
                for p, q in zip(self.actor.parameters(), self.mu.parameters(), strict=True):
                    p.copy_(q + c.actor_init_noise * torch.randn(p.shape, generator=self.generator))
        self.mu_done = True
        self.log_mu_all = self._compute_log_mu()
        return {"mu_loss": float(loss.detach())}

    @torch.no_grad()
    def _compute_log_mu(self) -> torch.Tensor:
        d = self.data
        assert d is not None
        out = []
        for start in range(0, d.size, 8192):
            sl = slice(start, start + 8192)
            logits = all_agents_logits(self.mu, d.obs[sl], d.masks[sl])
            out.append(losses.floored_log_probs(logits, d.masks[sl], self.config.mu_floor))
        return torch.cat(out)

    @torch.no_grad()
    def policy_log_probs(self, rows: torch.Tensor) -> torch.Tensor:
        """``log pi^i(a^i|o^i)`` of the logged actions of ``rows`` for all agents: ``[B, N]``."""
        d = self.data
        assert d is not None and self.actor is not None
        logp = torch.log_softmax(all_agents_logits(self.actor, d.obs[rows], d.masks[rows]), -1)
        return logp.gather(-1, d.actions[rows].unsqueeze(-1)).squeeze(-1)

    def _logged_log_prob(self) -> torch.Tensor | None:
        """``[K, N]`` log of the log's exact behaviour probabilities (NaN where unknown); None when unused."""
        d = self.data
        assert d is not None
        if not self.config.exact_propensity or torch.isnan(d.behavior_prob).all():
            return None
        return torch.log(d.behavior_prob.clamp(min=1e-30))

    def logged_log_mu(self, rows: torch.Tensor) -> torch.Tensor:
        """``log mu^i(a^i)`` of the logged actions: the exact logged probability where known and
        ``exact_propensity`` is on, else the fitted (floored) mu."""
        assert self.log_mu_all is not None and self.data is not None
        fitted = self.log_mu_all[rows].gather(-1, self.data.actions[rows].unsqueeze(-1)).squeeze(-1)
        if self.logged_log_prob is None:
            return fitted
        exact = self.logged_log_prob[rows]
        return torch.where(torch.isnan(exact), fitted, exact)

    @torch.no_grad()
    def _set_propensities(self) -> None:
        """``e(a)`` of every row, and the rows that carry information about an advantage: those where
        some agent's logged action was not certain (elsewhere the residual regression has no gradient)."""
        d = self.data
        assert d is not None and self.log_mu_all is not None
        unknown = torch.full_like(d.behavior_prob, torch.nan)
        probs = d.behavior_prob if self.logged_log_prob is not None else unknown
        self.propensity_all = advantage.propensities(self.log_mu_all, d.actions, probs)
        taken = self.propensity_all.gather(-1, d.actions.unsqueeze(-1)).squeeze(-1)
        self.informative = torch.nonzero((taken < CERTAIN).any(-1)).squeeze(-1)

    def sample_residual_rows(self, n: int, informative_share: float) -> torch.Tensor:
        """Rows for the residual estimator: ``informative_share`` of them from the informative rows."""
        assert self.informative is not None
        k = int(round(n * informative_share)) if len(self.informative) else 0
        pick = torch.randint(0, max(len(self.informative), 1), (k,), generator=self.generator)
        return torch.cat([self.sample_rows(n - k), self.informative[pick]])

    # -- residual estimator: baseline, heads ---------------------------------------------------------
    def fit_residuals(self) -> dict[str, float]:
        """Cross-fitted ``V(s)`` on episode folds, then each row's residual ``G - V(s)`` (once per run)."""
        c, d = self.config, self.data
        assert d is not None
        fold = advantage.episode_folds(d.episode, c.value_folds, self.generator)

        rewards, returns, outputs = d.rewards, d.returns, 1
        if self.credit is not None:  # reward_credit: each agent's own return [K, N] (Monte Carlo first)
            rewards, outputs = d.agent_rewards @ self.credit.T, d.n_agents
            zero = torch.zeros_like(rewards)
            returns = advantage.lambda_returns(rewards, d.discounts, d.done, d.next_index, zero, 1.0)

        inputs, mean, std = d.states, d.state_mean, d.state_std  # (the store's float64 statistics)
        if d.exogenous is not None:  # baseline_inputs="state+exogenous": b(s, z)
            inputs = torch.cat([d.states, d.exogenous], 1)
            mean, std = inputs.mean(0), inputs.std(0).clamp(min=1e-3)

        def make_net() -> advantage.StateValue:
            return advantage.StateValue(inputs.shape[1], c.critic_hidden, mean, std, outputs)

        values = advantage.crossfit_values(
            inputs, returns, fold, make_net, c.value_steps, 2 * c.batch_size, c.value_lr, self.generator
        )
        target = returns
        if c.lam < 1.0:
            target = advantage.lambda_returns(rewards, d.discounts, d.done, d.next_index, values, c.lam)
        self.residual, self.baseline_value = target - values, values
        explained = 1.0 - float(self.residual.var() / returns.var().clamp(min=1e-12))
        return {"value_r2": explained, "residual_std": float(self.residual.std())}

    def prepare_residuals(self) -> dict[str, float]:
        """The residual estimator's first phase, once per run: mu, every row's propensities, the residuals."""
        metrics = self.fit_mu()
        self._set_propensities()
        metrics.update(self.fit_residuals())
        return metrics

    def _residuals(self, rows: torch.Tensor) -> torch.Tensor:
        """``[len(rows), N]``: each agent's residual (the team's, repeated, unless reward_credit says otherwise)."""
        assert self.residual is not None and self.data is not None
        res = self.residual[rows]
        return res if res.dim() == 2 else res.unsqueeze(-1).expand(-1, self.data.n_agents)

    def _centred_advantages(self, state, obs, agent, mask, log_mu_all) -> torch.Tensor:
        assert self.adv_heads is not None
        return losses.centre_advantages(self.adv_heads(state, obs, agent), torch.exp(log_mu_all), mask)

    def _every_agents_advantages(self, rows: torch.Tensor) -> torch.Tensor:
        """Centred heads of every agent on ``rows`` in one pass: ``[len(rows) * N, M, A]``, agent-minor."""
        d = self.data
        assert d is not None and self.log_mu_all is not None
        n = d.n_agents
        return self._centred_advantages(
            d.states[rows].repeat_interleave(n, 0),
            d.obs[rows].flatten(0, 1),
            torch.arange(n).repeat(len(rows)),
            d.masks[rows].flatten(0, 1),
            self.log_mu_all[rows].flatten(0, 1),
        )

    def _bootstrap(self, n: int) -> torch.Tensor:
        """Bayesian-bootstrap weights (Exp(1)) per row and member: each member sees its own resample."""
        return torch.empty(n, self.config.adv_members).exponential_(generator=self.generator)

    def adv_warmup_step(self) -> dict[str, float]:
        """Fit every agent's heads at once on one batch, teammates as logged (before any actor update)."""
        c, d = self.config, self.data
        assert d is not None and self.residual is not None and self.propensity_all is not None
        assert self.log_mu_all is not None and self.adv_heads is not None
        rows = self.sample_residual_rows(c.batch_size, 1.0)
        n = d.n_agents
        adv = self._every_agents_advantages(rows)
        loss = losses.residual_advantage_loss(
            adv,
            d.actions[rows].flatten(),
            self.propensity_all[rows].flatten(0, 1),
            self._residuals(rows).flatten(),
            self._bootstrap(len(rows) * n),
        )
        clip_step(self.adv_opt, loss, self.adv_heads.parameters(), c.grad_clip)
        return {"adv_loss": float(loss.detach())}

    # -- residual estimator: linear heads, solved (trainer/algos/linear_heads.py) ----------------------
    def _linear_inputs(self, i: int) -> tuple[torch.Tensor, list[np.ndarray]]:
        """Agent ``i``'s rows whose logged action was random, and their features, actions, propensities,
        residuals and episode blocks (numpy, float64 where summed)."""
        d, heads = self.data, self.adv_heads
        assert d is not None and self.propensity_all is not None and self.linear_blocks is not None
        assert isinstance(heads, linear_heads.LinearAdvantageHeads)
        e = self.propensity_all[:, i]
        taken = e.gather(-1, d.actions[:, i].unsqueeze(-1)).squeeze(-1)
        rows = torch.nonzero(taken < CERTAIN).squeeze(-1)
        with torch.no_grad():
            x = heads.features(d.obs[rows, i])
        return rows, [
            x.double().numpy(),
            d.actions[rows, i].numpy(),
            e[rows].double().numpy(),
            self._residuals(rows)[:, i].double().numpy(),
            self.linear_blocks[d.episode[rows]].numpy(),
        ]

    def _precision_weights(self, i: int, rows: torch.Tensor) -> np.ndarray:
        """``adv_weights = "precision"``: agent ``i``'s rows weighted by 1 / the residual's variance given the
        baseline's value (linear_heads.precision_weights); ones otherwise."""
        if self.config.adv_weights == "equal":
            return np.ones(len(rows))
        assert self.baseline_value is not None
        value = self.baseline_value[rows]
        value = value if value.dim() == 1 else value[:, i]
        residual = self._residuals(rows)[:, i]
        return linear_heads.precision_weights(value.double().numpy(), residual.double().numpy())

    def _set_linear_members(self, i: int, grams: linear_heads.Grams) -> None:
        """Agent ``i``'s ensemble: Bayesian-bootstrap refits around the all-agents prior."""
        assert isinstance(self.adv_heads, linear_heads.LinearAdvantageHeads) and self.linear_prior is not None
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))
        fits = linear_heads.bootstrap_fits(
            grams, self.linear_ridge, self.config.adv_members, np.random.default_rng(seed),
            self.linear_prior.double().numpy(),
        )  # fmt: skip
        self.adv_heads.theta[i] = torch.as_tensor(fits, dtype=torch.float32).view_as(self.adv_heads.theta[i])

    @torch.no_grad()
    def fit_linear_heads(self) -> dict[str, float]:
        """The warm-up of linear heads (teammates as logged): the ridge chosen on held-out episodes for the
        fit of all agents' rows together, which becomes every agent's prior, then each agent's members."""
        d = self.data
        assert d is not None
        n_episodes = int(d.episode.max()) + 1
        self.linear_blocks = torch.randperm(n_episodes, generator=self.generator) % linear_heads.BLOCKS
        per_agent = []
        for i in range(d.n_agents):
            rows, (x, act, e, y, block) = self._linear_inputs(i)
            per_agent.append(linear_heads.block_grams(x, act, e, y, self._precision_weights(i, rows), block))
        total = linear_heads.Grams(
            *(sum(getattr(g, f) for g in per_agent) for f in ("zz", "zy", "yy", "rows"))
        )
        self.linear_ridge, gains = linear_heads.choose_ridge(total)
        prior = linear_heads.solve(total.zz.sum(0), total.zy.sum(0), self.linear_ridge)
        self.linear_prior = torch.as_tensor(prior)
        for i, grams in enumerate(per_agent):
            self._set_linear_members(i, grams)
        return {
            "adv_ridge": self.linear_ridge,
            "adv_holdout_gain": gains[self.linear_ridge],  # held-out R-loss minus all-zero heads'
            "adv_rows": float(total.rows.sum()),
        }

    @torch.no_grad()
    def refit_linear_agent(self, i: int) -> float:
        """Agent ``i``'s members on its random rows, weighted by its teammates' current clipped ratios
        ``pi~/mu`` (those already updated in this iteration's order carry their new policy). Returns the
        teammate weights' effective sample size as a share of the rows (1 when unweighted)."""
        rows, (x, act, e, y, block) = self._linear_inputs(i)
        w = self.teammate_weights(i, rows)
        ess = float(losses.effective_sample_size(torch.from_numpy(w))) if len(w) else 1.0
        w = w * self._precision_weights(i, rows)
        w = w / w.mean() if len(w) else w
        self._set_linear_members(i, linear_heads.block_grams(x, act, e, y, w, block))
        return ess

    @torch.no_grad()
    def teammate_weights(self, i: int, rows: torch.Tensor) -> np.ndarray:
        """Mean-one weights of agent ``i``'s ``rows`` from its teammates' clipped ratios ``pi~/mu`` (over the
        last ``teammate_memory_s`` seconds when set); ones without resampling."""
        c = self.config
        if not c.resample:
            return np.ones(len(rows))
        log_r = self._remembered_log_ratios()[rows] if c.teammate_memory_s > 0 else self._log_ratios(rows)
        return losses.mean_one_weights(
            losses.teammate_log_weights(log_r, self.teammates)[:, i].double()
        ).numpy()

    def _log_ratios(self, rows: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` every agent's clipped ``log pi - log mu`` of the logged actions of ``rows``."""
        return losses.clipped_log_ratios(
            self.policy_log_probs(rows), self.logged_log_mu(rows), self.log_ratio_min, self.log_ratio_max
        )

    @torch.no_grad()
    def _remembered_log_ratios(self) -> torch.Tensor:
        """``[K, N]`` every agent's clipped log-ratio of the logged actions, summed over its earlier steps in
        the episode with weight exp(-age / teammate_memory_s) (losses.remembered_log_ratios)."""
        c, d = self.config, self.data
        assert d is not None
        log_r = torch.cat([self._log_ratios(rows) for rows in torch.arange(d.size).split(16384)])
        # the row's discount is exp(-dt / horizon_s) to the next row: the same dt, faded over the memory
        decay = d.discounts.double() ** (c.horizon_s / c.teammate_memory_s)
        return losses.remembered_log_ratios(log_r, d.episode, decay, self.log_ratio_min, self.log_ratio_max)

    # -- 2a. critic ---------------------------------------------------------------------------
    def critic_step(self) -> dict[str, float]:
        c, d = self.config, self.data
        assert d is not None
        pool = self.sample_rows(c.batch_size * (c.resample_factor if c.resample else 1))
        nxt = d.next_index[pool]
        next_log_pi = self.policy_log_probs(nxt)
        next_log_mu = self.logged_log_mu(nxt)
        log_r = losses.clipped_log_ratios(next_log_pi, next_log_mu, self.log_ratio_min, self.log_ratio_max)
        not_done = 1.0 - d.done[pool]
        ess = 1.0
        if c.resample:
            log_w = log_r.sum(-1) * not_done  # terminal rows have no next action: weight 1
            ess = float(losses.ess_from_log_weights(log_w))
            probs = torch.softmax(log_w, 0)
            pick = torch.multinomial(probs, c.batch_size, replacement=True, generator=self.generator)
            rows, log_r, next_log_pi, nxt = pool[pick], log_r[pick], next_log_pi[pick], nxt[pick]
        else:
            rows = pool
        with torch.no_grad():
            next_q = self.critic_target(d.states[nxt], d.actions[nxt])
            # regulariser with clipped ratios: log mu + log r reproduces log pi where unclipped
            target = losses.soft_td_target(
                d.rewards[rows],
                d.done[rows],
                next_q,
                next_log_pi.clamp(min=-20.0),
                next_log_pi.clamp(min=-20.0) - log_r,
                c.gamma,
                c.alpha if c.soft_critic else 0.0,
                c.beta if c.soft_critic else 0.0,
            )
        q = self.critic(d.states[rows], d.actions[rows])
        loss = losses.mse(q, target)
        clip_step(self.critic_opt, loss, self.critic.parameters(), c.grad_clip)
        polyak_(self.critic_target, self.critic, c.polyak)
        return {"critic_loss": float(loss.detach()), "critic_ess": ess, "q_mean": float(q.detach().mean())}

    def critic_mc_step(self) -> dict[str, float]:
        """Regress the critic on logged discounted returns-to-go (Monte Carlo ``Q^mu``); warm-up only."""
        c, d = self.config, self.data
        assert d is not None
        rows = self.sample_rows(c.batch_size)
        q = self.critic(d.states[rows], d.actions[rows])
        loss = losses.mse(q, d.returns[rows])
        clip_step(self.critic_opt, loss, self.critic.parameters(), c.grad_clip)
        return {"critic_mc_loss": float(loss.detach())}

    # -- 2b/c. sequential actor phase -----------------------------------------------------------
    def agent_update(
        self,
        i: int,
        batch: _Batch,
        joint_q: torch.Tensor,
        baseline: torch.Tensor,
        log_w: torch.Tensor,
        start_log_p: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Fit agent ``i``'s local Q on the unnormalized target, then its actor on the closed-form weights."""
        c = self.config
        state, obs_i, act_i = batch.states, batch.obs[i], batch.actions[i]
        target = losses.unnormalized_local_q_target(joint_q, log_w, baseline)
        q_in = self.local_q.inputs(state, obs_i, i)
        q_loss = torch.zeros(())
        for _ in range(c.local_q_steps):
            pred = self.local_q.body(q_in).gather(-1, act_i.unsqueeze(-1)).squeeze(-1)
            q_loss = losses.mse(pred, target)
            clip_step(self.local_q_opt, q_loss, self.local_q.parameters(), c.grad_clip)
        with torch.no_grad():
            q_all = self.local_q.body(q_in)
        return {"local_q_loss": float(q_loss.detach()), **self._fit_actor(i, batch, q_all, start_log_p)}

    def agent_update_residual(
        self,
        i: int,
        batch: _Batch,
        rows: torch.Tensor,
        log_w: torch.Tensor,
        start_log_p: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Fit agent ``i``'s advantage heads on the residuals, teammates weighted by ``pi~/mu``; then its
        actor on the closed form with the pessimistic, normalised advantage in place of the local Q."""
        c = self.config
        assert self.adv_heads is not None and self.residual is not None and self.propensity_all is not None
        state, obs_i, act_i, mask_i = batch.states, batch.obs[i], batch.actions[i], batch.masks[i]
        agent = torch.full((len(rows),), i, dtype=torch.long)
        weights = losses.mean_one_weights(log_w).unsqueeze(-1)  # log_w is 0 without resampling: weights 1
        loss = torch.zeros(())
        linear = c.adv_heads == "linear"
        if linear and self.iteration > 0 and self.iteration % c.adv_refit_every == 0:
            self.refit_ess[i] = self.refit_linear_agent(i)
        for _ in range(0 if linear else c.adv_steps):
            adv = self._centred_advantages(state, obs_i, agent, mask_i, batch.log_mu_all[i])
            loss = losses.residual_advantage_loss(
                adv,
                act_i,
                self.propensity_all[rows, i],
                self._residuals(rows)[:, i],
                weights * self._bootstrap(len(rows)),
            )
            clip_step(self.adv_opt, loss, self.adv_heads.parameters(), c.grad_clip)
        with torch.no_grad():
            adv = self._centred_advantages(state, obs_i, agent, mask_i, batch.log_mu_all[i])
            pessimistic = losses.pessimistic_advantage(adv, c.kappa)
            if c.adv_normalize:
                self._update_adv_scale(adv.mean(1), batch.log_mu_all[i], mask_i)
                pessimistic = pessimistic / self.adv_scale
        fitted = {} if linear else {"adv_loss": float(loss.detach())}
        return {**fitted, **self._fit_actor(i, batch, pessimistic, start_log_p)}

    @torch.no_grad()
    def _typical_advantage(self, adv: torch.Tensor, log_mu_all: torch.Tensor, mask: torch.Tensor):
        """mu-weighted RMS of the advantages over rows with a choice (None if the rows have none)."""
        choice = mask.sum(-1) > 1
        if not bool(choice.any()):
            return None
        return (torch.exp(log_mu_all) * adv**2).sum(-1)[choice].mean().sqrt()

    def _init_adv_scale(self) -> None:
        """The advantages' typical size after the warm-up, over a large sample of every agent's rows."""
        d = self.data
        assert d is not None and self.log_mu_all is not None
        rows = self.sample_rows(min(d.size, 8192))
        with torch.no_grad():
            adv = self._every_agents_advantages(rows).mean(1)
        size = self._typical_advantage(adv, self.log_mu_all[rows].flatten(0, 1), d.masks[rows].flatten(0, 1))
        self.adv_scale = size.clamp(min=1e-8) if size is not None else torch.ones(())

    def _update_adv_scale(self, adv: torch.Tensor, log_mu_all: torch.Tensor, mask: torch.Tensor) -> None:
        size = self._typical_advantage(adv, log_mu_all, mask)
        if size is not None:
            self.adv_scale = (0.99 * self.adv_scale + 0.01 * size).clamp(min=1e-8)

    def _fit_actor(
        self, i: int, batch: _Batch, q_all: torch.Tensor, start_log_p: torch.Tensor | None
    ) -> dict[str, float]:
        """Weighted BC of agent ``i``'s logged actions towards the closed form ``pi* ∝ mu^(alpha/tau) exp(Q/tau)``.

        ``start_log_p``, if given, is agent ``i``'s ``log pi`` of the logged actions computed *with its
        graph* by its still untouched network: the first actor step backpropagates through it instead of
        repeating the same forward pass.
        """
        c = self.config
        assert self.actor is not None
        obs_i, act_i, mask_i = batch.obs[i], batch.actions[i], batch.masks[i]
        with torch.no_grad():
            log_mu = batch.log_mu_all[i]
            if c.certain_anchor and self.logged_log_prob is not None:
                certain = self.logged_log_prob[batch.rows, i] > math.log(CERTAIN)  # NaN (unknown): False
                log_mu = losses.anchor_on_certain(log_mu, act_i, certain)
            weights = losses.target_weights(
                q_all, log_mu, mask_i, act_i, c.alpha, c.beta, c.exp_clip, c.support_ratio
            )
            raw_mean = float(weights.mean())
            if c.normalize_weights:
                weights = weights / weights.mean().clamp(min=1e-8)
        # only agent i's parameters get a gradient (with one network per agent): clip just those
        params = list(self.actor.parameters() if c.shared else self.actor.net.bodies[i].parameters())
        a_loss = torch.zeros(())
        for step in range(c.actor_steps):
            if step == 0 and start_log_p is not None:
                a_loss = -(weights * start_log_p).mean()  # losses.bc_loss on the same logits
            else:
                a_loss = losses.bc_loss(agent_logits(self.actor, obs_i, i, mask_i), act_i, weights)
            clip_step(self.actor_opt, a_loss, params, c.grad_clip)
        return {"actor_loss": float(a_loss.detach()), "weight_mean": raw_mean}

    def _batch(self, rows: torch.Tensor) -> _Batch:
        d = self.data
        assert d is not None and self.log_mu_all is not None
        obs, actions, masks, log_mu_all = d.obs[rows], d.actions[rows], d.masks[rows], self.log_mu_all[rows]
        agents = range(d.n_agents)
        return _Batch(
            states=d.states[rows],
            joint_actions=actions,
            obs=[obs[:, i].contiguous() for i in agents],
            actions=[actions[:, i].contiguous() for i in agents],
            masks=[masks[:, i].contiguous() for i in agents],
            log_mu_all=[log_mu_all[:, i].contiguous() for i in agents],
            rows=rows,
        )

    def _agent_log_probs(self, batch: _Batch, i: int) -> torch.Tensor:
        """``log pi^i`` of agent ``i``'s logged actions on the batch (with a graph if grad is enabled)."""
        assert self.actor is not None
        logits = agent_logits(self.actor, batch.obs[i], i, batch.masks[i])
        return torch.log_softmax(logits, -1).gather(-1, batch.actions[i].unsqueeze(-1)).squeeze(-1)

    def train_iteration(self) -> dict[str, float]:
        c, d = self.config, self.data
        assert d is not None
        metrics: dict[str, float] = {}
        if not self.mu_done and c.estimator == "residual":
            metrics.update(self.prepare_residuals())
            if c.adv_heads == "linear":
                metrics.update(self.fit_linear_heads())
            else:
                for _ in range(c.adv_warmup):
                    metrics.update(self.adv_warmup_step())
            self._init_adv_scale()
        elif not self.mu_done:
            metrics.update(self.fit_mu())
            if c.critic_init == "mc":
                for _ in range(c.critic_warmup):
                    metrics.update(self.critic_mc_step())
                self.critic_target.load_state_dict(self.critic.state_dict())
            else:
                for _ in range(c.critic_warmup):
                    self.critic_step()
        local_q = c.estimator == "local_q"
        for _ in range(c.critic_steps if local_q else 0):  # the residual estimator needs no joint critic
            metrics.update(self.critic_step())
        # the residual estimator oversamples the rows that inform it; the actor's per-state target (the
        # closed form) does not depend on how often a state is drawn
        rows = self.sample_rows(c.batch_size) if local_q else self.sample_residual_rows(c.batch_size, 0.5)
        batch = self._batch(rows)
        joint_q, baseline = torch.zeros(()), torch.zeros(())
        if local_q:
            with torch.no_grad():
                joint_q = self.critic(batch.states, batch.joint_actions)
            baseline = losses.pessimistic_baseline(joint_q, c.baseline_quantile, c.baseline_min_margin)
        log_mu = self.logged_log_mu(rows)
        # With one network per agent, agent i's network is untouched until its own update, so its
        # iteration-start log-probs are exactly what its first actor step's forward pass would compute:
        # keep their graphs and let that step backpropagate through them (same numbers, N fewer passes).
        reuse = not c.shared and c.actor_steps > 0
        graphs: list[torch.Tensor | None] = [None] * d.n_agents
        if reuse:
            graphs = [self._agent_log_probs(batch, i) for i in range(d.n_agents)]
            log_pi = torch.stack(graphs, dim=1).detach()
        else:
            log_pi = self.policy_log_probs(rows)
        log_r = losses.clipped_log_ratios(log_pi, log_mu, self.log_ratio_min, self.log_ratio_max)
        frozen = log_r.clone()  # iteration-start ratios (what simultaneous updates use)
        order = torch.randperm(d.n_agents, generator=self.generator).tolist()
        per_agent: list[dict[str, float]] = []
        ess = []
        for k, i in enumerate(order):
            source = log_r if c.update == "sequential" else frozen
            if c.resample:
                log_w = losses.teammate_log_weights(source, self.teammates)[:, i]
            else:
                log_w = torch.zeros(rows.shape[0])
            ess.append(float(losses.ess_from_log_weights(log_w)))
            if local_q:
                per_agent.append(self.agent_update(i, batch, joint_q, baseline, log_w, graphs[i]))
            else:
                per_agent.append(self.agent_update_residual(i, batch, rows, log_w, graphs[i]))
            if c.update == "sequential" and k + 1 < len(order):  # the last agent's new ratios are unused
                with torch.no_grad():
                    new = self._agent_log_probs(batch, i)
                log_r[:, i] = losses.clipped_log_ratios(
                    new, log_mu[:, i], self.log_ratio_min, self.log_ratio_max
                )
        for key in per_agent[0]:
            metrics[key] = sum(m[key] for m in per_agent) / len(per_agent)
        if self.actor_avg is not None:
            self._update_average()
        if local_q:
            metrics["baseline"] = float(baseline)
        else:
            metrics["adv_scale"] = float(self.adv_scale)
            if self.refit_ess:  # the teammate weights' effective share of rows at the agents' last refits
                metrics["refit_ess_min"] = min(self.refit_ess.values())
        metrics.update(
            {
                "ess_mean": sum(ess) / len(ess),
                "ess_min": min(ess),
                "first_agent": float(order[0]),
            }
        )
        return metrics
