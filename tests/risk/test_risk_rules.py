"""Each risk rule on a short price path worked out by hand (no fee, no slippage, no exchange rules, one-row
windows, 10,000 cash: a target x is x * equity / open units bought at the open), then the invariants with every
rule on: the log rewards still sum to log(final / initial), the rules read nothing after the decision's close,
and the live seam applies them bit for bit as the step kernel does."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spotgym.core import FeatureFrame
from spotgym.data import load_bars
from spotgym.envs import EnvConfig, HistoricalFeed, KernelBroker, TradingEnv, VecTradingEnv
from spotgym.features import build_features
from spotgym.risk import RiskConfig, flag_names
from spotgym.risk.nb import (
    FLAG_DAILY_LOSS,
    FLAG_DRAWDOWN_HALT,
    FLAG_KELLY,
    FLAG_MAX_EXPOSURE,
    FLAG_MIN_HOLDING,
    FLAG_ORDER_RATE,
    FLAG_STOP_LOSS,
    FLAG_TAKE_PROFIT,
    FLAG_TRAILING_STOP,
    FLAG_VOL_TARGET,
)
from spotgym.wrappers import ExecutionEnv

CASH = 10_000.0
PLAIN = dict(fee=0.0, slippage_bps=0.0, filters=None, window=1, initial_cash=CASH)


def frame_of(open_, close, *, freq: str = "1h", values=None, start: str = "2024-01-01") -> FeatureFrame:
    open_ = np.asarray(open_, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    n = len(open_)
    values = np.zeros((n, 1), np.float32) if values is None else np.asarray(values, np.float32).reshape(n, -1)
    return FeatureFrame(values=values, columns=tuple(f"f{j}" for j in range(values.shape[1])),
                        index=pd.date_range(start, periods=n, freq=freq, tz="UTC"), open=open_,
                        high=np.maximum(open_, close), low=np.minimum(open_, close), close=close,
                        volume=np.full(n, 1e9), symbol="ETH/USDT")


def run(frame, risk, actions, **cfg):
    """Step a sequential pass with ``actions`` (a list, or one action for every step); returns the infos
    (the reset's first) and the env."""
    env = TradingEnv(frame, EnvConfig(**{**PLAIN, **cfg}, risk=risk))
    _, info = env.reset()
    infos = [info]
    k = 0
    while True:
        action = actions[k] if isinstance(actions, list) else actions
        _, _, term, trunc, info = env.step(np.array([action], np.float32))
        infos.append(info)
        k += 1
        if term or trunc or (isinstance(actions, list) and k == len(actions)):
            return infos, env


def positions(infos):
    return [round(i["position"], 9) for i in infos]


def test_stop_loss_triggers_on_a_close_and_fills_at_the_next_open():
    open_ = [100, 100, 100, 100, 90, 85, 85]
    close = [100, 100, 100, 95, 88, 85, 85]
    infos, _ = run(frame_of(open_, close), {"stop_loss": 0.05}, 1.0)
    # bought 100 units at open[1]; close[3] = 95 = 100 x (1 - 0.05) -> sold at open[4] = 90; back in at open[5]
    assert positions(infos) == [0, 100, 100, 100, 0, round(9000 / 85, 9), round(9000 / 85, 9)]
    assert [i["risk"] for i in infos] == [0, 0, 0, 0, FLAG_STOP_LOSS, 0, 0]
    assert infos[4]["cash"] == 9000.0 and flag_names(infos[4]["risk"]) == ["stop_loss"]


def test_take_profit_and_trailing_stop():
    open_ = [100, 100, 104, 109, 112, 115]
    close = [100, 104, 109, 111, 113, 115]
    infos, _ = run(frame_of(open_, close), {"take_profit": 0.1}, 1.0)
    # close[3] = 111 >= 110: sold at open[4] = 112, rebought at open[5]
    assert [i["risk"] for i in infos] == [0, 0, 0, 0, FLAG_TAKE_PROFIT, 0]
    assert infos[4]["position"] == 0 and infos[4]["cash"] == 11200.0

    open_ = [100, 100, 110, 120, 115, 108, 100]
    close = [100, 110, 120, 115, 108, 104, 100]
    infos, _ = run(frame_of(open_, close), {"trailing_stop": 0.1}, 1.0)
    # highest close since entry 120; close[4] = 108 = 120 x 0.9 -> sold at open[5] = 108
    assert [i["risk"] for i in infos] == [0, 0, 0, 0, 0, FLAG_TRAILING_STOP, 0]
    assert infos[5]["cash"] == 10800.0 and infos[6]["position"] == pytest.approx(10800 / 100)


def test_drawdown_halt_flattens_and_stays_flat_until_reset_or_cooldown():
    open_ = [100, 100, 100, 90, 80, 80, 80, 80, 80, 80]
    close = [100, 100, 90, 79, 80, 80, 80, 80, 80, 80]
    infos, env = run(frame_of(open_, close), {"max_drawdown": 0.2}, 1.0)
    # equity at close[3] = 7,900 <= 0.8 x 10,000: flattened at open[4] = 80 and never back in
    assert positions(infos)[:4] == [0, 100, 100, 100] and all(p == 0 for p in positions(infos)[4:])
    assert [i["halted"] for i in infos] == [False] * 4 + [True] * 6
    assert all(i["risk"] == FLAG_DRAWDOWN_HALT for i in infos[4:])
    assert infos[-1]["equity"] == 8000.0 and env.halted

    # by hand: reset the halt after two halted steps; the next decision buys again
    env = TradingEnv(frame_of(open_, close), EnvConfig(**PLAIN, risk={"max_drawdown": 0.2}))
    env.reset()
    for _ in range(5):
        _, _, _, _, info = env.step(np.array([1.0], np.float32))
    assert info["row"] == 5 and info["position"] == 0 and env.halted
    env.reset_halt()
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    assert not env.halted and info["position"] == 100 and info["risk"] == 0  # 8,000 / 80 at open[6]

    # with a 2-bar cool-down: halted on row 3, trading again from the decision on row 5 (5 - 3 >= 2)
    infos, _ = run(frame_of(open_, close), {"max_drawdown": 0.2, "halt_cooldown_bars": 2}, 1.0)
    assert positions(infos) == [0, 100, 100, 100, 0, 0, 100, 100, 100, 100]
    assert [i["halted"] for i in infos] == [False] * 4 + [True, True] + [False] * 4


def test_daily_loss_limit_blocks_increases_until_the_next_utc_day():
    n = 27
    open_ = [100.0] * 5 + [94.0] * (n - 5)
    close = [100.0] * 4 + [94.0] * (n - 4)
    actions = [1.0] * 5 + [0.5] + [1.0] * (n - 7)
    infos, _ = run(frame_of(open_, close), {"daily_loss_limit": 0.05}, actions)
    # rows 0..22 decide at 01:00..23:00 of Jan 1 (start equity 10,000); equity 9,400 after close[4]
    expo = [round(i["exposure"], 6) for i in infos]
    assert expo[1:6] == [1.0] * 5  # holding is no increase
    assert infos[6]["position"] == pytest.approx(50.0)  # a decrease is allowed: half sold at open[6]
    assert all(i["risk"] == FLAG_DAILY_LOSS for i in infos[7:24])  # rows 6..22: back to 1.0 vetoed
    # row 23 decides at 00:00 of Jan 2: a new day, whose start equity is 9,400 -> the buy goes through
    assert infos[24]["risk"] == 0 and infos[24]["exposure"] == pytest.approx(1.0)


def test_max_orders_per_hour_counts_orders_in_the_rolling_hour():
    n = 16
    frame = frame_of([100.0] * n, [100.0] * n, freq="5min")
    actions = [1.0 if k % 2 == 0 else 0.0 for k in range(n - 1)]
    infos, _ = run(frame, {"max_orders_per_hour": 2}, actions)
    trades = [i["trade"] for i in infos[1:]]
    # orders decided at 00:05 and 00:10; the next ones wait until 00:05 leaves the hour: the decision at 01:05
    assert trades[:2] == [True, True] and not any(trades[2:12]) and trades[12]
    assert [i["risk"] for i in infos[1:13]] == [0, 0] + [FLAG_ORDER_RATE, 0] * 5
    assert infos[13]["position"] == 100


def test_min_holding_bars_delays_a_reduction():
    frame = frame_of([100.0] * 7, [100.0] * 7)
    infos, _ = run(frame, {"min_holding_bars": 3}, [1.0, 0.0, 0.0, 0.0, 0.0])
    assert positions(infos) == [0, 100, 100, 100, 0, 0]
    assert [i["risk"] for i in infos] == [0, 0, FLAG_MIN_HOLDING, FLAG_MIN_HOLDING, 0, 0]


def test_max_exposure_caps_the_target():
    infos, _ = run(frame_of([100.0] * 3, [100.0] * 3), {"max_exposure": 0.5}, 1.0)
    assert infos[1]["position"] == 50 and infos[1]["risk"] == FLAG_MAX_EXPOSURE
    assert infos[2]["trade"] is False  # already at the cap: no order, nothing changed by the rule


def test_vol_target_scales_the_target_by_realised_volatility():
    close = np.array([100, 101, 99.5, 102, 100.5, 103, 101, 101], dtype=float)
    open_ = np.r_[100.0, close[:-1]]
    frame = frame_of(open_, close)
    infos, _ = run(frame, {"vol_target": 0.5, "vol_window": 4}, [0.0] * 4 + [1.0])
    # the decision on row 4 sees the returns of rows 1..4; variance with ddof 0, 8766 hours a year
    r = np.diff(np.log(close[:5]))
    vol = math.sqrt(np.var(r) * 365.25 * 24)
    target = 0.5 / vol
    assert 0 < target < 1
    assert infos[5]["position"] == pytest.approx(target * CASH / open_[5], rel=1e-9)
    assert infos[5]["risk"] == FLAG_VOL_TARGET


def test_kelly_caps_at_a_fraction_of_forecast_over_variance():
    close = np.array([100, 101, 99.5, 102, 100.5, 103, 101, 101], dtype=float)
    open_ = np.r_[100.0, close[:-1]]
    forecast = np.zeros(8)
    forecast[4] = 0.0008  # a 4-bar forecast: 0.0002 a bar
    frame = frame_of(open_, close, values=forecast)
    frame = FeatureFrame(values=frame.values, columns=("edge_h4",), index=frame.index, open=frame.open,
                         high=frame.high, low=frame.low, close=frame.close, volume=frame.volume, symbol=frame.symbol)
    infos, _ = run(frame, {"kelly_fraction": 0.5, "kelly_column": "edge_h4", "vol_window": 4}, [0.0] * 4 + [1.0, 1.0])
    var = np.var(np.diff(np.log(close[:5])))
    cap = 0.5 * np.float32(0.0008) / 4 / var
    assert 0 < cap < 1
    assert infos[5]["position"] == pytest.approx(cap * CASH / open_[5], rel=1e-6)  # float32 forecast
    assert infos[5]["risk"] == FLAG_KELLY
    assert infos[6]["position"] == 0 and infos[6]["risk"] == FLAG_KELLY  # no forecast on row 5: no position


def test_kelly_horizon_comes_from_the_column_name():
    assert RiskConfig(kelly_fraction=0.5, kelly_column="lstm_ret_h4").kelly_horizon == 4
    assert RiskConfig(kelly_fraction=0.5, kelly_column="edge").kelly_horizon == 1
    with pytest.raises(ValueError, match="kelly_fraction and RiskConfig.kelly_column go together"):
        RiskConfig(kelly_fraction=0.5)
    with pytest.raises(ValueError, match="risk.kelly_column 'nope' is not a column of the frame"):
        TradingEnv(frame_of([1.0] * 3, [1.0] * 3), EnvConfig(**PLAIN, risk={"kelly_fraction": 0.5,
                                                                             "kelly_column": "nope"}))


def test_forced_exits_beat_the_holding_and_rate_limits():
    open_ = [100, 100, 100, 90, 90]
    close = [100, 100, 94, 90, 90]
    infos, _ = run(frame_of(open_, close, freq="5min"),
                   {"stop_loss": 0.05, "min_holding_bars": 10, "max_orders_per_hour": 1}, 1.0)
    # stopped out at open[3] after 2 bars in position, with this hour's one order already sent
    assert positions(infos) == [0, 100, 100, 0, 0]
    assert [i["risk"] for i in infos] == [0, 0, 0, FLAG_STOP_LOSS, FLAG_ORDER_RATE]  # no re-entry: 2 orders this hour


# ---------------------------------------------------------------------- invariants on real data
ALL_RULES = {"max_exposure": 0.9, "vol_target": 0.8, "vol_window": 48, "stop_loss": 0.04, "take_profit": 0.08,
             "trailing_stop": 0.05, "max_drawdown": 0.25, "halt_cooldown_bars": 72, "daily_loss_limit": 0.03,
             "max_orders_per_hour": 1, "min_holding_bars": 3}


@pytest.fixture(scope="module")
def real(eth_1h_path):
    """ETH/USDT 1h, the default features, 3,000 rows after their warm-up (a 2021 stretch: steep moves)."""
    frame = build_features(load_bars(eth_1h_path, start="2020-12-01", end="2021-06-30"))
    start = frame.first_valid_row
    return frame.slice(start, start + 3000)


def test_log_rewards_sum_to_log_growth_with_every_rule_on(real):
    env = TradingEnv(real, EnvConfig(window=8, risk=ALL_RULES))
    _, info = env.reset()
    rng = np.random.default_rng(3)
    total, flags = 0.0, 0
    while True:
        _, r, term, trunc, info = env.step(rng.random(1).astype(np.float32))
        total += r
        flags |= info["risk"]
        if term or trunc:
            break
    assert total == pytest.approx(math.log(info["equity"] / 10_000.0), abs=1e-9)
    assert len(flag_names(flags)) >= 6  # most rules did bite on 3,000 real bars of random targets


def test_vec_env_matches_the_single_env_and_episodes_sum_to_log_growth(real):
    cfg = EnvConfig(window=8, episode_length=200, risk=ALL_RULES)
    single = TradingEnv(real, cfg)
    vec = VecTradingEnv(real, 3, cfg, seed=11)
    obs_v = vec.reset()
    obs_s, _ = single.reset(seed=11)
    rng = np.random.default_rng(0)
    sums, total = np.zeros(3), []
    for _ in range(450):
        a = rng.random((3, 1)).astype(np.float32)
        obs_v, rewards, dones, infos = vec.step(a)
        obs_s, r, term, trunc, info = single.step(a[0])
        assert r == rewards[0] and info["risk"] == infos[0]["risk"] and info["halted"] == infos[0]["halted"]
        sums += rewards
        for i in np.flatnonzero(dones):
            final = infos[i]["equity"]
            total.append(abs(sums[i] - math.log(final / 10_000.0)))
            sums[i] = 0.0
        if term or trunc:
            obs_s, _ = single.reset()
        np.testing.assert_array_equal(obs_s, obs_v[0])
    assert len(total) >= 6 and max(total) < 1e-9


def test_the_rules_read_nothing_after_the_decisions_close(real):
    """Change every price and feature after row t: every decision, flag and fill up to t stays the same."""
    cfg = EnvConfig(window=8, risk=ALL_RULES)
    actions = np.random.default_rng(5).random(len(real)).astype(np.float32)

    def trace(frame, upto):
        env = TradingEnv(frame, cfg)
        _, info = env.reset()
        out = []
        while info["row"] < upto:
            _, _, term, trunc, info = env.step(actions[info["row"]:info["row"] + 1])
            out.append((info["row"], info["risk"], info["halted"], info["position"], info["cash"]))
            if term or trunc:
                break
        return out

    t = 1800
    base = trace(real, t)
    scale = np.ones(len(real))
    scale[t + 1:] = np.random.default_rng(1).uniform(0.5, 1.5, len(real) - t - 1)
    values = real.values.copy()
    values[t + 1:] = -values[t + 1:]
    changed = FeatureFrame(values=values, columns=real.columns, index=real.index, open=real.open * scale,
                           high=real.high * scale, low=real.low * scale, close=real.close * scale,
                           volume=real.volume, valid=real.valid, synthetic=real.synthetic, symbol=real.symbol)
    # the fill at open[t + 1] is the first thing allowed to differ: compare up to the decision on row t
    assert trace(changed, t) == base
    assert sum(1 for step in base if step[1]) > 20


def test_the_live_seam_applies_the_rules_bit_for_bit(real):
    cfg = EnvConfig(window=8, fee=0.001, slippage_bps=2.0, risk=ALL_RULES, turnover_penalty=0.5)
    warmup = 40
    backtest = TradingEnv(real, cfg)
    live = TradingEnv(real.slice(0, warmup), cfg, live=True)
    wrapped = ExecutionEnv(live, HistoricalFeed(real, warmup), KernelBroker(real, live))
    backtest.reset()
    wrapped.reset()
    rng = np.random.default_rng(9)
    seen = 0
    for _ in range(1500):
        a = rng.random(1).astype(np.float32)
        _, r_a, term, trunc, info_a = backtest.step(a)
        _, r_b, _, _, info_b = wrapped.step(a)
        assert r_a == r_b
        for key in ("row", "equity", "cash", "position", "fee", "risk", "halted"):
            assert info_a[key] == info_b[key], key
        seen |= info_a["risk"]
        if term or trunc:
            break
    assert len(flag_names(seen)) >= 5


def test_turnover_penalty_and_decide_every():
    frame = frame_of([100.0, 100, 110, 120, 120, 120, 120], [100.0, 105, 115, 120, 120, 120, 120])
    env = TradingEnv(frame, EnvConfig(**PLAIN, turnover_penalty=0.5))
    env.reset()
    _, r, _, _, info = env.step(np.array([1.0], np.float32))
    # bought 10,000 of notional: log(10,500 / 10,000) - 0.5 x 10,000 / 10,000
    assert r == pytest.approx(math.log(1.05) - 0.5, abs=1e-12)
    _, r, _, _, _ = env.step(np.array([1.0], np.float32))
    assert r == pytest.approx(math.log(115 / 105), abs=1e-12)  # no order, no charge

    env = TradingEnv(frame, EnvConfig(**PLAIN, decide_every=3))
    env.reset()
    _, r, _, _, info = env.step(np.array([1.0], np.float32))
    assert info["row"] == 3 and r == pytest.approx(math.log(120 / 100), abs=1e-12)  # marked at closes 1, 2, 3
    _, r, _, trunc, info = env.step(np.array([0.0], np.float32))
    assert info["row"] == 6 and info["position"] == 0 and info["cash"] == 12_000.0 and trunc


def test_risk_config_from_yaml_keys_and_errors():
    cfg = EnvConfig(risk={"max_drawdown": 0.1})
    assert cfg.risk == RiskConfig(max_drawdown=0.1)
    assert EnvConfig(risk={}).risk is None  # no rule given: off
    with pytest.raises(ValueError, match=r"EnvConfig.risk: unknown risk rule\(s\) \['stop'\]"):
        EnvConfig(risk={"stop": 0.1})
    with pytest.raises(ValueError, match="RiskConfig.stop_loss must be a finite number"):
        EnvConfig(risk={"stop_loss": 2})
