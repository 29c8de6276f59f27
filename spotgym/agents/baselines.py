"""Baselines the agent must beat: buy-and-hold and indicator rules, as causal target exposures.

Each rule maps the bars (and, for the forecast rule, a predictor column) to the exposure it
wants held after the fill at the next bar's open: ``target[t]`` uses bars 0..t only. Warm-up
rows, where an indicator is undefined, are flat. They run through the very same env as the
agent (continuous target-exposure actions, same fees, slippage and exchange filters).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import ta

from spotgym.core import FeatureFrame

__all__ = ["baseline_targets", "buy_and_hold", "forecast_column", "forecast_rule", "macd_rule", "majority_vote",
           "rsi_rule"]


def buy_and_hold(bars: pd.DataFrame) -> np.ndarray:
    """Fully invested from the first decision on."""
    return np.ones(len(bars))


def macd_rule(bars: pd.DataFrame, fast: int = 12, slow: int = 26, signal: int = 9) -> np.ndarray:
    """Long while the MACD line is above its signal line, flat otherwise."""
    m = ta.trend.MACD(bars["close"], window_slow=slow, window_fast=fast, window_sign=signal)
    line, sig = m.macd().to_numpy(), m.macd_signal().to_numpy()
    return np.where(np.isfinite(line) & np.isfinite(sig) & (line > sig), 1.0, 0.0)


def rsi_rule(bars: pd.DataFrame, window: int = 14, enter_below: float = 30.0, exit_above: float = 70.0) -> np.ndarray:
    """Mean reversion: go long when RSI drops below ``enter_below``, exit when it rises above ``exit_above``."""
    rsi = ta.momentum.RSIIndicator(bars["close"], window=window).rsi().to_numpy()
    out = np.zeros(len(rsi))
    holding = 0.0
    for t, value in enumerate(rsi):
        if np.isfinite(value):
            if value < enter_below:
                holding = 1.0
            elif value > exit_above:
                holding = 0.0
        out[t] = holding
    return out


def forecast_rule(forecast: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """Long while a forecast column (e.g. the LSTM's next-bar log return) is above ``threshold``."""
    f = np.asarray(forecast, dtype=np.float64)
    return np.where(np.isfinite(f) & (f > threshold), 1.0, 0.0)


def majority_vote(*signals: np.ndarray) -> np.ndarray:
    """Long when more than half of the given 0/1 signals are long."""
    if not signals:
        raise ValueError("majority_vote needs at least one signal")
    stacked = np.vstack([np.asarray(s, dtype=np.float64) for s in signals])
    return np.where(stacked.sum(axis=0) * 2 > len(signals), 1.0, 0.0)


def forecast_column(frame: FeatureFrame) -> str | None:
    """The LSTM / GRU next-return forecast column, if the frame has predictor columns."""
    for name in frame.columns:
        if name.startswith(("lstm_ret", "gru_ret")):
            return name
    return None


def baseline_targets(bars: pd.DataFrame, frame: FeatureFrame) -> dict[str, np.ndarray]:
    """Target exposures of every baseline on these bars: buy-and-hold, MACD, RSI, the forecast rule (when the
    frame has a forecast column) and their majority vote. All causal."""
    macd, rsi = macd_rule(bars), rsi_rule(bars)
    targets = {"buy_and_hold": buy_and_hold(bars), "macd_rule": macd, "rsi_rule": rsi}
    forecast = forecast_column(frame)
    votes = [macd, rsi]
    if forecast is not None:
        targets["lstm_forecast_rule"] = forecast_rule(frame.column(forecast))
        votes.append(targets["lstm_forecast_rule"])
    targets["majority_vote"] = majority_vote(*votes)
    return targets
