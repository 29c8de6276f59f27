"""The ``Predictor`` protocol and what every predictor shares: input columns, row handling,
live streaming (``update``) and persistence with metadata (``save``; ``spotgym.predictors.registry.load_predictor``
reads it back)."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from spotgym.core import FeatureFrame
from spotgym.features import FeatureSpec, build_features
from spotgym.predictors.config import PredictorConfig

FORMAT_VERSION = 1
META_FILE = "meta.json"
Rows = range | slice | np.ndarray | list[int]
OHLCV = ("open", "high", "low", "close", "volume")


class NotEnoughData(ValueError):
    """Too few usable training rows to fit (the stacker leaves that block without predictions)."""


@runtime_checkable
class Predictor(Protocol):
    """A model whose outputs become feature columns.

    ``fit(frame, rows)`` trains on ``rows`` of a ``FeatureFrame`` (labels come from its close
    prices); ``predict(frame, rows)`` returns a float32 (len(rows), len(output_columns)) array,
    NaN where the inputs are not all finite; ``update(bar)`` appends one live bar and returns the
    output row that ``predict`` gives for it on the same history.
    """

    config: PredictorConfig
    input_columns: tuple[str, ...] | None

    @property
    def output_columns(self) -> tuple[str, ...]: ...

    def fit(self, frame: FeatureFrame, rows: Rows, val_rows: Rows | None = None) -> Predictor: ...

    def predict(self, frame: FeatureFrame, rows: Rows | None = None) -> np.ndarray: ...

    def update(self, bar: pd.Series | Mapping[str, Any] | pd.DataFrame) -> np.ndarray: ...

    def save(self, path: str | Path) -> Path: ...


class BasePredictor:
    """Shared machinery; subclasses implement ``_fit``, ``_predict_rows``, ``evaluate`` and the payload I/O.

    ``lookback``: rows of inputs one prediction reads (the row itself and ``lookback - 1`` before
    it). A row is predictable when all those input cells are finite; other rows get NaN.
    ``feature_spec``: the indicator ``FeatureSpec`` the input frame was built with — needed by
    ``update`` (which rebuilds the features of the streamed bars) and checked by ``load_predictor``.
    """

    kind: ClassVar[str]

    def __init__(self, config: PredictorConfig, feature_spec: FeatureSpec | None = None) -> None:
        self.config = config
        self.feature_spec = feature_spec
        self.input_columns: tuple[str, ...] | None = None
        self.fit_info: dict[str, Any] = {}
        self._history: pd.DataFrame | None = None

    # ------------------------------------------------------------------ description
    @property
    def output_columns(self) -> tuple[str, ...]:
        return self.config.output_columns

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def lookback(self) -> int:
        return 1

    @property
    def fitted(self) -> bool:
        return self.input_columns is not None and self._is_fitted()

    def __repr__(self) -> str:
        state = f"{len(self.input_columns)} inputs" if self.input_columns else "unfitted"
        return f"{type(self).__name__}({self.config.name!r}, {state}, outputs={list(self.output_columns)})"

    # ------------------------------------------------------------------ inputs and rows
    def _resolve_inputs(self, frame: FeatureFrame) -> tuple[str, ...]:
        if self.config.inputs is not None:
            return self.config.inputs
        own = set(self.output_columns)
        return tuple(c for c in frame.columns if c not in own)

    def input_matrix(self, frame: FeatureFrame) -> np.ndarray:
        """The (rows, inputs) float64 matrix of this predictor's input columns; a clear error if any is missing."""
        columns = self.input_columns if self.input_columns is not None else self._resolve_inputs(frame)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.config.name}: the frame lacks input column(s) {missing} the predictor "
                             f"{'was trained on' if self.input_columns else 'names'}; frame columns: "
                             f"{list(frame.columns)}")
        idx = [frame.columns.index(c) for c in columns]
        return frame.values[:, idx].astype(np.float64)

    def predictable(self, x: np.ndarray) -> np.ndarray:
        """Rows whose ``lookback`` input rows are all finite (a causal mask)."""
        finite = np.isfinite(x).all(axis=1)
        if self.lookback == 1:
            return finite
        bad = np.concatenate([[0], np.cumsum(~finite)])
        ok = np.zeros(len(x), bool)
        stop = np.arange(self.lookback, len(x) + 1)
        ok[self.lookback - 1:] = bad[stop] - bad[stop - self.lookback] == 0
        return ok

    @staticmethod
    def row_index(rows: Rows | None, n: int) -> np.ndarray:
        """``rows`` (range, slice, int array/list or boolean mask; None = all) as sorted unique int64 indices."""
        if rows is None:
            return np.arange(n, dtype=np.int64)
        if isinstance(rows, slice):
            return np.arange(n, dtype=np.int64)[rows]
        arr = np.asarray(rows)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise ValueError(f"a boolean row mask needs shape ({n},), got {arr.shape}")
            return np.flatnonzero(arr).astype(np.int64)
        arr = np.unique(arr.astype(np.int64))
        if arr.size and (arr[0] < 0 or arr[-1] >= n):
            raise ValueError(f"rows must lie in [0, {n}), got [{arr[0]}, {arr[-1]}]")
        return arr

    # ------------------------------------------------------------------ fit / predict
    def fit(self, frame: FeatureFrame, rows: Rows, val_rows: Rows | None = None) -> BasePredictor:
        """Train on ``rows`` (early stopping on ``val_rows``) using only those rows' inputs and labels.

        Rows whose inputs are not finite or whose label runs past the data are skipped. The labels
        of row t look ``horizon`` bars ahead: callers keep ``horizon`` rows between the training
        rows and anything predicted with the model (the stacker's purge does).
        """
        self.input_columns = self._resolve_inputs(frame)
        x = self.input_matrix(frame)
        ok = self.predictable(x)
        train = self.row_index(rows, len(frame))
        val = self.row_index(val_rows, len(frame)) if val_rows is not None else np.empty(0, np.int64)
        self._fit(frame, x, train[ok[train]], val[ok[val]])
        return self

    def predict(self, frame: FeatureFrame, rows: Rows | None = None) -> np.ndarray:
        """Outputs for ``rows`` (default all) as float32 (len(rows), len(output_columns)); NaN where not predictable."""
        if not self.fitted:
            raise RuntimeError(f"{self.config.name}: predict before fit (or load_predictor)")
        x = self.input_matrix(frame)
        idx = self.row_index(rows, len(frame))
        out = np.full((len(idx), len(self.output_columns)), np.nan, dtype=np.float32)
        ok = self.predictable(x)[idx]
        if ok.any():
            out[ok] = self._predict_rows(x, idx[ok]).astype(np.float32)
        return out

    def evaluate(self, frame: FeatureFrame, rows: Rows, outputs: np.ndarray, train_rows: Rows) -> dict[str, Any]:
        """Metrics of ``outputs`` (this predictor's predictions on ``rows``) against naive baselines."""
        raise NotImplementedError

    # subclass hooks
    def _is_fitted(self) -> bool:
        raise NotImplementedError

    def _fit(self, frame: FeatureFrame, x: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _fitted_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _save_payload(self, folder: Path) -> None:
        raise NotImplementedError

    def _load_payload(self, folder: Path) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ live streaming
    def begin_stream(self, history: pd.DataFrame, feature_spec: FeatureSpec | None = None) -> None:
        """Start live use from ``history`` (bars as from ``load_bars``; may be empty of rows but not of columns).

        ``feature_spec``: the indicator spec of the inputs (default: the one the model was fitted
        with). Each ``update`` then appends one bar and rebuilds the indicator features of the whole
        history — exact equality with batch ``predict`` on the same bars at O(history) cost per bar
        (about 0.2 s for 64k 1h bars of the default indicators on one core, small next to a bar's
        duration; EMAs and expanding statistics have unbounded memory, so a shorter window would
        not be exact).
        """
        if feature_spec is not None:
            self.feature_spec = feature_spec
        if self.feature_spec is None:
            raise ValueError(f"{self.config.name}: streaming needs the indicator FeatureSpec of the inputs; "
                             "pass feature_spec=")
        missing = [c for c in OHLCV if c not in history.columns]
        if missing:
            raise ValueError(f"history lacks bar column(s) {missing}")
        keep = [c for c in (*OHLCV, "synthetic") if c in history.columns]
        self._history = history[keep].copy()

    def update(self, bar: pd.Series | Mapping[str, Any] | pd.DataFrame) -> np.ndarray:
        """Append one closed bar and return this predictor's outputs for it (float32, NaN if not predictable).

        ``bar``: a row of a bars DataFrame (``bars.iloc[i]``, named by its open time), a one-row
        DataFrame, or a mapping with ``timestamp`` (ms or a time) and OHLCV. Equals
        ``predict(build_features(history + bar, feature_spec), [last row])``.
        """
        if self._history is None:
            raise RuntimeError(f"{self.config.name}: call begin_stream(history) before update(bar)")
        row = _bar_frame(bar, self._history)
        if len(self._history) and row.index[0] <= self._history.index[-1]:
            raise ValueError(f"bar at {row.index[0]} is not after the last streamed bar {self._history.index[-1]}")
        self._history = pd.concat([self._history, row]) if len(self._history) else row
        frame = build_features(self._history, self.feature_spec)
        return self.predict(frame, [len(frame) - 1])[0]

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict[str, Any]:
        """What ``save`` writes beside the weights: config, inputs, fitted state (scaler, thresholds), versions."""
        return {
            "format": FORMAT_VERSION,
            "kind": self.config.kind,
            "config": self.config.to_config(),
            "config_hash": self.config.hash,
            "input_columns": list(self.input_columns or ()),
            "output_columns": list(self.output_columns),
            "feature_spec": self.feature_spec.to_config() if self.feature_spec is not None else None,
            "feature_spec_hash": self.feature_spec.hash if self.feature_spec is not None else None,
            "state": self._fitted_state(),
            "fit_info": self.fit_info,
            "versions": library_versions(),
        }

    def save(self, path: str | Path) -> Path:
        """Write the fitted predictor into the folder ``path`` (``meta.json`` + the model payload)."""
        if not self.fitted:
            raise RuntimeError(f"{self.config.name}: save before fit")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_payload(folder)
        (folder / META_FILE).write_text(json.dumps(self.metadata(), indent=1, default=_json_default))
        return folder


def library_versions() -> dict[str, str]:
    """Versions that can change a fitted model's numbers (or a baseline's): spotgym, python, numpy, torch,
    scikit-learn, LightGBM, statsmodels (the last two read from the installed metadata, without importing them)."""
    import sklearn
    import torch

    import spotgym
    return {"spotgym": spotgym.__version__, "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "sklearn": sklearn.__version__, "lightgbm": _dist_version("lightgbm"),
            "statsmodels": _dist_version("statsmodels")}


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _bar_frame(bar: pd.Series | Mapping[str, Any] | pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """One bar as a one-row DataFrame with the columns of ``like``, indexed by its UTC open time."""
    if isinstance(bar, pd.DataFrame):
        if len(bar) != 1:
            raise ValueError(f"update takes one bar, got a DataFrame of {len(bar)} rows")
        when, values = bar.index[0], bar.iloc[0]
    elif isinstance(bar, pd.Series) and "timestamp" not in bar.index:
        when, values = bar.name, bar
    else:
        values = bar
        when = values.get("timestamp", values.get("time"))
        if isinstance(when, int | np.integer):
            when = pd.Timestamp(int(when), unit="ms")
    if when is None:
        raise ValueError("a bar needs its open time: a Series named by it, or a 'timestamp' entry")
    ts = pd.Timestamp(when)
    ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
    data: dict[str, Any] = {}
    for c in like.columns:
        if c == "synthetic":
            data[c] = [bool(values.get(c, False))]
        elif c in values:
            data[c] = [float(values[c])]
        else:
            raise ValueError(f"bar lacks {c!r}")
    index = pd.DatetimeIndex([ts], name=like.index.name)
    if isinstance(like.index, pd.DatetimeIndex) and like.index.unit != index.unit:
        index = index.as_unit(like.index.unit)
    return pd.DataFrame(data, index=index)
