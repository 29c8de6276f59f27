"""The replay exchange: a Binance-shaped REST server over historical bars (FastAPI).

``ReplayExchange`` holds the market state (symbols, their trading rules, bar series and a clock);
the routes are thin functions that parse Binance's query parameters, call it and shape the reply.
ccxt pointed at this server (``spotgym.exchange.make_exchange(mode="sim", sim_url=...)``) loads
markets and pages klines exactly as it does against api.binance.com. Orders and websockets come later.

The clock decides what exists: klines never returns a bar opening after "now", and the bar that
contains "now" is served still open (partial), as Binance does, so clients must drop it themselves.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import numpy as np
import pandas as pd
import uvicorn
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from spotgym.data.io import read_raw
from spotgym.data.timeframes import timeframe_to_ms
from spotgym.data.validate import OHLCV_COLUMNS, REQUIRED_COLUMNS

__all__ = [
    "BINANCE_INTERVALS",
    "BarSeries",
    "BinanceError",
    "Faults",
    "RecordedRequest",
    "ReplayExchange",
    "SymbolRules",
    "create_app",
    "serve_in_thread",
]

BarsSource = pd.DataFrame | str | os.PathLike
Clock = Callable[[], int]

# Binance spot kline intervals. "1M" (calendar month) has no fixed length and is not replayed.
BINANCE_INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000


class BinanceError(Exception):
    """An error reply in Binance's shape: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.status = code, msg, status

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "msg": self.msg}, status_code=self.status)


@dataclass(frozen=True)
class SymbolRules:
    """A symbol's trading rules, served as the PRICE_FILTER / LOT_SIZE / NOTIONAL filters.

    Decimal strings, as Binance sends them. The defaults are Binance's ETHUSDT rules.
    """

    tick_size: str = "0.01"
    min_price: str = "0.01"
    max_price: str = "1000000"
    step_size: str = "0.0001"
    min_qty: str = "0.0001"
    max_qty: str = "9000"
    min_notional: str = "5"
    max_notional: str = "9000000"

    def __post_init__(self) -> None:
        values = {}
        for name, text in vars(self).items():
            try:
                values[name] = Decimal(text)
            except (InvalidOperation, TypeError):
                raise ValueError(f"SymbolRules.{name} must be a decimal string, got {text!r}") from None
            if not values[name] > 0:
                raise ValueError(f"SymbolRules.{name} must be positive, got {text!r}")
        for low, high in (("min_price", "max_price"), ("min_qty", "max_qty"), ("min_notional", "max_notional")):
            if values[low] > values[high]:
                raise ValueError(f"SymbolRules.{low}={getattr(self, low)} exceeds {high}={getattr(self, high)}")

    def filters(self) -> list[dict[str, Any]]:
        return [
            {"filterType": "PRICE_FILTER", "minPrice": self.min_price, "maxPrice": self.max_price,
             "tickSize": self.tick_size},
            {"filterType": "LOT_SIZE", "minQty": self.min_qty, "maxQty": self.max_qty, "stepSize": self.step_size},
            {"filterType": "NOTIONAL", "minNotional": self.min_notional, "applyMinToMarket": True,
             "maxNotional": self.max_notional, "applyMaxToMarket": False, "avgPriceMins": 5},
        ]


@dataclass(frozen=True, eq=False)
class BarSeries:
    """One symbol's bars at one interval: open times (int64 ms, strictly increasing) and OHLCV."""

    interval: str
    interval_ms: int
    timestamps: np.ndarray
    ohlcv: np.ndarray

    @classmethod
    def from_source(cls, source: BarsSource, interval: str, name: str) -> BarSeries:
        """Validate a DataFrame (or a CSV / parquet path) with ``timestamp`` + OHLCV columns."""
        frame = source if isinstance(source, pd.DataFrame) else read_raw(source)
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"market {name!r}: bars lack columns {missing}")
        timestamps = frame["timestamp"].to_numpy(dtype=np.int64)
        ohlcv = frame[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64)
        interval_ms = timeframe_to_ms(interval)
        if len(timestamps) == 0:
            raise ValueError(f"market {name!r}: no bars")
        if not np.isfinite(ohlcv).all():
            raise ValueError(f"market {name!r}: OHLCV holds NaN or infinite values")
        steps = np.diff(timestamps)
        if (steps <= 0).any():
            raise ValueError(f"market {name!r}: timestamps must be strictly increasing (sorted, no duplicates)")
        if (steps % interval_ms).any():
            raise ValueError(f"market {name!r}: timestamps are not {interval} apart (or whole multiples: gaps)")
        return cls(interval, interval_ms, timestamps, ohlcv)

    def klines(self, start_time: int | None, end_time: int | None, limit: int, now: int) -> list[list[Any]]:
        """Binance's 12-column kline rows, selected as Binance does, never opening after ``now``.

        With ``start_time`` the first ``limit`` bars opening at or after it; otherwise the last
        ``limit`` bars up to ``end_time`` (or now). The bar containing ``now`` is still open: it is
        served partial (close moved linearly from open towards the final close, volume pro rata,
        both rounded to Binance's 8 decimals).
        """
        ts = self.timestamps
        hi = int(np.searchsorted(ts, now, side="right"))
        if end_time is not None:
            hi = min(hi, int(np.searchsorted(ts, end_time, side="right")))
        if start_time is not None:
            lo = int(np.searchsorted(ts, start_time, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(hi - limit, 0)
        rows = []
        for i in range(lo, hi):
            open_time = int(ts[i])
            o, h, low, c, v = self.ohlcv[i]
            if open_time + self.interval_ms > now:
                fraction = (now - open_time) / self.interval_ms
                c = round(o + fraction * (c - o), 8)
                h, low, v = max(o, c), min(o, c), round(v * fraction, 8)
            # Quote volume, trade count and taker volumes are not in OHLCV bars: served as zero.
            rows.append([open_time, _num(o), _num(h), _num(low), _num(c), _num(v),
                         open_time + self.interval_ms - 1, "0", 0, "0", "0", "0"])
        return rows


@dataclass
class SymbolMarket:
    """One spot symbol of the replay exchange: its ids, rules and bar series by interval."""

    symbol: str
    market_id: str
    base: str
    quote: str
    rules: SymbolRules
    series: dict[str, BarSeries] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """This symbol's entry of ``/api/v3/exchangeInfo``."""
        return {
            "symbol": self.market_id, "status": "TRADING",
            "baseAsset": self.base, "baseAssetPrecision": 8,
            "quoteAsset": self.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
            "icebergAllowed": False, "ocoAllowed": False, "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False, "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": self.rules.filters(), "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }


class ReplayExchange:
    """The market state behind the server: spot symbols with bar series, and the clock.

    ``markets`` maps ``"BASE/QUOTE@interval"`` (e.g. ``"ETH/USDT@1h"``) to a DataFrame or a
    CSV / parquet path with ``timestamp`` (open time, ms) and OHLCV columns; give one entry per
    interval to serve. ``now_ms`` is the clock: None for the wall clock, an int for a fixed
    instant, or a callable returning ms. ``rules`` maps ``"BASE/QUOTE"`` to its ``SymbolRules``.
    """

    def __init__(
        self,
        markets: Mapping[str, BarsSource],
        *,
        now_ms: int | Clock | None = None,
        rules: Mapping[str, SymbolRules] | None = None,
    ) -> None:
        if not markets:
            raise ValueError("markets is empty: give at least one 'BASE/QUOTE@interval' -> bars entry")
        rules = dict(rules or {})
        self.symbols: dict[str, SymbolMarket] = {}
        for key, source in markets.items():
            symbol, interval = _parse_market_key(key)
            base, quote = symbol.split("/")
            market = self.symbols.get(base + quote)
            if market is None:
                market = SymbolMarket(symbol, base + quote, base, quote, rules.pop(symbol, SymbolRules()))
                self.symbols[market.market_id] = market
            market.series[interval] = BarSeries.from_source(source, interval, key)
        if rules:
            raise ValueError(f"rules given for symbols without bars: {sorted(rules)}")
        if now_ms is None:
            self._clock: Clock = lambda: time.time_ns() // 1_000_000
        elif callable(now_ms):
            self._clock = now_ms
        else:
            fixed = int(now_ms)
            self._clock = lambda: fixed

    def now(self) -> int:
        """The exchange clock in ms (what ``/api/v3/time`` serves)."""
        return int(self._clock())

    def exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC", "serverTime": self.now(), "rateLimits": [], "exchangeFilters": [],
            "symbols": [market.info() for market in self.symbols.values()],
        }

    def klines(self, symbol: str, interval: str, start_time: int | None, end_time: int | None,
               limit: int) -> list[list[Any]]:
        """``/api/v3/klines``; BinanceError -1121 for an unknown symbol, -1120 for an interval not served."""
        market = self.symbols.get(symbol)
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        if interval not in BINANCE_INTERVALS:
            raise BinanceError(-1120, "Invalid interval.")
        series = market.series.get(interval)
        if series is None:
            raise BinanceError(-1120, f"Invalid interval: this replay server holds {symbol} bars for "
                                      f"{sorted(market.series)} only, not {interval}.")
        if start_time is not None and end_time is not None and start_time > end_time:
            raise BinanceError(-1023, "Start time is greater than end time.")
        if limit < 1:
            raise BinanceError(-1100, "Illegal characters found in parameter 'limit'; legal range is '1..1000'.")
        return series.klines(start_time, end_time, min(limit, KLINES_MAX_LIMIT), self.now())


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (tests assert on these)."""

    method: str
    path: str
    params: dict[str, str]


# Binance's own error bodies for the statuses a fault can take (ccxt maps these codes to
# OperationFailed / RateLimitExceeded / DDoSProtection / RequestTimeout, as it would live).
_FAULT_BODIES: dict[int, tuple[int, str]] = {
    418: (-1003, "Way too much request weight used; IP banned until further notice."),
    429: (-1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
    504: (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
}
_DEFAULT_FAULT_BODY = (-1001, "Internal error; unable to process your request. Please try again.")


class Faults:
    """Scripted HTTP failures for tests: the server answers with an error instead of serving.

    ``path`` picks which requests a rule counts and hits (default klines; None for every path).
    Thread-safe; ``injected`` counts the failures served so a test can assert they happened.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str | None] = Counter()
        self._next: list[list[Any]] = []  # [path, remaining, status]
        self._numbered: dict[tuple[str | None, int], int] = {}
        self.injected = 0

    def fail_next(self, count: int = 1, *, status: int = 503, path: str | None = "/api/v3/klines") -> None:
        """Fail the next ``count`` requests to ``path`` with HTTP ``status``."""
        with self._lock:
            self._next.append([path, count, status])

    def fail_request(self, *numbers: int, status: int = 500, path: str | None = "/api/v3/klines") -> None:
        """Fail the requests to ``path`` whose 1-based arrival number is in ``numbers``."""
        with self._lock:
            for number in numbers:
                self._numbered[(path, number)] = status

    def check(self, path: str) -> int | None:
        """Count a request to ``path``; the status to fail it with, or None to serve it."""
        with self._lock:
            self._seen[path] += 1
            self._seen[None] += 1
            status = None
            for key in ((path, self._seen[path]), (None, self._seen[None])):
                if key in self._numbered:
                    status = self._numbered.pop(key)
                    break
            else:
                for rule in self._next:
                    if rule[0] in (None, path) and rule[1] > 0:
                        rule[1] -= 1
                        status = rule[2]
                        break
            if status is not None:
                self.injected += 1
            return status

    @staticmethod
    def response(status: int) -> JSONResponse:
        code, msg = _FAULT_BODIES.get(status, _DEFAULT_FAULT_BODY)
        return JSONResponse({"code": code, "msg": msg}, status_code=status)


router = APIRouter()


def _exchange(request: Request) -> ReplayExchange:
    return request.app.state.exchange


@router.get("/api/v3/time")
async def server_time(request: Request) -> dict[str, int]:
    return {"serverTime": _exchange(request).now()}


@router.get("/api/v3/exchangeInfo")
async def exchange_info(request: Request) -> dict[str, Any]:
    return _exchange(request).exchange_info()


@router.get("/api/v3/klines")
async def klines(
    request: Request,
    symbol: str,
    interval: str,
    start_time: Annotated[int | None, Query(alias="startTime")] = None,
    end_time: Annotated[int | None, Query(alias="endTime")] = None,
    limit: int = KLINES_DEFAULT_LIMIT,
) -> list[list[Any]]:
    return _exchange(request).klines(symbol, interval, start_time, end_time, limit)


# What ccxt's binance calls during load_markets with its default options (futures markets, and
# with keys also margin pairs and currencies): empty answers, as for an exchange with spot only.
@router.get("/fapi/v1/exchangeInfo")
@router.get("/dapi/v1/exchangeInfo")
async def futures_exchange_info(request: Request) -> dict[str, Any]:
    return {"timezone": "UTC", "serverTime": _exchange(request).now(), "rateLimits": [],
            "exchangeFilters": [], "assets": [], "symbols": []}


@router.get("/sapi/v1/capital/config/getall")
@router.get("/sapi/v1/margin/allPairs")
@router.get("/sapi/v1/margin/isolated/allPairs")
async def empty_sapi_list() -> list[Any]:
    return []


def create_app(
    markets: Mapping[str, BarsSource],
    *,
    now_ms: int | Clock | None = None,
    faults: Faults | None = None,
    rules: Mapping[str, SymbolRules] | None = None,
) -> FastAPI:
    """The replay server app over ``markets`` (see ``ReplayExchange`` for the arguments).

    ``app.state.exchange`` is the ``ReplayExchange``, ``app.state.faults`` the ``Faults`` (given or
    new) and ``app.state.requests`` the list of ``RecordedRequest`` in arrival order.
    """
    app = FastAPI(title="spotgym replay exchange")
    app.state.exchange = ReplayExchange(markets, now_ms=now_ms, rules=rules)
    app.state.faults = faults if faults is not None else Faults()
    app.state.requests = []

    @app.middleware("http")
    async def record_and_inject_faults(request: Request, call_next):
        app.state.requests.append(RecordedRequest(request.method, request.url.path, dict(request.query_params)))
        status = app.state.faults.check(request.url.path)
        if status is not None:
            return Faults.response(status)
        return await call_next(request)

    app.add_exception_handler(BinanceError, lambda _request, exc: exc.response())
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(router)
    return app


def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a missing / malformed parameter, in Binance's shape (-1102 / -1100)."""
    error = exc.errors()[0]
    name = error["loc"][-1]
    if error["type"] == "missing":
        return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.").response()
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.").response()


@contextmanager
def serve_in_thread(app: FastAPI, *, host: str = "127.0.0.1", startup_timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a daemon thread; yields its base URL.

    The socket is bound here (port 0) before the thread starts, so there is no port race, and the
    server is shut down and joined on exit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"spotgym-sim:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"replay server on {host}:{port} did not start within {startup_timeout} s")
            time.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()


def _parse_market_key(key: str) -> tuple[str, str]:
    """``"ETH/USDT@1h"`` -> (``"ETH/USDT"``, ``"1h"``); ValueError naming the key otherwise."""
    symbol, _, interval = key.partition("@")
    base, _, quote = symbol.partition("/")
    if not (base.isalnum() and quote.isalnum() and interval):
        raise ValueError(f"bad market key {key!r}: expected 'BASE/QUOTE@interval', e.g. 'ETH/USDT@1h'")
    if interval not in BINANCE_INTERVALS or interval == "1M":
        raise ValueError(f"market {key!r}: interval {interval!r} is not a replayable Binance interval "
                         f"({', '.join(i for i in BINANCE_INTERVALS if i != '1M')})")
    return f"{base.upper()}/{quote.upper()}", interval


def _num(value: float) -> str:
    """A float as Binance's decimal string, shortest form that round-trips exactly."""
    return np.format_float_positional(value, trim="-")
