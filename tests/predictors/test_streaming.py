"""Live ``update(bar)`` gives exactly what batch ``predict`` gives on the same history (real ETH/USDT 1h)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spotgym.data import load_bars
from spotgym.features import build_features, default_spec
from spotgym.predictors import LSTMConfig, make_predictor, tiny_gbm, tiny_stacking

INDICATORS = default_spec()
N_HISTORY, N_STREAM = 2400, 24


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    return load_bars(eth_1h_path, start="2021-05-01").iloc[: N_HISTORY + N_STREAM]  # a volatile stretch


@pytest.fixture(scope="module")
def frame(bars):
    return build_features(bars, INDICATORS)


CONFIGS = [*tiny_stacking().models, LSTMConfig(name="gru", cell="gru", window=8, hidden=8, epochs=1,
                                               max_train_windows=512, device="cpu"), tiny_gbm()]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_update_equals_batch_predict(bars, frame, config):
    model = make_predictor(config, feature_spec=INDICATORS).fit(frame, range(700, 2000), val_rows=range(2024, 2200))
    stream_rows = range(N_HISTORY, N_HISTORY + N_STREAM)
    batch = model.predict(frame, stream_rows)
    assert np.isfinite(batch).all()
    model.begin_stream(bars.iloc[:N_HISTORY])
    streamed = []
    for i in stream_rows:
        row = bars.iloc[i]
        if i % 3 == 1:  # the other accepted shapes of a bar
            row = {"timestamp": int(bars.index[i].value // 1_000_000), **row.to_dict()}
        elif i % 3 == 2:
            row = bars.iloc[i:i + 1]
        streamed.append(model.update(row))
    np.testing.assert_array_equal(np.array(streamed), batch)  # bit-identical, not merely close


@pytest.mark.parametrize("config", [tiny_stacking().models[0], tiny_gbm()], ids=lambda c: c.name)
def test_single_row_predictions_do_not_depend_on_the_batch(frame, config):
    """The property behind streaming equality and the truncation check: rows are computed alone."""
    model = make_predictor(config).fit(frame, range(700, 1500))
    full = model.predict(frame)
    for rows in ([2100], [2099, 2100], list(range(2000, 2423, 7)), range(1020, 1030)):
        np.testing.assert_array_equal(model.predict(frame, rows), full[np.asarray(rows)])
    # the LSTM's window of 16 rows, or the GBM's current row and rows 1 and 4 back, after the indicator warm-up
    assert model.lookback == {"lstm": 16, "gbm": 5}[config.kind]
    first = 698 + model.lookback - 1
    assert np.isnan(full[:first]).all() and np.isfinite(full[first:]).all()


def test_stream_rejects_out_of_order_bars_and_needs_a_spec(bars, frame):
    model = make_predictor(tiny_stacking().models[1]).fit(frame, range(700, 2000))
    with pytest.raises(ValueError, match="FeatureSpec"):
        model.begin_stream(bars.iloc[:100])
    with pytest.raises(RuntimeError, match="begin_stream"):
        model.update(bars.iloc[100])
    model.begin_stream(bars.iloc[:N_HISTORY], feature_spec=INDICATORS)
    with pytest.raises(ValueError, match="not after the last streamed bar"):
        model.update(bars.iloc[N_HISTORY - 1])
