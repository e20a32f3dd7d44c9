"""Dispatch heuristics as scoring controllers over the per-car actions.

Each heuristic (a) assigns every open hall call to a car (or to all cars, for collective
control), then (b) a shared *movement layer* turns the assignment into each car's action:
stop at a crossing floor for a car call or an assigned call, keep going otherwise, start an
idle car toward its work or its parking floor. The scores are 1 for the rule's action and 0
for the others, so ``@temp=T`` gives a softmax with a known probability for every legal action
and ``@eps=e`` mixes in uniform legal actions; the behaviour probability is always exact.

The assignment is recomputed from the current state at every decision (no hidden memory),
so a per-car policy that sees the same state (``ElevatorCore.observe``) can represent it.
"""

from __future__ import annotations

import numpy as np

from envs.controllers import ScoringController
from envs.elevator.core import CONTINUE, DOWN, DWELL, IDLE, MOVING, STOP, UP


class _View:
    """Plain-Python snapshot of the simulator state a dispatcher needs (B = 1)."""

    def __init__(self, env):
        core = env.core
        self.F, self.C, self.K = core.F, core.C, core.K
        self.bld = core.bld
        self.t = float(core.t)
        self.pos = core.pos[0].tolist()
        self.floor = core.floor[0].tolist()
        self.nxt = core.nxt[0].tolist()
        self.mode = core.mode[0].tolist()
        self.dir = core.dir[0].tolist()
        self.load = core.load[0].tolist()
        self.dwell_left = [max(0.0, x - self.t) for x in core.dwell_end[0].tolist()]
        self.cross = core.cross[0].tolist()
        self.idle_decide = core.idle_decide[0].tolist()
        riders = core.riders[0]
        self.car_calls = [set(np.flatnonzero(riders[c]).tolist()) for c in range(self.C)]
        hall = (core.arrived[0] > core.boarded[0]) & ~core.claimed[0]
        oldest = core._oldest_arrival()[0]
        calls = [(float(oldest[f, d]), f, d) for f in range(self.F) for d in range(2) if hall[f, d]]
        calls.sort()
        self.calls = [(f, d) for _, f, d in calls]  # oldest first; d: 0 up, 1 down
        self.lobby = sorted(core.bld.lobby_floors)


def _sign(d: int) -> int:
    return 1 if d == 0 else -1


def fs_score(v: _View, c: int, f: int, d: int) -> float:
    """Barney's figure of suitability of car c for hall call (f, d)."""
    N = v.F - 1
    s = v.dir[c]
    p = v.pos[c]
    dist = abs(f - p)
    if v.mode[c] == IDLE or s == 0:
        return N + 1 - dist
    toward = (f - p) * s > 0 or (f == p and v.mode[c] == DWELL)
    if not toward:
        return 1.0
    return N + 2 - dist if _sign(d) == s else N + 1 - dist


def eta(v: _View, c: int, f: int, d: int, stops: set[int]) -> float:
    """Estimated time for car c to reach hall call (f, d) given its planned stops (LOOK order)."""
    b = v.bld
    stop_cost = b.stop_time + b.load_time_mean
    p, s = v.pos[c], v.dir[c]
    t = v.dwell_left[c] if v.mode[c] == DWELL else 0.0
    if v.mode[c] == IDLE or s == 0:
        between = [x for x in stops if min(p, f) < x < max(p, f)]
        return t + abs(f - p) * b.floor_time + len(between) * stop_cost
    ahead = [x for x in stops if (x - p) * s > 0]
    if _sign(d) == s and (f - p) * s >= 0:
        dist = abs(f - p)
        n_stops = sum(1 for x in ahead if (f - x) * s > 0)
        return t + dist * b.floor_time + n_stops * stop_cost
    end = max(ahead, key=lambda x: (x - p) * s) if ahead else p
    if _sign(d) == -s:
        end = max(end, f) if s > 0 else min(end, f)
        dist = abs(end - p) + abs(end - f)
        n_stops = len(ahead) + sum(
            1 for x in stops if (x - f) * s > 0 and (end - x) * s > 0 and x not in ahead
        )
        return t + dist * b.floor_time + n_stops * stop_cost + b.turn_time
    # same direction but behind: to the end, back past f, and round again
    other = min(stops | {f}) if s > 0 else max(stops | {f})
    dist = abs(end - p) + abs(end - other) + abs(f - other)
    return t + dist * b.floor_time + (len(stops) + 1) * stop_cost + 2 * b.turn_time


def etd_assignment(env) -> list[set[tuple[int, int]]]:
    """Per car, the open hall calls ``(floor, d)`` (d: 0 up, 1 down) ETD would give it now."""
    return ETD().assign(_View(env))


class ElevatorDispatch(ScoringController):
    """Base: assignment -> per-car actions through the movement layer."""

    name = "dispatch"
    parks = False

    def assign(self, v: _View) -> list[set[tuple[int, int]]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def park_floor(self, v: _View, c: int) -> int | None:
        return None

    def scores(self, env, obs, infos):
        v = _View(env)
        assigned = self.assign(v)
        out = {}
        for c, agent in enumerate(env.possible_agents):
            s = np.zeros(env.n_actions)
            s[self.preferred(v, c, assigned[c])] = 1.0
            out[agent] = s
        return out

    def preferred(self, v: _View, c: int, mine: set[tuple[int, int]], park: int | None = None) -> int:
        """Car ``c``'s action under the rule; a ``park`` floor overrides the rule's ``park_floor``."""
        targets = set(v.car_calls[c]) | {f for f, _ in mine}
        if v.mode[c] == MOVING and v.cross[c]:
            n, s = v.nxt[c], v.dir[c]
            di = 0 if s > 0 else 1
            if n in v.car_calls[c] or (n, di) in mine:
                return STOP
            beyond = [x for x in targets if (x - n) * s > 0]
            if (n, 1 - di) in mine and not beyond:
                return STOP
            if v.load[c] == 0 and not beyond:
                park = self._park(v, c, park)
                if targets or park is None or park == n or (park - n) * s < 0:
                    return STOP
            return CONTINUE
        if v.mode[c] == IDLE and v.idle_decide[c]:
            f = v.floor[c]
            if (f, 0) in mine and f < v.F - 1:
                return UP
            if (f, 1) in mine and f > 0:
                return DOWN
            others = [x for x in targets if x != f]
            if others:
                near = min(others, key=lambda x: (abs(x - f), x))
                return UP if near > f else DOWN
            park = self._park(v, c, park)
            if park is not None and park != f:
                return UP if park > f else DOWN
        return CONTINUE

    def _park(self, v: _View, c: int, override: int | None) -> int | None:
        return self.park_floor(v, c) if override is None else override


class Collective(ElevatorDispatch):
    """Collective control (SCAN/LOOK per car): every car answers every call; no coordination."""

    name = "collective"

    def assign(self, v):
        calls = set(v.calls)
        return [calls for _ in range(v.C)]


class NearestCar(ElevatorDispatch):
    """Each call goes to the car with the highest figure of suitability (ties: lower index)."""

    name = "nearest-car"

    def assign(self, v):
        out: list[set] = [set() for _ in range(v.C)]
        for f, d in v.calls:
            scores = [fs_score(v, c, f, d) - (100.0 if v.load[c] >= v.K else 0.0) for c in range(v.C)]
            out[int(np.argmax(scores))].add((f, d))
        return out


class Sector(ElevatorDispatch):
    """Static zoning (Crites & Barto's SECTOR): each car owns a contiguous block of upper floors,
    answers the calls there and parks at its block's lowest floor; lobby calls go by nearest car."""

    name = "sector"

    def _sectors(self, v: _View) -> list[list[int]]:
        upper = [f for f in range(v.F) if f not in v.lobby]
        return [list(x) for x in np.array_split(np.array(upper), v.C)]

    def assign(self, v):
        sectors = self._sectors(v)
        owner = {f: c for c, fl in enumerate(sectors) for f in fl}
        out: list[set] = [set() for _ in range(v.C)]
        for f, d in v.calls:
            c = owner.get(f)
            if c is None or v.load[c] >= v.K:
                c = int(np.argmax([fs_score(v, k, f, d) for k in range(v.C)]))
            out[c].add((f, d))
        return out

    def park_floor(self, v, c):
        sec = self._sectors(v)[c]
        return int(sec[0]) if len(sec) else None


class ETD(ElevatorDispatch):
    """Estimated time to destination: calls (oldest first) go to the car with the least
    ETA + delay its new stop adds to the car's riders and assigned calls."""

    name = "etd"

    def __init__(self, delay_weight: float = 0.1):
        self.delay_weight = delay_weight

    def assign(self, v):
        b = v.bld
        stop_cost = b.stop_time + b.load_time_mean
        out: list[set] = [set() for _ in range(v.C)]
        stops = [set(v.car_calls[c]) for c in range(v.C)]
        for f, d in v.calls:
            best, best_c = np.inf, 0
            for c in range(v.C):
                cost = eta(v, c, f, d, stops[c])
                if f not in stops[c]:
                    cost += self.delay_weight * stop_cost * (v.load[c] + len(out[c]))
                if v.load[c] >= v.K:
                    cost += 1e4
                if cost < best - 1e-9:
                    best, best_c = cost, c
            out[best_c].add((f, d))
            stops[best_c].add(f)
        return out


class ETDPark(ETD):
    """ETD's assignment; a car with nothing to do parks at its own floor: by default every other floor
    down from the top (car c of C at floor F - 1 - 2 (C - 1 - c), at least 0; 3, 5, 7, 9 on cb10x4, the
    best fixed layout at down-peak on 16 tuning seeds, docs/elevator.md, "Headroom"). Not a logged rule:
    a reference for what parking alone is worth (bench/learned_parking.py)."""

    name = "etd-park"

    def __init__(self, floors: list[int | None] | None = None, delay_weight: float = 0.1):
        super().__init__(delay_weight=delay_weight)
        self.floors = floors  # per car; None: that car does not park (ETD's own idle behaviour)
        if floors is not None:
            self.name = "etd-park " + ",".join("-" if f is None else str(f) for f in floors)

    def reset(self, env, seed):
        super().reset(env, seed)
        b = env.building
        if self.floors is not None and (
            len(self.floors) != b.n_cars
            or any(f is not None and not 0 <= f < b.n_floors for f in self.floors)
        ):
            raise ValueError(
                f"parking layout {self.floors} does not fit the building: "
                f"one floor in 0-{b.n_floors - 1} (or none) per car, {b.n_cars} cars"
            )

    def park_floor(self, v, c):
        return max(v.F - 1 - 2 * (v.C - 1 - c), 0) if self.floors is None else self.floors[c]


CONTROLLERS: dict[str, type[ElevatorDispatch]] = {
    "collective": Collective,
    "nearest-car": NearestCar,
    "sector": Sector,
    "etd": ETD,
    "etd-park": ETDPark,
}
