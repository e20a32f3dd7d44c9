"""Passenger generation: every passenger of an episode is drawn up front from the seed.

Poisson arrivals with rates constant within each slot; origins/destinations by stream
(up: lobby -> upper floor, down: upper floor -> lobby, inter: upper -> other upper floor),
upper floors equally likely unless ``Traffic.floor_shares`` weights them (inter-floor destinations
stay uniform over the other upper floors). Separate PCG64 streams (from one ``SeedSequence``) for
counts/times, floors and load times, so every controller faces identical traffic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.elevator.config import Building, Traffic


@dataclass
class Passengers:
    """Arrays sorted by arrival time."""

    arrival: np.ndarray  # float64 s
    origin: np.ndarray  # int
    dest: np.ndarray  # int
    load: np.ndarray  # float64 s (board and alight time)

    def __len__(self) -> int:
        return len(self.arrival)


def truncated_erlang(rng: np.random.Generator, n: int, b: Building) -> np.ndarray:
    """Load times: Erlang(shape) with the building's mean, redrawn outside [min, max]."""
    out = rng.gamma(b.load_time_shape, b.load_time_mean / b.load_time_shape, size=n)
    bad = (out < b.load_time_min) | (out > b.load_time_max)
    for _ in range(100):
        if not bad.any():
            break
        out[bad] = rng.gamma(b.load_time_shape, b.load_time_mean / b.load_time_shape, size=int(bad.sum()))
        bad = (out < b.load_time_min) | (out > b.load_time_max)
    return np.clip(out, b.load_time_min, b.load_time_max)


def generate(building: Building, traffic: Traffic, seed: int) -> Passengers:
    """All passengers arriving in [0, warmup + window) for this seed."""
    ss = np.random.SeedSequence([int(seed), 0xE1E7])
    r_time, r_floor, r_load = (np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(3))
    slots = traffic.schedule()
    if traffic.warmup > 0:
        first = slots[0]
        slots = (type(first)(traffic.warmup, first.pct5, first.up, first.down, first.inter), *slots)
    upper = building.upper_floors
    lobbies = np.array(building.lobby_floors)
    if traffic.floor_shares:
        if len(traffic.floor_shares) != len(upper):
            raise ValueError(
                f"floor_shares has {len(traffic.floor_shares)} values for {len(upper)} upper floors"
            )
        weights = np.asarray(traffic.floor_shares, dtype=np.float64)
    else:
        weights = np.full(len(upper), 1.0 / len(upper))
    pop = building.population
    times, origins, dests = [], [], []
    t0 = 0.0
    for slot in slots:
        rate = slot.pct5 * traffic.intensity * pop / 300.0  # persons per second
        for share, kind in ((slot.up, "up"), (slot.down, "down"), (slot.inter, "inter")):
            if share <= 0 or rate <= 0 or (kind == "inter" and len(upper) < 2):
                continue  # (a building with one upper floor has no inter-floor trips)
            n = int(r_time.poisson(rate * share * slot.duration))
            if n == 0:
                continue
            times.append(t0 + r_time.uniform(0.0, slot.duration, size=n))
            if kind == "up":
                o = r_floor.choice(lobbies, size=n)
                d = r_floor.choice(upper, size=n, p=weights)
            elif kind == "down":
                o = r_floor.choice(upper, size=n, p=weights)
                d = r_floor.choice(lobbies, size=n)
            else:
                o = r_floor.choice(upper, size=n, p=weights)
                # destination: another upper floor, uniform (shift trick keeps it exact)
                k = r_floor.integers(0, len(upper) - 1, size=n)
                oi = np.searchsorted(upper, o)
                d = upper[k + (k >= oi)]
            origins.append(o)
            dests.append(d)
        t0 += slot.duration
    if times:
        arrival = np.concatenate(times)
        origin = np.concatenate(origins).astype(np.int64)
        dest = np.concatenate(dests).astype(np.int64)
    else:
        arrival, origin, dest = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = np.argsort(arrival, kind="stable")
    load = truncated_erlang(r_load, len(order), building)
    return Passengers(arrival[order], origin[order], dest[order], load)
