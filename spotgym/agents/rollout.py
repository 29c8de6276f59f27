"""One sequential pass of a policy over a row range of the env: equity curve, fills, exposure.

The same function evaluates the agent during training (validation split), backtests it, and
runs the baselines, so every number in a report comes from the very same env semantics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest import TRADE_COLUMNS, compute_metrics
from spotgym.envs import EnvConfig, TradingEnv
from spotgym.features import FeatureFrame

# act(obs, info, env) -> action
Actor = Callable[[Any, dict[str, Any], TradingEnv], Any]


@dataclass
class Rollout:
    """The result of one pass: ``equity`` (first point = initial equity before the first decision),
    ``trades`` (one row per fill), ``exposure`` per point, and the total reward."""

    equity: pd.Series
    trades: pd.DataFrame
    exposure: pd.Series
    total_reward: float
    terminated: bool

    def metrics(self, timeframe: str | None = None) -> dict[str, Any]:
        from spotgym.backtest import bars_per_year

        ppy = bars_per_year(timeframe) if timeframe else None
        return compute_metrics(self.equity, self.trades, self.exposure, periods_per_year=ppy)

    def equity_frame(self) -> pd.DataFrame:
        """``equity.csv``'s shape: timestamp, equity, exposure, drawdown."""
        peak = self.equity.cummax()
        return pd.DataFrame({"timestamp": self.equity.index, "equity": self.equity.to_numpy(),
                             "exposure": self.exposure.to_numpy(),
                             "drawdown": (1.0 - self.equity / peak).to_numpy()})


def run_policy(frame: FeatureFrame, config: EnvConfig, rows: range, act: Actor) -> Rollout:
    """Run ``act`` over decision rows ``rows`` in one sequential pass (no random starts).

    Equity points are indexed by the open time of the bar whose close marks them; fills by the
    open time of the bar they fill at (the bar after the decision).
    """
    env = TradingEnv(frame, config.replace(start_row=rows.start, end_row=rows.stop, episode_length=None))
    obs, info = env.reset()
    index = frame.index
    times, equity, exposure = [index[info["row"]]], [info["equity"]], [info["exposure"]]
    fills: list[tuple] = []
    total_reward, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(act(obs, info, env))
        total_reward += reward
        row = info["row"]
        times.append(index[row])
        equity.append(info["equity"])
        exposure.append(info["exposure"])
        if info["trade"]:
            qty = info["fill_qty"]
            fills.append((index[row], "buy" if qty > 0 else "sell", info["fill_price"], abs(qty),
                          info["fill_price"] * abs(qty), info["fee"]))
    stamps = pd.DatetimeIndex(times, name="timestamp")
    trades = pd.DataFrame(fills, columns=list(TRADE_COLUMNS))
    return Rollout(pd.Series(equity, index=stamps, name="equity"), trades,
                   pd.Series(exposure, index=stamps, name="exposure"), total_reward, terminated)


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
