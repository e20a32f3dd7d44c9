"""Dynamic batching: concurrent requests of one model share one ONNX Runtime execution.

A request's rows wait on the event loop until ``max_batch_size`` rows are queued or
``max_queue_delay_us`` has passed since the first one, then one ``session.run`` serves them all
(rows of different versions, during a hot swap, run per version). Off by default: with one
agent per request and a 12 µs model, batching trades latency for throughput only under load.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


class Batcher:
    def __init__(self, max_batch_size: int, max_queue_delay_us: int, model_metrics):
        self.max_batch_size = max(1, int(max_batch_size))
        self.delay = max(0, int(max_queue_delay_us)) / 1e6
        self.mm = model_metrics
        self._items: list = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None

    def submit(self, model, obs: np.ndarray, agents: np.ndarray, mask: np.ndarray) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._items.append((model, obs, agents, mask, future))
        self._rows += len(agents)
        if self._rows >= self.max_batch_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.delay, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items, self._rows = self._items, [], 0
        groups: dict[int, list] = {}
        for item in items:
            if not item[4].cancelled():
                groups.setdefault(id(item[0]), []).append(item)
        for group in groups.values():
            model = group[0][0]
            try:
                obs = np.concatenate([g[1] for g in group]) if len(group) > 1 else group[0][1]
                agents = np.concatenate([g[2] for g in group]) if len(group) > 1 else group[0][2]
                mask = np.concatenate([g[3] for g in group]) if len(group) > 1 else group[0][3]
                t0 = time.perf_counter()
                probs, action = model.infer(obs, agents, mask)
                self.mm.inference.observe(time.perf_counter() - t0)
                self.mm.executions.inc()
                self.mm.batch.observe(len(agents))
            except Exception as err:  # noqa: BLE001 - each waiting request falls back
                for g in group:
                    if not g[4].done():
                        g[4].set_exception(err)
                continue
            start = 0
            for g in group:
                k = len(g[2])
                if not g[4].done():
                    g[4].set_result((probs[start : start + k], action[start : start + k]))
                start += k
