"""Induction loops a signal cabinet has, placed by the env, and the observation computed from them.

The ``detectors`` observation (``make_env('sumo:<net>', observation='detectors')``) uses only what a
controller cabinet sees, so a policy trained on it can run on a real intersection's detector inputs and
be trained from its hi-res event log (trainer/hires/, docs/traffic.md "Hi-res event logs"):

* per incoming lane two loops: a **stop-bar** loop 1 m before the stop line (channel ``2j + 1`` for the
  agent's ``j``-th incoming lane) and an **advance** loop ``ADVANCE_M`` upstream (channel ``2j + 2``);
* each lane's loops serve every green phase that gives one of its links a green (``G`` or ``g``), as a
  cabinet's detectors call and extend the phases of their movements; the detector configuration lists a
  loop once per phase it serves.

The observation, per agent, with ``A`` the net's largest number of green phases (zero-padded like the
lane observation, actions ``>= n_green`` masked)::

    [phase one-hot (A) | min-green passed (1) | time in phase (1) |
     stop-bar occupancy (A) | stop-bar actuations (A) | advance occupancy (A) | advance actuations (A) |
     time since each phase was last green (A) | vehicles between the loops (A)]

Occupancy is the share of the last decision interval a phase's loops were occupied (mean over its
loops), actuations the number of off->on transitions of its loops / ``ACTUATION_SCALE``; times are
seconds / ``TIME_SCALE``, capped at ``TIME_CAP``. **Vehicles between the loops** is the cabinet's
input-output count of the vehicles a phase would serve: per phase, advance actuations in minus stop-bar
actuations out, summed over the episode so far, never below 0, and reset to 0 once all the phase's loops
have been off for ``CLEAR_S`` s (nothing can be left between them), / ``COUNT_SCALE``. Max-pressure decides
on such counts; occupancy alone cannot tell one waiting vehicle from ten (docs/traffic.md). The loops are
read once per simulated second (SUMO's step), so an occupancy is a whole number of seconds, an actuation a
rising edge between seconds, and the count changes once per second.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ADVANCE_M = 50.0  # advance loop distance upstream of the stop line (shorter lanes: at their start)
STOPBAR_M = 1.0  # stop-bar loop distance from the stop line
ACTUATION_SCALE = 10.0
COUNT_SCALE = 10.0  # vehicles between the loops / 10
CLEAR_S = 10  # all of a phase's loops off this long: no vehicle left between them (50 m take ~4-8 s)
TIME_SCALE = 60.0
TIME_CAP = 5.0  # 5 minutes
STOPBAR, ADVANCE = "Presence", "Advance"  # the detector configuration's Function values we write


@dataclass(frozen=True)
class Loop:
    """One induction loop: its SUMO id, the agent's detector channel, lane, kind and the green phases it serves."""

    loop_id: str
    channel: int
    lane: str
    function: str  # STOPBAR or ADVANCE
    phases: tuple[int, ...]  # green phase indices (0-based) of the agent
    pos: float


def obs_width(n_actions: int) -> int:
    return 7 * n_actions + 2


def lane_phases(lane_links: list[int], green_states: list[str]) -> tuple[int, ...]:
    """The green phases serving a lane: those that give one of its links a green (``G`` or ``g``)."""
    return tuple(g for g, state in enumerate(green_states) if any(state[k] in "Gg" for k in lane_links))


def read_loops(net_file: str, green_states: dict[str, list[str]]) -> dict[str, list[Loop]]:
    """Every signal's loops from the net file: incoming lanes in link-index order (SUMO's controlled lanes)."""
    lengths: dict[str, float] = {}
    links: dict[str, dict[str, list[int]]] = {}
    for _, elem in ET.iterparse(net_file):
        if elem.tag == "lane":
            lengths[elem.get("id", "")] = float(elem.get("length", "0"))
        elif elem.tag == "connection" and elem.get("tl") in green_states:
            lane = f"{elem.get('from')}_{elem.get('fromLane')}"
            links.setdefault(elem.get("tl", ""), {}).setdefault(lane, []).append(
                int(elem.get("linkIndex", "0"))
            )
    loops: dict[str, list[Loop]] = {}
    for tl, states in green_states.items():
        lanes = sorted(links.get(tl, {}).items(), key=lambda item: min(item[1]))
        out = []
        for j, (lane, indices) in enumerate(lanes):
            length, phases = lengths.get(lane, 0.0), lane_phases(indices, states)
            stop = max(length - STOPBAR_M, 0.0)
            advance = max(length - ADVANCE_M, 0.0)
            out.append(Loop(f"det_{tl}_{2 * j + 1}", 2 * j + 1, lane, STOPBAR, phases, stop))
            out.append(Loop(f"det_{tl}_{2 * j + 2}", 2 * j + 2, lane, ADVANCE, phases, advance))
        loops[tl] = out
    return loops


def write_additional(loops: dict[str, list[Loop]], path: Path) -> Path:
    """A SUMO additional file with the loops (no file output: the env reads them every second)."""
    root = ET.Element("additional")
    for tl_loops in loops.values():
        for loop in tl_loops:
            ET.SubElement(
                root,
                "inductionLoop",
                id=loop.loop_id,
                lane=loop.lane,
                pos=f"{loop.pos:.2f}",
                period="86400",
                file="NUL",
                friendlyPos="true",
            )
    ET.ElementTree(root).write(path, encoding="unicode")
    return path


def phase_features(
    on_seconds: np.ndarray,
    rises: np.ndarray,
    serves: np.ndarray,
    loop_stopbar: np.ndarray,
    interval: float,
) -> np.ndarray:
    """``[stop-bar occ | stop-bar actuations | advance occ | advance actuations]`` (4A) of one agent.

    ``on_seconds``/``rises``: per loop, occupied seconds and off->on transitions in the interval;
    ``serves``: ``[loops, A]`` True where the loop serves the phase; ``loop_stopbar``: True for stop-bar loops.
    """
    n_actions = serves.shape[1]
    out = np.zeros(4 * n_actions, dtype=np.float64)
    for block, kind in enumerate((True, False)):
        mine = serves[loop_stopbar == kind].astype(np.float64)
        n = mine.sum(axis=0)
        occ = on_seconds[loop_stopbar == kind] @ mine
        act = rises[loop_stopbar == kind] @ mine
        base = 2 * block * n_actions
        out[base : base + n_actions] = np.divide(occ, n * interval, out=np.zeros(n_actions), where=n > 0)
        out[base + n_actions : base + 2 * n_actions] = act / ACTUATION_SCALE
    return out


def serve_matrix(loops: list[Loop], n_actions: int) -> np.ndarray:
    """``[loops, A]``: True where the loop serves the green phase."""
    out = np.zeros((len(loops), n_actions), dtype=bool)
    for j, loop in enumerate(loops):
        out[j, list(loop.phases)] = True
    return out


def scaled_time(seconds: np.ndarray | float) -> np.ndarray:
    return np.minimum(np.asarray(seconds, dtype=np.float64) / TIME_SCALE, TIME_CAP)


def occupancy_reward(on_seconds: np.ndarray, interval: float) -> float:
    """Minus the agent's occupied loop-seconds per second of the interval (the ``occupancy`` reward).

    A lane whose queue covers its stop-bar loop counts 1, one that reaches back past its advance loop 2:
    a coarse queue count, so summed over agents and times the interval it tracks the vehicle-seconds
    spent waiting at the signals, i.e. delay, from loops alone (docs/traffic.md).
    """
    return -float(on_seconds.sum()) / interval


class DetectorBank:
    """The env's loops during an episode: per-second reads, the decision interval's sums, the trace.

    The trace (each second's loop states and the phase events the env executed) is what
    :mod:`envs.traffic.hires` renders as a hi-res event log.
    """

    def __init__(self, agents: list[str], loops: dict[str, list[Loop]], n_green: list[int], n_actions: int):
        self.agents = agents
        self.loops = loops
        self.ids = [loop.loop_id for a in agents for loop in loops[a]]
        sizes = [len(loops[a]) for a in agents]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.serves = [serve_matrix(loops[a], n_actions) for a in agents]
        self.loop_stopbar = np.array([loop.function == STOPBAR for a in agents for loop in loops[a]], bool)
        # the between-loops count of every (agent, phase) at once: [loops, N * A] with +1 for an advance
        # loop and -1 for a stop-bar loop in the columns of the phases it serves
        every = np.zeros((len(self.ids), len(agents) * n_actions), dtype=bool)
        for i in range(len(agents)):
            every[self.bounds[i] : self.bounds[i + 1], i * n_actions : (i + 1) * n_actions] = self.serves[i]
        self._serves_all = every
        self._count_sign = np.where(self.loop_stopbar, -1, 1)[:, None] * every
        self.n_green = n_green
        self.n_actions = n_actions
        self.reset()

    def reset(self) -> None:
        n = len(self.ids)
        self.prev = np.zeros(n, dtype=bool)
        self.on = np.zeros(n, dtype=np.int64)
        self.rises = np.zeros(n, dtype=np.int64)
        self.off_run = np.zeros(n, dtype=np.int64)  # consecutive reads each loop has been off
        self.between = np.zeros(self._serves_all.shape[1], dtype=np.int64)  # per (agent, phase)
        self.bits: list[np.ndarray] = []  # one row per simulated second (after the step to that second)
        self.events: list[tuple[float, int, int, int]] = []  # (seconds, agent index, event code, phase index)
        self.last_end = np.zeros((len(self.agents), self.n_actions))  # when each phase's green last ended

    def read(self, vehicles_on) -> None:
        """After one simulated second: ``vehicles_on(loop_id)`` is SUMO's last-step vehicle count."""
        bits = np.fromiter(map(vehicles_on, self.ids), dtype=np.int64, count=len(self.ids)) > 0
        rises = bits & ~self.prev
        self.on += bits
        self.rises += rises
        self.prev = bits
        self.bits.append(bits)
        self.off_run = np.where(bits, 0, self.off_run + 1)
        if rises.any():
            np.maximum(self.between + rises @ self._count_sign, 0, out=self.between)
        quiet = self.off_run >= CLEAR_S
        # a phase is clear when every loop serving it is quiet: no serving loop that is not quiet
        self.between[~((~quiet) @ self._serves_all)] = 0

    def phase_event(self, seconds: float, agent: int, code: int, phase: int) -> None:
        self.events.append((seconds, agent, code, phase))
        if code == 8:  # begin yellow: the phase's green is over
            self.last_end[agent, phase] = seconds

    def observe(
        self,
        out: np.ndarray,
        phase: list[int],
        can_switch: list[bool],
        since: list[float],
        t: float,
        interval: float,
    ) -> list[float]:
        """Write every agent's detector observation into ``out``; return the ``occupancy`` rewards.

        The interval's sums start again from zero afterwards.
        """
        a_max = self.n_actions
        out.fill(0.0)
        rewards = []
        for i in range(len(self.agents)):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            on, rises = self.on[lo:hi].astype(np.float64), self.rises[lo:hi].astype(np.float64)
            out[i, phase[i]] = 1.0
            out[i, a_max] = float(can_switch[i])
            out[i, a_max + 1] = scaled_time(since[i])
            if interval > 0:
                out[i, a_max + 2 : 5 * a_max + 2] = phase_features(
                    on, rises, self.serves[i], self.loop_stopbar[lo:hi], interval
                )
            served = t - self.last_end[i, : self.n_green[i]]
            served[phase[i]] = 0.0
            out[i, 5 * a_max + 2 : 5 * a_max + 2 + self.n_green[i]] = scaled_time(served)
            out[i, 6 * a_max + 2 : 7 * a_max + 2] = self.between[i * a_max : (i + 1) * a_max] / COUNT_SCALE
            rewards.append(occupancy_reward(on, interval) if interval > 0 else 0.0)
        self.on[:] = 0
        self.rises[:] = 0
        return rewards
