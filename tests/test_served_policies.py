"""ONNX and gRPC controllers play exactly the torch policy's argmax."""

import numpy as np
import torch
from serving_helpers import AGENTS, N_ACTIONS, OBS_DIM, ServerThread, config, export, make_run

from envs.base import MultiAgentEnv
from trainer.nets import ExportedPolicy
from trainer.run_dir import load_policy
from trainer.served_policies import grpc_controller, onnx_controller


class RandomObsEnv(MultiAgentEnv):
    """Seeded random observations and masks: enough to drive a controller."""

    env_id = "test:random"
    possible_agents = AGENTS
    obs_dim, n_actions, state_dim = OBS_DIM, N_ACTIONS, 1

    def reset(self, seed=None, options=None):
        self.rng = np.random.default_rng(seed)
        return self._obs()

    def _obs(self):
        obs = {a: (self.rng.standard_normal(OBS_DIM) * 2).astype(np.float32) for a in AGENTS}
        masks = {a: self.rng.random(N_ACTIONS) < 0.6 for a in AGENTS}
        for m in masks.values():
            m[self.rng.integers(N_ACTIONS)] = True
        return obs, {a: {"action_mask": masks[a]} for a in AGENTS}

    def step(self, actions):
        obs, infos = self._obs()
        zeros = dict.fromkeys(AGENTS, 0.0)
        return obs, zeros, dict.fromkeys(AGENTS, False), dict.fromkeys(AGENTS, False), infos

    def state(self):
        return np.zeros(1, np.float32)


def test_onnx_and_grpc_controllers_equal_torch_argmax(tmp_path):
    run = make_run(tmp_path / "run", seed=11)
    export(run, tmp_path / "models")
    policy, _ = load_policy(run)
    env = RandomObsEnv()
    with ServerThread(config(tmp_path / "models")) as s:
        controllers = [
            onnx_controller(tmp_path / "models" / "grid", env),
            grpc_controller(f"grpc://{s.target}/grid", env),
            onnx_controller(tmp_path / "models" / "grid", env, deterministic=False),
            grpc_controller(f"grpc://{s.target}/grid", env, deterministic=False),
        ]
        rng = np.random.default_rng(0)
        obs, infos = env.reset(seed=3)
        for c in controllers:
            c.reset(env, 3)
        for _ in range(20):
            x = torch.from_numpy(np.stack([obs[a] for a in AGENTS]))
            m = torch.from_numpy(np.stack([infos[a]["action_mask"] for a in AGENTS]))
            with torch.no_grad():
                probs, action = ExportedPolicy(policy)(x, torch.arange(len(AGENTS)), m)
            for c in controllers[:2]:
                actions, p = c.act(env, obs, infos, rng)
                assert [actions[a] for a in AGENTS] == action.tolist() and set(p.values()) == {1.0}
            for c in controllers[2:]:
                dist = c.distribution(env, obs, infos)
                got = np.stack([dist[a] for a in AGENTS])
                assert np.abs(got - probs.numpy()).max() < 1e-5 and (got[~m.numpy()] == 0).all()
            obs, _, _, _, infos = env.step({})
        assert controllers[1].model_version == "1"
