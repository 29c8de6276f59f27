"""Indicator columns on top of ``ta``, each returned with its warm-up length and scaling rule.

Every indicator is a function ``(bars, **params) -> list[Column]``. Prices are turned into
scale-free quantities (ratios to close, log returns) so one normalisation fits every market;
``scale="z"`` columns are later z-scored causally, ``scale="none"`` ones are already bounded.
Cells inside an indicator's warm-up are NaN, never zero. After the warm-up a few oscillators are
undefined on a perfectly flat window (0 / 0: an exchange halt serves flat zero-volume bars); they
take their neutral value there (stochastic 50, Bollinger %b at the middle band, volume z-score 0)
so that a halt does not punch holes into the frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import ta


@dataclass(frozen=True)
class Column:
    name: str
    values: pd.Series
    warmup: int  # rows at the start that are undefined for this column
    scale: str  # "z": z-score causally; "none": already on a bounded scale


Indicator = Callable[..., list[Column]]
INDICATORS: dict[str, Indicator] = {}


def indicator(name: str) -> Callable[[Indicator], Indicator]:
    def register(fn: Indicator) -> Indicator:
        INDICATORS[name] = fn
        return fn
    return register


def _warm(series: pd.Series, warmup: int) -> pd.Series:
    """NaN for the first ``warmup`` rows (``ta`` fills some warm-ups with 0 instead)."""
    out = series.astype(np.float64).copy()
    out.iloc[:warmup] = np.nan
    return out


@indicator("macd")
def macd(bars: pd.DataFrame, fast: int = 12, slow: int = 26, signal: int = 9) -> list[Column]:
    """MACD line, signal and histogram, divided by close (scale-free)."""
    m = ta.trend.MACD(bars["close"], window_slow=slow, window_fast=fast, window_sign=signal)
    close = bars["close"]
    tag = f"macd_{fast}_{slow}_{signal}"
    line_w, sig_w = slow - 1, slow + signal - 2
    return [
        Column(f"{tag}_line", _warm(m.macd() / close, line_w), line_w, "z"),
        Column(f"{tag}_signal", _warm(m.macd_signal() / close, sig_w), sig_w, "z"),
        Column(f"{tag}_hist", _warm(m.macd_diff() / close, sig_w), sig_w, "z"),
    ]


@indicator("rsi")
def rsi(bars: pd.DataFrame, window: int = 14) -> list[Column]:
    """Wilder's RSI mapped from [0, 100] to [-1, 1]."""
    values = ta.momentum.RSIIndicator(bars["close"], window=window).rsi()
    return [Column(f"rsi_{window}", _warm((values - 50.0) / 50.0, window), window, "none")]


@indicator("bollinger")
def bollinger(bars: pd.DataFrame, window: int = 20, dev: float = 2.0) -> list[Column]:
    """Bollinger %b (centred: 0 at the middle band, ±0.5 at the bands) and band width."""
    b = ta.volatility.BollingerBands(bars["close"], window=window, window_dev=dev)
    w = window - 1
    tag = f"bb_{window}_{dev:g}"
    flat = b.bollinger_hband() == b.bollinger_lband()
    return [
        Column(f"{tag}_pctb", _warm((b.bollinger_pband() - 0.5).mask(flat, 0.0), w), w, "none"),
        Column(f"{tag}_width", _warm(b.bollinger_wband(), w), w, "z"),
    ]


@indicator("atr")
def atr(bars: pd.DataFrame, window: int = 14) -> list[Column]:
    """Average true range / close.

    Same definition as ``ta.volatility.AverageTrueRange`` (Wilder smoothing seeded with the mean
    of the first ``window`` true ranges; a test holds them equal), computed with ``ewm`` because
    ``ta`` runs a Python loop that takes seconds on a year of minute bars.
    """
    high, low, close = bars["high"], bars["low"], bars["close"]
    prev = close.shift(1)
    true_range = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    seeded = true_range.copy()
    seeded.iloc[: window - 1] = np.nan
    if len(seeded) >= window:
        seeded.iloc[window - 1] = true_range.iloc[:window].mean()
    values = seeded.ewm(alpha=1.0 / window, adjust=False, ignore_na=True).mean()
    return [Column(f"atr_{window}", _warm(values / close, window - 1), window - 1, "z")]


@indicator("ema_ratio")
def ema_ratio(bars: pd.DataFrame, windows: tuple[int, ...] = (10, 50, 200)) -> list[Column]:
    """log(close / EMA(window)) for each window: trend at several horizons."""
    close = bars["close"]
    out = []
    for w in windows:
        ema = ta.trend.EMAIndicator(close, window=w).ema_indicator()
        out.append(Column(f"ema_ratio_{w}", _warm(np.log(close / ema), w - 1), w - 1, "z"))
    return out


@indicator("stoch")
def stoch(bars: pd.DataFrame, window: int = 14, smooth: int = 3) -> list[Column]:
    """Stochastic %K and %D mapped from [0, 100] to [-1, 1]."""
    s = ta.momentum.StochasticOscillator(bars["high"], bars["low"], bars["close"], window=window,
                                         smooth_window=smooth)
    flat = bars["high"].rolling(window).max() == bars["low"].rolling(window).min()
    k = s.stoch().mask(flat, 50.0)
    d = k.rolling(smooth, min_periods=smooth).mean()  # ta's %D, over the neutral-filled %K
    k_w, d_w = window - 1, window + smooth - 2
    return [
        Column(f"stoch_{window}_k", _warm((k - 50.0) / 50.0, k_w), k_w, "none"),
        Column(f"stoch_{window}_d", _warm((d - 50.0) / 50.0, d_w), d_w, "none"),
    ]


@indicator("obv")
def obv(bars: pd.DataFrame, window: int = 20) -> list[Column]:
    """Change of on-balance volume over ``window`` bars, in units of mean volume (scale-free)."""
    values = ta.volume.OnBalanceVolumeIndicator(bars["close"], bars["volume"]).on_balance_volume()
    mean_vol = bars["volume"].rolling(window, min_periods=window).mean()
    return [Column(f"obv_{window}", _warm(values.diff(window) / (window * mean_vol), window), window, "z")]


@indicator("volume_z")
def volume_z(bars: pd.DataFrame, window: int = 96) -> list[Column]:
    """z-score of log(1 + volume) against its trailing ``window``-bar mean and std."""
    logv = np.log1p(bars["volume"])
    roll = logv.rolling(window, min_periods=window)
    std = roll.std()
    values = ((logv - roll.mean()) / std.where(std > 0)).mask(std == 0, 0.0)
    return [Column(f"volume_z_{window}", _warm(values, window - 1), window - 1, "none")]


@indicator("log_return")
def log_return(bars: pd.DataFrame, lags: tuple[int, ...] = (1, 4, 16, 64)) -> list[Column]:
    """log(close[t] / close[t - lag]) for each lag."""
    logc = np.log(bars["close"])
    return [Column(f"log_return_{lag}", _warm(logc.diff(lag), lag), lag, "z") for lag in lags]


@indicator("realized_vol")
def realized_vol(bars: pd.DataFrame, window: int = 24) -> list[Column]:
    """Rolling standard deviation of one-bar log returns over ``window`` bars."""
    r = np.log(bars["close"]).diff()
    values = r.rolling(window, min_periods=window).std()
    return [Column(f"realized_vol_{window}", _warm(values, window), window, "z")]
