"""Start the real ``inspo-runtime`` as a child process and wait until it serves (demo, tools, tests).

The runtime writes ``--ready-file`` once both its gRPC and metrics ports are bound; the caller gets the
ports from it, so any free port (``--port 0``) works. Stopping sends SIGTERM: in-flight calls finish
and the decision log is flushed, as in production.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunningRuntime:
    process: subprocess.Popen
    port: int
    metrics_port: int

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful: finish in-flight calls, flush the decision log) and wait."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def free_port() -> int:
    """A TCP port free on loopback right now (the process that wants it binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_runtime(
    args: Sequence[str], work: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> RunningRuntime:
    """``inspo-runtime <args>`` with output in ``<work>/runtime.log``; returns once it serves.

    ``env`` adds ``INSPO_RUNTIME_*`` settings to this process's environment.
    """
    work = Path(work)
    ready = work / "runtime-ready.json"
    ready.unlink(missing_ok=True)
    log_file = work / "runtime.log"
    cmd = [sys.executable, "-c", "import sys; from runtime.server import main; sys.exit(main())"]
    cmd += [*map(str, args), "--ready-file", str(ready)]
    with log_file.open("w") as log:
        process = subprocess.Popen(
            cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + timeout
    info = None
    while info is None:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise RuntimeError(f"the runtime did not start; see {log_file}")
        time.sleep(0.1)
        try:  # the runtime creates the file, then writes it: an empty or partial file means "not yet"
            info = json.loads(ready.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            info = None
    return RunningRuntime(process, int(info["port"]), int(info["metrics_port"]))
