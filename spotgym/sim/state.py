"""The replay exchange's state: symbols on one market clock, the accounts, the matching engine, and the event
stream every client sees.

Two clocks. The **market clock** (``now``) is what klines, trades, fills and events carry: it starts at
``start_ms`` and moves only through ``advance_to`` (the app's driver, ``POST /sim/step`` or a test), which
replays every tick it passes in time order across symbols: the trade, the stream events that have
subscribers, the resting orders the trade reaches. The **wall clock** (signed requests' ``timestamp`` and
``recvWindow``, ``/api/v3/time``) is the app's business. Without ``start_ms`` the market clock follows
``now_ms`` (a fixed instant, a callable, or the wall clock): the bars up to it are history.

Deterministic: the same data, seed and client requests give the same events, byte for byte.
"""

from __future__ import annotations

import heapq
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from spotgym.data.io import raw_from_frame, read_raw
from spotgym.data.timeframes import ms_to_timeframe, timeframe_to_ms
from spotgym.data.validate import OHLCV_COLUMNS, validate_raw
from spotgym.sim.accounts import Account
from spotgym.sim.capture import L2Capture
from spotgym.sim.errors import BinanceError
from spotgym.sim.market import BOOK_LEVELS, DEFAULT_TICKS_PER_BAR, Market, Tick, fmt
from spotgym.sim.matching import MatchingEngine, OrderRequest
from spotgym.venue import TradingRules, rules_for

__all__ = ["BINANCE_INTERVALS", "KLINES_DEFAULT_LIMIT", "KLINES_MAX_LIMIT", "Listener", "ReplayExchange",
           "parse_market_key"]

BarsSource = pd.DataFrame | str | os.PathLike
Clock = Callable[[], int]
Listener = Callable[[str, str, dict[str, Any]], None]  # (kind "market" | "user", stream or api key, payload)

# Binance spot kline intervals. "1M" (calendar month) has no fixed length and is not replayed.
BINANCE_INTERVALS: tuple[str, ...] = (
    "1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)
KLINES_DEFAULT_LIMIT = 500
KLINES_MAX_LIMIT = 1000
DEFAULT_API_KEY = "spotgym-sim-key"
DEFAULT_API_SECRET = "spotgym-sim-secret"


def parse_market_key(key: str) -> tuple[str, str | None]:
    """``"ETH/USDT@1h"`` -> (``"ETH/USDT"``, ``"1h"``), ``"ETH/USDT"`` -> (``"ETH/USDT"``, None)."""
    symbol, _, interval = key.partition("@")
    base, _, quote = symbol.partition("/")
    if not (base.isalnum() and quote.isalnum()) or (key.count("@") and not interval):
        raise ValueError(f"bad market key {key!r}: expected 'BASE/QUOTE' or 'BASE/QUOTE@interval', e.g. 'ETH/USDT@1h'")
    if interval and (interval not in BINANCE_INTERVALS or interval == "1M"):
        raise ValueError(f"market {key!r}: interval {interval!r} is not a replayable Binance interval "
                         f"({', '.join(i for i in BINANCE_INTERVALS if i != '1M')})")
    return f"{base.upper()}/{quote.upper()}", interval or None


def _load(source: BarsSource, interval: str | None, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    frame = raw_from_frame(source) if isinstance(source, pd.DataFrame) else read_raw(source)
    tf_ms = validate_raw(frame, f"market {name!r}", timeframe_to_ms(interval) if interval else None)
    return frame["timestamp"].to_numpy(np.int64), frame[list(OHLCV_COLUMNS)].to_numpy(np.float64), tf_ms


class ReplayExchange:
    """Spot symbols replayed on one market clock, with accounts, orders and event streams.

    ``markets``: ``"BASE/QUOTE"`` or ``"BASE/QUOTE@interval"`` -> bars (a DataFrame or a CSV / parquet path
    with ``timestamp`` in ms and OHLCV; the interval is the data's timeframe, read from the data when not
    given). ``rules``: ``"BASE/QUOTE"`` -> ``TradingRules`` (default: the venue's, an error when unknown).
    ``start_ms``: where the market clock starts (it then moves by ``advance_to``); without it the clock is
    ``now_ms`` (an int, a callable, or None for the wall clock). ``balances``: every new account's starting
    balances; ``fee``: the commission rate; ``ticks_per_bar``: trades per bar of the intrabar path;
    ``captures``: ``"BASE/QUOTE"`` -> a recorded L2 feed whose book and trades replace the synthetic ones
    for the span it covers.
    """

    def __init__(self, markets: Mapping[str, BarsSource], *, now_ms: int | Clock | None = None,
                 start_ms: int | None = None, rules: Mapping[str, TradingRules] | None = None, fee: float = 0.001,
                 ticks_per_bar: int = DEFAULT_TICKS_PER_BAR, balances: Mapping[str, float] | None = None,
                 api_key: str = DEFAULT_API_KEY, api_secret: str = DEFAULT_API_SECRET, seed: int = 0,
                 captures: Mapping[str, str | os.PathLike] | None = None, spread_bps: float | None = None,
                 fee_asset: str = "received") -> None:
        if not markets:
            raise ValueError("markets is empty: give at least one 'BASE/QUOTE' -> bars entry")
        if not 0.0 <= fee < 0.1:
            raise ValueError(f"fee must be a fraction in [0, 0.1), got {fee}")
        rules = dict(rules or {})
        self.markets: dict[str, Market] = {}
        for key, source in markets.items():
            symbol, interval = parse_market_key(key)
            market_id = symbol.replace("/", "")
            if market_id in self.markets:
                raise ValueError(f"market {key!r}: {symbol} given twice (one bar series per symbol; any longer "
                                 "interval is served aggregated)")
            ts, ohlcv, tf_ms = _load(source, interval, key)
            given = rules.pop(symbol, None)
            self.markets[market_id] = Market(symbol, given if given is not None else rules_for(symbol), ts, ohlcv,
                                             tf_ms, ticks_per_bar)
        if rules:
            raise ValueError(f"rules given for symbols without bars: {sorted(rules)}")
        for symbol, path in (captures or {}).items():
            sid = parse_market_key(symbol)[0].replace("/", "")
            if sid not in self.markets:
                raise ValueError(f"capture given for {symbol}, which has no bars")
            self.markets[sid].attach_capture(L2Capture.load(path, self.markets[sid].symbol))
        self.fee = float(fee)
        self.seed = int(seed)
        self.default_balances = {a.upper(): float(v) for a, v in (balances or {"USDT": 10_000.0}).items()}
        self.accounts: dict[str, Account] = {}
        self.add_account(api_key, api_secret)
        self.listeners: list[Listener] = []
        self.log: list[str] | None = None
        self.streams: Counter[str] = Counter()  # market streams with subscribers
        if spread_bps is not None:
            if not spread_bps > 0:
                raise ValueError(f"spread_bps must be > 0, got {spread_bps}")
            for m in self.markets.values():
                m.spread_bps = float(spread_bps)
        self.engine = MatchingEngine(self.markets, self.fee, self._publish_user, fee_asset)
        self.update_id = dict.fromkeys(self.markets, 1)
        self._books: dict[str, tuple[dict[float, float], dict[float, float]]] = {}
        self._kline_open: dict[tuple[str, str], int] = {}
        self.ticks_replayed = 0
        self.external: Clock | None = None
        if start_ms is None:
            if now_ms is None:
                self.external = lambda: time.time_ns() // 1_000_000
            elif callable(now_ms):
                self.external = now_ms
            else:
                fixed = int(now_ms)
                self.external = lambda: fixed
            self._now: int | None = None  # set at the first look: the bars before it are history, not replayed
        else:
            self._now = int(start_ms) - 1
            self.advance_to(int(start_ms))  # the ticks at the start instant (a bar's open) happen now

    # ------------------------------------------------------------------ clock
    def now(self) -> int:
        """The market clock in ms (brought up to an external clock first, when there is one)."""
        if self.external is not None:
            target = int(self.external())
            if self._now is None:
                self._now = target
            elif target > self._now:
                self.advance_to(target)
        return self._now

    @property
    def base_interval_ms(self) -> int:
        return min(m.interval_ms for m in self.markets.values())

    def next_boundary(self, after: int | None = None) -> int:
        """The next bar open (of the finest data timeframe) strictly after ``after`` (default now)."""
        t = self.now() if after is None else after
        step = self.base_interval_ms
        return (t // step + 1) * step

    def step_bars(self, bars: int = 1) -> int:
        """Move the market clock over ``bars`` bar boundaries; returns the new time."""
        if bars < 1:
            raise ValueError(f"bars must be >= 1, got {bars}")
        target = self.now()
        for _ in range(bars):
            target = self.next_boundary(target)
        self.advance_to(target)
        return self._now

    def advance_to(self, t: int) -> int:
        """Replay every tick in (now, t] in time order across symbols; the clock ends at ``t``."""
        if self._now is None:
            self._now = t
        if t <= self._now:
            return self._now
        markets = list(self.markets.values())
        per_symbol = [_keyed(m.ticks_between(self._now, t), j) for j, m in enumerate(markets)]
        for time_ms, j, tick in (per_symbol[0] if len(per_symbol) == 1 else heapq.merge(*per_symbol)):
            self._now = time_ms
            self._replay(markets[j], tick)
        self._now = t
        return t

    # ------------------------------------------------------------------ one tick
    def _replay(self, market: Market, tick: Tick) -> None:
        sid = market.market_id
        self.ticks_replayed += 1
        self.engine.new_tick(sid)
        trade_id = self.engine.trade_id(sid)
        self.update_id[sid] += 1
        lower = sid.lower()
        now = tick.time_ms
        if self.streams or self.log is not None:
            self._kline_events(market, lower, now)
            if self.streams[f"{lower}@trade"] or self.log is not None:
                self._publish_market(f"{lower}@trade", {
                    "e": "trade", "E": now, "s": sid, "t": trade_id, "p": fmt(tick.price), "q": fmt(tick.qty),
                    "T": now, "m": tick.buyer_maker, "M": True})
            if self.streams[f"{lower}@aggTrade"]:
                self._publish_market(f"{lower}@aggTrade", {
                    "e": "aggTrade", "E": now, "s": sid, "a": trade_id, "p": fmt(tick.price), "q": fmt(tick.qty),
                    "f": trade_id, "l": trade_id, "T": now, "m": tick.buyer_maker, "M": True})
            if self.streams[f"{lower}@depth"] or self.streams[f"{lower}@depth@100ms"]:
                self._depth_event(market, lower, now)
            if self.streams[f"{lower}@bookTicker"]:
                bids, asks = market.book(now, 1)
                self._publish_market(f"{lower}@bookTicker", {
                    "u": self.update_id[sid], "s": sid, "b": fmt(bids[0][0]), "B": fmt(bids[0][1]),
                    "a": fmt(asks[0][0]), "A": fmt(asks[0][1])})
            if self.streams[f"{lower}@ticker"] or self.streams[f"{lower}@miniTicker"]:
                self._ticker_events(market, lower, now)
        self.engine.on_tick(market, tick)

    def _kline_events(self, market: Market, lower: str, now: int) -> None:
        prefix = f"{lower}@kline_"
        for stream in [s for s, n in self.streams.items() if n and s.startswith(prefix)]:
            interval = stream[len(prefix):]
            interval_ms = timeframe_to_ms(interval)
            opened = now - now % interval_ms
            key = (market.market_id, interval)
            previous = self._kline_open.get(key)
            if previous is not None and previous != opened:  # the kline before this one has closed
                event = market.kline_event(interval, interval_ms, previous + interval_ms, closed=True)
                if event is not None:
                    event["E"] = now
                    self._publish_market(stream, event)
            self._kline_open[key] = opened
            event = market.kline_event(interval, interval_ms, now, closed=False)
            if event is not None:
                self._publish_market(stream, event)

    def _depth_event(self, market: Market, lower: str, now: int) -> None:
        sid = market.market_id
        bids, asks = market.book(now)
        new = (dict(bids), dict(asks))
        old = self._books.get(sid, ({}, {}))
        self._books[sid] = new
        changes = []
        for side_new, side_old in zip(new, old):
            rows = [[fmt(p), fmt(q)] for p, q in side_new.items() if side_old.get(p) != q]
            rows += [[fmt(p), "0.00000000"] for p in side_old if p not in side_new]
            changes.append(sorted(rows, key=lambda r: float(r[0])))
        u = self.update_id[sid]
        event = {"e": "depthUpdate", "E": now, "s": sid, "U": u, "u": u, "b": changes[0][::-1], "a": changes[1]}
        for stream in (f"{lower}@depth", f"{lower}@depth@100ms"):
            if self.streams[stream]:
                self._publish_market(stream, event)

    def _ticker_events(self, market: Market, lower: str, now: int) -> None:
        t = market.ticker_24h(now)
        if t is None:
            return
        sid = market.market_id
        if self.streams[f"{lower}@ticker"]:
            bids, asks = market.book(now, 1)
            self._publish_market(f"{lower}@ticker", {
                "e": "24hrTicker", "E": now, "s": sid, "p": fmt(t["change"]), "P": f"{t['change_pct']:.3f}",
                "w": fmt(t["weighted"]), "x": fmt(t["open"]), "c": fmt(t["last"]), "Q": "0.00000000",
                "b": fmt(bids[0][0]), "B": fmt(bids[0][1]), "a": fmt(asks[0][0]), "A": fmt(asks[0][1]),
                "o": fmt(t["open"]), "h": fmt(t["high"]), "l": fmt(t["low"]), "v": fmt(t["volume"]),
                "q": fmt(t["quote_volume"]), "O": t["open_time"], "C": now, "F": -1, "L": -1, "n": t["count"]})
        if self.streams[f"{lower}@miniTicker"]:
            self._publish_market(f"{lower}@miniTicker", {
                "e": "24hrMiniTicker", "E": now, "s": sid, "c": fmt(t["last"]), "o": fmt(t["open"]),
                "h": fmt(t["high"]), "l": fmt(t["low"]), "v": fmt(t["volume"]), "q": fmt(t["quote_volume"])})

    # ------------------------------------------------------------------ events
    def watch(self, stream: str) -> None:
        """A client subscribed to a market stream (``ethusdt@kline_1m``); events for it are made from now on."""
        sid = stream.split("@", 1)[0].upper()
        if "@depth" in stream and sid in self.markets and not self._depth_watched(sid):
            bids, asks = self.markets[sid].book(self._now)  # the diffs start from the book as it is now
            self._books[sid] = (dict(bids), dict(asks))
        self.streams[stream] += 1

    def unwatch(self, stream: str) -> None:
        self.streams[stream] -= 1
        if self.streams[stream] > 0:
            return
        del self.streams[stream]
        sid, _, kind = stream.partition("@")
        if kind.startswith("depth") and not self._depth_watched(sid.upper()):
            self._books.pop(sid.upper(), None)
        if kind.startswith("kline_"):  # a later subscriber starts afresh, with no stale "closed" kline
            self._kline_open.pop((sid.upper(), kind[len("kline_"):]), None)

    def _depth_watched(self, sid: str) -> bool:
        lower = sid.lower()
        return bool(self.streams[f"{lower}@depth"] or self.streams[f"{lower}@depth@100ms"])

    def _publish_market(self, stream: str, payload: dict[str, Any]) -> None:
        self._emit("market", stream, payload)

    def _publish_user(self, account: Account, payload: dict[str, Any]) -> None:
        self._emit("user", account.api_key, payload)

    def _emit(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.append(json.dumps([kind, key, payload], separators=(",", ":")))
        for listener in self.listeners:
            listener(kind, key, payload)

    def record(self) -> list[str]:
        """Start keeping every event (one JSON line each: kind, stream or key, payload); returns the log."""
        self.log = []
        return self.log

    # ------------------------------------------------------------------ accounts
    def add_account(self, api_key: str, api_secret: str, balances: Mapping[str, float] | None = None, *,
                    can_withdraw: bool = False) -> Account:
        if not api_key or not api_secret:
            raise ValueError("an account needs an API key and a secret")
        if api_key in self.accounts:
            raise ValueError(f"an account with API key {api_key[:4]}... exists already")
        account = Account(api_key, api_secret, dict(self.default_balances if balances is None else balances),
                          can_withdraw=can_withdraw)
        self.accounts[api_key] = account
        return account

    def account(self, api_key: str) -> Account | None:
        return self.accounts.get(api_key)

    # ------------------------------------------------------------------ trading
    def place_order(self, account: Account, request: OrderRequest):
        return self.engine.place(account, request, self.now())

    def cancel_order(self, account: Account, symbol: str, order_id: int | None, client_id: str | None):
        return self.engine.cancel(account, symbol, order_id, client_id, self.now())

    # ------------------------------------------------------------------ market data (REST)
    def market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    def exchange_info(self, server_time: int) -> dict[str, Any]:
        return {"timezone": "UTC", "serverTime": server_time,
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 6000}],
                "exchangeFilters": [], "symbols": [_symbol_info(m) for m in self.markets.values()]}

    def klines(self, symbol: str, interval: str, start_time: int | None, end_time: int | None,
               limit: int) -> list[list[Any]]:
        """``/api/v3/klines``: any interval that is a whole multiple of the data's timeframe (aggregated)."""
        market = self.market(symbol)
        if interval not in BINANCE_INTERVALS or interval == "1M":
            raise BinanceError(-1120, "Invalid interval.")
        interval_ms = timeframe_to_ms(interval)
        if interval_ms % market.interval_ms:
            raise BinanceError(-1120, f"Invalid interval: this replay server holds {symbol} bars of "
                                      f"{ms_to_timeframe(market.interval_ms)}; it serves that and whole multiples of "
                                      f"it, not {interval}.")
        if start_time is not None and end_time is not None and start_time > end_time:
            raise BinanceError(-1023, "Start time is greater than end time.")
        if limit < 1:
            raise BinanceError(-1100, "Illegal characters found in parameter 'limit'; legal range is '1..1000'.")
        return market.kline_rows(interval_ms, start_time, end_time, min(limit, KLINES_MAX_LIMIT), self.now())

    def depth(self, symbol: str, limit: int) -> dict[str, Any]:
        market = self.market(symbol)
        now = self.now()
        bids, asks = market.book(now, min(max(limit, 1), BOOK_LEVELS))  # the depth the diff stream covers
        return {"lastUpdateId": self.update_id[symbol], "bids": [[fmt(p), fmt(q)] for p, q in bids],
                "asks": [[fmt(p), fmt(q)] for p, q in asks]}

    def state(self) -> dict[str, Any]:
        """What ``GET /sim/state`` shows: the clock, the symbols, every account's balances and open orders."""
        now = self.now()
        return {
            "time": now, "time_iso": pd.Timestamp(now, unit="ms", tz="UTC").isoformat(),
            "symbols": {sid: {"symbol": m.symbol, "price": m.price(now), "timeframe": ms_to_timeframe(m.interval_ms),
                              "first": m.first_ms, "end": m.end_ms} for sid, m in self.markets.items()},
            "accounts": {key[:4] + "…" if len(key) > 8 else key: {
                "balances": {a: {"free": f, "locked": lk} for a, (f, lk) in sorted(acc.balances.items())},
                "open_orders": [o.to_binance("QUERY") for o in acc.open_orders()]} for key, acc in self.accounts.items()},
            "ticks_replayed": self.ticks_replayed, "streams": dict(self.streams),
        }


def _keyed(ticks, j: int):
    """(time, symbol position, tick): the merge order of ticks across symbols."""
    for tick in ticks:
        yield tick.time_ms, j, tick


def _symbol_info(market: Market) -> dict[str, Any]:
    """One symbol's entry of ``/api/v3/exchangeInfo``."""
    return {
        "symbol": market.market_id, "status": "TRADING",
        "baseAsset": market.base, "baseAssetPrecision": 8,
        "quoteAsset": market.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False, "ocoAllowed": False, "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False, "cancelReplaceAllowed": False,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": market.rules.binance_filters(), "permissions": [], "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }
