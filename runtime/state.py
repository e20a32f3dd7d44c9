"""The deployment state that must survive a restart, in one JSON file written atomically.

What it holds: per model, the version served and the versions rolled back from (polling never serves
them again); per route, the deployment set by the admin RPCs (incumbent, shadow, canary candidate and
share). At start-up the runtime serves exactly that again instead of the newest version on disk, so a
RollBack or ``auto_serve = false`` holds across restarts (docs/deployment.md, "Durable state").
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("inspo.runtime.state")
SCHEMA = 1


class StateFile:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any]:
        """The saved state, ``{}`` when there is none yet; a file that cannot be read is a clear error."""
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"state_file {self.path}: cannot read it ({err}); fix or remove it") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise ValueError(f"state_file {self.path}: not a runtime state file of schema {SCHEMA}")
        for key in ("models", "deployments"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"state_file {self.path}: '{key}' must be an object")
        return data

    def save(self, models: dict[str, Any], deployments: dict[str, Any]) -> None:
        """Write atomically (temp file, fsync, rename): a crash leaves the old state or the new one."""
        text = json.dumps({"schema": SCHEMA, "models": models, "deployments": deployments}, indent=1)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
