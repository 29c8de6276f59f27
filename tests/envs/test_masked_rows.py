"""Rows that cannot carry a decision are masked, never dropped: synthetic bars (filled gaps) are held through
and the order fills at the next real bar's open; rows whose observation window holds undefined cells are
held through until the next decidable row. Hand-computed on small frames, then on the real 5m file's
1,964-bar hole (gap_policy="fill")."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spotgym.agents import target_actor
from spotgym.backtest import run_policy
from spotgym.data import load_bars
from spotgym.envs import EnvConfig, TradingEnv, VecTradingEnv, decision_rows
from spotgym.features import build_features

FREE = dict(fee=0.0, slippage_bps=0.0, filters=None, window=4, initial_cash=10_000.0)


def ramp(n=40):
    """open[t] = 100 + t, close[t] = 100.5 + t: every bar moves, so a wrong bar shows in the numbers."""
    t = np.arange(n, dtype=np.float64)
    return 100.0 + t, 100.5 + t


def test_a_masked_row_is_held_through_in_one_step(make_frame):
    open_, close = ramp()
    valid = np.ones(40, bool)
    valid[20] = False  # rows 20..23 have row 20 in their 4-row window: no decision there
    env = TradingEnv(make_frame(open_, close, valid=valid), EnvConfig(**FREE))
    env.reset()
    for _ in range(16):  # rows 3 .. 19, holding cash
        _, reward, *_ = env.step(np.array([0.0], np.float32))
        assert reward == 0.0
    assert env.row == 19
    _, reward, term, trunc, info = env.step(np.array([1.0], np.float32))
    # all in at open[20] = 120 (row 20 is a real bar; its *window* is what is undefined), then held and marked
    # through rows 20..23 and landing on 24, the next decidable row: equity = 10000 / 120 * close[24]
    units = 10_000.0 / 120.0
    assert info["row"] == 24 and not (term or trunc)
    assert info["fill_price"] == 120.0 and info["fill_qty"] == pytest.approx(units)
    assert info["equity"] == pytest.approx(units * 124.5)
    assert reward == pytest.approx(math.log(units * 124.5 / 10_000.0))
    _, reward, *_ = env.step(np.array([1.0], np.float32))
    assert env.row == 25 and reward == pytest.approx(math.log(125.5 / 124.5))


def test_an_order_never_fills_on_a_synthetic_bar(make_frame):
    open_, close = ramp()
    synthetic = np.zeros(40, bool)
    synthetic[[20, 21]] = True  # a 2-bar gap filled flat at the previous close
    open_[20:22] = close[19]
    close[20:22] = close[19]
    env = TradingEnv(make_frame(open_, close, synthetic=synthetic), EnvConfig(**FREE))
    env.reset()
    while env.row < 19:
        env.step(np.array([0.0], np.float32))
    assert env.fill_row() == 22  # the next real bar
    qty, price, fee = env.simulate_fill(np.array([1.0], np.float32))
    assert price == open_[22] == 122.0 and qty == pytest.approx(10_000.0 / 122.0) and fee == 0.0
    _, reward, _, _, info = env.step(np.array([1.0], np.float32))
    # held as cash through the two synthetic bars (nothing to trade on), filled at open[22], marked at close[22]
    assert info["row"] == 22 and info["fill_price"] == 122.0
    assert info["equity"] == pytest.approx(10_000.0 / 122.0 * 122.5)
    assert reward == pytest.approx(math.log(122.5 / 122.0))
    # training episodes never contain a synthetic bar
    venv_starts = TradingEnv(make_frame(open_, close, synthetic=synthetic),
                             EnvConfig(**FREE, episode_length=5)).engine.starts
    assert all(not (s <= 21 and s + 5 >= 20) for s in venv_starts)


def test_rollout_fills_are_stamped_at_the_bar_they_fill_at(make_frame):
    open_, close = ramp()
    synthetic = np.zeros(40, bool)
    synthetic[[20, 21]] = True
    open_[20:22] = close[19]
    close[20:22] = close[19]
    frame = make_frame(open_, close, synthetic=synthetic)
    targets = np.zeros(40)
    targets[19:] = 1.0  # buy on the decision at row 19
    run = run_policy(frame, EnvConfig(**FREE), range(3, 40), target_actor(targets))
    assert len(run.trades) == 1 and run.trades["timestamp"].iloc[0] == frame.index[22]
    assert run.trades["price"].iloc[0] == 122.0
    # the curve skips the bars without a decision (rows 20, 21) and keeps every other one
    assert list(run.equity.index) == [frame.index[r] for r in [*range(3, 20), *range(22, 40)]]
    assert run.total_reward == pytest.approx(math.log(run.equity.iloc[-1] / 10_000.0), abs=1e-12)


def test_vec_env_takes_the_same_hops_as_the_single_env(make_frame):
    open_, close = ramp()
    synthetic = np.zeros(40, bool)
    synthetic[[20, 21]] = True
    valid = np.ones(40, bool)
    valid[30] = False
    frame = make_frame(open_, close, synthetic=synthetic, valid=valid)
    single = TradingEnv(frame, EnvConfig(**FREE))
    vec = VecTradingEnv(frame, 1, EnvConfig(**FREE))
    single.reset()
    vec.reset()
    rng = np.random.default_rng(0)
    while True:
        a = rng.random(1).astype(np.float32)
        _, r1, term, trunc, info = single.step(a)
        _, r2, done, infos = vec.step(a[None, :])
        assert r1 == r2[0]
        if term or trunc:
            assert done[0]
            break
        assert info["row"] == infos[0]["row"] and info["equity"] == infos[0]["equity"]


def test_the_real_5m_hole_is_masked_not_a_reason_to_drop_history(eth_5m_path):
    """2024-09-24 04:20 .. 09-30 23:55: 1,964 missing 5m bars, filled flat. The z-scores over a flat window are
    undefined there, so those rows are masked; the usable span still starts after the warm-up at the start
    of the data, and a buy-and-hold backtest runs through the hole holding its position."""
    bars = load_bars(eth_5m_path, gap_policy="fill", start="2024-09-01", end="2024-10-31T23:55")
    assert int(bars["synthetic"].sum()) == 1964
    frame = build_features(bars)
    rows = decision_rows(frame, 32)
    assert frame.index[rows.start] < frame.index[0] + np.timedelta64(3, "D")  # warm-up only, not 2024-10-01
    assert not frame.valid[bars["synthetic"].to_numpy()].all() and frame.valid[rows.start:].sum() > 15_000
    hold = np.ones(len(frame))
    run = run_policy(frame, EnvConfig(window=32, fee=0.001), rows, target_actor(hold))
    assert len(run.trades) == 1 and run.trades["timestamp"].iloc[0] == frame.index[rows.start + 1]
    stamps = run.equity.index
    assert stamps[0] == frame.index[rows.start] and stamps[-1] == frame.index[-1]
    hole = (stamps >= "2024-09-24T04:20Z") & (stamps <= "2024-09-30T23:55Z")
    assert not bars.loc[stamps, "synthetic"].to_numpy().any() and not hole.any()
    # the held position: equity across the hole moves with the price, from the last bar before to the first after
    before, after = stamps[stamps < "2024-09-24T04:20Z"][-1], stamps[stamps > "2024-09-30T23:55Z"][0]
    units = run.trades["quantity"].iloc[0]
    cash = 10_000.0 - run.trades["notional"].iloc[0] - run.trades["fee"].iloc[0]
    for when in (before, after):
        assert run.equity[when] == pytest.approx(cash + units * bars.loc[when, "close"], rel=1e-12)
