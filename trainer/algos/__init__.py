"""Offline algorithms selectable by name: ``inspo``, ``inspo-simultaneous``, ``inspo-noresample``,
``inspo-beta0`` (``beta=0``; also reachable with ``--set beta=0``) and ``bc``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.algos.base import Algorithm
from trainer.algos.config import ALGORITHMS, BCConfig, InSPOConfig, config_dict, make_config


def make_algorithm(
    name: str, config_file: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> Algorithm:
    """An algorithm object by name with its config (defaults < variant < file < overrides)."""
    config = make_config(name, config_file, overrides)
    if isinstance(config, BCConfig):
        from trainer.algos.bc import BC

        return BC(config, name=name)
    from trainer.algos.inspo import InSPO

    return InSPO(config, name=name)


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "BCConfig",
    "InSPOConfig",
    "config_dict",
    "make_algorithm",
    "make_config",
]
