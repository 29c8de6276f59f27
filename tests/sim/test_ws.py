"""The replay exchange's websockets, driven by unmodified ccxt.pro and a raw ``websockets`` client: market streams
(klines at the data's and an aggregated interval, trades along the intrabar path, tickers, the depth diff stream
against the REST snapshot), user data (WS-API and the legacy listenKey), the combined-stream endpoint, the
subscription protocol and its errors, the 2-second kline push, the 24 h connection limit, two accounts, and two
symbols on one clock.

Expected values are recomputed here from the data file and the specs in ``spotgym/sim/market.py`` (the path
open -> first extreme -> other extreme -> close, a quarter of the volume per trade floored to the lot step, the
synthetic ladder) and ``matching.py`` (fills, 0.1 % fee in the received asset), never read back from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import math
import time

import ccxt
import pandas as pd
import pytest
import requests
import websockets

from spotgym.sim import create_app
from spotgym.sim import ws as ws_module
from spotgym.sim.ws import Connection

HOUR = 3_600_000
QUARTER = HOUR // 4
S = 602  # START_ROW of the conftest's server: the market clock starts at the open of this bar
ETH_STEP = 0.0001
BTC_STEP = 0.00001
FEE = 0.001


# ---------------------------------------------------------------------- the specs, recomputed from the bars
def row(bars: pd.DataFrame, i: int) -> tuple[int, float, float, float, float, float]:
    r = bars.iloc[i]
    return int(r["timestamp"]), float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]), float(r["volume"])


def path(bars: pd.DataFrame, i: int) -> list[float]:
    """The four trade prices of bar ``i``: open, the extreme the bar implies first, the other one, close."""
    _, o, h, low, c, _ = row(bars, i)
    return [o, low, h, c] if c >= o else [o, h, low, c]


def qtys(bars: pd.DataFrame, i: int, step: float = ETH_STEP) -> list[float]:
    """The four trade sizes of bar ``i``: a quarter of the volume floored to the lot step, the rest on the last."""
    v = row(bars, i)[5]
    each = math.floor(v / 4 / step + 1e-9) * step
    return [round(each, 8)] * 3 + [round(v - 3 * each, 8)]


def partial(bars: pd.DataFrame, i: int, k: int, step: float = ETH_STEP) -> list[float]:
    """[o, h, l, c, v] of bar ``i`` after its ticks 0..k."""
    prices = path(bars, i)[: k + 1]
    return [prices[0], max(prices), min(prices), prices[-1], round(sum(qtys(bars, i, step)[: k + 1]), 8)]


def candle(bars: pd.DataFrame, i: int) -> list[float]:
    t, o, h, low, c, v = row(bars, i)
    return [t, o, h, low, c, v]


def touch(price: float, tick: float = 0.01) -> tuple[float, float]:
    """Best bid and ask of the synthetic ladder around ``price`` (1 bp apart, at least a tick)."""
    half = max(price * 0.5e-4, tick / 2)
    bid = math.floor((price - half) / tick + 1e-9) * tick
    ask = math.ceil((price + half) / tick - 1e-9) * tick
    return round(bid, 8), round(max(ask, bid + tick), 8)


def ladder(price: float, bar_volume: float, levels: int = 20, tick: float = 0.01, step: float = ETH_STEP):
    """The synthetic book (bids, asks) at last price ``price`` within a bar of ``bar_volume``."""
    bid, ask = touch(price, tick)
    spacing = max(tick, math.floor(price * 1e-4 / tick) * tick)
    base = max(bar_volume / 4 * 0.5 / 20, step)
    sizes = [round(max(math.floor(base * (1 + 0.25 * j) / step + 1e-9) * step, step), 8) for j in range(levels)]
    return ([[round(bid - j * spacing, 8), sizes[j]] for j in range(levels)],
            [[round(ask + j * spacing, 8), sizes[j]] for j in range(levels)])


def ohlcv_cache(ex, symbol: str = "ETH/USDT", tf: str = "1h") -> dict[int, list[float]]:
    return {c[0]: list(c) for c in ex.ohlcvs.get(symbol, {}).get(tf, [])}


# ---------------------------------------------------------------------- klines
def test_watch_ohlcv_pushes_on_subscribe_and_completes_each_bar(fresh, eth_bars, arun, wait_until):
    t0 = row(eth_bars, S)[0]

    async def scenario():
        async with fresh.pro() as ex:
            # pushed on subscribe: the open bar, one trade in (the open, a quarter of the volume)
            first = await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1h"), 5)
            assert first == [[t0, *partial(eth_bars, S, 0)]]
            pending = asyncio.create_task(ex.watch_ohlcv("ETH/USDT", "1h"))
            await fresh.astep(3)
            await asyncio.wait_for(pending, 5)
            await wait_until(lambda: t0 + 3 * HOUR in ohlcv_cache(ex), what="the kline of the 4th bar")
            return ohlcv_cache(ex)

    cache = arun(scenario())
    assert [cache[t0 + j * HOUR] for j in range(3)] == [candle(eth_bars, S + j) for j in range(3)]
    assert cache[t0 + 3 * HOUR] == [t0 + 3 * HOUR, *partial(eth_bars, S + 3, 0)]


def test_watch_ohlcv_4h_is_the_aggregate_of_four_1h_bars(fresh, eth_bars, arun, wait_until):
    t0 = row(eth_bars, S)[0]
    assert t0 % (4 * HOUR) == 0
    block = eth_bars.iloc[S:S + 4]
    expected = [t0, block["open"].iat[0], block["high"].max(), block["low"].min(), block["close"].iat[-1],
                block["volume"].sum()]

    async def scenario():
        async with fresh.pro() as ex:
            assert await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "4h"), 5) == [[t0, *partial(eth_bars, S, 0)]]
            pending = asyncio.create_task(ex.watch_ohlcv("ETH/USDT", "4h"))
            await fresh.astep(2)
            await asyncio.wait_for(pending, 5)
            # half-way: bars S and S+1 whole, S+2 at its open
            await wait_until(lambda: ohlcv_cache(ex, tf="4h")[t0][4] == row(eth_bars, S + 2)[1], what="bar S+2's open")
            two = block.iloc[:2]
            assert ohlcv_cache(ex, tf="4h")[t0] == pytest.approx(
                [t0, two["open"].iat[0], max(two["high"].max(), row(eth_bars, S + 2)[1]),
                 min(two["low"].min(), row(eth_bars, S + 2)[1]), row(eth_bars, S + 2)[1],
                 two["volume"].sum() + qtys(eth_bars, S + 2)[0]], rel=1e-12)
            await fresh.astep(2)
            await wait_until(lambda: t0 + 4 * HOUR in ohlcv_cache(ex, tf="4h"), what="the next 4h kline")
            rest = await ex.fetch_ohlcv("ETH/USDT", "4h", since=t0, limit=1)
            return ohlcv_cache(ex, tf="4h"), rest

    cache, rest = arun(scenario())
    assert cache[t0] == pytest.approx(expected, rel=1e-12)
    assert cache[t0] == rest[0]  # the stream and REST agree on the closed 4h kline
    assert cache[t0 + 4 * HOUR] == [t0 + 4 * HOUR, *partial(eth_bars, S + 4, 0)]


def test_kline_stream_partials_then_the_closed_kline_at_the_boundary(fresh, eth_bars, arun, ws_client):
    t0 = row(eth_bars, S)[0]

    def ohlcv(k: dict) -> list[float]:
        return [float(k[x]) for x in "ohlcv"]

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@kline_1h") as ws:
            pushed = await ws.recv()
            await fresh.astep(1)
            frames = await ws.collect(lambda fs: any(f["k"]["t"] == t0 + HOUR for f in fs))
            return pushed, frames

    pushed, frames = arun(scenario())
    assert pushed["e"] == "kline" and pushed["E"] == t0 and pushed["s"] == "ETHUSDT"
    assert (pushed["k"]["t"], pushed["k"]["T"], pushed["k"]["i"], pushed["k"]["x"]) == (t0, t0 + HOUR - 1, "1h", False)
    assert ohlcv(pushed["k"]) == pytest.approx(partial(eth_bars, S, 0), abs=1e-8)
    # one update per trade of the path (at 15, 30, 45 minutes), then at the boundary the closed kline with the
    # bar exactly as the file has it, then the new bar's first trade
    assert [(f["E"], f["k"]["t"], f["k"]["x"]) for f in frames] == [
        (t0 + QUARTER, t0, False), (t0 + 2 * QUARTER, t0, False), (t0 + 3 * QUARTER, t0, False),
        (t0 + HOUR, t0, True), (t0 + HOUR, t0 + HOUR, False)]
    for k in range(1, 4):
        assert ohlcv(frames[k - 1]["k"]) == pytest.approx(partial(eth_bars, S, k), abs=1e-8)
        assert frames[k - 1]["k"]["n"] == k + 1
    assert ohlcv(frames[3]["k"]) == candle(eth_bars, S)[1:]
    assert frames[3]["k"]["n"] == 4
    assert ohlcv(frames[4]["k"]) == pytest.approx(partial(eth_bars, S + 1, 0), abs=1e-8)


def test_a_resubscribed_kline_stream_sends_no_stale_closed_kline(fresh, eth_bars, arun, ws_client):
    t0 = row(eth_bars, S)[0]

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws") as ws:
            await ws.reply(await ws.send("SUBSCRIBE", ["ethusdt@kline_1h"]))
            await fresh.astep(1)
            await ws.collect(lambda fs: any(f.get("k", {}).get("t") == t0 + HOUR for f in fs))
            await ws.reply(await ws.send("UNSUBSCRIBE", ["ethusdt@kline_1h"]))
            await fresh.astep(3)
            _, pushed = await ws.reply(await ws.send("SUBSCRIBE", ["ethusdt@kline_1h"]))
            await fresh.astep(1)
            return pushed + await ws.collect(lambda fs: any(f["k"]["t"] == t0 + 5 * HOUR for f in fs))

    frames = arun(scenario())
    # from the new subscription on: bar S+4's updates, its close, bar S+5's open; nothing about bar S+1
    assert [(f["k"]["t"], f["k"]["x"]) for f in frames] == \
        [(t0 + 4 * HOUR, False)] * 4 + [(t0 + 4 * HOUR, True), (t0 + 5 * HOUR, False)]


# ---------------------------------------------------------------------- trades and tickers
def test_watch_trades_follow_the_intrabar_path(fresh, eth_bars, arun, wait_until):
    t0 = row(eth_bars, S)[0]
    # the ticks in (t0, t0 + 2h]: bar S's last three, bar S+1's four, bar S+2's open
    ticks = [(S, k) for k in (1, 2, 3)] + [(S + 1, k) for k in range(4)] + [(S + 2, 0)]
    prices = [path(eth_bars, i)[k] for i, k in ticks]
    previous = [path(eth_bars, S)[0], *prices[:-1]]

    async def scenario():
        async with fresh.pro() as ex:
            pending = asyncio.create_task(ex.watch_trades("ETH/USDT"))
            await fresh.subscribed("ethusdt@trade")
            await fresh.astep(2)
            await asyncio.wait_for(pending, 5)
            await wait_until(lambda: len(ex.trades.get("ETH/USDT", [])) == len(ticks), what="8 trades")
            await asyncio.sleep(0.2)
            return list(ex.trades["ETH/USDT"])

    trades = arun(scenario())
    assert [t["price"] for t in trades] == prices
    assert [t["amount"] for t in trades] == [qtys(eth_bars, i)[k] for i, k in ticks]
    assert [t["timestamp"] for t in trades] == [row(eth_bars, i)[0] + k * QUARTER for i, k in ticks]
    assert [t["timestamp"] for t in trades][-1] == t0 + 2 * HOUR
    # a trade below the one before it hit the bid (buyer is maker): ccxt's side "sell"
    assert [t["side"] for t in trades] == ["sell" if p < q else "buy" for p, q in zip(prices, previous)]
    ids = [int(t["id"]) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_watch_ticker_full_and_mini(fresh, eth_bars, arun, wait_until):
    t0 = row(eth_bars, S)[0]
    now = t0 + HOUR  # after one step: bar S+1's open
    last = row(eth_bars, S + 1)[1]
    window = eth_bars.iloc[S + 1 - 24:S + 1]  # the 24 whole bars opened in [now - 24 h, now); bar S+1 at its open
    day_open = float(eth_bars["open"].iat[S + 1 - 24])
    day_high = max(float(window["high"].max()), last)
    day_low = min(float(window["low"].min()), last)
    bid, ask = touch(last)

    async def watch(name: str | None):
        async with fresh.pro() as ex:
            params = {"name": name} if name else {}
            pending = asyncio.create_task(ex.watch_ticker("ETH/USDT", params))
            await fresh.subscribed(f"ethusdt@{name or 'miniTicker'}")
            if fresh.now() < now:
                await fresh.astep(1)
            await asyncio.wait_for(pending, 5)
            await wait_until(lambda: ex.tickers["ETH/USDT"]["timestamp"] == now, what="the ticker at the step")
            return dict(ex.tickers["ETH/USDT"])

    full = arun(watch("ticker"))
    assert (full["last"], full["close"], full["bid"], full["ask"]) == (last, last, bid, ask)
    assert (full["open"], full["high"], full["low"]) == (day_open, day_high, day_low)
    assert full["baseVolume"] == pytest.approx(float(window["volume"].sum()) + qtys(eth_bars, S + 1)[0], rel=1e-12)

    # the default, miniTicker: the same prices, no bid or ask; pushed at every trade, so a step is needed
    fresh.reset()
    mini = arun(watch(None))
    assert (mini["last"], mini["open"], mini["high"], mini["low"]) == (last, day_open, day_high, day_low)
    assert mini["bid"] is None and mini["ask"] is None


# ---------------------------------------------------------------------- the order book
def as_levels(rows: list[list[str]]) -> list[list[float]]:
    return [[float(p), float(q)] for p, q in rows]


def test_watch_order_book_snapshot_and_diffs_stay_equal_to_rest_depth(fresh, eth_bars, arun, wait_until):
    async def scenario():
        async with fresh.pro() as ex:
            # the REST snapshot (ccxt asks for limit=20) ...
            book = await asyncio.wait_for(ex.watch_order_book("ETH/USDT", 20), 5)
            snapshot = ([list(b) for b in book["bids"]], [list(a) for a in book["asks"]], book["nonce"])
            pending = asyncio.create_task(ex.watch_order_book("ETH/USDT", 20))
            await fresh.subscribed("ethusdt@depth@100ms")
            # ... then one diff per trade of the path: 12 over three bars
            await fresh.astep(3)
            await asyncio.wait_for(pending, 5)
            rest = await asyncio.to_thread(fresh.get, "/api/v3/depth", symbol="ETHUSDT", limit=20)
            rest = rest.json()
            await wait_until(lambda: ex.orderbooks["ETH/USDT"]["nonce"] == rest["lastUpdateId"], what="the last diff")
            ob = ex.orderbooks["ETH/USDT"]
            return snapshot, ([list(b) for b in ob["bids"]], [list(a) for a in ob["asks"]], ob["nonce"]), rest

    (bids0, asks0, nonce0), (bids, asks, nonce), rest = arun(scenario())
    assert (bids0, asks0) == ladder(row(eth_bars, S)[1], row(eth_bars, S)[5])
    assert nonce == nonce0 + 12
    assert (bids, asks) == (as_levels(rest["bids"]), as_levels(rest["asks"]))
    assert (bids, asks) == ladder(row(eth_bars, S + 3)[1], row(eth_bars, S + 3)[5])
    assert bids[0][0] < asks[0][0]


def test_watch_order_book_with_ccxts_default_snapshot_stays_consistent(fresh, eth_bars, arun, wait_until):
    async def scenario():
        async with fresh.pro() as ex:
            await asyncio.wait_for(ex.watch_order_book("ETH/USDT"), 5)  # ccxt: GET /api/v3/depth?limit=1000
            pending = asyncio.create_task(ex.watch_order_book("ETH/USDT"))
            await fresh.subscribed("ethusdt@depth@100ms")
            await fresh.astep(3)
            await asyncio.wait_for(pending, 5)
            rest = (await asyncio.to_thread(fresh.get, "/api/v3/depth", symbol="ETHUSDT", limit=1000)).json()
            await wait_until(lambda: ex.orderbooks["ETH/USDT"]["nonce"] == rest["lastUpdateId"], what="the last diff")
            ob = ex.orderbooks["ETH/USDT"]
            return [list(b) for b in ob["bids"]], [list(a) for a in ob["asks"]], rest

    bids, asks, rest = arun(scenario())
    assert bids[0][0] < asks[0][0]  # fails: stale asks of the snapshot lie below the new best bid
    assert (bids, asks) == (as_levels(rest["bids"]), as_levels(rest["asks"]))


def test_a_new_depth_subscriber_after_the_clock_moved_gets_a_consistent_book(fresh, arun, wait_until):
    async def scenario():
        async with fresh.pro() as ex:
            await asyncio.wait_for(ex.watch_order_book("ETH/USDT", 20), 5)
        await wait_until(lambda: not fresh.exchange.streams.get("ethusdt@depth@100ms"), what="the unsubscribe")
        await fresh.astep(1)  # nobody listens to the depth stream: the clock moves on
        async with fresh.pro() as ex:
            await asyncio.wait_for(ex.watch_order_book("ETH/USDT", 20), 5)
            pending = asyncio.create_task(ex.watch_order_book("ETH/USDT", 20))
            await fresh.astep(1)
            await asyncio.wait_for(pending, 5)
            rest = (await asyncio.to_thread(fresh.get, "/api/v3/depth", symbol="ETHUSDT", limit=20)).json()
            await wait_until(lambda: ex.orderbooks["ETH/USDT"]["nonce"] == rest["lastUpdateId"], what="the last diff")
            ob = ex.orderbooks["ETH/USDT"]
            return [list(b) for b in ob["bids"]], [list(a) for a in ob["asks"]], rest

    bids, asks, rest = arun(scenario())
    assert (bids, asks) == (as_levels(rest["bids"]), as_levels(rest["asks"]))  # fails: 20 stale bid levels more


def test_book_quantities_do_not_depend_on_the_depth_asked_for(fresh, eth_bars):
    price, volume = row(eth_bars, S)[1], row(eth_bars, S)[5]
    bids, asks = ladder(price, volume)
    for limit in (20, 5, 100):
        depth = fresh.get("/api/v3/depth", symbol="ETHUSDT", limit=limit).json()
        assert as_levels(depth["bids"][:5]) == bids[:5], limit
        assert as_levels(depth["asks"][:5]) == asks[:5], limit
    top = fresh.get("/api/v3/ticker/bookTicker", symbol="ETHUSDT").json()
    assert [[float(top["bidPrice"]), float(top["bidQty"])], [float(top["askPrice"]), float(top["askQty"])]] == \
        [bids[0], asks[0]]


# ---------------------------------------------------------------------- user data over the WS-API
def spot(ex) -> dict:
    """ccxt.pro's balance cache (kept per account type)."""
    return ex.balance.get("spot", {})


def test_watch_orders_my_trades_and_balance_follow_rest_orders(fresh, eth_bars, arun, wait_until):
    _, o, h, low, c, _ = row(eth_bars, S)
    assert c >= o  # bar S goes down to its low first (its second trade): a buy resting there fills at that tick
    limit_price, qty = low, 0.05
    sell_qty = 0.02
    bid_next = touch(row(eth_bars, S + 1)[1])[0]  # a market sell at bar S+1's open takes the best bid

    async def scenario():
        async with fresh.pro() as ex:
            orders = asyncio.create_task(ex.watch_orders("ETH/USDT"))
            await fresh.user_subscribed()
            balance = asyncio.create_task(ex.watch_balance())
            placed = await ex.create_order("ETH/USDT", "limit", "buy", qty, limit_price)
            assert placed["status"] == "open"
            first = [(x["id"], x["status"], x["filled"]) for x in await asyncio.wait_for(orders, 5)]  # updated in place
            await asyncio.wait_for(balance, 5)
            await wait_until(lambda: spot(ex).get("USDT", {}).get("used"), what="the locked USDT")
            locked = dict(spot(ex)["USDT"])

            orders = asyncio.create_task(ex.watch_orders("ETH/USDT"))
            trades = asyncio.create_task(ex.watch_my_trades("ETH/USDT"))
            await fresh.astep(1)
            await asyncio.wait_for(asyncio.gather(orders, trades), 5)
            await wait_until(lambda: ex.orders[-1]["status"] == "closed" and spot(ex)["ETH"]["free"] > 1,
                             what="the fill")
            filled = dict(ex.orders[-1])
            my_trade = dict(ex.myTrades[-1])

            sold = await ex.create_order("ETH/USDT", "market", "sell", sell_qty)
            await wait_until(lambda: len(ex.myTrades) == 2 and ex.orders[-1]["status"] == "closed",
                             what="the market sell's fill")
            await asyncio.sleep(0.2)
            streamed = {a: dict(spot(ex)[a]) for a in ("ETH", "USDT")}
            rest = await ex.fetch_balance()
            return placed, first, locked, filled, my_trade, sold, dict(ex.orders[-1]), streamed, rest

    placed, first, locked, filled, my_trade, sold, sold_ws, streamed, rest = arun(scenario())
    cost = round(limit_price * qty, 8)
    # NEW: open, nothing filled, the cost locked
    assert first == [(placed["id"], "open", 0.0)]
    assert locked == {"free": round(10_000 - cost, 8), "used": cost, "total": 10_000.0}
    # FILLED at the limit price (a maker at the tick that reached it), fee in the received ETH
    assert (filled["id"], filled["status"], filled["filled"], filled["remaining"]) == (placed["id"], "closed", qty, 0.0)
    assert filled["average"] == limit_price and filled["cost"] == cost
    assert (my_trade["order"], my_trade["price"], my_trade["amount"], my_trade["side"], my_trade["takerOrMaker"]) == \
        (placed["id"], limit_price, qty, "buy", "maker")
    assert my_trade["timestamp"] == row(eth_bars, S)[0] + QUARTER
    assert my_trade["fee"] == {"cost": qty * FEE, "currency": "ETH"}
    # the market sell: the best bid of bar S+1's ladder, fee in USDT
    assert (sold["status"], sold["filled"], sold["average"]) == ("closed", sell_qty, bid_next)
    assert (sold_ws["id"], sold_ws["status"], sold_ws["filled"]) == (sold["id"], "closed", sell_qty)
    proceeds = round(sell_qty * bid_next, 8)
    eth = round(1.0 + qty - qty * FEE - sell_qty, 8)
    usdt = round(10_000 - cost + proceeds - round(proceeds * FEE, 8), 8)
    assert streamed == {"ETH": {"free": eth, "used": 0.0, "total": eth}, "USDT": {"free": usdt, "used": 0.0, "total": usdt}}
    assert {a: rest[a] for a in ("ETH", "USDT")} == streamed  # the stream agrees with REST /account


def test_ws_api_user_data_subscription_by_signature(fresh, arun, ws_client):
    """The WS-API frames themselves: ping, time, a signature over the params sorted by key, Binance's errors."""

    def signed(key: str, secret: str, **extra) -> dict:
        params = {"apiKey": key, "timestamp": int(time.time() * 1000), "recvWindow": 10_000, **extra}
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        return {**params, "signature": hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()}

    client = fresh.client()
    client.load_markets()

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws-api/v3") as ws:
            replies = {}
            for name, method, params in [
                ("ping", "ping", None), ("time", "time", None),
                ("bad key", "userDataStream.subscribe.signature", signed("nobody", "x")),
                ("bad signature", "userDataStream.subscribe.signature", signed("spotgym-sim-key", "wrong")),
                ("stale", "userDataStream.subscribe.signature",
                 signed("spotgym-sim-key", "spotgym-sim-secret", timestamp=int(time.time() * 1000) - 60_000)),
                ("not an object", "userDataStream.subscribe.signature", ["apiKey"]),
                ("unknown", "order.place", {}),
                ("ok", "userDataStream.subscribe.signature", signed("spotgym-sim-key", "spotgym-sim-secret")),
            ]:
                frame = {"id": name, "method": method, **({} if params is None else {"params": params})}
                await ws.conn.send(json.dumps(frame))
                replies[name] = await ws.recv()
            order = await asyncio.to_thread(client.create_order, "ETH/USDT", "market", "buy", 0.02)
            events = await ws.collect(lambda fs: len(fs) == 3)
            return replies, order, events

    replies, order, events = arun(scenario())
    assert replies["ping"] == {"id": "ping", "status": 200, "result": {}}
    assert abs(replies["time"]["result"]["serverTime"] - time.time() * 1000) < 5_000
    assert [(replies[n]["status"], replies[n]["error"]["code"]) for n in
            ("bad key", "bad signature", "stale", "not an object", "unknown")] == \
        [(401, -2015), (400, -1022), (400, -1021), (400, -1100), (400, -1100)]
    subscription = replies["ok"]["result"]["subscriptionId"]
    assert replies["ok"]["status"] == 200
    assert all(set(e) == {"subscriptionId", "event"} and e["subscriptionId"] == subscription for e in events)
    assert [(e["event"]["e"], e["event"].get("X")) for e in events] == [
        ("executionReport", "NEW"), ("executionReport", "FILLED"), ("outboundAccountPosition", None)]
    assert events[1]["event"]["i"] == int(order["id"])


def test_two_accounts_each_receive_only_their_own_user_events(fresh, arun, wait_until):
    fresh.add_account("second-key", "second-secret", {"USDT": 500.0})

    async def scenario():
        async with fresh.pro() as one, fresh.pro("second-key", "second-secret") as two:
            watches = [asyncio.create_task(one.watch_orders("ETH/USDT")),
                       asyncio.create_task(two.watch_orders("ETH/USDT"))]
            await fresh.user_subscribed()
            await fresh.user_subscribed("second-key")
            mine = await one.create_order("ETH/USDT", "market", "buy", 0.02)
            got = [x["id"] for x in await asyncio.wait_for(watches[0], 5)]
            await asyncio.sleep(0.3)
            assert not watches[1].done() and len(two.orders or []) == 0  # nothing for the other account
            theirs = await two.create_order("ETH/USDT", "market", "buy", 0.03)
            got_two = [x["id"] for x in await asyncio.wait_for(watches[1], 5)]
            await wait_until(lambda: two.orders[-1]["status"] == "closed", what="the second account's fill")
            await asyncio.sleep(0.2)
            balances = [(spot(one)["ETH"]["total"], spot(two)["ETH"]["total"], spot(two)["USDT"]["total"]),
                        [x["id"] for x in one.orders], [x["id"] for x in two.orders]]
            rest_two = await two.fetch_balance()
            return mine, theirs, got, got_two, balances, rest_two

    mine, theirs, got, got_two, (totals, ids_one, ids_two), rest_two = arun(scenario())
    assert got == [mine["id"]] and got_two == [theirs["id"]] and mine["id"] != theirs["id"]
    assert ids_one == [mine["id"]] and ids_two == [theirs["id"]]
    assert totals == (round(1 + 0.02 * (1 - FEE), 8), round(0.03 * (1 - FEE), 8), rest_two["USDT"]["total"])
    assert rest_two["USDT"]["total"] == pytest.approx(500 - theirs["cost"], abs=1e-8)


# ---------------------------------------------------------------------- the raw protocol
def test_combined_stream_wraps_events_with_their_stream_name(fresh, eth_bars, arun, ws_client):
    t0 = row(eth_bars, S)[0]

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream?streams=ethusdt@trade/ethusdt@kline_1h") as ws:
            pushed = await ws.recv()
            await fresh.astep(1)
            return pushed, await ws.collect(lambda fs: len(fs) == 4 + 5)

    pushed, frames = arun(scenario())
    assert set(pushed) == {"stream", "data"} and pushed["stream"] == "ethusdt@kline_1h"
    assert pushed["data"]["k"]["t"] == t0
    assert all(set(f) == {"stream", "data"} for f in frames)
    trades = [f["data"] for f in frames if f["stream"] == "ethusdt@trade"]
    klines = [f["data"] for f in frames if f["stream"] == "ethusdt@kline_1h"]
    assert all(t["e"] == "trade" for t in trades) and all(k["e"] == "kline" for k in klines)
    assert [float(t["p"]) for t in trades] == path(eth_bars, S)[1:] + [path(eth_bars, S + 1)[0]]
    assert [t["T"] for t in trades] == [t0 + QUARTER, t0 + 2 * QUARTER, t0 + 3 * QUARTER, t0 + HOUR]
    assert [(k["k"]["t"], k["k"]["x"]) for k in klines] == [(t0, False)] * 3 + [(t0, True), (t0 + HOUR, False)]
    # per tick, the kline update comes before the trade (state.py replays klines first)
    assert [f["stream"][8:] for f in frames] == ["kline_1h", "trade"] * 3 + ["kline_1h", "kline_1h", "trade"]


def test_subscribe_unsubscribe_and_list_subscriptions(fresh, eth_bars, arun, ws_client):
    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws") as ws:
            sub = await ws.send("SUBSCRIBE", ["ethusdt@trade", "ethusdt@bookTicker"])
            ack, before = await ws.reply(sub)
            listed, _ = await ws.reply(await ws.send("LIST_SUBSCRIPTIONS"))
            await fresh.astep(1)
            both = await ws.collect(lambda fs: len(fs) == 8)  # 4 ticks: a trade and a book ticker each
            unsub, _ = await ws.reply(await ws.send("UNSUBSCRIBE", ["ethusdt@bookTicker"]))
            after, _ = await ws.reply(await ws.send("LIST_SUBSCRIPTIONS"))
            await fresh.astep(1)
            trades = await ws.collect(lambda fs: len(fs) == 4)
            extra = await ws.quiet(0.3)
            unknown, _ = await ws.reply(await ws.send("NOPE"))
            prop, _ = await ws.reply(await ws.send("GET_PROPERTY", ["combined"]))
            return sub, ack, before, listed, both, unsub, after, trades, extra, unknown, prop

    sub, ack, before, listed, both, unsub, after, trades, extra, unknown, prop = arun(scenario())
    assert ack == {"result": None, "id": sub} and before == []  # raw frames, no kline to push here
    assert listed["result"] == ["ethusdt@bookTicker", "ethusdt@trade"]
    assert sorted(f.get("e", "bookTicker") for f in both) == ["bookTicker"] * 4 + ["trade"] * 4
    tick = next(f for f in both if "e" not in f)
    bid, ask = touch(path(eth_bars, S)[1])
    assert (float(tick["b"]), float(tick["a"]), tick["s"]) == (bid, ask, "ETHUSDT")
    assert unsub["result"] is None and after["result"] == ["ethusdt@trade"]
    assert [f["e"] for f in trades] == ["trade"] * 4 and extra == []
    assert [float(f["p"]) for f in trades] == path(eth_bars, S + 1)[1:] + [path(eth_bars, S + 2)[0]]
    assert unknown["error"]["code"] == 2 and "NOPE" in unknown["error"]["msg"]
    assert prop == {"result": False, "id": prop["id"]}


@pytest.mark.parametrize("stream, code, text", [
    ("dogeusdt@trade", -1121, "dogeusdt@trade"),
    ("ethusdt@nonsense", -1100, "ethusdt@nonsense"),
    ("ethusdt@kline_7m", -1120, "ethusdt@kline_7m"),
    ("ethusdt@kline_30m", -1120, "not a multiple"),  # finer than the data's 1h
    ("ethusdt", -1121, "ethusdt"),
])
def test_bad_stream_names_are_answered_with_an_error_frame(fresh, arun, ws_client, stream, code, text):
    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws") as ws:
            bad, _ = await ws.reply(await ws.send("SUBSCRIBE", [stream]))
            listed, _ = await ws.reply(await ws.send("LIST_SUBSCRIPTIONS"))
        async with ws_client(fresh.ws_url + f"/stream?streams={stream}") as ws:
            combined = await ws.recv()
            still_open, _ = await ws.reply(await ws.send("LIST_SUBSCRIPTIONS"))
        return bad, listed, combined, still_open

    bad, listed, combined, still_open = arun(scenario())
    assert bad["error"]["code"] == code and text in bad["error"]["msg"] and "result" not in bad
    assert listed["result"] == []
    assert combined["error"]["code"] == code and text in combined["error"]["msg"]
    assert still_open["result"] == []


@pytest.mark.parametrize("message", [
    "not json",
    '["SUBSCRIBE"]',
    '{"method": "SUBSCRIBE", "params": [42], "id": 7}',
    '{"method": "SUBSCRIBE", "params": "ethusdt@trade", "id": 8}',
    '{"method": "SUBSCRIBE", "params": {"a": 1}, "id": 9}',
])
def test_malformed_requests_get_an_error_and_keep_the_connection(fresh, arun, ws_client, message):
    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws") as ws:
            await ws.conn.send(message)
            error = await ws.recv()
            listed, _ = await ws.reply(await ws.send("LIST_SUBSCRIPTIONS"))
            return error, listed

    error, listed = arun(scenario())
    assert "error" in error and "result" not in error
    assert listed["result"] == []


def test_legacy_listen_key_stream_pushes_raw_user_events(fresh, arun, ws_client):
    headers = {"X-MBX-APIKEY": "spotgym-sim-key"}
    key = fresh.post("/api/v3/userDataStream", headers=headers).json()["listenKey"]
    assert fresh.post("/api/v3/userDataStream").json()["code"] == -2014  # the API-key header is needed
    client = fresh.client()
    client.load_markets()

    async def scenario():
        async with ws_client(fresh.ws_url + f"/stream/ws/{key}") as ws, ws_client(fresh.ws_url + f"/ws/{key}") as ws2:
            await asyncio.sleep(0.1)
            order = await asyncio.to_thread(client.create_order, "ETH/USDT", "market", "buy", 0.02)
            frames = await ws.collect(lambda fs: any(f["e"] == "outboundAccountPosition" for f in fs))
            frames2 = await ws2.collect(lambda fs: any(f["e"] == "outboundAccountPosition" for f in fs))
            return order, frames, frames2

    order, frames, frames2 = arun(scenario())
    assert frames == frames2
    assert [(f["e"], f.get("x"), f.get("X")) for f in frames] == [
        ("executionReport", "NEW", "NEW"), ("executionReport", "TRADE", "FILLED"), ("outboundAccountPosition", None, None)]
    trade = frames[1]
    assert (trade["i"], trade["c"], trade["S"], float(trade["l"]), float(trade["z"])) == \
        (int(order["id"]), order["clientOrderId"], "BUY", 0.02, 0.02)
    assert float(trade["L"]) == order["average"] and float(trade["n"]) == 0.02 * FEE and trade["N"] == "ETH"
    balances = {b["a"]: (float(b["f"]), float(b["l"])) for b in frames[2]["B"]}
    assert balances == {"ETH": (round(1 + 0.02 * (1 - FEE), 8), 0.0),
                        "USDT": (round(10_000 - order["cost"], 8), 0.0)}
    # keep-alive and close
    assert requests.put(fresh.url + "/api/v3/userDataStream", params={"listenKey": key}, headers=headers, timeout=5).json() == {}
    gone = requests.delete(fresh.url + "/api/v3/userDataStream", params={"listenKey": key}, headers=headers, timeout=5)
    assert gone.json() == {}
    again = requests.put(fresh.url + "/api/v3/userDataStream", params={"listenKey": key}, headers=headers, timeout=5)
    assert (again.status_code, again.json()["code"]) == (400, -1125)


def test_kline_is_pushed_every_two_seconds_while_the_clock_stands(fresh, eth_bars, arun, ws_client):
    assert ws_module.KLINE_PUSH_S == 2.0
    t0 = row(eth_bars, S)[0]

    async def scenario():
        loop = asyncio.get_running_loop()
        async with fresh.pro() as ex, ws_client(fresh.ws_url + "/stream/ws/ethusdt@kline_1h") as ws:
            await ws.recv()  # pushed on subscribe
            # ccxt: a watch after the first (pushed on subscribe) resolves too, with nothing stepped
            await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1h"), 5)
            again = asyncio.create_task(ex.watch_ohlcv("ETH/USDT", "1h"))
            first = await ws.recv(3.0)
            at = loop.time()
            second = await ws.recv(3.0)
            gap = loop.time() - at
            return first, second, gap, await asyncio.wait_for(again, 1)

    first, second, gap, again = arun(scenario())
    assert 1.7 < gap < 2.5
    assert first == second and first["E"] == t0 and first["k"]["t"] == t0 and not first["k"]["x"]
    assert again == [[t0, *partial(eth_bars, S, 0)]]


def test_a_reset_detaches_the_old_connections_from_the_new_exchange(eth_bars, arun):
    """``POST /sim/reset`` closes every connection; one whose handler ends only after a new client subscribed must not
    take that client's subscription with it (its streams were counted on the old exchange)."""
    app = create_app({"ETH/USDT@1h": eth_bars}, start_ms=row(eth_bars, S)[0])
    hub = app.state.hub

    async def scenario():
        old = Connection(None, False, hub.clock())
        hub.register(old)
        hub.subscribe(old, ["ethusdt@trade"])
        await app.state.reset()
        new = Connection(None, False, hub.clock())
        hub.register(new)
        hub.subscribe(new, ["ethusdt@trade"])
        hub.forget(old)  # the old connection's handler ends late
        counts = dict(app.state.exchange.streams)
        app.state.exchange.step_bars(1)
        await hub.stop()
        drain = [[], []]
        for conn, out in zip((old, new), drain):
            while not conn.queue.empty():
                out.append(conn.queue.get_nowait())
        return counts, drain

    counts, (old_frames, new_frames) = arun(scenario())
    assert counts == {"ethusdt@trade": 1}
    assert old_frames == [None]  # told to close, nothing after
    assert [json.loads(frame)["T"] for frame, _ in new_frames] == [row(eth_bars, S)[0] + k * QUARTER for k in (1, 2, 3, 4)]


# ---------------------------------------------------------------------- the 24 h limit
def test_a_connection_is_closed_after_24_hours_of_sim_time(fresh, eth_bars, arun, ws_client):
    t0 = row(eth_bars, S)[0]
    day = 24 * HOUR

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@kline_1h") as ws, \
                ws_client(fresh.ws_url + "/stream/ws/0") as idle:
            await ws.recv()
            await fresh.astep(23)
            frames = await ws.collect(lambda fs: any(f["k"]["t"] == t0 + 23 * HOUR for f in fs))
            # one step over the 24 h mark: the events before it still arrive, then the close
            await fresh.astep(2)
            late = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    late.append(await ws.recv())
            # a connection without traffic is closed too (within a few seconds of wall time)
            with pytest.raises(websockets.ConnectionClosed) as idle_closed:
                await idle.recv(5.0)
            return frames, late, closed.value, idle_closed.value

    frames, late, closed, idle_closed = arun(scenario())
    assert frames[-1]["E"] == t0 + 23 * HOUR
    assert [f["E"] for f in late] == [t0 + 23 * HOUR + k * QUARTER for k in (1, 2, 3)]
    assert max(f["E"] for f in frames + late) < t0 + day
    assert closed.rcvd.code == 1001 and idle_closed.rcvd.code == 1001


def test_a_client_reconnects_after_the_24_hour_close(fresh, eth_bars, arun, wait_until):
    t0 = row(eth_bars, S)[0]
    hub = fresh.app.state.hub

    async def scenario():
        async with fresh.pro() as ex:
            await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1h"), 5)
            first = set(hub.connections)
            await fresh.astep(25)
            await wait_until(lambda: not first & set(hub.connections), what="the server closing the connection")
            # ccxt may still be reading the frames sent before the close (a watch resolves on them), then the close
            # fails a pending watch once; the next watch reconnects and gets the kline pushed on subscribe
            again: list = []
            for _ in range(30):
                with contextlib.suppress(ccxt.NetworkError):
                    again = await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1h"), 5)
                if again and again[-1][0] == t0 + 25 * HOUR:
                    break
            return again, ohlcv_cache(ex), set(hub.connections) - first

    again, cache, new = arun(scenario())
    assert new  # a new connection
    assert again[-1] == [t0 + 25 * HOUR, *partial(eth_bars, S + 25, 0)]  # pushed on subscribe
    # the bars closed before the mark came over the first connection
    assert [cache[t0 + j * HOUR] for j in range(23)] == [candle(eth_bars, S + j) for j in range(23)]


# ---------------------------------------------------------------------- two symbols on one clock
def test_two_symbols_replay_on_one_clock(eth_bars, btc_bars, arun, ws_client, sim_server, wait_until):
    assert (eth_bars["timestamp"] == btc_bars["timestamp"]).all()
    t0 = row(eth_bars, S)[0]
    markets = {"ETH/USDT@1h": eth_bars, "BTC/USDT@1h": btc_bars}
    with sim_server(markets, t0, balances={"USDT": 10_000.0}) as sim:
        async def scenario():
            url = sim.ws_url + "/stream?streams=ethusdt@trade/btcusdt@trade"
            async with sim.pro() as ex, ws_client(url) as ws:
                watches = [asyncio.create_task(ex.watch_ohlcv(s, "1h")) for s in ("ETH/USDT", "BTC/USDT")]
                await asyncio.wait_for(asyncio.gather(*watches), 5)
                await sim.astep(2)
                frames = await ws.collect(lambda fs: len(fs) == 16)
                await wait_until(lambda: t0 + 2 * HOUR in ohlcv_cache(ex, "ETH/USDT")
                                 and t0 + 2 * HOUR in ohlcv_cache(ex, "BTC/USDT"), what="both klines")
                btc = await ex.create_order("BTC/USDT", "market", "buy", 0.002)
                return frames, ohlcv_cache(ex, "ETH/USDT"), ohlcv_cache(ex, "BTC/USDT"), btc

        frames, eth, btc, order = arun(scenario())
    ticks = [(S, k) for k in (1, 2, 3)] + [(S + 1, k) for k in range(4)] + [(S + 2, 0)]
    # every tick time, ETH's trade then BTC's (the markets' order), the trade times never going back
    assert [(f["data"]["T"], f["data"]["s"]) for f in frames] == \
        [(row(eth_bars, i)[0] + k * QUARTER, s) for i, k in ticks for s in ("ETHUSDT", "BTCUSDT")]
    for sid, bars, step in (("ETHUSDT", eth_bars, ETH_STEP), ("BTCUSDT", btc_bars, BTC_STEP)):
        mine = [f["data"] for f in frames if f["stream"] == f"{sid.lower()}@trade"]
        assert [float(f["p"]) for f in mine] == [path(bars, i)[k] for i, k in ticks]
        assert [float(f["q"]) for f in mine] == [qtys(bars, i, step)[k] for i, k in ticks]
    assert [eth[t0 + j * HOUR] for j in (0, 1)] == [candle(eth_bars, S + j) for j in (0, 1)]
    assert [btc[t0 + j * HOUR] for j in (0, 1)] == [candle(btc_bars, S + j) for j in (0, 1)]
    assert order["average"] == touch(row(btc_bars, S + 2)[1])[1]  # BTC's own book, at the same instant
