"""Live frames: the run's ``FeatureFrame`` grown one closed bar at a time, equal to the batch frame.

    stream = FrameStream(history, spec, run_dir / "predictors")   # the batch path once over the history
    rows = stream.update(new_bars)       # only the new rows; == apply_fitted_predictors(all bars)[-len(new_bars):]

``apply_fitted_predictors`` rebuilds every indicator over the whole history (O(history): 115-150 ms at
64k 1h bars). ``FrameStream.update`` carries the state each indicator needs instead, so a bar costs
the same at any history length, and it gives the batch frame's bits, not merely close values:

- pandas' rolling mean and variance (Bollinger, realized volatility, volume z-score, stochastic %D,
  the rolling / expanding normalisation) add and remove values with Kahan-compensated running sums
  and Welford updates, so the last bits of row t depend on every row before it (a rolling std over a
  fresh window differs from the batch by up to 1e-10 relative on prices, enough to flip float32
  cells). The kernels here repeat pandas' own update order on a carried state (sums, compensations,
  counts, pandas' recompute-when-ill-conditioned rule), bar by bar;
- EWMs (MACD, RSI, ATR, EMA ratios) continue pandas' recurrence from its carried value;
- cumulative state (OBV's running sum, the expanding normalisation) is carried exactly;
- the elementwise steps (ratios, logs, masks, clipping, the float32 cast) are the same numpy
  operations on the new rows;
- each predictor's ``predict`` runs on a tail frame of the rows it reads (``lookback``), starting at a
  multiple of the LSTM's inference chunk so every row keeps the slot it has in the batch (the LSTM's
  batch invariance addresses windows by absolute row).

Construction runs the batch path once and replays the kernels over the whole history; the replay is
compared with the batch frame cell by cell (``replay_max_diff``; a warning if it is not exact, e.g. a
pandas release that changed an algorithm). Indicators registered outside ``spotgym.features`` have no
kernel: they are recomputed over the last ``window`` bars (exact for finite memory, to within the
decay of an exponential one; a rolling pandas statistic inside one may differ in the last bits).
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from spotgym.core import FeatureFrame
from spotgym.features import FeatureSpec
from spotgym.features.build import indicator_columns
from spotgym.features.indicators import INDICATORS
from spotgym.predictors.base import OHLCV, BasePredictor
from spotgym.predictors.pipeline import FrameSpec, apply_fitted_predictors
from spotgym.predictors.registry import load_predictor

__all__ = ["FeatureStream", "FrameStream", "default_window"]

NAN = math.nan
INV_COND_TOL = float(np.finfo(np.float64).eps) * 1e3  # pandas' roll_var: recompute a window this ill-conditioned
EXPANDING = 1 << 62  # a window that never drops a row (pandas' ExpandingIndexer)
DECAY = 1e-13  # an exponential indicator's weight on bars older than default_window


# --------------------------------------------------------------------------- pandas' kernels, continued
@njit(cache=True, error_model="numpy")
def _ewm_nb(x, st, alpha, minp, ignore_na, out):  # pragma: no cover - compiled
    """pandas' ``ewm(..., adjust=False).mean()`` (``window_aggregations.ewm``) over ``x``, continued from
    ``st`` = [weighted, old_wt, nobs] (fresh: [nan, 1, 0]); the outputs go to ``out``."""
    weighted, old_wt, nobs = st[0], st[1], st[2]
    factor = 1.0 - alpha
    for i in range(x.shape[0]):
        cur = x[i]
        obs = cur == cur
        if obs:
            nobs += 1.0
        if weighted == weighted:
            if obs or not ignore_na:
                old_wt *= factor
            if obs:
                if weighted != cur:
                    weighted = old_wt * weighted + alpha * cur
                    weighted /= old_wt + alpha
                old_wt = 1.0
        elif obs:
            weighted = cur
        out[i] = weighted if nobs >= minp else NAN
    st[0], st[1], st[2] = weighted, old_wt, nobs


@njit(cache=True, error_model="numpy", inline="always")
def _add_mean(val, sum_x, comp, nobs, neg_ct, consec, prev):  # pragma: no cover - compiled
    if val == val:
        nobs += 1.0
        y = val - comp
        t = sum_x + y
        comp = t - sum_x - y
        sum_x = t
        if math.copysign(1.0, val) < 0.0:
            neg_ct += 1.0
        if val == prev:
            consec += 1.0
        else:
            consec = 1.0
        prev = val
    return sum_x, comp, nobs, neg_ct, consec, prev


@njit(cache=True, error_model="numpy", inline="always")
def _remove_mean(val, sum_x, comp, nobs, neg_ct):  # pragma: no cover - compiled
    if val == val:
        nobs -= 1.0
        y = -val - comp
        t = sum_x + y
        comp = t - sum_x - y
        sum_x = t
        if math.copysign(1.0, val) < 0.0:
            neg_ct -= 1.0
    return sum_x, comp, nobs, neg_ct


@njit(cache=True, error_model="numpy")
def _roll_mean_nb(buf, start, abs0, w, minp, st, out):  # pragma: no cover - compiled
    """pandas' ``roll_mean`` (fixed window ``w``; ``EXPANDING``: expanding) of each column of ``buf`` for rows
    ``start..`` (``buf[i]`` is absolute row ``abs0 + i`` and holds the ``w`` rows before ``start``), continued
    from ``st[col]`` = [sum_x, compensation_add, compensation_remove, nobs, neg_ct, consecutive, prev_value]."""
    n, width = buf.shape
    for c in range(width):
        sum_x, comp_add, comp_rem, nobs, neg_ct, consec, prev = st[c, 0], st[c, 1], st[c, 2], st[c, 3], \
            st[c, 4], st[c, 5], st[c, 6]
        for i in range(start, n):
            a = abs0 + i
            s = max(a - w + 1, 0)
            if a == 0 or s >= a:  # the first window (or windows of one row): from scratch
                sum_x = comp_add = comp_rem = nobs = neg_ct = consec = 0.0
                prev = buf[s - abs0, c]
                for j in range(s, a + 1):
                    sum_x, comp_add, nobs, neg_ct, consec, prev = _add_mean(buf[j - abs0, c], sum_x, comp_add,
                                                                           nobs, neg_ct, consec, prev)
            else:
                for j in range(max(a - w, 0), s):
                    sum_x, comp_rem, nobs, neg_ct = _remove_mean(buf[j - abs0, c], sum_x, comp_rem, nobs, neg_ct)
                sum_x, comp_add, nobs, neg_ct, consec, prev = _add_mean(buf[i, c], sum_x, comp_add, nobs, neg_ct,
                                                                       consec, prev)
            result = NAN
            if nobs >= minp and nobs > 0:
                result = sum_x / nobs
                if consec >= nobs:
                    result = prev
                elif neg_ct == 0 and result < 0:
                    result = 0.0
                elif neg_ct == nobs and result > 0:
                    result = 0.0
            out[i - start, c] = result
        st[c, 0], st[c, 1], st[c, 2], st[c, 3], st[c, 4], st[c, 5], st[c, 6] = sum_x, comp_add, comp_rem, nobs, \
            neg_ct, consec, prev


@njit(cache=True, error_model="numpy", inline="always")
def _add_var(val, nobs, mean_x, ssqdm, comp, unstable):  # pragma: no cover - compiled
    if val == val:
        prev_m2 = ssqdm
        nobs += 1.0
        prev_mean = mean_x - comp
        y = val - comp
        t = y - mean_x
        comp = t + mean_x - y
        mean_x = mean_x + t / nobs
        ssqdm = ssqdm + (val - prev_mean) * (val - mean_x)
        if prev_m2 * INV_COND_TOL > ssqdm:
            unstable = True
    return nobs, mean_x, ssqdm, comp, unstable


@njit(cache=True, error_model="numpy", inline="always")
def _remove_var(val, nobs, mean_x, ssqdm, comp, unstable):  # pragma: no cover - compiled
    if val == val:
        prev_m2 = ssqdm
        nobs -= 1.0
        if nobs != 0.0:
            prev_mean = mean_x - comp
            y = val - comp
            t = y - mean_x
            comp = t + mean_x - y
            mean_x = mean_x - t / nobs
            ssqdm = ssqdm - (val - prev_mean) * (val - mean_x)
            if prev_m2 * INV_COND_TOL > ssqdm:
                unstable = True
        else:
            mean_x = 0.0
            ssqdm = 0.0
            unstable = False
    return nobs, mean_x, ssqdm, comp, unstable


@njit(cache=True, error_model="numpy")
def _roll_var_nb(buf, start, abs0, w, minp, ddof, st, out):  # pragma: no cover - compiled
    """pandas' ``roll_var`` (Welford with Kahan compensation, a window recomputed from scratch when an update
    was ill-conditioned), laid out as ``_roll_mean_nb``; ``st[col]`` = [nobs, mean_x, ssqdm_x,
    compensation_add, compensation_remove, numerically_unstable]."""
    n, width = buf.shape
    minp = max(minp, 1)
    for c in range(width):
        nobs, mean_x, ssqdm, comp_add, comp_rem = st[c, 0], st[c, 1], st[c, 2], st[c, 3], st[c, 4]
        unstable = st[c, 5] != 0.0
        for i in range(start, n):
            a = abs0 + i
            s = max(a - w + 1, 0)
            recompute = a == 0 or s >= a
            if not recompute:
                for j in range(max(a - w, 0), s):
                    nobs, mean_x, ssqdm, comp_rem, unstable = _remove_var(buf[j - abs0, c], nobs, mean_x, ssqdm,
                                                                          comp_rem, unstable)
                nobs, mean_x, ssqdm, comp_add, unstable = _add_var(buf[i, c], nobs, mean_x, ssqdm, comp_add,
                                                                   unstable)
            if recompute or unstable:
                nobs = mean_x = ssqdm = comp_add = comp_rem = 0.0
                for j in range(s, a + 1):
                    nobs, mean_x, ssqdm, comp_add, unstable = _add_var(buf[j - abs0, c], nobs, mean_x, ssqdm,
                                                                       comp_add, unstable)
                unstable = False
            out[i - start, c] = ssqdm / (nobs - ddof) if nobs >= minp and nobs > ddof else NAN
        st[c, 0], st[c, 1], st[c, 2], st[c, 3], st[c, 4] = nobs, mean_x, ssqdm, comp_add, comp_rem
        st[c, 5] = 1.0 if unstable else 0.0


# --------------------------------------------------------------------------- carried state
class _Tail:
    """The newest ``keep`` rows of a (rows, width) float64 series (every row with ``keep=None``)."""

    def __init__(self, width: int, keep: int | None) -> None:
        self.keep = keep
        self.data = np.empty((max(2 * (keep or 0), 1024), width))
        self.n = 0
        self.abs0 = 0  # absolute row of data[0]

    def push(self, rows: np.ndarray) -> tuple[np.ndarray, int, int]:
        """Append ``rows``; return (the buffer, index of the first new row in it, absolute row of buffer[0])."""
        k = len(rows)
        if self.n + k > len(self.data):
            if self.keep is not None and self.n > self.keep:
                drop = self.n - self.keep
                self.data[: self.keep] = self.data[drop: self.n].copy()
                self.n, self.abs0 = self.keep, self.abs0 + drop
            if self.n + k > len(self.data):
                grown = np.empty((max(2 * len(self.data), self.n + k), self.data.shape[1]))
                grown[: self.n] = self.data[: self.n]
                self.data = grown
        self.data[self.n: self.n + k] = rows
        start, self.n = self.n, self.n + k
        return self.data[: self.n], start, self.abs0

    def lagged(self, buf: np.ndarray, start: int, lag: int) -> np.ndarray:
        """Column 0 of ``buf``'s new rows ``lag`` rows back (NaN before the first row)."""
        k = len(buf) - start
        out = np.full(k, NAN)
        first = max(0, lag - start)  # new rows whose lagged row is still in the buffer
        if first < k:
            out[first:] = buf[start + first - lag: len(buf) - lag, 0]
        return out


class _Ewm:
    """``series.ewm(span= | alpha=, min_periods=, adjust=False, ignore_na=).mean()``, one chunk at a time."""

    def __init__(self, *, span: float | None = None, alpha: float | None = None, min_periods: int = 0,
                 ignore_na: bool = False) -> None:
        com = (span - 1) / 2 if span is not None else (1 - alpha) / alpha  # pandas' get_center_of_mass
        self.alpha = 1.0 / (1.0 + float(com))
        self.minp = float(max(int(min_periods), 1))
        self.ignore_na = ignore_na
        self.state = np.array([NAN, 1.0, 0.0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        _ewm_nb(np.ascontiguousarray(x, dtype=np.float64), self.state, self.alpha, self.minp, self.ignore_na, out)
        return out


class _Rolling:
    """``frame.rolling(window, min_periods)`` (``window=None``: ``expanding(min_periods)``) ``.mean()`` and / or
    ``.var(ddof)`` of ``width`` columns, one chunk of rows at a time."""

    def __init__(self, width: int, window: int | None, min_periods: int, *, mean: bool = True,
                 ddof: int | None = None) -> None:
        self.w = EXPANDING if window is None else int(window)
        self.minp = int(min_periods)
        self.tail = _Tail(width, None if window is None else int(window))
        self.mean_state = np.zeros((width, 7)) if mean else None
        self.ddof = ddof
        self.var_state = np.zeros((width, 6)) if ddof is not None else None

    def __call__(self, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        rows = rows.reshape(len(rows), -1)
        buf, start, abs0 = self.tail.push(rows)
        mean = var = None
        if self.mean_state is not None:
            mean = np.empty(rows.shape)
            _roll_mean_nb(buf, start, abs0, self.w, self.minp, self.mean_state, mean)
        if self.var_state is not None:
            var = np.empty(rows.shape)
            _roll_var_nb(buf, start, abs0, self.w, self.minp, self.ddof, self.var_state, var)
        return mean, var


class _RollingExtreme:
    """``series.rolling(window).max()`` and ``.min()`` (exact: a value of the window)."""

    def __init__(self, window: int) -> None:
        self.w = int(window)
        self.tail = _Tail(1, self.w)

    def __call__(self, x: np.ndarray, op: Callable) -> np.ndarray:
        buf, start, abs0 = self.tail.push(x.reshape(-1, 1))
        col = buf[:, 0]
        out = np.full(len(x), NAN)
        for i in range(start, len(buf)):
            window = col[max(0, abs0 + i - self.w + 1) - abs0: i + 1]
            window = window[window == window]
            if len(window) >= max(self.w, 1):
                out[i - start] = op(window)
        return out


def _zsqrt(var: np.ndarray) -> np.ndarray:
    """pandas' ``zsqrt``: the square root, 0 where the variance came out negative."""
    with np.errstate(invalid="ignore"):
        return np.where(var < 0, 0.0, np.sqrt(var))


class _Bars:
    """The new bars of one ``push``: float64 OHLCV arrays and the absolute row of the first."""

    def __init__(self, o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray, v: np.ndarray, row: int) -> None:
        self.open, self.high, self.low, self.close, self.volume, self.row = o, h, lo, c, v, row
        self._log_close: np.ndarray | None = None

    @property
    def log_close(self) -> np.ndarray:
        if self._log_close is None:
            self._log_close = np.log(self.close)
        return self._log_close


# --------------------------------------------------------------------------- indicators, continued
# Each mirrors its function in spotgym.features.indicators (and the ``ta`` classes under it) operation by
# operation: __call__(bars) -> raw columns of the new rows, before the warm-up mask and the normalisation.
class _PrevClose:
    def __init__(self, keep: int = 1) -> None:
        self.tail = _Tail(1, keep)

    def __call__(self, x: np.ndarray, lag: int = 1) -> np.ndarray:
        buf, start, _ = self.tail.push(x.reshape(-1, 1))
        return self.tail.lagged(buf, start, lag)


class _Macd:
    def __init__(self, fast: int, slow: int, signal: int) -> None:
        self.fast = _Ewm(span=fast, min_periods=fast)
        self.slow = _Ewm(span=slow, min_periods=slow)
        self.signal = _Ewm(span=signal, min_periods=signal)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        line = self.fast(b.close) - self.slow(b.close)
        signal = self.signal(line)
        return [line / b.close, signal / b.close, (line - signal) / b.close]


class _Rsi:
    def __init__(self, window: int) -> None:
        self.prev = _PrevClose()
        self.up = _Ewm(alpha=1 / window, min_periods=window)
        self.down = _Ewm(alpha=1 / window, min_periods=window)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        diff = b.close - self.prev(b.close)
        up = self.up(np.where(diff > 0, diff, 0.0))
        down = self.down(-np.where(diff < 0, diff, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            rsi = np.where(down == 0, 100, 100 - (100 / (1 + up / down)))
        return [(rsi - 50.0) / 50.0]


class _Bollinger:
    def __init__(self, window: int, dev: float) -> None:
        self.dev = dev
        self.rolling = _Rolling(1, window, window, ddof=0)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        mean, var = self.rolling(b.close)
        mavg, mstd = mean[:, 0], _zsqrt(var[:, 0])
        high, low = mavg + self.dev * mstd, mavg - self.dev * mstd
        flat = high == low
        with np.errstate(divide="ignore", invalid="ignore"):
            pband = (b.close - low) / np.where(high != low, high - low, NAN)
            width = ((high - low) / mavg) * 100
        return [np.where(flat, 0.0, pband - 0.5), width]


class _Atr:
    def __init__(self, window: int) -> None:
        self.w = window
        self.prev = _PrevClose()
        self.first = _Tail(1, None)  # the first ``window`` true ranges, for the seed
        self.ewm = _Ewm(alpha=1.0 / window, ignore_na=True)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        prev = self.prev(b.close)
        with np.errstate(invalid="ignore"):
            tr = np.fmax(np.fmax(b.high - b.low, np.abs(b.high - prev)), np.abs(b.low - prev))
        seeded = tr.copy()
        rows = b.row + np.arange(len(tr))
        seeded[rows < self.w - 1] = NAN
        if self.first is not None:
            buf, _, _ = self.first.push(tr.reshape(-1, 1))
            if len(buf) >= self.w:
                seeded[rows == self.w - 1] = pd.Series(buf[: self.w, 0]).mean()
                self.first = None
        return [self.ewm(seeded) / b.close]


class _EmaRatio:
    def __init__(self, windows: tuple[int, ...]) -> None:
        self.ewms = [_Ewm(span=w, min_periods=w) for w in windows]

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        return [np.log(b.close / ewm(b.close)) for ewm in self.ewms]


class _Stoch:
    def __init__(self, window: int, smooth: int) -> None:
        self.high = _RollingExtreme(window)
        self.low = _RollingExtreme(window)
        self.d = _Rolling(1, smooth, smooth)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        hi, lo = self.high(b.high, np.max), self.low(b.low, np.min)
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.where(hi == lo, 50.0, 100 * (b.close - lo) / (hi - lo))
        d = self.d(k)[0][:, 0]
        return [(k - 50.0) / 50.0, (d - 50.0) / 50.0]


class _Obv:
    def __init__(self, window: int) -> None:
        self.w = window
        self.prev = _PrevClose()
        self.total: float | None = None
        self.obv = _Tail(1, window)
        self.mean_volume = _Rolling(1, window, window)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        signed = np.where(b.close < self.prev(b.close), -b.volume, b.volume)
        if self.total is None:
            obv = np.cumsum(signed)
        else:
            obv = np.cumsum(np.concatenate([[self.total], signed]))[1:]
        self.total = float(obv[-1])
        buf, start, _ = self.obv.push(obv.reshape(-1, 1))
        mean_volume = self.mean_volume(b.volume)[0][:, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            return [(obv - self.obv.lagged(buf, start, self.w)) / (self.w * mean_volume)]


class _VolumeZ:
    def __init__(self, window: int) -> None:
        self.rolling = _Rolling(1, window, window, ddof=1)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        logv = np.log1p(b.volume)
        mean, var = self.rolling(logv)
        std = _zsqrt(var[:, 0])
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (logv - mean[:, 0]) / np.where(std > 0, std, NAN)
        return [np.where(std == 0, 0.0, z)]


class _LogReturn:
    def __init__(self, lags: tuple[int, ...]) -> None:
        self.lags = tuple(lags)
        self.prev = _PrevClose(max(self.lags))

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        buf, start, _ = self.prev.tail.push(b.log_close.reshape(-1, 1))
        return [b.log_close - self.prev.tail.lagged(buf, start, lag) for lag in self.lags]


class _RealizedVol:
    def __init__(self, window: int) -> None:
        self.prev = _PrevClose()
        self.rolling = _Rolling(1, window, window, mean=False, ddof=1)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        r = b.log_close - self.prev(b.log_close)
        return [_zsqrt(self.rolling(r)[1][:, 0])]


KERNELS: dict[str, Callable[..., Callable[[_Bars], list[np.ndarray]]]] = {
    "macd": _Macd, "rsi": _Rsi, "bollinger": _Bollinger, "atr": _Atr, "ema_ratio": _EmaRatio, "stoch": _Stoch,
    "obv": _Obv, "volume_z": _VolumeZ, "log_return": _LogReturn, "realized_vol": _RealizedVol,
}


class _Recomputed:
    """An indicator without a kernel: its function over the last ``window`` bars, the new rows taken."""

    def __init__(self, name: str, params: dict[str, Any], window: int) -> None:
        self.fn, self.params, self.window = INDICATORS[name], params, window
        self.tail = _Tail(5, window)

    def __call__(self, b: _Bars) -> list[np.ndarray]:
        k = len(b.close)
        buf, _, _ = self.tail.push(np.column_stack([b.open, b.high, b.low, b.close, b.volume]))
        buf = buf[-max(self.window, k):]
        bars = pd.DataFrame(buf, columns=list(OHLCV))
        return [col.values.to_numpy(np.float64)[-k:] for col in self.fn(bars, **self.params)]


def _params(name: str, given: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """An indicator's keyword parameters: the function's defaults overridden by the spec's."""
    defaults = {k: p.default for k, p in inspect.signature(INDICATORS[name]).parameters.items()
                if k != "bars" and p.default is not inspect.Parameter.empty}
    return {**defaults, **dict(given)}


EXPONENTIAL = ("macd", "rsi", "atr", "ema_ratio")  # the kernels whose memory decays instead of ending


def _memory(name: str, params: dict[str, Any]) -> tuple[int, int]:
    """(rows a finite-memory indicator reads back, rows until its exponential weights fall below ``DECAY``), from
    its integer parameters: a bound, not the exact figure (an indicator without a kernel counts as both)."""
    ints = [int(v) for v in params.values() if isinstance(v, int | np.integer) and not isinstance(v, bool)]
    ints += [int(x) for v in params.values() if isinstance(v, tuple) for x in v if isinstance(x, int | np.integer)]
    finite = sum(ints) + 1
    if name not in EXPONENTIAL and name in KERNELS:
        return finite, 0
    # Wilder's alpha = 1 / n decays slowest of the EMA conventions in use; MACD's signal is an EMA of EMAs
    n = max(sum(ints) if name == "macd" else max(ints, default=1), 2)
    return finite, math.ceil(math.log(DECAY) / math.log1p(-1.0 / n)) + n


def default_window(spec: FrameSpec | FeatureSpec, lookback: int = 1) -> int:
    """Bars a stream keeps for ``spec``: every finite-memory indicator and the rolling normalisation read within
    it, every exponential one has decayed below ``DECAY`` relative over it (the span an indicator without a
    kernel is recomputed over), and a predictor's ``lookback`` rows fit after them."""
    features = spec.features if isinstance(spec, FrameSpec) else spec
    memory = decay = 1
    for ind in features.indicators:
        finite, exp = _memory(ind.name, _params(ind.name, ind.params))
        memory, decay = max(memory, finite), max(decay, exp)
    norm = features.norm_window if features.normalize != "none" else 0
    return max(memory, decay) + norm + lookback


class FeatureStream:
    """The indicator frame of ``spec`` (``build_features``' values) grown a chunk of bars at a time.

    ``push(bars)`` takes the new bars (a DataFrame with OHLCV columns, or float64 arrays) and returns
    their float32 feature rows, continuing every indicator's state; the first push may hold the whole
    history. Rows pushed in any chunking are bit-identical to ``build_features`` over the same bars
    (``exact``), unless the spec names an indicator without a kernel (``KERNELS``): that one is recomputed
    over the last ``window`` bars (``default_window(spec)``), and ``exact`` is False.
    """

    def __init__(self, spec: FeatureSpec, window: int | None = None) -> None:
        self.spec = spec
        self.window = int(window) if window is not None else default_window(spec)
        meta = indicator_columns(_zigzag_bars(64), spec)
        self.columns = tuple(c.name for c in meta)
        self.warmups = np.array([c.warmup for c in meta], dtype=np.int64)
        self.z_cols = np.array([j for j, c in enumerate(meta) if c.scale == "z"], dtype=np.int64)
        self.kernels: list[Callable[[_Bars], list[np.ndarray]]] = []
        self.exact = True
        for ind in spec.indicators:
            params = _params(ind.name, ind.params)
            if ind.name in KERNELS:
                self.kernels.append(KERNELS[ind.name](**params))
            else:
                self.kernels.append(_Recomputed(ind.name, params, self.window))
                self.exact = False
        self.norm = None
        if spec.normalize != "none" and len(self.z_cols):
            window_ = spec.norm_window if spec.normalize == "rolling" else None
            self.norm = _Rolling(len(self.z_cols), window_, spec.norm_window, ddof=1)
        self.rows = 0

    def push(self, bars: pd.DataFrame | Mapping[str, np.ndarray]) -> np.ndarray:
        """The float32 (k, columns) feature rows of the next k bars (a DataFrame or a mapping with OHLCV arrays)."""
        b = _Bars(*(np.ascontiguousarray(np.asarray(bars[c], dtype=np.float64)) for c in OHLCV), row=self.rows)
        k = len(b.close)
        raw = np.empty((k, len(self.columns)))
        j = 0
        for kernel in self.kernels:
            for col in kernel(b):
                raw[:, j] = col
                j += 1
        if j != len(self.columns):
            raise RuntimeError(f"the stream produced {j} indicator columns, build_features {len(self.columns)}")
        warm = self.warmups - self.rows  # rows of this chunk still inside each column's warm-up
        for j in np.flatnonzero(warm > 0):
            raw[: warm[j], j] = NAN
        if self.norm is not None:
            x = raw[:, self.z_cols]
            mean, var = self.norm(x)
            std = _zsqrt(var)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = (x - mean) / np.where(std > 0, std, NAN)
            clip = self.spec.clip
            if clip is not None:
                z = np.where(z < -clip, -clip, np.where(z > clip, clip, z))
            raw[:, self.z_cols] = z
        self.rows += k
        return raw.astype(np.float32)


def _zigzag_bars(n: int) -> pd.DataFrame:
    """``n`` hourly bars of a gentle zigzag (enough to name an indicator's columns)."""
    close = 100.0 + np.sin(np.arange(n))
    index = pd.date_range("2020-01-01", periods=n, freq="1h", tz="UTC")
    return pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1.0 + close},
                        index=index)


# --------------------------------------------------------------------------- the whole frame
class _Store:
    """The frame's rows, grown in place (capacity doubles), so appending a bar costs O(1) amortised."""

    def __init__(self, frame: FeatureFrame, extra: int = 4096) -> None:
        n = len(frame)
        cap = n + extra
        self.n = n
        self.values = np.empty((cap, frame.n_features), np.float32)
        self.values[:n] = frame.values
        self.time = np.empty(cap, f"datetime64[{frame.index.unit}]")
        self.time[:n] = frame.index.tz_convert("UTC").tz_localize(None).to_numpy()
        self.prices = {name: _grown(getattr(frame, name), cap) for name in ("open", "high", "low", "close", "volume")}
        self.synthetic = _grown(frame.synthetic, cap)
        self.valid = _grown(frame.valid, cap)

    def reserve(self, k: int) -> None:
        if self.n + k <= len(self.values):
            return
        cap = max(2 * len(self.values), self.n + k)
        self.values = _grown(self.values[: self.n], cap)
        self.time = _grown(self.time[: self.n], cap)
        self.prices = {name: _grown(arr[: self.n], cap) for name, arr in self.prices.items()}
        self.synthetic = _grown(self.synthetic[: self.n], cap)
        self.valid = _grown(self.valid[: self.n], cap)

    def frame(self, start: int, stop: int, columns: tuple[str, ...], symbol: str | None) -> FeatureFrame:
        sl = slice(start, stop)
        return FeatureFrame(values=self.values[sl, : len(columns)], columns=columns,
                            index=pd.DatetimeIndex(self.time[sl], tz="UTC"),
                            synthetic=self.synthetic[sl], valid=self.valid[sl], symbol=symbol,
                            **{name: arr[sl] for name, arr in self.prices.items()})


def _grown(arr: np.ndarray, capacity: int) -> np.ndarray:
    out = np.empty((capacity,) + arr.shape[1:], dtype=arr.dtype)
    out[: len(arr)] = arr
    return out


class FrameStream:
    """The run's frame, grown one closed bar at a time, equal to the batch frame.

    ``bars``: the history (as from ``load_bars``: OHLCV, a UTC ``DatetimeIndex``, ``synthetic`` where gaps
    were filled); ``spec`` / ``folder``: as for ``apply_fitted_predictors`` (``folder`` may be None when
    ``spec`` has no predictors). Construction runs the batch path once over the history and replays the
    streaming kernels over it (``replay_max_diff``: their largest difference from the batch, 0.0 when exact).

    ``update(new_bars)`` appends one or more closed bars and returns only their rows, equal to the last
    rows of ``apply_fitted_predictors(all bars so far, spec, folder)``; it reads at most ``window`` rows
    back (default ``default_window(spec)``), so its cost does not grow with the history. ``frame``: all rows so far.
    """

    def __init__(self, bars: pd.DataFrame, spec: FrameSpec | FeatureSpec, folder: str | os.PathLike | None, *,
                 window: int | None = None) -> None:
        spec = FrameSpec(spec) if isinstance(spec, FeatureSpec) else spec
        if not isinstance(spec, FrameSpec):
            raise TypeError(f"spec must be a FrameSpec (or a FeatureSpec for indicators only), got {type(spec).__name__}")
        if spec.predictors is not None and folder is None:
            raise ValueError("the spec has predictors: pass the folder of their fitted models (a run's predictors/)")
        _check_bars(bars, None)
        if len(bars) == 0:
            raise ValueError("FrameStream needs at least one bar of history")
        self.spec = spec
        self.symbol = bars.attrs.get("symbol")
        batch = apply_fitted_predictors(bars, spec, folder if folder is not None else ".")
        self.models: list[tuple[BasePredictor, int, int]] = []  # (model, first output column, its end)
        n_ind = batch.n_features - sum(len(m.output_columns) for m in (spec.predictors.models if spec.predictors
                                                                        else ()))
        col = n_ind
        for cfg in spec.predictors.models if spec.predictors else ():
            model = load_predictor(Path(folder) / cfg.name, frame=batch, feature_spec=spec.features)
            self.models.append((model, col, col + len(model.output_columns)))
            col += len(model.output_columns)
        lookback = max((m.lookback for m, _, _ in self.models), default=1)
        self.align = _row_align(self.models)
        need = default_window(spec.features, lookback + self.align - 1) if window is None else int(window)
        least = _least_window(spec.features, lookback, self.align)
        if need < least:
            raise ValueError(f"window={need} is shorter than the {least} rows an update reads back for this spec")
        self.window = need
        self.features = FeatureStream(spec.features, self.window)
        if self.features.columns != batch.columns[:n_ind]:
            raise RuntimeError(f"the stream's indicator columns {self.features.columns} differ from the batch "
                               f"frame's {batch.columns[:n_ind]}")
        replay = self.features.push(bars)
        self.replay_max_diff = _max_diff(replay, batch.values[:, :n_ind])
        if self.replay_max_diff != 0.0:
            warnings.warn(f"the streamed indicators differ from the batch frame by up to {self.replay_max_diff:.3g} "
                          f"over the history (columns {_differing(replay, batch)}); live rows will differ as much",
                          RuntimeWarning, stacklevel=2)
        self.columns = batch.columns
        self.n_indicators = n_ind
        self._has_synthetic = "synthetic" in bars.columns
        self._store = _Store(batch)
        self._frame: FeatureFrame | None = batch

    # ------------------------------------------------------------------ the frame
    def __len__(self) -> int:
        return self._store.n

    @property
    def frame(self) -> FeatureFrame:
        """Every row so far (built on demand: O(rows) the first time after an update)."""
        if self._frame is None:
            self._frame = self._store.frame(0, self._store.n, self.columns, self.symbol)
        return self._frame

    @property
    def last_time(self) -> pd.Timestamp:
        return pd.Timestamp(self._store.time[self._store.n - 1], tz="UTC")

    # ------------------------------------------------------------------ growth
    def update(self, new_bars: pd.DataFrame | pd.Series) -> FeatureFrame:
        """Append closed bars (a DataFrame like ``load_bars``' rows, or one row ``bars.iloc[i]``) and return their
        rows of the frame: the indicators continued, then each predictor on the rows it reads."""
        if isinstance(new_bars, pd.Series):  # one row of a bars frame, named by its open time
            new_bars = pd.DataFrame([new_bars.to_numpy()], columns=new_bars.index,
                                    index=pd.DatetimeIndex([new_bars.name]))
        _check_bars(new_bars, self.last_time)
        k = len(new_bars)
        if k == 0:
            return self._store.frame(self._store.n, self._store.n, self.columns, self.symbol)
        arrays = {c: new_bars[c].to_numpy(np.float64) for c in OHLCV}
        bad = [c for c, a in arrays.items() if not np.isfinite(a).all()]
        if bad:
            raise ValueError(f"new bars hold non-finite {bad} values (first bar {new_bars.index[0]})")
        values = self.features.push(arrays)
        store, n = self._store, self._store.n
        store.reserve(k)
        sl = slice(n, n + k)
        store.values[sl, : self.n_indicators] = values
        store.values[sl, self.n_indicators:] = NAN
        index = _utc_index(new_bars.index)
        store.time[sl] = index.tz_localize(None).to_numpy().astype(store.time.dtype)
        for name, arr in arrays.items():
            store.prices[name][sl] = arr
        store.synthetic[sl] = (new_bars["synthetic"].to_numpy(bool) if "synthetic" in new_bars.columns
                               else False)
        store.n = n + k
        for model, lo, hi in self.models:
            start = max(0, (n - model.lookback + 1) // self.align * self.align)
            tail = store.frame(start, n + k, self.columns[:lo], self.symbol)
            store.values[sl, lo:hi] = model.predict(tail, range(n - start, n + k - start))
        store.valid[sl] = np.isfinite(store.values[sl]).all(axis=1)
        self._frame = None
        return store.frame(n, n + k, self.columns, self.symbol)


def _row_align(models: list[tuple[BasePredictor, int, int]]) -> int:
    """A tail frame starts at a multiple of this row: the LSTM's batch invariance addresses a window by its
    absolute row (its slot in the inference chunk)."""
    if any(m.kind == "lstm" for m, _, _ in models):
        from spotgym.predictors.lstm import INFER_CHUNK
        return INFER_CHUNK
    return 1


def _least_window(spec: FeatureSpec, lookback: int, align: int) -> int:
    """The rows an update reads back: the longest finite memory, the rolling normalisation, a predictor's
    ``lookback`` and its tail's alignment."""
    memory = max(_memory(i.name, _params(i.name, i.params))[0] for i in spec.indicators)
    return memory + (spec.norm_window if spec.normalize == "rolling" else 0) + lookback + align - 1


def _utc_index(index: pd.Index) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(index)
    return index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")


def _check_bars(bars: Any, after: pd.Timestamp | None) -> None:
    if not isinstance(bars, pd.DataFrame):
        raise ValueError(f"bars must be a pandas DataFrame (as from load_bars), got {type(bars).__name__}")
    missing = [c for c in OHLCV if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {missing}; they need {list(OHLCV)} (and 'synthetic' where gaps were "
                         "filled), as from spotgym.data.load_bars")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise ValueError(f"bars must be indexed by their open time (a DatetimeIndex), got {type(bars.index).__name__}")
    if len(bars) == 0:
        return
    index = _utc_index(bars.index)
    if not index.is_monotonic_increasing or index.has_duplicates:
        raise ValueError("bars must be in strictly increasing time order")
    if after is not None and index[0] <= after:
        raise ValueError(f"bar at {index[0]} is not after the last bar of the stream ({after})")


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest |a - b| over cells finite in both; inf where NaN in one only."""
    na, nb = np.isnan(a), np.isnan(b)
    if (na != nb).any():
        return math.inf
    both = ~na
    return float(np.abs(a[both].astype(np.float64) - b[both].astype(np.float64)).max(initial=0.0))


def _differing(replay: np.ndarray, batch: FeatureFrame) -> list[str]:
    return [c for j, c in enumerate(batch.columns[: replay.shape[1]])
            if _max_diff(replay[:, j:j + 1], batch.values[:, j:j + 1]) != 0.0]
