"""The replay server's Binance-shaped REST (raw HTTP and through ccxt) and the ccxt client factory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ccxt
import numpy as np
import pandas as pd
import pytest
import requests

from spotgym.sim import Faults, create_app, serve_in_thread
from spotgym.venue import TradingRules, make_exchange, rehost_urls

HOUR = 3_600_000
ROWS = 1500


@pytest.fixture(scope="module")
def bars(eth_1h_path) -> pd.DataFrame:
    return pd.read_csv(eth_1h_path, nrows=ROWS)


@pytest.fixture(scope="module")
def ts(bars) -> np.ndarray:
    return bars["timestamp"].to_numpy()


@dataclass
class Http:
    """Raw HTTP against a served app."""

    url: str
    app: object

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=5)

    def klines(self, **params) -> list[list]:
        reply = self.get("/api/v3/klines", **{"symbol": "ETHUSDT", "interval": "1h", **params})
        assert reply.status_code == 200, reply.text
        return reply.json()


@contextmanager
def served(bars, now_ms=None, **kwargs) -> Iterator[Http]:
    app = create_app({"ETH/USDT@1h": bars}, now_ms=now_ms, **kwargs)
    with serve_in_thread(app) as url:
        yield Http(url, app)


def as_source_rows(rows: list[list]) -> np.ndarray:
    """Server rows back to (n, 6) floats: open time + OHLCV parsed from Binance's strings."""
    return np.array([[row[0], *map(float, row[1:6])] for row in rows])


def test_klines_are_binance_rows_with_the_source_values(bars, ts):
    with served(bars) as http:  # wall clock: every bar has closed
        rows = http.klines()  # no startTime: the latest 500

    assert len(rows) == 500
    assert all(len(row) == 12 and isinstance(row[1], str) and isinstance(row[5], str) for row in rows)
    assert [row[6] for row in rows] == list(ts[-500:] + HOUR - 1)  # close time
    np.testing.assert_array_equal(as_source_rows(rows), bars.iloc[-500:].to_numpy())


def test_klines_select_like_binance(bars, ts):
    with served(bars) as http:
        assert [r[0] for r in http.klines(startTime=ts[10] - 1, limit=3)] == list(ts[10:13])
        assert [r[0] for r in http.klines(endTime=ts[10], limit=3)] == list(ts[8:11])
        assert [r[0] for r in http.klines(startTime=ts[10], endTime=ts[11])] == list(ts[10:12])
        assert [r[0] for r in http.klines(startTime=ts[0], limit=5000)] == list(ts[:1000])  # capped at 1000
        reply = http.get("/api/v3/klines", symbol="ETHUSDT", interval="1h", startTime=ts[11], endTime=ts[10])
    assert (reply.status_code, reply.json()["code"]) == (400, -1023)


def test_klines_stop_at_now_and_serve_the_open_bar_partial(bars, ts):
    now = int(ts[100]) + 15 * 60_000  # a quarter into bar 100
    with served(bars, now_ms=now) as http:
        rows = http.klines(startTime=ts[95], limit=50)
        latest = http.klines()

    assert [r[0] for r in rows] == list(ts[95:101])  # nothing opening after now
    np.testing.assert_array_equal(as_source_rows(rows[:-1]), bars.iloc[95:100].to_numpy())
    # the open bar, from the two trades of its path so far (4 per bar, every 15 minutes): the open, then the
    # extreme the bar reaches first (its low when it closes up, its high when it closes down); each trade
    # carries a quarter of the volume, floored to the 0.0001 lot step
    o, h, low, c, v = bars.iloc[100, 1:].to_numpy()
    first = low if c >= o else h
    quarter = np.floor(v / 4 / 0.0001 + 1e-9) * 0.0001
    np.testing.assert_allclose(as_source_rows(rows[-1:])[0],
                               [ts[100], o, max(o, first), min(o, first), first, 2 * quarter], rtol=0, atol=1e-8)
    assert latest[-1] == rows[-1]  # without startTime, the latest bar is the open one


def test_errors_have_binance_codes(bars):
    cases = [
        ({"symbol": "DOGEUSDT", "interval": "1h"}, -1121, "Invalid symbol."),
        ({"symbol": "ETHUSDT", "interval": "7m"}, -1120, "Invalid interval."),
        ({"symbol": "ETHUSDT", "interval": "30m"}, -1120, "bars of 1h; it serves that and whole multiples of it, not 30m"),
        ({"symbol": "ETHUSDT"}, -1102, "Mandatory parameter 'interval'"),
        ({"symbol": "ETHUSDT", "interval": "1h", "startTime": "yesterday"}, -1100, "parameter 'startTime'"),
    ]
    with served(bars) as http:
        replies = [http.get("/api/v3/klines", **params) for params, _, _ in cases]
    for reply, (params, code, text) in zip(replies, cases):
        assert (reply.status_code, reply.json()["code"]) == (400, code), params
        assert text in reply.json()["msg"]


def test_two_clocks_wall_time_for_signatures_market_time_in_a_header(bars):
    """``/api/v3/time`` is the wall clock (ccxt signs with its own clock and may adjust to this one); the market
    clock, which klines and fills follow, is stated in every reply's ``X-Sim-Time``."""
    clock = {"now": 1_700_000_000_000}
    with served(bars, now_ms=lambda: clock["now"]) as http:
        before = time.time_ns() // 1_000_000
        reply = http.get("/api/v3/time")
        after = time.time_ns() // 1_000_000
        assert before <= reply.json()["serverTime"] <= after
        assert reply.headers["X-Sim-Time"] == "1700000000000"
        clock["now"] += 1234
        assert http.get("/api/v3/time").headers["X-Sim-Time"] == "1700000001234"
    with served(bars, now_ms=42) as http:
        assert http.get("/api/v3/ping").headers["X-Sim-Time"] == "42"


def test_faults_fail_the_requests_they_name(bars):
    faults = Faults()
    faults.fail_next(2, status=503)  # klines by default
    faults.fail_request(1, status=429, path="/api/v3/time")  # the 1st time request
    faults.fail_request(5, status=500, path=None)  # the 5th request to any path
    with served(bars, faults=faults) as http:
        replies = [http.get("/api/v3/klines", symbol="ETHUSDT", interval="1h", limit=1) for _ in range(3)]
        replies += [http.get("/api/v3/time") for _ in range(3)]

    assert [r.status_code for r in replies] == [503, 503, 200, 429, 500, 200]
    assert [r.json().get("code") if r.status_code != 200 else None for r in replies] == \
        [-1008, -1008, None, -1003, -1001, None]
    assert faults.injected == 4
    assert [r.path for r in http.app.state.requests] == ["/api/v3/klines"] * 3 + ["/api/v3/time"] * 3


def test_ccxt_loads_markets_with_one_request_and_parses_the_filters(bars, eth_1h_path):
    btc_rules = TradingRules(symbol="BTC/USDT", tick_size=0.01, step_size=0.00001, min_qty=0.00001, max_qty=9000,
                             min_notional=5, max_notional=9000000, min_price=0.01, max_price=1000000)
    app = create_app({"ETH/USDT@1h": bars, "BTC/USDT@1h": eth_1h_path}, rules={"BTC/USDT": btc_rules})
    with serve_in_thread(app) as url:
        client = make_exchange(mode="sim", sim_url=url)
        markets = client.load_markets()
        assert [(r.method, r.path) for r in app.state.requests] == [("GET", "/api/v3/exchangeInfo")]

        eth, btc = markets["ETH/USDT"], markets["BTC/USDT"]
        assert (eth["id"], eth["base"], eth["quote"], eth["spot"], eth["active"]) == ("ETHUSDT", "ETH", "USDT", True, True)
        assert eth["precision"]["price"] == 0.01 and eth["precision"]["amount"] == 0.0001
        assert eth["limits"]["amount"] == {"min": 0.0001, "max": 9000.0}
        assert eth["limits"]["price"] == {"min": 0.01, "max": 1_000_000.0}
        assert eth["limits"]["cost"] == {"min": 5.0, "max": 9_000_000.0}
        assert btc["precision"]["amount"] == 0.00001 and btc["limits"]["amount"]["min"] == 0.00001
        # Binance's error codes map to the same ccxt exceptions as against api.binance.com.
        with pytest.raises(ccxt.BadSymbol):
            client.public_get_klines({"symbol": "DOGEUSDT", "interval": "1h"})
        # The path-loaded market serves the file's rows.
        assert client.fetch_ohlcv("BTC/USDT", "1h", since=int(bars["timestamp"].iat[0]), limit=2) == \
            bars.iloc[:2].to_numpy().tolist()


def test_ccxt_default_options_load_through_the_stubs(bars):
    app = create_app({"ETH/USDT@1h": bars})
    with serve_in_thread(app) as url:
        client = ccxt.binance({"apiKey": "key", "secret": "secret", "enableRateLimit": False})
        rehost_urls(client.urls["api"], url)
        assert "ETH/USDT" in client.load_markets()
    assert {r.path for r in app.state.requests} == {
        "/api/v3/exchangeInfo", "/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo",
        "/sapi/v1/capital/config/getall", "/sapi/v1/margin/allPairs", "/sapi/v1/margin/isolated/allPairs"}


def test_serve_in_thread_stops_the_server(bars):
    with serve_in_thread(create_app({"ETH/USDT@1h": bars})) as url:
        assert requests.get(f"{url}/api/v3/time", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/api/v3/time", timeout=5)


def test_bad_markets_are_rejected_naming_the_problem(bars):
    with pytest.raises(ValueError, match="bad market key 'ETHUSDT'"):
        create_app({"ETHUSDT": bars})
    with pytest.raises(ValueError, match="'ETH/USDT@1M'"):
        create_app({"ETH/USDT@1M": bars})
    # the bars are checked by the same rules as every bar file (spotgym.data.validate_raw)
    with pytest.raises(ValueError, match="market 'ETH/USDT@4h', row 1 .*off the 4h grid"):
        create_app({"ETH/USDT@4h": bars})
    with pytest.raises(ValueError, match="market 'ETH/USDT@1h', row 1 .*not sorted"):
        create_app({"ETH/USDT@1h": bars.iloc[::-1]})
    with pytest.raises(ValueError, match=r"market 'ETH/USDT@1h': missing column\(s\) \['volume'\]"):
        create_app({"ETH/USDT@1h": bars.drop(columns="volume")})
    with pytest.raises(ValueError, match=r"rules given for symbols without bars: \['SOL/USDT'\]"):
        create_app({"ETH/USDT@1h": bars}, rules={"SOL/USDT": TradingRules()})
    with pytest.raises(ValueError, match="'DOGE/BTC'.*give them explicitly"):
        create_app({"DOGE/BTC@1h": bars})  # no rules given and none known: refused, not ETH's by default


def test_factory_modes_hosts_rate_limit_and_keys():
    live = make_exchange(api_key="KEY-abc", secret="SECRET-xyz")
    assert live.urls["api"]["public"] == "https://api.binance.com/api/v3" and live.enableRateLimit
    assert "SECRET" not in repr(live) + str(live) and "KEY-abc" not in repr(live) + str(live)
    assert make_exchange(mode="testnet").urls["api"]["public"] == "https://testnet.binance.vision/api/v3"
    assert make_exchange(mode="demo").urls["api"]["public"] == "https://demo-api.binance.com/api/v3"

    sim = make_exchange(mode="sim", sim_url="http://127.0.0.1:8765/", pro=True, sync=False)
    rest = {k: v for k, v in sim.urls["api"].items() if isinstance(v, str)}
    assert rest["public"] == "http://127.0.0.1:8765/api/v3" and rest["sapi"] == "http://127.0.0.1:8765/sapi/v1"
    assert all(v.startswith("http://127.0.0.1:8765/") for v in rest.values())
    ws = sim.urls["api"]["ws"]
    assert ws["spot"] == "ws://127.0.0.1:8765/stream/ws"
    assert ws["ws-api"]["spot"] == "ws://127.0.0.1:8765/stream/ws-api/v3"
    assert not sim.enableRateLimit


@pytest.mark.parametrize("kwargs, match", [
    ({"mode": "paper"}, "unknown mode 'paper'"),
    ({"mode": "sim"}, "sim_url is required"),
    ({"sim_url": "http://127.0.0.1:1"}, "only allowed there"),
    ({"pro": True}, "pass sync=False"),
    ({"api_key": "k"}, "api_key and secret go together"),
    ({"exchange_id": "nosuchexchange"}, "unknown exchange 'nosuchexchange'"),
    ({"exchange_id": "kraken", "mode": "sim", "sim_url": "http://127.0.0.1:1"}, "must be 'binance'"),
])
def test_factory_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_exchange(**kwargs)
