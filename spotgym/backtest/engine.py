"""The backtest engine: one sequential pass of an actor over a row range of the env, giving the equity
curve, the fills and the exposure.

The same function evaluates the agent during training (validation split), backtests it, and runs the
baselines, so every number in a report comes from the very same env semantics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spotgym.agents import target_actor
from spotgym.backtest.metrics import TRADE_COLUMNS, bars_per_year, compute_metrics, drawdown
from spotgym.core import FeatureFrame
from spotgym.envs import Actor, EnvConfig, TradingEnv
from spotgym.risk import flag_names

__all__ = ["DECISION_COLUMNS", "Rollout", "run_baselines", "run_policy"]

# decisions.csv: one row per decision, what the actor asked and what the risk layer made of it
DECISION_COLUMNS = ("timestamp", "action", "risk", "halted", "trade", "fill_qty", "fill_price", "fee", "position",
                    "exposure", "equity")


@dataclass
class Rollout:
    """The result of one pass: ``equity`` (first point = initial equity before the first decision),
    ``trades`` (one row per fill), ``exposure`` per point, the total reward, and ``decisions`` (one row
    per decision: the bar it was taken at, the action, the risk rules that changed it, and what followed)."""

    equity: pd.Series
    trades: pd.DataFrame
    exposure: pd.Series
    total_reward: float
    terminated: bool
    decisions: pd.DataFrame | None = None

    def metrics(self, timeframe: str | None = None) -> dict[str, Any]:
        ppy = bars_per_year(timeframe) if timeframe else None
        return compute_metrics(self.equity, self.trades, self.exposure, periods_per_year=ppy)

    def equity_frame(self) -> pd.DataFrame:
        """``equity.csv``'s shape: timestamp, equity, exposure, drawdown."""
        return pd.DataFrame({"timestamp": self.equity.index, "equity": self.equity.to_numpy(),
                             "exposure": self.exposure.to_numpy(), "drawdown": drawdown(self.equity.to_numpy())})


def run_policy(frame: FeatureFrame, config: EnvConfig, rows: range, act: Actor) -> Rollout:
    """Run ``act`` over decision rows ``rows`` in one sequential pass (no random starts).

    Equity points are indexed by the open time of the bar whose close marks them; fills by the
    open time of the bar they fill at (the bar after the decision, or the next real bar after a gap).
    """
    env = TradingEnv(frame, config.replace(start_row=rows.start, end_row=rows.stop, episode_length=None))
    obs, info = env.reset()
    index = frame.index
    times, equity, exposure = [index[info["row"]]], [info["equity"]], [info["exposure"]]
    fills: list[tuple] = []
    decisions: list[tuple] = []
    total_reward, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        row_before = env.row
        action = act(obs, info, env)
        obs, reward, terminated, truncated, info = env.step(action)
        decisions.append((index[row_before], _scalar(action), "|".join(flag_names(info["risk"])), info["halted"],
                          info["trade"], info["fill_qty"], info["fill_price"], info["fee"], info["position"],
                          info["exposure"], info["equity"]))
        total_reward += reward
        row = info["row"]
        times.append(index[row])
        equity.append(info["equity"])
        exposure.append(info["exposure"])
        if info["trade"]:
            qty = info["fill_qty"]
            fill_row = env.engine.fill_row(row_before)
            fills.append((index[fill_row], "buy" if qty > 0 else "sell", info["fill_price"], abs(qty),
                          info["fill_price"] * abs(qty), info["fee"]))
    stamps = pd.DatetimeIndex(times, name="timestamp")
    trades = pd.DataFrame(fills, columns=list(TRADE_COLUMNS))
    return Rollout(pd.Series(equity, index=stamps, name="equity"), trades,
                   pd.Series(exposure, index=stamps, name="exposure"), total_reward, terminated,
                   pd.DataFrame(decisions, columns=list(DECISION_COLUMNS)))


def _scalar(action: Any) -> float:
    return float(np.asarray(action, dtype=np.float64).reshape(-1)[0])


def run_baselines(frame: FeatureFrame, config: EnvConfig, rows: range,
                  targets: dict[str, np.ndarray]) -> dict[str, Rollout]:
    """Each baseline's target exposures through the env over ``rows``: same costs and exchange rules as
    ``config``, continuous target actions, decided every bar and without the agent's risk rules (buy and
    hold stays buy and hold). Returns name -> ``Rollout``."""
    cfg = config.replace(action="continuous", risk=None, decide_every=1, turnover_penalty=0.0)
    return {name: run_policy(frame, cfg, rows, target_actor(t)) for name, t in targets.items()}
