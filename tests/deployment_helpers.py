"""Shared set-up for the shadow / canary / guardrail tests: real bridge policies exported to a model
repository, a real server on loopback, the closed-loop evaluator, and a Prometheus scrape."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import numpy as np

from envs.games.bridge import BridgeEnv
from runtime.client import PolicyClient

BRIDGE_AGENTS = ["agent_0", "agent_1"]
ADMIN, POLICY = "admin-token-test", "policy-token-test"


def export_bridge(repo: Path, name: str, seed: int, version: int | None = None) -> Path:
    """A freshly initialised bridge policy (its own seed: different seeds disagree) -> ``repo/name/version``."""
    import torch

    from trainer.export import export_policy
    from trainer.nets import PolicyNet

    torch.manual_seed(seed)
    policy = PolicyNet(8, 2, 5, hidden=(16,), obs_mean=torch.full((8,), 2.0), obs_std=torch.full((8,), 1.5))
    meta = {
        "env_id": "bridge",
        "agent_ids": BRIDGE_AGENTS,
        "action_names": ["stay", "up", "down", "right", "left"],
        "obs_low": [0.0] * 8,
        "obs_high": [5.0] * 8,
        "algorithm": "test",
        "config": {"seed": seed},
        "dataset_fingerprint": f"sha256:test{seed}",
        "metrics": {},
    }
    return export_policy(policy, meta, repo, name, version, parity_samples=64)


class ReportingEnv:
    """The bridge env as a site gateway sees it: after each step it reports the agents' rewards and a
    per-agent KPI (distance to goal) to the runtime for the controller's ``(episode_id, t)``, and it
    records every observation and mask the controller saw."""

    def __init__(self, client: PolicyClient, model: str, controller=None):
        self.env = BridgeEnv()
        self.client, self.model, self.controller = client, model, controller
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []  # (obs [N, O], mask [N, A]) per step
        self.kpis: list[dict[str, float]] = []
        self.actions: list[list[int]] = []  # the executed actions per step, in BRIDGE_AGENTS order
        self._last = None

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, seed=None, options=None):
        obs, infos = self.env.reset(seed=seed, options=options)
        self._last = (obs, infos)
        return obs, infos

    def step(self, actions):
        obs, infos = self._last
        self.seen.append(
            (
                np.stack([obs[a] for a in BRIDGE_AGENTS]),
                np.stack([np.asarray(infos[a]["action_mask"], bool) for a in BRIDGE_AGENTS]),
            )
        )
        self.actions.append([int(actions[a]) for a in BRIDGE_AGENTS])
        out = self.env.step(actions)
        next_obs, rewards, terms, truncs, next_infos = out
        self._last = (next_obs, next_infos)
        state = self.env.state()
        distance = {
            "agent_0": float(np.hypot(state[0] - state[2], state[1] - state[3])),
            "agent_1": float(np.hypot(state[4] - state[6], state[5] - state[7])),
        }
        self.kpis.append(distance)
        if self.controller is not None:
            self.client.report_outcome(
                self.model,
                self.controller.episode_id,
                self.controller.t - 1,
                {a: rewards.get(a, 0.0) for a in BRIDGE_AGENTS},
                agent_kpis={a: {"distance_to_goal": distance[a]} for a in BRIDGE_AGENTS},
            )
        return out


def local_argmax(model_dir: Path, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What a model version plays (masked argmax), computed in-process with ONNX Runtime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(Path(model_dir) / "policy.onnx"), providers=["CPUExecutionProvider"])
    _, action = session.run(
        ["probs", "action"],
        {"obs": obs.astype(np.float32), "agent": np.arange(len(obs), dtype=np.int64), "action_mask": mask},
    )
    return action


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if "{" in line else {}
        if all(found.get(k) == str(v) for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total
