"""Hand-computed PnL on short price sequences: every number here is worked out from the rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spotgym.envs import EnvConfig, TradingEnv
from spotgym.venue import TradingRules

F = 0.001  # Binance spot taker fee
NO_FILTERS = dict(filters=None, slippage_bps=0.0)


def flt(**rules) -> TradingRules:
    base = dict(tick_size=0.0, step_size=0.0, min_qty=0.0, min_notional=0.0)
    base.update(rules)
    return TradingRules(**base)


def env_for(make_frame, open_, close, volume=None, **cfg) -> TradingEnv:
    cfg = {"window": 1, "initial_cash": 1000.0, **cfg}
    env = TradingEnv(make_frame(open_, close, volume), EnvConfig(**cfg))
    return env


def test_buy_hold_partial_sell_full_exit_with_fees(make_frame):
    open_ = [100.0, 100.0, 110.0, 120.0, 90.0, 95.0]
    close = [100.0, 110.0, 120.0, 100.0, 95.0, 95.0]
    env = env_for(make_frame, open_, close, fee=F, **NO_FILTERS)
    obs, info = env.reset(seed=0)
    assert info["row"] == 0 and info["equity"] == 1000.0 and info["position"] == 0.0 and not info["trade"]
    rewards = []

    # step 0: all in at open[1] = 100; fee on the notional: q * 100 * (1 + f) = 1000
    q = 1000.0 / (100.0 * (1 + F))
    _, r, term, trunc, info = env.step(np.array([1.0], np.float32))
    rewards.append(r)
    assert info["row"] == 1 and info["trade"] and not term and not trunc
    assert info["position"] == pytest.approx(q, rel=1e-12)
    assert info["cash"] == pytest.approx(0.0, abs=1e-9)
    assert info["fee"] == pytest.approx(q * 100.0 * F, rel=1e-12)
    assert info["fill_price"] == 100.0 and info["fill_qty"] == pytest.approx(q, rel=1e-12)
    assert info["equity"] == pytest.approx(q * 110.0, rel=1e-12)  # marked at close[1]
    assert r == pytest.approx(math.log(q * 110.0 / 1000.0), rel=1e-12)
    assert info["exposure"] == pytest.approx(1.0, abs=1e-12)

    # step 1: target 1 while fully invested: no order
    _, r, _, _, info = env.step(np.array([1.0], np.float32))
    rewards.append(r)
    assert not info["trade"] and info["fee"] == 0.0 and info["position"] == pytest.approx(q, rel=1e-12)
    assert info["equity"] == pytest.approx(q * 120.0, rel=1e-12)

    # step 2: target 0.5 at open[3] = 120 -> sell s with (q - s) * 120 = 0.5 * (q * 120 - f * s * 120)
    e = q * 120.0
    s = (q * 120.0 - 0.5 * e) / (120.0 * (1 - 0.5 * F))
    _, r, _, _, info = env.step(np.array([0.5], np.float32))
    rewards.append(r)
    cash = s * 120.0 * (1 - F)
    assert info["fill_qty"] == pytest.approx(-s, rel=1e-12)
    assert info["position"] == pytest.approx(q - s, rel=1e-12)
    assert info["cash"] == pytest.approx(cash, rel=1e-12)
    # the target is met at the fill price, after the fee
    assert (q - s) * 120.0 / (cash + (q - s) * 120.0) == pytest.approx(0.5, abs=1e-12)
    assert info["equity"] == pytest.approx(cash + (q - s) * 100.0, rel=1e-12)

    # step 3: full exit at open[4] = 90
    _, r, _, _, info = env.step(np.array([0.0], np.float32))
    rewards.append(r)
    cash += (q - s) * 90.0 * (1 - F)
    assert info["position"] == 0.0 and info["cash"] == pytest.approx(cash, rel=1e-12)
    assert info["equity"] == pytest.approx(cash, rel=1e-12)
    fees = q * 100.0 * F + s * 120.0 * F + (q - s) * 90.0 * F
    assert info["fees_paid"] == pytest.approx(fees, rel=1e-12)

    # step 4: flat, target 0: nothing; the data ends -> truncation, not termination
    _, r, term, trunc, info = env.step(np.array([0.0], np.float32))
    rewards.append(r)
    assert r == 0.0 and trunc and not term and info["row"] == 5
    assert sum(rewards) == pytest.approx(math.log(cash / 1000.0), abs=1e-12)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0.0], np.float32))


def test_slippage_and_tick_rounding_against_the_trader(make_frame):
    open_ = [100.0, 100.004, 100.004, 100.0]
    close = [100.0, 100.0, 100.0, 100.0]
    env = env_for(make_frame, open_, close, fee=F, slippage_bps=10.0, filters=flt(tick_size=0.01))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    buy_px = 100.11  # 100.004 * 1.001 = 100.104004 -> up to the tick
    assert info["fill_price"] == pytest.approx(buy_px, abs=1e-9)
    q = 1000.0 / (buy_px * (1 + F))
    assert info["position"] == pytest.approx(q, rel=1e-12)
    _, _, _, _, info = env.step(np.array([0.0], np.float32))
    sell_px = 99.90  # 100.004 * 0.999 = 99.903996 -> down to the tick
    assert info["fill_price"] == pytest.approx(sell_px, abs=1e-9)
    assert info["cash"] == pytest.approx(q * sell_px * (1 - F), rel=1e-12)
    assert info["fees_paid"] == pytest.approx(q * buy_px * F + q * sell_px * F, rel=1e-12)


def test_min_notional_rejects_small_orders_without_fee(make_frame):
    env = env_for(make_frame, [100.0] * 4, [100.0] * 4, fee=F, slippage_bps=0.0, filters=flt(min_notional=10.0))
    env.reset(seed=0)
    _, r, _, _, info = env.step(np.array([0.005]))  # ~5 USDT < 10: rejected
    assert not info["trade"] and info["fee"] == 0.0 and info["fees_paid"] == 0.0
    assert info["cash"] == 1000.0 and info["position"] == 0.0 and r == 0.0
    _, _, _, _, info = env.step(np.array([0.02]))  # ~20 USDT: fills
    assert info["trade"] and info["position"] * 100.0 == pytest.approx(20.0 / (1 + 0.02 * F), rel=1e-9)


def test_lot_step_floors_quantities(make_frame):
    env = env_for(make_frame, [100.0] * 4, [100.0] * 4, fee=0.0, slippage_bps=0.0, initial_cash=1005.0,
                  filters=flt(step_size=0.1, min_qty=0.1))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0], np.float32))  # wants 10.05, may buy 10.0
    assert info["position"] == pytest.approx(10.0, abs=1e-12) and info["cash"] == pytest.approx(5.0, abs=1e-9)
    _, _, _, _, info = env.step(np.array([0.5], np.float32))  # sell 4.975 -> 4.9
    assert info["fill_qty"] == pytest.approx(-4.9, abs=1e-12)
    assert info["position"] == pytest.approx(5.1, abs=1e-12) and info["cash"] == pytest.approx(495.0, abs=1e-9)


def test_buy_is_scaled_to_the_cash_and_cash_never_goes_negative(make_frame):
    env = env_for(make_frame, [3333.33] * 4, [3333.33] * 4, fee=F, slippage_bps=7.0, initial_cash=1000.0)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    px = info["fill_price"]
    assert px == pytest.approx(3335.67, abs=1e-9)  # 3333.33 * 1.0007 = 3335.663331 -> tick up
    # floored to the 0.0001 step, and step * price * (1 + f) more would overdraw
    assert info["position"] == pytest.approx(math.floor(1000.0 / (px * (1 + F)) / 1e-4) * 1e-4, abs=1e-12)
    assert 0.0 <= info["cash"] < 1e-4 * px * (1 + F)


def test_dust_rule_sells_the_whole_position(make_frame):
    env = env_for(make_frame, [100.0] * 4, [100.0] * 4, fee=0.0, slippage_bps=0.0,
                  filters=flt(step_size=0.0001, min_qty=0.0001, min_notional=10.0))
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    assert info["position"] == pytest.approx(10.0, abs=1e-12)
    # target 0.005 would keep 0.05 ETH = 5 USDT, below min notional: everything is sold
    _, _, _, _, info = env.step(np.array([0.005]))
    assert info["position"] == 0.0 and info["cash"] == pytest.approx(1000.0, abs=1e-9)


def test_volume_participation_cap_and_impact(make_frame):
    capped = env_for(make_frame, [100.0] * 3, [100.0] * 3, volume=[5.0] * 3, fee=0.0, slippage_bps=0.0,
                     filters=None, max_participation=0.1)
    capped.reset(seed=0)
    _, _, _, _, info = capped.step(np.array([1.0], np.float32))
    assert info["position"] == pytest.approx(0.5, rel=1e-12)  # 10% of the bar's 5 ETH
    impact = env_for(make_frame, [100.0] * 3, [100.0] * 3, volume=[100.0] * 3, fee=0.0, slippage_bps=0.0,
                     filters=None, impact_bps=100.0)
    impact.reset(seed=0)
    _, _, _, _, info = impact.step(np.array([1.0], np.float32))
    # first pass: 10 ETH = 10% of volume -> 100 bps x 0.1 = 10 bps -> price 100.1, then re-sized
    assert info["fill_price"] == pytest.approx(100.1, rel=1e-12)
    assert info["position"] == pytest.approx(1000.0 / 100.1, rel=1e-12)


def test_buy_sell_hold_moves_exposure_by_the_fraction(make_frame):
    env = env_for(make_frame, [100.0] * 7, [100.0] * 7, fee=0.0, slippage_bps=0.0, filters=None,
                  action="buy_sell_hold", trade_fraction=0.5)
    env.reset(seed=0)
    expected = [(1, 0.5, True), (0, 0.5, False), (1, 1.0, True), (1, 1.0, False), (2, 0.5, True), (2, 0.0, True)]
    for action, exposure, trade in expected:
        _, _, _, _, info = env.step(action)
        assert info["exposure"] == pytest.approx(exposure, abs=1e-12), (action, exposure)
        assert info["trade"] == trade


def test_levels_action(make_frame):
    env = env_for(make_frame, [100.0] * 4, [100.0] * 4, fee=0.0, slippage_bps=0.0, filters=None,
                  action="levels", levels=(0.0, 0.25, 1.0))
    env.reset(seed=0)
    for a, x in ((1, 0.25), (2, 1.0), (0, 0.0)):
        assert env.step(a)[4]["exposure"] == pytest.approx(x, abs=1e-12)
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(3)


def test_dsr_and_drawdown_rewards_follow_their_formulas(make_frame):
    close = [100.0, 110.0, 99.0, 108.0, 90.0]
    open_ = [100.0, 100.0, 110.0, 99.0, 108.0]
    kw = dict(fee=0.0, slippage_bps=0.0, filters=None)
    # buy at open[1] = 100, then hold: equity = 10 * close
    log_r = [math.log(110 / 100), math.log(99 / 110), math.log(108 / 99), math.log(90 / 108)]

    eta = 0.1
    env = env_for(make_frame, open_, close, reward="dsr", dsr_eta=eta, **kw)
    env.reset(seed=0)
    a = b = 0.0
    for r in log_r:
        var = b - a * a
        want = (b * (r - a) - 0.5 * a * (r * r - b)) / var ** 1.5 if var > 1e-18 else 0.0
        got = env.step(np.array([1.0], np.float32))[1]
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
        a, b = a + eta * (r - a), b + eta * (r * r - b)

    pen = 2.0
    env = env_for(make_frame, open_, close, reward="drawdown", dd_penalty=pen, **kw)
    env.reset(seed=0)
    # log drawdowns after each mark: 0 (new peak 1100), log(1100/990), log(1100/1080), log(1100/900)
    dd = [0.0, math.log(1100 / 990), math.log(1100 / 1080), math.log(1100 / 900)]
    prev = 0.0
    for r, d in zip(log_r, dd):
        want = r - pen * max(0.0, d - prev)
        assert env.step(np.array([1.0], np.float32))[1] == pytest.approx(want, rel=1e-12, abs=1e-15)
        prev = d


def test_ruin_terminates(make_frame):
    env = env_for(make_frame, [100.0] * 4, [100.0, 100.0, 80.0, 80.0], fee=0.0, slippage_bps=0.0, filters=None,
                  ruin_floor=0.9)
    env.reset(seed=0)
    _, _, term, trunc, info = env.step(np.array([1.0], np.float32))
    assert not term and not trunc
    _, _, term, trunc, info = env.step(np.array([1.0], np.float32))
    assert term and not trunc and info["equity"] == pytest.approx(800.0)
