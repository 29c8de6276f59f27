"""Training targets. They look *ahead* of row t by design: they are only ever used as labels of
training rows that end ``purge`` bars before the block a model predicts, never as inputs.

Every function takes the close prices (float64) and returns one value per row, NaN where the
future window runs past the data (or the trailing window is not yet full).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DOWN, FLAT, UP = 0, 1, 2
DIRECTION_CLASSES = ("down", "flat", "up")
TREND_CLASSES = ("trend_down", "range", "trend_up")
VOL_CLASSES = ("vol_low", "vol_high")


def forward_log_return(close: np.ndarray, horizon: int) -> np.ndarray:
    """log(close[t + horizon] / close[t]); NaN for the last ``horizon`` rows."""
    logc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(logc.shape, np.nan)
    if horizon < len(logc):
        out[: len(logc) - horizon] = logc[horizon:] - logc[: len(logc) - horizon]
    return out


def backward_log_return(close: np.ndarray, horizon: int) -> np.ndarray:
    """log(close[t] / close[t - horizon]) — the persistence forecast of ``forward_log_return``; causal."""
    logc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(logc.shape, np.nan)
    if horizon < len(logc):
        out[horizon:] = logc[horizon:] - logc[: len(logc) - horizon]
    return out


def trailing_vol(close: np.ndarray, window: int) -> np.ndarray:
    """Std of one-bar log returns over the ``window`` bars ending at t (causal)."""
    r = pd.Series(np.log(np.asarray(close, dtype=np.float64))).diff()
    return r.rolling(window, min_periods=window).std().to_numpy()


def forward_vol(close: np.ndarray, horizon: int) -> np.ndarray:
    """Std of the one-bar log returns inside (t, t + horizon]; NaN when the window runs past the data."""
    r = pd.Series(np.log(np.asarray(close, dtype=np.float64))).diff()
    ahead = r.rolling(horizon, min_periods=horizon).std(ddof=0 if horizon == 1 else 1).shift(-horizon)
    return ahead.to_numpy()


def direction_labels(fwd_return: np.ndarray, threshold: float) -> np.ndarray:
    """0 down / 1 flat / 2 up by ``fwd_return`` against ±threshold (float, NaN where the return is NaN)."""
    out = np.where(fwd_return > threshold, UP, np.where(fwd_return < -threshold, DOWN, FLAT)).astype(np.float64)
    out[np.isnan(fwd_return)] = np.nan
    return out


def trend_labels(close: np.ndarray, horizon: int, k: float, vol_window: int) -> np.ndarray:
    """0 trend down / 1 range / 2 trend up: the h-bar forward return against ±k · sigma_t · sqrt(h)."""
    fwd = forward_log_return(close, horizon)
    thr = k * trailing_vol(close, vol_window) * np.sqrt(horizon)
    out = np.where(fwd > thr, 2, np.where(fwd < -thr, 0, 1)).astype(np.float64)
    out[np.isnan(fwd) | np.isnan(thr)] = np.nan
    return out


def vol_labels(close: np.ndarray, horizon: int, vol_window: int) -> np.ndarray:
    """1 when the realised volatility of the next ``horizon`` bars exceeds the trailing sigma_t, else 0."""
    ahead = forward_vol(close, horizon)
    trailing = trailing_vol(close, vol_window)
    out = (ahead > trailing).astype(np.float64)
    out[np.isnan(ahead) | np.isnan(trailing)] = np.nan
    return out
