"""``inspo train`` as a function: log -> run directory with metrics, checkpoints and the deployable actor.

Run directory (``trainer/run_dir.py``): ``config.json``, ``metrics.jsonl`` (one object per logged
iteration; evaluation rows carry ``"eval/..."`` keys), ``checkpoints/last.pt`` (full training state),
``policy/`` (the actor). TensorBoard event files go to ``<run>/tb`` when ``tensorboard`` is installed.

``resume=True`` loads ``checkpoints/last.pt``, drops metric rows written after it, and continues:
an interrupted-and-resumed run ends with the same weights as an uninterrupted one (same seed, CPU).
Periodic evaluation runs the greedy actor on TUNING seeds (``envs.seeds.tuning_seeds``), never on
the evaluation seeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from trainer.algos import Algorithm, config_dict, make_algorithm
from trainer.algos.config import parse_overrides
from trainer.algos.store import StoredLog
from trainer.logs.dataset import OfflineData
from trainer.threads import torch_threads

EXCLUDED_FROM_RESUME_CHECK = ("iterations",)
# RAM for a log's training rows (inspo train --memory-budget). 8 GB: the 300-episode elevator logs the
# learner was tuned on fit in one shard on a 24 GB machine, so they train exactly as loaded; a log beyond
# it streams in shards (InSPO then re-fits its residuals per shard, docs/scale-out.md)
DEFAULT_MEMORY_BUDGET_MB = 8192.0


def _env_for(data: OfflineData | StoredLog, env_id: str | None, env_kwargs: dict[str, Any] | None):
    """The env periodic evaluation runs on, checked against the log's site.

    ``env_id``/``env_kwargs`` (``inspo train --env/--env-arg``) build it explicitly (errors are the
    user's to see); otherwise the log's recorded site spec rebuilds it, else its env id does. A site
    whose structure differs from the log's is refused (envs/site.py); another demand is said in one line.
    """
    import sys

    from envs.registry import make_env
    from envs.site import SiteMismatchError, check_policy_site, env_from_spec

    if env_id:
        env = make_env(env_id, **(env_kwargs or {}))
    elif env_kwargs:  # options changed on the log's own site
        env = (
            env_from_spec(data.site_spec, **env_kwargs)
            if data.site_spec
            else make_env(data.env_id, **env_kwargs)
        )
    elif not data.env_id:
        return None
    else:
        try:
            env = env_from_spec(data.site_spec) if data.site_spec else make_env(data.env_id)
        except SiteMismatchError:
            raise
        except Exception as err:  # an env we cannot build here (e.g. SUMO missing): train without eval
            print(f"note: no evaluation env for {data.env_id!r}: {err}")
            return None
    note = check_policy_site(data.site_spec, env, "evaluation env", left="log")
    if note:
        print(note, file=sys.stderr)
    return env


def evaluate_actor(algo: Algorithm, env, episodes: int, deterministic: bool = True) -> dict[str, float]:
    """Mean return and env metrics of the current actor on the first ``episodes`` tuning seeds."""
    from envs.seeds import tuning_seeds
    from trainer.policies import TorchPolicyController
    from trainer.rollout import run_episode
    from trainer.threads import single_threaded

    actor = algo.deployed_actor()
    controller = TorchPolicyController(actor, algo.agent_ids, deterministic=deterministic, name=algo.name)
    with single_threaded():
        results = [run_episode(env, controller, seed) for seed in tuning_seeds(episodes)]
    actor.train()
    out = {"eval/return": float(np.mean([r.episode_return for r in results]))}
    for key in results[0].metrics:
        out[f"eval/{key}"] = float(np.mean([r.metrics.get(key, np.nan) for r in results]))
    return out


class _Metrics:
    """metrics.jsonl (+ TensorBoard when available)."""

    def __init__(self, run: Path, resume_iteration: int | None):
        self.path = run / "metrics.jsonl"
        if resume_iteration is not None and self.path.exists():
            keep = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("iteration", 0) <= resume_iteration
            ]
            self.path.write_text("".join(line + "\n" for line in keep))
        elif resume_iteration is None:
            self.path.write_text("")
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"))
        except Exception:  # tensorboard not installed
            self.tb = None

    def write(self, iteration: int, values: dict[str, float]) -> None:
        row = {"iteration": iteration, **{k: float(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, float(v), iteration)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(
    algo_name: str,
    data: OfflineData | str | Path,
    out: str | Path,
    config_file: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    seed: int | None = None,
    resume: bool = False,
    eval_every: int = 0,
    eval_episodes: int = 4,
    log_every: int = 10,
    checkpoint_every: int = 100,
    stop_after: int | None = None,
    progress: bool = True,
    threads: int | None = 1,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    after_setup: Callable[[Algorithm], None] | None = None,
) -> Algorithm:
    """Train ``algo_name`` on a log (path or loaded data) into the run directory ``out``.

    A path streams (``trainer.algos.store``): the log's array cache and row store are built on first use
    and training holds at most ``memory_budget_mb`` of rows in RAM; a log that fits trains exactly as
    loaded data does.

    ``threads``: torch intra-op threads while training (``trainer.threads``; ``None``/0 = torch's
    default). One by default: our MLPs gain little from more, and parallel jobs or a busy machine make
    extra threads spin (measured 10-20x slower on the shared 2-core machine).
    ``env_id``/``env_kwargs``: the evaluation env (default: the log's own site, from its metadata).
    ``after_setup`` runs once the algorithm is set up, before any training (data-parallel ranks hook in there)."""
    with torch_threads(threads):
        return _train(
            algo_name, data, out, config_file, overrides, seed, resume, eval_every, eval_episodes,
            log_every, checkpoint_every, stop_after, progress, env_id, env_kwargs, memory_budget_mb,
            after_setup,
        )  # fmt: skip


def _train(
    algo_name: str,
    data: OfflineData | str | Path,
    out: str | Path,
    config_file: str | Path | None,
    overrides: list[str] | dict[str, Any] | None,
    seed: int | None,
    resume: bool,
    eval_every: int,
    eval_episodes: int,
    log_every: int,
    checkpoint_every: int,
    stop_after: int | None,
    progress: bool,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    after_setup: Callable[[Algorithm], None] | None = None,
) -> Algorithm:
    run = Path(out)
    ckpt = run / "checkpoints" / "last.pt"
    data_source = str(data) if isinstance(data, str | Path) else "<in-memory>"
    items = parse_overrides(overrides)
    if seed is not None:
        items["seed"] = seed
    algo = make_algorithm(algo_name, config_file, items)
    if isinstance(data, str | Path):  # stream it: rows for this config's discounting, within the budget
        from trainer.algos.store import open_stored_log

        c = algo.config
        discounting = (
            getattr(c, "gamma", 0.99),
            getattr(c, "discount", "step"),
            getattr(c, "horizon_s", 0.0),
        )
        from trainer.algos.exogenous import wanted

        data = open_stored_log(data, *discounting, memory_budget_mb, exogenous=wanted(c))
    env = _env_for(data, env_id, env_kwargs)
    algo.setup(data, env.neighbors() if env is not None else None)
    if after_setup is not None:
        after_setup(algo)
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        import torch

        state = torch.load(ckpt, weights_only=True)
        for key in EXCLUDED_FROM_RESUME_CHECK:
            state["config"][key] = config_dict(algo.config)[key]
        algo.load_state_dict(state)
    elif ckpt.exists():
        raise ValueError(f"{run} already has a checkpoint; pass --resume to continue or choose a new --out")
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(
        json.dumps(
            {
                "algorithm": algo_name,
                "config": config_dict(algo.config),
                "data": data_source,
                "dataset_fingerprint": data.fingerprint,
                "env_id": data.env_id,
                "reward_scale": algo.data.reward_scale if algo.data else None,
                "site_spec": data.site_spec,
            },
            indent=2,
        )
    )
    metrics_out = _Metrics(run, algo.iteration if resume else None)
    total = int(algo.config.iterations)
    end = min(total, stop_after) if stop_after is not None else total
    bar = tqdm(
        total=total, initial=algo.iteration, desc=f"train {algo_name}", unit="it", disable=not progress
    )
    last: dict[str, float] = {}
    last_eval: dict[str, float] = {}
    started = time.time()

    def on_iteration(a: Algorithm, metrics: dict[str, float]) -> None:
        nonlocal last, last_eval
        last = metrics
        it = a.iteration
        # the first iteration's row carries the once-per-run warm-up figures (mu's fit, the baseline's
        # explained share, the linear heads' held-out gain), so it is always written
        row = dict(metrics) if (it % log_every == 0 or it == end or it == 1) else {}
        if env is not None and eval_every and (it % eval_every == 0 or it == total):
            last_eval = evaluate_actor(a, env, eval_episodes)
            row.update(metrics)
            row.update(last_eval)
        if row:
            row["time_s"] = time.time() - started
            metrics_out.write(it, row)
        if it % checkpoint_every == 0 or it == end:
            a.save(ckpt)
        bar.update(1)
        shown = {k: metrics[k] for k in list(metrics)[:3]}
        shown.update({k.removeprefix("eval/"): v for k, v in last_eval.items() if k == "eval/return"})
        bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()})

    try:
        algo.fit(end, on_iteration)
    finally:
        bar.close()
        metrics_out.close()
    if algo.iteration >= total:
        from trainer.run_dir import save_policy

        meta = algo.policy_meta()
        meta["action_names"] = getattr(env, "action_names", None) if env is not None else None
        meta["metrics"] = {"train": last, "eval": last_eval, "iterations": algo.iteration}
        save_policy(run, algo.deployed_actor(), meta)
        algo.save(ckpt)
    return algo
