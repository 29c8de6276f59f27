"""The gradient-boosting forecaster (LightGBM): next-h log return in raw units and down / flat / up classes.

A column beside the LSTM's from a model that needs no windowing: the current row of inputs plus a
few lagged rows (``GBMConfig.lags``), one booster per target. LightGBM rather than scikit-learn's
histogram boosting (which the regime classifier uses) for its regression objectives, its
per-round feature and row sampling, and a plain-text model format: the saved boosters are text
files, safe to load (no pickle). Fits are deterministic given ``seed`` and ``threads``
(``deterministic=True``, column-wise histograms), and a row's prediction is the sum of its trees
alone, so it does not depend on which other rows are predicted — ``update`` and the look-ahead
truncation give the same bits as batch ``predict``. The fitted boosters are rebuilt from their saved
text before use, so a model that was saved and loaded predicts exactly what it did in memory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from spotgym.core import FeatureFrame
from spotgym.predictors.base import BasePredictor, NotEnoughData, Rows
from spotgym.predictors.config import GBMConfig
from spotgym.predictors.labels import direction_labels, forward_log_return
from spotgym.predictors.metrics import return_direction_metrics

MIN_TRAIN_ROWS = 50
PAYLOAD = "booster_{target}.txt"
N_IMPORTANCE = 10


class GBMPredictor(BasePredictor):
    """Forecasts from the current (and lagged) rows of feature columns (see ``GBMConfig``).

    Outputs: ``<name>_ret_h<h>`` — the forecast of log(close[t+h] / close[t]) in raw log-return
    units (trained on the return over its training-set std, ``target_scale``, and multiplied
    back); ``<name>_p_down/_p_flat/_p_up`` — class probabilities. Inputs are used as they are
    (trees need no scaling).
    """

    kind = "gbm"
    config: GBMConfig

    def __init__(self, config: GBMConfig, feature_spec=None) -> None:
        super().__init__(config, feature_spec)
        self.boosters: dict[str, lgb.Booster] = {}
        self.target_scale: float = 1.0
        self.flat_threshold: float = 0.0

    @property
    def lookback(self) -> int:
        return 1 + (self.config.lags[-1] if self.config.lags else 0)

    def _is_fitted(self) -> bool:
        return set(self.boosters) == set(self.config.targets)

    def feature_names(self) -> list[str]:
        """Names of the design columns: each input, then each input at each lag (``<col>_lag<k>``)."""
        columns = list(self.input_columns or ())
        return columns + [f"{c}_lag{lag}" for lag in self.config.lags for c in columns]

    def design(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The (rows, inputs * (1 + len(lags))) matrix: row t of ``x``, then rows t - lag (all earlier rows)."""
        return np.hstack([x[rows]] + [x[rows - lag] for lag in self.config.lags])

    # ------------------------------------------------------------------ training
    def _params(self, target: str) -> dict[str, Any]:
        cfg = self.config
        params: dict[str, Any] = {
            "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves, "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": cfg.feature_fraction, "bagging_fraction": cfg.bagging_fraction,
            "bagging_freq": 1 if cfg.bagging_fraction < 1.0 else 0, "lambda_l2": cfg.lambda_l2, "seed": cfg.seed,
            "num_threads": cfg.threads, "deterministic": True, "force_col_wise": True, "verbose": -1,
        }
        if target == "return":
            if cfg.loss == "huber":
                params.update(objective="huber", alpha=1.0, metric="huber")  # delta: one training std
            else:
                params.update(objective="regression", metric="l2")
        else:
            params.update(objective="multiclass", num_class=3, metric="multi_logloss")
        return params

    def _train(self, target: str, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray,
               y_va: np.ndarray) -> tuple[lgb.Booster, int]:
        params = self._params(target)
        train_set = lgb.Dataset(x_tr, y_tr, params={"verbose": -1}, free_raw_data=True)
        kwargs: dict[str, Any] = {}
        if len(y_va):
            kwargs["valid_sets"] = [lgb.Dataset(x_va, y_va, reference=train_set, free_raw_data=True)]
            kwargs["callbacks"] = [lgb.early_stopping(self.config.early_stopping_rounds, first_metric_only=True,
                                                      verbose=False)]
        booster = lgb.train(params, train_set, num_boost_round=self.config.n_estimators, **kwargs)
        rounds = booster.best_iteration if booster.best_iteration > 0 else booster.current_iteration()
        # predict with the booster as saved: save -> load gives the same model, bit for bit
        return lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds)), int(rounds)

    def _fit(self, frame: FeatureFrame, x: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        fwd = forward_log_return(frame.close, cfg.horizon)
        train, val = train[np.isfinite(fwd[train])], val[np.isfinite(fwd[val])]
        if len(train) < MIN_TRAIN_ROWS:
            raise NotEnoughData(f"{cfg.name}: {len(train)} usable training rows (< {MIN_TRAIN_ROWS})")
        scale = float(np.std(fwd[train]))
        self.target_scale = scale if scale > 0 else 1.0
        self.flat_threshold = float(cfg.flat_threshold) if cfg.flat_threshold is not None else \
            float(np.quantile(np.abs(fwd[train]), cfg.flat_quantile))
        x_tr, x_va = self.design(x, train), self.design(x, val)
        boosters, info = {}, {}
        for target in cfg.targets:
            y = fwd / self.target_scale if target == "return" else direction_labels(fwd, self.flat_threshold)
            booster, rounds = self._train(target, x_tr, y[train], x_va, y[val])
            boosters[target] = booster
            info[target] = {"n_iter": rounds}
        self.boosters = boosters
        names = self.feature_names()
        gain = next(iter(boosters.values())).feature_importance("gain")
        top = np.argsort(-gain, kind="stable")[:N_IMPORTANCE]
        self.fit_info = {"n_train": int(len(train)), "n_val": int(len(val)),
                         "n_iter": int(sum(v["n_iter"] for v in info.values())), "targets": info,
                         "importance_gain": [[names[i], float(gain[i])] for i in top if gain[i] > 0],
                         "fit_s": time.perf_counter() - t0}

    # ------------------------------------------------------------------ inference
    def _predict_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        design = self.design(x, rows)
        parts = []
        for target in self.config.targets:
            out = self.boosters[target].predict(design, num_threads=self.config.threads)
            parts.append(out.reshape(len(rows), 1) * self.target_scale if target == "return" else out)
        return np.hstack(parts)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, frame: FeatureFrame, rows: Rows, outputs: np.ndarray, train_rows: Rows) -> dict[str, Any]:
        """The LSTM's metrics (``return_direction_metrics``), on the same rows, so the two compare."""
        cfg = self.config
        return return_direction_metrics(frame.close, self.row_index(rows, len(frame)),
                                        self.row_index(train_rows, len(frame)), outputs, horizon=cfg.horizon,
                                        targets=cfg.targets, flat_threshold=self.flat_threshold,
                                        return_scale=1.0)

    # ------------------------------------------------------------------ persistence
    def _fitted_state(self) -> dict[str, Any]:
        return {"scaler": None, "target_scale": self.target_scale, "flat_threshold": self.flat_threshold,
                "n_features": len(self.feature_names())}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.target_scale = float(state["target_scale"])
        self.flat_threshold = float(state["flat_threshold"])

    def _save_payload(self, folder: Path) -> None:
        for target, booster in self.boosters.items():
            (folder / PAYLOAD.format(target=target)).write_text(booster.model_to_string())

    def _load_payload(self, folder: Path) -> None:
        """Reads the LightGBM text models (plain text: no code runs on load)."""
        boosters = {}
        for target in self.config.targets:
            booster = lgb.Booster(model_str=(folder / PAYLOAD.format(target=target)).read_text())
            if booster.num_feature() != len(self.feature_names()):
                raise ValueError(f"{folder}: the {target} booster takes {booster.num_feature()} features, the "
                                 f"config and inputs give {len(self.feature_names())}")
            boosters[target] = booster
        self.boosters = boosters
