"""Known values of the indicators on short hand-checked series, and parity with ``ta``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import ta

from spotgym.data import load_bars
from spotgym.features import INDICATORS

CLOSES = [10.0, 11.0, 10.5, 11.5, 11.0]


def bars_from_closes(closes):
    c = np.asarray(closes, float)
    idx = pd.date_range("2024-01-01", periods=len(c), freq="h", tz="UTC")
    return pd.DataFrame({"open": c, "high": c + 0.5, "low": c - 0.5, "close": c, "volume": 1.0}, index=idx)


def by_name(columns):
    return {c.name: c for c in columns}


def test_rsi_known_values():
    # Wilder RSI, window 2 (alpha 1/2): up moves [0,1,0,1,0], down moves [0,0,.5,0,.5]
    # EMA(up) = 0, .5, .25, .625, .3125 ; EMA(down) = 0, 0, .25, .125, .3125
    # RSI[2] = 100 - 100/(1 + 1) = 50 ; RSI[3] = 100 - 100/(1 + 5) = 83.33 ; RSI[4] = 50
    col = INDICATORS["rsi"](bars_from_closes(CLOSES), window=2)[0]
    assert col.name == "rsi_2" and col.warmup == 2 and col.scale == "none"
    v = col.values.to_numpy()
    assert np.isnan(v[:2]).all()  # warm-up is NaN, not zero
    np.testing.assert_allclose(v[2:] * 50 + 50, [50.0, 100 - 100 / 6, 50.0], rtol=1e-12)


def test_macd_known_values():
    # EMA fast (span 2, alpha 2/3): 10, 32/3, 95/9, 302/27, 896/81 ; EMA slow (span 3): 10, 10.5, 10.5, 11, 11
    # line = 1/18, 5/27, 5/81 from row 2 ; signal (span 2 over line) = 23/162, 43/486 from row 3
    bars = bars_from_closes(CLOSES)
    cols = by_name(INDICATORS["macd"](bars, fast=2, slow=3, signal=2))
    close = bars["close"].to_numpy()
    line = cols["macd_2_3_2_line"].values.to_numpy() * close
    signal = cols["macd_2_3_2_signal"].values.to_numpy() * close
    hist = cols["macd_2_3_2_hist"].values.to_numpy() * close
    assert np.isnan(line[:2]).all() and np.isnan(signal[:3]).all()
    np.testing.assert_allclose(line[2:], [1 / 18, 5 / 27, 5 / 81], rtol=1e-12)
    np.testing.assert_allclose(signal[3:], [23 / 162, 43 / 486], rtol=1e-12)
    np.testing.assert_allclose(hist[3:], [5 / 27 - 23 / 162, 5 / 81 - 43 / 486], rtol=1e-12)


def test_bollinger_known_values():
    # window 3 on 1, 2, 3: mean 2, population std sqrt(2/3); %b = (3 - lower) / (upper - lower)
    bars = bars_from_closes([1.0, 2.0, 3.0])
    cols = by_name(INDICATORS["bollinger"](bars, window=3, dev=2.0))
    std = np.sqrt(2 / 3)
    lower, upper = 2 - 2 * std, 2 + 2 * std
    assert cols["bb_3_2_pctb"].values.iloc[2] == pytest.approx((3 - lower) / (upper - lower) - 0.5, rel=1e-12)
    assert cols["bb_3_2_width"].values.iloc[2] == pytest.approx((upper - lower) / 2 * 100, rel=1e-12)


def test_log_return_and_realized_vol_known_values():
    bars = bars_from_closes(CLOSES)
    lr = by_name(INDICATORS["log_return"](bars, lags=(1, 2)))
    np.testing.assert_allclose(lr["log_return_2"].values.to_numpy()[2:], np.log([10.5 / 10, 11.5 / 11, 11 / 10.5]))
    vol = INDICATORS["realized_vol"](bars, window=3)[0].values.to_numpy()
    r = np.diff(np.log(CLOSES))
    assert np.isnan(vol[:3]).all()
    assert vol[3] == pytest.approx(np.std(r[:3], ddof=1), rel=1e-12)


def test_atr_equals_ta_on_real_data(eth_1h_path):
    bars = load_bars(eth_1h_path).iloc[:3000]
    ours = INDICATORS["atr"](bars, window=14)[0].values.to_numpy() * bars["close"].to_numpy()
    ref = ta.volatility.AverageTrueRange(bars["high"], bars["low"], bars["close"], window=14).average_true_range()
    assert np.isnan(ours[:13]).all() and (ref.to_numpy()[:13] == 0).all()  # ta writes 0 in the warm-up
    np.testing.assert_allclose(ours[13:], ref.to_numpy()[13:], rtol=1e-10)


def test_stochastic_and_volume_are_bounded_or_scaled(eth_1h_path):
    bars = load_bars(eth_1h_path).iloc[:2000]
    k, d = INDICATORS["stoch"](bars, window=14, smooth=3)
    assert np.nanmin(k.values) >= -1 - 1e-12 and np.nanmax(k.values) <= 1 + 1e-12
    # by hand, the definition: %K = 100 (close - lowest low) / (highest high - lowest low) over 14 bars,
    # rescaled to [-1, 1] as (%K - 50) / 50; %D is its 3-bar mean
    hi, lo, cl = (bars[c].to_numpy() for c in ("high", "low", "close"))
    hand_k = np.array([100 * (cl[t] - lo[t - 13:t + 1].min()) / (hi[t - 13:t + 1].max() - lo[t - 13:t + 1].min())
                       for t in range(13, len(bars))])
    np.testing.assert_allclose(k.values.to_numpy()[13:], (hand_k - 50) / 50, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d.values.to_numpy()[15:], (np.convolve(hand_k, np.ones(3) / 3, "valid") - 50) / 50,
                               rtol=1e-10, atol=1e-12)
    # one value worked out on paper from the first 14 bars of the file (2017-08-17 04:00 .. 17:00 UTC):
    # highest high 312.18, lowest low 298.00, close 308.33 -> %K = 100 * 10.33 / 14.18 = 72.8491 -> 0.456982
    assert k.values.iloc[13] == pytest.approx(0.4569817, abs=1e-6)
    assert d.warmup == 15 and np.isnan(d.values.to_numpy()[:15]).all()
    vz = INDICATORS["volume_z"](bars, window=96)[0].values.to_numpy()
    assert np.isnan(vz[:95]).all() and np.isfinite(vz[95:]).all()


def test_flat_windows_take_neutral_values_not_nan(eth_5m_path):
    # 2023-03-24 11:30-12:35: fourteen flat zero-volume 5m bars before a trading halt
    bars = load_bars(eth_5m_path, start="2023-03-23", end="2023-03-24T12:35")
    k, d = INDICATORS["stoch"](bars, window=14, smooth=3)
    assert k.values.iloc[-1] == 0.0 and np.isfinite(d.values.to_numpy()[15:]).all()
    pctb = by_name(INDICATORS["bollinger"](bars, window=14))["bb_14_2_pctb"].values
    assert pctb.iloc[-1] == 0.0
    flat = bars_from_closes([10.0] * 30)
    flat["volume"] = 0.0
    assert (INDICATORS["volume_z"](flat, window=5)[0].values.to_numpy()[4:] == 0.0).all()
    assert (INDICATORS["stoch"](flat.assign(high=10.0, low=10.0), window=5)[0].values.to_numpy()[4:] == 0.0).all()
