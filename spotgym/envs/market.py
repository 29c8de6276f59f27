"""``MarketData``: the arrays the kernels read, built from a ``FeatureFrame`` and able to grow.

The env never reads a ``FeatureFrame`` in its hot path: it reads the flat float32 feature
matrix (``vflat``), the (T, 3) float64 ``px`` = open, close, volume, and the (T, 3) ``hops`` table
(``nb.hops_nb``: which rows can carry a decision, and where an order decided on a row fills).
For backtests and training the feature matrix is a view of the frame (no copy). A live runner
appends each closed bar with ``append`` (amortised O(rows appended): capacity doubles when
full), so the same env and the same kernels build observations from a growing frame.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from spotgym.core import FeatureFrame
from spotgym.envs import nb

__all__ = ["MarketData", "decision_rows"]


class MarketData:
    """Feature rows, fill prices and validity for the env; ``append`` grows it (live feeds)."""

    def __init__(self, frame: FeatureFrame, window: int) -> None:
        if not isinstance(frame, FeatureFrame):
            raise TypeError(f"the env needs a FeatureFrame (e.g. spotgym.features.build_features(bars)), "
                            f"got {type(frame).__name__}")
        if frame.n_features < 1:
            raise ValueError("the FeatureFrame has no feature columns")
        self.columns: tuple[str, ...] = frame.columns
        self.symbol = frame.symbol
        self.window = int(window)
        self.n_features = frame.n_features
        self._n = len(frame)
        self._values = frame.values  # C-contiguous float32, shared with the frame until it grows
        self._px = np.ascontiguousarray(np.stack([frame.open, frame.close, frame.volume], axis=1))
        self._valid = frame.valid.copy()
        self._synthetic = frame.synthetic.copy()
        self._timestamps = frame.timestamps_ms.copy()
        self._refresh()

    # ------------------------------------------------------------------ views read by the env
    def _refresh(self) -> None:
        n = self._n
        self.values = self._values[:n]
        self.vflat = self._values.reshape(-1)[: n * self.n_features]
        self.px = self._px[:n]
        self.valid = self._valid[:n]
        self.synthetic = self._synthetic[:n]
        self.timestamps_ms = self._timestamps[:n]
        self.window_ok = nb.window_ok_nb(self.valid, self.window)
        self.hops = nb.hops_nb(self.window_ok, self.synthetic)
        self.decidable = self.hops[:, nb.DECIDABLE].astype(bool)

    def __len__(self) -> int:
        return self._n

    @property
    def bar_ms(self) -> int:
        """The bar length: the shortest step between open times (one hour when there is a single row)."""
        if self._n < 2:
            return 3_600_000
        return int(np.diff(self.timestamps_ms).min())

    @property
    def open(self) -> np.ndarray:
        return self.px[:, 0]

    @property
    def close(self) -> np.ndarray:
        return self.px[:, 1]

    @property
    def volume(self) -> np.ndarray:
        return self.px[:, 2]

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.to_datetime(self.timestamps_ms, unit="ms", utc=True)

    # ------------------------------------------------------------------ growth (live seam)
    def append(self, rows: FeatureFrame) -> None:
        """Append closed bars (a ``FeatureFrame`` with the same columns, later open times).

        Feature values of the new rows must have been computed from bars up to each row only
        (the caller's feature pipeline guarantees it, as ``build_features`` does).
        """
        if rows.symbol is not None and self.symbol is not None and rows.symbol != self.symbol:
            raise ValueError(f"appended rows are {rows.symbol} bars, the env trades {self.symbol}")
        if tuple(rows.columns) != self.columns:
            raise ValueError(f"appended rows have columns {list(rows.columns)}, the env was built with "
                             f"{list(self.columns)}")
        k = len(rows)
        if k == 0:
            return
        ts = rows.timestamps_ms
        if self._n and ts[0] <= self._timestamps[self._n - 1]:
            raise ValueError(f"appended rows must start after the last row "
                             f"({pd.Timestamp(int(self._timestamps[self._n - 1]), unit='ms', tz='UTC')}), "
                             f"got {rows.index[0]}")
        need = self._n + k
        if need > self._values.shape[0]:
            cap = max(need, 2 * self._values.shape[0], 64)
            self._values = _grow(self._values[: self._n], cap)
            self._px = _grow(self._px[: self._n], cap)
            self._valid = _grow(self._valid[: self._n], cap)
            self._synthetic = _grow(self._synthetic[: self._n], cap)
            self._timestamps = _grow(self._timestamps[: self._n], cap)
        sl = slice(self._n, need)
        self._values[sl] = rows.values
        self._px[sl, 0] = rows.open
        self._px[sl, 1] = rows.close
        self._px[sl, 2] = rows.volume
        self._valid[sl] = rows.valid
        self._synthetic[sl] = rows.synthetic
        self._timestamps[sl] = ts
        self._n = need
        self._refresh()


def _grow(arr: np.ndarray, capacity: int) -> np.ndarray:
    out = np.empty((capacity,) + arr.shape[1:], dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


def decision_rows(frame: FeatureFrame, window: int) -> range:
    """The rows an env with this ``window`` can trade over: from the first decidable row (a full valid
    observation window on a real bar, i.e. past the warm-up) to the end of the frame. Masked rows later
    on (a halt, a stretch without predictions) stay inside: the env holds through them.

    Raises ValueError when fewer than two rows are decidable (the data are shorter than the warm-up
    plus one observation window)."""
    if not isinstance(frame, FeatureFrame):
        raise TypeError(f"decision_rows needs a FeatureFrame, got {type(frame).__name__}")
    ok = nb.window_ok_nb(frame.valid, int(window)) & ~frame.synthetic
    idx = np.flatnonzero(ok)
    if idx.size < 2:
        raise ValueError(f"too few decidable rows in the feature frame ({idx.size}): the data are shorter than "
                         f"the warm-up plus one observation window of {window} rows")
    return range(int(idx[0]), len(frame))
