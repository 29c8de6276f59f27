"""Validation of raw OHLCV bars: every problem is reported with file, row and what is wrong."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from spotgym.data.timeframes import ms_to_timeframe

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV_COLUMNS = (*PRICE_COLUMNS, "volume")
REQUIRED_COLUMNS = ("timestamp", *OHLCV_COLUMNS)


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
class BarsReport:
    """What ``spotgym data check`` prints: size, span, timeframe, gaps, zero-volume bars."""

    source: str
    rows: int
    timeframe: str
    first_ms: int
    last_ms: int
    gaps: tuple[Gap, ...] = field(default_factory=tuple)
    zero_volume_rows: int = 0

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
        ]
        return "\n".join(lines)


def validate_raw(df: pd.DataFrame, source: str, timeframe_ms: int | None = None) -> int:
    """Check a raw frame with ``timestamp`` (ms) + OHLCV columns; return the bar length in ms.

    Raises ``BarsError`` at the first problem found, naming the row. Checks: required columns
    present and numeric; timestamps sorted, unique and on the timeframe grid; no NaN/inf;
    prices > 0; high >= max(open, close); low <= min(open, close); high >= low; volume >= 0.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise BarsError(source, f"missing column(s) {missing}; expected {list(REQUIRED_COLUMNS)}, found {list(df.columns)}")
    for col in REQUIRED_COLUMNS:
        if not pd.api.types.is_numeric_dtype(df[col]):
            bad = pd.to_numeric(df[col], errors="coerce").isna() & df[col].notna()
            row = int(np.flatnonzero(bad.to_numpy())[0]) if bad.any() else None
            value = df[col].iloc[row] if row is not None else None
            raise BarsError(source, f"column {col!r} is not numeric (value {value!r})", row)
    if len(df) == 0:
        raise BarsError(source, "no rows")

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
