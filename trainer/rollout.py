"""Run one episode of any controller in any env, optionally logging every decision (docs/log-format.md).

Collection, evaluation and the closed loop all go through :func:`run_episode`, so a policy is
evaluated exactly the way logs are collected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.logformat import LogMeta, LogWriter, sim_timestamp
from envs.base import MultiAgentEnv
from envs.controllers import Controller


@dataclass
class EpisodeResult:
    seed: int
    controller: str
    episode_return: float  # sum of team rewards
    length: int
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # env.episode_extras(): traces for plots

    def row(self) -> dict[str, float | int | str]:
        return {
            "seed": self.seed,
            "controller": self.controller,
            "return": self.episode_return,
            "length": self.length,
            **self.metrics,
        }


def log_meta(env: MultiAgentEnv) -> LogMeta:
    return LogMeta(
        env_id=env.env_id,
        obs_dim=env.obs_dim,
        n_actions=env.n_actions,
        agent_ids=list(env.possible_agents),
        state_dim=env.state_dim,
        site_spec=getattr(env, "site_spec", None),
    )


def action_rng(seed: int) -> np.random.Generator:
    """The controller's sampling RNG for an episode: independent of the env's RNG, fixed by the seed."""
    return np.random.default_rng([int(seed), 104729])


def seed_episode_id(seed: int) -> str:
    """The episode id a collected episode gets: its seed, which is what makes it reproducible."""
    return f"seed-{seed:06d}"


def episode_seed(episode_id: str) -> int | None:
    """The seed of a collected episode's id (``seed_episode_id``'s inverse); None for other ids."""
    prefix, _, digits = episode_id.partition("-")
    return int(digits) if prefix == "seed" and digits.isdigit() else None


def run_episode(
    env: MultiAgentEnv,
    controller: Controller,
    seed: int,
    writer: LogWriter | None = None,
    episode_id: str | None = None,
    day: int = 0,
    max_steps: int | None = None,
) -> EpisodeResult:
    """Play one episode from ``env.reset(seed)``; return its team return, length and env metrics."""
    obs, infos = env.reset(seed=seed)
    controller.reset(env, seed)
    rng = action_rng(seed)
    agents = list(env.possible_agents)
    episode_id = episode_id or seed_episode_id(seed)
    total, t = 0.0, 0
    name = controller.describe()
    while True:
        actions, probs = controller.act(env, obs, infos, rng)
        state = env.state()
        ts = sim_timestamp(env.sim_time(), day)
        masks = np.stack([np.asarray(infos[a]["action_mask"], dtype=bool) for a in agents])
        next_obs, rewards, terms, truncs, next_infos = env.step(actions)
        # What was executed may differ from what was asked (e.g. SUMO's min-green): envs report it.
        executed = {a: int(next_infos.get(a, {}).get("executed_action", actions[a])) for a in agents}
        dists = controller.last_distribution
        # An overridden request was turned into the executed action by the env (e.g. a car whose stop a
        # teammate took in the same tick keeps going): that action happens whenever it is requested or
        # the overridden one is, so its probability is their sum (given the teammates' actions).
        exec_probs = {
            a: probs[a] if executed[a] == actions[a] else float(dists[a][executed[a]]) + probs[a]
            for a in agents
        }
        controller.observe(env, rewards, terms, truncs)
        team = env.team_reward(rewards)
        total += team
        done = all(terms.get(a, False) or truncs.get(a, False) for a in agents) or not env.agents
        if max_steps is not None and t + 1 >= max_steps:
            truncs = {a: True for a in agents} if not done else truncs
            done = True
        if writer is not None:
            writer.add_step(
                episode_id=episode_id,
                t=t,
                obs=np.stack([obs[a] for a in agents]),
                actions=np.array([executed[a] for a in agents]),
                masks=masks,
                rewards=np.array([rewards.get(a, 0.0) for a in agents]),
                terminated=np.array([bool(terms.get(a, False)) for a in agents]),
                truncated=np.array([bool(truncs.get(a, False)) for a in agents]),
                behavior_probs=np.array([exec_probs[a] for a in agents]),
                controller=name,
                model_version=controller.model_version,
                ts=ts,
                state=state,
                team_reward=team,
            )
        t += 1
        if done:
            break
        obs, infos = next_obs, next_infos
    if writer is not None:
        exogenous = env.exogenous_inputs()
        if exogenous is not None:
            writer.add_exogenous(episode_id, *exogenous, day=day)
        writer.end_episode()
    return EpisodeResult(
        seed=seed,
        controller=name,
        episode_return=total,
        length=t,
        metrics=env.episode_metrics(),
        extras=env.episode_extras(),
    )
