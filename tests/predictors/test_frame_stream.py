"""``FrameStream``: the frame grown bar by bar equals ``apply_fitted_predictors`` over the same bars (real ETH/USDT 1h,
across a gap filled with synthetic bars), and its carried state stays exact past its window."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from spotgym.core import FeatureFrame
from spotgym.data import load_bars
from spotgym.features import FeatureSpec, IndicatorSpec, build_features, default_spec
from spotgym.features.indicators import INDICATORS as REGISTERED
from spotgym.features.indicators import Column
from spotgym.predictors import LSTMConfig, RegimeConfig, StackingSpec, apply_fitted_predictors, make_predictor
from spotgym.predictors.pipeline import FrameSpec
from spotgym.predictors.stream import KERNELS, FeatureStream, FrameStream, default_window

N_STREAM = 300
DEFAULT = default_spec()
LSTM = LSTMConfig(window=16, hidden=8, epochs=1, batch_size=64, max_train_windows=512, device="cpu")
REGIME = RegimeConfig(horizon=12, vol_window=96, max_iter=20, min_samples_leaf=20)
SPEC = FrameSpec(DEFAULT, StackingSpec(models=(LSTM, REGIME), refit_every=600, min_train=800, val_size=200))


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    """Aug 2017 - mid Feb 2018 with gaps filled; the last 300 bars hold the 33 synthetic bars of 8 Feb 2018."""
    out = load_bars(eth_1h_path, gap_policy="fill", end="2018-02-14 23:00")
    assert out["synthetic"].iloc[-N_STREAM:].sum() >= 30
    return out


@pytest.fixture(scope="module")
def predictors(bars, tmp_path_factory):
    """A tiny LSTM and a regime classifier fitted on the history, saved as a run's ``predictors/``; the regime
    model also reads the LSTM's columns, so the stream has to stack them."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("predictors")
    frame = build_features(bars.iloc[:-N_STREAM], DEFAULT)
    lstm = make_predictor(LSTM, feature_spec=DEFAULT).fit(frame, range(700, 3000), val_rows=range(3020, 3300))
    lstm.save(folder / LSTM.name)
    stacked = frame.with_columns(lstm.output_columns, lstm.predict(frame))
    make_predictor(REGIME, feature_spec=DEFAULT).fit(stacked, range(700, 3300)).save(folder / REGIME.name)
    return folder


def assert_frames_equal(got: FeatureFrame, want: FeatureFrame) -> None:
    assert got.columns == want.columns
    assert got.index.equals(want.index)
    assert got.symbol == want.symbol
    np.testing.assert_array_equal(np.isnan(got.values), np.isnan(want.values))
    np.testing.assert_allclose(got.values, want.values, rtol=0, atol=1e-9, equal_nan=True)
    for name in ("open", "high", "low", "close", "volume", "synthetic", "valid"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_streamed_rows_equal_the_batch_frame(bars, predictors):
    n = len(bars) - N_STREAM
    stream = FrameStream(bars.iloc[:n], SPEC, predictors)
    assert stream.replay_max_diff == 0.0
    parts, i = [], n
    while i < len(bars):
        if i == n + 100:  # three bars in one update
            rows = stream.update(bars.iloc[i:i + 3])
        elif i % 7 == 0:  # one row of a bars frame
            rows = stream.update(bars.iloc[i])
        else:
            rows = stream.update(bars.iloc[i:i + 1])
        assert isinstance(rows, FeatureFrame) and rows.index[0] == bars.index[i]
        parts.append(rows)
        i += len(rows)
    batch = apply_fitted_predictors(bars, SPEC, predictors)
    assert_frames_equal(stream.frame, batch)
    streamed = np.vstack([p.values for p in parts])
    np.testing.assert_allclose(streamed, batch.values[n:], rtol=0, atol=1e-9, equal_nan=True)
    np.testing.assert_array_equal(np.concatenate([p.valid for p in parts]), batch.valid[n:])
    # the predictor columns are live over the streamed span, and the synthetic bars went through the stream
    assert np.isfinite(batch.values[n:, stream.n_indicators:]).all() and batch.synthetic[n:].sum() >= 30
    assert len(stream) == len(bars) and stream.last_time == bars.index[-1]


CARRIED = FeatureSpec.from_config({
    "indicators": [{"name": "log_return", "lags": [1, 4]}, {"name": "macd", "fast": 6, "slow": 13, "signal": 5},
                   {"name": "obv", "window": 10}, {"name": "bollinger", "window": 10},
                   {"name": "realized_vol", "window": 12}, {"name": "atr", "window": 7}],
    "normalize": "expanding", "norm_window": 40, "clip": 3.0})


@pytest.mark.parametrize("normalize", ["expanding", "rolling"])
def test_carried_state_is_exact_past_the_window(bars, normalize):
    """Expanding statistics, OBV's running sum, the EWMs and pandas' compensated rolling sums carry over more
    bars than the window holds; the stream still gives the batch bits."""
    spec = FeatureSpec(CARRIED.indicators, normalize=normalize, norm_window=40, clip=3.0)
    window = 80
    start = 1500
    stream = FrameStream(bars.iloc[:start], spec, None, window=window)
    for i in range(start, start + 5 * window):
        stream.update(bars.iloc[i:i + 1])
    assert_frames_equal(stream.frame, build_features(bars.iloc[:start + 5 * window], spec))


def test_every_indicator_has_a_kernel():
    assert set(KERNELS) == set(REGISTERED)  # else it is recomputed over the window, exact only to its decay


@pytest.fixture
def momentum():
    """An indicator registered outside spotgym.features (no kernel): close / close 3 bars back - 1."""
    def fn(bars, lag: int = 3):
        return [Column(f"momentum_{lag}", bars["close"] / bars["close"].shift(lag) - 1.0, lag, "z")]
    REGISTERED["test_momentum"] = fn
    yield "test_momentum"
    del REGISTERED["test_momentum"]


def test_an_indicator_without_a_kernel_is_recomputed_over_the_window(bars, momentum):
    spec = FeatureSpec((IndicatorSpec(momentum), IndicatorSpec("rsi")), norm_window=50)
    stream = FrameStream(bars.iloc[:400], spec, None, window=120)
    assert not stream.features.exact and stream.replay_max_diff == 0.0
    for i in range(400, 700):
        stream.update(bars.iloc[i:i + 1])
    assert_frames_equal(stream.frame, build_features(bars.iloc[:700], spec))  # finite memory: exact


@pytest.mark.parametrize("normalize", ["rolling", "expanding", "none"])
def test_feature_stream_in_chunks_equals_build_features(bars, normalize):
    """Every indicator with its defaults, pushed in uneven chunks, gives build_features' bits."""
    spec = FeatureSpec(DEFAULT.indicators + (IndicatorSpec("obv"),), normalize=normalize, norm_window=300)
    stream = FeatureStream(spec)
    cut = [0, 1, 2, 40, 41, 600, 1700, len(bars)]
    values = np.vstack([stream.push(bars.iloc[a:b]) for a, b in zip(cut, cut[1:], strict=False)])
    np.testing.assert_array_equal(values, build_features(bars, spec).values)  # bit-identical


def test_default_window_covers_the_slowest_indicator():
    # EMA(200) at Wilder's decay: (1 - 1/200)^w < 1e-13 needs ~6,000 bars, plus the rolling normalisation
    w = default_window(SPEC, lookback=16)
    assert 6000 < w < 8000
    assert (1 - 1 / 200) ** (w - 500 - 16) < 1e-13


def test_bad_input_gives_clear_errors(bars):
    stream = FrameStream(bars.iloc[:300], DEFAULT, None)
    with pytest.raises(ValueError, match="not after the last bar"):
        stream.update(bars.iloc[299:300])
    with pytest.raises(ValueError, match="not after the last bar"):
        stream.update(bars.iloc[100:101])
    with pytest.raises(ValueError, match=r"lack column\(s\) \['volume'\]"):
        stream.update(bars.iloc[300:301].drop(columns="volume"))
    with pytest.raises(ValueError, match="increasing time order"):
        stream.update(bars.iloc[[301, 300]])
    bad = bars.iloc[300:301].copy()
    bad["close"] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        stream.update(bad)
    with pytest.raises(ValueError, match="DatetimeIndex"):
        stream.update(bars.iloc[300:301].reset_index(drop=True))
    assert len(stream) == 300  # nothing was appended by the rejected calls
    stream.update(bars.iloc[300:301])
    assert stream.last_time == bars.index[300]
    with pytest.raises(ValueError, match="shorter than"):
        FrameStream(bars.iloc[:300], DEFAULT, None, window=50)
    with pytest.raises(ValueError, match="folder"):
        FrameStream(bars.iloc[:300], SPEC, None)
    with pytest.raises(ValueError, match="at least one bar"):
        FrameStream(bars.iloc[:0], DEFAULT, None)
    with pytest.raises(ValueError, match="lack column"):
        FrameStream(pd.DataFrame({"close": [1.0]}, index=bars.index[:1]), DEFAULT, None)
