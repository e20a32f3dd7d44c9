"""Paired-simulation truth for traffic (bench/advantage_truth.py ``--env sumo:grid4x4``).

One worker process per held-out episode (libsumo runs one simulation per process): it plays the
behaviour (``max-pressure@exp=0.2``, the named dataset ``experiment``'s controller, unless told another) on
a tuning seed and, from 100 s on, at every ``every``-th decision where some intersection's behaviour has a
real choice (outside min-green, more than one phase with probability; with ``decisions="keep"`` only where
the ``@keep=q`` alternative is what randomises it: max-pressure would leave a near-tie green), takes a
snapshot (``TrafficEnv.snapshot``: the seed and the phases requested so far, replayed exactly on restore).
For each legal phase of one such intersection (its teammates' phases at that step fixed to the episode's own
draw) and each of ``futures`` futures, it restores the snapshot, forces the phase and plays the behaviour on,
summing the team reward discounted as the learner discounts (``gamma`` per 5 s decision) until the weight
falls under 2e-3.

What differs between futures: the behaviour's own sampling after the snapshot (``action_rng(future)``:
all 16 intersections' held or ended greens, probability 0.2 at each switchable decision), the same
draws for every candidate phase. SUMO's own randomness (speed factors of vehicles still to come,
drivers' imperfection) follows the episode's SUMO seed and is common to all futures: a snapshot cannot
re-seed it (SUMO's saveState/loadState does not even reproduce it; envs/traffic/env.py says what was
measured), so the truth is the advantage given that hidden part of the state.
"""

from __future__ import annotations

import numpy as np

ENV = "sumo:grid4x4"
BEHAVIOUR = "max-pressure@exp=0.2"
ENV_ARGS = {"num_seconds": 900}  # the results config's episode (bench/configs/traffic-grid4x4.toml)
CONFIG = "bench/configs/traffic-grid4x4.toml"  # the learner's settings (gamma, networks) for both estimators
FIRST_S = 100  # no snapshot before the net has filled (the first minutes are nearly empty)
CUTOFF = 2e-3  # a future stops once its discount weight falls below this (as the elevator's step discount)


def future_steps(gamma: float) -> int:
    """Decisions after the forced one until the discount weight is below CUTOFF."""
    return int(np.ceil(np.log(CUTOFF) / np.log(gamma)))


def rollout(env, ctl, obs, infos, first: dict[str, int], future: int, gamma: float, steps: int) -> float:
    """Discounted team reward of one future: ``first`` now, then the behaviour for ``steps`` decisions."""
    from trainer.rollout import action_rng

    rng = action_rng(future)
    obs, rewards, _, _, infos = env.step(first)
    total = env.team_reward(rewards)
    for k in range(1, steps + 1):
        if not env.agents:
            break
        acts, _ = ctl.act(env, obs, infos, rng)
        obs, rewards, _, _, infos = env.step(acts)
        total += gamma**k * env.team_reward(rewards)
    return total


def episode_truth(job: tuple) -> dict:
    """One held-out episode: its snapshots and, per snapshot, ``values[action] = [futures]``."""
    seed, n_states, every, futures, gamma, future_base, behaviour, decisions = job
    from envs.controllers import build_controller
    from envs.registry import make_env
    from envs.traffic.controllers import near_tie_switch
    from trainer.rollout import action_rng

    env = make_env(ENV, **ENV_ARGS)
    ctl = build_controller(ENV, behaviour)
    obs, infos = env.reset(seed=seed)
    ctl.reset(env, seed)
    rng, pick = action_rng(seed), np.random.default_rng([seed, 7])
    steps = future_steps(gamma)
    last_start = env.config.num_seconds - (steps + 1) * env.config.delta_time  # a future fits the episode
    out, k, last = [], 0, -every
    while env.agents:
        actions, _ = ctl.act(env, obs, infos, rng)
        dist = ctl.last_distribution
        # with decisions="keep", only where the @keep=q alternative is what randomises the behaviour
        pressure, green = env.phase_pressure(), env.current_phases()
        choosers = [
            a
            for i, a in enumerate(env.possible_agents)
            if infos[a]["action_mask"].sum() > 1
            and np.count_nonzero(dist[a]) > 1
            and (decisions != "keep" or near_tie_switch(pressure[i], infos[a]["action_mask"], int(green[i])))
        ]
        if choosers and len(out) < n_states and k - last >= every and FIRST_S <= env.sim_time() <= last_start:
            last = k
            agent = choosers[int(pick.integers(len(choosers)))]
            mask = np.asarray(infos[agent]["action_mask"], bool)
            record = {
                "agent": env.possible_agents.index(agent),
                "dist": np.asarray(dist[agent], np.float64).copy(),
                "state": env.state().astype(np.float32),
                "obs": obs[agent].astype(np.float32),
                "mask": mask,
                "t": env.sim_time(),
                "values": {},
            }
            snap = env.snapshot()
            for a in np.flatnonzero(mask):
                values = np.zeros(futures)
                for r in range(futures):
                    o, inf = env.restore(snap)
                    first = {**actions, agent: int(a)}
                    future = future_base + (seed - 20_000) * 10_000 + len(out) * 100 + r
                    values[r] = rollout(env, ctl, o, inf, first, future, gamma, steps)
                record["values"][int(a)] = values
            out.append(record)
            obs, infos = env.restore(snap)  # the held-out episode goes on as it was
        obs, _, _, _, infos = env.step(actions)
        k += 1
    neighbors = env.neighbors()
    env.close()
    return {"snapshots": out, "neighbors": neighbors}
