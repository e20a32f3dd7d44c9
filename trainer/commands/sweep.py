"""``inspo sweep``: hyper-parameter grid x training seeds with early stopping, locally or on Ray Tune."""

from __future__ import annotations

import argparse

from trainer.commands.argtypes import (
    existing_file,
    existing_path,
    int_at_least,
    non_negative_int,
    positive_int,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="tune an algorithm's config on a log (grid x seeds, ASHA early stopping)",
        description="Train every grid point with --seeds training seeds through the same function as "
        "'inspo train', score each on TUNING seeds (never the evaluation seeds), stop weak trials early "
        "(ASHA), and write results.csv/json, sweep.png and best.toml (for 'inspo train --config').",
    )
    p.add_argument("--data", required=True, type=existing_path, help="log directory (Parquet)")
    p.add_argument("--algo", default="inspo", help="algorithm name (as in 'inspo train')")
    p.add_argument(
        "--grid",
        nargs="+",
        required=True,
        metavar="KEY=V1,V2",
        help="config values to try, e.g. --grid alpha=0.1,0.3,1 beta=0,0.3",
    )
    p.add_argument("--seeds", type=positive_int, default=3, help="training seeds per grid point (0..N-1)")
    p.add_argument("--out", default="sweeps/latest", help="sweep directory to write")
    p.add_argument(
        "--config", default=None, type=existing_file, help="base TOML/JSON config (as in 'inspo train')"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed config value, repeatable (e.g. alpha=0.3; docs/algorithm.md lists them)",
    )
    p.add_argument(
        "--iterations", type=positive_int, default=None, help="iterations per trial (default: config)"
    )
    p.add_argument(
        "--report-every",
        type=non_negative_int,
        default=0,
        help="iterations between validations (ASHA grace period)",
    )
    p.add_argument(
        "--reduction-factor", type=int_at_least(2), default=3, help="ASHA: keep the top 1/N at each rung"
    )
    p.add_argument(
        "--metric",
        default="val/return",
        choices=["val/return", "val/greedy_return"],
        help="validation metric on tuning seeds: sampling policy (default) or argmax policy",
    )
    p.add_argument(
        "--val-episodes", type=positive_int, default=16, help="tuning-seed episodes per validation"
    )
    p.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: trials on this machine; ray: on a Ray cluster (--address)",
    )
    p.add_argument("--address", default=None, help="with --backend ray: cluster to join ('auto', ...)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer.integrations.sweep import SweepSpec, parse_grid, print_results, sweep

    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        overrides[key.strip()] = value
    if args.seeds < 1:
        raise ValueError("--seeds must be >= 1")
    spec = SweepSpec(
        data=args.data,
        algo=args.algo,
        grid=parse_grid(args.grid),
        seeds=list(range(args.seeds)),
        out=args.out,
        config_file=args.config,
        overrides=overrides,
        iterations=args.iterations,
        report_every=args.report_every,
        reduction_factor=args.reduction_factor,
        metric=args.metric,
        val_episodes=args.val_episodes,
    )
    result = sweep(spec, backend=args.backend, address=args.address)
    print_results(spec, result)
    print(f"best config: {result.best_toml}  plot: {result.plot}  table: {args.out}/results.csv")
    return 0
