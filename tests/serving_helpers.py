"""Shared set-up for the export/runtime tests: a real exported model and a real server on loopback."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

from runtime.config import RuntimeConfig
from runtime.server import RuntimeServer

OBS_DIM, N_AGENTS, N_ACTIONS = 6, 3, 4
AGENTS = [f"tl_{i}" for i in range(N_AGENTS)]


def make_run(folder: Path, seed: int = 0, hidden=(32, 32), shared: bool = True, bounds: bool = True) -> Path:
    """A run directory holding a freshly initialised PolicyNet (until the trainer lands)."""
    import torch

    from trainer.nets import PolicyNet
    from trainer.run_dir import save_policy

    torch.manual_seed(seed)
    mean = torch.linspace(-1, 1, OBS_DIM)
    std = torch.linspace(0.5, 2, OBS_DIM)
    policy = PolicyNet(OBS_DIM, N_AGENTS, N_ACTIONS, hidden=hidden, shared=shared, obs_mean=mean, obs_std=std)
    meta = {
        "env_id": "test:grid",
        "agent_ids": AGENTS,
        "action_names": [f"phase_{i}" for i in range(N_ACTIONS)],
        "obs_low": [-5.0] * OBS_DIM if bounds else None,
        "obs_high": [5.0] * OBS_DIM if bounds else None,
        "algorithm": "inspo",
        "config": {"seed": seed},
        "dataset_fingerprint": f"sha256:test{seed}",
        "metrics": {"loss": 0.5},
    }
    save_policy(folder, policy, meta)
    return folder


def export(run: Path, repo: Path, name: str = "grid", version: int | None = None) -> Path:
    from trainer.export import export_run

    return export_run(run, repo, name, version, parity_samples=128)


def copy_version(repo: Path, name: str, src: int | str, dst: int | str, to_repo: Path | None = None) -> Path:
    """Publish a copy of version ``src`` as ``dst`` (in ``to_repo``, default the same repository) the way
    an exporter does: a hidden temp folder renamed into place."""
    source = Path(repo) / name / str(src)
    repo = Path(to_repo or repo)
    (repo / name).mkdir(parents=True, exist_ok=True)
    tmp = Path(repo) / name / f".tmp-copy-{dst}"
    shutil.copytree(source, tmp)
    meta = json.loads((tmp / "policy.json").read_text())
    meta["version"] = int(dst)
    (tmp / "policy.json").write_text(json.dumps(meta))
    final = Path(repo) / name / str(dst)
    tmp.rename(final)
    return final


def config(repo: Path, **kw) -> RuntimeConfig:
    cfg = RuntimeConfig(
        model_repository=str(repo), port=0, metrics_port=0, poll_interval_s=0.05, grace_period_s=5.0
    )
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


class ServerThread:
    """A real RuntimeServer on 127.0.0.1 in its own event loop thread."""

    def __init__(self, cfg: RuntimeConfig, metrics: bool = False):
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.server = RuntimeServer(cfg)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        if metrics:
            self.server.start_metrics_on_ephemeral_port()
        self.target = f"127.0.0.1:{self.server.port}"

    def call(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        self.call(self.server.stop(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
