"""One module per ``inspo`` subcommand; each exposes ``register(subparsers)``."""

import json
from typing import Any

ENV_ARG_HELP = (
    "an env option, repeatable (e.g. num_seconds=900 for a short SUMO scenario, hours=0.5); values are checked "
    "against the env's options. --env site:PATH reads a site file (docs/elevator.md, docs/traffic.md, docs/games.md)"
)


def parse_env_args(items: list[str] | None) -> dict[str, Any]:
    """``["num_seconds=900", "reward=wait"]`` -> ``{"num_seconds": 900, "reward": "wait"}`` (JSON values, else text)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--env-arg expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out
