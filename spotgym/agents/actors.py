"""Actors (``spotgym.envs.Actor``: ``act(obs, info, env) -> action``) for a trained model and for target rules.

The same actor decides in a backtest (``spotgym.backtest.run_policy``) and, around a live feed, in
live trading.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spotgym.agents.ensemble import cash_action
from spotgym.envs import Actor, EnvConfig

__all__ = ["cash_actor", "model_actor", "target_actor"]


def model_actor(model: Any) -> Actor:
    """An ``Actor`` for a trained SB3 / sb3-contrib model: deterministic actions, recurrent state and
    action masks handled."""
    state, episode_start = None, np.ones((1,), dtype=bool)
    needs_masks = type(model).__name__ == "MaskablePPO"

    def act(obs, info, env):
        nonlocal state, episode_start
        kwargs = {"action_masks": env.action_masks()} if needs_masks else {}
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True, **kwargs)
        episode_start = np.zeros((1,), dtype=bool)
        return action

    return act


def target_actor(targets: np.ndarray) -> Actor:
    """An ``Actor`` that holds the target exposure ``targets[row]`` (a continuous-action env)."""
    targets = np.asarray(targets, dtype=np.float32)

    def act(obs, info, env):
        return np.array([targets[info["row"]]], dtype=np.float32)

    return act


def cash_actor(config: EnvConfig) -> Actor:
    """An ``Actor`` that goes to cash and stays there: what a run holds when no checkpoint beat cash on validation."""
    action = cash_action(config)

    def act(obs, info, env):
        return action

    return act
