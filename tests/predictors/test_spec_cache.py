"""Predictors named by the FrameSpec: config round trip, validation, and the on-disk result cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotgym.data import load_bars
from spotgym.features import FeatureSpec, build_features, default_spec
from spotgym.predictors import (
    CACHE_ENV,
    ArimaConfig,
    FrameSpec,
    GBMConfig,
    LSTMConfig,
    RegimeConfig,
    StackingSpec,
    build_frame,
    build_frame_with_report,
    default_frame_spec,
    predictor_config,
    resolve_cache_dir,
    tiny_stacking,
)

TINY = default_frame_spec(tiny=True)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    return load_bars(eth_1h_path).iloc[:2400]


def test_spec_round_trip_and_hash():
    with_gbm = FrameSpec(TINY.features, StackingSpec((*tiny_stacking().models, GBMConfig(lags=[24, 1])),
                                                     arima={"orders": [[1, 0, 0], [1, 0, 1]], "max_train": None}))
    no_arima = FrameSpec(TINY.features, StackingSpec(tiny_stacking().models, arima=None))
    for spec in (TINY, default_frame_spec(), with_gbm, no_arima):
        config = spec.to_config()
        predictors = config.pop("predictors")
        again = FrameSpec.from_config(config, predictors)
        assert again == spec and again.hash == spec.hash
    assert "predictors" not in default_spec().to_config() and FrameSpec().predictors is None
    # the indicator half hashes as before (saved predictors compare it); the whole spec hashes differently
    assert FrameSpec().hash == default_spec().hash
    assert len({default_spec().hash, TINY.hash, default_frame_spec().hash}) == 3
    assert TINY.features == default_spec()
    config = TINY.to_config()
    predictors = config.pop("predictors")
    predictors["models"][0]["hidden"] = 9
    assert FrameSpec.from_config(config, predictors).hash != TINY.hash
    gru = predictor_config({"kind": "gru", "hidden": 4})
    assert gru.cell == "gru" and gru.name == "gru" and gru.output_columns[0] == "gru_ret_h1"
    assert default_frame_spec().predictors.models[0].device == "auto"
    gbm = predictor_config({"kind": "gbm", "name": "boost", "horizon": 4, "lags": [4, 1], "targets": ["return"]})
    assert gbm.output_columns == ("boost_ret_h4",) and gbm.lags == (1, 4)
    assert with_gbm.predictors.models[2].lags == (1, 24) and with_gbm.predictors.arima.orders == ((1, 0, 0), (1, 0, 1))
    assert with_gbm.predictors.output_columns[-4:] == ("gbm_ret_h1", "gbm_p_down", "gbm_p_flat", "gbm_p_up")
    # the ARIMA baseline: on by default (ARMA(1, 1), the last 10,000 training rows); null turns it off
    assert TINY.predictors.arima == ArimaConfig() and ArimaConfig().orders == ((1, 0, 1),)
    assert StackingSpec.from_config({"models": [{"kind": "gbm"}], "arima": None}).arima is None
    assert ArimaConfig(orders=[2, 0, 1]).orders == ((2, 0, 1),)
    assert len({TINY.hash, no_arima.hash, with_gbm.hash}) == 3
    with pytest.raises(TypeError, match="build_frame"):
        build_features(None, TINY)  # the indicators-only function refuses a spec with predictors


@pytest.mark.parametrize("make, message", [
    (lambda: LSTMConfig(cell="rnn"), "LSTMConfig.cell"),
    (lambda: LSTMConfig(targets=("return", "volatility")), r"LSTMConfig.targets has unknown name\(s\) \['volatility'\]"),
    (lambda: LSTMConfig(device="tpu"), "LSTMConfig.device"),
    (lambda: LSTMConfig(window=0), "LSTMConfig.window must be an integer >= 1"),
    (lambda: RegimeConfig(horizon=0), "RegimeConfig.horizon"),
    (lambda: RegimeConfig(targets=()), "RegimeConfig.targets"),
    (lambda: StackingSpec((RegimeConfig(horizon=24),), purge=10), "purge must be >= the longest label horizon"),
    (lambda: StackingSpec((LSTMConfig(), LSTMConfig())), "own name"),
    (lambda: GBMConfig(targets=("return", "trend")), r"GBMConfig.targets has unknown name\(s\) \['trend'\]"),
    (lambda: GBMConfig(name="my gbm"), "GBMConfig.name"),
    (lambda: GBMConfig(lags=(1, 0)), "GBMConfig.lags must be an integer >= 1"),
    (lambda: GBMConfig(lags=(2, 2)), "GBMConfig.lags must not repeat"),
    (lambda: GBMConfig(lags=3), "GBMConfig.lags must be a list"),
    (lambda: GBMConfig(loss="quantile"), "GBMConfig.loss"),
    (lambda: GBMConfig(num_leaves=1), "GBMConfig.num_leaves must be an integer >= 2"),
    (lambda: GBMConfig(n_estimators=0), "GBMConfig.n_estimators"),
    (lambda: GBMConfig(learning_rate=0), "GBMConfig.learning_rate"),
    (lambda: GBMConfig(feature_fraction=1.5), "GBMConfig.feature_fraction"),
    (lambda: GBMConfig(bagging_fraction=0), "GBMConfig.bagging_fraction"),
    (lambda: GBMConfig(early_stopping_rounds=0), "GBMConfig.early_stopping_rounds"),
    (lambda: GBMConfig(threads=0), "GBMConfig.threads"),
    (lambda: predictor_config({"kind": "gbm", "trees": 3}), r"unknown gbm predictor key\(s\) \['trees'\]"),
    (lambda: StackingSpec((GBMConfig(), GBMConfig(name="gbm"))), "own name"),
    (lambda: ArimaConfig(orders=(1, 1, 1)), "ArimaConfig.orders must have d = 0"),
    (lambda: ArimaConfig(orders=((1, 0, 1), (9, 0, 0))), "ArimaConfig.orders must keep p and q <= 5"),
    (lambda: ArimaConfig(orders=((1, 0),)), "ArimaConfig.orders must hold"),
    (lambda: ArimaConfig(orders=()), "ArimaConfig.orders must be"),
    (lambda: ArimaConfig(max_train=10), "ArimaConfig.max_train must be an integer >= 50"),
    (lambda: StackingSpec.from_config({"models": [{"kind": "gbm"}], "arima": {"order": [1, 0, 1]}}),
     r"unknown arima key\(s\) \['order'\]"),
    (lambda: StackingSpec((GBMConfig(),), arima="arma"), "StackingSpec.arima"),
    (lambda: StackingSpec(()), "StackingSpec.models"),
    (lambda: predictor_config({"kind": "transformer"}), "unknown predictor kind 'transformer'"),
    (lambda: predictor_config({"kind": "lstm", "hiden": 3}), r"unknown lstm predictor key\(s\) \['hiden'\]"),
    (lambda: StackingSpec.from_config({"models": [{"kind": "regime"}], "refit": 5}), r"unknown predictors key"),
    (lambda: FrameSpec.from_config({"indicators": ["rsi"]}, {"models": []}), "models"),
    (lambda: FeatureSpec.from_config({"indicators": ["rsi"], "predictors": {"models": []}}), "unknown feature key"),
])
def test_config_validation_names_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_missing_input_column_is_a_clear_error(bars):
    spec = FrameSpec(TINY.features, StackingSpec((RegimeConfig(inputs=("rsi_14", "rsi_99")),)))
    with pytest.raises(ValueError, match=r"lacks input column\(s\) \['rsi_99'\]"):
        build_frame(bars, spec, cache=False)


def test_second_run_loads_from_the_disk_cache(bars, tmp_path, monkeypatch):
    first = build_frame_with_report(bars, TINY, cache=tmp_path)
    second = build_frame_with_report(bars, TINY, cache=tmp_path)
    assert not first.predictions.cached and second.predictions.cached
    assert second.predictions.cache_path == first.predictions.cache_path
    assert first.predictions.cache_path.parent == tmp_path
    np.testing.assert_array_equal(first.frame.values, second.frame.values)
    np.testing.assert_array_equal(first.frame.valid, second.frame.valid)
    assert second.predictions.folds == first.predictions.folds
    assert second.predictions.wall_s < first.predictions.wall_s
    # the newest block's models come back too, ready for live use
    for name, model in second.predictions.models.items():
        np.testing.assert_array_equal(model.predict(first.frame), first.predictions.models[name].predict(first.frame))
    # other data or another spec: another entry
    build_frame(bars.iloc[:-1], TINY, cache=tmp_path)
    other = FrameSpec(TINY.features, StackingSpec(tiny_stacking().models, refit_every=500, min_train=800,
                                                  val_size=200))
    build_frame(bars, other, cache=tmp_path)
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3
    # the default location follows the environment; "0" turns caching off
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    monkeypatch.setenv(CACHE_ENV, "0")
    assert resolve_cache_dir(None) is None and build_frame_with_report(bars, TINY).predictions.cache_path is None
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("SPOTGYM_CACHE", str(tmp_path / "root"))
    assert resolve_cache_dir(None) == tmp_path / "root" / "predictions"
    assert resolve_cache_dir(False) is None
