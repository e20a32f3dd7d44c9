"""``inspo serve``: the serving runtime (the same program as ``inspo-runtime``)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from runtime.args import add_arguments

    p = sub.add_parser(
        "serve",
        help="serve exported policies over gRPC (same as inspo-runtime)",
        description="Serve a model repository over gRPC with metrics, hot reload, fallback and auth "
        "(docs/serving.md). Tokens come from files or the environment, never from flags.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from runtime.server import run_from_args

    return run_from_args(args)
