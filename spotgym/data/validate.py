"""Validation of raw OHLCV bars: every problem is reported with file, row and what is wrong."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spotgym.data.timeframes import ms_to_timeframe

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
REQUIRED_COLUMNS = ("timestamp", *OHLCV_COLUMNS)

SPIKE_RATIO = 5.0
"""Default threshold of ``find_suspicious``: a price more than 5x (or under 1/5) its reference.

Measured on the shared Binance files (ETH 1h 2017-2024, ETH 5m 2022-2024, ETH/BTC 1m, BTC 1h, SOL 1h) the
largest real deviation is 2.1x (ETH/USDT 1h 2017-08-22T04:00Z, a real early-Binance wick to 144 while
the market traded near 290), so 5x leaves a margin of more than 2x while still catching a decimal point
moved by one place (10x) and any 1000x data error."""
SPIKE_WINDOW = 3
"""``find_suspicious`` compares a bar with the median close of this many bars on each side."""


class BarsError(ValueError):
    """Bad bar data. ``source``, ``row`` (0-based data row, or None) and ``problem`` say what and where."""

    def __init__(self, source: str, problem: str, row: int | None = None, timestamp_ms: int | None = None):
        self.source, self.problem, self.row, self.timestamp_ms = source, problem, row, timestamp_ms
        where = ""
        if row is not None:
            where = f", row {row}"
            if timestamp_ms is not None:
                where += f" ({pd.Timestamp(int(timestamp_ms), unit='ms', tz='UTC').isoformat()})"
        super().__init__(f"{source}{where}: {problem}")


@dataclass(frozen=True)
class Gap:
    """Missing bars between two present ones: ``first_missing_ms`` .. ``last_missing_ms`` inclusive."""

    first_missing_ms: int
    last_missing_ms: int
    n_missing: int

    def __str__(self) -> str:
        first = pd.Timestamp(self.first_missing_ms, unit="ms", tz="UTC")
        last = pd.Timestamp(self.last_missing_ms, unit="ms", tz="UTC")
        return f"{first:%Y-%m-%dT%H:%M}Z - {last:%Y-%m-%dT%H:%M}Z ({self.n_missing})"


@dataclass(frozen=True)
class SuspiciousBar:
    """A formally valid bar whose ``column`` price is implausible against the bars around it.

    ``reference`` is the median close of the neighbouring bars it was compared with (the side nearer to
    ``value``, see ``find_suspicious``); ``row`` is the 0-based data row."""

    row: int
    timestamp_ms: int
    column: str
    value: float
    reference: float

    @property
    def ratio(self) -> float:
        return self.value / self.reference

    def __str__(self) -> str:
        time = pd.Timestamp(self.timestamp_ms, unit="ms", tz="UTC")
        up = self.ratio >= 1
        size = self.ratio if up else 1 / self.ratio
        factor = ("" if up else "1/") + (f"{size:.0f}" if size >= 100 else f"{size:.3g}") + "x"
        return (f"row {self.row} ({time:%Y-%m-%dT%H:%M}Z): {self.column} {_price(self.value)} "
                f"vs neighbours' median close {_price(self.reference)} ({factor})")


def _price(value: float) -> str:
    """Up to 6 significant digits, no exponent: 1225010, 2.6204, 0.00012345."""
    return np.format_float_positional(value, precision=6, unique=False, fractional=False, trim="-")


@dataclass(frozen=True)
class BarsReport:
    """What ``spotgym data check`` prints: size, span, timeframe, gaps, zero-volume and suspicious bars."""

    source: str
    rows: int
    timeframe: str
    first_ms: int
    last_ms: int
    gaps: tuple[Gap, ...] = field(default_factory=tuple)
    zero_volume_rows: int = 0
    suspicious: tuple[SuspiciousBar, ...] = field(default_factory=tuple)
    spike_ratio: float = SPIKE_RATIO
    max_listed: int = 5

    @property
    def missing_bars(self) -> int:
        return sum(g.n_missing for g in self.gaps)

    @property
    def longest_gap(self) -> Gap | None:
        return max(self.gaps, key=lambda g: g.n_missing) if self.gaps else None

    def summary(self) -> str:
        first = pd.Timestamp(self.first_ms, unit="ms", tz="UTC")
        last = pd.Timestamp(self.last_ms, unit="ms", tz="UTC")
        lines = [
            f"source:     {self.source}",
            f"rows:       {self.rows:,}",
            f"timeframe:  {self.timeframe}",
            f"span:       {first:%Y-%m-%dT%H:%M}Z .. {last:%Y-%m-%dT%H:%M}Z",
            f"gaps:       {len(self.gaps)} (missing bars: {self.missing_bars:,}"
            + (f", longest: {self.longest_gap})" if self.gaps else ")"),
            f"zero-volume bars: {self.zero_volume_rows:,}",
            f"suspicious bars: {len(self.suspicious):,}"
            + (f" (a price over {self.spike_ratio:g}x or under 1/{self.spike_ratio:g} of the neighbours' "
               "median close)" if self.suspicious else ""),
        ]
        lines += [f"  {bar}" for bar in self.suspicious[: self.max_listed]]
        if len(self.suspicious) > self.max_listed:
            lines.append(f"  ... and {len(self.suspicious) - self.max_listed:,} more")
        return "\n".join(lines)


def validate_raw(df: pd.DataFrame, source: str, timeframe_ms: int | None = None) -> int:
    """Check a raw frame with ``timestamp`` (ms) + OHLCV columns; return the bar length in ms.

    Raises ``BarsError`` at the first problem found, naming the row. Checks: required columns
    present and numeric; timestamps sorted, unique and on the timeframe grid; no NaN/inf;
    prices > 0; high >= max(open, close); low <= min(open, close); high >= low; volume >= 0.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        found = list(df.columns)
        shown = repr(found) if len(repr(found)) <= 200 else f"{repr(found[:8])[:-1]}, ...] ({len(found)} columns)"
        raise BarsError(source, f"missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}, found {shown}")
    if len(df) == 0:
        raise BarsError(source, "no rows (header only, no bars)")
    for col in REQUIRED_COLUMNS:
        if not pd.api.types.is_numeric_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else None
            value = df[col].iloc[row] if row is not None else None
            raise BarsError(source, f"column {col!r} is not numeric (value {value!r})", row)

    ts_float = df["timestamp"].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(ts_float)
    if bad.any():
        raise BarsError(source, "timestamp is NaN/inf", int(np.flatnonzero(bad)[0]))
    ts = ts_float.astype(np.int64)
    if (ts_float != ts).any():
        row = int(np.flatnonzero(ts_float != ts)[0])
        raise BarsError(source, f"timestamp {ts_float[row]!r} is not a whole number of milliseconds", row)

    diffs = np.diff(ts)
    if (diffs < 0).any():
        row = int(np.flatnonzero(diffs < 0)[0]) + 1
        raise BarsError(source, f"timestamps not sorted: {ts[row]} comes after {ts[row - 1]}", row, ts[row])
    if (diffs == 0).any():
        row = int(np.flatnonzero(diffs == 0)[0]) + 1
        raise BarsError(source, "duplicate timestamp", row, ts[row])

    if timeframe_ms is None:
        if len(ts) < 2:
            raise BarsError(source, "cannot infer the timeframe from a single bar; pass timeframe=")
        timeframe_ms = int(np.min(diffs))
    off_grid = ts % timeframe_ms != 0
    if off_grid.any():
        row = int(np.flatnonzero(off_grid)[0])
        raise BarsError(source, f"timestamp off the {ms_to_timeframe(timeframe_ms)} grid", row, ts[row])

    values = df[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64)
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        row, col = (int(x) for x in np.argwhere(not_finite)[0])
        raise BarsError(source, f"{OHLCV_COLUMNS[col]} is {values[row, col]} (NaN/inf)", row, ts[row])
    o, h, lo, c, v = values.T
    checks = [
        ((values[:, :4] <= 0).any(axis=1), "non-positive price"),
        (h < np.maximum(o, c), "high < max(open, close)"),
        (lo > np.minimum(o, c), "low > min(open, close)"),
        (v < 0, "negative volume"),
    ]
    for mask, problem in checks:
        if mask.any():
            row = int(np.flatnonzero(mask)[0])
            detail = ", ".join(f"{name}={values[row, k]:g}" for k, name in enumerate(OHLCV_COLUMNS))
            raise BarsError(source, f"{problem} ({detail})", row, ts[row])
    return int(timeframe_ms)


def find_gaps(timestamps_ms: np.ndarray, timeframe_ms: int) -> tuple[Gap, ...]:
    """Every run of missing bars in a sorted, unique, on-grid timestamp array."""
    ts = np.asarray(timestamps_ms, dtype=np.int64)
    steps = np.diff(ts) // timeframe_ms
    where = np.flatnonzero(steps > 1)
    return tuple(
        Gap(int(ts[i] + timeframe_ms), int(ts[i + 1] - timeframe_ms), int(steps[i] - 1)) for i in where
    )


def find_suspicious(df: pd.DataFrame, ratio: float = SPIKE_RATIO, window: int = SPIKE_WINDOW) -> tuple[SuspiciousBar, ...]:
    """Bars of a validated raw frame whose prices are implausible though formally valid: single-bar spikes.

    Rule: each bar's open, high, low and close is compared with two references, the median close of the
    ``window`` bars before it and the median close of the ``window`` bars after it (neighbouring rows,
    across gaps; at the first / last bar only the side that exists). A price is suspicious when it is
    more than ``ratio`` times BOTH references, or less than 1/``ratio`` of both. Requiring both sides
    keeps real one-way moves (a crash or rally that stays) from being flagged, the medians keep a second
    bad bar nearby from hiding the first, and only one bar in ``window`` can move a median.

    One entry per bar, sorted by row: the column that deviates most (ties: close, open, high, low) and,
    as ``reference``, the side's median nearer to its value.
    """
    if ratio <= 1:
        raise ValueError(f"ratio must be > 1, got {ratio}")
    n = len(df)
    if n < 2:
        return ()
    close = df["close"].to_numpy(np.float64)
    padded = np.concatenate([np.full(window, np.nan), close, np.full(window, np.nan)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, window)  # windows[j] = padded[j : j + window]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN side at the ends of the file
        before = np.nanmedian(windows[:n], axis=1)  # close[i - window : i]
        after = np.nanmedian(windows[window + 1 : window + 1 + n], axis=1)  # close[i + 1 : i + 1 + window]
    columns = ("close", "open", "high", "low")
    prices = df[list(columns)].to_numpy(np.float64)
    log_before = np.log(prices) - np.log(before)[:, None]
    log_after = np.log(prices) - np.log(after)[:, None]
    nearer_up = np.fmin(log_before, log_after)  # NaN only where neither side exists
    nearer_down = np.fmax(log_before, log_after)
    limit = np.log(ratio)
    score = np.where(nearer_up > limit, nearer_up, np.where(nearer_down < -limit, -nearer_down, 0.0))
    rows = np.flatnonzero((score > 0).any(axis=1))
    ts = df["timestamp"].to_numpy(np.int64)
    out = []
    for row in rows:
        k = int(np.argmax(score[row]))
        up = nearer_up[row, k] > limit
        use_before = np.isnan(after[row]) or (not np.isnan(before[row]) and (
            log_before[row, k] <= log_after[row, k] if up else log_before[row, k] >= log_after[row, k]))
        reference = before[row] if use_before else after[row]
        out.append(SuspiciousBar(int(row), int(ts[row]), columns[k], float(prices[row, k]), float(reference)))
    return tuple(out)
