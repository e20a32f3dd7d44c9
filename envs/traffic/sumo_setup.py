"""Import SUMO, libsumo and sumo-rl the one way that works with the versions we install.

Three traps (docs/traffic.md, "Pitfalls handled in envs/traffic/") are handled here, once, before anything imports
``traci`` or ``sumo_rl``:

* ``SUMO_HOME`` must be set before ``import sumo_rl``; the ``eclipse-sumo`` wheel knows its path.
* ``LIBSUMO_AS_TRACI`` is read when ``traci`` is first imported; without it sumo-rl silently uses
  the socket TraCI, 10-70x slower. We set it to ``quiet``, which also silences libsumo's
  "pyarrow version might be incompatible" banner (libsumo 1.28 is built against libarrow 23;
  Parquet writing with pyarrow 26 in the same process is covered by ``tests/test_traffic.py``).
  ``libsumo`` must never be imported before ``traci``: its ``__init__`` imports ``traci``, whose
  star-import then sees a half-initialised libsumo and lacks ``traci.start``.
* sumo-rl 1.4.5 imports ``pettingzoo.utils.agent_selector``, a class pettingzoo >= 1.25 renamed to
  ``AgentSelector`` (sumo-rl #228); we alias it back before importing sumo-rl.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType


class SumoUnavailableError(ImportError):
    """SUMO, libsumo or sumo-rl is missing: install the ``traffic`` extra."""


def _prepare_environment() -> None:
    if "traci" in sys.modules and not os.environ.get("LIBSUMO_AS_TRACI"):
        raise SumoUnavailableError(
            "traci was imported before envs.traffic set LIBSUMO_AS_TRACI; it would run SUMO over a socket "
            "(10-70x slower). Import envs.traffic (or set LIBSUMO_AS_TRACI=quiet) before importing traci."
        )
    os.environ.setdefault("LIBSUMO_AS_TRACI", "quiet")
    if not os.environ.get("SUMO_HOME"):
        try:
            import sumo  # the eclipse-sumo wheel; its __init__ sets SUMO_HOME when unset
        except ImportError as err:
            raise SumoUnavailableError(
                "SUMO is not installed: pip install 'inspo-control[traffic]' (eclipse-sumo, libsumo, sumo-rl)"
            ) from err
        os.environ.setdefault("SUMO_HOME", os.path.dirname(sumo.__file__))


def _patch_pettingzoo() -> None:
    import pettingzoo.utils as pz_utils

    if not hasattr(pz_utils, "agent_selector") and hasattr(pz_utils, "AgentSelector"):
        pz_utils.agent_selector = pz_utils.AgentSelector  # type: ignore[attr-defined]


def import_sumo() -> tuple[ModuleType, ModuleType]:
    """Return ``(traci, sumo_rl)`` with ``traci`` backed by libsumo; raises if libsumo is missing."""
    _prepare_environment()
    _patch_pettingzoo()
    try:
        import sumo_rl
        import traci
    except ImportError as err:
        raise SumoUnavailableError(
            f"cannot import SUMO's Python packages ({err}): pip install 'inspo-control[traffic]'"
        ) from err
    if not traci.isLibsumo():
        raise SumoUnavailableError(
            "traci is not backed by libsumo (is the libsumo wheel installed, and was traci imported "
            "before LIBSUMO_AS_TRACI was set?); refusing to run 10-70x slower over a socket"
        )
    return traci, sumo_rl


def sumo_binary() -> str:
    import sumolib

    return sumolib.checkBinary("sumo")
