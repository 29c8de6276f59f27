"""Resampling against the shipped coarser files, and the walk-forward splitter's boundaries."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotgym.data import WalkForward, load_bars, resample_bars


def test_eth_1m_resampled_to_1h_equals_shipped_1h(eth_1m_path, eth_1h_path):
    hourly = resample_bars(load_bars(eth_1m_path), "1h")
    shipped = load_bars(eth_1h_path)
    # 2024-07-26T14:16 .. 2024-08-25T14:23: the first and last hour are partial and dropped
    assert hourly.index[0] == pd.Timestamp("2024-07-26T15:00Z")
    assert hourly.index[-1] == pd.Timestamp("2024-08-25T13:00Z")
    assert len(hourly) == 719 and hourly.attrs["dropped_buckets"] == 2
    ref = shipped.loc[hourly.index]
    np.testing.assert_array_equal(hourly[["open", "high", "low", "close"]].to_numpy(),
                                  ref[["open", "high", "low", "close"]].to_numpy())
    np.testing.assert_allclose(hourly["volume"].to_numpy(), ref["volume"].to_numpy(), rtol=1e-12)


def test_resample_drops_buckets_with_gaps_or_synthetic_bars(eth_5m_path):
    bars = load_bars(eth_5m_path, start="2023-03-24", end="2023-03-24T23:55")  # 16 missing bars 12:40..13:55
    hourly = resample_bars(bars, "1h")
    assert pd.Timestamp("2023-03-24T12:00Z") not in hourly.index
    assert pd.Timestamp("2023-03-24T13:00Z") not in hourly.index
    assert len(hourly) == 22
    filled = resample_bars(load_bars(eth_5m_path, "fill", start="2023-03-24", end="2023-03-24T23:55"), "1h")
    assert len(filled) == 22  # gap-filled (synthetic) bars never make a bucket complete


def test_resample_rejects_finer_or_non_multiple(eth_1h_path):
    bars = load_bars(eth_1h_path, end="2017-09-01")
    with pytest.raises(ValueError, match="whole multiple"):
        resample_bars(bars, "90m")
    with pytest.raises(ValueError, match="whole multiple"):
        resample_bars(bars, "1m")


def test_walk_forward_boundaries_purge_and_embargo():
    folds = WalkForward(n_folds=3, val_size=100, test_size=200, purge=5, embargo=2).split(2000)
    assert [(f.train, f.val, f.test) for f in folds] == [
        (range(0, 1286), range(1293, 1393), range(1400, 1600)),
        (range(0, 1486), range(1493, 1593), range(1600, 1800)),
        (range(0, 1686), range(1693, 1793), range(1800, 2000)),
    ]
    for f in folds:  # inside a fold: chronological, disjoint, separated by purge + embargo
        assert f.train.stop + 7 == f.val.start and f.val.stop + 7 == f.test.start
    # the test blocks tile the out-of-sample span [1400, 2000): every row is tested once, by one fold
    assert [r for f in folds for r in f.test] == list(range(1400, 2000))


def test_walk_forward_rolling_window_inside_an_outer_span():
    folds = WalkForward(n_folds=2, test_size=100, train_size=300, expanding=False).split(range(1000, 2000))
    assert [(f.train, f.test) for f in folds] == [(range(1500, 1800), range(1800, 1900)),
                                                  (range(1600, 1900), range(1900, 2000))]
    assert all(len(f.val) == 0 for f in folds)


def test_walk_forward_default_sizes_cover_the_tail():
    folds = WalkForward(n_folds=4, purge=3).split(1000)
    assert folds[-1].test.stop == 1000
    assert all(len(f.test) == len(folds[0].test) for f in folds)
    assert folds[0].train.stop >= 250  # min_train = 25 %
    assert len(folds[0].test) == (1000 - 250 - 3) // 4  # after min_train and the first fold's purge
    for a, b in zip(folds, folds[1:]):
        assert a.test.stop == b.test.start and b.train.stop + 3 == b.test.start


@pytest.mark.parametrize("kwargs, message", [
    ({"n_folds": 0}, "n_folds"), ({"purge": -1}, "purge"), ({"test_size": 1.5}, "test_size"),
    ({"expanding": False}, "train_size"),
])
def test_walk_forward_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WalkForward(**kwargs)


def test_walk_forward_too_few_rows():
    with pytest.raises(ValueError, match="too few"):
        WalkForward(n_folds=10, val_size=50, purge=10).split(100)


def test_walk_forward_anchored_refits_do_not_depend_on_the_future():
    wf = WalkForward(n_folds=None, test_size=100, val_size=20, min_train=300, purge=4, embargo=1)
    folds = wf.split(1000)
    assert folds[0].train == range(0, 300) and folds[0].val == range(305, 325) and folds[0].test == range(330, 430)
    assert folds[-1].test == range(930, 1000)  # the last block is cut short by the data
    assert all(b.test.start == a.test.stop for a, b in zip(folds, folds[1:]))
    # the same folds up to any cut: boundaries are anchored at the start, not the end
    short = wf.split(650)
    assert short[:-1] == folds[: len(short) - 1]
    assert short[-1].test == range(630, 650) and short[-1].train == folds[len(short) - 1].train
    with pytest.raises(ValueError, match="row counts"):
        WalkForward(n_folds=None, test_size=0.1)
