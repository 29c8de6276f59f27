"""TradingRules: validation, Binance's filters both ways, ccxt markets, the shipped snapshot, and the rules
of a symbol read back through ccxt from the replay exchange."""

from __future__ import annotations

import pytest

from spotgym.data import load_bars
from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import TradingRules, UnknownSymbol, known_symbols, make_exchange, rules_for

ETH = TradingRules(symbol="ETH/USDT", tick_size=0.01, step_size=0.0001, min_qty=0.0001, min_notional=5.0,
                   min_price=0.01, max_price=1_000_000.0, max_qty=9000.0, max_notional=9_000_000.0)

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


def test_validation_and_off():
    assert TradingRules(min_notional=None).min_notional == 0.0  # None = off
    assert TradingRules.off().as_array().tolist() == [0.0, 0.0, 0.0, 0.0]
    assert ETH.as_array().tolist() == [0.01, 0.0001, 0.0001, 5.0]  # the kernel's four, in its order
    with pytest.raises(ValueError, match="step_size"):
        TradingRules(step_size=-1)
    with pytest.raises(ValueError, match="min_qty.*exceeds max_qty"):
        TradingRules(min_qty=1.0, max_qty=0.5)
    with pytest.raises(ValueError, match="tick"):
        TradingRules.from_mapping({"tick": 0.1})


def test_from_ccxt_market_reads_binance_filters():
    assert TradingRules.from_ccxt_market(BINANCE_ETHUSDT_MARKET) == ETH
    raw = dict(BINANCE_ETHUSDT_MARKET)
    raw["info"] = {"filters": [{"filterType": "PRICE_FILTER", "tickSize": "0.10000000"},
                               {"filterType": "LOT_SIZE", "minQty": "0.00100000", "stepSize": "0.00100000"},
                               {"filterType": "MIN_NOTIONAL", "minNotional": "10.00000000"}]}
    assert TradingRules.from_ccxt_market(raw).as_array().tolist() == [0.1, 0.001, 0.001, 10.0]


def test_from_ccxt_market_unified_fields_and_precision_modes():
    unified = {k: v for k, v in BINANCE_ETHUSDT_MARKET.items() if k != "info"}
    assert TradingRules.from_ccxt_market(unified) == ETH
    decimals = dict(unified, precision={"amount": 4, "price": 2})  # ccxt DECIMAL_PLACES style
    assert TradingRules.from_ccxt_market(decimals, precision_mode=2) == ETH
    assert TradingRules.from_ccxt_market(decimals) == ETH
    assert TradingRules.from_ccxt_market({"symbol": "X/Y"}) == TradingRules.off("X/Y")


def test_binance_filters_round_trip_as_decimal_strings():
    filters = ETH.binance_filters()
    assert filters[0] == {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"}
    assert filters[1] == {"filterType": "LOT_SIZE", "minQty": "0.0001", "maxQty": "9000", "stepSize": "0.0001"}
    assert filters[2]["minNotional"] == "5" and filters[2]["maxNotional"] == "9000000"
    assert TradingRules.from_binance_filters(filters, "ETH/USDT") == ETH


def test_snapshot_holds_common_symbols_with_their_own_rules():
    assert {"BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"} <= set(known_symbols())
    assert rules_for("eth/usdt") == ETH
    btc, sol, bnb = rules_for("BTC/USDT"), rules_for("SOL/USDT"), rules_for("BNB/USDT")
    assert (btc.step_size, btc.tick_size) == (0.00001, 0.01)
    assert (sol.step_size, sol.max_price) == (0.01, 10_000.0)
    assert (bnb.tick_size, bnb.step_size) == (0.1, 0.001)
    with pytest.raises(UnknownSymbol, match="'PEPE/USDT'"):
        rules_for("PEPE/USDT")
    with pytest.raises(UnknownSymbol, match="BASE/QUOTE"):
        rules_for("ETHUSDT")
    assert known_symbols("kraken") == ()


def test_rules_come_from_the_exchange_through_ccxt(eth_1h_path):
    """The replay exchange serves a symbol's rules in exchangeInfo; ccxt reads them back; they are the same
    rules the env uses (one class on both sides)."""
    bars = load_bars(eth_1h_path).iloc[:100]
    odd = TradingRules(symbol="SOL/USDT", tick_size=0.001, step_size=0.1, min_qty=0.1, min_notional=7.0,
                       min_price=0.001, max_price=5000.0, max_qty=100000.0, max_notional=1e6)
    app = create_app({"ETH/USDT@1h": bars, "SOL/USDT@1h": bars}, now_ms=int(bars.index[-1].value // 10**6),
                     rules={"SOL/USDT": odd})
    with serve_in_thread(app) as url:
        client = make_exchange(mode="sim", sim_url=url)
        assert rules_for("SOL/USDT", client=client) == odd
        assert rules_for("ETH/USDT", client=client) == ETH  # no rules given: the venue snapshot's, served
        with pytest.raises(UnknownSymbol, match="no market 'BTC/USDT'"):
            rules_for("BTC/USDT", client=client)
