"""The policy to evaluate, as probabilities on the log's own steps.

* a run directory (``<run>/policy/policy.json``) or an ONNX model directory: the per-agent distribution
  at every logged (observation, mask), batched; greedy (argmax, what the runtime serves with
  ``deterministic``) by default, the softmax with a ``:sample`` suffix;
* a rule spec ``<rule>@eps=<e>`` (or ``<rule>``) for a log collected by the same rule with some epsilon:
  rule controllers may read simulator state a log does not hold, so their action is *identified* from
  the logged behaviour probability (the greedy action has probability ``1 - eps_b + eps_b / |legal|``).
  That gives the target's probability of each logged action (enough for importance sampling) but not
  its full distribution, so fitted-Q evaluation is not available for rule targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.logs import OfflineData


@dataclass
class TargetPolicy:
    name: str
    prob: np.ndarray  # [E, T, N] probability of the logged action under the target
    dist: np.ndarray | None  # [E, T, N, A] full distribution (None for rule targets)
    deterministic: bool


def _split_mode(source: str) -> tuple[str, str]:
    if Path(source).exists():
        return source, ""
    path, _, mode = source.rpartition(":")
    if mode in ("greedy", "sample") and path:
        return path, mode
    return source, ""


def _finish(name: str, dist: np.ndarray, data: OfflineData, sample: bool) -> TargetPolicy:
    dist = np.where(data.masks, dist, 0.0)
    dist = dist / np.maximum(dist.sum(axis=-1, keepdims=True), 1e-30)
    if not sample:
        greedy = np.argmax(dist, axis=-1)
        dist = np.zeros_like(dist)
        np.put_along_axis(dist, greedy[..., None], 1.0, axis=-1)
    pad = ~data.filled
    dist[pad] = 1.0 / dist.shape[-1]
    prob = np.take_along_axis(dist, data.actions[..., None], axis=-1)[..., 0]
    return TargetPolicy(name, prob, dist, not sample)


def _flat(data: OfflineData):
    E, T, N, O = data.obs.shape  # noqa: E741
    obs = data.obs.reshape(-1, O).astype(np.float32)
    agent = np.broadcast_to(np.arange(N), (E, T, N)).reshape(-1).astype(np.int64)
    mask = data.masks.reshape(-1, data.n_actions).copy()
    mask[~mask.any(axis=1), 0] = True  # padding rows
    return obs, agent, mask


def _agent_index(model_agents: list[str], data: OfflineData, where: str) -> np.ndarray:
    index = {a: i for i, a in enumerate(model_agents)}
    missing = [a for a in data.agent_ids if a not in index]
    if missing:
        raise ValueError(f"{where} does not know the log's agents {missing}")
    return np.array([index[a] for a in data.agent_ids], dtype=np.int64)


def _check_site(spec: dict | None, data: OfflineData, where: str) -> None:
    """A policy's recorded site against the log's (envs/site.py): another structure is refused."""
    import sys

    from envs.site import SiteMismatchError, compare

    if spec and data.site_spec:
        try:
            note = compare(spec, data.site_spec, right="log")
        except SiteMismatchError as err:
            raise SiteMismatchError(f"{where}: {err}") from None
        if note:
            print(f"{where}: {note}", file=sys.stderr)


def from_run(path: Path, data: OfflineData, sample: bool) -> TargetPolicy:
    import torch

    from trainer.run_dir import load_policy

    policy, meta = load_policy(path)
    index = _agent_index(list(meta["agent_ids"]), data, str(path))
    _check_site(meta.get("site_spec"), data, str(path))
    obs, agent, mask = _flat(data)
    out = []
    with torch.no_grad():
        for i in range(0, len(obs), 65536):
            logits = policy(
                torch.as_tensor(obs[i : i + 65536]),
                torch.as_tensor(index[agent[i : i + 65536]]),
                torch.as_tensor(mask[i : i + 65536]),
            )
            out.append(torch.softmax(logits.double(), -1).numpy())
    dist = np.concatenate(out).reshape(*data.actions.shape, data.n_actions)
    return _finish(f"{meta.get('algorithm', 'policy')}:{path.name}", dist, data, sample)


def from_onnx(path: Path, data: OfflineData, sample: bool) -> TargetPolicy:
    import json

    import onnxruntime as ort

    from trainer.served_policies import resolve_model_dir

    folder = resolve_model_dir(path)
    meta = json.loads((folder / "policy.json").read_text())
    index = _agent_index(list(meta["agent_ids"]), data, str(folder))
    _check_site(meta.get("site_spec"), data, str(folder))
    session = ort.InferenceSession(str(folder / "policy.onnx"), providers=["CPUExecutionProvider"])
    obs, agent, mask = _flat(data)
    out = []
    for i in range(0, len(obs), 65536):
        probs, _ = session.run(
            ["probs", "action"],
            {
                "obs": obs[i : i + 65536],
                "agent": index[agent[i : i + 65536]],
                "action_mask": mask[i : i + 65536],
            },
        )
        out.append(probs.astype(np.float64))
    dist = np.concatenate(out).reshape(*data.actions.shape, data.n_actions)
    return _finish(f"onnx:{meta['name']}/{meta['version']}", dist, data, sample)


def from_rule(spec: str, data: OfflineData, controllers: np.ndarray | None) -> TargetPolicy:
    """A rule target ``<rule>[@eps=e]`` identified from a log of the same rule with a known epsilon."""
    from envs.controllers import parse_component

    name, options = parse_component(spec)
    if "temp" in options or "," in spec:
        raise ValueError(
            f"{spec!r}: only '<rule>' or '<rule>@eps=<e>' rule targets can be evaluated from a log"
        )
    eps_t = options.get("eps", 0.0)
    if controllers is None:
        raise ValueError("the log has no controller column: a rule target cannot be identified")
    eps_b = np.zeros(len(controllers))
    for e, c in enumerate(controllers):
        base, opts = parse_component(str(c))
        if base != name or "temp" in opts or "," in str(c):
            raise ValueError(
                f"episode {data.episode_ids[e]!r} was logged by {c!r}: a rule target {spec!r} needs a log of "
                f"'{name}' or '{name}@eps=<e>' (the logged probability identifies the rule's action)"
            )
        eps_b[e] = opts.get("eps", 0.0)
    legal = data.masks.sum(axis=-1).astype(np.float64)
    legal = np.maximum(legal, 1)
    greedy_p = 1 - eps_b[:, None, None] + eps_b[:, None, None] / legal
    is_greedy = np.abs(data.behavior_prob - greedy_p) < 1e-4
    prob = np.where(is_greedy, 1 - eps_t + eps_t / legal, eps_t / legal)
    prob = np.where(data.filled[..., None], prob, 1.0)
    return TargetPolicy(spec, prob, None, eps_t == 0)


def load_target(source: str, data: OfflineData, controllers: np.ndarray | None = None) -> TargetPolicy:
    path_text, mode = _split_mode(source)
    path = Path(path_text)
    sample = mode == "sample"
    if path.is_dir() and ((path / "policy.onnx").exists() or any(path.glob("*/policy.onnx"))):
        return from_onnx(path, data, sample)
    if (path / "policy" / "policy.json").exists():
        return from_run(path, data, sample)
    if path.exists():
        raise FileNotFoundError(
            f"{path} is neither a run directory (policy/policy.json) nor an ONNX model dir"
        )
    return from_rule(source, data, controllers)
