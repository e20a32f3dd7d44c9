"""The elevator group as a PettingZoo ParallelEnv: the B = 1 view of :class:`ElevatorCore`.

One agent per car (``car_0`` ...). A ``step`` is a *decision step*: the given actions apply
to the current tick, then the simulator runs on by itself (every car's only legal action)
until some car has a real choice again or the episode ends. The reward of a step is the sum
of the team reward over the ticks it covered. Cars without a choice at a decision step see a
mask with one legal action; ``infos[agent]["decision"]`` tells whether the car had a choice.
"""

from __future__ import annotations

import hashlib

import numpy as np

from envs.base import MultiAgentEnv
from envs.elevator.config import Building, Traffic
from envs.elevator.controllers import etd_assignment
from envs.elevator.core import ACTION_NAMES, N_ACTIONS, ElevatorCore
from envs.elevator.features import teammates_relative
from envs.elevator.scalar import ScalarCore


class ElevatorEnv(MultiAgentEnv):
    metadata = {"name": "elevator_v0", "is_parallelizable": True}

    def __init__(
        self,
        building: Building | None = None,
        traffic: Traffic | None = None,
        reward: str = "wait2",
        env_id: str = "",
        max_ticks_per_step: int | None = None,
        backend: str = "scalar",
        assignment_obs: bool = True,
    ):
        self.building = building or Building()
        self.traffic = traffic or Traffic()
        if backend == "scalar":
            self.core: ElevatorCore = ScalarCore(self.building, self.traffic, reward=reward)
        elif backend == "numpy":
            self.core = ElevatorCore(self.building, self.traffic, batch=1, reward=reward)
        else:
            raise ValueError(f"backend must be 'scalar' or 'numpy', got {backend!r}")
        self.backend = backend
        self.env_id = env_id or f"elevator:{self.building.name}:{self.traffic.profile}"
        self.possible_agents = [f"car_{i}" for i in range(self.building.n_cars)]
        self.agents = list(self.possible_agents)
        # assignment_obs: append to each car's observation the hall calls ETD's assignment gives it (2F
        # bits). Mostly a function of the other entries (plus door time left, claimed calls and the order
        # of old calls), made explicit because one network per car does not learn ETD's argmin over cars
        # from a few hundred episodes: without it greedy cloned policies stalled the building (docs/elevator.md).
        self.assignment_obs = bool(assignment_obs)
        self.obs_dim = self.core.obs_dim + (2 * self.building.n_floors if self.assignment_obs else 0)
        self.n_actions = N_ACTIONS
        self.state_dim = self.core.state_dim
        self.action_names = list(ACTION_NAMES)
        self.max_ticks_per_step = max_ticks_per_step
        self.decision_steps = 0
        self._seed: int | None = None

    # ------------------------------------------------------------------ API
    def reset(self, seed: int | None = None, options: dict | None = None):
        self._seed = 0 if seed is None else int(seed)
        self.core.reset([self._seed])
        self.agents = list(self.possible_agents)
        self.decision_steps = 0
        self._advance(0.0)  # run to the first decision (cars with one legal action move on their own)
        return self._obs(), self._infos()

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset()")
        core = self.core
        a = np.zeros((1, core.C), np.int64)
        mask = core.mask[0]
        for i, agent in enumerate(self.possible_agents):
            act = int(actions[agent]) if agent in actions else int(np.argmax(mask[i]))
            if not (0 <= act < N_ACTIONS) or not mask[i, act]:
                raise ValueError(
                    f"illegal action {act} for {agent} at t={core.t:.1f}s: legal {np.flatnonzero(mask[i]).tolist()}"
                )
            a[0, i] = act
        if self.backend == "scalar":
            r0, ex = core.tick(a[0].tolist())
            executed = np.array([ex])
        else:
            r, executed = core.step(a)
            r0 = float(r[0])
        self.decision_steps += 1
        total = self._advance(r0)
        done = bool(core.done[0])
        trunc = bool(core.truncated[0])
        obs, infos = self._obs(), self._infos()
        for i, agent in enumerate(self.possible_agents):
            if executed[0, i] != a[0, i]:
                infos[agent]["executed_action"] = int(executed[0, i])
        rewards = {agent: total for agent in self.possible_agents}
        terms = {agent: done and not trunc for agent in self.possible_agents}
        truncs = {agent: trunc for agent in self.possible_agents}
        if done:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def _advance(self, reward: float) -> float:
        """Tick with every car's only legal action until a car has a choice or the episode ends."""
        core = self.core
        ticks = 0
        if self.backend == "scalar":
            while not core.l_done and not core.has_decision():
                r, _ = core.tick([m.index(True) for m in core.l_mask])
                reward += r
                ticks += 1
                if self.max_ticks_per_step is not None and ticks >= self.max_ticks_per_step:
                    break
            core.sync()
            return reward
        while not core.done[0] and not core.deciding()[0].any():
            r, _ = core.step(np.argmax(core.mask, axis=2))
            reward += float(r[0])
            ticks += 1
            if self.max_ticks_per_step is not None and ticks >= self.max_ticks_per_step:
                break
        return reward

    def _obs(self):
        o = self.core.observe()[0]
        if self.assignment_obs:
            o = np.concatenate([o, self._assignment_bits()], axis=1)
        return {agent: o[i] for i, agent in enumerate(self.possible_agents)}

    def obs_groups(self) -> tuple[dict[str, list[int]], list[int]]:
        """Feature groups ``{name: [start, stop)}`` of the observation (ElevatorCore.observe's layout) and the
        clock features (time of day, phase), for the runtime's drift gauge (docs/operations.md)."""
        F, C = self.building.n_floors, self.building.n_cars
        bounds = [
            ("car", 8 + 2 * F),
            ("hall_calls", 4 * F),
            ("other_cars", (C - 1) * (5 + F)),
            ("context", 6),
        ]
        if self.assignment_obs:
            bounds.append(("assignment", 2 * F))
        groups, start = {}, 0
        for name, width in bounds:
            if width:
                groups[name] = [start, start + width]
            start += width
        context = groups["context"][0]
        return groups, [context, context + 1, context + 2]

    def ordinal_blocks(self) -> list[tuple[int, int]]:
        """One-hot blocks ``[start, stop)`` whose index is an ordered quantity: the floor a car decides at.
        The linear advantage heads may read it as a smooth function of the floor (``adv_ordinal``)."""
        F = self.building.n_floors
        return [(8 + F, 8 + 2 * F)]

    def decision_context(self) -> list[tuple[int, int]]:
        """Ranges ``[start, stop)`` of a car's observation that describe the decision itself: its direction and
        mode one-hots and the floor it decides at (the linear heads' ``adv_features = "context"``)."""
        F = self.building.n_floors
        return [(1, 7), (8 + F, 8 + 2 * F)]

    def teammate_features(self, obs: np.ndarray) -> np.ndarray:
        """``[n, 10]`` from rows of a car's observation: where the other cars are relative to the floor it
        decides at (envs/elevator/features.py), for the linear heads' ``adv_teammates``."""
        return teammates_relative(obs, self.building.n_floors, self.building.n_cars)

    def _assignment_bits(self) -> np.ndarray:
        """``[C, 2F]``: 1 where ETD's assignment gives the car the hall call (floor f, direction d) at ``2f + d``."""
        bits = np.zeros((self.building.n_cars, 2 * self.building.n_floors), dtype=np.float32)
        for c, calls in enumerate(etd_assignment(self)):
            for f, d in calls:
                bits[c, 2 * f + d] = 1.0
        return bits

    def _infos(self):
        m = self.core.mask[0]
        dec = m.sum(axis=1) > 1
        return {
            agent: {"action_mask": m[i].copy(), "decision": bool(dec[i])}
            for i, agent in enumerate(self.possible_agents)
        }

    def state(self) -> np.ndarray:
        return self.core.global_state()[0]

    def team_reward(self, rewards):
        return float(rewards[self.possible_agents[0]]) if rewards else 0.0

    def neighbors(self):
        return {a: [b for b in self.possible_agents if b != a] for a in self.possible_agents}

    def sim_time(self) -> float:
        return float(self.core.t)

    def exogenous_inputs(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """The passengers who have arrived, by origin floor. Every passenger is drawn from the seed before
        the episode starts (envs/elevator/traffic.py), so no dispatch decision changes when or where someone
        comes to wait: what an operator's destination terminals or people counters record."""
        p = self.core.passengers[0]
        arrived = p.arrival <= self.core.t
        names = [f"arrivals at floor {f}" for f in range(self.building.n_floors)]
        return p.arrival[arrived].copy(), p.origin[arrived].astype(np.int32), names

    def episode_metrics(self) -> dict[str, float]:
        m = self.core.metrics(0)
        m["decision_steps"] = float(self.decision_steps)
        return m

    def episode_extras(self) -> dict:
        core = self.core
        return {
            "trace_t": np.asarray(core.trace_t) - core.warmup,
            "waiting_per_floor": np.stack([w[0] for w in core.trace_wait]),
            "wait_samples": core.wait_samples(0),
            "warmup": core.warmup,
            "window": core.window,
        }

    def resample_future(self, seed: int) -> None:
        """Swap the passengers who have not arrived yet for a fresh draw of the same traffic profile.

        For lookahead on a *copy* of the env (``copy.deepcopy``): the copy then plays one possible
        future that a controller knowing the profile, but not tomorrow's passengers, must reckon with
        (``bench/elevator_rollout_bound.py``). The episode's own seed gives back the same future.
        """
        if not isinstance(self.core, ScalarCore):
            raise NotImplementedError("resample_future needs the scalar backend")
        self.core.resample_future(seed)

    # ------------------------------------------------------------------ testing aids
    def trajectory_digest(self) -> str:
        """A hash of the full simulator state (for determinism tests)."""
        c = self.core
        h = hashlib.sha256()
        for arr in (c.pos, c.mode, c.dir, c.load, c.riders, c.arrived, c.boarded, c.board_t, c.deliver_t):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update(np.float64(c.t).tobytes())
        return h.hexdigest()

    def render(self):  # pragma: no cover - text view for debugging
        c = self.core
        lines = []
        w = c.waiting()[0]
        for f in range(c.F - 1, -1, -1):
            cars = "".join(
                ("[" + str(int(c.load[0, i])).rjust(2) + "]") if abs(c.pos[0, i] - f) < 0.5 else "  .  "
                for i in range(c.C)
            )
            lines.append(f"{f:2d} {cars}  up:{w[f, 0]:3d} dn:{w[f, 1]:3d}")
        return "\n".join(lines)
