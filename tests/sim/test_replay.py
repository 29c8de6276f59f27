"""The replay as a whole: the same data, seed and client requests give the same event stream byte for byte; the
``max`` clock pauses at each bar open so a client reacting to a closed bar fills at the next open; and
``spotgym sim serve`` as a user starts it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

import pandas as pd
import pytest
import requests
import websockets

from spotgym.sim import create_app, serve_in_thread
from spotgym.sim.market import Market
from spotgym.venue import make_exchange, rules_for

KEY, SECRET = "spotgym-sim-key", "spotgym-sim-secret"
HOUR = 3_600_000
STREAMS = ["ethusdt@trade", "ethusdt@kline_1h", "ethusdt@kline_4h", "ethusdt@depth@100ms", "ethusdt@bookTicker",
           "ethusdt@miniTicker", "btcusdt@trade"]


@pytest.fixture(scope="module")
def eth(eth_1h_path):
    return pd.read_csv(eth_1h_path).iloc[:1500].reset_index(drop=True)


@pytest.fixture(scope="module")
def btc():
    from shared_data import shared_file

    return pd.read_csv(shared_file("BINANCE_BTCUSDT_1h.csv.gz")).iloc[:1500].reset_index(drop=True)


def _session(eth: pd.DataFrame, btc: pd.DataFrame) -> list[str]:
    """One scripted session: a websocket client on seven streams of two symbols, orders with fixed client ids,
    the clock stepped in between; returns the exchange's event log."""
    app = create_app({"ETH/USDT": eth, "BTC/USDT": btc}, start_ms=int(eth["timestamp"][1000]), seed=7,
                     balances={"USDT": 50_000, "ETH": 5, "BTC": 1}, event_log=True)
    with serve_in_thread(app) as url:
        async def run() -> None:
            async with websockets.connect(url.replace("http", "ws") + "/stream/ws/0") as ws:
                await ws.send(json.dumps({"method": "SUBSCRIBE", "params": STREAMS, "id": 1}))
                while json.loads(await ws.recv()).get("id") != 1:
                    pass

                async def drain() -> None:  # read everything, as a client must
                    async for _ in ws:
                        pass

                reader = asyncio.create_task(drain())
                ex = make_exchange(mode="sim", sim_url=url, api_key=KEY, secret=SECRET)
                await asyncio.to_thread(ex.load_markets)
                price = float(eth["close"][1000])
                orders = [("ETH/USDT", "market", "buy", 1.0, None), ("BTC/USDT", "market", "sell", 0.1, None),
                          ("ETH/USDT", "limit", "sell", 0.5, round(price * 1.01, 2)),
                          ("ETH/USDT", "limit", "buy", 0.7, round(price * 0.99, 2))]
                for n, (symbol, kind, side, qty, px) in enumerate(orders):
                    await asyncio.to_thread(ex.create_order, symbol, kind, side, qty, px,
                                            {"newClientOrderId": f"script-{n}"})
                for bars in (1, 2, 5, 1):
                    await asyncio.to_thread(requests.post, f"{url}/sim/step", params={"bars": bars})
                    await asyncio.to_thread(ex.create_order, "ETH/USDT", "market", "sell", 0.05, None,
                                            {"newClientOrderId": f"step-{bars}"})
                reader.cancel()

        asyncio.run(run())
        return requests.get(f"{url}/sim/events", timeout=10).json()["events"]


def test_same_data_seed_and_requests_give_the_same_events_byte_for_byte(eth, btc):
    first, second = _session(eth, btc), _session(eth, btc)
    assert len(first) > 200
    kinds = {json.loads(line)[1] for line in first}
    assert set(STREAMS) <= kinds and KEY in kinds  # every stream and the user stream are in the log
    assert first == second


def test_the_max_clock_pauses_at_each_open_so_a_reaction_to_a_closed_bar_fills_at_that_open(eth):
    start = int(eth["timestamp"][1000])
    app = create_app({"ETH/USDT": eth.iloc[:1010]}, start_ms=start, speed="max", bar_pause_ms=400,
                     balances={"USDT": 10_000})
    market = Market("ETH/USDT", rules_for("ETH/USDT"), eth["timestamp"].to_numpy(),
                    eth[["open", "high", "low", "close", "volume"]].to_numpy(), HOUR)

    async def react(url: str) -> list[tuple[int, dict]]:
        ex = make_exchange(mode="sim", sim_url=url, api_key=KEY, secret=SECRET, sync=False)
        fills = []
        try:
            await ex.load_markets()
            async with websockets.connect(url.replace("http", "ws") + "/stream/ws/ethusdt@kline_1h") as ws:
                while len(fills) < 3:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if event["k"]["x"]:  # a bar closed: buy at once
                        order = await ex.create_order("ETH/USDT", "market", "buy", 0.05)
                        fills.append((event["k"]["T"] + 1, order))
        finally:
            await ex.close()
        return fills

    with serve_in_thread(app) as url:
        fills = asyncio.run(react(url))
    for opened, order in fills:
        bar = int(eth.index[eth["timestamp"] == opened][0])
        best_ask = market.book(opened, 1)[1][0][0]  # the book at the next bar's open
        assert order["timestamp"] == opened  # the clock was paused at that open
        assert order["average"] == best_ask and abs(best_ask - eth["open"][bar]) <= 0.0001 * eth["open"][bar] + 0.01


def test_sim_serve_command(tmp_path, eth_1h_path):
    faults = tmp_path / "faults.yaml"
    faults.write_text("rules:\n  - {kind: http_error, status: 503, path: /api/v3/ticker/price, count: 1}\n")
    cmd = [sys.executable, "-m", "spotgym.cli", "sim", "serve", "--data", f"ETH/USDT={eth_1h_path}",
           "--start", "2021-03-01", "--step", "manual", "--port", "0", "--balance", "USDT=500", "--balance", "ETH=1",
           "--api-key", "k1", "--api-secret", "s1", "--faults", str(faults), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    listening = threading.Event()

    def drain() -> None:  # a server whose output nobody reads blocks once the pipe is full
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("sim: listening on "):
                listening.set()

    threading.Thread(target=drain, daemon=True).start()
    try:
        assert listening.wait(60), "\n".join(lines)
        url = next(x for x in lines if x.startswith("sim: listening on ")).split()[-1]
        assert url.startswith("http://127.0.0.1:")
        ex = make_exchange(mode="sim", sim_url=url, api_key="k1", secret="s1")
        ex.load_markets()
        assert ex.fetch_balance()["total"] == {"USDT": 500.0, "ETH": 1.0}
        state = requests.get(f"{url}/sim/state", timeout=5).json()
        assert state["time_iso"] == "2021-03-01T00:00:00+00:00" and state["clock"] == "manual"
        with pytest.raises(Exception, match="503|overloaded"):
            ex.public_get_ticker_price({"symbol": "ETHUSDT"})  # the fault of the file, once
        assert float(ex.public_get_ticker_price({"symbol": "ETHUSDT"})["price"]) > 0
        assert requests.post(f"{url}/sim/step", params={"bars": 2}, timeout=5).json()["time"] == \
            pd.Timestamp("2021-03-01T02:00", tz="UTC").value // 10**6
    finally:
        proc.terminate()
        proc.wait(20)
    assert any("API key k1" in x for x in lines)
    assert any("fault injected: http_error" in x for x in lines)


def test_sim_serve_rejects_bad_input_in_one_line(tmp_path, eth_1h_path, capsys):
    from spotgym.cli import main

    cases = ((["--data", "ETH/USDT=/nowhere.csv"], "--data ETH/USDT=/nowhere.csv: no such file"),
             (["--data", "ETHUSDT"], "--data 'ETHUSDT': expected SYMBOL=FILE"),
             ([], "--data SYMBOL=FILE: give at least one market"),
             (["--data", f"ETH/USDT={eth_1h_path}", "--speed", "fast"], "--speed fast: a positive number or 'max'"),
             (["--data", f"ETH/USDT={eth_1h_path}", "--start", "someday"], "--start someday: not a date"),
             (["--data", f"ETH/USDT={eth_1h_path}", "--balance", "USDT=lots"], "the amount is not a number"),
             (["--data", f"DOGE/BTC={eth_1h_path}"], "no trading rules known for binance 'DOGE/BTC'"))
    for args, message in cases:
        assert main(["sim", "serve", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
