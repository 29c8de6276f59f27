"""Sanity: with a deliberately leaked target (the future return) as input, the pipeline learns it.

Without the leak the same models sit near their baselines; with it the out-of-fold accuracy is
near-perfect. So the walk-forward stacking, scaling and labels can learn when there is signal —
and the lack of edge on honest inputs is the data, not a broken pipeline.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from spotgym.data import load_bars
from spotgym.features import build_features
from spotgym.predictors import StackingSpec, oof_predictions, tiny_gbm, tiny_stacking
from spotgym.predictors.labels import forward_log_return, trailing_vol

TINY = tiny_stacking()
LSTM, REGIME = TINY.models


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def leaky_frame(eth_1h_path):
    frame = build_features(load_bars(eth_1h_path).iloc[:3000])
    close = frame.close
    leaks = np.column_stack([forward_log_return(close, REGIME.horizon) / 0.03,  # "tomorrow's" return (12 h)
                             forward_log_return(close, LSTM.horizon) / 0.01,  # the next bar's return
                             trailing_vol(close, REGIME.vol_window) / 0.01])  # causal, the label's scale
    return frame.with_columns(["leak_ret_h12", "leak_ret_h1", "vol_96"], leaks)


def _oof(frame, *models):
    spec = StackingSpec(models, refit_every=TINY.refit_every, min_train=TINY.min_train, val_size=TINY.val_size,
                        purge=TINY.effective_purge)
    return oof_predictions(frame, spec, cache=False).summary()


def test_regime_classifier_learns_a_leaked_future_return(leaky_frame):
    leaked = _oof(leaky_frame, replace(REGIME, inputs=("leak_ret_h12", "vol_96", "rsi_14"), targets=("trend",)))
    indicators = tuple(c for c in leaky_frame.columns if c not in ("leak_ret_h12", "leak_ret_h1", "vol_96"))
    honest = _oof(leaky_frame, replace(REGIME, inputs=indicators, targets=("trend",)))
    assert leaked["regime"]["n_eval"] > 1200
    assert leaked["regime"]["trend_acc"] > 0.93
    assert leaked["regime"]["trend_log_loss"] < 0.25 * leaked["regime"]["trend_log_loss_prior"]
    assert honest["regime"]["trend_acc"] < 0.6


@pytest.mark.parametrize("forecaster", [LSTM, tiny_gbm()], ids=lambda c: c.kind)
def test_forecaster_learns_a_leaked_next_return(leaky_frame, forecaster):
    leaked = _oof(leaky_frame, replace(forecaster, inputs=("leak_ret_h1", "rsi_14")))[forecaster.name]
    assert leaked["ret_dir_acc"] > 0.9 and leaked["cls_acc"] > 0.8
    assert leaked["ret_mae"] < 0.5 * leaked["ret_mae_zero"]
    assert leaked["ret_mae"] < 0.5 * leaked["ret_mae_arima"]  # the baseline that sees only past returns
