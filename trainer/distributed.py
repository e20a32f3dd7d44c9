"""``inspo train --processes N``: data-parallel training with ``torch.distributed`` (gloo on CPU).

Every process runs ``trainer.train_loop.train`` on the same streamed log (its row store, each within
the memory budget) with the same seed, so all draw the same batch; each keeps every N-th row of it
(``Algorithm.row_split``) and, as DDP does, the gradients are averaged across processes (all-reduce in a
hook after each parameter's gradient is accumulated) before clipping and the optimiser step. The
parameters stay identical in every process, and the result equals one process on the whole batch up
to the order of floating-point sums (measured in docs/scale-out.md).

Only losses that are means over the sampled rows split this way: ``bc``. InSPO's iteration fits mu,
a critic and agent after agent on batches it resamples by importance weights; splitting those batches
would change the algorithm, so it is refused here. Across machines, ``torchrun`` starts the ranks
(``torchrun --nnodes M --nproc-per-node K ... -m trainer.cli train ...``); ``inspo train`` sees
``RANK``/``WORLD_SIZE`` and joins the group (``train_launched_rank``). The log must be on storage every
machine reads, and so must ``INSPO_CACHE_DIR`` (rank 0 builds the cache, the others open it).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainer.algos import Algorithm

DATA_PARALLEL = ("bc",)


def average_gradients(algo: Algorithm, rank: int, processes: int) -> None:
    """Make ``algo`` one rank of a data-parallel group: its share of each batch, gradients averaged."""
    algo.row_split = (rank, processes)
    for module in algo.modules().values():
        for param in module.parameters():
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(_all_reduce_mean)
    local_iteration = algo.train_iteration

    def train_iteration() -> dict[str, float]:  # metrics are means over rows: the group's mean of them
        metrics = local_iteration()
        values = torch.tensor(list(metrics.values()), dtype=torch.float64)
        dist.all_reduce(values)
        return dict(zip(metrics, (values / processes).tolist(), strict=True))

    algo.train_iteration = train_iteration


def _all_reduce_mean(param: torch.Tensor) -> None:
    dist.all_reduce(param.grad)
    param.grad.div_(dist.get_world_size())


def _refuse(algo_name: str) -> None:
    if algo_name not in DATA_PARALLEL:
        raise ValueError(
            f"data-parallel training (--processes > 1, torchrun) trains {', '.join(DATA_PARALLEL)} only "
            f"(their loss is a mean over sampled rows); train {algo_name} with one process"
        )


def train_data_parallel(
    algo_name: str, log: str | Path, out: str | Path, processes: int, **kwargs: Any
) -> None:
    """Train on ``processes`` local processes; rank 0 writes the run directory ``out``."""
    _refuse(algo_name)
    if not Path(log).exists():
        raise FileNotFoundError(f"--data {log}: no such log")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _prepare_store(algo_name, log, kwargs)
    mp.spawn(
        _spawned, args=(processes, port, algo_name, str(log), str(out), kwargs), nprocs=processes, join=True
    )


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` (or another ``env://`` launcher) started as one rank of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def train_launched_rank(algo_name: str, log: str | Path, out: str | Path, **kwargs: Any) -> None:
    """This process's rank of a group ``torchrun`` started (one machine or several: ``--nnodes``).

    Rank 0 builds the log's cache and row store first (on storage every rank reads), the others wait.
    """
    _refuse(algo_name)
    dist.init_process_group("gloo")  # env://: MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE
    try:
        if dist.get_rank() == 0:
            _prepare_store(algo_name, log, kwargs)
        dist.barrier()
        _run_rank(algo_name, str(log), str(out), kwargs)
    finally:
        dist.destroy_process_group()


def _prepare_store(algo_name: str, log: str | Path, kwargs: dict[str, Any]) -> None:
    """Build the log's cache and row store once, before the ranks start (they then only open them)."""
    from trainer.algos import make_algorithm
    from trainer.algos.config import parse_overrides
    from trainer.algos.store import open_stored_log
    from trainer.train_loop import DEFAULT_MEMORY_BUDGET_MB

    overrides = parse_overrides(kwargs.get("overrides"))
    c = make_algorithm(algo_name, kwargs.get("config_file"), overrides).config
    discounting = (getattr(c, "gamma", 0.99), getattr(c, "discount", "step"), getattr(c, "horizon_s", 0.0))
    open_stored_log(log, *discounting, kwargs.get("memory_budget_mb", DEFAULT_MEMORY_BUDGET_MB))


def _spawned(rank: int, processes: int, port: int, algo_name: str, log: str, out: str, kwargs: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=processes)
    try:
        _run_rank(algo_name, log, out, kwargs)
    finally:
        dist.destroy_process_group()


def _run_rank(algo_name: str, log: str, out: str, kwargs: dict) -> None:
    """``train`` as one rank of the initialised group: rank 0 writes ``out``, the others a scratch copy."""
    from trainer.train_loop import train

    rank, processes = dist.get_rank(), dist.get_world_size()

    def join(algo: Algorithm) -> None:
        average_gradients(algo, rank, processes)

    if rank == 0:
        train(algo_name, log, out, after_setup=join, **kwargs)
        return
    quiet = {**kwargs, "progress": False, "eval_every": 0}
    with tempfile.TemporaryDirectory(prefix=f"inspo-rank{rank}-") as scratch:  # its copy is rank 0's
        if kwargs.get("resume"):  # every rank continues from rank 0's checkpoint
            shutil.copytree(Path(out) / "checkpoints", Path(scratch) / "checkpoints")
        train(algo_name, log, scratch, after_setup=join, **quiet)
