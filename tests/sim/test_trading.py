"""Trading against the replay exchange with unmodified ccxt (sync and async): markets, klines at the data's and
aggregated intervals, balances, MARKET and LIMIT orders (GTC / IOC / FOK / maker), cancels, open orders,
trades, every error ccxt maps, and balances checked to the fee. The market clock is manual: the test steps it."""

from __future__ import annotations

import asyncio

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests

from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import make_exchange

KEY, SECRET = "spotgym-sim-key", "spotgym-sim-secret"
HOUR = 3_600_000
FEE = 0.001


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    return pd.read_csv(eth_1h_path).iloc[:3000].reset_index(drop=True)


@pytest.fixture
def server(bars):
    """A fresh exchange on ETH/USDT 1h, the clock at bar 500's open, 10,000 USDT and 2 ETH."""
    app = create_app({"ETH/USDT": bars}, start_ms=int(bars["timestamp"][500]), balances={"USDT": 10_000, "ETH": 2},
                     fee=FEE)
    with serve_in_thread(app) as url:
        yield app, url


def client(url, key=KEY, secret=SECRET):
    ex = make_exchange(mode="sim", sim_url=url, api_key=key, secret=secret)
    ex.load_markets()
    return ex


def step(url, bars=1) -> int:
    return requests.post(f"{url}/sim/step", params={"bars": bars}, timeout=10).json()["time"]


def test_markets_load_in_one_request_with_the_venue_rules(server):
    app, url = server
    ex = make_exchange(mode="sim", sim_url=url)
    markets = ex.load_markets()
    assert [r.path for r in app.state.requests] == ["/api/v3/exchangeInfo"]
    eth = markets["ETH/USDT"]
    assert (eth["precision"]["price"], eth["precision"]["amount"], eth["limits"]["cost"]["min"]) == (0.01, 0.0001, 5.0)
    assert eth["info"]["orderTypes"] == ["LIMIT", "LIMIT_MAKER", "MARKET"]


def test_klines_at_the_data_interval_and_aggregated(server, bars):
    _, url = server
    ex = client(url)
    start = int(bars["timestamp"][500])
    rows = ex.fetch_ohlcv("ETH/USDT", "1h", since=int(bars["timestamp"][480]), limit=30)
    np.testing.assert_allclose(np.array(rows[:-1])[:, 1:], bars.iloc[480:500, 1:].to_numpy())
    assert rows[-1][0] == start and rows[-1][1] == bars["open"][500]  # the open bar: one trade so far, at the open
    # 4h from 1h data, by hand from the CSV: open of the first hour, max / min, close of the last, summed volume
    four = ex.fetch_ohlcv("ETH/USDT", "4h", since=int(bars["timestamp"][480]), limit=3)
    for row in four:
        hours = bars[(bars["timestamp"] >= row[0]) & (bars["timestamp"] < row[0] + 4 * HOUR)]
        if row[0] + 4 * HOUR <= start:
            expected = [hours["open"].iloc[0], hours["high"].max(), hours["low"].min(), hours["close"].iloc[-1],
                        hours["volume"].sum()]
            np.testing.assert_allclose(row[1:], expected, rtol=1e-9)
    with pytest.raises(ccxt.BadRequest, match="not 30m"):
        ex.fetch_ohlcv("ETH/USDT", "30m")


def test_market_buy_walks_the_book_and_balances_match_to_the_fee(server):
    _, url = server
    ex = client(url)
    book = ex.fetch_order_book("ETH/USDT", 20)
    order = ex.create_order("ETH/USDT", "market", "buy", 3.0)
    fills = order["trades"]
    assert order["status"] == "closed" and order["filled"] == pytest.approx(3.0)
    # the fills take the ask levels of the book as it stood, best first, each level at most its quantity
    asks = book["asks"]
    for fill, (price, qty) in zip(fills, asks):
        assert fill["price"] == price and fill["amount"] <= qty + 1e-12
    assert [f["price"] for f in fills] == sorted(f["price"] for f in fills)
    cost = sum(f["price"] * f["amount"] for f in fills)
    assert order["cost"] == pytest.approx(cost, abs=1e-6)
    for fill in fills:  # the fee: 0.1 % of what is received, in the base asset
        assert fill["fee"]["currency"] == "ETH" and fill["fee"]["cost"] == pytest.approx(fill["amount"] * FEE, abs=1e-8)
    balance = ex.fetch_balance()
    assert balance["USDT"]["free"] == pytest.approx(10_000 - cost, abs=1e-6)
    assert balance["ETH"]["free"] == pytest.approx(2 + 3.0 * (1 - FEE), abs=1e-8)
    trades = ex.fetch_my_trades("ETH/USDT")
    assert sorted(t["id"] for t in trades) == sorted(f["id"] for f in fills)


def test_market_sell_and_quote_order_qty(server):
    _, url = server
    ex = client(url)
    bid = ex.fetch_order_book("ETH/USDT", 1)["bids"][0][0]
    sold = ex.create_order("ETH/USDT", "market", "sell", 0.5)
    proceeds = sum(t["price"] * t["amount"] for t in sold["trades"])
    assert sold["trades"][0]["price"] == bid and sold["trades"][0]["fee"]["currency"] == "USDT"
    bought = ex.create_order("ETH/USDT", "market", "buy", None, None, {"quoteOrderQty": 100})
    spent = sum(t["price"] * t["amount"] for t in bought["trades"])
    assert 100 - bought["trades"][0]["price"] * 0.0001 <= spent <= 100  # at most the quote, within one lot step
    assert bought["filled"] == pytest.approx(round(bought["filled"] / 0.0001) * 0.0001)
    balance = ex.fetch_balance()
    assert balance["USDT"]["free"] == pytest.approx(10_000 + proceeds * (1 - FEE) - spent, abs=1e-6)
    assert balance["ETH"]["free"] == pytest.approx(2 - 0.5 + bought["filled"] * (1 - FEE), abs=1e-8)


def test_limit_order_rests_locked_then_fills_at_its_price_when_a_trade_reaches_it(server, bars):
    _, url = server
    ex = client(url)
    # a buy 1 % under the next bar's low is not reached; one at the next bar's low is (the path touches it)
    low = float(bars["low"][500])
    price = round(low, 2)
    order = ex.create_order("ETH/USDT", "limit", "buy", 1.0, price)
    assert order["status"] == "open"
    balance = ex.fetch_balance()
    assert balance["USDT"]["used"] == pytest.approx(price * 1.0) and balance["USDT"]["free"] == pytest.approx(
        10_000 - price)
    assert [o["id"] for o in ex.fetch_open_orders("ETH/USDT")] == [order["id"]]
    step(url)
    done = ex.fetch_order(order["id"], "ETH/USDT")
    assert done["status"] == "closed" and done["average"] == price
    balance = ex.fetch_balance()
    assert balance["USDT"]["used"] == 0 and balance["USDT"]["free"] == pytest.approx(10_000 - price, abs=1e-6)
    assert balance["ETH"]["free"] == pytest.approx(2 + 1.0 * (1 - FEE), abs=1e-8)
    trade = ex.fetch_my_trades("ETH/USDT")[-1]
    assert trade["takerOrMaker"] == "maker" and trade["price"] == price


def test_ioc_fok_maker_and_cancel(server):
    _, url = server
    ex = client(url)
    asks = ex.fetch_order_book("ETH/USDT", 20)["asks"]
    # IOC at the 2nd ask: takes levels 1 and 2, the rest expires and is unlocked
    ioc = ex.create_order("ETH/USDT", "limit", "buy", 20.0, asks[1][0], {"timeInForce": "IOC"})
    assert ioc["status"] == "expired"
    assert ioc["filled"] == pytest.approx(asks[0][1] + asks[1][1])
    # FOK for more than the levels within its price hold: nothing fills
    fok = ex.create_order("ETH/USDT", "limit", "buy", 20.0, asks[1][0], {"timeInForce": "FOK"})
    assert fok["status"] == "expired" and fok["filled"] == 0
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        ex.create_order("ETH/USDT", "limit", "buy", 0.1, asks[3][0], {"postOnly": True})
    resting = ex.create_order("ETH/USDT", "limit", "sell", 1.0, round(asks[0][0] * 1.5, 2))
    assert ex.fetch_balance()["ETH"]["used"] == pytest.approx(1.0)
    canceled = ex.cancel_order(resting["id"], "ETH/USDT")
    assert canceled["status"] == "canceled" and ex.fetch_balance()["ETH"]["used"] == 0
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(resting["id"], "ETH/USDT")
    statuses = {o["id"]: o["status"] for o in ex.fetch_orders("ETH/USDT")}
    assert statuses == {ioc["id"]: "expired", fok["id"]: "expired", resting["id"]: "canceled"}


def test_errors_map_to_ccxts_exceptions(server):
    app, url = server
    ex = client(url)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order("ETH/USDT", "market", "buy", 100.0)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        ex.create_order("ETH/USDT", "market", "buy", 0.1, params={"quantity": "0.00001"})
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
        ex.create_order("ETH/USDT", "market", "buy", 0.001)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("424242", "ETH/USDT")
    with pytest.raises(ccxt.BadSymbol):
        ex.public_get_depth({"symbol": "DOGEUSDT"})
    for key, secret in ((KEY, "wrong secret"), ("unknown key", SECRET)):
        other = make_exchange(mode="sim", sim_url=url, api_key=key, secret=secret)
        other.markets = ex.markets
        with pytest.raises(ccxt.AuthenticationError):
            other.fetch_balance()
    skewed = make_exchange(mode="sim", sim_url=url, api_key=KEY, secret=SECRET)
    skewed.markets, skewed.options["timeDifference"] = ex.markets, 60_000  # signs a minute in the past
    with pytest.raises(ccxt.InvalidNonce):
        skewed.fetch_balance()
    duplicate = {"newClientOrderId": "mine-1"}
    ex.create_order("ETH/USDT", "limit", "sell", 0.1, 100_000, duplicate)
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):  # -2010 with this text
        ex.create_order("ETH/USDT", "limit", "sell", 0.1, 100_000, duplicate)
    assert app.state.exchange.accounts[KEY].balances["ETH"] == [1.9, 0.1]  # nothing else moved


def test_two_accounts_trade_apart_and_api_restrictions(server):
    _, url = server
    reply = requests.post(f"{url}/sim/accounts", json={"api_key": "second", "api_secret": "s3cret",
                                                       "balances": {"USDT": 500}, "can_withdraw": True}, timeout=5)
    assert reply.status_code == 200
    a, b = client(url), client(url, "second", "s3cret")
    b.create_order("ETH/USDT", "market", "buy", 0.1)
    assert a.fetch_balance()["ETH"]["free"] == 2 and a.fetch_my_trades("ETH/USDT") == []
    assert b.fetch_balance()["ETH"]["free"] == pytest.approx(0.1 * (1 - FEE))
    assert a.sapi_get_account_apirestrictions()["enableWithdrawals"] is False
    assert b.sapi_get_account_apirestrictions()["enableWithdrawals"] is True


def test_async_client_trades_the_same_way(server):
    _, url = server

    async def run():
        ex = make_exchange(mode="sim", sim_url=url, api_key=KEY, secret=SECRET, sync=False)
        try:
            await ex.load_markets()
            order = await ex.create_order("ETH/USDT", "market", "sell", 1.0)
            balance = await ex.fetch_balance()
            return order, balance
        finally:
            await ex.close()

    order, balance = asyncio.run(run())
    proceeds = sum(t["price"] * t["amount"] for t in order["trades"])
    assert order["status"] == "closed" and balance["ETH"]["free"] == pytest.approx(1.0)
    assert balance["USDT"]["free"] == pytest.approx(10_000 + proceeds * (1 - FEE), abs=1e-6)


def test_the_clock_moves_only_when_stepped_and_state_shows_it(server, bars):
    _, url = server
    start = int(bars["timestamp"][500])
    state = requests.get(f"{url}/sim/state", timeout=5).json()
    assert state["time"] == start and state["clock"] == "manual"
    assert step(url, 3) == start + 3 * HOUR
    ex = client(url)
    assert ex.fetch_ticker("ETH/USDT")["last"] == bars["open"][503]  # the new bar's first trade: its open
    state = requests.get(f"{url}/sim/state", timeout=5).json()
    assert state["symbols"]["ETHUSDT"]["price"] == bars["open"][503]
    reset = requests.post(f"{url}/sim/reset", timeout=5).json()
    assert reset["time"] == start
