"""Building and traffic configuration: typed dataclasses, presets and traffic profiles.

Everything about a building is a field of :class:`Building`; presets are just instances.
Motion uses the Crites & Barto *lumped* model: a car travels one floor in ``floor_time``
seconds at rated speed, and every stop costs ``stop_time`` (decelerate + doors + accelerate)
plus each passenger's boarding/alighting time. Kinematic presets derive these from physics:
with trapezoidal motion a trip of D metres takes ``D/v + v/a`` once ``D >= v**2/a``, so a
stop adds exactly ``v/a`` of acceleration/deceleration on top of the door times
(:meth:`Building.kinematic`); shorter trips are slightly overestimated (documented).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Building:
    """One elevator group: floors, cars and their timing. Floors are 0..n_floors-1."""

    name: str = "cb10x4"
    n_floors: int = 10
    n_cars: int = 4
    capacity: int = 20  # persons per car
    floor_time: float = 1.45  # s to travel one floor at rated speed
    stop_time: float = 7.19  # s per stop: decelerate + doors open/close + accelerate
    turn_time: float = 1.0  # s extra when a car reverses direction
    reopen_time: float = 7.19  # s to cycle the doors of a car already standing at the floor
    park_time: float = 2.0  # s to decelerate for a stop with nobody to serve (parking)
    # passenger load (board or alight) time: truncated Erlang(shape) with this mean, in [min, max]
    load_time_mean: float = 1.0
    load_time_shape: int = 20
    load_time_min: float = 0.6
    load_time_max: float = 6.0
    lobby_floors: tuple[int, ...] = (0,)
    population_per_floor: float = 100.0  # persons on each non-lobby floor (traffic rates scale with it)
    floor_height: float = 4.0  # m, for the energy proxy in metres
    dt: float = 0.5  # simulation tick (s)
    hold_time: float = 15.0  # an idle car that chose HOLD is asked again after this long (or on a new call)

    def __post_init__(self):
        if self.n_floors < 2 or self.n_cars < 1 or self.capacity < 1:
            raise ValueError("a building needs >= 2 floors, >= 1 car and capacity >= 1")
        if self.floor_time <= self.dt:
            raise ValueError(f"floor_time {self.floor_time} must exceed the tick dt {self.dt}")
        if self.load_time_min < self.dt:
            raise ValueError(
                f"load_time_min {self.load_time_min} must be >= dt {self.dt} (one boarding per tick)"
            )
        if not self.lobby_floors or any(not 0 <= f < self.n_floors for f in self.lobby_floors):
            raise ValueError(f"lobby_floors {self.lobby_floors} must be floors of the building")
        if len(set(self.lobby_floors)) == self.n_floors:
            raise ValueError("at least one floor must be a non-lobby floor")

    @classmethod
    def kinematic(
        cls,
        name: str,
        n_floors: int,
        n_cars: int,
        capacity: int,
        floor_height: float,
        speed: float,
        acceleration: float,
        door_open: float,
        door_close: float,
        boarding_time: float = 1.2,
        **kw,
    ) -> Building:
        """A building from physical parameters (trapezoidal motion, lumped per stop)."""
        accel_overhead = speed / acceleration  # extra time of one stop (decel + accel) at rated speed
        return cls(
            name=name,
            n_floors=n_floors,
            n_cars=n_cars,
            capacity=capacity,
            floor_time=floor_height / speed,
            stop_time=accel_overhead + door_open + door_close,
            reopen_time=door_open + door_close,
            park_time=accel_overhead,
            turn_time=kw.pop("turn_time", 1.0),
            load_time_mean=boarding_time,
            load_time_shape=kw.pop("load_time_shape", 20),
            load_time_min=kw.pop("load_time_min", 0.6),
            load_time_max=kw.pop("load_time_max", 6.0),
            floor_height=floor_height,
            **kw,
        )

    @property
    def upper_floors(self) -> np.ndarray:
        return np.array([f for f in range(self.n_floors) if f not in self.lobby_floors])

    @property
    def population(self) -> float:
        return self.population_per_floor * len(self.upper_floors)

    def replace(self, **changes) -> Building:
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, Building] = {
    # Crites & Barto (NIPS 1995): 10 floors, 4 cars, capacity 20, 1.45 s/floor, 7.19 s/stop, 1 s turn.
    # 100 persons per upper floor makes the down-peak profile below exactly their arrival table.
    "cb10x4": Building(),
    # LiftSim-like kinematics: 4 m floors, 2 m/s, 1 m/s^2, doors 2 s + 2 s, 2 s per boarding.
    "liftsim10x4": Building.kinematic(
        "liftsim10x4", 10, 4, 20, 4.0, 2.0, 1.0, 2.0, 2.0, boarding_time=2.0, load_time_min=1.0
    ),
    # A modern 16-floor office: 6 cars of 16 persons, 3.5 m floors, 2.5 m/s, 1 m/s^2, fast doors.
    "office16x6": Building.kinematic(
        "office16x6", 16, 6, 16, 3.5, 2.5, 1.0, 1.8, 2.6, boarding_time=1.2, population_per_floor=80.0
    ),
}


@dataclass(frozen=True)
class Slot:
    """A stretch of constant Poisson rates: share of the population arriving per 5 min, and the mix."""

    duration: float  # s
    pct5: float  # arrivals per 5 min as a fraction of the building population (HC5-style)
    up: float  # share from a lobby to an upper floor
    down: float  # share from an upper floor to a lobby
    inter: float  # share between upper floors


# Crites & Barto down-peak: mean arrivals per floor per 5 min headed to the lobby (Bao et al. 1994).
CB_DOWNPEAK_PER_FLOOR = (1, 2, 4, 4, 18, 12, 8, 7, 18, 5, 3, 2)


def _day_schedule() -> tuple[Slot, ...]:
    # 07:00-19:00, hourly: (pct per 5 min, up, down, inter). Morning up-peak, lunch, evening down-peak.
    hours = [
        (0.04, 0.85, 0.05, 0.10),
        (0.10, 0.85, 0.10, 0.05),
        (0.06, 0.60, 0.20, 0.20),
        (0.03, 0.30, 0.30, 0.40),
        (0.04, 0.35, 0.35, 0.30),
        (0.11, 0.45, 0.45, 0.10),
        (0.09, 0.50, 0.35, 0.15),
        (0.03, 0.30, 0.30, 0.40),
        (0.03, 0.30, 0.30, 0.40),
        (0.05, 0.15, 0.60, 0.25),
        (0.10, 0.05, 0.85, 0.10),
        (0.04, 0.05, 0.85, 0.10),
    ]
    return tuple(Slot(3600.0, *h) for h in hours)


PROFILES: dict[str, tuple[Slot, ...]] = {
    # per-floor counts / 100 persons per floor = share of the population per 5 min
    "downpeak": tuple(Slot(300.0, n / 100.0, 0.0, 1.0, 0.0) for n in CB_DOWNPEAK_PER_FLOOR),
    # BCO 2014 office design cases: up-peak HC5 12% (85/10/5), lunch HC5 13% (45/45/10)
    "uppeak": (Slot(3600.0, 0.12, 0.85, 0.10, 0.05),),
    "lunch": (Slot(3600.0, 0.13, 0.45, 0.45, 0.10),),
    "interfloor": (Slot(3600.0, 0.04, 0.0, 0.0, 1.0),),
    "day": _day_schedule(),
}
PROFILE_START_HOUR = {"downpeak": 17.0, "uppeak": 8.0, "lunch": 12.0, "interfloor": 10.0, "day": 7.0}


@dataclass(frozen=True)
class Traffic:
    """Which profile, how intense, and the episode's time structure."""

    profile: str = "downpeak"
    intensity: float = 1.0  # multiplies every rate
    warmup: float = 300.0  # s of traffic (first slot's rates) before the measured window
    drain: float = 600.0  # s at most after the window, arrivals stopped, until everyone is delivered
    hours: float | None = None  # stretch/cut a single-slot profile to this many hours
    slots: tuple[Slot, ...] = field(default=())  # a site's own demand (then ``profile`` is only its name)
    begin_hour: float | None = None  # clock time at the window's start (default: the profile's)
    # share of the upper-floor trip ends at each upper floor (origins of down/inter trips, destinations of
    # up trips), in floor order; () = equal shares (every profile above)
    floor_shares: tuple[float, ...] = ()

    def __post_init__(self):
        if self.profile not in PROFILES and not self.slots:
            raise ValueError(f"unknown traffic profile {self.profile!r}; known: {sorted(PROFILES)}")
        if self.intensity < 0:
            raise ValueError("intensity must be >= 0")

    def schedule(self) -> tuple[Slot, ...]:
        slots = self.slots or PROFILES[self.profile]
        if self.hours is not None:
            total = sum(s.duration for s in slots)
            scale = self.hours * 3600.0 / total
            slots = tuple(dataclasses.replace(s, duration=s.duration * scale) for s in slots)
        return slots

    @property
    def window(self) -> float:
        return float(sum(s.duration for s in self.schedule()))

    @property
    def start_hour(self) -> float:
        if self.begin_hour is not None:
            return self.begin_hour
        return PROFILE_START_HOUR.get(self.profile, 0.0)
