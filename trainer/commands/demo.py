"""``inspo demo``: the whole loop on the embedded default (README command 1)."""

from __future__ import annotations

import argparse
from pathlib import Path


class _Domains:
    """The demo domains of the env families (envs/family.py), loaded only when argparse checks or lists them."""

    def __contains__(self, domain: object) -> bool:
        return domain in self._plans()

    def __iter__(self):
        return iter(self._plans())

    @staticmethod
    def _plans() -> dict:
        from envs.registry import demo_plans

        return demo_plans()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole loop: collect, inspect, train, evaluate, export, serve, drive over gRPC",
        description="Collect logs from ε-explored heuristics, train InSPO and BC, evaluate on held-out seeds, "
        "export to ONNX, start the runtime, drive the simulator through gRPC, print the comparison.",
    )
    p.add_argument("--domain", choices=_Domains(), default="elevator", help="which family's demo to run")
    p.add_argument("--out", default="demo-out", help="everything the demo writes goes here (replaced)")
    p.add_argument("--fast", action="store_true", help="a tiny version for smoke tests (results mean little)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from trainer.demo import run_demo

    result = run_demo(args.domain, Path(args.out), fast=args.fast)
    return (
        0 if result["runtime_exit_code"] == 0 and all(r["identical"] == "yes" for r in result["grpc"]) else 1
    )
