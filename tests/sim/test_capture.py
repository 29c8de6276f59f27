"""The recorded L2 feed replayed as recorded: inside the span it covers the exchange's book is the book rebuilt from
the feed (checked against an independent rebuild here), its trades are the recorded trades, and a market order
walks the recorded asks; outside it the synthetic ladder is back."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
import requests

from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import make_exchange

KEY, SECRET = "spotgym-sim-key", "spotgym-sim-secret"


@pytest.fixture(scope="module")
def feed():
    from shared_data import shared_file

    return shared_file("BINANCE_ETHUSDT_l2feed_20240808.jsonl.gz")


def rebuilt_book(path, at_ms: int) -> tuple[dict[float, float], dict[float, float]]:
    """Binance's documented procedure, written out: the snapshot, then every diff with u > lastUpdateId and
    E <= at_ms, in order; quantity 0 removes a level."""
    snapshot, diffs = None, []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            message = json.loads(line.split(" ", 1)[1])
            if "lastUpdateId" in message:
                snapshot = message
            elif message.get("stream") == "ethusdt@depth@100ms":
                diffs.append(message["data"])
    bids = {float(p): float(q) for p, q in snapshot["bids"]}
    asks = {float(p): float(q) for p, q in snapshot["asks"]}
    for d in sorted(diffs, key=lambda d: d["u"]):
        if d["u"] <= snapshot["lastUpdateId"] or d["E"] > at_ms:
            continue
        for book, rows in ((bids, d["b"]), (asks, d["a"])):
            for p, q in rows:
                if float(q) == 0:
                    book.pop(float(p), None)
                else:
                    book[float(p)] = float(q)
    return bids, asks


def test_the_recorded_book_and_trades_replace_the_synthetic_ones_for_their_span(feed, eth_1m_path):
    bars = pd.read_csv(eth_1m_path)
    start = pd.Timestamp("2024-08-08T23:50", tz="UTC").value // 10**6
    app = create_app({"ETH/USDT": bars}, start_ms=start, captures={"ETH/USDT": feed},
                     balances={"USDT": 100_000}, event_log=True)
    with serve_in_thread(app) as url:
        ex = make_exchange(mode="sim", sim_url=url, api_key=KEY, secret=SECRET)
        ex.load_markets()
        synthetic = ex.fetch_order_book("ETH/USDT", 5)  # before the capture: the ladder, bids 1 bp apart
        assert synthetic["asks"][1][0] - synthetic["asks"][0][0] > 0.2
        for minute in (6, 3):  # 23:56 and 23:59, inside the capture
            now = requests.post(f"{url}/sim/step", params={"bars": minute}, timeout=10).json()["time"]
            bids, asks = rebuilt_book(feed, now)
            book = ex.fetch_order_book("ETH/USDT", 10)
            assert book["bids"] == [list(x) for x in sorted(bids.items(), reverse=True)[:10]]
            assert book["asks"] == [list(x) for x in sorted(asks.items())[:10]]
        order = ex.create_order("ETH/USDT", "market", "buy", 5.0)
        best = sorted(asks.items())
        assert order["trades"][0]["price"] == best[0][0] and order["trades"][0]["amount"] == min(5.0, best[0][1])
        events = [json.loads(e) for e in requests.get(f"{url}/sim/events", timeout=10).json()["events"]]
    trades = [e[2] for e in events if e[1] == "ethusdt@trade"]
    recorded = pd.read_csv(feed.parent / "BINANCE_ETHUSDT_trades_20240808.csv")
    window = recorded[(recorded["timestamp"] > start) & (recorded["timestamp"] <= now)]
    inside = [t for t in trades if t["T"] >= window["timestamp"].min()]
    assert [(float(t["p"]), float(t["q"])) for t in inside] == list(zip(window["price"], window["qty"]))
    assert len(inside) > 1000


def test_a_capture_outside_the_bars_is_refused(feed, eth_1h_path):
    bars = pd.read_csv(eth_1h_path).iloc[:100]
    with pytest.raises(ValueError, match="lies outside its bars"):
        create_app({"ETH/USDT": bars}, start_ms=int(bars["timestamp"][10]), captures={"ETH/USDT": feed})
    with pytest.raises(ValueError, match="has no bars"):
        create_app({"ETH/USDT": bars}, start_ms=int(bars["timestamp"][10]), captures={"BTC/USDT": feed})
