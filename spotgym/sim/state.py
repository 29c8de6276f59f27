"""The replay exchange's state: spot symbols with their trading rules and bar series, and the clock.

The clock decides what exists: klines never returns a bar opening after "now", and the bar that
contains "now" is served still open (partial), as Binance does, so clients must drop it themselves.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spotgym.data.io import raw_from_frame, read_raw
from spotgym.data.timeframes import timeframe_to_ms
from spotgym.data.validate import OHLCV_COLUMNS, validate_raw
from spotgym.sim.errors import BinanceError
from spotgym.venue import TradingRules, rules_for

__all__ = ["BINANCE_INTERVALS", "KLINES_DEFAULT_LIMIT", "KLINES_MAX_LIMIT", "BarSeries", "ReplayExchange",
           "SymbolMarket"]

BarsSource = pd.DataFrame | str | os.PathLike
Clock = Callable[[], int]

# Binance spot kline intervals. "1M" (calendar month) has no fixed length and is not replayed.
BINANCE_INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000


@dataclass(frozen=True, eq=False)
class BarSeries:
    """One symbol's bars at one interval: open times (int64 ms, strictly increasing) and OHLCV."""

    interval: str
    interval_ms: int
    timestamps: np.ndarray
    ohlcv: np.ndarray

    @classmethod
    def from_source(cls, source: BarsSource, interval: str, name: str) -> BarSeries:
        """A DataFrame (``timestamp`` + OHLCV columns, or bars from ``load_bars``) or a CSV / parquet path,
        validated by the same rules as every bar file (``spotgym.data.validate_raw``)."""
        frame = raw_from_frame(source) if isinstance(source, pd.DataFrame) else read_raw(source)
        interval_ms = timeframe_to_ms(interval)
        validate_raw(frame, f"market {name!r}", interval_ms)
        timestamps = frame["timestamp"].to_numpy(dtype=np.int64)
        ohlcv = frame[list(OHLCV_COLUMNS)].to_numpy(dtype=np.float64)
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
    rules: TradingRules
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
            "filters": self.rules.binance_filters(), "permissions": [], "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }


class ReplayExchange:
    """The market state behind the server: spot symbols with bar series, and the clock.

    ``markets`` maps ``"BASE/QUOTE@interval"`` (e.g. ``"ETH/USDT@1h"``) to a DataFrame or a
    CSV / parquet path with ``timestamp`` (open time, ms) and OHLCV columns; give one entry per
    interval to serve. ``now_ms`` is the clock: None for the wall clock, an int for a fixed
    instant, or a callable returning ms. ``rules`` maps ``"BASE/QUOTE"`` to its ``TradingRules``;
    a symbol without an entry gets the venue's (``spotgym.venue.rules_for``, an error when unknown).
    """

    def __init__(
        self,
        markets: Mapping[str, BarsSource],
        *,
        now_ms: int | Clock | None = None,
        rules: Mapping[str, TradingRules] | None = None,
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
                given = rules.pop(symbol, None)
                market = SymbolMarket(symbol, base + quote, base, quote, given if given is not None else rules_for(symbol))
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
