"""``inspo export``: a run directory's policy -> ``<models>/<name>/<version>/policy.{onnx,json}``."""

from __future__ import annotations

import argparse

from trainer.commands.argtypes import existing_dir, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a trained policy to an ONNX model repository",
        description="Export the run's actor to <models>/<name>/<version>/policy.onnx + policy.json "
        "(docs/serving.md). Checks ONNX against torch on held-out observations; writes nothing on failure.",
    )
    p.add_argument("run", type=existing_dir, help="run directory (from inspo train)")
    p.add_argument("--models", required=True, help="model repository root")
    p.add_argument("--name", required=True, help="model name (folder under the repository)")
    p.add_argument(
        "--version", type=positive_int, default=None, help="version number (default: next integer)"
    )
    p.add_argument(
        "--parity-samples", type=positive_int, default=512, help="held-out observations for the parity check"
    )
    p.add_argument(
        "--atol", type=positive_float, default=1e-5, help="max |Δprobs| allowed between torch and ONNX"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from trainer.export import export_run

    folder = export_run(
        args.run, args.models, args.name, args.version, parity_samples=args.parity_samples, atol=args.atol
    )
    meta = json.loads((folder / "policy.json").read_text())
    print(
        f"exported {meta['name']} version {meta['version']} -> {folder} "
        f"(sha256 {meta['onnx_sha256'][:12]}, parity max |Δprobs| {meta['parity']['max_abs_diff']:.2g})"
    )
    return 0
