"""The ``inspo`` command (design.md §3.7). Subcommands, in the order a user runs them:
``collect``, ``data inspect``, ``train``, ``eval``, ``export``, ``serve``, ``demo``.

Each subcommand lives in ``trainer/commands/<name>.py`` with a ``register(subparsers)`` function
that adds its parser and sets ``func``. Heavy imports (torch, SUMO, gRPC) happen inside the
command, so ``inspo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["collect", "data", "train", "eval", "export", "serve", "demo", "sweep", "ope"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"trainer.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"trainer.commands.{name}":
                continue  # a subcommand not built yet in this checkout
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, KeyError, FileNotFoundError) as err:
        # User errors (bad ids, bad files, bad logs) print one clear line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"inspo {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
