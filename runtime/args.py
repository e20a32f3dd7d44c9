"""Command-line flags of ``inspo-runtime`` / ``inspo serve`` (no heavy imports: ``inspo --help`` stays fast).

There is deliberately no flag for a token or a key: secrets come from files or the environment.
"""

from __future__ import annotations

import argparse


def _port(text: str) -> int:
    """A TCP port number (0 = any free port / off): checked at parsing, before anything starts."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML or YAML config file (see docs/serving.md)")
    parser.add_argument("--models", help="model repository root (overrides model_repository)")
    parser.add_argument("--host", help="bind address (overrides host)")
    parser.add_argument("--port", type=_port, help="gRPC port (overrides port; 0 = any free port)")
    parser.add_argument("--metrics-port", type=_port, help="Prometheus port (0 = off)")
    parser.add_argument("--ready-file", help="write {port, metrics_port} JSON here once serving")
    parser.add_argument(
        "--print-config", action="store_true", help="print the effective config (secrets redacted) and exit"
    )
