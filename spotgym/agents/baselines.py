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
