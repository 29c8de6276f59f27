"""Prometheus metrics of a live session: ``LiveMetrics(session, registry=None)``.

Every metric is labelled ``session`` (several sessions, e.g. the A/B sessions of one process, share one registry:
pass it to each ``LiveMetrics``); ``serve(port, host)`` exposes the registry over HTTP (``/metrics``; port 0 picks
a free one, the real one is returned). Names (``spotgym_live_`` prefix):

- gauges: ``equity``, ``position``, ``cash``, ``price``, ``exposure``, ``drawdown`` (fraction below the session's
  equity peak), ``last_bar_timestamp_seconds`` (open time of the last bar marked), ``feed_lag_seconds``,
  ``feed_stale`` (0/1), ``risk_halted`` (0/1);
- counters (``_total``): ``bars``, ``decisions``, ``risk_vetoes``, ``orders`` (label ``status``: intent, sent,
  open, filled, rejected, ...), ``fills``, ``fees`` (quote currency), ``feed_errors``, ``feed_reconnects``,
  ``events`` (label ``kind``: every journal event);
- histogram: ``decision_latency_seconds`` (closed bar received -> order handed to the broker).

``on_event(kind, payload)`` takes the journal's events (the same stream ``NotifyHub.emit`` takes) and moves the
counters and gauges they concern (an order status counts once: from the journal's ``order_<status>`` events,
which carry a ``note``, not from the broker's alerts of the same name); the other methods are for figures no
event carries.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["LATENCY_BUCKETS", "LiveMetrics"]

PREFIX = "spotgym_live_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _Families:
    """The metric families of one registry (made once per registry, shared by its sessions)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, text: str) -> Gauge:
            return Gauge(PREFIX + name, text, ["session"], registry=registry)

        def counter(name: str, text: str, *labels: str) -> Counter:
            return Counter(PREFIX + name, text, ["session", *labels], registry=registry)

        self.equity = gauge("equity", "Account equity in the quote currency, marked at each bar's close")
        self.position = gauge("position", "Base units held")
        self.cash = gauge("cash", "Free quote currency of the session's account")
        self.price = gauge("price", "Close of the last bar marked")
        self.exposure = gauge("exposure", "Position value / equity")
        self.drawdown = gauge("drawdown", "Fall of equity below the session's peak (fraction)")
        self.last_bar = gauge("last_bar_timestamp_seconds", "Open time of the last bar marked (unix seconds)")
        self.feed_lag = gauge("feed_lag_seconds", "Seconds between a bar's close and its processing")
        self.feed_stale = gauge("feed_stale", "1 while the feed is stale")
        self.risk_halted = gauge("risk_halted", "1 while the risk layer's kill switch holds the account")
        self.bars = counter("bars", "Bars marked")
        self.decisions = counter("decisions", "Decisions taken")
        self.risk_vetoes = counter("risk_vetoes", "Decisions the risk layer changed or blocked")
        self.orders = counter("orders", "Order status changes", "status")
        self.fills = counter("fills", "Fills booked")
        self.fees = counter("fees", "Fees paid, in the quote currency")
        self.feed_errors = counter("feed_errors", "Failed feed polls")
        self.reconnects = counter("feed_reconnects", "Feed recoveries after a stale spell")
        self.events = counter("events", "Journal events", "kind")
        self.latency = Histogram(PREFIX + "decision_latency_seconds",
                                 "Seconds from a closed bar's arrival to the order handed to the broker",
                                 ["session"], buckets=LATENCY_BUCKETS, registry=registry)


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _families(registry: CollectorRegistry) -> _Families:
    with _LOCK:
        fam = _FAMILIES.get(registry)
        if fam is None:
            fam = _FAMILIES[registry] = _Families(registry)
        return fam


class LiveMetrics:
    """One session's metrics in ``registry`` (default: a registry of its own)."""

    def __init__(self, session: str, registry: CollectorRegistry | None = None) -> None:
        self.session = session
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        f = self.f = _families(self.registry)
        s = session
        self._equity, self._position, self._cash = f.equity.labels(s), f.position.labels(s), f.cash.labels(s)
        self._price, self._exposure, self._drawdown = f.price.labels(s), f.exposure.labels(s), f.drawdown.labels(s)
        self._last_bar, self._feed_lag, self._stale = f.last_bar.labels(s), f.feed_lag.labels(s), f.feed_stale.labels(s)
        self._halted, self._bars, self._decisions = f.risk_halted.labels(s), f.bars.labels(s), f.decisions.labels(s)
        self._vetoes, self._fills, self._fees = f.risk_vetoes.labels(s), f.fills.labels(s), f.fees.labels(s)
        self._feed_errors, self._reconnects = f.feed_errors.labels(s), f.reconnects.labels(s)
        self._latency = f.latency.labels(s)
        self.peak: float | None = None
        self._bar_received: float | None = None
        self._is_stale = False
        self._server: Any = None

    # ------------------------------------------------------------------ figures
    def on_bar(self, bar_ms: int | None = None, *, equity: float, position: float | None = None,
               cash: float | None = None, exposure: float | None = None, price: float | None = None,
               drawdown: float | None = None) -> None:
        """The account marked at a bar's close (``drawdown`` default: from the peak of the equity seen here)."""
        equity = float(equity)
        self._equity.set(equity)
        for child, value in ((self._position, position), (self._cash, cash), (self._exposure, exposure),
                             (self._price, price)):
            if value is not None:
                child.set(float(value))
        self.peak = equity if self.peak is None else max(self.peak, equity)
        if drawdown is None:
            drawdown = 1.0 - equity / self.peak if self.peak > 0 else 0.0
        self._drawdown.set(float(drawdown))
        if bar_ms is not None:
            self._last_bar.set(int(bar_ms) / 1000.0)
        self._bars.inc()

    def on_order(self, status: str) -> None:
        self.f.orders.labels(self.session, str(status)).inc()

    def on_fill(self, fee: float = 0.0) -> None:
        """A fill (``fee``: in the quote currency)."""
        self._fills.inc()
        if fee and fee > 0:
            self._fees.inc(float(fee))

    def observe_decision(self, seconds: float) -> None:
        self._latency.observe(max(float(seconds), 0.0))

    def bar_received(self) -> None:
        """Start the decision-latency clock (a closed bar has arrived)."""
        self._bar_received = time.perf_counter()

    def order_sent(self) -> float | None:
        """Stop it (the order goes to the broker): observed and returned; None when no bar started it."""
        if self._bar_received is None:
            return None
        seconds = time.perf_counter() - self._bar_received
        self._bar_received = None
        self.observe_decision(seconds)
        return seconds

    def on_feed_lag(self, seconds: float) -> None:
        self._feed_lag.set(float(seconds))

    def on_feed_error(self) -> None:
        self._feed_errors.inc()

    def on_feed_stale(self, stale: bool) -> None:
        if self._is_stale and not stale:  # a recovery
            self._reconnects.inc()
        self._is_stale = bool(stale)
        self._stale.set(1 if stale else 0)

    def on_risk(self, halted: bool, vetoed: bool = False) -> None:
        self._halted.set(1 if halted else 0)
        if vetoed:
            self._vetoes.inc()

    # ------------------------------------------------------------------ events
    def on_event(self, kind: str, payload: Mapping[str, Any] | None = None) -> None:
        """A journal event: counted by kind, and fills, order statuses, decisions, feed and risk events moved into
        their metrics."""
        p = payload or {}
        self.f.events.labels(self.session, kind).inc()
        if kind == "fill":
            self.on_fill(float(p.get("fee_quote") or 0.0))
        elif kind == "intent":
            self.on_order("intent")
        elif kind.startswith("order_") and "note" in p:  # the journal's status changes (the broker's own
            self.on_order(kind[len("order_"):])             # order_rejected / _ambiguous alerts carry no note)
        elif kind == "decision":
            self._decisions.inc()
            self.on_risk(bool(p.get("halted")), vetoed=bool(p.get("risk")))
        elif kind == "halted":
            self.on_risk(True)
        elif kind == "feed_error":
            self.on_feed_error()
        elif kind == "feed_stale":
            self.on_feed_stale(True)
            if p.get("lag_s") is not None:
                self.on_feed_lag(float(p["lag_s"]))
        elif kind == "feed_recovered":
            self.on_feed_stale(False)

    # ------------------------------------------------------------------ serving
    def serve(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve the registry at ``http://host:port/metrics`` (a daemon thread); returns the port."""
        if self._server is not None:
            return int(self._server.server_address[1])
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        """Stop serving (the metrics stay in the registry)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
