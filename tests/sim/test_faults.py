"""Every fault kind of the replay exchange, set through ``POST /sim/faults`` (and once from a YAML file), seen by a
real ccxt / ccxt.pro client or a raw ``websockets`` client, and logged in ``GET /sim/faults`` with its kind and
the market time it bit at; the schema's errors; the request-weight limit (429 with Retry-After, then 418).

ccxt's mapping, as ccxt 4.5.90 does it against api.binance.com (``make_exchange`` folds Binance's spot error table
in): a JSON body's code decides (-1008 and -1001 -> OperationFailed, -1007 -> RequestTimeout, -1021 ->
InvalidNonce), except that binance's ``handle_errors`` raises DDoSProtection for any 418 or 429 before it reads
the body (so a 429 is not RateLimitExceeded; that class is only reached through the -1003 code on another status).
"""

from __future__ import annotations

import asyncio
import math
import time

import ccxt
import pytest
import requests
import websockets

from spotgym.sim import Faults

HOUR = 3_600_000
QUARTER = HOUR // 4
S = 602  # the conftest servers start at this bar's open
FEE = 0.001


def open_at(bars, i: int) -> float:
    return float(bars["open"].iat[i])


def best(price: float, tick: float = 0.01) -> tuple[float, float]:
    """Best bid and ask of the synthetic ladder around ``price`` (market.py: 1 bp apart, at least a tick)."""
    half = max(price * 0.5e-4, tick / 2)
    return (round(math.floor((price - half) / tick + 1e-9) * tick, 8),
            round(math.ceil((price + half) / tick - 1e-9) * tick, 8))


def entries(sim, kind: str | None = None) -> list[tuple]:
    """(kind, where, sim_time) of the logged faults, optionally of one kind."""
    return [(e["kind"], e["where"], e["sim_time"]) for e in sim.fault_log() if kind is None or e["kind"] == kind]


# ---------------------------------------------------------------------- REST faults
@pytest.mark.parametrize("status, body_code, error", [
    (503, -1008, ccxt.OperationFailed),  # "Server is currently overloaded": Binance's JSON, not a bare 503
    (500, -1001, ccxt.OperationFailed),
    (504, -1007, ccxt.RequestTimeout),
])
def test_http_error_answers_with_binances_body(fresh, eth_bars, status, body_code, error):
    t0 = int(eth_bars["timestamp"].iat[S])
    fresh.set_faults([{"kind": "http_error", "status": status, "path": "/api/v3/ticker/24hr", "count": 2}])
    client = fresh.client()
    client.load_markets()  # another path: not failed
    for _ in range(2):
        with pytest.raises(error) as caught:
            client.fetch_ticker("ETH/USDT")
        assert type(caught.value) is error and str(body_code) in str(caught.value)
    assert client.fetch_ticker("ETH/USDT")["last"] == open_at(eth_bars, S)  # the count is spent
    assert entries(fresh) == [("http_error", "/api/v3/ticker/24hr", t0)] * 2
    assert fresh.get("/sim/faults").json()["rules"] == []


def test_http_429_and_418_carry_retry_after_and_ccxt_raises_ddos_protection(fresh):
    fresh.set_faults([{"kind": "http_error", "status": 429, "retry_after": 7, "path": "/api/v3/time"},
                      {"kind": "http_error", "status": 418, "path": "/api/v3/time"}])
    client = fresh.client()
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        client.fetch_time()
    assert client.last_response_headers["Retry-After"] == "7"
    with pytest.raises(ccxt.DDoSProtection, match="418"):
        client.fetch_time()
    assert client.last_response_headers["Retry-After"] == "60"  # the default for 418 / 429
    assert abs(client.fetch_time() - time.time() * 1000) < 5_000
    assert [e[0] for e in entries(fresh)] == ["http_error", "http_error"]


def test_latency_delays_the_reply_by_at_least_ms(fresh, eth_bars):
    fresh.set_faults([{"kind": "latency", "ms": 400, "path": "/api/v3/depth"}])
    client = fresh.client()
    client.load_markets()
    started = time.monotonic()
    book = client.fetch_order_book("ETH/USDT", 5)
    slow = time.monotonic() - started
    started = time.monotonic()
    client.fetch_order_book("ETH/USDT", 5)
    fast = time.monotonic() - started
    assert slow >= 0.4 and fast < 0.3
    assert (book["bids"][0][0], book["asks"][0][0]) == best(open_at(eth_bars, S))
    assert entries(fresh) == [("latency", "/api/v3/depth", int(eth_bars["timestamp"].iat[S]))]


def test_lost_reply_the_order_is_executed_but_the_client_does_not_learn_it(fresh, eth_bars):
    t0 = int(eth_bars["timestamp"].iat[S])
    price = open_at(eth_bars, S)
    below = round(price * 0.95, 2)  # rests
    fresh.set_faults([{"kind": "lost_reply", "count": 2}])
    client = fresh.client()
    client.load_markets()
    with pytest.raises(ccxt.RequestTimeout, match="-1007"):  # 504, execution status unknown
        client.create_order("ETH/USDT", "limit", "buy", 0.05, below, {"clientOrderId": "lost-limit-1"})
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order("ETH/USDT", "market", "buy", 0.02, None, {"clientOrderId": "lost-market-1"})
    # the duplicate-order trap: both were executed
    open_orders = client.fetch_open_orders("ETH/USDT")
    assert [(o["clientOrderId"], o["status"], o["price"], o["amount"]) for o in open_orders] == \
        [("lost-limit-1", "open", below, 0.05)]
    market = client.fetch_order(None, "ETH/USDT", {"origClientOrderId": "lost-market-1"})
    assert (market["status"], market["filled"], market["average"]) == ("closed", 0.02, best(price)[1])
    balance = client.fetch_balance()
    assert balance["ETH"]["total"] == round(1 + 0.02 * (1 - FEE), 8)
    assert balance["USDT"]["used"] == round(0.05 * below, 8)
    assert balance["USDT"]["free"] == round(10_000 - 0.05 * below - 0.02 * best(price)[1], 8)
    # sending the limit order again with its clientOrderId is refused while it is open, not placed twice
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        client.create_order("ETH/USDT", "limit", "buy", 0.05, below, {"clientOrderId": "lost-limit-1"})
    assert len(client.fetch_open_orders("ETH/USDT")) == 1
    assert entries(fresh) == [("lost_reply", "/api/v3/order", t0)] * 2


def test_lost_reply_with_mode_timeout_hangs_past_the_clients_timeout(fresh):
    fresh.set_faults([{"kind": "lost_reply", "mode": "timeout", "ms": 1500}])
    client = fresh.client()
    client.load_markets()
    client.timeout = 500
    started = time.monotonic()
    with pytest.raises(ccxt.RequestTimeout):
        client.create_order("ETH/USDT", "market", "buy", 0.02, None, {"clientOrderId": "slow-1"})
    assert 0.45 < time.monotonic() - started < 1.4
    client.timeout = 10_000
    assert client.fetch_order(None, "ETH/USDT", {"origClientOrderId": "slow-1"})["status"] == "closed"


def test_reject_refuses_the_next_order_and_changes_nothing(fresh, eth_bars):
    t0 = int(eth_bars["timestamp"].iat[S])
    fresh.set_faults([{"kind": "reject"},
                      {"kind": "reject", "code": -1013, "msg": "Filter failure: LOT_SIZE"}])
    client = fresh.client()
    client.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):  # the default: -2010, insufficient balance
        client.create_order("ETH/USDT", "market", "buy", 0.02)
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        client.create_order("ETH/USDT", "market", "buy", 0.02)
    assert client.fetch_balance()["total"] == {"USDT": 10_000.0, "ETH": 1.0, "BTC": 0.1}
    assert client.fetch_orders("ETH/USDT") == []
    order = client.create_order("ETH/USDT", "market", "buy", 0.02)  # the rules are spent
    assert order["status"] == "closed"
    assert entries(fresh) == [("reject", "/api/v3/order", t0)] * 2


def test_partial_fill_of_a_market_order_expires_the_rest(fresh, eth_bars):
    ask = best(open_at(eth_bars, S))[1]
    fresh.set_faults([{"kind": "partial_fill", "fraction": 0.25}])
    client = fresh.client()
    client.load_markets()
    order = client.create_order("ETH/USDT", "market", "buy", 0.1)
    assert (order["status"], order["amount"], order["filled"], order["remaining"]) == ("expired", 0.1, 0.025, 0.075)
    assert order["average"] == ask and order["fee"] == {"currency": "ETH", "cost": round(0.025 * FEE, 8)}
    balance = client.fetch_balance()
    assert balance["ETH"]["total"] == round(1 + 0.025 * (1 - FEE), 8)
    assert balance["USDT"]["total"] == round(10_000 - 0.025 * ask, 8)
    assert entries(fresh, "partial_fill") == [("partial_fill", "/api/v3/order", int(eth_bars["timestamp"].iat[S]))]


def test_partial_fill_of_a_limit_gtc_order_leaves_the_rest_open(fresh, eth_bars):
    ask = best(open_at(eth_bars, S))[1]
    limit = round(ask + 0.5, 2)  # crosses the ask: takes at once what the fault allows
    fresh.set_faults([{"kind": "partial_fill"}])  # fraction 0.5 by default
    client = fresh.client()
    client.load_markets()
    order = client.create_order("ETH/USDT", "limit", "buy", 0.1, limit)
    assert (order["status"], order["filled"], order["remaining"], order["average"]) == ("open", 0.05, 0.05, ask)
    assert [o["id"] for o in client.fetch_open_orders("ETH/USDT")] == [order["id"]]
    balance = client.fetch_balance()
    assert balance["USDT"]["used"] == round(0.05 * limit, 8)  # the rest stays locked at its limit price
    assert balance["USDT"]["free"] == round(10_000 - 0.05 * ask - 0.05 * limit, 8)
    assert balance["ETH"]["total"] == round(1 + 0.05 * (1 - FEE), 8)



def test_a_rejected_order_does_not_use_up_a_partial_fill_rule(fresh, eth_bars):
    ask = best(open_at(eth_bars, S))[1]
    fresh.set_faults([{"kind": "partial_fill", "fraction": 0.5}])
    client = fresh.client()
    client.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):  # 100 ETH is far beyond 10,000 USDT
        client.create_order("ETH/USDT", "market", "buy", 100)
    assert entries(fresh) == []
    order = client.create_order("ETH/USDT", "market", "buy", 0.1)
    assert (order["status"], order["filled"], order["average"]) == ("expired", 0.05, ask)
    assert client.create_order("ETH/USDT", "market", "buy", 0.1)["filled"] == 0.1  # now it is spent
    assert entries(fresh, "partial_fill") == [("partial_fill", "/api/v3/order", int(eth_bars["timestamp"].iat[S]))]


def test_lost_reply_on_a_cancel_cancels_but_the_client_does_not_learn_it(fresh, eth_bars):
    below = round(open_at(eth_bars, S) * 0.95, 2)
    client = fresh.client()
    client.load_markets()
    order = client.create_order("ETH/USDT", "limit", "buy", 0.05, below)
    fresh.set_faults([{"kind": "lost_reply"}])
    assert client.fetch_order(order["id"], "ETH/USDT")["status"] == "open"  # a GET is not a lost reply's target
    with pytest.raises(ccxt.RequestTimeout, match="-1007"):
        client.cancel_order(order["id"], "ETH/USDT")
    assert client.fetch_order(order["id"], "ETH/USDT")["status"] == "canceled"
    assert client.fetch_balance()["USDT"]["used"] == 0
    assert entries(fresh) == [("lost_reply", "/api/v3/order", int(eth_bars["timestamp"].iat[S]))]

# ---------------------------------------------------------------------- websocket faults
def test_ws_drop_closes_the_connection_and_ccxt_reconnects(fresh, eth_bars, arun, ws_client):
    t0 = int(eth_bars["timestamp"].iat[S])

    async def scenario():
        async with fresh.pro() as ex, ws_client(fresh.ws_url + "/stream/ws/ethusdt@kline_1h") as other:
            await other.recv()
            pending = asyncio.create_task(ex.watch_trades("ETH/USDT"))
            await fresh.subscribed("ethusdt@trade")
            await fresh.aset_faults([{"kind": "ws_drop", "stream": "ethusdt@trade"}])
            await fresh.astep(1)
            with pytest.raises(ccxt.NetworkError, match="1001"):
                await asyncio.wait_for(pending, 5)
            # the other connection (no trade stream) is untouched
            kept = await other.collect(lambda fs: len(fs) == 5)
            pending = asyncio.create_task(ex.watch_trades("ETH/USDT"))  # reconnects
            await fresh.subscribed("ethusdt@trade")
            await fresh.astep(1)
            trades = await asyncio.wait_for(pending, 5)
            return kept, trades

    kept, trades = arun(scenario())
    assert [f["E"] for f in kept] == [t0 + k * QUARTER for k in (1, 2, 3, 4, 4)]
    assert trades[0]["timestamp"] == t0 + HOUR + QUARTER  # the second step's first trade, on the new connection
    assert entries(fresh, "ws_drop") == [("ws_drop", "ethusdt@trade", t0 + QUARTER)]


def test_ws_drop_for_ms_closes_every_connection_new_ones_too(fresh, arun, ws_client):
    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws/0") as idle:
            await fresh.aset_faults([{"kind": "ws_drop", "ms": 800}])
            with pytest.raises(websockets.ConnectionClosed):
                await idle.recv(2.0)  # idle, yet dropped
        async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@kline_1h") as new:
            with pytest.raises(websockets.ConnectionClosed):
                await new.recv(2.0)  # within the window: dropped before its first frame
        await asyncio.sleep(0.9)
        async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@kline_1h") as after:
            return await after.recv(2.0)

    assert arun(scenario())["e"] == "kline"
    assert len(entries(fresh, "ws_drop")) == 2


def test_ws_stall_keeps_the_socket_open_and_sends_nothing(fresh, eth_bars, arun, ws_client):
    t0 = int(eth_bars["timestamp"].iat[S])

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@trade") as ws:
            await fresh.aset_faults([{"kind": "ws_stall", "ms": 800, "stream": "ethusdt@trade"}])
            started = time.monotonic()
            await fresh.astep(1)
            silent = await ws.quiet(0.3)
            listed, _ = await ws.reply(await ws.send("LIST_SUBSCRIPTIONS"))  # the socket still answers
            await asyncio.sleep(max(0.0, 0.85 - (time.monotonic() - started)))
            await fresh.astep(1)
            return silent, listed, await ws.collect(lambda fs: len(fs) == 4)

    silent, listed, after = arun(scenario())
    assert silent == [] and listed["result"] == ["ethusdt@trade"]
    # the stalled hour's trades are lost; the next hour's arrive
    assert [f["T"] for f in after] == [t0 + HOUR + k * QUARTER for k in (1, 2, 3, 4)]
    assert entries(fresh, "ws_stall") == [("ws_stall", "ethusdt@trade", t0 + QUARTER)]


@pytest.mark.parametrize("kind, order", [
    ("duplicate_event", [1, 1, 2, 3, 4]),
    ("out_of_order_event", [2, 1, 3, 4]),
])
def test_duplicate_and_out_of_order_events(fresh, eth_bars, arun, ws_client, kind, order):
    t0 = int(eth_bars["timestamp"].iat[S])

    async def scenario():
        async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@trade") as ws:
            await fresh.aset_faults([{"kind": kind, "stream": "ethusdt@trade"}])
            await fresh.astep(1)
            frames = await ws.collect(lambda fs: len(fs) == len(order))
            return frames + await ws.quiet(0.3)

    frames = arun(scenario())
    assert [f["T"] for f in frames] == [t0 + k * QUARTER for k in order]
    assert entries(fresh) == [(kind, "ethusdt@trade", t0 + QUARTER)]


def test_maintenance_refuses_rest_and_websockets_then_ends(fresh, eth_bars, arun, ws_client):
    t0 = int(eth_bars["timestamp"].iat[S])

    async def scenario():
        async with fresh.pro() as ex, ws_client(fresh.ws_url + "/stream/ws/0") as idle:
            await fresh.aset_faults([{"kind": "maintenance", "ms": 800}])
            started = time.monotonic()
            with pytest.raises(ccxt.OperationFailed, match="-1008"):  # 503, "Server is currently overloaded"
                await ex.fetch_ticker("ETH/USDT")
            with pytest.raises(websockets.ConnectionClosed):
                await idle.recv(2.0)  # open connections are closed
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with ws_client(fresh.ws_url + "/stream/ws/ethusdt@trade"):
                    pass
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1h"), 5)
            await asyncio.sleep(max(0.0, 0.85 - (time.monotonic() - started)))
            ticker = await ex.fetch_ticker("ETH/USDT")
            candles = await asyncio.wait_for(ex.watch_ohlcv("ETH/USDT", "1h"), 5)
            return refused.value.response.status_code, ticker, candles

    status, ticker, candles = arun(scenario())
    assert status == 503
    assert ticker["last"] == open_at(eth_bars, S) and candles[-1][0] == t0
    log = entries(fresh, "maintenance")
    assert ("maintenance", "/api/v3/ticker/24hr", t0) in log
    assert {where for _, where, _ in log} >= {"/api/v3/ticker/24hr", "/stream/ws/ethusdt@trade"}
    assert all(sim_time == t0 for *_, sim_time in log)


def test_clock_skew_needs_ccxts_time_difference(fresh, eth_bars, arun):
    t0 = int(eth_bars["timestamp"].iat[S])
    fresh.set_faults([{"kind": "clock_skew", "ms": 20_000}])
    server = fresh.get("/api/v3/time").json()["serverTime"]
    assert 19_000 < server - time.time() * 1000 < 21_000

    async def scenario():
        async with fresh.pro() as ex:
            with pytest.raises(ccxt.InvalidNonce, match="-1021"):
                await ex.fetch_balance()
            await ex.load_time_difference()
            difference = ex.options["timeDifference"]
            rest = await ex.fetch_balance()
        # a fresh client adjusting first gets its WS-API user data too
        async with fresh.pro() as ex:
            await ex.load_time_difference()
            pending = asyncio.create_task(ex.watch_balance())
            await fresh.user_subscribed()
            await ex.create_order("ETH/USDT", "market", "buy", 0.02)
            streamed = await asyncio.wait_for(pending, 5)
        return difference, rest, streamed

    difference, rest, streamed = arun(scenario())
    assert -21_000 < difference < -19_000
    assert rest["total"] == {"USDT": 10_000.0, "ETH": 1.0, "BTC": 0.1}
    assert streamed["ETH"]["total"] == round(1 + 0.02 * (1 - FEE), 8)
    assert entries(fresh, "clock_skew") == [("clock_skew", None, t0)]  # logged once, when it first applied


# ---------------------------------------------------------------------- the schema
@pytest.mark.parametrize("spec, text", [
    ({"rules": [{"kind": "earthquake"}]}, "rules[0].kind: must be one of"),
    ({"rules": [{"kind": "http_error", "staus": 503}]}, "unknown field(s) ['staus'] for http_error"),
    ({"rules": [{"kind": "latency", "ms": 5}, {"kind": "reject", "fraction": 0.5}]},
     "rules[1]: unknown field(s) ['fraction'] for reject"),
    ({"rules": [{"kind": "http_error", "status": "503"}]}, "rules[0].status: an integer"),
    ({"rules": [{"kind": "http_error", "status": 200}]}, "rules[0].status: an HTTP error status"),
    ({"rules": [{"kind": "latency", "ms": -5}]}, "rules[0].ms: >= 0"),
    ({"rules": [{"kind": "maintenance"}]}, "rules[0].ms: required for maintenance"),
    ({"rules": [{"kind": "partial_fill", "fraction": 1.5}]}, "rules[0].fraction: a number in [0, 1)"),
    ({"rules": [{"kind": "lost_reply", "mode": "vanish"}]}, "rules[0].mode: 'error' or 'timeout'"),
    ({"rules": [{"kind": "reject", "count": 0}]}, "rules[0].count: an integer >= 1 or null"),
    ({"rules": [{"kind": "ws_drop", "stream": 5}]}, "rules[0].stream: a string"),
    ({"rules": [{"kind": "http_error", "path": "api/v3/order"}]}, "rules[0].path: a request path"),
    ({"rules": ["http_error"]}, "rules[0]: a fault rule is a mapping"),
    ({"rules": {"kind": "latency"}}, "faults.rules: a list of rules"),
    ({"faults": []}, "faults: expected {'rules': [...]}"),
])
def test_bad_fault_specs_are_refused_naming_the_problem(fresh, spec, text):
    fresh.set_faults([{"kind": "latency", "ms": 1, "count": None}])
    reply = fresh.post("/sim/faults", json=spec)
    assert reply.status_code == 400 and reply.json()["code"] == -1100
    assert text in reply.json()["msg"]
    assert [r["kind"] for r in fresh.get("/sim/faults").json()["rules"]] == ["latency"]  # the old rules stay


def test_a_body_that_is_not_json_is_refused(fresh):
    reply = fresh.post("/sim/faults", data="rules: [", headers={"Content-Type": "application/json"})
    assert reply.status_code == 400 and reply.json()["code"] == -1100


def test_faults_from_a_yaml_file(tmp_path, eth_bars, sim_server):
    t0 = int(eth_bars["timestamp"].iat[S])
    path = tmp_path / "faults.yaml"
    path.write_text("rules:\n"
                    "  - kind: http_error\n    status: 503\n    path: /api/v3/ticker/24hr\n"
                    "  - kind: reject\n    code: -2010\n    msg: Account has insufficient balance for requested action.\n"
                    "  - kind: latency\n    ms: 300\n    path: /api/v3/time\n    count: null\n", encoding="utf-8")
    faults = Faults.from_file(path)
    assert [r.kind for r in faults.rules] == ["http_error", "reject", "latency"]
    with sim_server({"ETH/USDT@1h": eth_bars}, t0, faults=faults) as sim:
        client = sim.client()
        client.load_markets()
        with pytest.raises(ccxt.OperationFailed):
            client.fetch_ticker("ETH/USDT")
        with pytest.raises(ccxt.InsufficientFunds):
            client.create_order("ETH/USDT", "market", "buy", 0.02)
        for _ in range(2):  # count: null fires until replaced
            started = time.monotonic()
            client.fetch_time()
            assert time.monotonic() - started >= 0.3
        described = sim.get("/sim/faults").json()
    assert [r["kind"] for r in described["rules"]] == ["latency"] and described["rules"][0]["remaining"] is None
    assert [(e["kind"], e["where"], e["sim_time"]) for e in described["log"]] == [
        ("http_error", "/api/v3/ticker/24hr", t0), ("reject", "/api/v3/order", t0),
        ("latency", "/api/v3/time", t0), ("latency", "/api/v3/time", t0)]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - kind: latency\n    delay: 5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"faults file .*bad.yaml: rules\[0\]: unknown field\(s\) \['delay'\]"):
        Faults.from_file(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ValueError, match="faults file .*broken.yaml"):
        Faults.from_file(broken)


# ---------------------------------------------------------------------- request weight
def test_request_weight_is_counted_then_429_then_418(eth_bars, sim_server):
    t0 = int(eth_bars["timestamp"].iat[S])
    clock = {"now": 1_000_000 * 60.0 + 10.0}  # 10 s into a wall-clock minute, frozen
    with sim_server({"ETH/USDT@1h": eth_bars}, t0, weight_limit=30) as sim:
        assert sim.app.state.limiter.limit == 30
        sim.app.state.limiter.clock = lambda: clock["now"]
        client = sim.client()
        client.load_markets()  # exchangeInfo: weight 20
        assert client.last_response_headers["X-MBX-USED-WEIGHT-1M"] == "20"
        used = []
        for _ in range(5):  # ticker/24hr with a symbol: weight 2
            client.fetch_ticker("ETH/USDT")
            used.append(client.last_response_headers["X-MBX-USED-WEIGHT-1M"])
        assert used == ["22", "24", "26", "28", "30"]
        assert requests.get(sim.url + "/sim/state", timeout=5).status_code == 200  # /sim/* is not charged
        retry = []
        for _ in range(3):  # over the limit: 429, Retry-After until the next minute
            with pytest.raises(ccxt.DDoSProtection, match="429"):
                client.fetch_ticker("ETH/USDT")
            retry.append(client.last_response_headers["Retry-After"])
        assert retry == ["51"] * 3
        with pytest.raises(ccxt.DDoSProtection, match="418"):  # kept hammering: banned
            client.fetch_ticker("ETH/USDT")
        assert client.last_response_headers["Retry-After"] == "120"
        clock["now"] += 61  # a new minute, still banned
        reply = requests.get(sim.url + "/api/v3/time", timeout=5)
        assert reply.status_code == 418 and reply.json()["code"] == -1003
        clock["now"] += 60  # the ban is over
        assert client.fetch_ticker("ETH/USDT")["last"] == open_at(eth_bars, S)
        assert client.last_response_headers["X-MBX-USED-WEIGHT-1M"] == "2"
