"""``inspo train``: a Parquet log -> a run directory (checkpoints, metrics, the deployable actor)."""

from __future__ import annotations

import argparse

from trainer.commands import ENV_ARG_HELP, parse_env_args
from trainer.commands.argtypes import (
    existing_file,
    existing_path,
    non_negative_int,
    positive_float,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    from trainer.algos.config import ALGORITHMS

    p = sub.add_parser(
        "train",
        help="train a policy offline from a log",
        description="Train an offline algorithm on a log. Config: dataclass defaults, "
        "then --config (TOML/JSON, flat or under a [<algo>] table), then --set key=value.",
    )
    p.add_argument("--algo", required=True, choices=sorted(ALGORITHMS), help="algorithm / ablation name")
    p.add_argument("--data", required=True, type=existing_path, help="log directory (Parquet)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--config", default=None, type=existing_file, help="TOML or JSON config file")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config value, repeatable (e.g. alpha=0.3; docs/algorithm.md lists them)",
    )
    p.add_argument(
        "--seed", type=non_negative_int, default=None, help="training seed (network init, minibatches)"
    )
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints/last.pt exactly")
    p.add_argument(
        "--eval-every", type=non_negative_int, default=0, help="evaluate on tuning seeds every N iterations"
    )
    p.add_argument(
        "--env", default=None, help="env to evaluate on (default: the log's own site, from its metadata)"
    )
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help=ENV_ARG_HELP)
    p.add_argument(
        "--eval-episodes", type=positive_int, default=4, help="tuning-seed episodes per evaluation"
    )
    p.add_argument("--log-every", type=positive_int, default=10, help="iterations between metric lines")
    p.add_argument(
        "--checkpoint-every", type=positive_int, default=100, help="iterations between checkpoints"
    )
    p.add_argument(
        "--stop-after", type=positive_int, default=None, help="stop (with a checkpoint) after N iterations"
    )
    p.add_argument(
        "--threads",
        type=non_negative_int,
        default=1,
        help="torch intra-op threads (0: torch's default, one per core)",
    )
    p.add_argument(
        "--memory-budget",
        type=positive_float,
        default=None,
        metavar="MB",
        help="RAM for the log's training rows (default 8192); a larger log streams through it in shards "
        "of whole episodes (docs/scale-out.md). The process needs this plus about 0.5 GB for torch",
    )
    p.add_argument(
        "--processes",
        type=positive_int,
        default=1,
        help="data-parallel processes on this machine (bc; torch.distributed, gloo): each takes its share "
        "of every batch and gradients are averaged (docs/scale-out.md)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer.distributed import launched_by_torchrun
    from trainer.report import print_table
    from trainer.train_loop import train

    if args.processes > 1 or launched_by_torchrun():
        return run_data_parallel(args)
    algo = train(args.algo, args.data, args.out, threads=args.threads, **train_options(args))
    done = algo.iteration >= algo.config.iterations
    print_table(
        [{"run": args.out, "algorithm": args.algo, "iterations": algo.iteration, "finished": done}],
        title="training "
        + ("finished: policy saved to <run>/policy" if done else "stopped: resume with --resume"),
    )
    return 0


def train_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of ``train`` this command's flags give, for one process or every rank."""
    return {
        "config_file": args.config,
        "overrides": args.overrides,
        "seed": args.seed,
        "resume": args.resume,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "log_every": args.log_every,
        "checkpoint_every": args.checkpoint_every,
        "stop_after": args.stop_after,
        "env_id": args.env,
        "env_kwargs": parse_env_args(args.env_arg),
        **({"memory_budget_mb": args.memory_budget} if args.memory_budget else {}),
    }


def run_data_parallel(args: argparse.Namespace) -> int:
    """``--processes N`` here, or one rank of a group ``torchrun`` started (several machines)."""
    import os
    from functools import partial

    from trainer.distributed import launched_by_torchrun, train_data_parallel, train_launched_rank
    from trainer.report import print_table

    launched = launched_by_torchrun()
    launch = train_launched_rank if launched else partial(train_data_parallel, processes=args.processes)
    launch(args.algo, args.data, args.out, **train_options(args))
    if not launched or os.environ.get("RANK") == "0":  # one table, not one per rank
        print_table([{"run": args.out, "algorithm": args.algo}], title="data-parallel training done")
    return 0
