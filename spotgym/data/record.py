"""Record a Binance spot market live to rotating parquet files, and load a recording back.

``spotgym data record --symbol ETH/USDT --streams book,trades,klines --out DIR`` opens one combined websocket
(``/stream?streams=<sym>@depth@100ms/<sym>@trade/<sym>@kline_<interval>``) to Binance, its testnet or a replay
server (``--sim-url``), and keeps a local order book the way Binance documents it: buffer the diff events,
fetch a REST snapshot (``/api/v3/depth``, limit 1000), drop the buffered diffs it already holds (``u <=
lastUpdateId``), apply the first one only when it straddles ``lastUpdateId + 1`` and every later one only
when its ``U`` is the previous ``u + 1``. A diff whose ``U`` skips ids is a gap: it is logged and counted,
the book is dropped and rebuilt from a new snapshot (a resync). A diff already held (``u`` at or below the
book's) is a duplicate: ignored. On a disconnect the recorder reconnects with exponential backoff, takes a
fresh snapshot and fetches the closed klines it missed over REST; a closed kline that skips kline open
times is back-filled the same way.

Files in DIR, one per kind and rotation period: ``<kind>-<UTC start yyyymmddTHHMMSS>.parquet`` (``-N`` added
when two files of a kind start in the same second), written whole (temp file + rename) when the period
ends (``rotate_minutes`` of wall time since its first row, or ``rotate_rows`` rows) and on stop:

- ``book_snapshots``: one row per level per snapshot: ``snapshot_id``, ``last_update_id``, ``local_ms``
  (wall clock of the fetch), ``side`` ("bid" / "ask"), ``price``, ``qty``; a snapshot of an empty book is
  one row with side "" and NaN price / qty.
- ``book_diffs``: one row per level per depth event, in arrival order: ``time`` (event time E, ms),
  ``first_update_id`` (U), ``last_update_id`` (u), ``local_ms`` (wall clock of arrival), ``side``,
  ``price``, ``qty`` (0 removes the level); an event that changes no level is one row with side "". Every
  event received is kept (also those before a snapshot and around a gap) except duplicates (``u`` at or
  below one already written).
- ``trades``: ``trade_id``, ``time`` (trade time T, ms), ``price``, ``qty``, ``buyer_maker``.
- ``klines``: closed klines only (``x`` true, or back-filled over REST), the columns of spotgym's bar files:
  ``timestamp`` (open time, ms), ``open``, ``high``, ``low``, ``close``, ``volume``.
- ``manifest.json``: symbol, streams, interval, source URLs, sessions, every file with its rows, row counts,
  gaps (per stream, plus a log of the last ones), resyncs, reconnects, duplicates. Rewritten after every
  file; a second recording into the same DIR (same symbol and interval) adds to it.

``load_recording(dir)`` reads it all back (``Recording``) and ``rebuild_book(recording, at_ms)`` replays
the latest snapshot and the diffs after it up to ``at_ms``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from spotgym.data.timeframes import timeframe_to_ms

if TYPE_CHECKING:  # imported where used: the CLI builds its parser from this module on every start
    import pandas as pd
    import pyarrow as pa

__all__ = [
    "FILE_KINDS",
    "RECORD_STREAMS",
    "DepthDiff",
    "LocalBook",
    "RecordError",
    "Recorder",
    "Recording",
    "RotatingWriter",
    "add_record_command",
    "load_recording",
    "rebuild_book",
    "record",
]

log = logging.getLogger(__name__)

RECORD_STREAMS: tuple[str, ...] = ("book", "trades", "klines")
FILE_KINDS: tuple[str, ...] = ("book_snapshots", "book_diffs", "trades", "klines")
KLINE_INTERVALS: tuple[str, ...] = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
                                    "3d", "1w")
WS_BASES = {"live": "wss://stream.binance.com:9443", "testnet": "wss://stream.testnet.binance.vision"}
SNAPSHOT_LIMIT = 1000
KLINES_LIMIT = 1000
DEFAULT_ROTATE_MINUTES = 60.0
DEFAULT_ROTATE_ROWS = 250_000
MANIFEST = "manifest.json"
GAP_LOG_MAX = 1000
MANIFEST_FORMAT = 1

_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "book_snapshots": (("snapshot_id", "int64"), ("last_update_id", "int64"), ("local_ms", "int64"),
                       ("side", "string"), ("price", "float64"), ("qty", "float64")),
    "book_diffs": (("time", "int64"), ("first_update_id", "int64"), ("last_update_id", "int64"),
                   ("local_ms", "int64"), ("side", "string"), ("price", "float64"), ("qty", "float64")),
    "trades": (("trade_id", "int64"), ("time", "int64"), ("price", "float64"), ("qty", "float64"),
               ("buyer_maker", "bool_")),
    "klines": (("timestamp", "int64"), ("open", "float64"), ("high", "float64"), ("low", "float64"),
               ("close", "float64"), ("volume", "float64")),
}


@cache
def _schema(kind: str) -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind_)()) for name, kind_ in _COLUMNS[kind]])


_STREAM_FILES = {"book": ("book_snapshots", "book_diffs"), "trades": ("trades",), "klines": ("klines",)}


class RecordError(ValueError):
    """Bad input (symbol, streams, flags, output folder) or an exchange that refuses the recording."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------- the local order book
@dataclass(frozen=True)
class DepthDiff:
    """One ``depthUpdate`` event: event time, first (U) and last (u) update id, changed levels (qty 0: gone)."""

    time: int
    first_id: int
    last_id: int
    bids: tuple[tuple[float, float], ...] = ()
    asks: tuple[tuple[float, float], ...] = ()

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> DepthDiff:
        return cls(int(event["E"]), int(event["U"]), int(event["u"]),
                   tuple((float(p), float(q)) for p, q in event.get("b") or ()),
                   tuple((float(p), float(q)) for p, q in event.get("a") or ()))


class LocalBook:
    """A local order book kept in sync from a REST snapshot and the websocket diff stream (Binance's procedure).

    Feed every diff to ``on_diff`` and every snapshot to ``on_snapshot``; both say what happened:

    - ``on_diff``: "buffered" (no snapshot yet), "applied", "stale" (u at or below the book's update id: a
      duplicate or a diff the snapshot holds, ignored) or "gap" (its U skips ids: the book is dropped, the
      diff buffered, a new snapshot is needed).
    - ``on_snapshot``: "synced" (the buffered diffs after it are applied), "stale" (the snapshot is older than
      the first buffered diff it would need: fetch another; the buffer is kept) or "gap" (the buffer itself
      skips ids after the snapshot: fetch another).

    ``max_buffer`` diffs are kept while unsynced (the oldest dropped first: the next snapshot is then "stale"
    and another is fetched). ``gaps`` counts gaps, ``gap_log`` records them (update id expected, U received,
    event time).
    """

    def __init__(self, max_buffer: int = 50_000) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.last_update_id: int | None = None
        self.buffer: deque[DepthDiff] = deque(maxlen=max_buffer)
        self.gaps = 0
        self.stale = 0
        self.applied = 0
        self.gap_log: list[dict[str, int]] = []

    @property
    def synced(self) -> bool:
        return self.last_update_id is not None

    def reset(self) -> None:
        """Drop the book and the buffer: unsynced until the next snapshot."""
        self.bids, self.asks = {}, {}
        self.last_update_id = None
        self.buffer.clear()

    def on_diff(self, diff: DepthDiff) -> str:
        if self.last_update_id is None:
            self.buffer.append(diff)
            return "buffered"
        if diff.last_id <= self.last_update_id:
            self.stale += 1
            return "stale"
        if diff.first_id > self.last_update_id + 1:
            self.gaps += 1
            self.gap_log.append({"expected": self.last_update_id + 1, "got": diff.first_id, "time": diff.time})
            del self.gap_log[:-GAP_LOG_MAX]
            self.reset()
            self.buffer.append(diff)
            return "gap"
        self._apply(diff)
        return "applied"

    def on_snapshot(self, last_update_id: int, bids: Iterable[tuple[float, float]],
                    asks: Iterable[tuple[float, float]]) -> str:
        pending = [d for d in self.buffer if d.last_id > last_update_id]
        if pending and pending[0].first_id > last_update_id + 1:
            return "stale"
        self.buffer.clear()
        self.bids = {float(p): float(q) for p, q in bids if float(q) > 0}
        self.asks = {float(p): float(q) for p, q in asks if float(q) > 0}
        self.last_update_id = int(last_update_id)
        for i, diff in enumerate(pending):
            if self.on_diff(diff) == "gap":
                self.buffer.extend(pending[i + 1:])
                return "gap"
        return "synced"

    def _apply(self, diff: DepthDiff) -> None:
        for book, levels in ((self.bids, diff.bids), (self.asks, diff.asks)):
            for price, qty in levels:
                if qty > 0:
                    book[price] = qty
                else:
                    book.pop(price, None)
        self.last_update_id = diff.last_id
        self.applied += 1

    def top(self, depth: int | None = 20) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``depth`` bids (highest first) and asks (lowest first)."""
        bids = sorted(self.bids.items(), key=lambda kv: -kv[0])
        asks = sorted(self.asks.items())
        return (bids, asks) if depth is None else (bids[:depth], asks[:depth])


# ---------------------------------------------------------------------- rotating parquet files
class RotatingWriter:
    """Rows of one file kind, buffered and written as ``<kind>-<UTC start>.parquet`` when the period ends."""

    def __init__(self, kind: str, out: Path, rotate_s: float, rotate_rows: int,
                 on_file: Callable[[str, dict[str, Any]], None], clock: Callable[[], float] = time.time) -> None:
        self.kind = kind
        self.schema = _schema(kind)
        self.out = out
        self.rotate_s = float(rotate_s)
        self.rotate_rows = int(rotate_rows)
        self.on_file = on_file
        self.clock = clock
        self.columns: list[list[Any]] = [[] for _ in self.schema.names]
        self.started: float | None = None  # wall time of the period's first row
        self.rows_written = 0

    @property
    def pending(self) -> int:
        return len(self.columns[0])

    def add(self, *row: Any) -> None:
        if self.started is None:
            self.started = self.clock()
        for column, value in zip(self.columns, row, strict=True):
            column.append(value)

    def due(self) -> bool:
        return self.started is not None and (self.pending >= self.rotate_rows or
                                             self.clock() - self.started >= self.rotate_s)

    def flush(self) -> Path | None:
        """Write the buffered rows to a new file (None when there are none)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending:
            self.started = None
            return None
        stamp = datetime.fromtimestamp(self.started, UTC).strftime("%Y%m%dT%H%M%S")
        path = self.out / f"{self.kind}-{stamp}.parquet"
        n = 1
        while path.exists():
            path = self.out / f"{self.kind}-{stamp}-{n}.parquet"
            n += 1
        table = pa.Table.from_arrays([pa.array(c, type=f.type) for c, f in zip(self.columns, self.schema, strict=True)],
                                     schema=self.schema)
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
        rows = self.pending
        self.rows_written += rows
        info = {"file": path.name, "rows": rows, "started": _iso(self.started), "closed": _iso(self.clock())}
        self.columns = [[] for _ in self.schema.names]
        self.started = None
        self.on_file(self.kind, info)
        return path


# ---------------------------------------------------------------------- the recorder
def _parse_streams(streams: str | Iterable[str]) -> tuple[str, ...]:
    items = [s.strip().lower() for s in (streams.split(",") if isinstance(streams, str) else streams)]
    items = [s for s in items if s]
    if not items:
        raise RecordError(f"--streams: give at least one of {', '.join(RECORD_STREAMS)}")
    unknown = [s for s in items if s not in RECORD_STREAMS]
    if unknown:
        raise RecordError(f"--streams: unknown stream(s) {', '.join(repr(s) for s in unknown)}; "
                          f"choose from {', '.join(RECORD_STREAMS)} (comma separated)")
    return tuple(s for s in RECORD_STREAMS if s in items)


def _parse_symbol(symbol: str) -> tuple[str, str]:
    base, sep, quote = str(symbol).strip().upper().partition("/")
    if not sep or not base.isalnum() or not quote.isalnum():
        raise RecordError(f"--symbol {symbol!r}: expected BASE/QUOTE, e.g. ETH/USDT")
    return f"{base}/{quote}", base + quote


class Recorder:
    """Records ``streams`` of ``symbol`` into ``out`` (see the module doc) until stopped.

    ``run(duration)`` blocks (its own event loop) until ``duration`` seconds have passed or ``stop()`` is
    called (from any thread, or by SIGINT / SIGTERM with ``handle_signals``); everything buffered is written
    before it returns the manifest. ``ready`` is set once the streams are connected and the book is synced.
    ``sim_url`` records from a replay server (``spotgym sim serve``), ``testnet`` from Binance's testnet.
    ``backoff``: the first and the longest wait between reconnection attempts (s).
    """

    def __init__(self, symbol: str, out: str | os.PathLike, *, streams: str | Iterable[str] = RECORD_STREAMS,
                 exchange: str = "binance", testnet: bool = False, sim_url: str | None = None, interval: str = "1m",
                 rotate_minutes: float = DEFAULT_ROTATE_MINUTES, rotate_rows: int = DEFAULT_ROTATE_ROWS,
                 backoff: tuple[float, float] = (1.0, 60.0), snapshot_limit: int = SNAPSHOT_LIMIT) -> None:
        self.symbol, self.market_id = _parse_symbol(symbol)
        self.streams = _parse_streams(streams)
        if exchange != "binance":
            raise RecordError(f"--exchange {exchange!r}: only binance (and its testnet / a replay server) is "
                              "supported: the recorder speaks Binance's stream protocol")
        if testnet and sim_url:
            raise RecordError("--testnet and --sim-url exclude each other")
        if interval not in KLINE_INTERVALS:
            raise RecordError(f"--interval {interval!r}: one of Binance's kline intervals {', '.join(KLINE_INTERVALS)}")
        if not (isinstance(rotate_minutes, int | float) and math.isfinite(rotate_minutes) and rotate_minutes > 0):
            raise RecordError(f"--rotate-minutes must be > 0, got {rotate_minutes!r}")
        if not (isinstance(rotate_rows, int) and rotate_rows >= 1):
            raise RecordError(f"--rotate-rows must be an integer >= 1, got {rotate_rows!r}")
        if not (0 < backoff[0] <= backoff[1]):
            raise RecordError(f"backoff must be (first, longest) with 0 < first <= longest, got {backoff!r}")
        self.exchange = exchange
        self.interval = interval
        self.interval_ms = timeframe_to_ms(interval)
        self.rotate_s = float(rotate_minutes) * 60.0
        self.rotate_rows = rotate_rows
        self.backoff = (float(backoff[0]), float(backoff[1]))
        self.snapshot_limit = int(snapshot_limit)
        if sim_url is not None:
            parts = urlsplit(sim_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise RecordError(f"--sim-url {sim_url!r}: expected http://HOST:PORT")
            self.mode = "sim"
            self.sim_url = sim_url.rstrip("/")
            ws_base = ("wss" if parts.scheme == "https" else "ws") + "://" + parts.netloc + parts.path.rstrip("/")
        else:
            self.mode = "testnet" if testnet else "live"
            self.sim_url = None
            ws_base = WS_BASES[self.mode]
        lower = self.market_id.lower()
        names = {"book": f"{lower}@depth@100ms", "trades": f"{lower}@trade", "klines": f"{lower}@kline_{interval}"}
        self.ws_url = f"{ws_base}/stream?streams=" + "/".join(names[s] for s in self.streams)

        self.out = Path(out).expanduser()
        if self.out.exists() and not self.out.is_dir():
            raise RecordError(f"--out {self.out}: exists and is not a directory")
        self.manifest = self._open_manifest()

        self.book = LocalBook()
        self.ready = threading.Event()
        self.connected = False
        self.error: BaseException | None = None
        self.writers: dict[str, RotatingWriter] = {}
        self.rest_url: str | None = None
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._fatal: BaseException | None = None
        self._helpers: set[asyncio.Task] = set()
        self._snapshot_task: asyncio.Task | None = None
        self._rest_lock: asyncio.Lock | None = None
        self._max_diff_u: int | None = None
        self._last_trade: int | None = None
        self._last_kline: int | None = self.manifest.get("last_kline")
        self._klines_seen: set[int] = set()
        self._snapshot_ids = int(self.manifest.get("next_snapshot_id", 0))
        self._connections = 0  # websocket connections opened by this run
        self._got_message = False  # on the current connection

    # ------------------------------------------------------------------ manifest
    def _open_manifest(self) -> dict[str, Any]:
        path = self.out / MANIFEST
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise RecordError(f"--out {self.out}: unreadable {MANIFEST} ({exc}); choose another folder") from None
            if (old.get("symbol"), old.get("interval"), old.get("mode")) != (self.symbol, self.interval, self.mode):
                raise RecordError(f"--out {self.out} holds a recording of {old.get('symbol')} ({old.get('interval')}, "
                                  f"from {old.get('mode')}); choose another folder for {self.symbol} ({self.interval}, "
                                  f"from {self.mode})")
            old["streams"] = [s for s in RECORD_STREAMS if s in set(old.get("streams", [])) | set(self.streams)]
            return old
        return {"format": MANIFEST_FORMAT, "symbol": self.symbol, "market_id": self.market_id,
                "streams": list(self.streams), "interval": self.interval, "exchange": self.exchange,
                "mode": self.mode, "source": {}, "sessions": [], "files": {k: [] for k in FILE_KINDS},
                "counts": dict.fromkeys(FILE_KINDS, 0),
                "events": {"depth": 0, "snapshots": 0, "trades": 0, "klines": 0, "klines_backfilled": 0},
                "gaps": {"book": 0, "trades": 0, "klines": 0}, "missing_trades": 0, "missing_klines": 0,
                "duplicates": {"book": 0, "trades": 0, "klines": 0}, "resyncs": 0, "reconnects": 0,
                "snapshots_stale": 0, "bad_messages": 0, "gap_log": [], "last_kline": None, "next_snapshot_id": 0}

    def _write_manifest(self, final: bool = False) -> None:
        m = self.manifest
        m["last_kline"] = self._last_kline
        m["next_snapshot_id"] = self._snapshot_ids
        if final and m["sessions"]:
            m["sessions"][-1]["stopped"] = _iso(time.time())
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(m, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.out / MANIFEST)

    def _on_file(self, kind: str, info: dict[str, Any]) -> None:
        m = self.manifest
        m["files"].setdefault(kind, []).append(info)
        m["counts"][kind] = m["counts"].get(kind, 0) + info["rows"]
        self._write_manifest()
        counts = ", ".join(f"{k} {m['counts'].get(k, 0):,}" for k in self._kinds())
        gaps = ", ".join(f"{k} {v}" for k, v in m["gaps"].items())
        log.info("record: %s (%s rows); totals: %s; gaps: %s; resyncs %d, reconnects %d", info["file"],
                 f"{info['rows']:,}", counts, gaps, m["resyncs"], m["reconnects"])

    def _note_gap(self, stream: str, **what: Any) -> None:
        m = self.manifest
        m["gaps"][stream] += 1
        m["gap_log"].append({"stream": stream, "local": _iso(time.time()), **what})
        del m["gap_log"][:-GAP_LOG_MAX]
        log.warning("record: %s gap %s", stream, ", ".join(f"{k}={v}" for k, v in what.items()))

    def _kinds(self) -> list[str]:
        return [k for s in self.streams for k in _STREAM_FILES[s]]

    @property
    def stats(self) -> dict[str, Any]:
        """Counts so far (a copy of the manifest's counters, rows buffered included)."""
        m = self.manifest
        rows = {k: m["counts"].get(k, 0) + (self.writers[k].pending if k in self.writers else 0) for k in FILE_KINDS}
        return {"rows": rows, "events": dict(m["events"]), "gaps": dict(m["gaps"]), "resyncs": m["resyncs"],
                "reconnects": m["reconnects"], "duplicates": dict(m["duplicates"]),
                "connections": self._connections, "synced": self.book.synced,
                "last_update_id": self.book.last_update_id, "last_trade_id": self._last_trade,
                "last_kline": self._last_kline}

    # ------------------------------------------------------------------ control
    def stop(self) -> None:
        """Stop recording (thread-safe); ``run`` writes what is buffered and returns."""
        self._stop_requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    def run(self, duration: float | None = None, *, handle_signals: bool = False) -> dict[str, Any]:
        """Record until stopped or ``duration`` seconds have passed; returns the manifest."""
        try:
            return asyncio.run(self.arun(duration, handle_signals=handle_signals))
        except BaseException as exc:
            self.error = exc
            raise

    async def arun(self, duration: float | None = None, *, handle_signals: bool = False) -> dict[str, Any]:
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise RecordError(f"--duration must be > 0 seconds, got {duration!r}")
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._rest_lock = asyncio.Lock()
        if self._stop_requested:
            self._stop.set()
        signals: list[int] = []
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self._loop.add_signal_handler(sig, self.stop)
                    signals.append(sig)
        timer = self._loop.call_later(duration, self._stop.set) if duration is not None else None
        ticker: asyncio.Task | None = None
        started = False
        try:
            self._client = await asyncio.to_thread(self._make_client)
            await self._check_symbol()
            self.out.mkdir(parents=True, exist_ok=True)
            self.writers = {k: RotatingWriter(k, self.out, self.rotate_s, self.rotate_rows, self._on_file)
                            for k in self._kinds()}
            self.manifest["source"] = {"ws": self.ws_url, "rest": self.rest_url}
            self.manifest["sessions"].append({"started": _iso(time.time()), "stopped": None,
                                              "streams": list(self.streams)})
            started = True
            ticker = asyncio.get_running_loop().create_task(self._rotate_ticker())
            await self._connect_loop()
        finally:
            if timer is not None:
                timer.cancel()
            for sig in signals:
                with contextlib.suppress(Exception):
                    self._loop.remove_signal_handler(sig)
            tasks = [t for t in (ticker, *self._helpers) if t is not None]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            if started:
                for writer in self.writers.values():
                    writer.flush()
                self._write_manifest(final=True)
            with contextlib.suppress(Exception):  # the REST client's HTTP session
                self._client.session.close()
            self._loop = None
        if self._fatal is not None:
            raise self._fatal
        return self.manifest

    def _make_client(self) -> Any:
        from spotgym.venue import make_exchange

        try:
            client = make_exchange(self.exchange, mode=self.mode, sim_url=self.sim_url)
        except ValueError as exc:
            raise RecordError(str(exc)) from None
        self.rest_url = client.urls["api"].get("public")
        return client

    async def _rest(self, method: str, params: dict[str, Any]) -> Any:
        assert self._rest_lock is not None
        async with self._rest_lock:
            return await asyncio.to_thread(getattr(self._client, method), params)

    async def _check_symbol(self) -> None:
        """The symbol must exist (a clear error before anything is opened); the REST API must answer."""
        import ccxt

        try:
            info = await self._rest("publicGetExchangeInfo", {"symbol": self.market_id})
        except ccxt.BadRequest as exc:  # Binance: -1121 Invalid symbol
            raise RecordError(f"{self.symbol}: not a symbol of {self.rest_url} ({exc})") from None
        except ccxt.BaseError as exc:
            raise RecordError(f"cannot reach {self.rest_url}: {type(exc).__name__}: {exc}") from None
        ids = {s.get("symbol") for s in (info or {}).get("symbols", [])}
        if self.market_id not in ids:
            raise RecordError(f"{self.symbol}: not a symbol of {self.rest_url}")

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when stopped."""
        assert self._stop is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def _rotate_ticker(self) -> None:
        period = min(1.0, max(self.rotate_s / 4, 0.01))
        while True:
            await asyncio.sleep(period)
            for writer in self.writers.values():
                if writer.due():
                    writer.flush()

    # ------------------------------------------------------------------ connections
    async def _connect_loop(self) -> None:
        from websockets.exceptions import InvalidURI, WebSocketException

        assert self._stop is not None
        delay = self.backoff[0]
        while not self._stop.is_set():
            try:
                await self._session()
            except (OSError, TimeoutError, WebSocketException) as exc:
                if isinstance(exc, InvalidURI) or not self._connections:
                    raise RecordError(f"cannot connect to {self.ws_url}: {type(exc).__name__}: {exc}") from None
                log.warning("record: websocket failed (%s: %s)", type(exc).__name__, exc)
            if self._got_message:  # the connection worked for a while: start the backoff over
                delay = self.backoff[0]
            if self._stop.is_set():
                break
            self.manifest["reconnects"] += 1
            log.warning("record: disconnected; reconnecting in %.3g s", delay)
            if await self._sleep_or_stop(delay):
                break
            delay = min(delay * 2, self.backoff[1])

    async def _session(self) -> None:
        from websockets.asyncio.client import connect

        assert self._stop is not None
        self._got_message = False
        async with connect(self.ws_url, open_timeout=10, close_timeout=2, max_size=None, ping_interval=20,
                           ping_timeout=20) as ws:
            self._connections += 1
            self.connected = True
            log.info("record: connected to %s", self.ws_url)
            try:
                self._on_connected()
                reader = asyncio.get_running_loop().create_task(self._read(ws))
                stopper = asyncio.get_running_loop().create_task(self._stop.wait())
                try:
                    done, _ = await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (reader, stopper):
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                if reader in done and reader.exception() is not None:
                    raise reader.exception()
            finally:
                self.connected = False
                for task in list(self._helpers):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._helpers.add(task)
        task.add_done_callback(self._helper_done)
        return task

    def _helper_done(self, task: asyncio.Task) -> None:
        self._helpers.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self._fatal is None:
            self._fatal = exc if isinstance(exc, RecordError) else RecordError(f"{type(exc).__name__}: {exc}")
            if self._stop is not None:
                self._stop.set()

    def _on_connected(self) -> None:
        """A new connection: a fresh book from a new snapshot, the closed klines missed fetched over REST."""
        if "book" in self.streams:
            self.book.reset()
            self._snapshot_task = self._spawn(self._sync_book("start" if self._connections == 1 else "reconnect"))
        elif not self.ready.is_set():
            self.ready.set()
        if "klines" in self.streams and self._last_kline is not None:
            self._spawn(self._backfill_klines(self._last_kline + self.interval_ms, None))

    async def _read(self, ws: Any) -> None:
        async for message in ws:
            self._got_message = True
            try:
                self._handle(json.loads(message))
            except RecordError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                self.manifest["bad_messages"] += 1
                log.warning("record: unreadable message skipped (%s: %s): %.200s", type(exc).__name__, exc, message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        if "error" in message:
            raise RecordError(f"the exchange refused the streams {self.ws_url}: {message['error']}")
        if "result" in message and "id" in message:
            return  # a reply to a control message
        data = message.get("data", message)
        kind = data.get("e")
        if kind == "depthUpdate":
            self._on_depth(data)
        elif kind == "trade":
            self._on_trade(data)
        elif kind == "kline":
            self._on_kline(data)

    # ------------------------------------------------------------------ the book
    def _on_depth(self, event: Mapping[str, Any]) -> None:
        diff = DepthDiff.from_event(event)
        m = self.manifest
        m["events"]["depth"] += 1
        if self._max_diff_u is not None and diff.last_id <= self._max_diff_u:
            m["duplicates"]["book"] += 1
        else:
            self._max_diff_u = diff.last_id
            writer = self.writers["book_diffs"]
            local = _now_ms()
            if not diff.bids and not diff.asks:
                writer.add(diff.time, diff.first_id, diff.last_id, local, "", math.nan, math.nan)
            for side, levels in (("bid", diff.bids), ("ask", diff.asks)):
                for price, qty in levels:
                    writer.add(diff.time, diff.first_id, diff.last_id, local, side, price, qty)
            if writer.due():
                writer.flush()
        before = self.book.gaps
        if self.book.on_diff(diff) == "gap":
            self._book_gaps(before)
            self.manifest["resyncs"] += 1
            self._request_snapshot("gap")

    def _book_gaps(self, before: int) -> None:
        for entry in self.book.gap_log[len(self.book.gap_log) - (self.book.gaps - before):]:
            self._note_gap("book", expected_U=entry["expected"], got_U=entry["got"], time=entry["time"])

    def _request_snapshot(self, reason: str) -> None:
        if self._snapshot_task is None or self._snapshot_task.done():
            self._snapshot_task = self._spawn(self._sync_book(reason))

    async def _sync_book(self, reason: str) -> None:
        import ccxt

        delay = 0.1
        while True:
            try:
                raw = await self._rest("publicGetDepth", {"symbol": self.market_id, "limit": self.snapshot_limit})
            except ccxt.OperationFailed as exc:
                log.warning("record: snapshot failed (%s: %s); again in %.3g s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            last = int(raw["lastUpdateId"])
            bids = [(float(p), float(q)) for p, q in raw.get("bids") or ()]
            asks = [(float(p), float(q)) for p, q in raw.get("asks") or ()]
            before = self.book.gaps
            status = self.book.on_snapshot(last, bids, asks)
            if status == "stale":
                self.manifest["snapshots_stale"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._write_snapshot(last, bids, asks)
            if status == "gap":
                self._book_gaps(before)
                self.manifest["resyncs"] += 1
                continue
            log.info("record: book synced at update id %d (%s)", last, reason)
            self.ready.set()
            return

    def _write_snapshot(self, last: int, bids: Sequence[tuple[float, float]],
                        asks: Sequence[tuple[float, float]]) -> None:
        writer = self.writers["book_snapshots"]
        sid, local = self._snapshot_ids, _now_ms()
        self._snapshot_ids += 1
        self.manifest["events"]["snapshots"] += 1
        if not bids and not asks:
            writer.add(sid, last, local, "", math.nan, math.nan)
        for side, levels in (("bid", bids), ("ask", asks)):
            for price, qty in levels:
                writer.add(sid, last, local, side, price, qty)
        if writer.due():
            writer.flush()

    # ------------------------------------------------------------------ trades and klines
    def _on_trade(self, event: Mapping[str, Any]) -> None:
        tid = int(event["t"])
        m = self.manifest
        last = self._last_trade
        if last is not None and tid <= last:
            m["duplicates"]["trades"] += 1
            return
        if last is not None and tid > last + 1:
            m["missing_trades"] += tid - last - 1
            self._note_gap("trades", after_id=last, got_id=tid, time=int(event.get("T", event.get("E", 0))))
        self._last_trade = tid
        m["events"]["trades"] += 1
        writer = self.writers["trades"]
        writer.add(tid, int(event["T"]), float(event["p"]), float(event["q"]), bool(event["m"]))
        if writer.due():
            writer.flush()

    def _on_kline(self, event: Mapping[str, Any]) -> None:
        k = event["k"]
        if not k.get("x"):
            return
        t = int(k["t"])
        if t in self._klines_seen or (self._last_kline is not None and t <= self._last_kline):
            self.manifest["duplicates"]["klines"] += 1
            return
        if self._last_kline is not None and t > self._last_kline + self.interval_ms:
            start = self._last_kline + self.interval_ms
            self._note_gap("klines", after=self._last_kline, got=t)
            self.manifest["missing_klines"] += (t - start) // self.interval_ms
            self._spawn(self._backfill_klines(start, t - 1))
        self._add_kline(t, float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]), float(k["v"]))
        self.manifest["events"]["klines"] += 1

    def _add_kline(self, t: int, *ohlcv: float) -> bool:
        if t in self._klines_seen:
            return False
        self._klines_seen.add(t)
        self._last_kline = t if self._last_kline is None else max(self._last_kline, t)
        writer = self.writers["klines"]
        writer.add(t, *ohlcv)
        if writer.due():
            writer.flush()
        return True

    async def _backfill_klines(self, start: int, end: int | None) -> None:
        """The closed klines opening in [start, end] over REST (``end`` None: up to now; the newest row, which
        may still be open, is left to the stream)."""
        import ccxt

        delay = 0.1
        added = 0
        while True:
            params = {"symbol": self.market_id, "interval": self.interval, "startTime": start, "limit": KLINES_LIMIT}
            if end is not None:
                params["endTime"] = end
            try:
                rows = await self._rest("publicGetKlines", params)
            except ccxt.OperationFailed as exc:
                log.warning("record: kline back-fill failed (%s: %s); again in %.3g s", type(exc).__name__, exc,
                            delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
                continue
            rows = list(rows or [])
            more = len(rows) >= KLINES_LIMIT
            if end is None and not more and rows:
                rows = rows[:-1]  # the current kline: not closed yet (the stream sends it when it closes)
            for row in rows:
                t = int(row[0])
                if end is not None and t > end:
                    continue
                if self._add_kline(t, *(float(x) for x in row[1:6])):
                    added += 1
            if not more or not rows:
                break
            start = int(rows[-1][0]) + self.interval_ms
        if added:
            self.manifest["events"]["klines_backfilled"] += added
            log.info("record: %d closed kline(s) back-filled over REST", added)


def record(symbol: str, out: str | os.PathLike, *, duration: float | None = None, handle_signals: bool = False,
           **kwargs: Any) -> dict[str, Any]:
    """``Recorder(symbol, out, **kwargs).run(duration)``: record and return the manifest."""
    return Recorder(symbol, out, **kwargs).run(duration, handle_signals=handle_signals)


# ---------------------------------------------------------------------- loading
@dataclass
class Recording:
    """A recording read back: one DataFrame per file kind (every file concatenated, ordered) and the manifest.

    ``book_snapshots`` by snapshot id, ``book_diffs`` by last update id (arrival order within), ``trades`` by
    trade id, ``klines`` by open time without duplicates (the layout of spotgym's bar files).
    """

    book_snapshots: pd.DataFrame
    book_diffs: pd.DataFrame
    trades: pd.DataFrame
    klines: pd.DataFrame
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def _read_kind(root: Path, kind: str, listed: Sequence[str]) -> pd.DataFrame:
    import pandas as pd
    import pyarrow.parquet as pq

    names = list(dict.fromkeys([*listed, *sorted(p.name for p in root.glob(f"{kind}-*.parquet"))]))
    schema = _schema(kind)
    frames = []
    for name in names:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"{root}: {name} is listed in {MANIFEST} but missing")
        try:
            frames.append(pq.read_table(path, schema=schema).to_pandas())
        except Exception as exc:
            raise ValueError(f"{path}: not a readable {kind} file ({type(exc).__name__}: {exc})") from exc
    if not frames:
        return schema.empty_table().to_pandas()
    return pd.concat(frames, ignore_index=True)


def load_recording(path: str | os.PathLike) -> Recording:
    """Read a folder written by ``spotgym data record`` (its ``manifest.json`` and parquet files)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"recording {root} does not exist or is not a folder")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{root} holds no {MANIFEST}: not a recording of `spotgym data record`")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{manifest_path}: not valid JSON ({exc})") from None
    files = manifest.get("files", {})
    frames = {k: _read_kind(root, k, [f["file"] for f in files.get(k, [])]) for k in FILE_KINDS}
    snaps = frames["book_snapshots"].sort_values("snapshot_id", kind="stable", ignore_index=True)
    diffs = frames["book_diffs"].sort_values("last_update_id", kind="stable", ignore_index=True)
    trades = frames["trades"].drop_duplicates("trade_id", keep="last").sort_values("trade_id", ignore_index=True)
    klines = frames["klines"].drop_duplicates("timestamp", keep="last").sort_values("timestamp", ignore_index=True)
    return Recording(snaps, diffs, trades, klines, manifest, root)


def rebuild_book(recording: Recording, at_ms: int | None = None,
                 depth: int | None = 20) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The order book as the recording knows it after the last depth event at or before ``at_ms`` (event time;
    default: the end), from the latest snapshot at or before it and the diffs after that snapshot.

    Returns (bids highest first, asks lowest first), each with columns ``price``, ``qty``, ``depth`` levels
    (None: all). ValueError when the recording holds no snapshot for that instant, or when update ids are
    missing between the snapshot and ``at_ms`` (the recorder lost them and had not resynced yet).
    """
    import numpy as np
    import pandas as pd

    snaps, diffs = recording.book_snapshots, recording.book_diffs
    if snaps.empty:
        raise ValueError("the recording holds no book snapshot (was 'book' among its streams?)")
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1 or None, got {depth}")
    if at_ms is None:
        upto = diffs.iloc[:0] if diffs.empty else diffs
        target = max(int(snaps["last_update_id"].max()), int(diffs["last_update_id"].max()) if len(diffs) else -1)
    else:
        upto = diffs[diffs["time"] <= at_ms]
        if upto.empty:
            raise ValueError(f"no depth event at or before {at_ms}: the recording's book starts later")
        target = int(upto["last_update_id"].max())
    ids = snaps["last_update_id"].to_numpy(np.int64)
    usable = ids <= target
    if not usable.any():
        raise ValueError(f"no snapshot at or before update id {target} (at_ms={at_ms}): the book was not synced yet")
    snap_id = int(snaps["snapshot_id"].to_numpy(np.int64)[usable][np.argmax(ids[usable])])
    snap = snaps[snaps["snapshot_id"] == snap_id]
    lid = int(snap["last_update_id"].iat[0])
    after = upto[(upto["last_update_id"] > lid) & (upto["last_update_id"] <= target)]
    events = after.drop_duplicates("last_update_id")
    first = events["first_update_id"].to_numpy(np.int64)
    last = events["last_update_id"].to_numpy(np.int64)
    if len(events):
        previous = np.r_[lid, last[:-1]]
        bad = np.flatnonzero(first > previous + 1)
        if len(bad):
            j = int(bad[0])
            raise ValueError(f"update ids {int(previous[j]) + 1}..{int(first[j]) - 1} are missing before the event at "
                             f"{int(events['time'].iat[j])} (snapshot at update id {lid}); the recorder resynced "
                             "only after the instant asked for")
    levels = pd.concat([snap[["side", "price", "qty"]], after[["side", "price", "qty"]]], ignore_index=True)
    levels = levels[levels["side"] != ""].drop_duplicates(["side", "price"], keep="last")
    levels = levels[levels["qty"] > 0]
    bids = levels[levels["side"] == "bid"].sort_values("price", ascending=False)[["price", "qty"]]
    asks = levels[levels["side"] == "ask"].sort_values("price")[["price", "qty"]]
    if depth is not None:
        bids, asks = bids.head(depth), asks.head(depth)
    return bids.reset_index(drop=True), asks.reset_index(drop=True)


# ---------------------------------------------------------------------- the CLI
def _data_record(args: argparse.Namespace) -> int:
    """``spotgym data record``: problems are one ``error: ...`` line on stderr and exit status 2."""
    try:
        recorder = Recorder(args.symbol, args.out, streams=args.streams, exchange=args.exchange,
                            testnet=args.testnet, sim_url=args.sim_url, interval=args.interval,
                            rotate_minutes=args.rotate_minutes, rotate_rows=args.rotate_rows)
        if args.duration is not None and not (math.isfinite(args.duration) and args.duration > 0):
            raise RecordError(f"--duration must be > 0 seconds, got {args.duration:g}")
        if not logging.getLogger().handlers and not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
            log.addHandler(handler)
            log.setLevel(logging.INFO)
        print(f"record: {recorder.symbol} {','.join(recorder.streams)} from {recorder.ws_url} into {recorder.out} "
              f"({'for ' + format(args.duration, 'g') + ' s' if args.duration else 'until interrupted'})", flush=True)
        manifest = recorder.run(args.duration, handle_signals=True)
    except (RecordError, ValueError, OSError) as exc:
        if os.environ.get("SPOTGYM_TRACEBACK"):
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {manifest['counts'].get(k, 0):,}" for k in FILE_KINDS if manifest["counts"].get(k))
    files = sum(len(v) for v in manifest["files"].values())
    gaps = ", ".join(f"{k} {v}" for k, v in manifest["gaps"].items())
    print(f"{recorder.out}: {files} file(s), rows: {counts or 'none'}; gaps: {gaps}; resyncs {manifest['resyncs']}, "
          f"reconnects {manifest['reconnects']} ({recorder.out / MANIFEST})")
    return 0


def add_record_command(data_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``record`` to the ``spotgym data`` subcommands (``data_sub`` in spotgym/cli.py)."""
    rec = data_subparsers.add_parser(
        "record", help="record the live order book, trades and closed klines to rotating parquet files",
        description="Record one Binance spot symbol over one combined websocket: the order book (REST snapshot + "
                    "diff stream, rebuilt locally, checked for sequence gaps and resynced from a new snapshot on a "
                    "gap), trades and closed klines, into DIR as <kind>-<UTC start>.parquet files rotated every "
                    "--rotate-minutes or --rotate-rows, plus manifest.json (files, counts, gaps). Stops on "
                    "Ctrl-C / SIGTERM or after --duration, writing everything buffered; reconnects with backoff. "
                    "Load with spotgym.data.record.load_recording(DIR).")
    rec.add_argument("--symbol", required=True, help="market symbol, e.g. ETH/USDT")
    rec.add_argument("--streams", default=",".join(RECORD_STREAMS),
                     help="comma list of book, trades, klines (default all three)")
    rec.add_argument("--out", required=True, metavar="DIR", help="output folder (created; a recording of the same "
                                                                 "symbol there is added to)")
    rec.add_argument("--exchange", default="binance", help="exchange (only binance)")
    rec.add_argument("--testnet", action="store_true", help="record from Binance's spot testnet")
    rec.add_argument("--sim-url", default=None, metavar="URL",
                     help="record from a local replay server (spotgym sim serve) at this URL")
    rec.add_argument("--interval", default="1m", help="kline interval (default 1m)")
    rec.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                     help="stop after this many seconds (default: until interrupted)")
    rec.add_argument("--rotate-minutes", type=float, default=DEFAULT_ROTATE_MINUTES, metavar="MIN",
                     help=f"start new files after this much wall time (default {DEFAULT_ROTATE_MINUTES:g})")
    rec.add_argument("--rotate-rows", type=int, default=DEFAULT_ROTATE_ROWS, metavar="N",
                     help=f"... or once a file holds this many rows (default {DEFAULT_ROTATE_ROWS:,})")
    rec.set_defaults(func=_data_record)
    return rec
