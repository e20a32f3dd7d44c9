"""``inspo collect``: run controllers in a simulator and write a Parquet log."""

from __future__ import annotations

import argparse

from trainer.commands import ENV_ARG_HELP, parse_env_args
from trainer.commands.argtypes import float_range, partition_name, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="run controllers in a simulator and write a Parquet log",
        description="Run rule/behaviour controllers and write a Parquet log (docs/log-format.md). "
        "Either --dataset NAME (a named dataset of the env) or --controller SPEC --episodes N. "
        "SPEC: 'etd', 'etd@eps=0.1', 'nearest-car@temp=2', or a comma list for a per-episode mixture.",
    )
    p.add_argument(
        "--env",
        required=True,
        help="env id, e.g. xor, bridge, elevator:cb10x4:downpeak, sumo:grid4x4, or site:PATH (a site file)",
    )
    p.add_argument("--out", required=True, help="log directory to write (appended to if it exists)")
    p.add_argument("--dataset", help="a named dataset of the env (e.g. xor: balanced|uniform)")
    p.add_argument("--controller", help="controller spec")
    p.add_argument("--episodes", type=positive_int, help="episodes to collect with --controller")
    p.add_argument(
        "--epsilon",
        type=float_range(0.0, 1.0),
        default=None,
        help="epsilon-mixing for components without @eps",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="first collection seed (episodes use consecutive seeds)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="simulators running at once, each in its own process (local or Ray; on Ray at most "
        "the cluster's free CPUs)",
    )
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help=ENV_ARG_HELP)
    p.add_argument(
        "--site",
        type=partition_name,
        default=None,
        help="site name for the partition (default: from the env id)",
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: a process pool of --workers; ray: --workers Ray actors, one chunk each at a time. "
        "Same seeds give the same log either way",
    )
    p.add_argument(
        "--address", default=None, help="with --backend ray: cluster to join ('auto', 'ray://head:10001')"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from envs.seeds import COLLECTION_SEEDS
    from trainer.collect import collect
    from trainer.report import print_table, summarize_results

    if args.seed not in COLLECTION_SEEDS:
        raise ValueError(f"--seed {args.seed} lies outside the collection seeds {COLLECTION_SEEDS}")
    results = collect(
        args.env,
        args.out,
        controller=args.controller,
        episodes=args.episodes,
        dataset=args.dataset,
        epsilon=args.epsilon,
        start_seed=args.seed,
        workers=args.workers,
        site=args.site,
        backend=args.backend,
        address=args.address,
        env_kwargs=parse_env_args(args.env_arg),
    )
    print_table(summarize_results(results), title=f"collected {len(results)} episodes into {args.out}")
    return 0
