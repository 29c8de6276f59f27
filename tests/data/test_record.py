"""spotgym.data.record: the live recorder against the replay exchange on loopback (manual clock), its local book's
sequence logic, file rotation, the loader and the CLI command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from spotgym.data.record import (
    FILE_KINDS,
    DepthDiff,
    LocalBook,
    Recorder,
    RecordError,
    Recording,
    RotatingWriter,
    add_record_command,
    load_recording,
    rebuild_book,
)
from spotgym.sim import create_app, serve_in_thread

ROWS = 700
START = 602  # a stretch of contiguous 1h bars (as tests/sim uses)
SID = "ETHUSDT"
HOUR = 3_600_000
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- a served replay exchange
@dataclass
class Sim:
    url: str
    app: Any

    def post(self, path: str, **kwargs) -> requests.Response:
        reply = requests.post(self.url + path, timeout=10, **kwargs)
        assert reply.status_code == 200, reply.text
        return reply

    def step(self, bars: int = 1) -> int:
        return self.post("/sim/step", params={"bars": bars}).json()["time"]

    def faults(self, rules: list[dict[str, Any]]) -> None:
        self.post("/sim/faults", json={"rules": rules})

    def reset(self) -> None:
        self.faults([])
        self.post("/sim/reset")

    @property
    def exchange(self) -> Any:
        return self.app.state.exchange

    def update_id(self) -> int:
        return self.exchange.update_id[SID]

    def depth(self, limit: int = 20) -> dict[str, Any]:
        return requests.get(self.url + "/api/v3/depth", params={"symbol": SID, "limit": limit}, timeout=10).json()


@pytest.fixture(scope="module")
def bars(eth_1h_path) -> pd.DataFrame:
    return pd.read_csv(eth_1h_path, nrows=ROWS)


@pytest.fixture(scope="module")
def served(bars) -> Iterator[Sim]:
    app = create_app({"ETH/USDT@1h": bars}, start_ms=int(bars["timestamp"].iat[START]), speed="manual")
    with serve_in_thread(app) as url:
        yield Sim(url, app)


@pytest.fixture
def sim(served) -> Sim:
    served.reset()
    return served


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


@contextmanager
def recording(sim: Sim, out: Path, **kwargs) -> Iterator[Recorder]:
    """A recorder of the sim in a thread, ready (connected, book synced) on entry, stopped and joined on exit."""
    kwargs.setdefault("interval", "1h")
    rec = Recorder("ETH/USDT", out, sim_url=sim.url, backoff=(0.05, 0.2), **kwargs)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            rec.run()
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    thread = threading.Thread(target=target, name="recorder", daemon=True)
    thread.start()
    try:
        wait_for(lambda: rec.ready.is_set() or not thread.is_alive(), "the recorder to sync")
        if errors:
            raise errors[0]
        yield rec
    finally:
        rec.stop()
        thread.join(10)
    assert not thread.is_alive(), "the recorder did not stop"
    if errors:
        raise errors[0]


def caught_up(rec: Recorder, sim: Sim, last_kline: int | None = None) -> Callable[[], bool]:
    """The recorder holds everything the sim has sent: book at its update id, last trade, last closed kline."""
    def check() -> bool:
        ex = sim.exchange
        return (("book" not in rec.streams or rec.book.last_update_id == sim.update_id()) and
                rec.stats["last_trade_id"] ==
                ex.engine.next_trade_id[SID] - 1 and (last_kline is None or rec.stats["last_kline"] == last_kline))
    return check


def assert_klines_equal(klines: pd.DataFrame, bars: pd.DataFrame, first: int, n: int) -> None:
    expected = bars.iloc[first:first + n].reset_index(drop=True)
    assert list(klines.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert klines["timestamp"].tolist() == expected["timestamp"].astype(np.int64).tolist()
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(klines[column].to_numpy(), expected[column].to_numpy(), rtol=1e-12, atol=1e-9)


def assert_book_equals_depth(recording: Recording, depth: dict[str, Any], levels: int = 20) -> None:
    bids, asks = rebuild_book(recording, depth=levels)
    assert bids.values.tolist() == [[float(p), float(q)] for p, q in depth["bids"][:levels]]
    assert asks.values.tolist() == [[float(p), float(q)] for p, q in depth["asks"][:levels]]


# ---------------------------------------------------------------------- against the replay exchange
def test_records_book_trades_and_closed_klines(sim, bars, tmp_path):
    start = int(bars["timestamp"].iat[START])
    with recording(sim, tmp_path, rotate_rows=10) as rec:
        for _ in range(3):
            sim.step(1)
        wait_for(caught_up(rec, sim, last_kline=start + 2 * HOUR), "the recorder to catch up")
        end_depth = sim.depth()
    r = load_recording(tmp_path)
    # closed klines: the sim's bars for the stepped span (the kline still open is not stored)
    assert_klines_equal(r.klines, bars, START, 3)
    # trades: every tick, ids consecutive, each within its bar's range
    assert len(r.trades) == 3 * 4
    assert np.all(np.diff(r.trades["trade_id"].to_numpy()) == 1)
    assert r.trades["time"].is_monotonic_increasing and r.trades["time"].iat[0] > start
    for row in r.trades.itertuples():
        bar = bars.iloc[START + (row.time - start) // HOUR]
        assert bar["low"] - 1e-9 <= row.price <= bar["high"] + 1e-9
    # the book: equal to the exchange's depth at the end, and to its book after every recorded depth event
    assert_book_equals_depth(r, end_depth)
    market = sim.exchange.markets[SID]
    times = sorted(set(r.book_diffs["time"]))
    assert len(times) == 12
    for t in times:
        bids, asks = rebuild_book(r, at_ms=t, depth=None)
        want_bids, want_asks = market.book(t)
        assert bids.values.tolist() == [list(level) for level in want_bids]
        assert asks.values.tolist() == [list(level) for level in want_asks]
    # the manifest: counts, no gaps, every file present, several files per kind (rotate_rows=10)
    m = r.manifest
    assert m["symbol"] == "ETH/USDT" and m["streams"] == ["book", "trades", "klines"] and m["interval"] == "1h"
    assert m["source"]["ws"] == sim.url.replace("http", "ws") + \
        "/stream?streams=ethusdt@depth@100ms/ethusdt@trade/ethusdt@kline_1h"
    assert m["gaps"] == {"book": 0, "trades": 0, "klines": 0} and m["resyncs"] == 0 and m["reconnects"] == 0
    assert m["counts"] == {"book_snapshots": len(r.book_snapshots), "book_diffs": len(r.book_diffs),
                           "trades": 12, "klines": 3}
    assert m["events"]["snapshots"] == 1 and m["events"]["depth"] == 12
    for kind in FILE_KINDS:
        for info in m["files"][kind]:
            assert (tmp_path / info["file"]).is_file() and info["file"].startswith(kind + "-")
    assert len(m["files"]["book_diffs"]) > 1 and len(m["files"]["trades"]) > 1
    assert not list(tmp_path.glob("*.tmp"))


def test_sequence_gap_is_counted_and_resynced(sim, bars, tmp_path):
    """A stall drops every frame for a while: the next depth event skips update ids (a gap, then a resync from a
    new snapshot), the trade ids jump, and the closed kline lost is back-filled over REST."""
    start = int(bars["timestamp"].iat[START])
    with recording(sim, tmp_path) as rec:
        sim.step(1)
        wait_for(caught_up(rec, sim, last_kline=start), "the first bar")
        sim.faults([{"kind": "ws_stall", "ms": 300}])
        sim.step(1)  # lost: the sim's book moves on, the recorder hears nothing
        time.sleep(0.35)
        sim.step(1)
        wait_for(caught_up(rec, sim, last_kline=start + 2 * HOUR), "the resync")
        end_depth = sim.depth()
    r = load_recording(tmp_path)
    m = r.manifest
    assert m["gaps"] == {"book": 1, "trades": 1, "klines": 1}
    assert m["resyncs"] == 1 and m["events"]["snapshots"] == 2 and r.book_snapshots["snapshot_id"].nunique() == 2
    assert m["missing_trades"] == 4 and m["missing_klines"] == 1 and m["events"]["klines_backfilled"] == 1
    gap = next(g for g in m["gap_log"] if g["stream"] == "book")
    assert gap["got_U"] > gap["expected_U"]
    assert_klines_equal(r.klines, bars, START, 3)
    assert len(r.trades) == 8
    assert_book_equals_depth(r, end_depth)
    # the book is unknown from the gap until the resync snapshot
    with pytest.raises(ValueError, match="missing"):
        rebuild_book(r, at_ms=int(gap["time"]))


def test_duplicated_events_are_ignored(sim, bars, tmp_path):
    with recording(sim, tmp_path) as rec:
        sim.faults([{"kind": "duplicate_event", "stream": "ethusdt@depth@100ms"},
                    {"kind": "duplicate_event", "stream": "ethusdt@trade"}])
        sim.step(1)
        wait_for(caught_up(rec, sim), "the bar")
        end_depth = sim.depth()
    r = load_recording(tmp_path)
    m = r.manifest
    assert m["duplicates"]["book"] == 1 and m["duplicates"]["trades"] == 1
    assert m["gaps"] == {"book": 0, "trades": 0, "klines": 0} and m["resyncs"] == 0
    assert len(r.trades) == 4 and r.trades["trade_id"].is_unique
    assert r.book_diffs.drop_duplicates("last_update_id").shape[0] == 4
    assert_book_equals_depth(r, end_depth)


def test_reconnects_after_a_drop_with_a_fresh_snapshot_and_kline_backfill(sim, bars, tmp_path):
    start = int(bars["timestamp"].iat[START])
    with recording(sim, tmp_path) as rec:
        sim.step(1)
        wait_for(caught_up(rec, sim, last_kline=start), "the first bar")
        sim.faults([{"kind": "ws_drop"}])
        sim.step(1)  # the connection closes at its first frame: the bar is lost
        wait_for(lambda: rec.stats["connections"] == 2 and rec.book.synced and
                 rec.book.last_update_id == sim.update_id() and rec.stats["last_kline"] == start + HOUR,
                 "the reconnection")
        sim.step(1)
        wait_for(caught_up(rec, sim, last_kline=start + 2 * HOUR), "the last bar")
        end_depth = sim.depth()
    r = load_recording(tmp_path)
    m = r.manifest
    assert m["reconnects"] == 1 and m["events"]["snapshots"] == 2 and m["events"]["klines_backfilled"] == 1
    assert m["gaps"]["trades"] == 1 and m["gaps"]["book"] == 0  # a new snapshot, not a gap in one book
    assert_klines_equal(r.klines, bars, START, 3)
    assert_book_equals_depth(r, end_depth)


# ---------------------------------------------------------------------- the book builder
def diff(first: int, last: int, bids=(), asks=(), t: int | None = None) -> DepthDiff:
    return DepthDiff(last if t is None else t, first, last, tuple(bids), tuple(asks))


def test_local_book_follows_binances_procedure():
    book = LocalBook()
    assert book.on_diff(diff(99, 100, bids=[(9.0, 1.0)])) == "buffered"
    assert book.on_diff(diff(101, 103, asks=[(11.0, 2.0)])) == "buffered"
    assert book.on_diff(diff(104, 104, bids=[(10.0, 0.0), (9.5, 3.0)])) == "buffered"
    # the snapshot holds up to 102: the first diff is dropped, the second straddles 103, the third follows
    assert book.on_snapshot(102, [(10.0, 1.0), (9.0, 5.0)], [(11.0, 1.0), (12.0, 1.0)]) == "synced"
    assert book.last_update_id == 104 and book.applied == 2
    assert book.top(None) == ([(9.5, 3.0), (9.0, 5.0)], [(11.0, 2.0), (12.0, 1.0)])
    assert book.on_diff(diff(103, 104)) == "stale" and book.stale == 1  # a duplicate
    assert book.on_diff(diff(105, 106, asks=[(12.0, 0.0)])) == "applied" and book.top(1) == ([(9.5, 3.0)], [(11.0, 2.0)])
    # a gap: U skips 107
    assert book.on_diff(diff(108, 108)) == "gap"
    assert book.gaps == 1 and not book.synced and book.gap_log == [{"expected": 107, "got": 108, "time": 108}]
    assert book.on_diff(diff(109, 110)) == "buffered"
    # a snapshot older than the first buffered diff it needs: fetch another, the buffer is kept
    assert book.on_snapshot(105, [(1.0, 1.0)], []) == "stale" and len(book.buffer) == 2
    assert book.on_snapshot(108, [(1.0, 1.0)], [(2.0, 1.0)]) == "synced" and book.last_update_id == 110


def test_local_book_snapshot_followed_by_a_buffered_gap_needs_another():
    book = LocalBook()
    for d in (diff(5, 5), diff(6, 6), diff(8, 8), diff(9, 9)):
        book.on_diff(d)
    assert book.on_snapshot(4, [], []) == "gap"
    assert book.gaps == 1 and not book.synced and [d.last_id for d in book.buffer] == [8, 9]
    assert book.on_snapshot(8, [(1.0, 1.0)], []) == "synced" and book.last_update_id == 9
    # an empty snapshot with nothing buffered: synced, and the next diff must follow it
    fresh = LocalBook()
    assert fresh.on_snapshot(50, [], []) == "synced"
    assert fresh.on_diff(diff(51, 52, bids=[(1.0, 0.0)])) == "applied" and fresh.top() == ([], [])


def test_rebuild_book_from_a_hand_made_recording():
    cols = ["snapshot_id", "last_update_id", "local_ms", "side", "price", "qty"]
    snaps = pd.DataFrame([[0, 10, 0, "bid", 9.0, 1.0], [0, 10, 0, "ask", 11.0, 1.0],
                          [1, 20, 0, "bid", 8.0, 4.0], [1, 20, 0, "ask", 12.0, 4.0]], columns=cols)
    dcols = ["time", "first_update_id", "last_update_id", "local_ms", "side", "price", "qty"]
    diffs = pd.DataFrame([[1000, 9, 11, 0, "bid", 9.5, 2.0], [1001, 12, 12, 0, "", np.nan, np.nan],
                          [1002, 13, 13, 0, "bid", 9.0, 0.0], [1003, 15, 15, 0, "ask", 10.5, 1.0],
                          [1004, 21, 21, 0, "ask", 12.0, 0.0], [1004, 21, 21, 0, "ask", 13.0, 1.0]], columns=dcols)
    empty = pd.DataFrame()
    r = Recording(snaps, diffs, empty, empty, {})
    bids, asks = rebuild_book(r, at_ms=1002)
    assert bids.values.tolist() == [[9.5, 2.0]] and asks.values.tolist() == [[11.0, 1.0]]
    with pytest.raises(ValueError, match="update ids 14..14 are missing"):
        rebuild_book(r, at_ms=1003)
    bids, asks = rebuild_book(r)  # the resync snapshot at 20, then update 21
    assert bids.values.tolist() == [[8.0, 4.0]] and asks.values.tolist() == [[13.0, 1.0]]
    with pytest.raises(ValueError, match="no depth event"):
        rebuild_book(r, at_ms=999)
    with pytest.raises(ValueError, match="no book snapshot"):
        rebuild_book(Recording(snaps.iloc[:0], diffs, empty, empty, {}))


# ---------------------------------------------------------------------- rotation and loading
def test_rotating_writer_starts_a_new_file_after_its_period(tmp_path):
    now = [1_700_000_000.0]
    files: list[dict[str, Any]] = []
    writer = RotatingWriter("trades", tmp_path, rotate_s=60.0, rotate_rows=1000, on_file=lambda k, i: files.append(i),
                            clock=lambda: now[0])
    assert not writer.due() and writer.flush() is None and files == []
    writer.add(1, 1000, 10.0, 0.5, True)
    now[0] += 59
    writer.add(2, 1001, 10.5, 0.5, False)
    assert not writer.due()
    now[0] += 1
    assert writer.due()
    path = writer.flush()
    assert path.name == "trades-20231114T221320.parquet" and files[0]["rows"] == 2
    writer.add(3, 1002, 11.0, 0.1, True)  # the same second again: a distinct name
    now[0] = 1_700_000_000.0
    writer.started = now[0]
    assert writer.flush().name == "trades-20231114T221320-1.parquet"
    frame = pd.read_parquet(path)
    assert frame.to_dict("list") == {"trade_id": [1, 2], "time": [1000, 1001], "price": [10.0, 10.5],
                                     "qty": [0.5, 0.5], "buyer_maker": [True, False]}


def test_time_rotation_writes_several_files_while_recording(sim, tmp_path):
    with recording(sim, tmp_path, rotate_minutes=0.1 / 60, streams="trades") as rec:
        for _ in range(3):
            sim.step(1)
            wait_for(caught_up(rec, sim), "a bar")
            time.sleep(0.25)  # longer than the 0.1 s period: the ticker rotates between bars
    r = load_recording(tmp_path)
    files = r.manifest["files"]["trades"]
    assert len(files) >= 3 and all(f["rows"] > 0 for f in files) and len(r.trades) == 12
    assert r.book_diffs.empty and r.klines.empty and list(r.klines.columns)[0] == "timestamp"


def test_load_recording_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_recording(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        load_recording(tmp_path)


def test_recorder_checks_its_arguments_before_anything_is_opened(tmp_path):
    with pytest.raises(RecordError, match="unknown stream"):
        Recorder("ETH/USDT", tmp_path / "rec", streams=["book", "depth"])
    assert issubclass(RecordError, ValueError)  # what the spotgym CLI prints as one error line
    (tmp_path / "file").write_text("x")
    with pytest.raises(RecordError, match="not a directory"):
        Recorder("ETH/USDT", tmp_path / "file")
    rec = Recorder("eth/usdt", tmp_path / "rec", streams="klines,trades", interval="5m")
    assert rec.ws_url == "wss://stream.binance.com:9443/stream?streams=ethusdt@trade/ethusdt@kline_5m"
    assert Recorder("ETH/USDT", tmp_path / "rec", testnet=True, streams="book").ws_url == \
        "wss://stream.testnet.binance.vision/stream?streams=ethusdt@depth@100ms"
    assert not (tmp_path / "rec").exists()


# ---------------------------------------------------------------------- the CLI
def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="spotgym")
    sub = parser.add_subparsers(dest="command", required=True)
    data_sub = sub.add_parser("data").add_subparsers(dest="data_command", required=True)
    add_record_command(data_sub)
    args = parser.parse_args(["data", "record", *argv])
    return args.func(args)


@pytest.mark.parametrize(("argv", "message"), [
    (["--streams", "foo"], "--streams: unknown stream(s) 'foo'; choose from book, trades, klines"),
    (["--streams", ","], "--streams: give at least one of book, trades, klines"),
    (["--symbol", "ETHUSDT"], "--symbol 'ETHUSDT': expected BASE/QUOTE"),
    (["--testnet", "--sim-url", "http://127.0.0.1:1"], "--testnet and --sim-url exclude each other"),
    (["--interval", "7m"], "--interval '7m'"),
    (["--rotate-minutes", "0"], "--rotate-minutes must be > 0"),
    (["--duration", "-1"], "--duration must be > 0"),
    (["--exchange", "kraken"], "--exchange 'kraken': only binance"),
    (["--sim-url", "127.0.0.1:8765"], "--sim-url '127.0.0.1:8765': expected http://HOST:PORT"),
])
def test_cli_bad_input_is_one_error_line(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPOTGYM_TRACEBACK", raising=False)
    base = {"--symbol": "ETH/USDT", "--out": str(tmp_path / "rec")}
    for key, value in base.items():
        if key not in argv:
            argv = [key, value, *argv]
    assert cli(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "rec").exists()


def test_cli_unknown_symbol_and_unreachable_server(sim, tmp_path, capsys):
    assert cli("--symbol", "DOGE/USDT", "--out", str(tmp_path), "--sim-url", sim.url, "--duration", "1") == 2
    assert capsys.readouterr().err.startswith(f"error: DOGE/USDT: not a symbol of {sim.url}/api/v3")
    assert not (tmp_path / "manifest.json").exists()
    assert cli("--symbol", "ETH/USDT", "--out", str(tmp_path), "--sim-url", "http://127.0.0.1:9", "--duration",
               "1") == 2
    assert capsys.readouterr().err.startswith("error: cannot reach http://127.0.0.1:9/api/v3")


def test_cli_records_for_a_duration_and_adds_to_a_folder(sim, tmp_path, capsys):
    out = tmp_path / "rec"
    args = ("--symbol", "ETH/USDT", "--out", str(out), "--sim-url", sim.url, "--interval", "1h", "--duration", "0.4")
    assert cli(*args) == 0
    assert cli(*args) == 0  # the same folder: a second session adds to it
    printed = capsys.readouterr().out
    assert f"{out}: 1 file(s), rows: book_snapshots 40;" in printed and f"{out}: 2 file(s), rows: book_snapshots 80;" in printed
    r = load_recording(out)
    assert len(r.manifest["sessions"]) == 2 and r.manifest["events"]["snapshots"] == 2
    assert sorted(r.book_snapshots["snapshot_id"].unique()) == [0, 1]
    assert_book_equals_depth(r, sim.depth())
    assert cli("--symbol", "BTC/USDT", "--out", str(out), "--sim-url", sim.url, "--duration", "1") == 2
    assert "holds a recording of ETH/USDT" in capsys.readouterr().err


_CLI_SCRIPT = """
import argparse, sys
from spotgym.data.record import add_record_command
parser = argparse.ArgumentParser(prog="spotgym")
add_record_command(parser.add_subparsers(dest="data_command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_writes_everything_buffered(sim, bars, tmp_path):
    out = tmp_path / "rec"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", _CLI_SCRIPT, "record", "--symbol", "ETH/USDT", "--out", str(out),
                             "--sim-url", sim.url, "--interval", "1h"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        for line in proc.stderr:  # the log: wait until the book is synced
            lines.append(line)
            if "book synced" in line:
                break
        else:
            raise AssertionError(f"the recorder did not sync: {''.join(lines)}")
        threading.Thread(target=lambda: proc.stderr.read(), daemon=True).start()  # keep draining
        sim.step(2)
        wait_for(lambda: all(c.queue.empty() for c in list(sim.app.state.hub.connections.values())), "the frames")
        time.sleep(0.3)  # they reach the recorder (nothing is on disk yet: the period is 60 min)
        assert not list(out.glob("trades-*.parquet"))
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout
    r = load_recording(out)
    assert len(r.trades) == 8 and len(r.klines) == 2 and r.manifest["sessions"][0]["stopped"]
    assert_klines_equal(r.klines, bars, START, 2)
    assert_book_equals_depth(r, sim.depth())
    assert json.loads((out / "manifest.json").read_text())["counts"]["trades"] == 8
