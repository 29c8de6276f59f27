"""One symbol of the replay exchange: its bars at the data's timeframe, replayed as a deterministic path of
trade ticks, klines at any interval that is a whole multiple of the data's (aggregated; the current one
partial), and a synthetic order book around the last trade price.

The intrabar path: each bar is ``ticks_per_bar`` trades, evenly spaced from the bar's open time: open ->
the extreme the bar implies first (the low for a bar that closes up, the high for one that closes down)
-> the other extreme -> close, piecewise linear between those four anchors and rounded to the tick size.
The bar's volume is spread evenly over its ticks (the remainder on the last one). Everything here is a
pure function of the bars, so the same data give the same path, and a kline or a book at any instant
can be computed without replaying what came before.

For the span a recorded L2 feed covers (``attach_capture``), the book is the recorded one and the trades are
the recorded trades (``spotgym.sim.capture``); the bars still make the klines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spotgym.sim.capture import L2Capture
from spotgym.venue import TradingRules

__all__ = ["DEFAULT_TICKS_PER_BAR", "BOOK_LEVELS", "Market", "Tick", "fmt"]

DEFAULT_TICKS_PER_BAR = 4
BOOK_LEVELS = 20
SPREAD_BPS = 1.0  # best bid to best ask, in basis points of the price (at least one tick)
DEPTH_SHARE = 0.5  # the ladder holds this share of a tick's traded volume on each side


def fmt(value: float) -> str:
    """A number as Binance writes it: 8 decimals."""
    return f"{value:.8f}"


@dataclass(frozen=True)
class Tick:
    """One trade of the intrabar path: bar ``bar``, step ``k`` of ``ticks_per_bar``."""

    bar: int
    k: int  # step of the bar's path; -1 for a recorded trade
    time_ms: int
    price: float
    qty: float
    buyer_maker: bool  # the trade went down (a seller hit the bid)
    last: bool  # the bar's last tick


class Market:
    """A replayed spot symbol: ids, trading rules, base bars and their tick path, klines, book."""

    def __init__(self, symbol: str, rules: TradingRules, timestamps: np.ndarray, ohlcv: np.ndarray,
                 interval_ms: int, ticks_per_bar: int = DEFAULT_TICKS_PER_BAR) -> None:
        if ticks_per_bar < 4:
            raise ValueError(f"ticks_per_bar must be >= 4 (open, both extremes, close), got {ticks_per_bar}")
        self.symbol = symbol
        self.base, self.quote = symbol.split("/")
        self.market_id = self.base + self.quote
        self.rules = rules
        self.timestamps = np.ascontiguousarray(timestamps, dtype=np.int64)
        self.ohlcv = np.ascontiguousarray(ohlcv, dtype=np.float64)
        self.interval_ms = int(interval_ms)
        self.ticks_per_bar = int(ticks_per_bar)
        self.spread_bps = SPREAD_BPS  # best bid to best ask of the synthetic book (ReplayExchange sets it)
        self._tick_step = self.interval_ms // self.ticks_per_bar
        self._paths, self._qtys = self._tick_paths()
        # quote volume of each whole bar, from its ticks
        self._quote_volume = (self._paths * self._qtys).sum(axis=1)
        self.capture: L2Capture | None = None

    def attach_capture(self, capture: L2Capture) -> None:
        """Replay ``capture``'s book and trades for the span it covers (it must lie within the bars)."""
        if capture.symbol_id != self.market_id:
            raise ValueError(f"the capture holds {capture.symbol_id}, not {self.market_id}")
        if not (self.first_ms <= capture.start_ms and capture.end_ms < self.end_ms):
            raise ValueError(f"the {self.symbol} capture ({capture.start_ms} .. {capture.end_ms}) lies outside its bars "
                             f"({self.first_ms} .. {self.end_ms})")
        self.capture = capture

    # ------------------------------------------------------------------ the tick path
    def _tick_paths(self) -> tuple[np.ndarray, np.ndarray]:
        o, h, lo, c, v = (self.ohlcv[:, j] for j in range(5))
        up = c >= o
        anchors = np.stack([o, np.where(up, lo, h), np.where(up, h, lo), c], axis=1)
        k = self.ticks_per_bar
        pos = np.arange(k) * 3.0 / (k - 1)  # along the 3 legs of the path
        leg = np.minimum(pos.astype(np.int64), 2)
        frac = pos - leg
        prices = anchors[:, leg] + (anchors[:, leg + 1] - anchors[:, leg]) * frac
        tick = self.rules.tick_size
        if tick > 0:
            prices = np.round(np.round(prices / tick) * tick, 8)
        prices[:, 0], prices[:, -1] = o, c  # the open and the close exactly as the data say
        step = self.rules.step_size
        each = v / k
        if step > 0:
            each = np.floor(each / step + 1e-9) * step
        qtys = np.repeat(each[:, None], k, axis=1)
        qtys[:, -1] = v - each * (k - 1)
        return prices, np.round(qtys, 8)

    def tick(self, bar: int, k: int) -> Tick:
        price = float(self._paths[bar, k])
        if k > 0:
            prev = float(self._paths[bar, k - 1])
        else:
            prev = float(self.ohlcv[bar - 1, 3]) if bar > 0 else price
        return Tick(bar, k, int(self.timestamps[bar]) + k * self._tick_step, price, float(self._qtys[bar, k]),
                    price < prev, k == self.ticks_per_bar - 1)

    def tick_time(self, bar: int, k: int) -> int:
        return int(self.timestamps[bar]) + k * self._tick_step

    def ticks_between(self, after_ms: int, until_ms: int):
        """The trades with ``after_ms < time <= until_ms``, in order: the bars' tick paths, and inside a
        capture's span its recorded trades instead."""
        cap = self.capture
        if cap is None or until_ms < cap.start_ms or after_ms > cap.end_ms:
            yield from self._path_ticks(after_ms, until_ms)
            return
        yield from self._path_ticks(after_ms, min(until_ms, cap.start_ms - 1))
        for trade in cap.trades_between(max(after_ms, cap.start_ms - 1), min(until_ms, cap.end_ms)):
            yield Tick(self._bar_index(trade.time_ms), -1, trade.time_ms, trade.price, trade.qty, trade.buyer_maker,
                       False)
        yield from self._path_ticks(max(after_ms, cap.end_ms), until_ms)

    def _path_ticks(self, after_ms: int, until_ms: int):
        if until_ms <= after_ms:
            return
        bar = max(self._bar_index(after_ms), 0)
        n = len(self.timestamps)
        while bar < n:
            start = int(self.timestamps[bar])
            if start > until_ms:
                return
            k0 = 0 if after_ms < start else (after_ms - start) // self._tick_step + 1
            for k in range(int(k0), self.ticks_per_bar):
                t = start + k * self._tick_step
                if t > until_ms:
                    return
                yield self.tick(bar, k)
            bar += 1

    def _bar_index(self, t: int) -> int:
        """Index of the last bar opening at or before ``t`` (-1 before the first)."""
        return int(np.searchsorted(self.timestamps, t, side="right")) - 1

    def last_tick(self, t: int) -> Tick | None:
        """The latest trade at or before ``t`` (None before the data start)."""
        cap = self.capture
        if cap is not None and cap.covers(t):
            recorded = cap.trades_between(cap.start_ms - 1, t)
            if recorded:
                last = recorded[-1]
                return Tick(self._bar_index(t), -1, last.time_ms, last.price, last.qty, last.buyer_maker, False)
        bar = self._bar_index(t)
        if bar < 0:
            return None
        start = int(self.timestamps[bar])
        k = min((t - start) // self._tick_step, self.ticks_per_bar - 1)
        return self.tick(bar, int(k))

    def price(self, t: int) -> float | None:
        last = self.last_tick(t)
        return None if last is None else last.price

    @property
    def first_ms(self) -> int:
        return int(self.timestamps[0])

    @property
    def end_ms(self) -> int:
        """The close time of the last bar (exclusive)."""
        return int(self.timestamps[-1]) + self.interval_ms

    # ------------------------------------------------------------------ klines
    def _partial(self, bar: int, t: int) -> tuple[float, float, float, float, float, float, int]:
        """(o, h, l, c, v, quote volume, trades) of bar ``bar`` from its ticks at or before ``t``."""
        start = int(self.timestamps[bar])
        if t >= start + self.interval_ms:
            o, h, lo, c, v = self.ohlcv[bar]
            return o, h, lo, c, v, float(self._quote_volume[bar]), self.ticks_per_bar
        k = int(min((t - start) // self._tick_step, self.ticks_per_bar - 1)) + 1
        prices, qtys = self._paths[bar, :k], self._qtys[bar, :k]
        return (float(prices[0]), float(prices.max()), float(prices.min()), float(prices[-1]),
                float(round(qtys.sum(), 8)), float((prices * qtys).sum()), k)

    def kline_rows(self, interval_ms: int, start_time: int | None, end_time: int | None, limit: int,
                   now: int) -> list[list[Any]]:
        """Binance's 12-column kline rows at ``interval_ms`` (a whole multiple of the data's), selected as
        Binance does (``start_time``: the first ``limit`` opening at or after it; else the last ``limit``
        opening at or before ``end_time`` or now), the one containing ``now`` served partial."""
        if interval_ms % self.interval_ms:
            raise ValueError(f"interval {interval_ms} ms is not a multiple of the data's {self.interval_ms} ms")
        upto = self._bar_index(now) + 1  # base bars that have opened by now
        if upto <= 0:
            return []
        # Only the base bars the answer can touch (the work must not grow with the history before the clock):
        # at most limit + 2 klines' worth, widened to whole klines at both ends.
        ratio = interval_ms // self.interval_ms
        stamps = self.timestamps
        if start_time is not None:
            a = int(np.searchsorted(stamps[:upto], start_time, side="left"))
            b = min(upto, a + (limit + 2) * ratio)
        else:
            b = upto if end_time is None else int(np.searchsorted(stamps[:upto], end_time, side="right"))
            a = max(0, b - (limit + 1) * ratio)
        if b <= a:
            return []
        last_open = int(stamps[b - 1]) - int(stamps[b - 1]) % interval_ms
        b = min(upto, int(np.searchsorted(stamps, last_open + interval_ms, side="left")))
        a = int(np.searchsorted(stamps, int(stamps[a]) - int(stamps[a]) % interval_ms, side="left"))
        ts = stamps[a:b]
        bucket = ts - ts % interval_ms
        starts = a + np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])  # first base bar of each kline
        opens = bucket[starts - a]
        hi = len(starts) if end_time is None else int(np.searchsorted(opens, end_time, side="right"))
        if start_time is not None:
            lo = int(np.searchsorted(opens, start_time, side="left"))
            hi = min(hi, lo + limit)
        else:
            lo = max(hi - limit, 0)
        if hi <= lo:
            return []
        seg = starts[lo:hi]
        stop = int(starts[hi]) if hi < len(starts) else b  # one past the last base bar in range
        first = int(seg[0])
        bars = self.ohlcv[first:stop]
        rel = seg - first
        o = bars[rel, 0]
        h = np.maximum.reduceat(bars[:, 1], rel)
        low = np.minimum.reduceat(bars[:, 2], rel)
        c = bars[np.r_[rel[1:], stop - first] - 1, 3]
        v = np.add.reduceat(bars[:, 4], rel)
        qv = np.add.reduceat(self._quote_volume[first:stop], rel)
        n = np.diff(np.r_[seg, stop]) * self.ticks_per_bar
        rows = [[int(opens[lo + j]), fmt(o[j]), fmt(h[j]), fmt(low[j]), fmt(c[j]), fmt(v[j]),
                 int(opens[lo + j]) + interval_ms - 1, fmt(qv[j]), int(n[j]), "0.00000000", "0.00000000", "0"]
                for j in range(len(seg))]
        last = stop - 1
        if now < int(self.timestamps[last]) + self.interval_ms:  # the newest base bar is still open
            rows[-1] = self._kline_row(int(opens[hi - 1]), int(seg[-1]), stop, interval_ms, now)
        return rows

    def _kline_row(self, open_time: int, first: int, stop: int, interval_ms: int, now: int) -> list[Any]:
        o = h = lo = c = None
        v = qv = 0.0
        n = 0
        for bar in range(first, stop):
            bo, bh, bl, bc, bv, bq, bn = self._partial(bar, now)
            o = bo if o is None else o
            h = bh if h is None else max(h, bh)
            lo = bl if lo is None else min(lo, bl)
            c, v, qv, n = bc, v + bv, qv + bq, n + bn
        return [open_time, fmt(o), fmt(h), fmt(lo), fmt(c), fmt(v), open_time + interval_ms - 1, fmt(qv), n,
                "0.00000000", "0.00000000", "0"]

    def kline_event(self, interval: str, interval_ms: int, now: int, closed: bool) -> dict[str, Any] | None:
        """The ``kline`` stream event of the kline of ``interval`` containing ``now`` (the one that just closed
        when ``closed``)."""
        at = now - 1 if closed else now
        open_time = at - at % interval_ms
        first = int(np.searchsorted(self.timestamps, open_time, side="left"))  # its bars only: O(1) in history
        stop = self._bar_index(at) + 1
        if stop <= first:
            return None
        r = self._kline_row(open_time, first, stop, interval_ms, at)
        return {"e": "kline", "E": now, "s": self.market_id,
                "k": {"t": r[0], "T": r[6], "s": self.market_id, "i": interval, "f": -1, "L": -1, "o": r[1],
                      "c": r[4], "h": r[2], "l": r[3], "v": r[5], "n": r[8], "x": closed, "q": r[7], "V": r[9],
                      "Q": r[10], "B": "0"}}

    def ticker_24h(self, now: int) -> dict[str, float] | None:
        """Rolling 24 h statistics at ``now``: the bars that opened in the last 24 h, the current one partial."""
        last = self.last_tick(now)
        if last is None:
            return None
        since = now - 86_400_000
        first = min(max(int(np.searchsorted(self.timestamps, since, side="left")), 0), last.bar)
        o, h, lo, _, v, qv, n = self._partial(last.bar, now)
        if last.bar > first:
            full = slice(first, last.bar)
            o = float(self.ohlcv[first, 0])
            h = max(h, float(self.ohlcv[full, 1].max()))
            lo = min(lo, float(self.ohlcv[full, 2].min()))
            v = v + float(self.ohlcv[full, 4].sum())
            qv = qv + float(self._quote_volume[full].sum())
            n = n + (last.bar - first) * self.ticks_per_bar
        change = last.price - o
        return {"open": o, "high": h, "low": lo, "last": last.price, "volume": v, "quote_volume": qv,
                "count": n, "change": change, "change_pct": 100.0 * change / o if o else 0.0,
                "weighted": qv / v if v else last.price, "open_time": since, "close_time": now}

    # ------------------------------------------------------------------ the book
    def book(self, now: int, levels: int = BOOK_LEVELS) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The synthetic ladder at ``now``: ``levels`` bids and asks around the last trade price, one price step
        apart, the best ones ``spread_bps`` apart (at least a tick); each level holds a share of the current
        bar's per-tick volume, growing with the distance from the touch."""
        if self.capture is not None and self.capture.covers(now):
            return self.capture.book(now, levels)
        last = self.last_tick(now)
        if last is None:
            return [], []
        tick = self.rules.tick_size or 10 ** -8
        step = self.rules.step_size
        mid = last.price
        half = max(mid * self.spread_bps * 0.5e-4, tick / 2)
        best_bid = math.floor((mid - half) / tick + 1e-9) * tick
        best_ask = math.ceil((mid + half) / tick - 1e-9) * tick
        if best_ask <= best_bid:
            best_ask = best_bid + tick
        spacing = max(tick, math.floor(mid * 1e-4 / tick) * tick)
        per_tick = float(self.ohlcv[last.bar, 4]) / self.ticks_per_bar
        base = max(per_tick * DEPTH_SHARE / BOOK_LEVELS, self.rules.min_qty, 10 ** -8)  # the same ladder at any depth
        bids, asks = [], []
        for j in range(levels):
            qty = base * (1.0 + 0.25 * j)
            if step > 0:
                qty = max(math.floor(qty / step + 1e-9) * step, step)
            qty = round(qty, 8)
            bid = round(best_bid - j * spacing, 8)
            if bid > 0:
                bids.append((bid, qty))
            asks.append((round(best_ask + j * spacing, 8), qty))
        return bids, asks
