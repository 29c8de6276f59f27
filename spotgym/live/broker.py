"""Brokers of the live runner: ``CcxtBroker`` (any ccxt exchange: the replay exchange, testnet, demo, live) and
``PaperBroker`` (the env's own fill model on live bars). Both sit behind the ``Broker`` port of
``spotgym.envs.ports`` and journal everything they do.

``CcxtBroker.execute(order)`` never loses an order and never sends one twice:

1. the order is sized (at the current price when it can be read, with the env's own sizing rules) and written to
   the journal as an **intent** with a deterministic client order id, committed, before the request leaves;
2. the request is classified on failure (``classify``): a *definitive* reject (bad order, insufficient funds,
   authentication, market closed) is journaled and the account left as it is; a *throttle* (429) waits for
   ``Retry-After`` and sends again (the exchange refused it unread); a *ban* (418) halts the broker; a *clock*
   error (-1021) resyncs the clock once and sends again; anything *ambiguous* (timeout, 5xx, -1007, a
   dropped connection, a reply that cannot be parsed) makes the broker **ask the exchange for the client order
   id before anything else**, with backoff; only after several "not found" answers in a row is the order
   known never to have been placed and sent again under the same id;
3. fills come from the exchange's trades (by trade id, each applied once; more than the order's quantity is
   flagged, not applied), with the fee converted to the quote currency (Binance takes the buy fee in the
   base asset: the account holds the quantity net of it);
4. an order that cannot be resolved (the exchange answers nothing for ``resolve_timeout_s``) stays
   ``unknown`` in the journal: ``resolve_pending`` settles it before any new order is sent.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

import ccxt

from spotgym.envs.ports import Fill, Order
from spotgym.live.journal import ORDER_FINAL, Journal

__all__ = ["BrokerHalted", "CcxtBroker", "OrderUnresolved", "PaperBroker", "classify", "client_order_id", "retry_after_seconds",
           "session_prefix"]

log = logging.getLogger("spotgym.live.broker")

_STATUS = {"closed": "filled", "open": "open", "canceled": "canceled", "cancelled": "canceled", "expired": "expired",
           "rejected": "rejected"}


class BrokerHalted(RuntimeError):
    """The exchange banned this IP (HTTP 418) or the broker gave up: no order may be sent until ``until``."""

    def __init__(self, message: str, until: float | None = None) -> None:
        super().__init__(message)
        self.until = until


class OrderUnresolved(RuntimeError):
    """An order's fate is unknown (the exchange did not answer): nothing new is sent until it is resolved."""


def session_prefix(session: str) -> str:
    """``sg`` + 8 hex digits of the session name: every client order id of a session starts with it."""
    return "sg" + hashlib.sha1(session.encode()).hexdigest()[:8]


def client_order_id(session: str, bar_ms: int, seq: int = 0) -> str:
    """The deterministic client order id of the ``seq``-th order decided at bar ``bar_ms`` (<= 36 characters,
    Binance's limit): a restarted runner derives the same id for the same decision."""
    return f"{session_prefix(session)}-{int(bar_ms)}-{int(seq)}"


def classify(exc: BaseException) -> str:
    """What a failed request means for the order it carried: ``rejected`` (definitively not placed),
    ``throttle`` (429: not read, wait and send again), ``ban`` (418), ``clock`` (-1021: rejected unread),
    ``ambiguous`` (it may have been placed: ask before anything else)."""
    text = str(exc)
    if isinstance(exc, ccxt.InvalidNonce):
        return "clock"
    if isinstance(exc, ccxt.DDoSProtection):  # RateLimitExceeded too: 429 and 418 both map here
        return "ban" if " 418 " in f" {text} " or "banned" in text.lower() else "throttle"
    if isinstance(exc, ccxt.NetworkError):  # timeouts, 5xx, -1007, maintenance, dropped connections
        return "ambiguous"
    if isinstance(exc, (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadRequest, ccxt.AuthenticationError,
                        ccxt.OperationRejected, ccxt.NotSupported)):
        return "rejected"
    return "ambiguous"  # an exchange error we do not know, a parse failure: assume it may have gone through


def retry_after_seconds(client: Any, default: float) -> float:
    headers = getattr(client, "last_response_headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except (TypeError, ValueError):
                break
    return default


def _scrub(exc: BaseException, secrets: tuple[str, ...]) -> str:
    text = f"{type(exc).__name__}: {exc}"
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if "signature=" in text:
        text = re.sub(r"signature=[0-9a-fA-F]+", "signature=***", text)
    return text[:500]


class CcxtBroker:
    """Market orders through a sync ccxt client, journaled (see the module doc).

    ``sizer(action, price) -> signed base quantity``: the env's sizing at ``price`` (the runner passes
    ``TradingEnv.plan_order``); with ``price_source="ticker"`` the order is sized at the last traded price
    read just before sending (the open of the new bar when the exchange pauses there, as the replay exchange
    does), else at the decision's reference price (the last close). ``sleep`` and ``clock`` are injectable
    for tests.
    """

    def __init__(self, client: Any, journal: Journal, symbol: str, *, sizer: Callable[[float, float], float] | None = None,
                 price_source: str = "ticker", max_sends: int = 3, lookup_tries: int = 8, not_found_needed: int = 3,
                 not_found_settle_s: float = 11.0,
                 backoff_s: tuple[float, ...] = (0.05, 0.2, 0.5, 1.0, 2.0), resolve_timeout_s: float = 60.0,
                 throttle_default_s: float = 5.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, on_event: Callable[..., None] | None = None) -> None:
        self.client, self.journal, self.symbol = client, journal, symbol
        self.sizer, self.price_source = sizer, price_source
        self.max_sends, self.lookup_tries, self.not_found_needed = max_sends, lookup_tries, not_found_needed
        # "not found" is final only this long after the send: a request still in flight (a dropped connection,
        # a fast 5xx from a proxy) can reach the matching engine until its recvWindow (ccxt: 10 s) has passed
        self.not_found_settle_s = not_found_settle_s
        self._sent_at: dict[str, float] = {}
        self.backoff_s, self.resolve_timeout_s, self.throttle_default_s = backoff_s, resolve_timeout_s, throttle_default_s
        self.sleep, self.clock = sleep, clock
        self.on_event = on_event or (lambda kind, **payload: None)
        self.banned_until: float | None = None
        self.base, self.quote = symbol.split("/")
        self.requests = 0  # every request this broker made (for the fault figures)
        self.posts = 0  # order POSTs sent

    # ------------------------------------------------------------------ helpers
    @property
    def _secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (getattr(self.client, "apiKey", None), getattr(self.client, "secret", None)) if s)

    def _check_ban(self) -> None:
        if self.banned_until is not None:
            left = self.banned_until - self.clock()
            if left > 0:
                raise BrokerHalted(f"the exchange banned this IP: no requests for another {left:.0f} s",
                                   self.banned_until)
            self.banned_until = None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._check_ban()
        self.requests += 1
        return getattr(self.client, name)(*args, **kwargs)

    def _backoff(self, attempt: int) -> float:
        return self.backoff_s[min(attempt, len(self.backoff_s) - 1)]

    def _ban(self, exc: BaseException) -> BrokerHalted:
        seconds = retry_after_seconds(self.client, 120.0)
        self.banned_until = self.clock() + seconds
        self.on_event("ban", retry_after_s=seconds, error=_scrub(exc, self._secrets))
        return BrokerHalted(f"the exchange banned this IP for {seconds:.0f} s (HTTP 418): trading halted",
                            self.banned_until)

    def amount_text(self, qty: float) -> str:
        """``qty`` on the lot step, as the exchange takes it. Rounded to 10 decimals first: an account's units summed
        from fills can sit a hair below a step (1.32069999999) and truncation would leave a step behind."""
        try:
            return self.client.amount_to_precision(self.symbol, round(qty, 10))
        except ccxt.InvalidOrder:  # ccxt raises below one lot step instead of answering "0": nothing to send
            return "0"

    def current_price(self, fallback: float) -> float:
        """The last traded price (``fetch_ticker``), or ``fallback`` when it cannot be read."""
        if self.price_source != "ticker":
            return fallback
        try:
            last = self._call("fetch_ticker", self.symbol).get("last")
        except BrokerHalted:
            raise
        except Exception as exc:  # a read: the order is sized at the last close instead
            log.warning("ticker unavailable (%s): sizing at the last close", _scrub(exc, self._secrets))
            return fallback
        return float(last) if last and float(last) > 0 else fallback

    # ------------------------------------------------------------------ the port
    def execute(self, order: Order) -> list[Fill]:
        """Send ``order`` (sized again at the current price when a sizer is set) and return its new fills."""
        if order.side == "none":
            return []
        cid = order.client_id
        try:
            return self._execute(order)
        except OrderUnresolved as exc:  # the order stays `unknown`; nothing new leaves until it is settled
            self.journal.event("blocked", order.decision_time_ms, client_id=cid, reason=str(exc))
            self.on_event("blocked", client_id=cid, reason=str(exc))
            return []

    def _execute(self, order: Order) -> list[Fill]:
        cid = order.client_id
        existing = self.journal.order(cid)
        if existing is not None:  # a restart at the same decision: settle what is there, never send blind
            return self.resolve(existing)
        fills = self.resolve_pending()
        if fills:  # an earlier order settled late: its fills are booked now, this decision is sized without them
            return fills
        qty = order.quantity if order.side == "buy" else -order.quantity
        price = order.reference_price
        if self.sizer is not None:
            price = self.current_price(order.reference_price)
            qty = float(self.sizer(order.action, price))
        if qty == 0.0:
            self.journal.event("no_order", order.decision_time_ms, client_id=cid, reason="nothing to trade at "
                               f"{price:g}")
            return []
        side = "buy" if qty > 0 else "sell"
        text = self.amount_text(abs(qty))
        if float(text) <= 0.0:
            self.journal.event("no_order", order.decision_time_ms, client_id=cid, reason=f"{abs(qty):g} rounds to 0")
            return []
        self.journal.record_intent(cid, order.decision_time_ms, side, float(text), price)
        return self._send(cid, side, text)

    # ------------------------------------------------------------------ sending
    def _send(self, cid: str, side: str, amount: str) -> list[Fill]:
        clock_retried = False
        sends = 0
        while True:
            try:
                # during a ban nothing leaves: raise before the order is journaled `sent` or counted as a POST (else
                # the journal and the figures show an attempt that never happened)
                self._check_ban()
                self.journal.update_order(cid, "sent", attempt=True)
                sends += 1
                self.posts += 1
                self._sent_at[cid] = self.clock()
                reply = self._call("create_order", self.symbol, "market", side, float(amount), None,
                                   {"newClientOrderId": cid, "newOrderRespType": "FULL"})
            except BrokerHalted as exc:  # nothing left this process
                self.journal.update_order(cid, "not_placed", note=str(exc))
                raise
            except Exception as exc:
                kind = classify(exc)
                note = _scrub(exc, self._secrets)
                if kind == "rejected":
                    self.journal.update_order(cid, "rejected", note=note, last_error=note)
                    self.on_event("order_rejected", client_id=cid, error=note)
                    return []
                if kind == "ban":
                    self.journal.update_order(cid, "not_placed", note=note, last_error=note)
                    raise self._ban(exc) from None
                if kind == "throttle":
                    wait = retry_after_seconds(self.client, self.throttle_default_s)
                    self.journal.update_order(cid, "intent", note=f"throttled, retry in {wait:g} s: {note}")
                    self.on_event("throttled", client_id=cid, retry_after_s=wait)
                    self.sleep(wait)
                    continue
                if kind == "clock" and not clock_retried:
                    clock_retried = True
                    self.journal.update_order(cid, "intent", note=f"clock: {note}; resyncing")
                    self._resync_clock()
                    continue
                # ambiguous (or a second clock error): it may have been placed. Ask first.
                self.journal.update_order(cid, "unknown", note=note, last_error=note)
                self.on_event("order_ambiguous", client_id=cid, error=note)
                found = self._lookup(cid, sent_at=self._sent_at.get(cid))
                if found is None:
                    if sends >= self.max_sends:
                        self.journal.update_order(cid, "not_placed", note=f"not found after {sends} sends: given up")
                        self.on_event("order_given_up", client_id=cid)
                        return []
                    self.journal.update_order(cid, "intent", note="not placed (not found): sending again")
                    continue
                return self._settle(cid, found)
            else:
                return self._settle(cid, reply)

    def _resync_clock(self) -> None:
        try:
            self._call("load_time_difference")
            self.client.options["adjustForTimeDifference"] = True
        except Exception as exc:
            log.warning("clock resync failed: %s", _scrub(exc, self._secrets))

    def _lookup(self, cid: str, sent_at: float | None = None) -> dict[str, Any] | None:
        """The exchange's order for ``cid``: its dict, None when it was never placed (several "not found" in a
        row), or ``OrderUnresolved`` when the exchange does not answer for ``resolve_timeout_s``."""
        deadline = self.clock() + self.resolve_timeout_s
        not_found, attempt = 0, 0
        while True:
            try:
                return self._call("fetch_order", None, self.symbol, {"origClientOrderId": cid})
            except ccxt.OrderNotFound:  # "not found" right after a send can be transient (Binance reads memory, then DB)
                not_found += 1
                settled = sent_at is None or self.clock() - sent_at >= self.not_found_settle_s
                if not_found >= self.not_found_needed and settled:
                    return None
            except BrokerHalted:
                raise
            except Exception as exc:
                kind = classify(exc)
                if kind == "ban":
                    raise self._ban(exc) from None
                if kind == "throttle":
                    self.sleep(retry_after_seconds(self.client, self.throttle_default_s))
                    continue
                if kind == "clock":
                    self._resync_clock()
                not_found = 0
            attempt += 1
            if self.clock() > deadline:
                raise OrderUnresolved(f"order {cid}: the exchange has not said whether it was placed "
                                      f"({attempt} queries in {self.resolve_timeout_s:g} s); nothing new is sent "
                                      "until it does")
            self.sleep(self._backoff(attempt))

    # ------------------------------------------------------------------ settling
    def _settle(self, cid: str, order: dict[str, Any]) -> list[Fill]:
        """Journal the exchange's word on ``cid`` and its trades; the fills not seen before."""
        status = _STATUS.get(str(order.get("status")), "unknown")
        if status == "open":  # a market order rests only for an instant: look again
            for attempt in range(self.lookup_tries):
                self.sleep(self._backoff(attempt))
                order = self._lookup(cid) or order
                status = _STATUS.get(str(order.get("status")), "unknown")
                if status != "open":
                    break
        trades = self._trades(order)
        fills = self._journal_fills(cid, trades, int(order.get("timestamp") or order.get("lastTradeTimestamp") or 0))
        filled = float(order.get("filled") or 0.0)
        average = float(order.get("average") or 0.0) or None
        journaled = sum(float(f["quantity"]) for f in self.journal.fills_of(cid))
        limit = float((self.journal.order(cid) or {}).get("quantity") or math.inf)
        if status != "open" and journaled < min(filled, limit) * (1 - 1e-9) - 1e-12:
            # the exchange filled more than the journal has trades for (they could not be read): closing the order now
            # would lose those fills for good (a final order is never looked up again) and leave the account short of
            # the position the exchange holds. It stays `unknown`: resolve_pending reads its trades before anything new
            note = f"trades missing: {journaled:g} of {filled:g} filled journaled; looked up again before the next order"
            self.journal.update_order(cid, "unknown", note=note, exchange_id=str(order.get("id")), filled=filled,
                                      average=average)
            self.on_event("fills_missing", client_id=cid, journaled=journaled, filled=filled)
            return fills
        self.journal.update_order(cid, status, exchange_id=str(order.get("id")), filled=filled, average=average)
        return fills

    def _trades(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        trades = [t for t in (order.get("trades") or []) if t.get("id") is not None]
        filled = float(order.get("filled") or 0.0)
        if filled > 0.0 and sum(float(t.get("amount") or 0.0) for t in trades) < filled * (1 - 1e-9):
            try:  # the reply did not carry every trade (ACK / RESULT replies, a lookup): ask for them
                trades = self._call("fetch_my_trades", self.symbol, None, None, {"orderId": order.get("id")})
            except BrokerHalted:
                raise
            except Exception as exc:
                log.warning("trades of order %s unavailable: %s", order.get("id"), _scrub(exc, self._secrets))
        return trades

    def _journal_fills(self, cid: str, trades: list[dict[str, Any]], order_ms: int = 0) -> list[Fill]:
        """Journal each trade not seen before (by trade id; a FULL reply's fills carry no time of their own: the
        order's transaction time stands in) and return them as the env's fills."""
        intent = self.journal.order(cid) or {}
        limit = float(intent.get("quantity") or math.inf)
        done = sum(float(f["quantity"]) for f in self.journal.fills_of(cid))
        out = []
        for t in sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id")))):
            amount = float(t.get("amount") or 0.0)
            price = float(t.get("price") or 0.0)
            if amount <= 0.0 or price <= 0.0:
                continue
            if self.journal.has_fill(str(t["id"])):
                continue  # seen before (a duplicate event, a replayed query): applied once
            if done + amount > limit * (1 + 1e-9) + 1e-12:
                self.journal.event("overfill", None, client_id=cid, trade_id=str(t["id"]), amount=amount,
                                   order_quantity=limit, already_filled=done)
                self.on_event("overfill", client_id=cid, trade_id=str(t["id"]))
                continue
            side = str(t.get("side") or intent.get("side"))
            fee = t.get("fee") or {}
            fee_cost = float(fee.get("cost") or 0.0)
            fee_asset = fee.get("currency")
            fee_base = fee_cost if fee_asset == self.base else 0.0
            if fee_asset in (None, self.quote):
                fee_quote = fee_cost
            elif fee_asset == self.base:
                fee_quote = fee_cost * price
            else:  # a fee in a third asset (BNB): valued at nothing here, said loudly
                fee_quote = 0.0
                self.journal.event("fee_other_asset", None, client_id=cid, asset=fee_asset, cost=fee_cost)
            time_ms = int(t.get("timestamp") or order_ms or 0)
            if self.journal.record_fill(trade_id=str(t["id"]), client_id=cid, time_ms=time_ms, side=side,
                                        quantity=amount, price=price, fee=fee_cost, fee_asset=fee_asset,
                                        fee_quote=fee_quote):
                done += amount
                signed = amount if side == "buy" else -amount
                out.append(Fill(cid, time_ms, signed - fee_base, price, fee_quote))
        return out

    # ------------------------------------------------------------------ restart / reconcile
    def resolve(self, row: dict[str, Any]) -> list[Fill]:
        """Settle a journaled order whose outcome this process does not know (a restart, an earlier timeout):
        look it up by client id; sent again only when the exchange proves it was never placed."""
        cid = row["client_id"]
        if row["status"] in ORDER_FINAL:
            return []
        found = self._lookup(cid)
        if found is not None:
            self.journal.event("reconciled", row["bar_ms"], client_id=cid, found=True,
                               status=str(found.get("status")))
            return self._settle(cid, found)
        if row["status"] == "intent" and not row["attempts"]:
            note = "never sent (the runner stopped between the intent and the request)"
        else:
            note = "not found at the exchange: never placed"
        self.journal.update_order(cid, "not_placed", note=note)
        self.journal.event("reconciled", row["bar_ms"], client_id=cid, found=False, note=note)
        return []

    def resolve_pending(self) -> list[Fill]:
        """Settle every unresolved order of the session (called before any new order and at start)."""
        fills: list[Fill] = []
        for row in self.journal.unresolved_orders():
            fills += self.resolve(row)
        return fills

    def balances(self) -> tuple[float, float]:
        """(free quote, total base) at the exchange."""
        bal = self._call("fetch_balance")
        quote = float((bal.get(self.quote) or {}).get("free") or 0.0)
        base = float((bal.get(self.base) or {}).get("total") or 0.0)
        return quote, base


class PaperBroker:
    """Paper trading: the order fills at the open of the next bar the feed delivers, by the env's own fill model
    (``fill(action, open, volume) -> (qty, price, fee)``: the kernel's slippage, fees and exchange rules), and
    is journaled like a real one (trade id ``paper-<client id>``)."""

    def __init__(self, journal: Journal, fill: Callable[[float, float, float], tuple[float, float, float]]) -> None:
        self.journal, self.fill = journal, fill
        self.pending: list[Order] = []

    def execute(self, order: Order) -> list[Fill]:
        if order.side == "none":
            return []
        if self.journal.record_intent(order.client_id, order.decision_time_ms, order.side, order.quantity,
                                      order.reference_price):
            self.journal.update_order(order.client_id, "open", note="paper: fills at the next bar's open")
        self.pending.append(order)
        return []

    def on_bars(self, times_ms, opens, volumes) -> list[Fill]:
        """The first new bar's open fills every pending order."""
        if not self.pending or len(times_ms) == 0:
            return []
        out = []
        for order in self.pending:
            qty, price, fee = self.fill(order.action, float(opens[0]), float(volumes[0]))
            cid = order.client_id
            if qty == 0.0:
                self.journal.update_order(cid, "expired", note="paper: nothing to fill at the open")
                continue
            side = "buy" if qty > 0 else "sell"
            if self.journal.record_fill(trade_id=f"paper-{cid}", client_id=cid, time_ms=int(times_ms[0]), side=side,
                                        quantity=abs(qty), price=price, fee=fee, fee_asset=None, fee_quote=fee):
                out.append(Fill(cid, int(times_ms[0]), qty, price, fee))
            self.journal.update_order(cid, "filled", filled=abs(qty), average=price)
        self.pending.clear()
        return out
