"""The run directory contract between ``inspo train`` and ``inspo export`` / ``inspo eval``.

::

    <run>/config.json                 algorithm name + full config
    <run>/metrics.jsonl               one JSON object per logged training step
    <run>/checkpoints/last.pt         full training state (networks, optimizers, counters, RNG)
    <run>/policy/policy.json          the actor's constructor args + metadata for export
    <run>/policy/policy.pt            the actor's state_dict (loaded with weights_only=True)

``policy.json`` keys: ``net`` (``PolicyNet.config()``), ``env_id``, ``agent_ids``,
``action_names`` (or null), ``obs_low`` / ``obs_high`` (per-feature bounds seen in training),
``obs_reference`` (training bins and shares for the runtime drift gauge, runtime/drift.py),
``algorithm``, ``config``, ``dataset_fingerprint``, ``metrics``, ``site_spec`` (the log's resolved site,
envs/site.py; null for logs that record none). ``config.json`` records the same ``site_spec``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainer.nets import PolicyNet


def save_policy(run: str | Path, policy: PolicyNet, meta: dict[str, Any]) -> Path:
    """Write the deployable actor of a run; ``meta`` supplies everything but ``net``."""
    folder = Path(run) / "policy"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(policy.state_dict(), folder / "policy.pt")
    (folder / "policy.json").write_text(json.dumps({"net": policy.config(), **meta}, indent=2, default=float))
    return folder


def load_policy(run: str | Path) -> tuple[PolicyNet, dict[str, Any]]:
    """Read back the actor of a run directory (no pickle: ``weights_only=True``)."""
    folder = Path(run) / "policy"
    meta_file = folder / "policy.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{run} is not a run directory: {meta_file} is missing")
    meta = json.loads(meta_file.read_text())
    net = meta["net"]
    policy = PolicyNet(
        net["obs_dim"], net["n_agents"], net["n_actions"], hidden=net["hidden"], shared=net["shared"]
    )
    policy.load_state_dict(torch.load(folder / "policy.pt", weights_only=True))
    policy.eval()
    return policy, meta
