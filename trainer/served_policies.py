"""Learned policies served outside the trainer's process, as :class:`envs.controllers.Controller` objects.

* :func:`onnx_controller` runs a model-repository folder with ONNX Runtime in-process.
* :func:`grpc_controller` asks a running ``inspo-runtime`` at ``grpc://host:port/<model>``.

``trainer.policies.load_controller`` dispatches to these. Deterministic mode (the default) plays
the graph's masked argmax, so actions equal the torch policy's argmax; stochastic mode returns the
full distribution and :meth:`Controller.act` samples it (logging the exact probability).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import numpy as np

from contract.model_card import ModelCard
from envs.controllers import Controller, masks_of


def resolve_model_dir(path: str | Path) -> Path:
    """A version folder (has policy.onnx), or a model folder (its highest numeric version)."""
    path = Path(path)
    if (path / "policy.onnx").is_file():
        return path
    versions = sorted(
        (p for p in path.glob("*") if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not versions:
        raise FileNotFoundError(f"{path} holds no policy.onnx and no numeric version folders")
    return versions[-1]


def _agent_order(env, agent_ids: list[str], where: str) -> np.ndarray:
    index = {a: i for i, a in enumerate(agent_ids)}
    missing = [a for a in env.possible_agents if a not in index]
    if missing:
        raise ValueError(f"{where} does not know agents {missing} of env {env.env_id or type(env).__name__}")
    return np.array([index[a] for a in env.possible_agents], dtype=np.int64)


def _check_site(spec: dict | None, env, where: str) -> None:
    """The model's recorded site against the env it is about to control (the runtime cannot know the
    client's site, so the client checks): refuse another structure, say another demand on stderr."""
    from envs.site import check_policy_site

    note = check_policy_site(spec, env, where)
    if note:
        print(f"{where}: {note}", file=sys.stderr)


def _one_hot(n: int, actions: np.ndarray) -> np.ndarray:
    out = np.zeros((len(actions), n), dtype=np.float64)
    out[np.arange(len(actions)), actions] = 1.0
    return out


def _normalized(probs: np.ndarray, masks: np.ndarray) -> np.ndarray:
    p = np.where(masks, np.asarray(probs, dtype=np.float64), 0.0)
    return p / p.sum(axis=1, keepdims=True)


class OnnxController(Controller):
    def __init__(self, folder: Path, env, deterministic: bool = True, threads: int = 1):
        import onnxruntime as ort

        self.folder = folder
        card_file = folder / "policy.json"
        self.card = ModelCard.from_json(
            card_file.read_text(), str(card_file)
        )  # ModelCardError is a ValueError
        if self.card.obs_dim != env.obs_dim or self.card.n_actions != env.n_actions:
            raise ValueError(
                f"{folder}: model has obs_dim={self.card.obs_dim}, n_actions={self.card.n_actions} "
                f"but the env has {env.obs_dim}, {env.n_actions}"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(folder / "policy.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.agent_index = _agent_order(env, self.card.agent_ids, str(folder))
        _check_site(self.card.site_spec, env, str(folder))
        self.deterministic = deterministic
        self.name = f"onnx:{self.card.name}"
        self.model_version = str(self.card.version)

    def distribution(self, env, obs, infos):
        agents = env.possible_agents
        x = np.stack([np.asarray(obs[a], dtype=np.float32) for a in agents])
        masks = np.stack([masks_of(env, infos)[a] for a in agents])
        probs, action = self.session.run(
            ["probs", "action"], {"obs": x, "agent": self.agent_index, "action_mask": masks}
        )
        dist = _one_hot(env.n_actions, action) if self.deterministic else _normalized(probs, masks)
        return dict(zip(agents, dist, strict=True))


class GrpcController(Controller):
    def __init__(
        self,
        url: str,
        env,
        deterministic: bool = True,
        token: str | None = None,
        timeout: float = 5.0,
        report_outcomes: bool = False,
        **tls,
    ):
        import grpc

        from runtime.client import PolicyClient, parse_url

        target, model, secure = parse_url(url)
        self.client = PolicyClient(target, token=token, tls=secure, timeout=timeout, **tls)
        self.model = model
        try:
            info = self.client.model_info(model)[0]
        except grpc.RpcError as err:  # no server there, or it does not serve this model
            self.client.close()
            raise ConnectionError(f"{url}: {err.code().name}: {err.details()}") from None
        if info.obs_dim != env.obs_dim or info.n_actions != env.n_actions:
            raise ValueError(
                f"{url}: model has obs_dim={info.obs_dim}, n_actions={info.n_actions} but the env has "
                f"{env.obs_dim}, {env.n_actions}"
            )
        _agent_order(env, list(info.agent_ids), url)
        _check_site(json.loads(info.metadata_json or "{}").get("site_spec"), env, url)
        self.deterministic = deterministic
        self.name = f"grpc:{model}"
        self.model_version = info.version
        self.episode_id, self.t = "", 0
        self.report_outcomes = report_outcomes

    def reset(self, env, seed):
        self.episode_id, self.t = f"{env.env_id or 'env'}-{seed}-{uuid.uuid4().hex[:8]}", 0

    def distribution(self, env, obs, infos):
        agents = env.possible_agents
        x = np.stack([np.asarray(obs[a], dtype=np.float32) for a in agents])
        masks = np.stack([masks_of(env, infos)[a] for a in agents])
        result = self.client.act(
            self.model,
            x,
            agents,
            masks,
            packed=True,
            deterministic=True,
            return_probs=not self.deterministic,
            episode_id=self.episode_id,
            t=self.t,
        )
        self.t += 1
        self.model_version = result.model_version
        if self.deterministic or result.probs is None:
            dist = _one_hot(env.n_actions, result.actions)
        else:
            dist = _normalized(result.probs, masks)
            # a fallback answer is deterministic: play it with probability 1
            for i in np.flatnonzero(result.fallback):
                dist[i] = _one_hot(env.n_actions, result.actions[i : i + 1])[0]
        return dict(zip(agents, dist, strict=True))

    def act(self, env, obs, infos, rng):
        """Stochastic mode: the *runtime* samples (seeded from ``rng``) and reports the probability, so
        the action it logs in its decision log is the action executed here."""
        if self.deterministic:
            return super().act(env, obs, infos, rng)
        agents = env.possible_agents
        masks = np.stack([masks_of(env, infos)[a] for a in agents])
        result = self.client.act(
            self.model,
            np.stack([np.asarray(obs[a], dtype=np.float32) for a in agents]),
            agents,
            masks,
            packed=True,
            deterministic=False,
            return_probs=True,
            seed=int(rng.integers(2**31 - 1)),
            episode_id=self.episode_id,
            t=self.t,
        )
        self.t += 1
        self.model_version = result.model_version
        dist = (
            _normalized(result.probs, masks)
            if result.probs is not None
            else _one_hot(env.n_actions, result.actions)
        )
        for i in np.flatnonzero(result.fallback):  # a fallback answer is deterministic
            dist[i] = _one_hot(env.n_actions, result.actions[i : i + 1])[0]
        self.last_distribution = dict(zip(agents, dist, strict=True))
        actions = {a: int(x) for a, x in zip(agents, result.actions, strict=True)}
        probs = {a: float(p) for a, p in zip(agents, result.probability, strict=True)}
        return actions, probs

    def observe(self, env, rewards, terminations, truncations):
        """Report the step's outcome so the runtime's decision log holds trainable rows."""
        if self.report_outcomes:
            self.client.report_outcome(
                self.model, self.episode_id, self.t - 1, rewards, terminations, truncations
            )

    def close(self) -> None:
        self.client.close()


def onnx_controller(path: str | Path, env, deterministic: bool = True, threads: int = 1) -> Controller:
    """A controller running ``<models>/<name>[/<version>]`` with ONNX Runtime in-process."""
    return OnnxController(resolve_model_dir(path), env, deterministic, threads)


def grpc_controller(
    url: str, env, deterministic: bool = True, token: str | None = None, report_outcomes: bool = False, **kw
) -> Controller:
    """A controller asking ``grpc://host:port/<model>`` (token: argument or ``INSPO_RUNTIME_TOKEN``)."""
    return GrpcController(url, env, deterministic, token, report_outcomes=report_outcomes, **kw)
