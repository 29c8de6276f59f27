"""Causal normalisation: the value at row t is scaled by statistics of rows <= t only."""

from __future__ import annotations

import numpy as np
import pandas as pd

NORMALIZERS = ("rolling", "expanding", "none")


def causal_zscore(columns: pd.DataFrame, method: str = "rolling", window: int = 500,
                  clip: float | None = 5.0) -> tuple[pd.DataFrame, int]:
    """z-score every column against its own trailing mean and std; return (scaled, warm-up rows).

    ``rolling`` uses the last ``window`` rows including t, ``expanding`` all rows up to t (after
    ``window`` of them). Rows before a full window are NaN (warm-up), a zero std gives NaN rather
    than inf, and values are clipped to ±``clip`` so a single spike cannot dominate the input.
    The warm-up returned is counted from the first defined cell of each column (the caller adds
    the indicator's own warm-up).
    """
    if method not in NORMALIZERS:
        raise ValueError(f"normalize must be one of {NORMALIZERS}, got {method!r}")
    if method == "none":
        return columns, 0
    if window < 2:
        raise ValueError(f"norm_window must be >= 2, got {window}")
    roll = columns.rolling(window, min_periods=window) if method == "rolling" else \
        columns.expanding(min_periods=window)
    mean, std = roll.mean(), roll.std()
    scaled = (columns - mean) / std.where(std > 0)
    if clip is not None:
        scaled = scaled.clip(-clip, clip)
    return scaled.astype(np.float64), window - 1
