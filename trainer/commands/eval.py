"""``inspo eval``: controllers (rule specs, run dirs, ONNX model dirs, grpc:// URLs) on the evaluation seeds."""

from __future__ import annotations

import argparse

from trainer.commands import ENV_ARG_HELP, parse_env_args
from trainer.commands.argtypes import int_between


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate controllers on the fixed evaluation seeds",
        description="Run each controller on envs.seeds.evaluation_seeds(N) (the same seeds for all: paired). "
        "A glob matching several run directories counts as one method over training seeds.",
    )
    p.add_argument(
        "--controller",
        action="append",
        required=True,
        help="rule spec (etd, random, etd@eps=0.1), run dir or ONNX model dir (suffix :sample to sample, "
        ":greedy for argmax), grpc://host:port/model, or a quoted glob of run dirs; repeat for several",
    )
    p.add_argument("--env", required=True, help="env id, or site:PATH (a site file; docs/elevator.md)")
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help=ENV_ARG_HELP)
    p.add_argument("--seeds", type=int_between(1, 32), default=32, help="number of evaluation seeds (max 32)")
    p.add_argument("--out", default=None, help="directory for episodes.csv, summary.csv/json and PNG plots")
    p.add_argument(
        "--stochastic",
        action="store_true",
        help="sample learned policies without a :greedy/:sample suffix (default: argmax)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate, summarize, table_rows, write_outputs
    from trainer.report import print_table

    groups = evaluate(
        args.controller,
        args.env,
        args.seeds,
        deterministic=not args.stochastic,
        env_kwargs=parse_env_args(args.env_arg),
    )
    print_table(table_rows(summarize(groups)), title=f"{args.env}: {args.seeds} evaluation seeds")
    if args.out:
        written = write_outputs(groups, args.env, args.out)
        print("wrote " + ", ".join(str(p) for p in written))
    return 0
