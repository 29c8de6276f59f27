"""The live path and the backtest path are one env: ``ExecutionEnv`` driving ``TradingEnv(live=True)`` through
its ports, with the historical frame as the feed and the kernel's fill model as the broker, gives
``TradingEnv.step``'s numbers bit for bit (fills, fees, equity, rewards, observations), across filled gaps
and masked rows, with fees, slippage, impact and exchange rules on."""

from __future__ import annotations

import numpy as np
import pytest

from spotgym.data import load_bars
from spotgym.envs import EnvConfig, Feed, Fill, HistoricalFeed, KernelBroker, Order, TradingEnv
from spotgym.features import build_features
from spotgym.wrappers import ExecutionEnv

INFO_KEYS = ("row", "equity", "cash", "position", "exposure", "fees_paid", "trade", "fill_price", "fill_qty", "fee")


def _pair(frame, config, warmup):
    backtest = TradingEnv(frame, config)
    live = TradingEnv(frame.slice(0, warmup), config, live=True)
    wrapped = ExecutionEnv(live, HistoricalFeed(frame, warmup), KernelBroker(frame, live))
    return backtest, wrapped


def _run_both(frame, config, warmup, actions):
    backtest, wrapped = _pair(frame, config, warmup)
    obs_a, info_a = backtest.reset()
    obs_b, info_b = wrapped.reset()
    np.testing.assert_array_equal(obs_a, obs_b)
    steps = 0
    for action in actions:
        obs_a, r_a, term_a, trunc_a, info_a = backtest.step(action)
        obs_b, r_b, term_b, _, info_b = wrapped.step(action)
        assert r_a == r_b, (steps, r_a, r_b)
        assert {k: info_a[k] for k in INFO_KEYS} == {k: info_b[k] for k in INFO_KEYS}, steps
        np.testing.assert_array_equal(obs_a, obs_b)
        assert term_a == term_b
        steps += 1
        if term_a or trunc_a:
            break
    return steps, wrapped


@pytest.mark.parametrize("action_kind", ["continuous", "levels", "buy_sell_hold"])
def test_feed_and_broker_reproduce_the_kernel_bit_for_bit(eth_1h_path, action_kind):
    # ETH/USDT 1h over the 2018-02-08 outage (33 missing bars, filled flat), with masked rows forced in too
    bars = load_bars(eth_1h_path, gap_policy="fill", start="2018-01-01", end="2018-03-15")
    frame = build_features(bars)
    valid = frame.valid.copy()
    valid[1200:1203] = False  # a stretch without predictions, say
    frame = type(frame)(**{**frame.__dict__, "valid": valid})
    assert frame.synthetic.sum() == 34  # and the 1-bar gap of 2018-01-04
    config = EnvConfig(action=action_kind, window=16, fee=0.001, slippage_bps=3.0, impact_bps=20.0,
                       levels=(0.0, 0.3, 1.0), trade_fraction=0.5)
    rng = np.random.default_rng(7)
    n = 2000
    if action_kind == "continuous":
        actions = list(rng.choice([0.0, 0.25, 1.0], n).astype(np.float32)[:, None])
    else:
        actions = list(rng.integers(0, 3, n))
    warmup = 800  # the feature warm-up (699 rows) plus a window: the live env starts on the same row
    steps, wrapped = _run_both(frame, config, warmup, actions)
    assert steps > 900
    # every order carried its client id and decision bar; every fill is at a real bar's open
    assert len(wrapped.orders) == steps and len({o.client_id for o in wrapped.orders}) == steps
    fill_rows = frame.index.get_indexer([np.datetime64(f.time_ms, "ms") for f in wrapped.fills])
    assert len(wrapped.fills) > 50 and not frame.synthetic[fill_rows].any()


def test_the_wrapper_books_a_live_brokers_fill_into_the_bar_it_happened_in(make_frame):
    """A broker that is not the kernel: it fills the planned quantity at a price of its own, 17 minutes into
    the next bar, charging 0.2 %. The account takes exactly that fill; the step marks at that bar's close."""

    class Exchange:
        def __init__(self):
            self.sent: list[Order] = []

        def execute(self, order: Order) -> list[Fill]:
            self.sent.append(order)
            if order.side == "none":
                return []
            qty = order.quantity if order.side == "buy" else -order.quantity
            price = order.reference_price * 1.01
            return [Fill(order.client_id, order.decision_time_ms + 3_600_000 + 17 * 60_000, qty, price,
                         abs(qty) * price * 0.002)]

    prices = np.linspace(100.0, 130.0, 31)
    frame = make_frame(prices, prices + 0.5)
    env = TradingEnv(frame.slice(0, 10), EnvConfig(window=4, fee=0.0, slippage_bps=0.0, filters=None), live=True)
    broker = Exchange()
    wrapped = ExecutionEnv(env, HistoricalFeed(frame, 10), broker)
    assert isinstance(wrapped.feed, Feed)
    wrapped.reset()
    assert env.row == 3
    _, reward, _, _, info = wrapped.step(np.array([0.5], np.float32))
    order = broker.sent[0]
    assert order.side == "buy" and order.reference_price == frame.close[3]
    planned = 0.5 * 10_000.0 / frame.close[3]  # half the equity at the last close, no fee in the env config
    assert order.quantity == pytest.approx(planned)
    price = frame.close[3] * 1.01
    fee = planned * price * 0.002
    assert info["row"] == 4 and info["fill_price"] == pytest.approx(price) and info["fee"] == pytest.approx(fee)
    assert info["equity"] == pytest.approx(10_000.0 - planned * price - fee + planned * frame.close[4])
    assert reward == pytest.approx(np.log(info["equity"] / 10_000.0))
    # the feed runs dry: the episode is truncated where it stands
    for _ in range(40):
        *_, trunc, info = wrapped.step(np.array([0.5], np.float32))
        if trunc:
            break
    assert trunc and info["row"] == 30
