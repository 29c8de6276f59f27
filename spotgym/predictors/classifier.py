"""The regime classifier: gradient boosting on the current feature row, labels from the future window.

scikit-learn's ``HistGradientBoostingClassifier`` rather than LightGBM / XGBoost: it is already a
dependency, handles tens of thousands of rows in about a second per model, early-stops on an
explicit validation set (``X_val``), and is deterministic given ``random_state`` and the thread
count. Its per-row ``predict_proba`` does not depend on which other rows are predicted.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from spotgym.core import FeatureFrame
from spotgym.predictors.base import BasePredictor, NotEnoughData, Rows
from spotgym.predictors.config import RegimeConfig
from spotgym.predictors.labels import trend_labels, vol_labels
from spotgym.predictors.metrics import classification_metrics

PAYLOAD = "model.pkl"
MIN_TRAIN_ROWS = 50
N_CLASSES = {"trend": 3, "vol": 2}


class RegimeClassifier(BasePredictor):
    """Class probabilities of the future market state (see ``RegimeConfig``), one model per target.

    Outputs: ``<name>_p_trend_down/_p_range/_p_trend_up`` and ``<name>_p_vol_high``. The inputs
    are used as they are (trees need no scaling), so the saved scaler state is empty.
    """

    kind = "regime"
    config: RegimeConfig

    def __init__(self, config: RegimeConfig, feature_spec=None) -> None:
        super().__init__(config, feature_spec)
        self.models: dict[str, HistGradientBoostingClassifier] = {}

    def _is_fitted(self) -> bool:
        return set(self.models) == set(self.config.targets)

    def labels(self, close: np.ndarray, target: str) -> np.ndarray:
        """Integer-valued (float, NaN where unknown) labels of ``target`` for every row."""
        cfg = self.config
        if target == "trend":
            return trend_labels(close, cfg.horizon, cfg.trend_k, cfg.vol_window)
        return vol_labels(close, cfg.horizon, cfg.vol_window)

    def _fit(self, frame: FeatureFrame, x: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        models, info = {}, {}
        for target in cfg.targets:
            y = self.labels(frame.close, target)
            tr, va = train[np.isfinite(y[train])], val[np.isfinite(y[val])]
            if len(tr) < MIN_TRAIN_ROWS or len(np.unique(y[tr])) < 2:
                raise NotEnoughData(f"{cfg.name}: {len(tr)} labelled training rows for {target!r} "
                                    f"(need {MIN_TRAIN_ROWS} and two classes)")
            va = va[np.isin(y[va], np.unique(y[tr]))]  # a class never seen in training cannot be scored
            model = HistGradientBoostingClassifier(
                max_iter=cfg.max_iter, learning_rate=cfg.learning_rate, max_leaf_nodes=cfg.max_leaf_nodes,
                min_samples_leaf=cfg.min_samples_leaf, l2_regularization=cfg.l2_regularization,
                early_stopping=len(va) > 0, n_iter_no_change=cfg.n_iter_no_change, scoring="loss",
                random_state=cfg.seed)
            kwargs = {"X_val": x[va], "y_val": y[va].astype(int)} if len(va) else {}
            with threadpool_limits(cfg.threads, user_api="openmp"):
                model.fit(x[tr], y[tr].astype(int), **kwargs)
            models[target] = model
            info[target] = {"n_train": int(len(tr)), "n_val": int(len(va)), "n_iter": int(model.n_iter_)}
        self.models = models
        self.fit_info = {"n_train": int(len(train)), "n_val": int(len(val)),
                         "n_iter": int(sum(v["n_iter"] for v in info.values())), "targets": info,
                         "fit_s": time.perf_counter() - t0}

    def _predict_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        parts = []
        with threadpool_limits(self.config.threads, user_api="openmp"):
            for target in self.config.targets:
                model = self.models[target]
                proba = np.zeros((len(rows), N_CLASSES[target]))
                proba[:, model.classes_.astype(int)] = model.predict_proba(x[rows])
                parts.append(proba if target == "trend" else proba[:, 1:2])
        return np.hstack(parts)

    def evaluate(self, frame: FeatureFrame, rows: Rows, outputs: np.ndarray, train_rows: Rows) -> dict[str, Any]:
        cfg = self.config
        idx = self.row_index(rows, len(frame))
        tr = self.row_index(train_rows, len(frame))
        finite = np.isfinite(outputs).all(axis=1)
        metrics: dict[str, Any] = {}
        col, n_eval = 0, 0
        for target in cfg.targets:
            y = self.labels(frame.close, target)
            ok = finite & np.isfinite(y[idx])
            if target == "trend":
                proba, col = outputs[ok, col:col + 3].astype(np.float64), col + 3
            else:
                p_high = outputs[ok, col].astype(np.float64)
                proba, col = np.column_stack([1.0 - p_high, p_high]), col + 1
            # persistence: the most recent label that is fully known at t (row t - h)
            lagged = np.full(len(y), np.nan)
            lagged[cfg.horizon:] = y[: len(y) - cfg.horizon]
            train_y = y[tr][np.isfinite(y[tr])].astype(int)
            metrics.update(classification_metrics(f"{target}_", y[idx][ok].astype(int), proba, train_y,
                                                  lagged[idx][ok]))
            n_eval = max(n_eval, int(ok.sum()))
        return {"n_eval": n_eval, **metrics}

    def _fitted_state(self) -> dict[str, Any]:
        return {"scaler": None, "classes": {t: m.classes_.astype(int).tolist() for t, m in self.models.items()}}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self._classes = state.get("classes", {})

    def _save_payload(self, folder: Path) -> None:
        with open(folder / PAYLOAD, "wb") as fh:
            pickle.dump(self.models, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def _load_payload(self, folder: Path) -> None:
        """Unpickles the scikit-learn models: load only folders you trust (pickle runs code)."""
        with open(folder / PAYLOAD, "rb") as fh:
            self.models = pickle.load(fh)
