"""The residualised per-agent advantage estimator (InSPO with ``estimator = "residual"``).

A logged return ``G`` carries the whole future's noise, and one car's choice moves it by a
tiny amount. Regressing ``G`` (or a critic's ``Q``) on the action drowns that effect. The
estimator here subtracts what the state already predicts and what the behaviour policy already
explains (Robinson's residual-on-residual form, the "R-learner"):

    G - V(s)  ~=  A_i(s, o_i, a_i) - sum_a e_i(a) A_i(s, o_i, a)

* ``V(s)`` is a state value fitted on the logged returns, **cross-fitted** on episode folds, so a
  row's own return never enters its own baseline (an in-fold fit would absorb the action's effect).
* ``e_i(a)`` is the propensity of agent ``i``'s actions: the log's exact ``behavior_prob`` for the
  executed action where present (the rest of the mass split as the fitted mu splits it), the
  fitted mu otherwise.
* ``A_i`` is a head per agent (shared trunk with an agent one-hot, on the state and the agent's own
  observation) with ``M`` ensemble members, centred so that ``sum_a mu_i(a) A_i(a) = 0``; members
  see different Bayesian-bootstrap weights, and the learner acts on ``mean - kappa * std``.

See docs/algorithm.md ("The residual advantage estimator") for the derivation and the measured
correlation with simulated truth (bench/advantage_truth.py).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainer.nets import Normalizer, mlp


class StateValue(nn.Module):
    """``V(s)``: a plain MLP on the normalised global state; ``outputs > 1``: one value per agent's return."""

    def __init__(self, state_dim: int, hidden, mean: torch.Tensor, std: torch.Tensor, outputs: int = 1):
        super().__init__()
        self.normalizer = Normalizer(state_dim, mean, std)
        self.body = mlp(state_dim, hidden, outputs)
        self.outputs = outputs

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        out = self.body(self.normalizer(state))
        return out.squeeze(-1) if self.outputs == 1 else out


class AdvantageHeads(nn.Module):
    """``A_i(s, o_i) -> [M, A]``: ``M`` ensemble members of agent ``i``'s advantage, before centring."""

    def __init__(
        self, state_dim: int, obs_dim: int, n_agents: int, n_actions: int, members: int, hidden, norms
    ):
        super().__init__()
        self.n_agents, self.n_actions, self.members = n_agents, n_actions, members
        self.state_norm = Normalizer(state_dim, norms[0], norms[1])
        self.obs_norm = Normalizer(obs_dim, norms[2], norms[3])
        self.body = mlp(state_dim + obs_dim + n_agents, hidden, members * n_actions)

    def forward(self, state: torch.Tensor, obs: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(agent.long(), self.n_agents).to(state.dtype)
        x = torch.cat([self.state_norm(state), self.obs_norm(obs), one_hot], -1)
        return self.body(x).view(-1, self.members, self.n_actions)


def episode_folds(episode: torch.Tensor, folds: int, generator: torch.Generator) -> torch.Tensor:
    """Each row's fold: whole episodes are assigned to folds at random (seeded), so folds never split one."""
    n_episodes = int(episode.max()) + 1
    if folds < 2 or n_episodes < folds:
        raise ValueError(
            f"cross-fitting needs at least 2 folds and one episode per fold; got {folds} folds, "
            f"{n_episodes} episodes"
        )
    fold_of_episode = torch.randperm(n_episodes, generator=generator) % folds
    return fold_of_episode[episode]


def crossfit_values(
    states: torch.Tensor,
    targets: torch.Tensor,
    fold: torch.Tensor,
    make_net,
    steps: int,
    batch_size: int,
    lr: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Out-of-fold predictions ``V(s_k)``: fold ``f``'s rows are predicted by a net fitted on the other folds."""
    out = torch.empty_like(targets)
    for f in range(int(fold.max()) + 1):
        train = torch.nonzero(fold != f).squeeze(-1)
        held = torch.nonzero(fold == f).squeeze(-1)
        net = make_net()
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(steps):
            rows = train[torch.randint(0, len(train), (batch_size,), generator=generator)]
            loss = nn.functional.mse_loss(net(states[rows]), targets[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            for start in range(0, len(held), 8192):
                part = held[start : start + 8192]
                out[part] = net(states[part])
    return out


def lambda_returns(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    done: torch.Tensor,
    next_index: torch.Tensor,
    values: torch.Tensor,
    lam: float,
) -> torch.Tensor:
    """``G^lambda_k = r_k + d_k (1 - done_k) [(1 - lambda) V(s_{k+1}) + lambda G^lambda_{k+1}]``.

    Rows are in episode order with ``next_index[k] = k + 1`` inside an episode (build_transitions), so
    one backward sweep computes every episode. ``lambda = 1`` is the Monte Carlo return.
    """
    r = rewards.double().numpy()
    d = (discounts.double() * (1.0 - done.double())).numpy()
    v = values.double().numpy()
    nxt = next_index.numpy()
    out = np.zeros_like(r)
    for k in range(len(r) - 1, -1, -1):
        if d[k] > 0.0:
            j = nxt[k]
            out[k] = r[k] + d[k] * ((1.0 - lam) * v[j] + lam * out[j])
        else:
            out[k] = r[k]
    return torch.from_numpy(out.astype(np.float32))


def credit_matrix(
    kind: str, agent_ids: list[str], neighbors: dict[str, list[str]] | None
) -> torch.Tensor | None:
    """``C [N, N]``: agent ``i``'s credited reward is ``sum_j C[i, j] r_j`` (None for the team reward).

    "local": its own reward; "local+neighbours": its own plus its neighbours' (``env.neighbors()``).
    """
    if kind == "team":
        return None
    n = len(agent_ids)
    credit = torch.eye(n)
    if kind == "local+neighbours":
        if neighbors is None:
            raise ValueError(
                "config reward_credit='local+neighbours' needs the env's neighbour graph (env.neighbors()); "
                "train with the env known (--env), or use reward_credit='local'"
            )
        index = {agent: k for k, agent in enumerate(agent_ids)}
        for agent, nbrs in neighbors.items():
            for other in nbrs:
                if agent in index and other in index:
                    credit[index[agent], index[other]] = 1.0
    return credit


def propensities(
    log_mu_all: torch.Tensor, actions: torch.Tensor, behavior_prob: torch.Tensor
) -> torch.Tensor:
    """``e(a)`` for every action ``[K, N, A]``: the logged probability of the executed action where the
    log has it, the remaining mass split over the other actions in proportion to the fitted mu; the
    fitted mu where the log has no probability."""
    mu = torch.exp(log_mu_all)  # illegal actions: exp(-1e9) = 0
    known = ~torch.isnan(behavior_prob)
    taken = nn.functional.one_hot(actions, mu.shape[-1]).bool()
    others = mu.masked_fill(taken, 0.0)
    other_mass = others.sum(-1, keepdim=True)
    p = behavior_prob.clamp(0.0, 1.0).nan_to_num(1.0).unsqueeze(-1)
    exact = torch.where(taken, p.expand_as(mu), (1.0 - p) * others / other_mass.clamp(min=1e-12))
    return torch.where(known.unsqueeze(-1), exact, mu)


__all__ = [
    "AdvantageHeads",
    "StateValue",
    "credit_matrix",
    "crossfit_values",
    "episode_folds",
    "lambda_returns",
    "propensities",
]
