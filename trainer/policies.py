"""Learned policies as controllers, and one resolver from a source string to a :class:`Controller`.

``load_controller(source, env_id)`` accepts (the sources of ``inspo eval``):

* a run directory (``<run>/policy/policy.json``) -> :class:`TorchPolicyController`;
* a model directory holding ``policy.onnx`` -> ``trainer.served_policies.onnx_controller``;
* ``grpc://host:port/model`` -> ``trainer.served_policies.grpc_controller``;
* anything else: a rule-controller spec (``etd``, ``etd@eps=0.1``, ``random``) via
  :func:`envs.controllers.build_controller`.

A ``:greedy`` / ``:sample`` suffix on a run directory or ONNX model directory picks deterministic
(argmax) or stochastic actions; without one, ``default_mode`` decides (greedy unless told otherwise,
e.g. ``inspo eval --stochastic``). A suffix always wins over the default. A policy that recorded its site
(``site_spec``) runs only on an env of the same site structure (``envs/site.py``); another demand profile
is allowed and said on stderr.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from envs.base import MultiAgentEnv
from envs.controllers import Controller, build_controller, masks_of
from trainer.nets import PolicyNet


class TorchPolicyController(Controller):
    """A :class:`PolicyNet` acting for every agent: argmax (``deterministic``) or sampling its softmax."""

    def __init__(
        self, policy: PolicyNet, agent_ids: list[str], deterministic: bool = True, name: str = "policy"
    ):
        self.policy = policy.eval()
        self.agent_ids = list(agent_ids)
        self.deterministic = deterministic
        self.name = name
        self.model_version = name

    @torch.no_grad()
    def distribution(self, env: MultiAgentEnv, obs, infos) -> dict[str, np.ndarray]:
        agents = list(env.possible_agents)
        if agents != self.agent_ids:
            raise ValueError(f"policy was trained for agents {self.agent_ids}, env has {agents}")
        width = getattr(self.policy, "obs_dim", None)
        if width is not None and getattr(env, "obs_dim", width) != width:
            raise ValueError(
                f"policy {self.name} takes observations of {width} values, env {env.env_id} gives "
                f"{env.obs_dim}: it was trained on another version of the env's observation; retrain it "
                "on a log collected with this one"
            )
        masks = masks_of(env, infos)
        o = torch.as_tensor(np.stack([obs[a] for a in agents]), dtype=torch.float32)
        m = torch.as_tensor(np.stack([masks[a] for a in agents]))
        logits = self.policy(o, torch.arange(len(agents)), m)
        if self.deterministic:
            best = torch.argmax(logits, -1).numpy()
            out = {}
            for k, a in enumerate(agents):
                p = np.zeros(env.n_actions)
                p[best[k]] = 1.0
                out[a] = p
            return out
        probs = torch.softmax(logits.double(), -1).numpy()
        probs = np.where(m.numpy(), probs, 0.0)
        return {a: probs[k] / probs[k].sum() for k, a in enumerate(agents)}


def _site_checked(policy_spec: dict | None, env: MultiAgentEnv | None, who: str) -> bool:
    """Check a policy's recorded site against ``env`` (envs/site.py): a structural difference raises, another
    demand is said on stderr. False when either side records no site (then the env ids must match)."""
    import sys

    from envs.site import check_policy_site

    if not policy_spec or env is None or not getattr(env, "site_spec", None):
        return False
    note = check_policy_site(policy_spec, env, who)
    if note:
        print(f"{who}: {note}", file=sys.stderr)
    return True


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "policy" / "policy.json").exists()


MODES = ("greedy", "sample")


def split_mode(source: str) -> tuple[str, str]:
    """``"runs/a:sample"`` -> ``("runs/a", "sample")``; ``("runs/a", "")`` without a suffix.

    A path that exists as given keeps its colons (``runs/a:b`` is a folder, not a mode)."""
    if Path(source).exists():
        return source, ""
    path, sep, mode = source.rpartition(":")
    if sep and path and mode in MODES:
        return path, mode
    return source, ""


def load_controller(
    source: str, env_id: str, env: MultiAgentEnv | None = None, default_mode: str = "greedy"
) -> Controller:
    """Resolve a controller source (run dir, ONNX model dir, grpc:// URL or rule spec) for ``env_id``.

    ONNX and gRPC sources check their model against an env: ``env`` when given (the one the caller
    rolls out in, with its options; SUMO allows one live simulation per process), else ``make_env(env_id)``.
    Learned policies act greedily or sample by the source's ``:greedy`` / ``:sample`` suffix, else
    by ``default_mode``.
    """
    if default_mode not in MODES:
        raise ValueError(f"default_mode must be one of {MODES}, got {default_mode!r}")
    if source.startswith("grpc://"):
        from envs.registry import make_env
        from trainer.served_policies import grpc_controller  # the runtime engineer's module

        url, mode = split_mode(source)
        deterministic = (mode or default_mode) == "greedy"
        return grpc_controller(url, env if env is not None else make_env(env_id), deterministic)
    path_text, mode = split_mode(source)
    deterministic = (mode or default_mode) == "greedy"
    path = Path(path_text)
    if path.is_dir() and ((path / "policy.onnx").exists() or any(path.glob("*/policy.onnx"))):
        from envs.registry import make_env
        from trainer.served_policies import onnx_controller

        return onnx_controller(str(path), env if env is not None else make_env(env_id), deterministic)
    if is_run_dir(path):
        from trainer.run_dir import load_policy

        policy, meta = load_policy(path)
        if not _site_checked(meta.get("site_spec"), env, f"run {path}"):
            from envs.site import partition_env_id

            trained_on = meta.get("env_id")
            if trained_on and trained_on not in (env_id, partition_env_id(env_id)):
                raise ValueError(f"run {path} was trained on env {trained_on!r}, not {env_id!r}")
        name = f"{meta.get('algorithm', 'policy')}:{path.name}"
        return TorchPolicyController(policy, meta["agent_ids"], deterministic=deterministic, name=name)
    if path.exists():
        raise FileNotFoundError(
            f"{path} is neither a run directory (policy/policy.json) nor an ONNX model dir"
        )
    if "/" in path_text or mode:  # rule specs have neither: this was meant as a directory
        raise FileNotFoundError(f"{path_text}: no such run directory or ONNX model dir")
    return build_controller(env_id, source)
