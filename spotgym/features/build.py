"""Bars -> ``FeatureFrame``: indicator columns, causally normalised, warm-up rows marked."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spotgym.core import FeatureFrame
from spotgym.features.indicators import INDICATORS, Column
from spotgym.features.normalize import causal_zscore
from spotgym.features.spec import FeatureSpec, default_spec

__all__ = ["build_features", "indicator_columns"]


def indicator_columns(bars: pd.DataFrame, spec: FeatureSpec) -> list[Column]:
    """Raw indicator columns of ``spec`` on ``bars``, in declaration order."""
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lack column(s) {missing}; load them with spotgym.data.load_bars")
    columns: list[Column] = []
    for ind in spec.indicators:
        columns.extend(INDICATORS[ind.name](bars, **dict(ind.params)))
    names = [c.name for c in columns]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"the feature spec produces duplicate columns {dupes}: declare each indicator once")
    return columns


def build_features(bars: pd.DataFrame, spec: FeatureSpec | None = None) -> FeatureFrame:
    """The indicator ``FeatureFrame`` of ``bars`` (from ``spotgym.data.load_bars``) under ``spec``.

    Every column at row t depends on bars 0..t only (``assert_no_lookahead`` checks it in the
    tests). ``z``-scaled columns are z-scored against their trailing statistics; cells before
    an indicator's warm-up plus the normalisation window are NaN and those rows are not
    ``valid``. ``None`` means ``default_spec()``. The frame's ``symbol`` is ``bars.attrs["symbol"]``.
    Predictor columns on top: ``spotgym.predictors.build_frame``.
    """
    spec = default_spec() if spec is None else spec
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"spec must be a spotgym.features.FeatureSpec (indicators only), got {type(spec).__name__}; "
                        "for predictor columns use spotgym.predictors.build_frame(bars, spec)")
    return _indicator_frame(bars, spec)


def _indicator_frame(bars: pd.DataFrame, spec: FeatureSpec) -> FeatureFrame:
    columns = indicator_columns(bars, spec)
    z_cols = [c for c in columns if c.scale == "z"]
    scaled: dict[str, pd.Series] = {}
    if z_cols:
        z, _ = causal_zscore(pd.DataFrame({c.name: c.values for c in z_cols}, index=bars.index),
                             spec.normalize, spec.norm_window, spec.clip)
        scaled.update({name: z[name] for name in z.columns})
    values = np.empty((len(bars), len(columns)), dtype=np.float32)
    for j, col in enumerate(columns):
        values[:, j] = (scaled[col.name] if col.scale == "z" else col.values).to_numpy(np.float64)
    synthetic = bars["synthetic"].to_numpy(bool) if "synthetic" in bars.columns else None
    return FeatureFrame(
        values=values,
        columns=tuple(c.name for c in columns),
        index=bars.index,
        open=bars["open"].to_numpy(),
        high=bars["high"].to_numpy(),
        low=bars["low"].to_numpy(),
        close=bars["close"].to_numpy(),
        volume=bars["volume"].to_numpy(),
        synthetic=synthetic,
        symbol=bars.attrs.get("symbol"),
    )
