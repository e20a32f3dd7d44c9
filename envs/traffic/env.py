"""Traffic-signal control as a :class:`~envs.base.MultiAgentEnv`: sumo-rl's signal logic on libsumo.

One agent per signalized intersection. sumo-rl's ``SumoEnvironment``/``TrafficSignal`` own the
phase logic (green phases from the net's program, generated yellow transitions, min-green),
so our dynamics equal sumo-rl's and the measured baselines. We replace its hot path:

* after ``reset`` the env runs ``TrafficSignal``'s phase rules itself: the same SUMO calls at the
  same simulated seconds (yellow transition at the decision, the green once ``yellow_time`` has
  passed), without its per-signal, per-second Python; SUMO is advanced to those seconds in one call;
* lane counts are read once per decision (vehicles on every lane, halted vehicles on the occupied
  incoming lanes), and observation, reward, max-pressure scores and metrics are computed from them
  with a few numpy calls (sumo-rl makes ~4 calls per lane per agent). Outputs are bit-for-bit
  those of the per-signal computation they replace.

Padding: agents have different numbers of green phases (actions) and incoming lanes. Every
observation is ``[phase one-hot (A) | min-green passed (1) | pressure per phase (A) |
density per incoming lane (L) | queue per incoming lane (L)]`` with ``A``/``L`` the maxima over the
net's agents, zero-padded. Actions ``>= n_green`` of an agent are masked out. ``observation="detectors"`` replaces
it by what a cabinet's induction loops see (envs/traffic/detectors.py; same padding and masks), read
once per simulated second, and ``events_dir`` writes every episode as a hi-res controller event log
(envs/traffic/hires.py).

Masking min-green: until ``yellow_time + min_green`` seconds have passed since the last switch,
only the current phase is legal (sumo-rl would ignore a switch request there anyway), so a
mask-respecting controller's request is what SUMO executes. If a controller asks for something
else, the phase actually kept is reported as ``infos[agent]["executed_action"]`` and logged.

libsumo runs one simulation per process: a second live env in the same process raises
:class:`SecondSimulationError` (the alternative is a silent hang).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import weakref
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, fields
from itertools import compress
from operator import add, ne
from pathlib import Path
from typing import Any

import numpy as np

from envs.base import MultiAgentEnv
from envs.traffic.detectors import DetectorBank, obs_width, read_loops, write_additional
from envs.traffic.nets import Program, builtin_net, check_readable, check_routes, is_green, read_programs
from envs.traffic.sumo_setup import import_sumo, sumo_binary

VEHICLE_SPACE_M = 7.5  # default vehicle length 5 m + sumo-rl's MIN_GAP 2.5 m: lane capacity = length / 7.5
PRESSURE_SCALE = 20.0  # pressure features are vehicles / 20 (roughly a lane's capacity)
REWARDS = ("queue", "pressure", "diff-waiting-time", "average-speed", "occupancy")
OBSERVATIONS = ("lanes", "detectors")


class SecondSimulationError(RuntimeError):
    """A second libsumo simulation in one process (libsumo would silently hang)."""


class SumoStartError(RuntimeError):
    """SUMO refused to load the scenario (bad net/route content, bad option)."""


@dataclass(frozen=True)
class TrafficConfig:
    """Every knob of a traffic scenario; ``make_env('sumo:<net>', **overrides)`` sets any field."""

    net: str = "grid4x4"
    net_file: str = ""  # default: the shipped net of that name
    route_file: str = ""
    begin_time: int = -1  # -1: the benchmark hour's start (0, 25200 for cologne, 57600 for ingolstadt)
    num_seconds: int = 3600  # simulated seconds per episode
    delta_time: int = 5  # seconds between decisions
    yellow_time: int = 2
    min_green: int = 5
    time_to_teleport: int = -1  # SUMO --time-to-teleport; -1 = never (sumo-rl and RESCO default)
    max_depart_delay: int = -1
    waiting_time_memory: int = 1000
    reward: str = "queue"  # per intersection; see TrafficEnv docstring
    observation: str = "lanes"  # or "detectors": only what a cabinet's loops see (envs/traffic/detectors.py)
    events_dir: str = ""  # write each episode's hi-res controller event log here (envs/traffic/hires.py)

    def resolved(self) -> TrafficConfig:
        net_file, route_file, begin = self.net_file, self.route_file, self.begin_time
        if not (net_file and route_file):
            default_net, default_route, default_begin = builtin_net(self.net)
            net_file, route_file = net_file or default_net, route_file or default_route
            begin = default_begin if begin < 0 else begin
        begin = max(begin, 0)
        return TrafficConfig(
            **{**asdict(self), "net_file": net_file, "route_file": route_file, "begin_time": begin}
        )


@dataclass(frozen=True)
class TrafficSnapshot:
    """A moment of an episode (:meth:`TrafficEnv.snapshot`): its seed and the phases requested so far."""

    seed: int
    requested: tuple[tuple[int, ...], ...]  # per step, every agent's requested phase in possible_agents order


_LIVE: weakref.ref | None = None  # the process's live env (libsumo: one simulation per process)


def _claim_process(env: TrafficEnv) -> None:
    global _LIVE
    other = _LIVE() if _LIVE is not None else None
    if other is not None and not other.closed:
        raise SecondSimulationError(
            f"a SUMO env ({other.env_id}) is already open in this process and libsumo runs only one "
            "simulation per process (a second one silently hangs the first). close() it first, or run "
            "each env in its own process (trainer.collect / `inspo collect --workers N` does)."
        )
    _LIVE = weakref.ref(env)


def _check_scenario_with_sumo(config: TrafficConfig) -> None:
    """Load a user-supplied scenario in a throwaway ``sumo`` process so errors are messages, not crashes."""
    cmd = [sumo_binary(), "-n", config.net_file, "-r", config.route_file, "-b", str(config.begin_time)]
    cmd += ["-e", str(config.begin_time + 1), "--no-step-log", "--no-warnings"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as err:
        raise SumoStartError(f"SUMO did not load {config.net_file} within 120 s") from err
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise SumoStartError(
            f"SUMO cannot load net {config.net_file} with routes {config.route_file}: " + " | ".join(detail)
        )


class TrafficEnv(MultiAgentEnv):
    """SUMO traffic-signal control, one agent per traffic light (see the module docstring).

    Rewards (per intersection, ``config.reward``): ``queue`` (default) = minus the vehicles halting
    on its incoming lanes after the step, so the team reward (their sum, :meth:`team_reward`) times
    ``delta_time`` approximates minus the vehicle-seconds lost waiting at signals, which is what
    trip delay measures; ``pressure`` = out-lane minus in-lane vehicles; ``diff-waiting-time`` and
    ``average-speed`` are sumo-rl's (slower: per-vehicle calls).
    """

    metadata = {"name": "sumo_traffic_v1", "render_modes": []}

    def __init__(self, env_id: str = "sumo:grid4x4", config: TrafficConfig | None = None):
        self.closed = True
        self.env_id = env_id
        config = (config or TrafficConfig()).resolved()
        if config.reward not in REWARDS:
            raise ValueError(f"unknown traffic reward {config.reward!r}; known: {list(REWARDS)}")
        if config.observation not in OBSERVATIONS:
            raise ValueError(
                f"unknown traffic observation {config.observation!r}; known: {list(OBSERVATIONS)}"
            )
        if config.reward == "occupancy" and config.observation != "detectors":
            raise ValueError(
                "reward 'occupancy' is computed from the loops: it needs observation='detectors'"
            )
        if config.delta_time <= config.yellow_time:
            raise ValueError(
                f"delta_time ({config.delta_time}) must exceed yellow_time ({config.yellow_time})"
            )
        if config.num_seconds < config.delta_time:
            raise ValueError(
                f"num_seconds ({config.num_seconds}) must be at least delta_time ({config.delta_time})"
            )
        check_readable(config.net_file, "net")
        check_readable(config.route_file, "route")
        self.programs: dict[str, Program] = read_programs(config.net_file)
        if not self.programs:
            raise ValueError(
                f"SUMO net {config.net_file} has no traffic lights (<tlLogic>): nothing to control"
            )
        check_routes(config.route_file)
        if not _is_builtin(config):
            _check_scenario_with_sumo(config)
        _claim_process(self)
        self.config = config
        self._traci, sumo_rl = import_sumo()
        self._tmp = Path(tempfile.mkdtemp(prefix="inspo-sumo-"))
        self._tripinfo = self._tmp / "tripinfo.xml"
        self._error_log = self._tmp / "sumo-errors.log"
        self._statistics = self._tmp / "statistics.xml"  # teleport totals, read at the end of an episode
        extra = (
            f"--tripinfo-output {self._tripinfo} --tripinfo-output.write-unfinished "
            f"--statistic-output {self._statistics} "
            f"--error-log {self._error_log} --no-step-log"
        )
        self._loops = None  # induction loops: for the detector observation and the event log
        if config.observation == "detectors" or config.events_dir:
            greens = {tl: [st for _, st in p.phases if is_green(st)] for tl, p in self.programs.items()}
            self._loops = read_loops(config.net_file, greens)
            extra += f" -a {write_additional(self._loops, self._tmp / 'loops.add.xml')}"
        self.closed = False
        try:
            self._sim = sumo_rl.SumoEnvironment(
                net_file=config.net_file,
                route_file=config.route_file,
                begin_time=config.begin_time,
                num_seconds=config.num_seconds,
                delta_time=config.delta_time,
                yellow_time=config.yellow_time,
                min_green=config.min_green,
                time_to_teleport=config.time_to_teleport,
                max_depart_delay=config.max_depart_delay,
                waiting_time_memory=config.waiting_time_memory,
                reward_fn=config.reward
                if config.reward in ("diff-waiting-time", "average-speed")
                else "queue",
                add_system_info=False,
                add_per_agent_info=False,
                sumo_seed=0,
                sumo_warnings=False,
                additional_sumo_cmd=extra,
            )
            self._read_topology()
        except Exception as err:
            self.close()
            if isinstance(err, (ValueError, SumoStartError)):
                raise
            raise SumoStartError(
                f"SUMO could not load {config.net_file}: {self._sumo_errors() or err}"
            ) from err
        self.agents: list[str] = []
        self._t = 0
        self._seed = 0
        self._obs = np.zeros((self.n_agents, self.obs_dim), np.float32)
        self._metrics: dict[str, float] = {}
        self._extras: dict[str, Any] = {}

    # -- topology (read once from a throwaway simulation) -------------------------------------------
    def _read_topology(self) -> None:
        tr = self._traci
        self.possible_agents = list(self._sim.ts_ids)
        tr.start([sumo_binary(), "-n", self.config.net_file, "--no-step-log", "--no-warnings"])
        try:
            in_lanes = {
                a: list(dict.fromkeys(tr.trafficlight.getControlledLanes(a))) for a in self.possible_agents
            }
            links = {a: tr.trafficlight.getControlledLinks(a) for a in self.possible_agents}
            green_states = {}
            for a in self.possible_agents:
                phases = tr.trafficlight.getAllProgramLogics(a)[0].phases
                green_states[a] = [p.state for p in phases if is_green(p.state)]
            lanes = list(
                dict.fromkeys(
                    [ln for a in self.possible_agents for ln in in_lanes[a]]
                    + [lk[1] for a in self.possible_agents for sig in links[a] for lk in sig]
                )
            )
            length = np.array([tr.lane.getLength(ln) for ln in lanes], dtype=np.float64)
            downstream = {ln: [lk[0] for lk in tr.lane.getLinks(ln)] for ln in tr.lane.getIDList()}
        finally:
            tr.close()
        n = len(self.possible_agents)
        self.n_agents = n
        self.green_states = green_states
        self.n_green = np.array([len(green_states[a]) for a in self.possible_agents])
        if (self.n_green < 1).any():
            bad = [a for a in self.possible_agents if not green_states[a]]
            raise ValueError(f"traffic lights without a green phase in {self.config.net_file}: {bad}")
        self.n_actions = int(self.n_green.max())
        self.max_lanes = max(len(in_lanes[a]) for a in self.possible_agents)
        self.lane_obs_dim = 2 * self.n_actions + 1 + 2 * self.max_lanes
        detectors = self.config.observation == "detectors"
        self.obs_dim = obs_width(self.n_actions) if detectors else self.lane_obs_dim
        self.state_dim = n * self.obs_dim
        self.action_names = [f"green{i}" for i in range(self.n_actions)]
        self.in_lanes = in_lanes
        self._lanes = lanes  # incoming lanes first (halting counts are read for those only)
        self._n_in_lanes = len({ln for a in self.possible_agents for ln in in_lanes[a]})
        self._lane_index = {ln: i for i, ln in enumerate(lanes)}
        pad = len(lanes)  # index of a dummy lane that always counts 0
        self._in_idx = np.full((n, self.max_lanes), pad, dtype=np.int64)
        for i, a in enumerate(self.possible_agents):
            self._in_idx[i, : len(in_lanes[a])] = [self._lane_index[ln] for ln in in_lanes[a]]
        self._in_valid = self._in_idx < pad
        capacity = np.append(length / VEHICLE_SPACE_M, 1.0)
        self._in_capacity = np.maximum(capacity[self._in_idx], 1e-6)
        self._agent_index = {a: i for i, a in enumerate(self.possible_agents)}
        self._neighbors = _signal_neighbors(self.possible_agents, in_lanes, links, downstream)
        try:  # libsumo's SWIG functions without the Python wrapper (~30% faster per call)
            from libsumo import _libsumo

            self._get_count = _libsumo.lane_getLastStepVehicleNumber
            self._get_halting = _libsumo.lane_getLastStepHaltingNumber
        except (ImportError, AttributeError):
            self._get_count = tr.lane.getLastStepVehicleNumber
            self._get_halting = tr.lane.getLastStepHaltingNumber
        try:
            from libsumo import _libsumo

            self._loop_count = _libsumo.inductionloop_getLastStepVehicleNumber
        except (ImportError, AttributeError):
            self._loop_count = tr.inductionloop.getLastStepVehicleNumber
        # The lane reads form one list: vehicle counts of all lanes, a dummy lane, halting counts of
        # the incoming lanes, a dummy lane (dummies count 0 and pad agents with fewer lanes).
        m, m_in, a_max, l_max = len(lanes), self._n_in_lanes, self.n_actions, self.max_lanes
        self._in_lane_ids = lanes[:m_in]
        self._no_halting = [0] * (m_in + 1)
        # Per agent one row, [halted vehicles in all (1) | pressure per phase (A) | vehicles (L) and
        # halted vehicles (L) on its incoming lanes], each entry a sum over that list: the halted total
        # and each phase's pressure (sum over its green links of in- minus out-lane vehicles, where an
        # out-lane may be no incoming lane of the agent) by coefficients, the per-lane entries a single
        # term. All rows come from one gather, one multiply and one reduceat (integers, exact); then
        # [pressure | vehicles | halted] / [20 | capacity], capped at [inf | 1], is the tail of the
        # observation, written in one call.
        out_only = {
            a: list(dict.fromkeys(lk[1] for sig in links[a] for lk in sig if lk[1] not in in_lanes[a]))
            for a in self.possible_agents
        }
        lanes_w = 2 * l_max + max(len(v) for v in out_only.values())
        lane_at = np.full((n, lanes_w), m, dtype=np.int64)  # per agent column: index into the list
        lane_at[:, :l_max] = self._in_idx
        lane_at[:, l_max : 2 * l_max] = np.where(self._in_valid, self._in_idx + m + 1, m + 1 + m_in)
        coef = np.zeros((n, 1 + a_max, lanes_w), dtype=np.int64)  # halted total and pressures
        for i, a in enumerate(self.possible_agents):
            column = {ln: j for j, ln in enumerate(in_lanes[a])}
            for j, ln in enumerate(out_only[a]):
                column[ln] = 2 * l_max + j
                lane_at[i, column[ln]] = self._lane_index[ln]
            coef[i, 0, l_max : l_max + len(in_lanes[a])] = 1
            for signal, sig_links in enumerate(links[a]):
                for lk in sig_links:
                    for p, state in enumerate(green_states[a]):
                        if state[signal] in "Gg":
                            coef[i, 1 + p, column[lk[0]]] += 1
                            coef[i, 1 + p, column[lk[1]]] -= 1
        term_idx: list[int] = []  # the terms of all row entries, entry after entry
        term_coef: list[int] = []
        term_start: list[int] = []
        for i in range(n):
            for j in range(1 + a_max):
                term_start.append(len(term_idx))
                used = np.flatnonzero(coef[i, j])
                if not used.size:  # an empty sum: the dummy lane (reduceat needs one term)
                    term_idx.append(m)
                    term_coef.append(1)
                    continue
                term_idx += lane_at[i, used].tolist()
                term_coef += coef[i, j, used].tolist()
            for k in range(2 * l_max):
                term_start.append(len(term_idx))
                term_idx.append(int(lane_at[i, k]))
                term_coef.append(1)
        self._term_idx = np.array(term_idx, dtype=np.intp)
        self._term_coef = np.array(term_coef, dtype=np.int64)
        self._term_start = np.array(term_start, dtype=np.intp)
        self._row_width = 1 + a_max + 2 * l_max
        self._tail_div = np.concatenate(
            [np.full((n, a_max), PRESSURE_SCALE), self._in_capacity, self._in_capacity], axis=1
        )
        self._tail_max = np.concatenate([np.full((n, a_max), np.inf), np.ones((n, 2 * l_max))], axis=1)
        # The observation's head, [phase one-hot (A) | min-green passed (1)], by key 2 * phase + passed;
        # action masks by agent, phase and passed (may switch: its green phases; inside min-green only
        # the current phase), key 2 * A * agent + 2 * phase + passed. Both are one table gather.
        head = np.zeros((2 * a_max, a_max + 1), dtype=np.float32)
        head[np.arange(2 * a_max), np.arange(2 * a_max) // 2] = 1.0
        head[1::2, a_max] = 1.0
        self._head_rows = head
        legal = np.arange(a_max)[None, :] < self.n_green[:, None]
        masks = np.zeros((n, a_max, 2, a_max), dtype=bool)
        masks[:, :, 0, :] = np.eye(a_max, dtype=bool)[None]
        masks[:, :, 1, :] = legal[:, None, :]
        self._mask_rows = masks.reshape(n * 2 * a_max, a_max)
        self._mask_base = [2 * a_max * i for i in range(n)]
        self._n_green_list = [int(g) for g in self.n_green]
        self._min_green_s = self.config.yellow_time + self.config.min_green
        self._obs_tail = None  # [pressure | density | queue] of the observation buffer, set in reset
        self._rows_shape = (n, self._row_width)
        self._agent_range = range(n)
        self._in_range = range(m_in)
        self._delta_time, self._yellow_time = self.config.delta_time, self.config.yellow_time

    # -- episode ------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        if self.closed:
            raise RuntimeError("this SUMO env is closed")
        self._seed = int(seed) if seed is not None else self._seed + 1
        try:
            self._sim.reset(seed=self._seed)
        except Exception as err:
            raise SumoStartError(f"SUMO failed to start: {self._sumo_errors() or err}") from err
        self.agents = list(self.possible_agents)
        self._signals = [self._sim.traffic_signals[a] for a in self.possible_agents]
        self._init_phase_state()
        self._t = 0
        self._queue_trace: list[list[float]] = []
        self._requested: list[tuple[int, ...]] = []  # what snapshot() records
        self._obs.fill(0.0)
        a_max = self.n_actions
        self._lane_obs = np.zeros((self.n_agents, self.lane_obs_dim), np.float32)
        if self.config.observation == "lanes":
            self._lane_obs = self._obs
        self._obs_tail = self._lane_obs[:, a_max + 1 :]
        self._bank = None
        self._left = list(self._phase)  # the phase a yellow transition leaves
        if self._loops is not None:
            self._bank = DetectorBank(self.possible_agents, self._loops, self._n_green_list, a_max)
            for i, g in enumerate(self._phase):  # the first green, as the controller would log it
                self._bank.phase_event(0.0, i, 1, g)
        self._head_keys: list[int] = []  # the head keys the observation holds (none yet)
        self._metrics, self._extras = {}, {}
        self._observe()
        return self._obs_dict(), self._infos()

    def _init_phase_state(self) -> None:
        """Take over the signal state sumo-rl's fresh ``TrafficSignal`` objects start from.

        From here on the env runs sumo-rl's phase rules itself (``step``): the same SUMO calls at the
        same simulated seconds as ``TrafficSignal.set_next_phase``/``update``, without their per-signal,
        per-second Python. The ``TrafficSignal`` objects then serve only sumo-rl's own reward functions.
        """
        signals = self._signals
        self._phase = [ts.green_phase for ts in signals]  # current (or, in yellow, next) green phase
        self._yellow = [ts.is_yellow for ts in signals]
        self._since = [ts.time_since_last_phase_change for ts in signals]
        self._green_state = [[p.state for p in ts.all_phases[: ts.num_green_phases]] for ts in signals]
        self._yellow_state = [
            {pair: ts.all_phases[index].state for pair, index in ts.yellow_dict.items()} for ts in signals
        ]
        self._time0 = float(self._traci.simulation.getTime())
        # sumo-rl's pressure reward (out-lane minus in-lane vehicles), from the lane counts read anyway
        self._pressure_reward_lanes = None
        index = self._lane_index
        if self.config.reward == "pressure" and all(
            ln in index for ts in signals for ln in list(ts.lanes) + list(ts.out_lanes)
        ):
            self._pressure_reward_lanes = [
                ([index[ln] for ln in ts.out_lanes], [index[ln] for ln in ts.lanes]) for ts in signals
            ]

    def step(self, actions):
        if not self.agents:
            raise RuntimeError("step() after the episode ended; call reset()")
        tr = self._traci
        agents = self.possible_agents
        set_state = tr.trafficlight.setRedYellowGreenState
        phase, yellow, since, can_switch = self._phase, self._yellow, self._since, self._can_switch
        requested = list(map(int, map(actions.get, agents, phase)))  # a missing action keeps the phase
        self._requested.append(tuple(requested))
        # sumo-rl's rule: switch only to another valid green once yellow + min-green have passed
        # (TrafficSignal.set_next_phase: yellow transition now, the green when yellow_time is over).
        # A kept phase needs no call: SUMO holds the state set last (sumo-rl re-sets it; same result).
        bank = self._bank
        for i in compress(self._agent_range, map(ne, requested, phase)):
            want = requested[i]
            if can_switch[i] and 0 <= want < self._n_green_list[i]:
                set_state(agents[i], self._yellow_state[i][phase[i], want])
                if bank is not None:  # green termination and begin yellow of the phase left
                    bank.phase_event(self._t, i, 7, phase[i])
                    bank.phase_event(self._t, i, 8, phase[i])
                    self._left[i] = phase[i]
                phase[i], yellow[i], since[i] = want, True, 0
        # TrafficSignal.update, once per simulated second: a yellow signal turns green when its time
        # since the switch reaches yellow_time. SUMO advances to that second, the greens are set, then on.
        delta, yellow_time = self._delta_time, self._yellow_time
        ends: dict[int, list[int]] = {}
        for i in compress(self._agent_range, yellow):
            if 0 < yellow_time - since[i] <= delta:
                ends.setdefault(yellow_time - since[i], []).append(i)
        start, done = self._time0 + self._t, 0
        if bank is not None:  # every second, to read the loops
            for k in range(1, delta + 1):
                tr.simulationStep(start + k)
                for i in ends.get(k, ()):
                    set_state(agents[i], self._green_state[i][phase[i]])
                    yellow[i] = False
                    bank.phase_event(self._t + k, i, 9, self._left[i])  # end yellow of the phase left
                    bank.phase_event(self._t + k, i, 1, phase[i])  # begin green
                bank.read(self._loop_count)
            done = delta
        for k in sorted(ends) if bank is None else ():
            tr.simulationStep(start + k)  # runs SUMO up to that time (k - done steps of 1 s)
            for i in ends[k]:
                set_state(agents[i], self._green_state[i][phase[i]])
                yellow[i] = False
            done = k
        if done < delta:
            tr.simulationStep(start + delta)
        self._since = [s + delta for s in since]
        self._t += delta
        self._observe()
        halting = self._halting
        self._queue_trace.append(halting)
        rewards = self._rewards(halting)
        done_episode = self._t >= self.config.num_seconds
        masks = self.action_masks()
        infos = {
            a: {"action_mask": mask, "green_phase": g, "executed_action": g, "requested_action": want}
            for a, mask, g, want in zip(agents, masks, phase, requested, strict=True)
        }
        obs = self._obs_dict()
        terms = dict.fromkeys(agents, False)
        truncs = dict.fromkeys(agents, done_episode)
        if done_episode:
            self.agents = []
            self._finish_episode()
        return obs, rewards, terms, truncs, infos

    def _observe(self) -> None:
        # numpy's per-call overhead dominates arrays this small, and SUMO's step has just evicted the
        # caches: one conversion and five numpy calls, the last writing into the observation buffer.
        counts = list(map(self._get_count, self._lanes))
        # halting counts of the occupied incoming lanes only (SUMO counts both over the lane's vehicles)
        halting = self._no_halting.copy()
        occupied = compress(self._in_range, counts)
        for i, h in zip(occupied, map(self._get_halting, compress(self._in_lane_ids, counts)), strict=True):
            halting[i] = h
        self._counts = counts
        values = np.array(counts + [0] + halting, dtype=np.int64)
        terms = values.take(self._term_idx)
        np.multiply(terms, self._term_coef, out=terms)
        rows = np.add.reduceat(terms, self._term_start, dtype=np.float64).reshape(self._rows_shape)
        a_max = self.n_actions
        self._pressure = rows[:, 1 : 1 + a_max]
        self._halting = rows[:, 0].tolist()
        np.minimum(np.divide(rows[:, 1:], self._tail_div), self._tail_max, out=self._obs_tail)
        # phase one-hot and "min-green passed": all rows from one table gather, when any agent's changed
        min_green = self._min_green_s
        self._can_switch = can = [s >= min_green for s in self._since]
        keys = [2 * p + ok for p, ok in zip(self._phase, can, strict=True)]
        if keys != self._head_keys:
            self._lane_obs[:, : a_max + 1] = self._head_rows[keys]
            self._head_keys = keys
        if self._bank is not None and self.config.observation == "detectors":
            interval = float(self._delta_time if self._t > 0 else 0)
            self._occupancy = self._bank.observe(self._obs, self._phase, can, self._since, self._t, interval)

    def _rewards(self, halting: list[float]) -> dict[str, float]:
        kind = self.config.reward
        if kind == "queue":
            return dict(zip(self.possible_agents, [-h for h in halting], strict=True))
        elif kind == "occupancy":
            return dict(zip(self.possible_agents, self._occupancy, strict=True))
        elif kind == "pressure":  # sumo-rl's: vehicles on out-lanes minus on in-lanes
            if self._pressure_reward_lanes is not None:  # the same integer sums
                count = self._counts.__getitem__
                values = np.array(
                    [sum(map(count, out)) - sum(map(count, inc)) for out, inc in self._pressure_reward_lanes],
                    dtype=np.float64,
                )
            else:
                values = np.array([ts.get_pressure() for ts in self._signals], dtype=np.float64)
        else:
            values = np.array([ts.compute_reward() for ts in self._signals], dtype=np.float64)
        return dict(zip(self.possible_agents, values.tolist(), strict=True))

    def action_masks(self) -> np.ndarray:
        """``[N, A]`` legal actions now: the agent's green phases, only the current one inside min-green."""
        return self._mask_rows[list(map(add, self._mask_base, self._head_keys))]

    def _infos(self) -> dict[str, dict]:
        masks = self.action_masks()
        return {
            a: {"action_mask": mask, "green_phase": g}
            for a, mask, g in zip(self.possible_agents, masks, self._phase, strict=True)
        }

    def _obs_dict(self) -> dict[str, np.ndarray]:
        return dict(zip(self.possible_agents, self._obs.copy(), strict=True))

    def state(self) -> np.ndarray:
        """All intersections' observations, concatenated in ``possible_agents`` order."""
        return self._obs.reshape(-1).copy()

    def team_reward(self, rewards: dict[str, float]) -> float:
        """The sum (not the mean) of the intersections' rewards: with ``queue``, minus all halted vehicles."""
        return float(sum(rewards[a] for a in self.possible_agents)) if rewards else 0.0

    def neighbors(self) -> dict[str, list[str]]:
        """Signals reachable from each other's outgoing lanes without passing a third signal."""
        return {a: list(v) for a, v in self._neighbors.items()}

    def sim_time(self) -> float:
        return float(self._t)

    # -- what-if rollouts -------------------------------------------------------------------------------
    def snapshot(self) -> TrafficSnapshot:
        """This moment of the episode, to come back to with :meth:`restore` (paired what-if rollouts).

        Why a replay and not SUMO's ``simulation.saveState``/``loadState``: measured on SUMO 1.28 (libsumo,
        grid4x4, ``--save-state.rng``, ``--save-state.precision 8``), a loaded state restores the vehicles,
        the signal programs and the RNG draw counts, but not the future: vehicle speeds differ from the
        first simulated second after loading (also between two loads of one file; with the drivers'
        imperfection set to 0, from the 12th second). Nor does it hold the state a light shows under the
        ``online`` program our phase calls create, or this env's phase timers and pending yellows. SUMO
        itself is deterministic for a seed and the actions, so the snapshot is the episode's seed and the
        phases requested so far, and restoring replays them: exact, at the cost of a reset and the prefix
        (~0.2 s for 600 s of grid4x4).
        """
        if not self._requested and not self.agents:
            raise RuntimeError("snapshot() before reset(): there is no episode to come back to")
        return TrafficSnapshot(self._seed, tuple(self._requested))

    def restore(self, snap: TrafficSnapshot) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
        """Return the env to ``snap`` (a new run of its episode up to that moment, also after the episode
        ended) and give the observations and infos there. Trip metrics then cover the replayed run only."""
        obs, infos = self.reset(seed=snap.seed)
        agents = self.possible_agents
        for requested in snap.requested:
            obs, _, _, _, infos = self.step(dict(zip(agents, requested, strict=True)))
        return obs, infos

    # -- what controllers may read ---------------------------------------------------------------------
    def phase_pressure(self) -> np.ndarray:
        """``[N, A]`` max-pressure scores: per green phase, sum over its green links of in- minus out-lane vehicles."""
        return self._pressure.copy()

    def detector_counts(self) -> np.ndarray:
        """``[N, A]`` vehicles counted between each phase's advance and stop-bar loops (a cabinet's count,
        envs/traffic/detectors.py); needs the loops: ``observation='detectors'`` or ``events_dir``."""
        if self._bank is None:
            raise ValueError(
                "detector counts need the loops: make the env with observation='detectors' or events_dir"
            )
        return self._bank.between.reshape(self.n_agents, self.n_actions).astype(np.float64)

    def current_phases(self) -> np.ndarray:
        return np.array(self._phase, dtype=np.int64)

    def time_in_phase(self) -> np.ndarray:
        """``[N]`` seconds since each intersection's last phase change (what min/max-green rules count)."""
        return np.array(self._since, dtype=np.float64)

    def sumo_phase_states(self) -> dict[str, str]:
        """SUMO's signal state string per traffic light right now (ground truth for tests)."""
        return {a: self._traci.trafficlight.getRedYellowGreenState(a) for a in self.possible_agents}

    # -- metrics ---------------------------------------------------------------------------------------
    def _finish_episode(self) -> None:
        """Close the simulation (SUMO then writes unfinished trips) and compute the episode's KPIs."""
        backlog = len(self._traci.simulation.getPendingVehicles())
        self._sim.close()
        if self.config.events_dir and self._bank is not None:
            from envs.traffic.hires import write_episode

            write_episode(self._bank, self.config.events_dir, f"seed-{self._seed:06d}")
        trips = read_tripinfo(self._tripinfo)
        queue = np.array(self._queue_trace) if self._queue_trace else np.zeros((1, self.n_agents))
        done_mask = trips["arrived"]
        self._metrics = {
            "delay": _mean(trips["time_loss"][done_mask]),
            "delay_all": _mean(trips["time_loss"]),
            "trip_wait": _mean(trips["waiting"][done_mask]),
            "travel_time": _mean(trips["duration"][done_mask]),
            "throughput": float(done_mask.sum()),
            "unfinished": float((~done_mask).sum()),  # departed, still driving at the end
            "backlog": float(backlog),  # never inserted (network entry blocked); in no delay figure
            "avg_queue": float(queue.sum(axis=1).mean()),
            "max_intersection_queue": float(queue.mean(axis=0).max()),
            "teleports": float(read_teleports(self._statistics)),
        }
        times = (np.arange(1, len(queue) + 1) * self.config.delta_time).tolist()
        self._extras = {
            "queue_over_time": {"t": times, "total": queue.sum(axis=1).tolist()},
            "per_intersection": {
                a: {"avg_queue": float(queue[:, i].mean()), "max_queue": float(queue[:, i].max())}
                for i, a in enumerate(self.possible_agents)
            },
        }

    def episode_metrics(self) -> dict[str, float]:
        """Trip delay (tripinfo timeLoss, s) over completed trips and over all incl. unfinished, etc."""
        return dict(self._metrics)

    def episode_extras(self) -> dict:
        return dict(self._extras)

    def _sumo_errors(self) -> str:
        try:
            text = self._error_log.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(line for line in text.splitlines() if line.startswith("Error"))[-800:]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        sim = getattr(self, "_sim", None)
        if sim is not None:
            with contextlib.suppress(Exception):  # a half-started libsumo must not mask the real error
                sim.close()
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    def __del__(self):
        self.close()


def _is_builtin(config: TrafficConfig) -> bool:
    from envs.traffic.nets import RESCO_NETS

    if config.net not in RESCO_NETS:
        return False
    net, route, _ = builtin_net(config.net)
    return config.net_file == net and config.route_file == route


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


_TRIP_FIELDS = {  # read_tripinfo's outputs and the tripinfo attributes they come from
    "time_loss": b"timeLoss",
    "waiting": b"waitingTime",
    "duration": b"duration",
    "arrived": b"arrival",
}
_TRIP_ATTR = {key: re.compile(rb' %s="([^"]*)"' % attr) for key, attr in _TRIP_FIELDS.items()}


def read_tripinfo(path: Path) -> dict[str, np.ndarray]:
    """Per trip: ``time_loss``, ``waiting``, ``duration`` and ``arrived`` (False for unfinished trips)."""
    path = Path(path)
    if path.exists() and path.stat().st_size:
        fast = _read_plain_tripinfo(path.read_bytes())
        if fast is not None:
            return fast
    time_loss, waiting, duration, arrived = [], [], [], []
    if path.exists() and path.stat().st_size:
        for _, elem in ET.iterparse(path):
            if elem.tag == "tripinfo":
                time_loss.append(float(elem.get("timeLoss", "nan")))
                waiting.append(float(elem.get("waitingTime", "nan")))
                duration.append(float(elem.get("duration", "nan")))
                arrived.append(float(elem.get("arrival", "-1")) >= 0)
                elem.clear()
    return {
        "time_loss": np.array(time_loss),
        "waiting": np.array(waiting),
        "duration": np.array(duration),
        "arrived": np.array(arrived, dtype=bool),
    }


def _read_plain_tripinfo(data: bytes) -> dict[str, np.ndarray] | None:
    """``read_tripinfo`` for a complete file of vehicle trips only, by four scans (~3x faster than XML).

    SUMO writes every ``<tripinfo>`` with all four attributes; anything else (persons, containers, a
    truncated file, an attribute missing or elsewhere) returns None and the XML parser is used.
    """
    start = data.find(b"<tripinfos")
    if start < 0 or not data.rstrip().endswith(b"</tripinfos>"):
        return None
    body = data[start:]
    if b"<personinfo" in body or b"<containerinfo" in body:
        return None
    n = body.count(b"<tripinfo ")
    values = {key: pattern.findall(body) for key, pattern in _TRIP_ATTR.items()}
    if any(len(v) != n for v in values.values()):
        return None
    try:
        out = {key: np.array(list(map(float, values[key])), dtype=np.float64) for key in _TRIP_FIELDS}
    except ValueError:
        return None
    out["arrived"] = out["arrived"] >= 0
    return out


def read_teleports(path: Path) -> int:
    """Total teleports of the last run from SUMO's ``--statistic-output`` (0 if absent)."""
    try:
        for _, elem in ET.iterparse(path):
            if elem.tag == "teleports":
                return int(elem.get("total", "0"))
    except (OSError, ET.ParseError):
        pass
    return 0


def _signal_neighbors(agents, in_lanes, links, downstream, max_hops: int = 6) -> dict[str, list[str]]:
    """Breadth-first from each signal's outgoing lanes until another signal's incoming lane (symmetric)."""
    owner = {}
    for a in agents:
        for ln in in_lanes[a]:
            owner.setdefault(ln, set()).add(a)
    adj: dict[str, set[str]] = {a: set() for a in agents}
    for a in agents:
        frontier = list({lk[1] for sig in links[a] for lk in sig})
        seen = set(frontier)
        for _ in range(max_hops):
            nxt = []
            for ln in frontier:
                hit = owner.get(ln, set()) - {a}
                if hit:
                    adj[a] |= hit
                    continue
                for d in downstream.get(ln, []):
                    if d not in seen:
                        seen.add(d)
                        nxt.append(d)
            frontier = nxt
            if not frontier:
                break
    for a in agents:
        for b in adj[a]:
            adj[b].add(a)
    return {a: sorted(adj[a], key=agents.index) for a in agents}


def config_fields() -> list[str]:
    return [f.name for f in fields(TrafficConfig)]
