"""One model version in memory: its ONNX Runtime session, its metadata and its fallback rule.

Loading validates everything a request will rely on, off the serving path: ``policy.json``
fields, the ONNX file's sha256, the graph's input/output signature against the metadata, and a
smoke inference. A version that fails any check raises :class:`ModelLoadError` and is never served.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from contract.model_card import INPUTS as CARD_INPUTS
from contract.model_card import OUTPUTS as CARD_OUTPUTS
from contract.model_card import ModelCard, ModelCardError
from runtime.config import FallbackConfig, ModelConfig
from runtime.drift import DriftReference

# The graph's tensor name -> ONNX Runtime type, from the model card's signature.
INPUTS = {name: ort_type for name, (_, ort_type) in CARD_INPUTS.items()}
OUTPUTS = {name: ort_type for name, (_, ort_type) in CARD_OUTPUTS.items()}


class ModelLoadError(RuntimeError):
    """A model version that must not be served (the message says why)."""


def session_options(intra: int, inter: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = inter
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


@dataclass
class ServingCache:
    """Memos the service fills while serving one version; they never change what it answers."""

    all_legal: dict[int, np.ndarray] = field(default_factory=dict)  # an all-legal mask per batch size
    # agent lists of packed requests already resolved to indices (a site sends the same list each step)
    packed_agents: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    action_table: Any = None  # runtime.metrics.ActionTable, bound on the first request


@dataclass
class LoadedModel:
    """A validated model version. Its card, session and fallback never change after loading (a new
    version is a new object); ``cache`` holds the service's memos. ``infer`` is thread-safe."""

    name: str
    version: str
    card: ModelCard
    session: ort.InferenceSession
    fallback: FallbackConfig
    path: Path
    drift_reference: DriftReference | None = None  # the training distribution (the card's obs_reference)
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)
    cache: ServingCache = field(default_factory=ServingCache)

    def __post_init__(self) -> None:
        self.agent_ids: list[str] = list(self.card.agent_ids)
        self.agent_index: dict[str, int] = {a: i for i, a in enumerate(self.agent_ids)}
        self.obs_dim = self.card.obs_dim
        self.n_actions = self.card.n_actions
        low, high = self.card.obs_low, self.card.obs_high
        self.has_bounds = low is not None and high is not None
        if self.has_bounds:
            low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
            slack = self.fallback.bounds_tolerance * np.maximum(high - low, 1e-6)
            self.obs_low, self.obs_high = low - slack, high + slack
        self._run = fast_run(self.session)
        self._outputs = ["probs", "action"]
        self.fallback_actions = self._fallback_table()

    @property
    def signature(self) -> tuple:
        """What clients rely on: a new version with another signature is never served automatically."""
        return (
            self.obs_dim,
            self.n_actions,
            tuple(self.agent_ids),
            tuple(self.card.action_names or ()),
        )

    # -- inference -----------------------------------------------------------------------------
    def infer(self, obs: np.ndarray, agent: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``obs [B,O] float32``, ``agent [B] int64``, ``mask [B,A] bool`` -> ``(probs [B,A], action [B])``."""
        return self._run(self._outputs, {"obs": obs, "agent": agent, "action_mask": mask})

    def all_legal(self, n: int) -> np.ndarray:
        mask = self.cache.all_legal.get(n)
        if mask is None:
            mask = np.ones((n, self.n_actions), dtype=bool)
            if n <= 4096:
                self.cache.all_legal[n] = mask
        return mask

    # -- fallback ------------------------------------------------------------------------------
    def _fallback_table(self) -> np.ndarray:
        rule = self.fallback
        table = np.full(len(self.agent_ids), rule.action, dtype=np.int64)
        if rule.rule == "per_agent":
            for agent, action in rule.actions.items():
                if agent in self.agent_index:
                    table[self.agent_index[agent]] = int(action)
        return table

    def fallback_action(
        self, agent: int, obs: np.ndarray | None, mask: np.ndarray | None, current: int | None
    ) -> int:
        """The configured fallback for one agent, made legal under ``mask``."""
        rule = self.fallback
        action = int(self.fallback_actions[agent])
        if rule.rule == "obs_index" and obs is not None and 0 <= rule.obs_index < len(obs):
            value = obs[rule.obs_index]
            if np.isfinite(value):
                action = int(round(float(value)))
        elif rule.rule == "current" and current is not None:
            action = int(current)
        if not 0 <= action < self.n_actions:
            action = (
                int(self.fallback_actions[agent]) if 0 <= self.fallback_actions[agent] < self.n_actions else 0
            )
        if mask is not None and not mask[action]:
            action = int(np.flatnonzero(mask)[0])
        return action

    # -- description ---------------------------------------------------------------------------
    def info_dict(self) -> dict[str, Any]:
        card = self.card
        return {
            "name": self.name,
            "version": self.version,
            "env_id": card.env_id or "",
            "agent_ids": self.agent_ids,
            "obs_dim": self.obs_dim,
            "n_actions": self.n_actions,
            "action_names": card.action_names or [],
            "algorithm": card.algorithm or "",
            "onnx_sha256": card.onnx_sha256,
            "created_at": card.created_at or "",
            "metadata_json": json.dumps(card.to_dict(), sort_keys=True),
            "loaded_at_unix": self.loaded_at,
        }


def signature_change(served: LoadedModel, new: LoadedModel) -> str:
    """Empty when ``new`` answers the same requests as ``served``, else what changed (for operators)."""
    if served.signature == new.signature:
        return ""
    changes = []
    for key in ("obs_dim", "n_actions"):
        a, b = getattr(served, key), getattr(new, key)
        if a != b:
            changes.append(f"{key} {a} -> {b}")
    if served.agent_ids != new.agent_ids:
        changes.append(f"agent_ids {len(served.agent_ids)} -> {len(new.agent_ids)} agents")
        if len(served.agent_ids) == len(new.agent_ids):
            changes[-1] = "agent_ids changed"
    if served.signature[3] != new.signature[3]:
        changes.append("action_names changed")
    return "signature changed (" + ", ".join(changes) + ")"


def fast_run(session: ort.InferenceSession):
    """``run(output_names, feeds)`` without the Python wrapper's per-call input checks.

    ``InferenceSession.run`` re-validates the feed names and wraps errors on every call; the runtime has
    already checked names, dtypes and shapes when decoding the request, so it calls the bound native
    session that ``run`` itself delegates to (``bench/serving.py``, batch 1: 0.77-0.96x the time of
    ``session.run`` over three runs). Falls back to the public method where that attribute does not exist.
    """
    native = getattr(session, "_sess", None)
    if native is None or not callable(getattr(native, "run", None)):
        return session.run
    return lambda outputs, feeds: native.run(outputs, feeds, None)


def _check_signature(session: ort.InferenceSession, obs_dim: int, n_actions: int) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    for name, kind in INPUTS.items():
        if name not in inputs:
            raise ModelLoadError(f"ONNX input {name!r} is missing (inputs: {sorted(inputs)})")
        if inputs[name].type != kind:
            raise ModelLoadError(f"ONNX input {name!r} has type {inputs[name].type}, expected {kind}")
    for name, kind in OUTPUTS.items():
        if name not in outputs:
            raise ModelLoadError(f"ONNX output {name!r} is missing (outputs: {sorted(outputs)})")
        if outputs[name].type != kind:
            raise ModelLoadError(f"ONNX output {name!r} has type {outputs[name].type}, expected {kind}")
    if set(inputs) != set(INPUTS):
        raise ModelLoadError(f"ONNX graph has unexpected inputs {sorted(set(inputs) - set(INPUTS))}")
    expect = {"obs": obs_dim, "action_mask": n_actions}
    for name, width in expect.items():
        shape = inputs[name].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != width):
            raise ModelLoadError(f"ONNX input {name!r} has shape {shape}, expected [batch, {width}]")
        if isinstance(shape[0], int) and shape[0] != -1:
            raise ModelLoadError(
                f"ONNX input {name!r} has a fixed batch size {shape[0]}; export a dynamic batch axis"
            )


def _smoke(model: LoadedModel) -> None:
    rng = np.random.default_rng(0)
    n = max(2, min(8, len(model.agent_ids)))
    obs = rng.standard_normal((n, model.obs_dim)).astype(np.float32)
    agent = (np.arange(n) % len(model.agent_ids)).astype(np.int64)
    mask = np.ones((n, model.n_actions), dtype=bool)
    mask[0, 0] = model.n_actions == 1
    probs, action = model.infer(obs, agent, mask)
    if probs.shape != (n, model.n_actions) or action.shape != (n,):
        raise ModelLoadError(f"smoke inference returned shapes {probs.shape}, {action.shape}")
    if not np.isfinite(probs).all() or np.abs(probs.sum(axis=1) - 1).max() > 1e-3:
        raise ModelLoadError("smoke inference returned probabilities that are not finite or do not sum to 1")
    if not ((action >= 0) & (action < model.n_actions)).all() or not mask[np.arange(n), action].all():
        raise ModelLoadError("smoke inference returned an illegal action")


def _check_config_names(config: ModelConfig, agent_ids: list[str], n_actions: int, folder: Path) -> None:
    """The model's guardrail and canary settings must name this version's agents and actions: a
    misspelt agent would otherwise silently constrain nothing (the version is rejected, naming the key)."""
    known = set(agent_ids)
    shown = ", ".join(agent_ids[:4]) + (", ..." if len(agent_ids) > 4 else "")
    for agent, actions in config.guardrails.forbidden.items():
        if agent != "*" and agent not in known:
            raise ModelLoadError(
                f"{folder}: guardrails.forbidden names agent {agent!r}, not one of ({shown})"
            )
        bad = [a for a in actions if not 0 <= int(a) < n_actions]
        if bad:
            raise ModelLoadError(
                f"{folder}: guardrails.forbidden.{agent} names actions {bad}, outside 0..{n_actions - 1}"
            )
    unknown = [a for a in config.deployment.canary_agents if a not in known]
    if unknown:
        raise ModelLoadError(f"{folder}: deployment.canary_agents names {unknown}, not agents of ({shown})")


def load_version(folder: Path, name: str, config: ModelConfig) -> LoadedModel:
    """Load and validate ``<repo>/<name>/<version>``; raise :class:`ModelLoadError` if it must not serve."""
    started = time.perf_counter()
    folder = Path(folder)
    version = folder.name
    meta_file, onnx_file = folder / "policy.json", folder / "policy.onnx"
    if not meta_file.is_file() or not onnx_file.is_file():
        raise ModelLoadError(f"{folder}: policy.json and policy.onnx are both required")
    try:
        card = ModelCard.from_json(meta_file.read_text(), str(meta_file))
    except UnicodeDecodeError as err:
        raise ModelLoadError(f"{meta_file}: not valid JSON ({err})") from None
    except ModelCardError as err:
        raise ModelLoadError(str(err)) from None
    if card.name != name or str(card.version) != version:
        raise ModelLoadError(f"{meta_file}: says {card.name}/{card.version} but lives in {name}/{version}")
    _check_config_names(config, card.agent_ids, card.n_actions, folder)
    obs_dim, n_actions = card.obs_dim, card.n_actions
    try:
        drift_reference = DriftReference.from_meta(card.to_dict(), obs_dim)
    except ValueError as err:
        raise ModelLoadError(f"{meta_file}: {err}") from None
    blob = onnx_file.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card.onnx_sha256:
        raise ModelLoadError(
            f"{onnx_file}: sha256 {digest[:12]}… does not match policy.json ({card.onnx_sha256[:12]}…)"
        )
    try:
        session = ort.InferenceSession(
            blob,
            sess_options=session_options(config.intra_op_threads, config.inter_op_threads),
            providers=["CPUExecutionProvider"],
        )
    except Exception as err:  # noqa: BLE001 - ORT raises several types for a bad graph
        raise ModelLoadError(f"{onnx_file}: ONNX Runtime cannot load it ({err})") from None
    _check_signature(session, obs_dim, n_actions)
    model = LoadedModel(name, version, card, session, config.fallback, folder, drift_reference)
    try:
        _smoke(model)
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"{folder}: smoke inference failed ({err})") from None
    model.load_seconds = time.perf_counter() - started
    return model
