"""A pure-Python twin of :class:`ElevatorCore` for one building (B = 1), for speed.

NumPy costs microseconds per call even on 4-element arrays, so a B = 1 tick in the batched
core takes ~0.5 ms; the same rules on Python scalars take tens of microseconds. This class
runs the identical rules (same formulas, same order, same float64 arithmetic) on lists and
writes its state back into the batched arrays (``sync``) whenever the env needs observations,
the global state or metrics, so ``observe``/``global_state``/``metrics`` are shared code.
``tests/test_elevator_core.py`` checks that both cores produce the same trajectory.
"""

from __future__ import annotations

import numpy as np

from envs.elevator.config import Building, Traffic
from envs.elevator.core import (
    CONTINUE,
    DWELL,
    EPS,
    IDLE,
    MOVING,
    RATE_TAU,
    STOP,
    TRACE_EVERY,
    UP,
    ElevatorCore,
)
from envs.elevator.traffic import Passengers, generate


class ScalarCore(ElevatorCore):
    def __init__(self, building: Building, traffic: Traffic, reward: str = "wait2"):
        super().__init__(building, traffic, batch=1, reward=reward)

    def reset(self, seeds) -> None:
        super().reset(seeds)  # builds passengers, arrays and the t = 0 state
        C, F = self.C, self.F
        self._passenger_lists()
        self.l_arrived = self.arrived[0].tolist()
        self.l_boarded = self.boarded[0].tolist()
        self.l_S1 = self.S1[0].tolist()
        self.l_next = int(self.next_p[0])
        self.l_pos = self.pos[0].tolist()
        self.l_nxt = self.nxt[0].tolist()
        self.l_floor = self.floor[0].tolist()
        self.l_mode = [IDLE] * C
        self.l_dir = [0] * C
        self.l_last = [0] * C
        self.l_free = [0.0] * C
        self.l_dwell = [0.0] * C
        self.l_stop_t = [0.0] * C
        self.l_hold = [0.0] * C
        self.l_seen = [0] * C
        self.l_ver = 0
        self.l_riders = [[0] * F for _ in range(C)]
        self.l_loadn = [0] * C
        self.l_slots: list[list[tuple[int, int, float]]] = [[] for _ in range(C)]  # (pid, dest, load time)
        self.l_dist = [0.0] * C
        self.l_starts = [0] * C
        self.l_rate = [0.0, 0.0, 0.0]
        self.l_claimed = [[False, False] for _ in range(F)]
        self.l_hall = [[self.l_arrived[f][d] > self.l_boarded[f][d] for d in range(2)] for f in range(F)]
        self.l_delivered = 0
        self.l_lobby = self.is_lobby.tolist()
        self.l_done = False
        self.l_trunc = False
        self._board_buf: list[tuple[int, float]] = []
        self._deliver_buf: list[tuple[int, float]] = []
        self._lmasks()
        self.sync()

    def _passenger_lists(self) -> None:
        """List views of the passenger arrays (arrival, origin, destination, per-queue order)."""
        F = self.F
        n = int(self.n_pax[0])
        self.l_arr = self.arr[0, : n + 1].tolist()
        self.l_orig = self.orig[0, :n].tolist()
        self.l_dest = self.dest[0, :n].tolist()
        self.l_pdi = self.pdi[0, :n].tolist()
        self.l_load = self.loadt[0, :n].tolist()
        order = self.fd_order[0]
        start = self.fd_start[0]
        counts = np.bincount(self.orig[0, :n] * 2 + self.pdi[0, :n], minlength=2 * F).reshape(F, 2)
        self.l_queue = [
            [order[start[f, d] : start[f, d] + counts[f, d]].tolist() for d in range(2)] for f in range(F)
        ]

    def resample_future(self, seed: int) -> None:
        """Replace every passenger who has not arrived yet by a fresh draw of the same traffic (``seed``).

        The past (everyone who arrived, their waits, boardings and deliveries) and the cars are untouched,
        so a copy of a running building can be played forward on *another possible future*: what a
        controller that knows the traffic profile but not the passengers to come can expect. With the
        episode's own seed it is the identity.
        """
        old, k = self.passengers[0], self.l_next  # passengers 0..k-1 have arrived (sorted by arrival)
        new = generate(self.bld, self.trf, seed)
        later = new.arrival > self.t + EPS
        merged = Passengers(
            *(
                np.concatenate([a[:k], b[later]])
                for a, b in zip(
                    (old.arrival, old.origin, old.dest, old.load),
                    (new.arrival, new.origin, new.dest, new.load),
                    strict=True,
                )
            )
        )
        self.sync()  # flush pending boarding/delivery times into the arrays before they are rebuilt
        board_t, deliver_t = self.board_t[0, :k].copy(), self.deliver_t[0, :k].copy()
        self._load_passengers([merged])
        self.board_t[0, :k], self.deliver_t[0, :k] = board_t, deliver_t
        self._passenger_lists()

    # ------------------------------------------------------------------ masks
    def _lmasks(self) -> None:
        C, F, K = self.C, self.F, self.K
        t1 = self.t
        masks, cross, idec = [], [False] * C, [False] * C
        for c in range(C):
            m = [True, False, False, False]
            if self.l_done:
                masks.append(m)
                continue
            mode = self.l_mode[c]
            if mode == MOVING:
                free = self.l_free[c]
                move = self.v * max(0.0, t1 + self.dt - max(t1, free))
                n = self.l_nxt[c]
                if abs(n - self.l_pos[c]) <= move + EPS:
                    cross[c] = True
                    di = 1 if self.l_dir[c] < 0 else 0
                    forced = self.l_riders[c][n] > 0 or n == 0 or n == F - 1
                    load = self.l_loadn[c]
                    hall = self.l_arrived[n][di] > self.l_boarded[n][di] and not self.l_claimed[n][di]
                    m[STOP] = forced or load == 0 or (hall and load < K)
                    m[CONTINUE] = not forced
            elif mode == IDLE and (t1 >= self.l_hold[c] - EPS or self.l_seen[c] != self.l_ver):
                idec[c] = True
                f = self.l_floor[c]
                m[UP] = f < F - 1
                m[3] = f > 0
            masks.append(m)
        self.l_mask, self.l_cross, self.l_idec = masks, cross, idec

    def has_decision(self) -> bool:
        return any(sum(m) > 1 for m in self.l_mask)

    # ------------------------------------------------------------------ tick
    def tick(self, acts: list[int]) -> tuple[float, list[int]]:
        """One tick with per-car actions (illegal ones become the first legal one)."""
        C, F, K = self.C, self.F, self.K
        bld = self.bld
        acts = [
            a if 0 <= a < 4 and self.l_mask[c][a] else self.l_mask[c].index(True) for c, a in enumerate(acts)
        ]
        executed = list(acts)
        live = not self.l_done
        t0 = self.t
        t1 = t0 + self.dt
        arrived, boarded, claimed = self.l_arrived, self.l_boarded, self.l_claimed
        for c in range(C):
            a = acts[c]
            stopped = False
            if self.l_cross[c] and a == STOP:
                n = self.l_nxt[c]
                d = self.l_dir[c]
                di = 1 if d < 0 else 0
                load = self.l_loadn[c]
                forced = self.l_riders[c][n] > 0 or n == 0 or n == F - 1
                hall_ok = arrived[n][di] > boarded[n][di] and not claimed[n][di]
                if forced or load == 0 or (hall_ok and load < K):
                    self._lstop(c, n, d, t0)
                    stopped = True
                else:
                    executed[c] = CONTINUE
            if self.l_idec[c]:
                if a == CONTINUE:
                    self.l_hold[c] = t0 + bld.hold_time
                self.l_seen[c] = self.l_ver
                if a >= UP:
                    self._lstart(c, 1 if a == UP else -1, t0)
            if self.l_mode[c] == MOVING and not stopped:
                move = self.v * max(0.0, t1 - max(t0, self.l_free[c]))
                self.l_pos[c] += self.l_dir[c] * move
                self.l_dist[c] += move
                if self.l_cross[c]:
                    self.l_nxt[c] += self.l_dir[c]
        self.t = t1
        self.ticks += 1
        corr = self._larrivals(t0)
        corr += self._ldwell(t0, t1)
        self._lcalls()
        # reward
        n = 0
        s1 = 0.0
        for f in range(F):
            for d in range(2):
                n += arrived[f][d] - boarded[f][d]
                s1 += self.l_S1[f][d]
        if self.reward_kind == "wait":
            r = -(n * self.dt) / self.reward_scale
        else:
            r = -((t1 - t0) * (n * (t1 + t0) - 2.0 * s1) + corr) / self.reward_scale
        if not live:
            r = 0.0
        if self.t >= self._next_trace - EPS:
            self._ltrace()
        if live and self.t >= self.arrival_end - EPS and self.l_delivered == int(self.n_pax[0]):
            self.l_done = True
            self.t_end[0] = self.t
        elif live and self.t >= self.t_max - EPS:
            self.l_done = self.l_trunc = True
            self.t_end[0] = self.t
        self._lmasks()
        return r, executed

    def _lstop(self, c: int, n: int, d: int, t0: float) -> None:
        bld = self.bld
        pos = self.l_pos[c]
        t_arr = max(t0, self.l_free[c]) + abs(n - pos) * bld.floor_time
        self.l_dist[c] += abs(n - pos)
        self.l_pos[c] = float(n)
        self.l_floor[c] = n
        self.l_mode[c] = DWELL
        self.l_stop_t[c] = t_arr
        k = self.l_riders[c][n]
        alight = 0.0
        if k > 0:
            keep = []
            for slot in self.l_slots[c]:
                if slot[1] == n:
                    self._deliver_buf.append((slot[0], t_arr))
                    alight += slot[2]
                else:
                    keep.append(slot)
            self.l_slots[c] = keep
            self.l_riders[c][n] = 0
            self.l_loadn[c] -= k
            self.l_delivered += k
        di = 1 if d < 0 else 0
        arrived, boarded, claimed = self.l_arrived, self.l_boarded, self.l_claimed
        same = arrived[n][di] > boarded[n][di] and not claimed[n][di]
        opp = arrived[n][1 - di] > boarded[n][1 - di] and not claimed[n][1 - di]
        if self.l_loadn[c] > 0 or same:
            ann = d
        elif opp:
            ann = -d
        else:
            ann = 0
        self.l_dir[c] = ann
        serve = k > 0 or ann != 0
        self.l_dwell[c] = t_arr + (bld.stop_time + alight if serve else bld.park_time)
        if ann != 0:
            claimed[n][1 if ann < 0 else 0] = True

    def _lstart(self, c: int, d: int, t0: float) -> None:
        f = self.l_floor[c]
        di = 1 if d < 0 else 0
        if self.l_arrived[f][di] > self.l_boarded[f][di] and not self.l_claimed[f][di]:
            self.l_mode[c] = DWELL
            self.l_dir[c] = d
            self.l_stop_t[c] = t0
            self.l_dwell[c] = t0 + self.bld.reopen_time
            self.l_claimed[f][di] = True
        else:
            self._ldepart(c, d, t0)

    def _ldepart(self, c: int, d: int, t: float) -> None:
        turn = self.bld.turn_time if self.l_last[c] == -d else 0.0
        self.l_mode[c] = MOVING
        self.l_dir[c] = d
        self.l_nxt[c] = self.l_floor[c] + d
        self.l_free[c] = t + turn
        self.l_last[c] = d
        self.l_starts[c] += 1

    def _larrivals(self, t0: float) -> float:
        corr = 0.0
        t1 = self.t + EPS
        arr = self.l_arr
        while arr[self.l_next] <= t1:
            p = self.l_next
            a = arr[p]
            f, d = self.l_orig[p], self.l_pdi[p]
            self.l_arrived[f][d] += 1
            self.l_S1[f][d] += a
            if a > t0:
                corr += (t0 - a) ** 2
            self.l_next += 1
        return corr

    def _ldwell(self, t0: float, t1: float) -> float:
        C, K = self.C, self.K
        arrived, boarded, claimed = self.l_arrived, self.l_boarded, self.l_claimed
        corr = 0.0
        any_dwell = False
        for c in range(C):
            if self.l_mode[c] != DWELL:
                continue
            any_dwell = True
            if self.l_dir[c] == 0 and self.l_loadn[c] == 0:
                f = self.l_floor[c]
                if arrived[f][0] > boarded[f][0] and not claimed[f][0]:
                    self.l_dir[c] = 1
                    claimed[f][0] = True
                elif arrived[f][1] > boarded[f][1] and not claimed[f][1]:
                    self.l_dir[c] = -1
                    claimed[f][1] = True
        counts = [0.0, 0.0, 0.0]
        boarded_any = False
        if any_dwell:
            for c in range(C):
                if self.l_mode[c] != DWELL or self.l_dir[c] == 0:
                    continue
                f = self.l_floor[c]
                di = 1 if self.l_dir[c] < 0 else 0
                if arrived[f][di] > boarded[f][di] and self.l_loadn[c] < K:
                    pid = self.l_queue[f][di][boarded[f][di]]
                    boarded[f][di] += 1
                    a = self.l_arr[pid]
                    self.l_S1[f][di] -= a
                    if a > t0:
                        corr -= (t0 - a) ** 2
                    self._board_buf.append((pid, self.l_stop_t[c]))
                    dest = self.l_dest[pid]
                    lt = self.l_load[pid]
                    self.l_slots[c].append((pid, dest, lt))
                    self.l_riders[c][dest] += 1
                    self.l_loadn[c] += 1
                    self.l_dwell[c] += lt
                    kind = 0 if self.l_lobby[f] else (1 if self.l_lobby[dest] else 2)
                    counts[kind] += 1.0
                    boarded_any = True
        rate = self.l_rate
        k = self.dt / RATE_TAU
        if boarded_any:
            for i in range(3):
                rate[i] += (counts[i] / self.dt - rate[i]) * k
        else:
            for i in range(3):
                rate[i] *= 1.0 - k
        if not any_dwell:
            return corr
        for c in range(C):
            if self.l_mode[c] != DWELL or self.l_dwell[c] > t1 + EPS:
                continue
            d = self.l_dir[c]
            if d != 0 and self.l_loadn[c] < K:
                f = self.l_floor[c]
                di = 1 if d < 0 else 0
                if arrived[f][di] > boarded[f][di]:
                    continue
            if self.l_loadn[c] > 0:
                self._ldepart(c, d, max(self.l_dwell[c], t0))
                move = self.v * max(0.0, t1 - self.l_free[c])
                self.l_pos[c] += d * move
                self.l_dist[c] += move
            else:
                self.l_mode[c] = IDLE
                self.l_dir[c] = 0
                self.l_hold[c] = t1
        return corr

    def _lcalls(self) -> None:
        F = self.F
        changed = False
        hall = self.l_hall
        arrived, boarded = self.l_arrived, self.l_boarded
        for f in range(F):
            h = hall[f]
            for d in range(2):
                on = arrived[f][d] > boarded[f][d]
                if on != h[d]:
                    h[d] = on
                    changed = True
        if changed:
            self.l_ver += 1
        claimed = [[False, False] for _ in range(F)]
        for c in range(self.C):
            if self.l_mode[c] == DWELL and self.l_dir[c] != 0:
                claimed[self.l_floor[c]][1 if self.l_dir[c] < 0 else 0] = True
        self.l_claimed = claimed

    def _ltrace(self) -> None:
        w = np.array(
            [
                [self.l_arrived[f][0] - self.l_boarded[f][0] + self.l_arrived[f][1] - self.l_boarded[f][1]]
                for f in range(self.F)
            ]
        ).reshape(1, self.F)
        self.trace_t.append(self.t)
        self.trace_wait.append(w)
        self._next_trace = self.t + TRACE_EVERY

    # ------------------------------------------------------------------ batched-API shims
    def step(self, actions: np.ndarray):
        r, executed = self.tick([int(a) for a in np.asarray(actions).reshape(-1)])
        self.sync()
        return np.array([r]), np.array([executed], np.int64)

    def sync(self) -> None:
        """Write the list state into the batched arrays (observations, state and metrics read those)."""
        self.pos[0] = self.l_pos
        self.nxt[0] = self.l_nxt
        self.floor[0] = self.l_floor
        self.mode[0] = self.l_mode
        self.dir[0] = self.l_dir
        self.last_dir[0] = self.l_last
        self.free_at[0] = self.l_free
        self.dwell_end[0] = self.l_dwell
        self.stop_t[0] = self.l_stop_t
        self.hold_until[0] = self.l_hold
        self.seen_ver[0] = self.l_seen
        self.call_ver[0] = self.l_ver
        self.riders[0] = self.l_riders
        self.load[0] = self.l_loadn
        self.arrived[0] = self.l_arrived
        self.boarded[0] = self.l_boarded
        self.S1[0] = self.l_S1
        self.next_p[0] = self.l_next
        self.dist[0] = self.l_dist
        self.starts[0] = self.l_starts
        self.rate[0] = self.l_rate
        self.claimed[0] = self.l_claimed
        self.n_delivered[0] = self.l_delivered
        self.done[0] = self.l_done
        self.truncated[0] = self.l_trunc
        for pid, t in self._board_buf:
            self.board_t[0, pid] = t
        for pid, t in self._deliver_buf:
            self.deliver_t[0, pid] = t
        self._board_buf.clear()
        self._deliver_buf.clear()
        self.mask = np.array([self.l_mask], bool)
        self.cross = np.array([self.l_cross], bool)
        self.idle_decide = np.array([self.l_idec], bool)
