"""What every offline algorithm shares: data set-up, the actor, full-state checkpoints, ``fit``.

An algorithm object (d3rlpy-style) is built from a config, ``setup(data)`` prepares tensors and
networks, ``train_iteration()`` does one iteration and returns scalar metrics, ``fit`` loops with a
callback, and ``state_dict()`` / ``load_state_dict()`` hold *everything* needed to continue
bit-exactly on CPU (networks, optimizers, counters, the sampling RNG). ``save``/``load`` write that
state to one file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer.algos import exogenous
from trainer.algos.config import config_dict
from trainer.algos.data import Transitions, build_transitions, drift_reference
from trainer.algos.store import ShardCycle, StoredLog
from trainer.logs.dataset import OfflineData
from trainer.nets import MASK_LOGIT, PolicyNet, apply_mask


def agent_logits(policy: PolicyNet, obs: torch.Tensor, agent: int, mask: torch.Tensor) -> torch.Tensor:
    """Masked logits of one agent for ``obs [B, O]``; with separate networks only that agent's MLP runs."""
    if policy.shared:
        index = torch.full((obs.shape[0],), agent, dtype=torch.long)
        return policy(obs, index, mask)
    return apply_mask(policy.net.bodies[agent](policy.normalizer(obs)), mask.bool())


def all_agents_logits(policy: PolicyNet, obs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Masked logits of every agent: ``obs [B, N, O]``, ``masks [B, N, A]`` -> ``[B, N, A]`` (one batched pass)."""
    b, n, o = obs.shape
    if policy.shared:
        agents = torch.arange(n).repeat(b)
        return policy(obs.reshape(b * n, o), agents, masks.reshape(b * n, -1)).reshape(b, n, -1)
    return torch.stack([agent_logits(policy, obs[:, i], i, masks[:, i]) for i in range(n)], dim=1)


class Algorithm:
    """Base class: subclasses implement ``_build``, ``train_iteration`` and the state hooks."""

    name = "algorithm"

    def __init__(self, config: Any):
        self.config = config
        self.iteration = 0
        self.data: Transitions | None = None
        self.agent_ids: list[str] = []
        self.env_id = ""
        self.fingerprint = ""
        self.site_spec: dict | None = None
        self.generator = torch.Generator().manual_seed(int(config.seed))
        self.actor: PolicyNet | None = None
        self.shards: ShardCycle | None = None  # a streamed log's shards (None: the log is in RAM)
        self.row_split: tuple[int, int] | None = None  # (rank, processes): this process's share of a batch

    # -- set-up -------------------------------------------------------------------------------
    def setup(self, data: OfflineData | StoredLog, neighbors: dict[str, list[str]] | None = None) -> None:
        """Build tensors and networks for ``data`` (network init is seeded by ``config.seed``).

        A :class:`StoredLog` streams: ``self.data`` is then one shard of it at a time (``ShardCycle``)."""
        c = self.config
        if isinstance(data, StoredLog):
            if exogenous.wanted(c) and data.store.exogenous_file is None:
                raise ValueError(
                    f"baseline_inputs={c.baseline_inputs!r}: open the stored log with exogenous=True"
                )
            folds = getattr(c, "value_folds", 1) if getattr(c, "estimator", "") == "residual" else 1
            self.shards = ShardCycle(data, getattr(c, "reward_scale", None), min_episodes=folds)
            self.data = self.shards.load(0)
        else:
            self.data = build_transitions(
                data,
                getattr(c, "gamma", 0.99),
                getattr(c, "reward_scale", None),
                discount=getattr(c, "discount", "step"),
                horizon_s=getattr(c, "horizon_s", 0.0),
                exogenous=exogenous.wanted(c),
            )
        self.agent_ids, self.env_id, self.fingerprint = list(data.agent_ids), data.env_id, data.fingerprint
        self.site_spec = data.site_spec
        torch.manual_seed(int(self.config.seed))
        self._build(neighbors)

    def _build(self, neighbors: dict[str, list[str]] | None) -> None:
        raise NotImplementedError

    def make_actor(self) -> PolicyNet:
        d = self.data
        assert d is not None
        return PolicyNet(
            d.obs_dim, d.n_agents, d.n_actions, self.config.hidden, self.config.shared, d.obs_mean, d.obs_std
        )

    def sample_rows(self, n: int) -> torch.Tensor:
        assert self.data is not None
        if self.shards is not None:
            self.shards.drawn += n
        rows = torch.randint(0, self.data.size, (n,), generator=self.generator)
        if self.row_split is not None:  # data-parallel (trainer/distributed.py): every process draws the
            rank, processes = self.row_split  # same batch with the same generator and keeps its share
            rows = rows[rank::processes]
        return rows

    def next_shard(self) -> None:
        """Swap in the next shard of a streamed log, then let the algorithm redo its per-row quantities."""
        assert self.shards is not None
        self.data = self.shards.load(self.shards.index + 1)
        self.on_new_shard()

    def on_new_shard(self) -> None:
        """Recompute what the algorithm holds per row of ``self.data`` (nothing by default)."""

    # -- training -----------------------------------------------------------------------------
    def train_iteration(self) -> dict[str, float]:
        raise NotImplementedError

    def fit(
        self,
        iterations: int | None = None,
        callback: Callable[[Algorithm, dict[str, float]], None] | None = None,
    ) -> None:
        """Run until ``iterations`` (default ``config.iterations``) in total have been done."""
        total = self.config.iterations if iterations is None else iterations
        while self.iteration < total:
            if self.shards is not None and self.shards.due(self.data.size):
                self.next_shard()
            metrics = self.train_iteration()
            self.iteration += 1
            if callback is not None:
                callback(self, metrics)

    # -- the policy ---------------------------------------------------------------------------
    def deployed_actor(self) -> PolicyNet:
        """The policy that is evaluated, saved and exported: the trained actor (InSPO may average it)."""
        assert self.actor is not None
        return self.actor

    @torch.no_grad()
    def action_probs(self, obs: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """The deployed policy's distribution for every agent: ``obs [N, O]``, ``masks [N, A]`` -> ``[N, A]``."""
        actor = self.deployed_actor()
        logits = all_agents_logits(actor, torch.as_tensor(obs)[None], torch.as_tensor(masks)[None])
        return torch.softmax(logits[0], -1).numpy()

    def policy_meta(self) -> dict[str, Any]:
        assert self.data is not None
        return {
            "env_id": self.env_id,
            "agent_ids": self.agent_ids,
            "obs_low": self.data.obs_low.tolist(),
            "obs_high": self.data.obs_high.tolist(),
            "obs_reference": drift_reference(
                self.env_id,
                self.site_spec,
                self.data.obs.reshape(-1, self.data.obs_dim).numpy(),
                int(self.data.episode.max() - self.data.episode.min()) + 1,
            ),
            "algorithm": self.name,
            "config": config_dict(self.config),
            "dataset_fingerprint": self.fingerprint,
            "reward_scale": self.data.reward_scale,
            "site_spec": self.site_spec,
        }

    # -- state --------------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "algorithm": self.name,
            "config": config_dict(self.config),
            "iteration": self.iteration,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
            "extra": self.extra_state(),
            "shard": self.shards.state() if self.shards is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["algorithm"] != self.name:
            raise ValueError(f"checkpoint is for {state['algorithm']!r}, not {self.name!r}")
        mine = config_dict(self.config)
        # a field added after the checkpoint was written has its default there
        stored = {**config_dict(type(self.config)()), **state["config"]}
        if stored != mine:
            diff = {
                k: (stored.get(k), mine.get(k)) for k in {**stored, **mine} if stored.get(k) != mine.get(k)
            }
            raise ValueError(f"checkpoint config differs from this run's: {diff}")
        self.iteration = int(state["iteration"])
        if self.shards is not None and state.get("shard"):  # the shard it was on, before per-row state
            self.data = self.shards.load(state["shard"]["index"], state["shard"]["drawn"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state["extra"])

    def save(self, path: str | Path) -> None:
        """Write the full training state atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)

    def load(self, path: str | Path) -> None:
        """Restore a state written by :meth:`save` (after ``setup`` on the same data)."""
        self.load_state_dict(torch.load(path, weights_only=True))


@torch.no_grad()
def polyak_(target: nn.Module, source: nn.Module, rate: float) -> None:
    """``target <- (1 - rate) target + rate source``, parameter by parameter, in place."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), rate)


def clip_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params, grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm(params, grad_clip)
    optimizer.step()


def clip_grad_norm(params, max_norm: float) -> torch.Tensor:
    """``nn.utils.clip_grad_norm_`` (2-norm, CPU) with the same arithmetic, minus its per-call overhead,
    and no multiply when the factor is exactly 1 (``g * 1.0 == g``, so the result is bit-identical)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    if float(coef) != 1.0:  # NaN included, as in torch
        torch._foreach_mul_(grads, coef)
    return total


__all__ = ["MASK_LOGIT", "Algorithm", "agent_logits", "all_agents_logits", "clip_step"]
