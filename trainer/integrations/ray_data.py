"""The memory-mapped array cache of a log built on a Ray cluster (``trainer.logs.stream`` distributed).

Pass 1: ``ray.data.read_parquet`` scans the key columns (``episode_id``, ``t``) of every part file with
its path, and one task per file hashes its bytes and reads its schema metadata; the driver groups
files that share episodes. Pass 2: one task per file group runs the unchanged ``validate`` and
``to_offline_data`` and returns the group's arrays; the driver writes them into the ``.npy`` memory
maps. The cache equals the local one byte for byte (same fingerprint directory). The log must be on
storage every node can read (a shared file system).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from trainer.integrations import require_ray
from trainer.integrations.ray_collect import connect, disconnect


def _file_facts(path: str, kind: str):
    import pyarrow.parquet as pq

    from trainer.logs.reader import file_digest, parse_meta

    p = Path(path)
    schema = pq.read_schema(p)
    return file_digest(p), parse_meta(p, schema.metadata), "behavior_prob" in schema.names


def _partial_keys(batch):
    """Per (file, episode) of one block: rows and largest t (the driver combines blocks)."""
    import pyarrow.compute as pc

    batch = batch.filter(pc.is_valid(batch.column("episode_id")))
    return batch.group_by(["path", "episode_id"]).aggregate([("t", "max"), ("t", "count")])


def _convert_group(plan, group):
    from trainer.logs.stream import read_group

    log = read_group(plan, group)
    return SimpleNamespace(data=log.data, columns=SimpleNamespace(controller=log.columns.controller))


def plan_log_ray(path: str | os.PathLike):
    """Pass 1 on the cluster; on any read problem, the local pass names the file and column."""
    ray = require_ray()
    from trainer.logs.reader import combine_fingerprint, log_files
    from trainer.logs.stream import FileScan, plan_from_scans, plan_log

    root, agents, envs = log_files(path)
    kinds = [("agent_steps", p) for p in agents] + [("env_steps", p) for p in envs]
    facts_task = ray.remote(num_cpus=1)(_file_facts)
    try:
        facts = ray.get([facts_task.remote(str(p), k) for k, p in kinds])
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        keys = (
            ray.data.read_parquet(
                [str(p) for _, p in kinds],
                columns=["episode_id", "t"],
                include_paths=True,
                partitioning=None,
                override_num_blocks=max(1, len(kinds)),
            )
            .map_batches(_partial_keys, batch_format="pyarrow", batch_size=None)
            .to_pandas()
            .groupby(["path", "episode_id"], sort=False)
            .agg({"t_max": "max", "t_count": "sum"})
            .reset_index()
        )
    except Exception:
        return plan_log(path)  # raises LogValidationError naming the bad file
    by_path = {path: frame for path, frame in keys.groupby("path")}
    scans = []
    for (kind, p), (_, meta, has_probs) in zip(kinds, facts, strict=True):
        frame = by_path.get(str(p))
        if frame is None:  # read_parquet may drop the absolute prefix: match on the tail
            frame = next((f for k, f in by_path.items() if str(p).endswith(k.lstrip("/"))), None)
        episodes = [] if frame is None else frame["episode_id"].tolist()
        counts = np.zeros(0, np.int64) if frame is None else frame["t_count"].to_numpy(np.int64)
        max_t = np.zeros(0, np.int64) if frame is None else frame["t_max"].to_numpy(np.int64)
        scans.append(FileScan(p, kind, meta, episodes, counts, max_t, has_probs))
    fingerprint = combine_fingerprint([p for _, p in kinds], [f[0] for f in facts])
    return plan_from_scans(root, scans, fingerprint)


def build_array_cache_ray(
    path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, address: str | None = None
) -> Path:
    """``trainer.logs.stream.build_array_cache`` with both passes on Ray; returns the cache directory."""
    ray = require_ray()
    from trainer.logs.stream import build_array_cache

    started = connect(address)
    try:
        plan = plan_log_ray(path)
        convert = ray.remote(num_cpus=1)(_convert_group)

        def on_ray(plan):
            plan_ref = ray.put(plan)
            pending = [convert.remote(plan_ref, g) for g in plan.groups]
            for ref in pending:  # in group order, so the first error reported is the local one
                yield ray.get(ref)

        return build_array_cache(path, cache_dir, groups=on_ray, plan=plan)
    finally:
        if started:
            disconnect()
