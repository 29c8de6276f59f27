"""The FeatureFrame of real data: causality of every column, warm-up marking, spec handling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotgym.data import load_bars
from spotgym.features import (
    FeatureSpec,
    LookaheadError,
    assert_no_lookahead,
    build_features,
    default_spec,
)


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    return load_bars(eth_1h_path, end="2018-03-01")  # ~4,400 bars, including the 33-bar 2018-02 gap


def test_default_frame_shape_and_dtypes(bars):
    frame = build_features(bars)
    assert frame.values.dtype == np.float32 and frame.values.flags.c_contiguous
    assert frame.values.shape == (len(bars), len(frame.columns)) == (len(bars), 18)
    for name in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(getattr(frame, name), bars[name].to_numpy())
        assert getattr(frame, name).dtype == np.float64
    assert frame.index.equals(bars.index)
    assert {"macd_12_26_9_line", "rsi_14", "bb_20_2_pctb", "atr_14", "stoch_14_k", "volume_z_96",
            "log_return_1", "realized_vol_24", "ema_ratio_200"} <= set(frame.columns)


def test_warmup_rows_are_nan_and_marked_not_zero(bars):
    frame = build_features(bars)
    # the longest warm-up: EMA(200) (199 rows) + the 500-bar normalisation window (499 more)
    assert frame.first_valid_row == 199 + 499
    assert not frame.valid[:698].any() and frame.valid[698:].all()
    assert np.isnan(frame.column("ema_ratio_200")[:698]).all()
    assert np.isfinite(frame.values[698:]).all()
    assert np.isfinite(frame.column("rsi_14")[14:]).all()  # bounded columns are not z-scored: short warm-up


def test_every_default_column_is_causal(bars):
    cuts = assert_no_lookahead(build_features, bars, cuts=[700, 2500, len(bars) - 2])
    assert cuts == [700, 2500, len(bars) - 2]


def test_expanding_normalisation_is_causal_too(bars):
    spec = FeatureSpec.from_config({"indicators": ["rsi", "atr", {"name": "log_return", "lags": [1, 8]}],
                                    "normalize": "expanding", "norm_window": 200})
    assert_no_lookahead(lambda b: build_features(b, spec), bars, n_cuts=3)


def test_checker_catches_a_next_bar_column(bars):
    def leaky(b):
        frame = build_features(b)
        return frame.with_columns(["next_return"], np.log(b["close"].shift(-1) / b["close"]).to_numpy())

    with pytest.raises(LookaheadError, match="next_return"):
        assert_no_lookahead(leaky, bars, cuts=[3000])


def test_checker_catches_full_sample_normalisation(bars):
    def full_sample_z(b):
        r = np.log(b["close"]).diff()
        return pd.DataFrame({"r_z": (r - r.mean()) / r.std()}, index=b.index)

    with pytest.raises(LookaheadError, match=r"r_z \(first at row 1:"):
        assert_no_lookahead(full_sample_z, bars, cuts=[2000])


def test_checker_catches_a_leaky_valid_mask(bars):
    def mask_leak(b):
        frame = build_features(b)
        valid = np.ones(len(b), bool)
        valid[-1] = False  # "the last row" moves when the future is cut off
        return frame.with_columns(["ones"], np.ones(len(b)), valid=valid)

    with pytest.raises(LookaheadError, match="valid mask"):
        assert_no_lookahead(mask_leak, bars, cuts=[1500])


def test_synthetic_bars_are_carried_into_the_frame(eth_1h_path):
    filled = load_bars(eth_1h_path, "fill", end="2018-03-01")
    frame = build_features(filled)
    assert frame.synthetic.sum() == filled["synthetic"].sum() > 33
    np.testing.assert_array_equal(frame.synthetic, filled["synthetic"].to_numpy())


def test_spec_from_config_validation_and_hash():
    spec = FeatureSpec.from_config({"indicators": ["rsi", {"name": "macd", "fast": 8}], "norm_window": 300})
    assert spec.indicators[1].params == (("fast", 8),)
    assert spec.hash == FeatureSpec.from_config(spec.to_config()).hash
    assert spec.hash != FeatureSpec.from_config({"indicators": ["rsi", {"name": "macd", "fast": 9}],
                                                 "norm_window": 300}).hash
    assert default_spec().hash == default_spec().hash
    with pytest.raises(ValueError, match="unknown indicator 'rsx'"):
        FeatureSpec.from_config({"indicators": ["rsx"]})
    with pytest.raises(ValueError, match=r"has no parameter\(s\) \['span'\]"):
        FeatureSpec.from_config({"indicators": [{"name": "rsi", "span": 3}]})
    with pytest.raises(ValueError, match=r"unknown feature key\(s\) \['windows'\]"):
        FeatureSpec.from_config({"indicators": ["rsi"], "windows": 3})
    with pytest.raises(ValueError, match="norm_window"):
        FeatureSpec.from_config({"indicators": ["rsi"], "norm_window": 1})
