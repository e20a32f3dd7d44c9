"""Bridge: two agents must pass each other on a one-lane bridge (InSPO paper §4.4, Fu et al. 2022).

Map 4 of the AlberDICE code, a 3x6 grid (``B`` = wall)::

    1 A B B A A        agent0 starts at (1,2) and must reach (2,5)
    A A A A A A        agent1 starts at (1,3) and must reach (0,0)
    A A B B A 2        columns 2-3 are passable only in row 1: the bridge

One agent has to back off so the other can pass: two symmetric optimal orderings, a
temporal version of XOR. The map is symmetric under a 180° turn with the agents swapped,
so both orderings have the same return.

Rules (one implementation, :func:`move`, shared by the env and the planner):
  * actions: 0 stay, 1 up, 2 down, 3 right, 4 left; a move into a wall or off the grid fails;
  * moves are simultaneous; if both agents would end in the same cell, or swap cells, both
    moves fail; a move into the cell the other agent keeps also fails;
  * an agent at its goal is done: it stays there and its only legal action is ``stay``;
  * each agent not done after the step gets ``-0.1 * ||goal - pos||_2``; the team reward is
    the mean over agents, and every reward is zero on the step where all agents are done;
  * the episode ends when both agents are at their goals or after 20 steps (truncation).

Observation = state = ``(row0, col0, goal_row0, goal_col0, row1, col1, goal_row1, goal_col1)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from envs.base import MultiAgentEnv
from envs.controllers import one_hot
from envs.games.joint import JointController

MAP = ("1ABBAA", "AAAAAA", "AABBA2")
ROWS, COLS = len(MAP), len(MAP[0])
WALLS = frozenset((r, c) for r in range(ROWS) for c in range(COLS) if MAP[r][c] == "B")
STARTS = ((1, 2), (1, 3))
GOALS = ((2, 5), (0, 0))
EPISODE_LIMIT = 20
ACTION_NAMES = ["stay", "up", "down", "right", "left"]
DELTAS = ((0, 0), (-1, 0), (1, 0), (0, 1), (0, -1))

Pos = tuple[int, int]


def _target(pos: Pos, action: int) -> Pos:
    r, c = pos[0] + DELTAS[action][0], pos[1] + DELTAS[action][1]
    if not (0 <= r < ROWS and 0 <= c < COLS) or (r, c) in WALLS:
        return pos
    return (r, c)


def move(positions: tuple[Pos, Pos], actions: tuple[int, int]) -> tuple[Pos, Pos]:
    """Both agents' positions after a simultaneous move, with the collision rules above.

    Done agents are expected to pass action 0 (their mask allows nothing else).
    """
    a, b = positions
    ta, tb = _target(a, actions[0]), _target(b, actions[1])
    if ta == tb or (ta == b and tb == a):
        return a, b
    if ta == b and tb == b:  # b keeps its cell, a tried to enter it
        return a, b
    if tb == a and ta == a:
        return a, b
    return ta, tb


def distance(pos: Pos, goal: Pos) -> float:
    return float(np.hypot(pos[0] - goal[0], pos[1] - goal[1]))


def step_rewards(positions: tuple[Pos, Pos], was_done: tuple[bool, bool], last_step: bool) -> list[float]:
    """Per-agent rewards of a step that ended in ``positions``."""
    done = [positions[i] == GOALS[i] or last_step for i in range(2)]
    if all(done):
        return [0.0, 0.0]
    return [0.0 if was_done[i] else -0.1 * distance(positions[i], GOALS[i]) for i in range(2)]


class BridgeEnv(MultiAgentEnv):
    """The 3x6 one-lane bridge gridworld; deterministic (the seed changes nothing)."""

    env_id = "bridge"
    possible_agents = ["agent_0", "agent_1"]
    obs_dim = 8
    n_actions = 5
    state_dim = 8
    action_names = ACTION_NAMES

    def __init__(self, episode_limit: int = EPISODE_LIMIT):
        self.episode_limit = episode_limit
        self.agents: list[str] = []
        self.positions: tuple[Pos, Pos] = STARTS
        self._t = 0

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.positions = STARTS
        self._t = 0
        return self._obs(), self._infos()

    def done_flags(self) -> tuple[bool, bool]:
        return (self.positions[0] == GOALS[0], self.positions[1] == GOALS[1])

    def state(self) -> np.ndarray:
        (p0, p1), (g0, g1) = self.positions, GOALS
        return np.array([*p0, *g0, *p1, *g1], dtype=np.float32)

    def _obs(self):
        s = self.state()
        return {a: s.copy() for a in self.possible_agents}

    def _infos(self):
        done = self.done_flags()
        stay_only = one_hot(self.n_actions, 0).astype(bool)
        return {
            a: {"action_mask": stay_only if done[i] else np.ones(self.n_actions, dtype=bool)}
            for i, a in enumerate(self.possible_agents)
        }

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset()")
        was_done = self.done_flags()
        joint = tuple(0 if was_done[i] else int(actions[a]) for i, a in enumerate(self.possible_agents))
        self.positions = move(self.positions, joint)  # type: ignore[arg-type]
        self._t += 1
        last = self._t >= self.episode_limit
        rewards = step_rewards(self.positions, was_done, last)
        at_goal = self.done_flags()
        terms = {a: at_goal[i] for i, a in enumerate(self.possible_agents)}
        truncs = {a: last and not at_goal[i] for i, a in enumerate(self.possible_agents)}
        obs, infos = self._obs(), self._infos()
        if all(at_goal) or last:
            self.agents = []
        return obs, dict(zip(self.possible_agents, rewards, strict=True)), terms, truncs, infos

    def neighbors(self):
        return {"agent_0": ["agent_1"], "agent_1": ["agent_0"]}

    def episode_metrics(self):
        return {"both_at_goal": float(all(self.done_flags()))}


# -- the optimal plan (exact finite-horizon dynamic programming over the joint state) ------------


@dataclass(frozen=True)
class Plan:
    """Exact optimal values of Bridge and one optimal joint action sequence per ordering."""

    optimal_return: float
    q: np.ndarray  # [T, S, 25] optimal Q per step, joint position and joint action (-inf if illegal)
    index: dict[tuple[Pos, Pos], int]  # joint position -> row of q
    sequences: dict[str, tuple[tuple[int, int], ...]]  # ordering -> joint actions
    trajectories: dict[str, tuple[tuple[Pos, Pos], ...]]  # ordering -> joint position before each action

    def greedy(self, positions: tuple[Pos, Pos], t: int) -> tuple[int, int]:
        """An optimal joint action at step ``t`` (lowest index among ties)."""
        k = int(np.argmax(self.q[min(t, len(self.q) - 1), self.index[positions]]))
        return JOINT[k]


JOINT = [(a, b) for a in range(5) for b in range(5)]


@cache
def plan(episode_limit: int = EPISODE_LIMIT) -> Plan:
    """Backward induction over (positions of both agents, step) with a precomputed transition table.

    196 joint positions x 25 joint actions, so it takes milliseconds. Orderings: ``"agent_0-first"``
    (agent1 backs off and agent0 crosses first) and ``"agent_1-first"``; within an ordering ties
    break to the lowest joint action index, so the plan is deterministic.
    """
    cells = [(r, c) for r in range(ROWS) for c in range(COLS) if (r, c) not in WALLS]
    states = [(a, b) for a in cells for b in cells if a != b]
    index = {s: i for i, s in enumerate(states)}
    n_s, n_a = len(states), len(JOINT)
    nxt = np.zeros((n_s, n_a), dtype=np.int64)
    reward = np.zeros((2, n_s, n_a))  # [is last step, state, joint action]
    legal = np.zeros((n_s, n_a), dtype=bool)
    final = np.array([s[0] == GOALS[0] and s[1] == GOALS[1] for s in states])
    for i, s in enumerate(states):
        done = (s[0] == GOALS[0], s[1] == GOALS[1])
        for k, ja in enumerate(JOINT):
            legal[i, k] = not (done[0] and ja[0]) and not (done[1] and ja[1])
            moved = move(s, ja)
            nxt[i, k] = index[moved]
            for last in (0, 1):
                reward[last, i, k] = np.mean(step_rewards(moved, done, bool(last)))
    values = np.zeros((episode_limit + 1, n_s))
    qs = np.zeros((episode_limit, n_s, n_a))
    for t in reversed(range(episode_limit)):
        q = reward[int(t + 1 >= episode_limit)] + values[t + 1][nxt]
        qs[t] = np.where(legal, q, -np.inf)
        values[t] = np.where(final, 0.0, qs[t].max(axis=1))
    sequences, trajectories = {}, {}
    for first, name in ((0, "agent_0-first"), (1, "agent_1-first")):
        s, t, seq, traj = index[STARTS], 0, [], []
        while t < episode_limit and not final[s]:
            best = np.flatnonzero(qs[t, s] >= values[t, s] - 1e-9)
            if t == 0:  # the ordering: the agent that crosses first steps towards its goal
                best = [k for k in best if JOINT[k][first] == (3 if first == 0 else 4)]
            k = int(best[0])
            seq.append(JOINT[k])
            traj.append(states[s])
            s, t = int(nxt[s, k]), t + 1
        sequences[name], trajectories[name] = tuple(seq), tuple(traj)
    return Plan(float(values[0, index[STARTS]]), qs, index, sequences, trajectories)


def optimal_return(episode_limit: int = EPISODE_LIMIT) -> float:
    """The best achievable team return (both orderings reach it)."""
    return plan(episode_limit).optimal_return


class BridgeOptimal(JointController):
    """The scripted optimal behaviour policy: one of the two orderings per episode, 1/2 each.

    Closed loop: at each step the orderings whose planned trajectory is at the current joint
    position share the probability mass; when none is (possible only under an exploration
    wrapper) it plays the exact optimal joint action. Logged probabilities are each agent's
    exact marginal: 0.5 at the first step, where the orderings diverge, 1 afterwards.
    """

    name = "optimal"

    def __init__(self, orderings: tuple[str, ...] = ("agent_0-first", "agent_1-first")):
        self.orderings = orderings
        if len(orderings) == 1:
            self.name = f"optimal-{orderings[0]}"

    def joint_distribution(self, env, obs, infos):
        p = plan(env.episode_limit)
        t, positions = env._t, env.positions
        on_plan = [
            name
            for name in self.orderings
            if t < len(p.trajectories[name]) and p.trajectories[name][t] == positions
        ]
        if not on_plan:
            return [(1.0, p.greedy(positions, t))]
        return [(1.0 / len(on_plan), p.sequences[name][t]) for name in on_plan]
