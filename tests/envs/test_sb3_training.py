"""Every SB3 / sb3-contrib algorithm the project uses trains a few hundred steps on VecTradingEnv."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.vec_env import VecMonitor

from spotgym.envs import EnvConfig, VecTradingEnv


def small():
    return {"net_arch": [32]}  # fresh per model: SB3 writes into policy_kwargs


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _venv(frame, n=4, **cfg):
    cfg = {"window": 8, "episode_length": 64, **cfg}
    return VecMonitor(VecTradingEnv(frame, n, EnvConfig(**cfg)))


CASES = {
    "PPO": (PPO, dict(action="continuous"), dict(n_steps=64, batch_size=64, n_epochs=2, policy_kwargs=small())),
    "A2C": (A2C, dict(action="levels"), dict(n_steps=16, policy_kwargs=small())),
    "DQN": (DQN, dict(action="buy_sell_hold"), dict(learning_starts=64, buffer_size=2_000, batch_size=32,
                                                   train_freq=4, target_update_interval=100, policy_kwargs=small())),
    "SAC": (SAC, dict(action="continuous"), dict(learning_starts=64, buffer_size=2_000, batch_size=32,
                                                train_freq=4, policy_kwargs=small())),
    "RecurrentPPO": (RecurrentPPO, dict(action="levels"), dict(n_steps=32, batch_size=64, n_epochs=1,
                                                               policy_kwargs=dict(net_arch=[16], lstm_hidden_size=16))),
    "MaskablePPO": (MaskablePPO, dict(action="buy_sell_hold", initial_cash=200.0),
                    dict(n_steps=64, batch_size=64, n_epochs=2, policy_kwargs=small())),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_algorithm_trains_on_vec_env(eth_small_frame, name):
    algo, env_cfg, kwargs = CASES[name]
    kwargs = copy.deepcopy(kwargs)
    policy = "MlpLstmPolicy" if algo is RecurrentPPO else "MlpPolicy"
    venv = _venv(eth_small_frame, **env_cfg)
    model = algo(policy, venv, seed=0, device="cpu", verbose=0, **kwargs)
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    obs = venv.reset()
    if algo is MaskablePPO:
        action, _ = model.predict(obs, action_masks=np.stack(venv.env_method("action_masks")), deterministic=True)
    else:
        action, _ = model.predict(obs, deterministic=True)
    assert venv.action_space.contains(np.asarray(action)[0])


def test_dict_observations_with_multi_input_policy(eth_small_frame):
    venv = _venv(eth_small_frame, obs_mode="dict", action="levels")
    model = PPO("MultiInputPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=small())
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
