"""Batched elevator-group simulator: structure-of-arrays numpy core over B buildings.

Ticks of ``dt`` seconds; every array has a leading batch axis and the code loops over cars
only. Per car and tick the legal actions are (``mask[B, C, 4]``):

* ``CONTINUE`` (0): keep moving / keep holding.
* ``STOP`` (1): only at a *crossing tick* (the car reaches its next floor within the tick):
  stop there. Forced at car-call floors and at the end floors; legal where a same-direction
  hall call is unclaimed and the car has room, and anywhere for an empty car (parking or a
  pick-up in either direction). A stop is illegal where only a hall call justifies it and
  another car already serves that call (Crites & Barto's "no stop where a car is stopped").
* ``UP`` / ``DOWN`` (2/3): only for an idle car at a decision point (it just became idle, a
  hall call changed, or ``hold_time`` passed since it held). With an unclaimed hall call in
  that direction at its floor it opens its doors and serves it; otherwise it starts moving.

Everything else follows the passenger rules (no reversal with riders, boarding only in the
announced direction, FIFO queues, capacity) and needs no decision. Passengers are kept in a
per-(floor, direction) layout sorted by arrival, so a queue is a pair of pointers
(arrived, boarded) into it, and prefix sums give the squared-wait reward in O(1) per queue.
"""

from __future__ import annotations

import math

import numpy as np

from envs.elevator.config import Building, Traffic
from envs.elevator.traffic import Passengers, generate

CONTINUE, STOP, UP, DOWN = 0, 1, 2, 3
ACTION_NAMES = ["continue", "stop", "up", "down"]
N_ACTIONS = 4
IDLE, MOVING, DWELL = 0, 1, 2
UPI, DNI = 0, 1  # direction index of hall calls / queues
EPS = 1e-9
TRACE_EVERY = 30.0  # s between samples of the waiting-per-floor trace
RATE_TAU = 300.0  # s, time constant of the observed boarding-rate estimate


def _didx(sign: np.ndarray) -> np.ndarray:
    """+1 -> 0 (up), -1 -> 1 (down)."""
    return (sign < 0).astype(np.int64)


# Hall-call ages in the *observation* stop at 2 minutes: logged heuristics rarely let a call wait that
# long, so larger values lie outside the logs, and a policy that meets one extrapolates (measured: greedy
# BC and InSPO held every idle car while 60+ passengers waited at the lobby, at ages of 3-5 min, and
# never recovered). The global state (critic only) keeps ages up to 5 minutes.
OBS_AGE_CLIP = 2.0


class ElevatorCore:
    """B buildings in lockstep. ``reset(seeds)`` then ``step(actions[B, C])`` per tick."""

    def __init__(self, building: Building, traffic: Traffic, batch: int = 1, reward: str = "wait2"):
        if reward not in ("wait2", "wait"):
            raise ValueError(f"reward must be 'wait2' or 'wait', got {reward!r}")
        self.bld, self.trf, self.B, self.reward_kind = building, traffic, int(batch), reward
        self.F, self.C, self.K = building.n_floors, building.n_cars, building.capacity
        self.dt = building.dt
        self.v = 1.0 / building.floor_time  # floors per second
        self.warmup, self.window = traffic.warmup, traffic.window
        self.arrival_end = self.warmup + self.window
        self.t_max = self.arrival_end + traffic.drain
        self.reward_scale = 60.0**2 * self.F if reward == "wait2" else 60.0 * self.F
        lobby = np.zeros(self.F, bool)
        lobby[list(building.lobby_floors)] = True
        self.is_lobby = lobby
        self.obs_dim = 8 + 2 * self.F + 4 * self.F + (self.C - 1) * (5 + self.F) + 6
        self.state_dim = self.C * (7 + self.F) + 6 * self.F + 6
        self._others = np.array([[(c + j) % self.C for j in range(1, self.C)] for c in range(self.C)], int)
        if self.C == 1:
            self._others = np.zeros((1, 0), int)

    # ------------------------------------------------------------------ reset
    def _load_passengers(self, pax: list[Passengers]) -> None:
        """The passenger arrays of every env (sorted by arrival; per (floor, direction) in arrival order)."""
        B, F = self.B, self.F
        self.passengers: list[Passengers] = pax
        N = max(1, max(len(p) for p in pax))
        self.N = N
        self.n_pax = np.array([len(p) for p in pax], np.int64)
        arr = np.full((B, N + 1), np.inf)
        orig = np.zeros((B, N + 1), np.int64)
        dest = np.zeros((B, N + 1), np.int64)
        pdi = np.zeros((B, N + 1), np.int64)
        loadt = np.zeros((B, N + 1))
        fd_order = np.zeros((B, N + 1), np.int64)
        fd_start = np.zeros((B, F, 2), np.int64)
        for b, p in enumerate(pax):
            n = len(p)
            arr[b, :n], orig[b, :n], dest[b, :n], loadt[b, :n] = p.arrival, p.origin, p.dest, p.load
            pdi[b, :n] = (p.dest < p.origin).astype(np.int64)
            key = orig[b, :n] * 2 + pdi[b, :n]
            order = np.lexsort((np.arange(n), key))
            fd_order[b, :n] = order
            fd_order[b, n:] = N  # sentinel passenger
            counts = np.bincount(key, minlength=2 * F)
            fd_start[b] = np.concatenate([[0], np.cumsum(counts)[:-1]]).reshape(F, 2)
        self.arr, self.orig, self.dest, self.pdi, self.loadt = arr, orig, dest, pdi, loadt
        self.fd_order, self.fd_start = fd_order, fd_start
        self._row = (np.arange(B) * (N + 1))[:, None, None]  # flat offsets into [B, N + 1] arrays
        self.board_t = np.full((B, N + 1), np.nan)
        self.deliver_t = np.full((B, N + 1), np.nan)

    def reset(self, seeds) -> None:
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.B:
            raise ValueError(f"need {self.B} seeds, got {len(seeds)}")
        B, C, F, K = self.B, self.C, self.F, self.K
        self._load_passengers([generate(self.bld, self.trf, s) for s in seeds])
        self.S1 = np.zeros((B, F, 2))  # sum of arrival times of the waiting passengers per queue
        self.corr = np.zeros(B)  # (t0 - a)^2 of passengers who arrived within the current tick
        self.arrived = np.zeros((B, F, 2), np.int64)
        self.boarded = np.zeros((B, F, 2), np.int64)
        self.next_p = np.zeros(B, np.int64)
        self.n_delivered = np.zeros(B, np.int64)
        # cars
        rng0 = [np.random.default_rng(np.random.SeedSequence([s, 0xCA45])) for s in seeds]
        self.floor = np.stack([r.integers(0, F, size=C) for r in rng0]).astype(np.int64)
        self.pos = self.floor.astype(np.float64)
        self.nxt = self.floor.copy()
        self.mode = np.zeros((B, C), np.int64)
        self.dir = np.zeros((B, C), np.int64)  # motion direction (MOVING) or announced (DWELL)
        self.last_dir = np.zeros((B, C), np.int64)
        self.free_at = np.zeros((B, C))
        self.dwell_end = np.zeros((B, C))
        self.stop_t = np.zeros((B, C))
        self.hold_until = np.zeros((B, C))
        self.seen_ver = np.zeros((B, C), np.int64)
        self.call_ver = np.zeros(B, np.int64)
        self.riders = np.zeros((B, C, F), np.int64)
        self.load = np.zeros((B, C), np.int64)
        self.slot_pid = np.full((B, C, K), self.N, np.int64)
        self.slot_dest = np.full((B, C, K), -1, np.int64)
        self.slot_load = np.zeros((B, C, K))
        self.dist = np.zeros((B, C))
        self.starts = np.zeros((B, C), np.int64)
        self.rate = np.zeros((B, 3))  # boardings/s: from lobby, to lobby, inter-floor
        self.claimed = np.zeros((B, F, 2), bool)
        self.hall_prev = np.zeros((B, F, 2), bool)
        self.t = 0.0
        self.ticks = 0
        self.done = np.zeros(B, bool)
        self.truncated = np.zeros(B, bool)
        self.t_end = np.full(B, np.nan)
        self.trace_t: list[float] = []
        self.trace_wait: list[np.ndarray] = []
        self._next_trace = 0.0
        self._bidx = np.arange(B)
        self._arrivals()  # passengers at t = 0
        self._update_calls()
        self._record_trace()
        self._compute_masks()

    # ------------------------------------------------------------------ helpers
    def waiting(self) -> np.ndarray:
        """[B, F, 2] passengers waiting per floor and direction."""
        return self.arrived - self.boarded

    def _oldest_arrival(self) -> np.ndarray:
        """[B, F, 2] arrival time of the oldest waiting passenger (inf where none)."""
        pid = self.fd_order.ravel()[self._row + self.fd_start + self.boarded]
        a = self.arr.ravel()[self._row + pid]
        return np.where(self.arrived > self.boarded, a, np.inf)

    def _arrivals(self, t0: float = -1.0) -> None:
        """Enqueue everyone who arrived by ``self.t`` (those after ``t0`` arrived within this tick)."""
        t1 = self.t + EPS
        b = self._bidx
        while True:
            cand = self.arr[b, self.next_p] <= t1
            if not cand.any():
                return
            cb = b[cand]
            pid = self.next_p[cb]
            a = self.arr[cb, pid]
            f, d = self.orig[cb, pid], self.pdi[cb, pid]
            self.arrived[cb, f, d] += 1  # one passenger per env per pass: no duplicate indices
            self.S1[cb, f, d] += a
            self.corr[cb] += np.where(a > t0, (t0 - a) ** 2, 0.0) if t0 >= 0 else 0.0
            self.next_p[cb] += 1

    def _update_calls(self) -> None:
        hall = self.arrived > self.boarded
        changed = (hall != self.hall_prev).any(axis=(1, 2))
        self.call_ver += changed
        self.hall_prev = hall
        claimed = np.zeros((self.B, self.F, 2), bool)
        dw = (self.mode == DWELL) & (self.dir != 0)
        if dw.any():
            bb, cc = np.nonzero(dw)
            claimed[bb, self.floor[bb, cc], _didx(self.dir[bb, cc])] = True
        self.claimed = claimed

    def _compute_masks(self) -> None:
        B, C, F = self.B, self.C, self.F
        t1 = self.t
        mask = np.zeros((B, C, N_ACTIONS), bool)
        mask[..., CONTINUE] = True
        moving = self.mode == MOVING
        move_next = self.v * np.maximum(0.0, t1 + self.dt - np.maximum(t1, self.free_at))
        cross = moving & (np.abs(self.nxt - self.pos) <= move_next + EPS)
        if cross.any():
            cb, cc = np.nonzero(cross)
            n = self.nxt[cb, cc]
            di = _didx(self.dir[cb, cc])
            forced = (self.riders[cb, cc, n] > 0) | (n == 0) | (n == F - 1)
            load = self.load[cb, cc]
            hall = (self.arrived[cb, n, di] > self.boarded[cb, n, di]) & ~self.claimed[cb, n, di]
            mask[cb, cc, STOP] = forced | (load == 0) | (hall & (load < self.K))
            mask[cb, cc, CONTINUE] = ~forced
        idle = self.mode == IDLE
        deciding = idle & ((t1 >= self.hold_until - EPS) | (self.seen_ver != self.call_ver[:, None]))
        mask[..., UP] = deciding & (self.floor < F - 1)
        mask[..., DOWN] = deciding & (self.floor > 0)
        done = self.done[:, None]
        if done.any():
            mask[self.done] = False
            mask[self.done, :, CONTINUE] = True
        self.cross = cross & ~done
        self.idle_decide = deciding & ~done
        self.mask = mask

    def deciding(self) -> np.ndarray:
        """[B, C] cars with more than one legal action this tick."""
        return self.mask.sum(axis=2) > 1

    # ------------------------------------------------------------------ step
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance one tick. Illegal actions become the first legal one. Returns (reward[B], executed[B, C])."""
        B, C, F = self.B, self.C, self.F
        b = self._bidx
        actions = np.asarray(actions, np.int64).reshape(B, C)
        legal = np.take_along_axis(self.mask, actions[..., None], axis=2)[..., 0]
        act = np.where(legal, actions, np.argmax(self.mask, axis=2))
        executed = act.copy()
        live = ~self.done
        t0 = self.t
        t1 = t0 + self.dt
        bld = self.bld
        for c in range(C):
            a = act[:, c]
            # ---- stops at the floor being reached
            stop = self.cross[:, c] & (a == STOP)
            if stop.any():
                sb = b[stop]
                n = self.nxt[sb, c]
                d = self.dir[sb, c]
                di = _didx(d)
                load = self.load[sb, c]
                forced = (self.riders[sb, c, n] > 0) | (n == 0) | (n == F - 1)
                hall_ok = (self.arrived[sb, n, di] > self.boarded[sb, n, di]) & ~self.claimed[sb, n, di]
                ok = forced | (load == 0) | (hall_ok & (load < self.K))
                if not ok.all():  # a car earlier in this tick took the call: keep going
                    executed[sb[~ok], c] = CONTINUE
                    stop[sb[~ok]] = False
                    sb, n, d, di = sb[ok], n[ok], d[ok], di[ok]
                if sb.size:
                    self._stop(sb, c, n, d, t0)
            # ---- idle decisions
            dec = self.idle_decide[:, c]
            if dec.any():
                hold = dec & (a == CONTINUE)
                self.hold_until[hold, c] = t0 + bld.hold_time
                self.seen_ver[dec, c] = self.call_ver[dec]
                go = dec & (a >= UP)
                if go.any():
                    self._start(b[go], c, np.where(a[go] == UP, 1, -1), t0)
            # ---- movement
            mv = (self.mode[:, c] == MOVING) & ~stop & live  # finished envs are frozen
            if mv.any():
                mb = b[mv]
                move = self.v * np.maximum(0.0, t1 - np.maximum(t0, self.free_at[mb, c]))
                crossed = self.cross[mb, c]
                self.pos[mb, c] += self.dir[mb, c] * move
                self.dist[mb, c] += move
                self.nxt[mb[crossed], c] += self.dir[mb[crossed], c]
        self.t = t1
        self.ticks += 1
        self.corr[:] = 0.0
        self._arrivals(t0)
        self._dwell(t0, t1, live)
        self._update_calls()
        reward = self._reward(t0, t1) * live
        if self.t >= self._next_trace - EPS:
            self._record_trace()
        # episode end: everyone who will ever arrive has been delivered, or the drain ran out
        fin = live & (self.t >= self.arrival_end - EPS) & (self.n_delivered == self.n_pax)
        trunc = live & ~fin & (self.t >= self.t_max - EPS)
        if fin.any() or trunc.any():
            self.done |= fin | trunc
            self.truncated |= trunc
            self.t_end[fin | trunc] = self.t
        self._compute_masks()
        return reward, executed

    def _stop(self, sb: np.ndarray, c: int, n: np.ndarray, d: np.ndarray, t0: float) -> None:
        """Cars (sb, c) stop at floor n while moving in direction d: alight, announce, open doors."""
        bld = self.bld
        pos = self.pos[sb, c]
        t_arr = np.maximum(t0, self.free_at[sb, c]) + np.abs(n - pos) * bld.floor_time
        self.dist[sb, c] += np.abs(n - pos)
        self.pos[sb, c] = n
        self.floor[sb, c] = n
        self.mode[sb, c] = DWELL
        self.stop_t[sb, c] = t_arr
        k = self.riders[sb, c, n]
        alight_load = np.zeros(len(sb))
        if (k > 0).any():
            m = self.slot_dest[sb, c, :] == n[:, None]
            rows, slots = np.nonzero(m)
            pids = self.slot_pid[sb[rows], c, slots]
            self.deliver_t[sb[rows], pids] = t_arr[rows]
            alight_load = (self.slot_load[sb, c, :] * m).sum(axis=1)
            self.slot_dest[sb[rows], c, slots] = -1
            self.slot_pid[sb[rows], c, slots] = self.N
            self.riders[sb, c, n] = 0
            self.load[sb, c] -= k
            np.add.at(self.n_delivered, sb[rows], 1)
        load = self.load[sb, c]
        di = _didx(d)
        same = (self.arrived[sb, n, di] > self.boarded[sb, n, di]) & ~self.claimed[sb, n, di]
        opp = (self.arrived[sb, n, 1 - di] > self.boarded[sb, n, 1 - di]) & ~self.claimed[sb, n, 1 - di]
        ann = np.where(load > 0, d, np.where(same, d, np.where(opp, -d, 0)))
        self.dir[sb, c] = ann
        serve = (k > 0) | (ann != 0)
        self.dwell_end[sb, c] = t_arr + np.where(serve, bld.stop_time + alight_load, bld.park_time)
        a = ann != 0
        if a.any():
            self.claimed[sb[a], n[a], _didx(ann[a])] = True

    def _start(self, gb: np.ndarray, c: int, d: np.ndarray, t0: float) -> None:
        """Idle cars (gb, c) act on UP/DOWN: open for an unclaimed call here, else start moving."""
        f = self.floor[gb, c]
        di = _didx(d)
        here = (self.arrived[gb, f, di] > self.boarded[gb, f, di]) & ~self.claimed[gb, f, di]
        if here.any():
            ob = gb[here]
            self.mode[ob, c] = DWELL
            self.dir[ob, c] = d[here]
            self.stop_t[ob, c] = t0
            self.dwell_end[ob, c] = t0 + self.bld.reopen_time
            self.claimed[ob, f[here], di[here]] = True
        mv = ~here
        if mv.any():
            self._depart(gb[mv], c, d[mv], t0)

    def _depart(self, mb: np.ndarray, c: int, d: np.ndarray, t: np.ndarray | float) -> None:
        turn = np.where(self.last_dir[mb, c] == -d, self.bld.turn_time, 0.0)
        self.mode[mb, c] = MOVING
        self.dir[mb, c] = d
        self.nxt[mb, c] = self.floor[mb, c] + d
        self.free_at[mb, c] = t + turn
        self.last_dir[mb, c] = d
        self.starts[mb, c] += 1

    def _dwell(self, t0: float, t1: float, live: np.ndarray) -> None:
        """Cars with doors open: board one passenger per tick in the announced direction, close when done."""
        dw = (self.mode == DWELL) & live[:, None]
        if not dw.any():
            self.rate *= 1.0 - self.dt / RATE_TAU
            return
        # an empty car that stopped only to unload or park takes a new call at its floor
        fresh = dw & (self.dir == 0) & (self.load == 0)
        if fresh.any():
            bb, cc = np.nonzero(fresh)
            f = self.floor[bb, cc]
            wait = self.arrived[bb, f] > self.boarded[bb, f]
            free = wait & ~self.claimed[bb, f]
            for k in range(len(bb)):  # rare; sequential keeps claims consistent
                if free[k, UPI] and not self.claimed[bb[k], f[k], UPI]:
                    self.dir[bb[k], cc[k]] = 1
                    self.claimed[bb[k], f[k], UPI] = True
                elif free[k, DNI] and not self.claimed[bb[k], f[k], DNI]:
                    self.dir[bb[k], cc[k]] = -1
                    self.claimed[bb[k], f[k], DNI] = True
        counts = np.zeros((self.B, 3))
        boarded_any = False
        for c in range(
            self.C
        ):  # car by car: two cars may share a queue (a loaded car stopped for a car call)
            bb = np.flatnonzero(dw[:, c] & (self.dir[:, c] != 0))
            if not bb.size:
                continue
            f = self.floor[bb, c]
            di = _didx(self.dir[bb, c])
            can = (self.arrived[bb, f, di] > self.boarded[bb, f, di]) & (self.load[bb, c] < self.K)
            if not can.any():
                continue
            boarded_any = True
            bb, f, di = bb[can], f[can], di[can]
            pid = self.fd_order[bb, self.fd_start[bb, f, di] + self.boarded[bb, f, di]]
            self.boarded[bb, f, di] += 1
            a = self.arr[bb, pid]
            self.S1[bb, f, di] -= a
            self.corr[bb] -= np.where(a > t0, (t0 - a) ** 2, 0.0)
            self.board_t[bb, pid] = self.stop_t[bb, c]
            dest = self.dest[bb, pid]
            slot = np.argmax(self.slot_dest[bb, c, :] < 0, axis=1)
            self.slot_pid[bb, c, slot] = pid
            self.slot_dest[bb, c, slot] = dest
            lt = self.loadt[bb, pid]
            self.slot_load[bb, c, slot] = lt
            self.riders[bb, c, dest] += 1
            self.load[bb, c] += 1
            self.dwell_end[bb, c] += lt
            kind = np.where(self.is_lobby[f], 0, np.where(self.is_lobby[dest], 1, 2))
            counts[bb, kind] += 1.0
        if boarded_any:
            self.rate += (counts / self.dt - self.rate) * (self.dt / RATE_TAU)
        else:
            self.rate *= 1.0 - self.dt / RATE_TAU
        # doors close when the dwell is over and nobody more can board
        fl = self.floor
        di = _didx(self.dir)
        more = (
            (self.dir != 0)
            & (self.load < self.K)
            & (self.arrived[self._bidx[:, None], fl, di] > self.boarded[self._bidx[:, None], fl, di])
        )
        close = dw & (self.dwell_end <= t1 + EPS) & ~more
        if not close.any():
            return
        bb, cc = np.nonzero(close)
        loaded = self.load[bb, cc] > 0
        for c in range(self.C):
            sel = cc == c
            lb = bb[sel & loaded]
            if lb.size:
                start = np.maximum(self.dwell_end[lb, c], t0)
                self._depart(lb, c, self.dir[lb, c], start)
                move = self.v * np.maximum(0.0, t1 - self.free_at[lb, c])
                self.pos[lb, c] += self.dir[lb, c] * move
                self.dist[lb, c] += move
            eb = bb[sel & ~loaded]
            if eb.size:
                self.mode[eb, c] = IDLE
                self.dir[eb, c] = 0
                self.hold_until[eb, c] = t1

    def _reward(self, t0: float, t1: float) -> np.ndarray:
        """Minus the squared-wait increment of everyone waiting at t1 over (t0, t1], scaled.

        Per passenger (t1 - a)^2 - max(t0 - a, 0)^2 = (t1 - t0)(t1 + t0 - 2a) [+ (t0 - a)^2 if a > t0],
        summed from per-queue counts and arrival-time sums.
        """
        n = (self.arrived - self.boarded).sum(axis=(1, 2)).astype(np.float64)
        if self.reward_kind == "wait":
            return -(n * self.dt) / self.reward_scale
        inc = (t1 - t0) * (n * (t1 + t0) - 2.0 * self.S1.sum(axis=(1, 2))) + self.corr
        return -inc / self.reward_scale

    def _record_trace(self) -> None:
        self.trace_t.append(self.t)
        self.trace_wait.append(self.waiting().sum(axis=2))
        self._next_trace = self.t + TRACE_EVERY

    # ------------------------------------------------------------------ observations
    def observe(self) -> np.ndarray:
        """[B, C, obs_dim] float32 per-car observations (own car, hall calls with ages, other cars, time).

        Layout: own [pos, dir(-,0,+), mode(idle, moving, doors), load, car calls F, decision floor F],
        hall [up F, down F, up age F, down age F] (ages in minutes, clipped at ``OBS_AGE_CLIP``),
        others (C-1) x [pos, dir, moving, doors, load, calls F],
        context [sin, cos time of day, phase, boarding rates x3].
        """
        B, C, F = self.B, self.C, self.F
        out = np.zeros((B, C, self.obs_dim), np.float32)
        mov = self.mode == MOVING
        dw = self.mode == DWELL
        pos = self.pos / (F - 1)
        sign = self.dir
        load = self.load / self.K
        calls = self.riders > 0
        out[..., 0] = pos
        out[..., 1] = sign == -1
        out[..., 2] = sign == 0
        out[..., 3] = sign == 1
        out[..., 4] = self.mode == IDLE
        out[..., 5] = mov
        out[..., 6] = dw
        out[..., 7] = load
        out[..., 8 : 8 + F] = calls
        dfloor = out[..., 8 + F : 8 + 2 * F]
        if self.cross.any():
            cb, cc = np.nonzero(self.cross)
            dfloor[cb, cc, self.nxt[cb, cc]] = 1.0
        if self.idle_decide.any():
            ib, ic = np.nonzero(self.idle_decide)
            dfloor[ib, ic, self.floor[ib, ic]] = 1.0
        k = 8 + 2 * F
        hall = self.arrived > self.boarded  # [B, F, 2]
        age = np.where(hall, np.clip((self.t - self._oldest_arrival()) / 60.0, 0.0, OBS_AGE_CLIP), 0.0)
        out[..., k : k + F] = hall[:, None, :, 0]
        out[..., k + F : k + 2 * F] = hall[:, None, :, 1]
        out[..., k + 2 * F : k + 3 * F] = age[:, None, :, 0]
        out[..., k + 3 * F : k + 4 * F] = age[:, None, :, 1]
        k += 4 * F
        w = 5 + F
        car = np.empty((B, C, w), np.float32)
        car[..., 0] = pos
        car[..., 1] = sign
        car[..., 2] = mov
        car[..., 3] = dw
        car[..., 4] = load
        car[..., 5:] = calls
        if C > 1:
            out[..., k : k + (C - 1) * w] = car[:, self._others].reshape(B, C, -1)
        k += (C - 1) * w
        out[..., k:] = self._context()[:, None, :]
        return out

    def _context(self) -> np.ndarray:
        hour = self.trf.start_hour + (self.t - self.warmup) / 3600.0
        ang = 2 * math.pi * hour / 24.0
        phase = (self.t - self.warmup) / max(self.window, 1.0)
        rates = self.rate * 300.0 / max(self.bld.population, 1.0) * 10.0
        base = np.array([math.sin(ang), math.cos(ang), phase], np.float32)
        return np.concatenate([np.broadcast_to(base, (self.B, 3)), rates], axis=1).astype(np.float32)

    def global_state(self) -> np.ndarray:
        """[B, state_dim]: every car, hall calls, ages and (privileged) queue lengths, time."""
        B, F = self.B, self.F
        car = np.concatenate(
            [
                (self.pos / (F - 1))[..., None],
                self.dir[..., None],
                (self.mode == IDLE)[..., None],
                (self.mode == MOVING)[..., None],
                (self.mode == DWELL)[..., None],
                (self.load / self.K)[..., None],
                (self.nxt / (F - 1))[..., None],
                self.riders > 0,
            ],
            axis=2,
        ).reshape(B, -1)
        hall = (self.arrived > self.boarded).astype(np.float64)
        age = np.where(hall > 0, np.clip((self.t - self._oldest_arrival()) / 60.0, 0, 5), 0)
        wait = self.waiting() / self.K
        return np.concatenate(
            [
                car,
                hall.reshape(B, -1),
                age.reshape(B, -1),
                wait.reshape(B, -1),
                self._context(),
            ],
            axis=1,
        ).astype(np.float32)

    # ------------------------------------------------------------------ metrics
    def metrics(self, b: int = 0) -> dict[str, float]:
        """KPIs of env b over passengers who arrived in the measured window (censored if never served)."""
        n = int(self.n_pax[b])
        arr = self.arr[b, :n]
        meas = (arr >= self.warmup) & (arr < self.arrival_end)
        t_end = self.t if np.isnan(self.t_end[b]) else float(self.t_end[b])
        board = self.board_t[b, :n][meas]
        deliv = self.deliver_t[b, :n][meas]
        a = arr[meas]
        boarded = ~np.isnan(board)
        wait = np.where(boarded, np.maximum(board - a, 0.0), t_end - a)
        delivered = ~np.isnan(deliv)
        start_ride = np.maximum(board, a)
        journey = (deliv - start_ride)[delivered]
        system = (deliv - a)[delivered]
        k = max(len(a), 1)
        return {
            "avg_wait": float(wait.sum() / k),
            "avg_sq_wait": float((wait**2).sum() / k),
            "max_wait": float(wait.max()) if len(a) else 0.0,
            "pct_wait_over_60": float(100.0 * (wait > 60.0).sum() / k),
            "avg_journey": float(journey.mean()) if journey.size else 0.0,
            "avg_system_time": float(system.mean()) if system.size else 0.0,
            "passengers": float(len(a)),
            "served": float(delivered.sum()),
            "unserved": float(len(a) - delivered.sum()),
            "distance_m": float(self.dist[b].sum() * self.bld.floor_height),
            "starts": float(self.starts[b].sum()),
            "sim_time": float(t_end),
        }

    def wait_samples(self, b: int = 0) -> np.ndarray:
        n = int(self.n_pax[b])
        arr = self.arr[b, :n]
        meas = (arr >= self.warmup) & (arr < self.arrival_end)
        board = self.board_t[b, :n][meas]
        t_end = self.t if np.isnan(self.t_end[b]) else float(self.t_end[b])
        return np.where(np.isnan(board), t_end - arr[meas], np.maximum(board - arr[meas], 0.0))

    def counts(self, b: int = 0) -> dict[str, int]:
        """Passenger bookkeeping of env b: arrived, waiting, riding, delivered."""
        return {
            "arrived": int(self.next_p[b]),
            "waiting": int(self.waiting()[b].sum()),
            "riding": int(self.load[b].sum()),
            "delivered": int(self.n_delivered[b]),
        }
