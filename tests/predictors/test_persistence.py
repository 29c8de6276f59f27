"""Save -> load -> predict is identical; metadata says what the model needs; mismatches fail clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spotgym.data import load_bars
from spotgym.features import FeatureSpec, build_features, default_spec
from spotgym.predictors import (
    LSTMConfig,
    LSTMPredictor,
    Predictor,
    load_predictor,
    make_predictor,
    tiny_gbm,
    tiny_stacking,
)
from spotgym.predictors.lstm import resolve_device

INDICATORS = default_spec()
CONFIGS = [*tiny_stacking().models, LSTMConfig(name="gru", cell="gru", window=8, hidden=8, epochs=1,
                                               targets=("direction",), device="cpu"), tiny_gbm()]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    return load_bars(eth_1h_path).iloc[:2500]


@pytest.fixture(scope="module")
def frame(bars):
    return build_features(bars, INDICATORS)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_save_load_predict_identical(frame, tmp_path, config):
    model = make_predictor(config, feature_spec=INDICATORS).fit(frame, range(700, 1800), val_rows=range(1830, 2000))
    assert isinstance(model, Predictor)
    before = model.predict(frame)
    folder = model.save(tmp_path / config.name)
    loaded = load_predictor(folder, frame=frame, feature_spec=INDICATORS)
    np.testing.assert_array_equal(loaded.predict(frame), before)
    assert loaded.output_columns == model.output_columns == config.output_columns
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["kind"] == config.kind and meta["config_hash"] == config.hash
    assert meta["input_columns"] == list(frame.columns) == list(loaded.input_columns)
    assert meta["feature_spec_hash"] == INDICATORS.hash
    assert {"spotgym", "python", "numpy", "torch", "sklearn", "lightgbm", "statsmodels"} <= set(meta["versions"])
    if config.kind == "lstm":
        assert len(meta["state"]["scaler"]["mean"]) == len(frame.columns)
        assert meta["state"]["target_scale"] > 0 and meta["state"]["flat_threshold"] >= 0
    else:
        assert meta["state"]["scaler"] is None
    if config.kind == "gbm":  # the boosters are LightGBM text files (no pickle), one per target
        assert sorted(p.name for p in folder.glob("booster_*.txt")) == ["booster_direction.txt", "booster_return.txt"]
        assert meta["state"]["n_features"] == len(frame.columns) * (1 + len(config.lags))


def test_loading_against_other_columns_is_a_clear_error(bars, frame, tmp_path):
    model = make_predictor(tiny_stacking().models[1], feature_spec=INDICATORS).fit(frame, range(700, 2000))
    folder = model.save(tmp_path / "regime")
    other_spec = FeatureSpec.from_config({"indicators": ["rsi", "atr"]})
    other = build_features(bars, other_spec)
    with pytest.raises(ValueError, match=r"lacks input column\(s\) \['log_return_1'"):
        load_predictor(folder, frame=other)
    with pytest.raises(ValueError, match="fitted on features of spec"):
        load_predictor(folder, feature_spec=other_spec)
    loaded = load_predictor(folder)
    with pytest.raises(ValueError, match="lacks input column"):
        loaded.predict(other)
    with pytest.raises(FileNotFoundError, match="not a saved predictor"):
        load_predictor(tmp_path)


def test_unfitted_and_device_errors(frame):
    model = LSTMPredictor(tiny_stacking().models[0])
    with pytest.raises(RuntimeError, match="predict before fit"):
        model.predict(frame)
    with pytest.raises(RuntimeError, match="save before fit"):
        model.save("unused")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def test_lstm_fit_is_deterministic(frame):
    config = tiny_stacking().models[0]
    a = make_predictor(config).fit(frame, range(700, 1800), val_rows=range(1830, 2000)).predict(frame)
    b = make_predictor(config).fit(frame, range(700, 1800), val_rows=range(1830, 2000)).predict(frame)
    np.testing.assert_array_equal(a, b)

