"""``FeatureFrame``: the one object the env consumes (features + fill prices + timestamps + symbol)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["FeatureFrame"]


@dataclass(frozen=True, eq=False)
class FeatureFrame:
    """A float32 (rows x columns) feature matrix aligned with the bars it was computed from.

    Row t of ``values`` uses only bars 0..t (the time contract); the env decides on row t and
    fills at ``open[t + 1]``. Cells that are not yet defined (indicator warm-up, rows without an
    out-of-fold prediction) hold NaN, and ``valid[t]`` is False for such rows: nothing is
    silently zero-filled. ``synthetic[t]`` marks a bar inserted for a gap (``gap_policy="fill"``):
    no market existed, so no order fills there. ``symbol`` (e.g. ``"ETH/USDT"``, None when unknown)
    picks the exchange's trading rules for the env.
    """

    values: np.ndarray
    columns: tuple[str, ...]
    index: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    synthetic: np.ndarray = field(default=None)  # type: ignore[assignment]
    valid: np.ndarray = field(default=None)  # type: ignore[assignment]
    symbol: str | None = None

    def __post_init__(self) -> None:
        values = np.ascontiguousarray(self.values, dtype=np.float32)
        if values.ndim != 2:
            raise ValueError(f"FeatureFrame.values must be 2-D (rows, columns), got shape {values.shape}")
        n_rows, n_cols = values.shape
        columns = tuple(str(c) for c in self.columns)
        if len(columns) != n_cols:
            raise ValueError(f"FeatureFrame has {n_cols} value columns but {len(columns)} column names")
        if len(set(columns)) != len(columns):
            dupes = sorted({c for c in columns if columns.count(c) > 1})
            raise ValueError(f"FeatureFrame column names repeat: {dupes}")
        index = pd.DatetimeIndex(self.index)
        if index.tz is None:
            index = index.tz_localize("UTC")
        if len(index) != n_rows:
            raise ValueError(f"FeatureFrame.index has {len(index)} rows, values has {n_rows}")
        set_ = object.__setattr__
        set_(self, "values", values)
        set_(self, "columns", columns)
        set_(self, "index", index)
        for name in ("open", "high", "low", "close", "volume"):
            arr = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if arr.shape != (n_rows,):
                raise ValueError(f"FeatureFrame.{name} must have shape ({n_rows},), got {arr.shape}")
            set_(self, name, arr)
        synthetic = np.zeros(n_rows, bool) if self.synthetic is None else np.asarray(self.synthetic, bool)
        finite = np.isfinite(values).all(axis=1)
        valid = finite if self.valid is None else np.asarray(self.valid, bool) & finite
        for name, arr in (("synthetic", synthetic), ("valid", valid)):
            if arr.shape != (n_rows,):
                raise ValueError(f"FeatureFrame.{name} must have shape ({n_rows},), got {arr.shape}")
        set_(self, "synthetic", synthetic)
        set_(self, "valid", valid)
        if self.symbol is not None and not (isinstance(self.symbol, str) and "/" in self.symbol):
            raise ValueError(f"FeatureFrame.symbol must look like 'BASE/QUOTE' or be None, got {self.symbol!r}")

    # ------------------------------------------------------------------ shape and lookup
    def __len__(self) -> int:
        return self.values.shape[0]

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    @property
    def timestamps_ms(self) -> np.ndarray:
        """Open time of every row as int64 milliseconds since the epoch (UTC)."""
        return self.index.as_unit("ms").asi8.astype(np.int64)

    @property
    def first_valid_row(self) -> int:
        """The first valid row, i.e. the end of the warm-up (-1 if no row is valid).

        It depends on rows up to itself only: an invalid row later on (an exchange halt, a stretch
        without predictions) is masked where it is, never a reason to discard the history before it.
        """
        valid = np.flatnonzero(self.valid)
        return int(valid[0]) if valid.size else -1

    def column(self, name: str) -> np.ndarray:
        """One feature column (a view) by name."""
        try:
            return self.values[:, self.columns.index(name)]
        except ValueError:
            raise KeyError(f"no column {name!r} in FeatureFrame; columns are {list(self.columns)}") from None

    # ------------------------------------------------------------------ derived frames
    def slice(self, start: int | None = None, stop: int | None = None) -> FeatureFrame:
        """Rows [start, stop) as a new frame (arrays copied, so the result owns its memory)."""
        sl = slice(start, stop)
        return FeatureFrame(
            values=self.values[sl].copy(),
            columns=self.columns,
            index=self.index[sl],
            open=self.open[sl].copy(),
            high=self.high[sl].copy(),
            low=self.low[sl].copy(),
            close=self.close[sl].copy(),
            volume=self.volume[sl].copy(),
            synthetic=self.synthetic[sl].copy(),
            valid=self.valid[sl].copy(),
            symbol=self.symbol,
        )

    def with_columns(self, names: list[str] | tuple[str, ...], values: np.ndarray,
                     valid: np.ndarray | None = None) -> FeatureFrame:
        """A new frame with extra columns appended (e.g. out-of-fold predictor outputs)."""
        values = np.asarray(values, dtype=np.float32)
        if values.ndim == 1:
            values = values[:, None]
        if values.shape != (len(self), len(names)):
            raise ValueError(f"with_columns: expected values of shape {(len(self), len(names))}, got {values.shape}")
        row_valid = self.valid if valid is None else self.valid & np.asarray(valid, bool)
        return FeatureFrame(
            values=np.hstack([self.values, values]),
            columns=self.columns + tuple(names),
            index=self.index,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            synthetic=self.synthetic,
            valid=row_valid,
            symbol=self.symbol,
        )

    def to_pandas(self) -> pd.DataFrame:
        """Features plus prices as a DataFrame indexed by bar open time (for inspection)."""
        df = pd.DataFrame(self.values, index=self.index, columns=list(self.columns))
        for name in ("open", "high", "low", "close", "volume", "synthetic", "valid"):
            df[f"_{name}"] = getattr(self, name)
        return df

    def __repr__(self) -> str:
        span = f"{self.index[0]} .. {self.index[-1]}" if len(self) else "empty"
        return (f"FeatureFrame({self.symbol or 'symbol?'}, rows={len(self)}, columns={self.n_features}, span={span}, "
                f"valid_rows={int(self.valid.sum())})")
