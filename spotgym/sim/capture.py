"""A recorded Binance L2 feed (``*_l2feed_*.jsonl.gz``: the REST depth snapshot, ``@depth@100ms`` diffs, trades)
replayed as recorded: for the span it covers, the replay exchange's book is the rebuilt order book and its
trades are the recorded ones, instead of the synthetic ladder and the bar's tick path.

The book is rebuilt as Binance documents it: start from the snapshot, drop diffs with ``u <=
lastUpdateId``, apply the rest in order (a quantity of 0 removes a level); a diff takes effect at its event
time ``E``. Trades take effect at their trade time ``T``.
"""

from __future__ import annotations

import gzip
import json
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

__all__ = ["L2Capture", "RecordedTrade"]


@dataclass(frozen=True)
class RecordedTrade:
    time_ms: int
    trade_id: int
    price: float
    qty: float
    buyer_maker: bool


class L2Capture:
    """One symbol's recorded book and trades; ``book(t)`` and ``trades_between`` read it by exchange time."""

    def __init__(self, symbol_id: str, snapshot: dict, diffs: list[tuple[int, int, list, list]],
                 trades: list[RecordedTrade]) -> None:
        if not diffs:
            raise ValueError(f"capture for {symbol_id}: no depth diff after the snapshot")
        self.symbol_id = symbol_id
        self._snapshot = ({float(p): float(q) for p, q in snapshot["bids"]},
                          {float(p): float(q) for p, q in snapshot["asks"]})
        self._diffs = diffs  # (E, u, bids, asks), by u
        self._times = [d[0] for d in diffs]
        self.trades = trades
        self._trade_times = [t.time_ms for t in trades]
        self.start_ms = diffs[0][0]
        self.end_ms = max(diffs[-1][0], trades[-1].time_ms if trades else 0)
        self._cursor = -1  # index of the last diff applied to _book
        self._book = (dict(self._snapshot[0]), dict(self._snapshot[1]))

    @classmethod
    def load(cls, path: str | Path, symbol: str) -> L2Capture:
        """Read a feed file (one ``<receive time ns> <json>`` per line) for ``symbol`` (``ETH/USDT``)."""
        sid = symbol.replace("/", "").upper()
        snapshot, diffs, trades = None, [], []
        opener = gzip.open if str(path).endswith(".gz") else open
        line_no = 0
        try:
            with opener(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    line_no += 1
                    _, _, text = line.partition(" ")
                    message = json.loads(text)
                    if "lastUpdateId" in message:
                        snapshot = message
                        continue
                    stream, data = message.get("stream", ""), message.get("data", {})
                    if not stream.startswith(sid.lower() + "@"):
                        continue
                    if data.get("e") == "depthUpdate":
                        diffs.append((int(data["E"]), int(data["u"]), data["b"], data["a"]))
                    elif data.get("e") == "trade":
                        trades.append(RecordedTrade(int(data["T"]), int(data["t"]), float(data["p"]), float(data["q"]),
                                                    bool(data["m"])))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ValueError(f"capture {path}: unreadable at line {line_no} ({exc})") from None
        if snapshot is None:
            raise ValueError(f"capture {path}: no REST depth snapshot (a line with lastUpdateId)")
        last = int(snapshot["lastUpdateId"])
        diffs = sorted((d for d in diffs if d[1] > last), key=lambda d: d[1])
        trades.sort(key=lambda t: (t.time_ms, t.trade_id))
        return cls(sid, snapshot, diffs, trades)

    def covers(self, t: int) -> bool:
        return self.start_ms <= t <= self.end_ms

    def book(self, t: int, levels: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best ``levels`` bids and asks of the rebuilt book at exchange time ``t``."""
        upto = bisect_right(self._times, t) - 1
        if upto < self._cursor:  # going back in time: rebuild from the snapshot
            self._cursor = -1
            self._book = (dict(self._snapshot[0]), dict(self._snapshot[1]))
        for _, _, bids, asks in self._diffs[self._cursor + 1: upto + 1]:
            for side, rows in zip(self._book, (bids, asks)):
                for p, q in rows:
                    price, qty = float(p), float(q)
                    if qty == 0.0:
                        side.pop(price, None)
                    else:
                        side[price] = qty
        self._cursor = max(upto, self._cursor)
        bids = sorted(self._book[0].items(), reverse=True)[:levels]
        asks = sorted(self._book[1].items())[:levels]
        return bids, asks

    def trades_between(self, after_ms: int, until_ms: int) -> list[RecordedTrade]:
        lo = bisect_right(self._trade_times, after_ms)
        hi = bisect_right(self._trade_times, until_ms)
        return self.trades[lo:hi]
