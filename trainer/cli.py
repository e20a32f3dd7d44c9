"""inspo: learn a multi-agent controller offline from logs, evaluate it, export it to ONNX and serve it.
Subcommands, in the order a user runs them: collect, data inspect, train, eval, export, serve
(demo runs the whole loop; sweep tunes a config; ope estimates a policy's value from a log;
report atspm compares two controllers' hi-res event logs by ATSPM measures).

Each subcommand lives in ``trainer/commands/<name>.py`` with a ``register(subparsers)`` function
that adds its parser and sets ``func``. Heavy imports (torch, SUMO, gRPC) happen inside the
command, so ``inspo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

COMMANDS = ["collect", "data", "train", "eval", "export", "serve", "demo", "sweep", "ope", "report"]
PACKAGES = ("trainer", "envs", "runtime", "contract")  # the project's own code
_ROOT = Path(__file__).resolve().parent.parent


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


def _in_project(filename: str) -> bool:
    path = Path(filename).resolve()
    return any(path.is_relative_to(_ROOT / package) for package in PACKAGES)


def user_error_message(err: BaseException) -> str | None:
    """The one line to print for an error the user's input caused, or None for a bug.

    User errors are the project's own exception classes (LogValidationError, UnknownEnvError, ...),
    operating-system errors on a named file (missing, unreadable), and the ValueError / KeyError /
    OSError a ``raise`` statement in the project's code throws after checking an input. Anything else,
    e.g. a TypeError, or a ValueError from inside numpy or torch, is a bug: its traceback is shown.
    """
    if isinstance(err, OSError) and err.filename is not None:
        return f"{err.filename}: {err.strerror or err}"
    message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if type(err).__module__.split(".")[0] in PACKAGES:
        return message
    if not isinstance(err, ValueError | LookupError | OSError):
        return None
    frames = traceback.extract_tb(err.__traceback__)
    if frames and _in_project(frames[-1].filename) and (frames[-1].line or "").startswith("raise"):
        return message
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed usage and its one-line error (or --help): same code
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        # User errors (bad ids, bad files, bad logs) print one clear line; bugs keep their traceback.
        message = user_error_message(err)
        if message is None:
            raise
        command = " ".join(filter(None, [args.command, getattr(args, "data_command", None)]))
        print(f"inspo {command}: error: {message}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
