"""Every SB3 / sb3-contrib algorithm the project uses trains a few hundred steps on VecTradingEnv: its
weights move, it sees whole 64-bar episodes whose returns reconcile with the accounts' equity, and its
actions are valid in the env."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sb3_contrib import MaskablePPO, RecurrentPPO
from stable_baselines3 import A2C, DQN, PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
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


class _EpisodeEquity(BaseCallback):
    """At each finished episode: Monitor's return (the summed rewards) next to log(final / initial equity)."""

    def __init__(self, initial_cash: float) -> None:
        super().__init__()
        self.initial_cash = initial_cash
        self.checked: list[tuple[float, float]] = []

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done:
                self.checked.append((info["episode"]["r"], math.log(info["equity"] / self.initial_cash)))
        return True


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
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    episodes = _EpisodeEquity(venv.venv.config.initial_cash)
    model.learn(total_timesteps=512, callback=episodes)
    after = model.policy.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed, f"{name}: no weight moved in 512 steps"
    # 4 accounts x 512 steps of 64-bar episodes (SAC / DQN learn from the first episodes on)
    assert len(model.ep_info_buffer) >= 4 and all(e["l"] == 64 for e in model.ep_info_buffer)
    # Monitor's episode return = the sum of log rewards = log(final / initial equity) of that account
    assert len(episodes.checked) >= 4
    for summed, log_growth in episodes.checked:
        assert summed == pytest.approx(log_growth, abs=2e-6)  # Monitor keeps float32 returns
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
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(total_timesteps=256)
    assert any(not torch.equal(v, model.policy.state_dict()[k]) for k, v in before.items())
    obs = venv.reset()
    assert set(obs) == {"features", "account"} and obs["features"].shape == (4, 8 * eth_small_frame.n_features)
    assert venv.action_space.contains(model.predict(obs, deterministic=True)[0][0])
