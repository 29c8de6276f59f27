"""EnvConfig validation and overrides; exchange filters and their ccxt constructor."""

from __future__ import annotations

import dataclasses

import pytest

from spotgym.envs import ETHUSDT_FILTERS, EnvConfig, ExchangeFilters


def test_defaults_and_keyword_overrides():
    cfg = EnvConfig()
    assert cfg.action == "continuous" and cfg.reward == "log" and cfg.fee == 0.001 and cfg.window == 32
    assert cfg.filters == ETHUSDT_FILTERS and cfg.episode_length is None
    off = EnvConfig(fee=0.0, filters=None)
    assert off.fee == 0.0 and off.filters is None
    assert EnvConfig(levels=[0, 1]).levels == (0.0, 1.0)
    assert cfg.replace(window=8).window == 8 and cfg.window == 32
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fee = 0.5  # type: ignore[misc]
    assert EnvConfig(filters={"min_notional": 10.0}).filters == ExchangeFilters(min_notional=10.0)
    assert EnvConfig.from_mapping(cfg.to_dict() | {"filters": None}) == EnvConfig(filters=None)


@pytest.mark.parametrize("field,value", [
    ("fee", -1), ("fee", 1.0), ("fee", float("nan")), ("slippage_bps", -0.1), ("impact_bps", -1),
    ("window", 0), ("window", 2.5), ("episode_length", 0), ("action", "short"), ("reward", "pnl"),
    ("levels", ()), ("levels", (0.0, 1.5)), ("levels", (0.5, 0.5)), ("trade_fraction", 0.0),
    ("deadband", 1.0), ("initial_cash", 0.0), ("ruin_floor", 1.0), ("dsr_eta", 0.0), ("dd_penalty", -1),
    ("max_participation", 0.0), ("obs_mode", "image"), ("start_row", -1), ("end_row", 1), ("filters", 3),
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
    with pytest.raises(ValueError, match="tick"):
        ExchangeFilters.from_mapping({"tick": 0.1})


def test_filters_defaults_switches_and_validation():
    f = ExchangeFilters()
    assert (f.tick_size, f.step_size, f.min_qty, f.min_notional) == (0.01, 0.0001, 0.0001, 5.0)
    assert ExchangeFilters(min_notional=None).min_notional == 0.0  # None = off
    assert ExchangeFilters.off().as_array().tolist() == [0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="step_size"):
        ExchangeFilters(step_size=-1)


# the shape of ccxt's Binance market entry (ccxt 4.x, precisionMode TICK_SIZE), trimmed
BINANCE_ETHUSDT_MARKET = {
    "id": "ETHUSDT", "symbol": "ETH/USDT", "base": "ETH", "quote": "USDT", "spot": True,
    "precision": {"amount": 0.0001, "price": 0.01},
    "limits": {"amount": {"min": 0.0001, "max": 9000.0}, "price": {"min": 0.01, "max": 1000000.0},
               "cost": {"min": 5.0, "max": 9000000.0}},
    "info": {"symbol": "ETHUSDT", "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000",
         "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00010000", "maxQty": "9000.00000000", "stepSize": "0.00010000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000"},
    ]},
}


def test_from_ccxt_market_reads_binance_filters():
    f = ExchangeFilters.from_ccxt_market(BINANCE_ETHUSDT_MARKET)
    assert f == ExchangeFilters(symbol="ETH/USDT") == ETHUSDT_FILTERS
    raw = dict(BINANCE_ETHUSDT_MARKET)
    raw["info"] = {"filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10000000"},
                               {"filterType": "LOT_SIZE", "minQty": "0.00100000", "stepSize": "0.00100000"},
                               {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000"}]}
    assert ExchangeFilters.from_ccxt_market(raw).as_array().tolist() == [0.1, 0.001, 0.001, 10.0]


def test_from_ccxt_market_unified_fields_and_precision_modes():
    unified = {k: v for k, v in BINANCE_ETHUSDT_MARKET.items() if k != "info"}
    assert ExchangeFilters.from_ccxt_market(unified) == ETHUSDT_FILTERS
    decimals = dict(unified, precision={"amount": 4, "price": 2})  # ccxt DECIMAL_PLACES style
    assert ExchangeFilters.from_ccxt_market(decimals, precision_mode=2) == ETHUSDT_FILTERS
    assert ExchangeFilters.from_ccxt_market(decimals) == ETHUSDT_FILTERS
    bare = ExchangeFilters.from_ccxt_market({"symbol": "X/Y"})
    assert bare == ExchangeFilters.off("X/Y")
