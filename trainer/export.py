"""Export a run's policy to the model repository (docs/serving.md).

``<models>/<name>/<version>/policy.onnx`` (one file, dynamic batch axis, normalisation and masking
in the graph) and ``policy.json``, the model card (:class:`contract.model_card.ModelCard`). The ONNX
graph is checked against the torch policy on held-out observations before anything is written;
files go to a hidden temp folder that is renamed into place, so a polling server never sees a
half-written version and a failed parity check leaves the repository untouched.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contract.model_card import INPUT_NAMES, OUTPUT_NAMES, ModelCard, tensor_specs
from trainer.nets import ExportedPolicy, InferenceGraph, PolicyNet
from trainer.run_dir import load_policy


class ParityError(RuntimeError):
    """The exported graph disagrees with the torch policy; nothing was written."""


@dataclass
class ParityReport:
    samples: int
    max_abs_diff: float
    argmax_mismatches: int
    ties: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "max_abs_diff": self.max_abs_diff,
            "argmax_mismatches": self.argmax_mismatches,
            "ties": self.ties,
        }


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("inspo-control")
    except Exception:  # noqa: BLE001 - not installed (source checkout)
        return "0+unknown"


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version folder (1 for a new model)."""
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def held_out_inputs(meta: dict[str, Any], obs_dim: int, n_agents: int, n_actions: int, n: int, seed: int):
    """Observations to check parity on: uniform over (and 25% beyond) the training bounds when known,
    standard normal otherwise; random agents; random masks with at least one legal action."""
    rng = np.random.default_rng(seed)
    low, high = meta.get("obs_low"), meta.get("obs_high")
    if low is not None and high is not None:
        low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        span = np.maximum(high - low, 1e-3)
        obs = rng.uniform(low - 0.25 * span, high + 0.25 * span, size=(n, obs_dim))
    else:
        obs = rng.standard_normal((n, obs_dim)) * 2.0
    agent = rng.integers(0, n_agents, size=n)
    mask = rng.random((n, n_actions)) < 0.7
    mask[np.arange(n), rng.integers(0, n_actions, size=n)] = True
    mask[: n // 4] = True  # a quarter with every action legal
    return obs.astype(np.float32), agent.astype(np.int64), mask


def resolve_exporter(exporter: str) -> str:
    """``auto``: the dynamo exporter when onnxscript is installed (torch's default), else TorchScript."""
    if exporter != "auto":
        if exporter not in ("dynamo", "torchscript"):
            raise ValueError(f"exporter must be auto, dynamo or torchscript, got {exporter!r}")
        return exporter
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return "torchscript"
    return "dynamo"


def export_onnx(policy: PolicyNet, path: Path, exporter: str = "auto", opset: int = 18) -> str:
    """Write the ``(obs, agent, action_mask) -> (probs, action)`` graph as one ONNX file (no external
    data) with a dynamic batch axis; return the exporter used."""
    exporter = resolve_exporter(exporter)
    graph = InferenceGraph(policy).eval()
    example = (
        torch.zeros(2, policy.obs_dim),
        torch.zeros(2, dtype=torch.int64),
        torch.ones(2, policy.n_actions, dtype=torch.bool),
    )
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(
                graph,
                example,
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_shapes={"obs": {0: batch}, "agent": {0: batch}, "action_mask": {0: batch}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(
                graph,
                example,
                str(path),
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes={n: {0: "batch"} for n in INPUT_NAMES + OUTPUT_NAMES},
                opset_version=17,
                dynamo=False,
            )
    return exporter


def check_parity(
    policy: PolicyNet, onnx_path: Path, obs: np.ndarray, agent: np.ndarray, mask: np.ndarray, atol: float
) -> ParityReport:
    """Compare ONNX Runtime with the torch policy; raise :class:`ParityError` on any disagreement."""
    import onnxruntime as ort

    with torch.no_grad():
        t_probs, t_action = ExportedPolicy(policy).eval()(
            torch.from_numpy(obs), torch.from_numpy(agent), torch.from_numpy(mask)
        )
    t_probs, t_action = t_probs.numpy(), t_action.numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    o_probs, o_action = session.run(OUTPUT_NAMES, {"obs": obs, "agent": agent, "action_mask": mask})
    if not np.isfinite(o_probs).all():
        raise ParityError("the ONNX graph produced non-finite probabilities")
    diff = float(np.abs(o_probs - t_probs).max())
    # A near-tie between the two best actions may legitimately flip under float reordering.
    top2 = np.sort(t_probs, axis=1)[:, -2:] if t_probs.shape[1] > 1 else np.zeros((len(obs), 2))
    tie = (top2[:, 1] - top2[:, 0]) <= 2 * atol
    mismatch = (o_action != t_action) & ~tie
    report = ParityReport(len(obs), diff, int(mismatch.sum()), int(tie.sum()))
    if diff > atol or report.argmax_mismatches:
        raise ParityError(
            f"ONNX/torch parity failed on {len(obs)} held-out observations: max |Δprobs| = {diff:.3g} "
            f"(tolerance {atol:g}), argmax differs on {report.argmax_mismatches} rows; nothing was written"
        )
    illegal = o_probs[~mask].max(initial=0.0)
    if illegal > 1e-6:
        raise ParityError(f"the ONNX graph gives probability {illegal:.3g} to an illegal action")
    return report


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_policy(
    policy: PolicyNet,
    meta: dict[str, Any],
    models: str | os.PathLike,
    name: str,
    version: int | None = None,
    parity_samples: int = 512,
    atol: float = 1e-5,
    seed: int = 0,
    parity_obs: np.ndarray | None = None,
    exporter: str = "auto",
) -> Path:
    """Export ``policy`` as ``<models>/<name>/<version>`` and return that folder.

    ``meta`` carries the run directory's ``policy.json`` keys (env_id, agent_ids, obs bounds, ...).
    ``parity_obs`` optionally supplies real held-out observations (agents and masks are drawn).
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"bad model name {name!r}")
    policy = policy.eval()
    agent_ids = list(meta.get("agent_ids") or [f"agent_{i}" for i in range(policy.n_agents)])
    if len(agent_ids) != policy.n_agents:
        raise ValueError(f"policy has {policy.n_agents} agents but meta lists {len(agent_ids)} agent ids")
    model_dir = Path(models) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = next_version(model_dir) if version is None else int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    final = model_dir / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable (pick another --version)")

    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir))
    try:
        onnx_path = tmp / "policy.onnx"
        used = export_onnx(policy, onnx_path, exporter)
        obs, agent, mask = held_out_inputs(
            meta, policy.obs_dim, policy.n_agents, policy.n_actions, parity_samples, seed
        )
        if parity_obs is not None:
            parity_obs = np.asarray(parity_obs, np.float32).reshape(-1, policy.obs_dim)
            k = min(len(parity_obs), parity_samples)
            obs[:k] = parity_obs[:k]
        report = check_parity(policy, onnx_path, obs, agent, mask, atol)
        inputs, outputs = tensor_specs(policy.obs_dim, policy.n_actions)
        card = ModelCard(
            name=name,
            version=version,
            env_id=meta.get("env_id", ""),
            agent_ids=agent_ids,
            obs_dim=policy.obs_dim,
            n_actions=policy.n_actions,
            action_names=meta.get("action_names"),
            obs_low=meta.get("obs_low"),
            obs_high=meta.get("obs_high"),
            obs_reference=meta.get("obs_reference"),
            algorithm=meta.get("algorithm"),
            config=meta.get("config"),
            net=policy.config(),
            dataset_fingerprint=meta.get("dataset_fingerprint"),
            site_spec=meta.get("site_spec"),
            training_metrics=meta.get("metrics", {}),
            evaluation_metrics=meta.get("eval_metrics", {}),
            inputs=inputs,
            outputs=outputs,
            parity={**report.as_dict(), "atol": atol},
            onnx_sha256=sha256_file(onnx_path),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            package_version=package_version(),
            torch_version=torch.__version__,
            exporter=used,
        )
        card.validate(f"{name}/{version}/policy.json")  # what the runtime would reject is never published
        (tmp / "policy.json").write_text(card.to_json())
        os.chmod(tmp, 0o755)
        os.rename(tmp, final)  # atomic: a poller sees the whole version or none of it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def export_run(
    run: str | os.PathLike, models: str | os.PathLike, name: str, version: int | None = None, **kw
):
    """``inspo export``: the run directory's actor -> a model repository version."""
    policy, meta = load_policy(run)
    eval_file = Path(run) / "eval" / "summary.json"
    if "eval_metrics" not in meta and eval_file.exists():
        meta["eval_metrics"] = json.loads(eval_file.read_text())
    return export_policy(policy, meta, models, name, version, **kw)
