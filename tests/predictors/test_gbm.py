"""The LightGBM forecaster on series whose next return is a known function of an input.

The generic tests (look-ahead checker, in-sample leak caught, streaming = batch, save/load, leaked
signal learned) run over every predictor kind, gbm included, in the other files of this folder.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from spotgym.core import FeatureFrame
from spotgym.predictors import (
    GBMConfig,
    GBMPredictor,
    StackingSpec,
    load_predictor,
    make_predictor,
    oof_predictions,
)

N = 9000
A, SIGMA = 0.004, 0.002  # next return = A * signal + N(0, SIGMA): signal std 0.004, noise 0.002
CONFIG = GBMConfig(targets=("return",), n_estimators=200, learning_rate=0.1, num_leaves=7, min_data_in_leaf=50,
                   early_stopping_rounds=20)
TRAIN, VAL, TEST = range(0, 6000), range(6000, 7000), np.arange(7000, N - 1)


def _frame(lag: int, seed: int = 0) -> FeatureFrame:
    """Columns ``x`` (the signal source) and ``junk`` (noise); log(close[t+1] / close[t]) = A * x[t - lag] + noise."""
    rng = np.random.default_rng(seed)
    x, junk = rng.normal(size=N), rng.normal(size=N)
    ret = np.zeros(N)  # ret[t]: the return from row t to row t + 1
    ret[lag:] = A * x[: N - lag] + rng.normal(0.0, SIGMA, N - lag)
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(ret[:-1])]))
    index = pd.date_range("2024-01-01", periods=N, freq="1h", tz="UTC")
    return FeatureFrame(values=np.column_stack([x, junk]), columns=("x", "junk"), index=index, open=close,
                        high=close, low=close, close=close, volume=np.ones(N))


def _oracle(frame: FeatureFrame, lag: int) -> np.ndarray:
    x = frame.values[:, 0].astype(np.float64)
    return A * x[TEST - lag]


@pytest.mark.parametrize("lag, lags", [(0, ()), (2, (1, 2))], ids=["current-row", "lagged-row"])
def test_recovers_a_known_linear_signal_in_raw_units(lag, lags):
    """The forecast tracks A * x[t - lag] in raw log-return units, and errs on the actual return by little more
    than the noise: tolerances from the data (the oracle's own error, the spread of the signal)."""
    frame = _frame(lag)
    model = make_predictor(replace(CONFIG, lags=lags)).fit(frame, TRAIN, val_rows=VAL)
    forecast = model.predict(frame, TEST)[:, 0].astype(np.float64)
    oracle = _oracle(frame, lag)
    actual = np.log(frame.close[TEST + 1] / frame.close[TEST])
    mse_oracle = np.mean((actual - oracle) ** 2)  # ~ SIGMA^2: what no forecast can remove
    mse_zero = np.mean(actual ** 2)  # ~ A^2 + SIGMA^2
    # it removes at least 98 % of the error the zero forecast leaves above the irreducible noise (seen: 99.7 %)
    assert np.mean((actual - forecast) ** 2) < mse_oracle + 0.02 * (mse_zero - mse_oracle)
    assert np.sqrt(np.mean((forecast - oracle) ** 2)) < 0.15 * np.std(oracle)  # seen: 0.07
    slope = np.polyfit(oracle, forecast, 1)[0]  # 1 in raw units; in z units it would be 1 / std(return) ~ 220
    assert 0.9 < slope < 1.05  # seen: 0.97-0.98 (trees shrink the tails a little)
    assert model.fit_info["importance_gain"][0][0] == ("x" if lag == 0 else "x_lag2")  # the lag looks back
    if lag:  # without the lagged rows the signal is out of reach
        blind = make_predictor(CONFIG).fit(frame, TRAIN, val_rows=VAL).predict(frame, TEST)[:, 0]
        assert abs(np.corrcoef(blind, oracle)[0, 1]) < 0.1


def test_save_load_round_trip_and_determinism(tmp_path):
    frame = _frame(2)
    config = replace(CONFIG, lags=(1, 2), targets=("return", "direction"), n_estimators=40)
    model = make_predictor(config).fit(frame, TRAIN, val_rows=VAL)
    assert isinstance(model, GBMPredictor) and model.lookback == 3
    assert model.output_columns == ("gbm_ret_h1", "gbm_p_down", "gbm_p_flat", "gbm_p_up")
    before = model.predict(frame)
    assert np.isnan(before[:2]).all() and np.isfinite(before[2:]).all()  # rows 0, 1 lack a lagged row
    np.testing.assert_allclose(before[2:, 1:].sum(axis=1), 1.0, rtol=1e-5)
    loaded = load_predictor(model.save(tmp_path / "gbm"), frame=frame)
    np.testing.assert_array_equal(loaded.predict(frame), before)
    assert loaded.target_scale == model.target_scale and loaded.flat_threshold == model.flat_threshold
    again = make_predictor(config).fit(frame, TRAIN, val_rows=VAL).predict(frame)
    np.testing.assert_array_equal(again, before)  # same seed, same bits
    other = make_predictor(replace(config, seed=1)).fit(frame, TRAIN, val_rows=VAL).predict(frame)
    assert not np.array_equal(other, before)  # the seed drives the row and column sampling


def test_stacked_out_of_fold_with_its_baselines():
    """Through the stacker: out-of-fold columns, and fold metrics against zero, persistence and ARIMA — which sees
    only the (serially independent) returns, so it is no better than the zero forecast here, and the GBM is."""
    frame = _frame(0)
    spec = StackingSpec((replace(CONFIG, n_estimators=60),), refit_every=2000, min_train=4000, val_size=500,
                        arima={"orders": [[1, 0, 0]], "max_train": 2000})
    result = oof_predictions(frame, spec, cache=False)
    assert result.columns == ("gbm_ret_h1",) and result.has_oof.sum() == N - 4000 - 500 - 2
    folds = result.folds
    assert len(folds) == 3 and all(f["arima_order"] == "1,0,0" and f["n_iter"] > 0 for f in folds)
    s = result.summary()["gbm"]
    assert s["ret_mae"] < 0.6 * s["ret_mae_zero"] and s["ret_dir_acc"] > 0.8
    assert s["ret_mae_arima"] == pytest.approx(s["ret_mae_zero"], rel=0.02)
    assert "ret_mae=" in result.report() and "vs ret_mae_arima=" in result.report()
