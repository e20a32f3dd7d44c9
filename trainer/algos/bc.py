"""Behaviour cloning: the actor imitates every agent's logged actions (cross-entropy, masks respected).

It is the ``bc`` baseline and what any in-sample method degenerates to on deterministic logs.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.algos import losses
from trainer.algos.base import Algorithm, all_agents_logits, clip_step
from trainer.algos.config import BCConfig


class BC(Algorithm):
    name = "bc"

    def __init__(self, config: BCConfig | None = None, name: str = "bc"):
        super().__init__(config or BCConfig())
        self.name = name

    def _build(self, neighbors) -> None:
        self.actor = self.make_actor()
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=self.config.lr)

    def modules(self) -> dict[str, nn.Module]:
        assert self.actor is not None
        return {"actor": self.actor}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.opt}

    def bc_step(self, rows: torch.Tensor) -> torch.Tensor:
        """One cross-entropy step on all agent rows of ``rows`` (the unit ``bench/train_speed.py`` times)."""
        d = self.data
        assert d is not None and self.actor is not None
        logits = all_agents_logits(self.actor, d.obs[rows], d.masks[rows])
        loss = losses.bc_loss(logits.flatten(0, 1), d.actions[rows].flatten())
        clip_step(self.opt, loss, self.actor.parameters(), self.config.grad_clip)
        return loss

    def train_iteration(self) -> dict[str, float]:
        loss = torch.zeros(())
        for _ in range(self.config.steps_per_iteration):
            loss = self.bc_step(self.sample_rows(self.config.batch_size))
        return {"bc_loss": float(loss.detach())}
