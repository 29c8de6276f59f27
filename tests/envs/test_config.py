"""EnvConfig validation and overrides; the trading rules it resolves for a frame's symbol."""

from __future__ import annotations

import dataclasses

import pytest

from spotgym.envs import EnvConfig, TradingEnv
from spotgym.venue import TradingRules, UnknownSymbol


def test_defaults_and_keyword_overrides():
    cfg = EnvConfig()
    assert cfg.action == "continuous" and cfg.reward == "log" and cfg.fee == 0.001 and cfg.window == 32
    assert cfg.filters == "venue" and cfg.episode_length is None
    off = EnvConfig(fee=0.0, filters=None)
    assert off.fee == 0.0 and off.filters is None
    assert EnvConfig(levels=[0, 1]).levels == (0.0, 1.0)
    assert cfg.replace(window=8).window == 8 and cfg.window == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fee = 0.5  # type: ignore[misc]
    assert EnvConfig(filters={"min_notional": 10.0}).filters == TradingRules(min_notional=10.0)
    assert EnvConfig.from_mapping(cfg.to_dict() | {"filters": None}) == EnvConfig(filters=None)
    assert EnvConfig.from_mapping(cfg.to_dict()) == cfg


@pytest.mark.parametrize("field,value", [
    ("fee", -1), ("fee", 1.0), ("fee", float("nan")), ("slippage_bps", -0.1), ("impact_bps", -1),
    ("window", 0), ("window", 2.5), ("episode_length", 0), ("action", "short"), ("reward", "pnl"),
    ("levels", ()), ("levels", (0.0, 1.5)), ("levels", (0.5, 0.5)), ("trade_fraction", 0.0),
    ("deadband", 1.0), ("initial_cash", 0.0), ("ruin_floor", 1.0), ("dsr_eta", 0.0), ("dd_penalty", -1),
    ("max_participation", 0.0), ("obs_mode", "image"), ("start_row", -1), ("end_row", 1), ("filters", 3),
    ("filters", "exchange"),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        EnvConfig(**{field: value})


def test_for_rows_takes_a_fold_range():
    cfg = EnvConfig(episode_length=10).for_rows(range(100, 500))
    assert (cfg.start_row, cfg.end_row, cfg.episode_length) == (100, 500, 10)
    with pytest.raises(ValueError, match="contiguous"):
        EnvConfig().for_rows(range(0, 10, 2))


def test_unknown_mapping_keys_are_named():
    with pytest.raises(ValueError, match="feee"):
        EnvConfig.from_mapping({"feee": 0.1})


def test_rules_follow_the_frames_symbol(make_frame):
    """The env trades a frame of BTC/USDT bars under BTC/USDT's lot step, SOL/USDT under SOL's: never
    under ETH/USDT's whatever the data (the values are Binance's, 2024-04-05)."""
    prices = [100.0] * 60
    eth = TradingEnv(make_frame(prices, prices), EnvConfig(window=4)).engine.rules
    btc = TradingEnv(make_frame(prices, prices, symbol="BTC/USDT"), EnvConfig(window=4)).engine.rules
    sol = TradingEnv(make_frame(prices, prices, symbol="SOL/USDT"), EnvConfig(window=4)).engine.rules
    assert (eth.step_size, eth.min_qty, eth.min_notional) == (0.0001, 0.0001, 5.0)
    assert (btc.step_size, btc.min_qty, btc.tick_size) == (0.00001, 0.00001, 0.01)
    assert (sol.step_size, sol.min_qty, sol.tick_size) == (0.01, 0.01, 0.01)
    # explicit rules win; None switches them off
    mine = TradingRules(symbol="BTC/USDT", step_size=0.5)
    assert TradingEnv(make_frame(prices, prices, symbol="BTC/USDT"), EnvConfig(window=4, filters=mine)).engine.rules \
        is mine
    assert TradingEnv(make_frame(prices, prices), EnvConfig(window=4, filters=None)).engine.rules.as_array().sum() == 0


def test_a_symbol_without_known_rules_is_an_error(make_frame):
    prices = [100.0] * 60
    with pytest.raises(UnknownSymbol, match="'PEPE/USDT'.*give them explicitly"):
        TradingEnv(make_frame(prices, prices, symbol="PEPE/USDT"), EnvConfig(window=4))
    with pytest.raises(ValueError, match="does not say which symbol"):
        TradingEnv(make_frame(prices, prices, symbol=None), EnvConfig(window=4))
    env = TradingEnv(make_frame(prices, prices, symbol="PEPE/USDT"),
                     EnvConfig(window=4, filters={"step_size": 1.0, "min_notional": 1.0}))
    assert env.engine.rules.step_size == 1.0
