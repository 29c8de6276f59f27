"""Download closed OHLCV bars through ccxt into the local parquet cache: paginated and resumable.

One file per exchange / symbol / timeframe (``spotgym.data.cache.cache_path``). A rerun only asks
for bars after the file's last one. Pages are written atomically (temp file + ``os.replace``) every
``flush_every`` pages and whenever the download stops, failure included, so an interruption keeps
what was fetched and never leaves a torn file. The still-open last candle is never stored.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

import ccxt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from spotgym.data.cache import cache_path
from spotgym.data.timeframes import timeframe_to_ms
from spotgym.data.validate import OHLCV_COLUMNS, REQUIRED_COLUMNS
from spotgym.venue import make_exchange

__all__ = ["DEFAULT_SINCE", "DownloadError", "DownloadResult", "download_ohlcv", "to_ms"]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_SINCE = "2017-08-17"  # Binance spot's first trading day: a fresh cache starts here
# OperationFailed is ccxt's "temporary, retry later" family: NetworkError and its RequestTimeout,
# ExchangeNotAvailable and DDoSProtection / RateLimitExceeded, plus Binance's -1001 / -1008 codes.
RETRYABLE: tuple[type[Exception], ...] = (ccxt.OperationFailed,)
_MS_BEFORE_2001 = 978_307_200_000  # a smaller epoch int is almost surely seconds, not ms


class DownloadError(RuntimeError):
    """The exchange failed (retries exhausted) or rejected a request; fetched pages are kept on disk."""


@dataclass(frozen=True)
class DownloadResult:
    """What a download left in the cache: the file, rows new this run and the file's span.

    ``path`` does not exist (and the span is None) when no bar was ever stored.
    """

    path: Path
    rows_added: int
    rows_total: int
    first_ms: int | None
    last_ms: int | None


def to_ms(value: int | str | datetime | pd.Timestamp) -> int:
    """Epoch ms from an int (ms) or an ISO date / datetime (naive means UTC); ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"since must be epoch ms or an ISO date, got {value!r}")
    if isinstance(value, int | np.integer):
        if 0 < value < _MS_BEFORE_2001:
            raise ValueError(f"since={value} looks like epoch seconds; pass milliseconds ({value * 1000})")
        return int(value)
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"since must be epoch ms or an ISO date like '2024-01-31', got {value!r}") from exc
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return (stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def download_ohlcv(
    symbol: str,
    timeframe: str,
    since: int | str | datetime | None = None,
    *,
    exchange: str = "binance",
    data_dir: str | os.PathLike | None = None,
    client: ccxt.Exchange | None = None,
    progress: bool = True,
    limit: int = 1000,
    max_retries: int = 5,
    retry_delay: float = 1.0,
    flush_every: int = 10,
    now_ms: int | None = None,
) -> DownloadResult:
    """Fetch ``symbol``'s closed ``timeframe`` bars into the cache and return what it holds.

    A fresh cache starts at ``since`` (epoch ms or ISO date; default ``DEFAULT_SINCE``); an existing
    one continues after its last bar (the cache is only extended forward, an earlier ``since`` is
    ignored). Pages of ``limit`` bars go through ccxt's ``fetch_ohlcv`` (its rate limiter spaces
    them) until a page brings nothing new or the next bar would not have closed by ``now_ms``
    (default: the exchange's clock, ``fetch_time``, else the local one); bars still open at that
    instant are dropped. ``RETRYABLE`` errors are retried ``max_retries`` times with exponential
    backoff from ``retry_delay`` seconds. ``client`` defaults to ``make_exchange(exchange)``.

    Raises ValueError for an unknown symbol / timeframe or a bad ``since``, DownloadError when the
    exchange keeps failing or rejects a request (what was fetched until then stays on disk).
    """
    if limit < 1 or max_retries < 0 or flush_every < 1:
        raise ValueError(f"need limit >= 1, max_retries >= 0, flush_every >= 1; got {limit}, {max_retries}, {flush_every}")
    start_ms = to_ms(since if since is not None else DEFAULT_SINCE)
    client = client if client is not None else make_exchange(exchange)

    retrying = _Retry(max_retries, retry_delay)
    if client.timeframes and timeframe not in client.timeframes:
        raise ValueError(f"unknown timeframe {timeframe!r} for {client.id}: expected one of {list(client.timeframes)}")
    tf_ms = timeframe_to_ms(timeframe)
    symbol = _market_symbol(client, symbol, retrying(client.load_markets, f"{client.id} load_markets"))
    store = _BarStore(cache_path(exchange, symbol, timeframe, data_dir))
    if store.last_ms is not None:
        start_ms = max(start_ms, store.last_ms + tf_ms)
    now = now_ms if now_ms is not None else _exchange_now(client, retrying)

    cursor = start_ms
    total = max((now - start_ms) // tf_ms, 0)
    with tqdm(total=total, unit="bar", desc=f"{symbol} {timeframe}", disable=not progress) as bar:
        try:
            pages = 0
            while cursor + tf_ms <= now:  # the next bar has closed by now
                what = f"{client.id} fetch_ohlcv({symbol!r}, {timeframe!r}, since={cursor} ({_iso(cursor)}))"
                page = retrying(partial(client.fetch_ohlcv, symbol, timeframe, since=cursor, limit=limit), what)
                rows = np.asarray(page, dtype=np.float64).reshape(-1, 6)
                stamps = rows[:, 0].astype(np.int64)
                rows = rows[(stamps >= cursor) & (stamps + tf_ms <= now)]  # new and closed only
                if len(rows) == 0:
                    break
                store.add(rows)
                next_cursor = int(rows[:, 0].max()) + tf_ms
                bar.update((next_cursor - cursor) // tf_ms)
                bar.set_postfix_str(_iso(next_cursor - tf_ms), refresh=False)
                cursor = next_cursor
                pages += 1
                if pages % flush_every == 0:
                    store.flush()
        except DownloadError as exc:
            store.flush()
            kept = f"up to {_iso(store.last_ms)}" if store.last_ms is not None else "none"
            raise DownloadError(f"{exc}\nBars kept in {store.path}: {store.rows_total} ({kept}); "
                                "run again to resume.") from exc.__cause__
        finally:
            store.flush()
    return DownloadResult(store.path, store.rows_total - store.rows_before, store.rows_total,
                          store.first_ms, store.last_ms)


class _BarStore:
    """The cache file's bars plus pages fetched since the last write; writes are atomic."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frame = _read_cache(path)
        self.rows_before = len(self.frame)
        self._pending: list[np.ndarray] = []
        self.last_ms: int | None = int(self.frame["timestamp"].iat[-1]) if len(self.frame) else None

    @property
    def rows_total(self) -> int:
        return len(self.frame)

    @property
    def first_ms(self) -> int | None:
        return int(self.frame["timestamp"].iat[0]) if len(self.frame) else None

    def add(self, rows: np.ndarray) -> None:
        """Queue a page of ``(n, 6)`` rows (timestamp + OHLCV)."""
        self._pending.append(rows)
        self.last_ms = max(self.last_ms or 0, int(rows[:, 0].max()))

    def flush(self) -> None:
        """Merge queued pages into the file (dedup by timestamp, sorted) via temp file + os.replace."""
        if not self._pending:
            return
        rows = np.concatenate(self._pending)
        new = pd.DataFrame({"timestamp": rows[:, 0].astype(np.int64),
                            **{name: rows[:, i + 1] for i, name in enumerate(OHLCV_COLUMNS)}})
        frame = pd.concat([self.frame, new], ignore_index=True) if len(self.frame) else new
        frame = frame.drop_duplicates("timestamp", keep="last").sort_values("timestamp", ignore_index=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.frame = frame
        self._pending.clear()


def _read_cache(path: Path) -> pd.DataFrame:
    """The cached bars (empty frame when there is no file), typed as written."""
    if not path.exists():
        return pd.DataFrame({"timestamp": np.empty(0, np.int64), **{c: np.empty(0) for c in OHLCV_COLUMNS}})
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise DownloadError(f"{path} is not a readable parquet bar cache ({exc}); delete it to download afresh") from exc
    if list(frame.columns) != list(REQUIRED_COLUMNS):
        raise DownloadError(f"{path} has columns {list(frame.columns)}, expected {list(REQUIRED_COLUMNS)}; "
                            "delete it to download afresh")
    return frame.astype({"timestamp": np.int64, **{c: np.float64 for c in OHLCV_COLUMNS}})


def _market_symbol(client: ccxt.Exchange, symbol: str, markets: dict) -> str:
    """The unified symbol for ``symbol`` (unified or exchange id); ValueError naming it if unknown."""
    if symbol in markets:
        return symbol
    by_id = client.markets_by_id.get(symbol) if client.markets_by_id else None
    if by_id:
        return by_id[0]["symbol"]
    close = difflib.get_close_matches(symbol.upper(), list(markets), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown symbol {symbol!r} on {client.id} ({len(markets)} markets loaded){hint}")


def _exchange_now(client: ccxt.Exchange, retrying: _Retry) -> int:
    """The exchange's clock in ms (what decides which candle is still open), else the local clock.

    spotgym's replay exchange runs a market clock apart from the wall clock it serves at ``/time`` (the one
    signatures are checked against) and states it in an ``X-Sim-Time`` header: that one decides there."""
    if client.has.get("fetchTime"):
        try:
            server_ms = retrying(client.fetch_time, f"{client.id} fetch_time")
            headers = getattr(client, "last_response_headers", None) or {}
            market_ms = next((v for k, v in headers.items() if k.lower() == "x-sim-time"), None)
            if market_ms is not None:
                return int(market_ms)
            if server_ms is not None:
                return int(server_ms)
        except DownloadError as exc:
            log.warning("using the local clock: %s", exc)
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class _Retry:
    """Calls ``call()``, retrying RETRYABLE errors with exponential backoff; DownloadError when giving up."""

    max_retries: int
    delay: float

    def __call__(self, call: Callable[[], T], what: str) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except RETRYABLE as exc:
                if attempt == self.max_retries:
                    raise DownloadError(f"{what} failed {attempt + 1} times; last error: {exc}") from exc
                wait = self.delay * 2**attempt
                attempt += 1
                log.warning("%s failed (%s); retry %d/%d in %.2f s", what, exc, attempt, self.max_retries, wait)
                time.sleep(wait)
            except ccxt.BaseError as exc:
                raise DownloadError(f"{what} was rejected: {exc}") from exc


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%MZ")
