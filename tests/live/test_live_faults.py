"""The live broker and feed against the real replay exchange on loopback, one test per fault of the checklist
(shared/ref/live_reliability.md, section 4) that applies to REST trading. Each asserts the figures: the orders the
exchange holds for the client order id, the POSTs sent, the journal's status history and fills (by trade id), and
the position (the sum of the fills) against the exchange's balance.

The broker's waits and clock are a fake (``FakeTime``): back-offs, Retry-After and bans cost no wall time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shutil
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import ccxt
import numpy as np
import pytest

from spotgym.envs.ports import Fill, Order
from spotgym.live.broker import BrokerHalted, CcxtBroker, client_order_id
from spotgym.live.feed import LiveFeed
from spotgym.live.journal import Journal
from spotgym.live.runner import LiveSettings, run_live
from spotgym.sim.auth import request_weight

SYMBOL = "ETH/USDT"
TF_MS = 3_600_000
START = "2024-06-03T08:00"  # the market clock's start: the bar of 07:00 has just closed
BALANCES = {"USDT": 10_000.0, "ETH": 1.0}
STEP = Decimal("0.0001")  # the replay exchange's ETH/USDT lot step


class FakeTime:
    """The broker's ``sleep`` and ``clock``: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.now += float(seconds)

    def clock(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def sim(sim_server):
    with sim_server(START, balances=BALANCES) as s:
        yield s


@pytest.fixture
def venue(sim):
    """The module's exchange, reset: clock at START, USDT 10,000 + ETH 1, no faults."""
    sim.reset()
    return sim


@dataclass
class Rig:
    sim: Any
    client: Any
    journal: Journal
    broker: CcxtBroker
    time: FakeTime
    session: str
    price: float
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    hook: Any = None

    def order(self, side: str = "buy", qty: float = 0.05, bar: int = 0) -> Order:
        """The order decided at the close of the bar ``bar`` bars after the last closed one."""
        bar_ms = self.sim.now() - TF_MS + bar * TF_MS
        return Order(client_id=client_order_id(self.session, bar_ms), symbol=SYMBOL, side=side, quantity=qty,
                     reference_price=self.price, action=1.0, decision_time_ms=bar_ms)

    def history(self, cid: str) -> list[str]:
        return [h[1] for h in self.journal.order(cid)["history"]]

    def order_requests(self, since: int) -> list[tuple[str, str | None]]:
        """(method, origClientOrderId) of each /api/v3/order request since ``since`` (a POST's body is not logged)."""
        return [(r.method, r.params.get("origClientOrderId")) for r in self.sim.requests(path="/api/v3/order",
                                                                                        since=since)]

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]

    def journal_events(self, kind: str) -> list[dict[str, Any]]:
        ev = self.journal.frame("events")
        return list(ev[ev["kind"] == kind]["payload"])

    def assert_books(self, cid: str, fills: list[Fill] | None = None) -> None:
        """The journal's fills of ``cid`` are the exchange's trades of its one order, each once; the journal's
        position is the exchange's ETH change; the fills returned add up to it."""
        orders = self.sim.orders(cid)
        assert len(orders) == 1, f"{len(orders)} exchange orders for {cid}"
        trades = self.sim.trades(orders[0].order_id)
        journaled = self.journal.fills_of(cid)
        assert sorted(f["trade_id"] for f in journaled) == sorted(str(t.trade_id) for t in trades)
        assert sum(f["quantity"] for f in journaled) == pytest.approx(orders[0].executed_qty, abs=1e-12)
        row = self.journal.order(cid)
        assert row["filled"] == pytest.approx(orders[0].executed_qty, abs=1e-12)
        assert self.journal.position() == pytest.approx(self.sim.balance("ETH") - BALANCES["ETH"], abs=1e-12)
        if fills is not None:
            assert sum(f.quantity for f in fills) == pytest.approx(self.sim.balance("ETH") - BALANCES["ETH"], abs=1e-12)


@pytest.fixture
def rig(venue, tmp_path, request) -> Rig:
    session = "f-" + request.node.name[:40]
    client = venue.client()
    journal = Journal(tmp_path / "journal.sqlite", session)
    journal.open_session(mode="sim", symbol=SYMBOL, run_dir=str(tmp_path))
    ft = FakeTime()
    price = float(client.fetch_ticker(SYMBOL)["last"])
    r = Rig(venue, client, journal, None, ft, session, price)  # type: ignore[arg-type]

    def on_event(kind: str, **payload: Any) -> None:
        r.events.append((kind, payload))
        if r.hook is not None:
            r.hook(kind, payload)

    r.broker = CcxtBroker(client, journal, SYMBOL, sizer=None, sleep=ft.sleep, clock=ft.clock, resolve_timeout_s=3.0,
                          not_found_settle_s=0.0, on_event=on_event)
    yield r
    journal.close()


# ---------------------------------------------------------------------------------------------------- sending
def test_lost_reply_504_is_looked_up_not_resent(rig):
    """#2: executed, reply lost (504 / -1007): one exchange order, a query by client id before anything else, the
    fills journaled once."""
    rig.sim.set_faults([{"kind": "lost_reply"}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    assert rig.sim.injected == 1
    assert rig.broker.posts == 1
    assert rig.order_requests(mark) == [("POST", None), ("GET", cid)]  # the lookup, no resend
    assert [o.status for o in rig.sim.orders(cid)] == ["FILLED"]
    assert rig.history(cid) == ["intent", "sent", "unknown", "filled"]
    assert rig.journal.order(cid)["attempts"] == 1
    assert "order_ambiguous" in rig.kinds()
    rig.assert_books(cid, fills)
    assert sum(f.quantity for f in fills) == pytest.approx(0.05 * (1 - 0.001))  # the buy fee in ETH


def test_lost_reply_timeout_is_looked_up_not_resent(rig):
    """#2: executed, no reply before the client's timeout: the same as a 504."""
    rig.client.timeout = 800  # ms; the order executes at once, the reply is held 2.5 s
    rig.sim.set_faults([{"kind": "lost_reply", "mode": "timeout", "ms": 2500}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    assert rig.broker.posts == 1
    assert rig.order_requests(mark) == [("POST", None), ("GET", cid)]
    assert [o.status for o in rig.sim.orders(cid)] == ["FILLED"]
    assert rig.history(cid) == ["intent", "sent", "unknown", "filled"]
    assert "RequestTimeout" in rig.journal.order(cid)["last_error"]
    rig.assert_books(cid, fills)


def test_503_before_execution_is_looked_up_then_resent_under_the_same_id(rig):
    """#2/#5: 503 before the order was read: the lookup finds nothing (three "not found" in a row, with back-off),
    then the order goes again under the same client id: one exchange order."""
    rig.sim.set_faults([{"kind": "http_error", "status": 503, "path": "/api/v3/order", "count": 1}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    assert rig.order_requests(mark) == [("POST", None), ("GET", cid), ("GET", cid), ("GET", cid), ("POST", None)]
    assert rig.broker.posts == 2
    assert [o.status for o in rig.sim.orders(cid)] == ["FILLED"]
    assert rig.history(cid) == ["intent", "sent", "unknown", "intent", "sent", "filled"]
    assert rig.journal.order(cid)["attempts"] == 2
    assert rig.time.sleeps == [0.2, 0.5]  # the back-off between the "not found" answers
    rig.assert_books(cid, fills)


def test_not_found_is_final_only_after_the_request_could_have_landed(rig):
    """A request still in flight can execute until its recvWindow has passed: "not found" answers right after a
    5xx do not prove the order was never placed. The broker keeps asking (with back-off) until ``not_found_settle_s``
    after the send, then sends again under the same id: one exchange order."""
    rig.broker.not_found_settle_s = 11.0
    rig.broker.resolve_timeout_s = 60.0
    rig.sim.set_faults([{"kind": "http_error", "status": 503, "path": "/api/v3/order", "count": 1}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    rig.broker.execute(order)
    cid = order.client_id
    requests = rig.order_requests(mark)
    assert requests[0] == ("POST", None) and requests[-1] == ("POST", None)
    assert sum(1 for r in requests if r[0] == "POST") == 2 and len(requests) > 5  # kept asking past three answers
    assert sum(rig.time.sleeps) >= 11.0
    assert [o.status for o in rig.sim.orders(cid)] == ["FILLED"]


class NotFoundFirst:
    """A client whose first ``n`` order queries say "not found" (Binance's -2013 right after a placement)."""

    def __init__(self, client: Any, n: int) -> None:
        self._client, self._left = client, n

    def fetch_order(self, *args: Any, **kwargs: Any) -> Any:
        if self._left > 0:
            self._left -= 1
            raise ccxt.OrderNotFound('binance {"code":-2013,"msg":"Order does not exist."}')
        return self._client.fetch_order(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_transient_not_found_is_not_terminal(rig):
    """#5: executed, reply lost, then "not found" twice: below the threshold (3 in a row) the broker asks again
    instead of declaring it unplaced: no resend, one exchange order."""
    rig.broker.client = NotFoundFirst(rig.client, 2)
    rig.sim.set_faults([{"kind": "lost_reply"}])
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    assert rig.broker.posts == 1
    assert [o.status for o in rig.sim.orders(cid)] == ["FILLED"]
    assert rig.history(cid) == ["intent", "sent", "unknown", "filled"]
    rig.assert_books(cid, fills)


def test_429_waits_retry_after_then_sends_again(rig):
    """#12: 429 with Retry-After 7: the broker sleeps 7 s (nothing sent meanwhile) and sends again; one order."""
    rig.sim.set_faults([{"kind": "http_error", "status": 429, "retry_after": 7, "path": "/api/v3/order"}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    assert rig.time.sleeps == [7.0]
    assert rig.order_requests(mark) == [("POST", None), ("POST", None)]
    assert rig.broker.posts == 2
    assert ("throttled", {"client_id": cid, "retry_after_s": 7.0}) in rig.events
    assert rig.history(cid) == ["intent", "sent", "intent", "sent", "filled"]
    rig.assert_books(cid, fills)


def test_418_halts_and_sends_nothing_until_the_ban_passes(rig):
    """#12: 418 (Retry-After 120): BrokerHalted, the order journaled not placed; no request of any kind leaves
    before the ban's end; then trading goes on."""
    rig.sim.set_faults([{"kind": "http_error", "status": 418, "retry_after": 120, "path": "/api/v3/order"}])
    first = rig.order("buy", 0.05, bar=0)
    with pytest.raises(BrokerHalted) as info:
        rig.broker.execute(first)
    assert info.value.until == pytest.approx(rig.time.now + 120)
    assert rig.journal.order(first.client_id)["status"] == "not_placed"
    assert rig.sim.orders() == []
    assert [k for k in rig.kinds() if k == "ban"] == ["ban"]

    mark, posts, sent = rig.sim.mark(), rig.broker.posts, rig.broker.requests
    rig.time.sleep(119)
    second = rig.order("buy", 0.05, bar=1)
    with pytest.raises(BrokerHalted):
        rig.broker.execute(second)
    assert rig.sim.requests(since=mark) == []  # nothing at all reached the exchange during the ban
    assert (rig.broker.posts, rig.broker.requests) == (posts, sent)
    assert rig.journal.order(second.client_id)["status"] == "not_placed"
    assert rig.journal.order(second.client_id)["attempts"] == 0  # never counted as sent

    rig.time.sleep(2)  # the ban is over
    third = rig.order("buy", 0.05, bar=2)
    fills = rig.broker.execute(third)
    assert [o.client_id for o in rig.sim.orders()] == [third.client_id]
    rig.assert_books(third.client_id, fills)


@pytest.mark.parametrize(("code", "msg"), [(-2010, "Account has insufficient balance for requested action."),
                                           (-1013, "Market is closed.")], ids=["insufficient-balance", "market-closed"])
def test_reject_is_journaled_and_not_resent(rig, code, msg):
    """A definitive reject (-2010 insufficient balance; #15's "Market is closed.", -1013): journaled `rejected` with
    the exchange's message, no lookup, no resend, no crash, the account unchanged."""
    rig.sim.set_faults([{"kind": "reject", "code": code, "msg": msg}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    assert rig.broker.execute(order) == []
    cid = order.client_id
    assert rig.order_requests(mark) == [("POST", None)]
    assert rig.broker.posts == 1
    row = rig.journal.order(cid)
    assert rig.history(cid) == ["intent", "sent", "rejected"]
    assert msg in row["last_error"]
    assert rig.sim.orders() == [] and rig.journal.fills_of(cid) == []
    assert (rig.sim.balance("USDT"), rig.sim.balance("ETH")) == (BALANCES["USDT"], BALANCES["ETH"])
    assert "order_rejected" in rig.kinds()


def test_partial_fill_of_a_market_order_expires_with_its_fills(rig):
    """#7: a MARKET order filled 40 % then EXPIRED: journaled `expired` (not a reject) with its fills; position =
    the sum of the fills; nothing resent."""
    rig.sim.set_faults([{"kind": "partial_fill", "fraction": 0.4}])
    order = rig.order("buy", 0.1)
    fills = rig.broker.execute(order)
    cid = order.client_id
    ex = rig.sim.orders(cid)
    assert [o.status for o in ex] == ["EXPIRED"] and ex[0].executed_qty == pytest.approx(0.04)
    assert rig.history(cid) == ["intent", "sent", "expired"]
    assert rig.broker.posts == 1
    assert "order_rejected" not in rig.kinds()
    rig.assert_books(cid, fills)
    assert rig.journal.position() == pytest.approx(0.04 * (1 - 0.001))


def test_same_decision_twice_is_never_sent_twice(rig):
    """#4: the exchange accepts a reused client id once the first order is FILLED (Binance's rule), so the guard
    is the journal's: executing the same decision again settles it from the journal, no POST."""
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    mark = rig.sim.mark()
    assert rig.broker.execute(order) == []
    assert rig.broker.posts == 1 and rig.order_requests(mark) == []
    rig.assert_books(order.client_id, fills)
    # the exchange itself would have taken it: a raw second POST under the same id is accepted
    rig.client.create_order(SYMBOL, "market", "buy", 0.01, None, {"newClientOrderId": order.client_id})
    assert len(rig.sim.orders(order.client_id)) == 2


def test_duplicate_trades_are_applied_once(rig):
    """#8: the same trades seen again (a later lookup, a replayed query, the reply's fills fed twice): each trade
    id is journaled once and returned once."""
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    assert fills
    found = rig.broker._lookup(cid)
    assert rig.broker._settle(cid, found) == []  # the lookup's trades (myTrades) carry the same ids
    trades = rig.client.fetch_my_trades(SYMBOL, None, None, {"orderId": found["id"]})
    assert rig.broker._journal_fills(cid, trades + trades) == []
    assert rig.history(cid) == ["intent", "sent", "filled", "filled"]
    rig.assert_books(cid, fills)


def test_overfill_is_flagged_not_applied(rig):
    """#9: fills adding up to more than the order's quantity: the excess trade is flagged (`overfill` event), not
    journaled, not returned."""
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)

    def trade(tid: str, amount: float) -> dict[str, Any]:
        return {"id": tid, "amount": amount, "price": rig.price, "side": "buy", "timestamp": 1,
                "fee": {"cost": 0.0, "currency": "USDT"}}

    assert rig.broker._journal_fills(order.client_id, [trade("t-extra", 0.01)]) == []  # the order is filled already
    rig.assert_books(order.client_id, fills)

    cid = client_order_id(rig.session, 0)  # an order of 0.1 whose trades come in by hand
    rig.journal.record_intent(cid, 0, "buy", 0.1, rig.price)
    first = rig.broker._journal_fills(cid, [trade("t1", 0.06)])
    assert [f.quantity for f in first] == [0.06]
    assert rig.broker._journal_fills(cid, [trade("t2", 0.06)]) == []
    assert [f["trade_id"] for f in rig.journal.fills_of(cid)] == ["t1"]
    flagged = rig.journal_events("overfill")
    assert [e["trade_id"] for e in flagged] == ["t-extra", "t2"]
    assert flagged[1] == {"client_id": cid, "trade_id": "t2", "amount": 0.06, "order_quantity": 0.1,
                          "already_filled": 0.06}
    assert ("overfill", {"client_id": cid, "trade_id": "t2"}) in rig.events


@pytest.mark.parametrize("skew_ms", [15_000, -1_500], ids=["server-ahead-15s", "server-behind-1.5s"])
def test_clock_skew_resyncs_and_retries_once(rig, skew_ms):
    """#14: the server's clock off by more than recvWindow allows: -1021 (rejected unread), a resync through
    /api/v3/time and one retry; one exchange order."""
    rig.sim.set_faults([{"kind": "clock_skew", "ms": skew_ms}])
    mark = rig.sim.mark()
    order = rig.order("buy", 0.05)
    fills = rig.broker.execute(order)
    cid = order.client_id
    seen = [(r.method, r.path) for r in rig.sim.requests(since=mark)]
    assert seen == [("POST", "/api/v3/order"), ("GET", "/api/v3/time"), ("POST", "/api/v3/order")]
    assert rig.broker.posts == 2
    assert rig.history(cid) == ["intent", "sent", "intent", "sent", "filled"]
    assert abs(rig.client.options["timeDifference"] + skew_ms) < 1_000
    rig.assert_books(cid, fills)


def test_maintenance_before_the_order_blocks_until_resolved(rig):
    """#15: maintenance (every request 503): the order's fate cannot be learnt -> it stays `unknown`, the decision
    is `blocked`, and the next decision sends nothing while the exchange stays down; once it is back,
    resolve_pending finds the order never placed, and trading goes on."""
    rig.sim.set_faults([{"kind": "maintenance", "ms": 60_000}])
    first = rig.order("buy", 0.05, bar=0)
    assert rig.broker.execute(first) == []
    assert rig.journal.order(first.client_id)["status"] == "unknown"
    assert rig.kinds().count("blocked") == 1
    posts = len(rig.sim.requests("POST", "/api/v3/order"))

    second = rig.order("buy", 0.05, bar=1)
    assert rig.broker.execute(second) == []
    assert rig.kinds().count("blocked") == 2
    assert rig.journal.order(second.client_id) is None  # not even an intent: nothing new while one is unresolved
    assert len(rig.sim.requests("POST", "/api/v3/order")) == posts and rig.broker.posts == 1

    rig.sim.clear_faults()  # the exchange is back
    assert rig.broker.resolve_pending() == []
    assert rig.journal.order(first.client_id)["status"] == "not_placed"
    assert rig.sim.orders() == []
    fills = rig.broker.execute(second)
    rig.assert_books(second.client_id, fills)
    assert len(rig.journal_events("blocked")) == 2


def test_maintenance_after_execution_blocks_then_settles(rig):
    """#15: the order executed, its reply lost, and the exchange goes into maintenance before the lookup: blocked
    while down (no new order), then resolve_pending finds it filled and journals its fills once."""

    def down_on_ambiguity(kind: str, payload: dict[str, Any]) -> None:
        if kind == "order_ambiguous":
            rig.sim.set_faults([{"kind": "maintenance", "ms": 60_000}])

    rig.hook = down_on_ambiguity
    rig.sim.set_faults([{"kind": "lost_reply"}])
    first = rig.order("buy", 0.05, bar=0)
    assert rig.broker.execute(first) == []
    assert rig.history(first.client_id) == ["intent", "sent", "unknown"]
    assert [o.status for o in rig.sim.orders(first.client_id)] == ["FILLED"]
    second = rig.order("buy", 0.05, bar=1)
    assert rig.broker.execute(second) == []
    assert rig.kinds().count("blocked") == 2 and rig.broker.posts == 1
    assert rig.journal.fills_of(first.client_id) == []

    rig.hook = None
    rig.sim.clear_faults()
    fills = rig.broker.resolve_pending()
    assert rig.journal.order(first.client_id)["status"] == "filled"
    rig.assert_books(first.client_id, fills)
    assert [e["client_id"] for e in rig.journal_events("reconciled")] == [first.client_id]
    assert rig.broker.resolve_pending() == []  # settled once
    assert len(rig.sim.orders()) == 1


def test_trades_unavailable_keep_the_order_open_until_its_fills_are_journaled(rig):
    """The order's trades cannot be read when it is looked up (myTrades 500): it must not be closed without its
    fills; the next resolve journals them."""
    rig.sim.set_faults([{"kind": "lost_reply"},
                        {"kind": "http_error", "status": 500, "path": "/api/v3/myTrades", "count": 1}])
    order = rig.order("buy", 0.05)
    assert rig.broker.execute(order) == []
    cid = order.client_id
    assert rig.journal.fills_of(cid) == []
    assert rig.journal.order(cid)["status"] not in ("filled", "expired", "canceled", "rejected", "not_placed")
    fills = rig.broker.resolve_pending()
    assert rig.journal.order(cid)["status"] == "filled"
    rig.assert_books(cid, fills)
    assert rig.broker.posts == 1


# ---------------------------------------------------------------------------------------------------- filters, fees
def test_random_quantities_through_amount_to_precision_never_fail_a_filter(rig):
    """#16: 24 random quantities with many digits, each through amount_to_precision: every order is accepted (no
    -1013), its quantity on the lot step and not in scientific notation; quantities below one step send nothing."""
    rng = np.random.default_rng(16)
    texts = []
    for i in range(12):
        qty = float(10 ** rng.uniform(np.log10(0.002), np.log10(0.4))) + float(rng.uniform(0, 1e-7))
        text = rig.broker.amount_text(qty)
        texts.append(text)
        assert "e" not in text.lower() and Decimal(text) % STEP == 0 and 0 <= qty - float(text) < float(STEP)
        buy = rig.order("buy", qty, bar=2 * i)
        rig.broker.execute(buy)
        sell = rig.order("sell", float(text) * (1 - float(rng.uniform(0, 0.5))), bar=2 * i + 1)
        rig.broker.execute(sell)
    statuses = list(rig.journal.frame("orders")["status"])
    assert statuses == ["filled"] * 24
    for o in rig.sim.orders():
        assert o.status == "FILLED" and Decimal(repr(o.orig_qty)) % STEP == 0
    assert [str(Decimal(repr(o.orig_qty))) for o in rig.sim.orders()][::2] == [str(Decimal(t)) for t in texts]
    assert rig.broker.posts == 24
    # below one lot step: nothing to send, said so, nothing journaled as an order
    tiny = rig.order("buy", 0.00004, bar=30)
    assert rig.broker.execute(tiny) == []
    assert rig.journal.order(tiny.client_id) is None and rig.broker.posts == 24
    assert rig.journal_events("no_order")[-1]["client_id"] == tiny.client_id
    assert rig.journal.position() == pytest.approx(rig.sim.balance("ETH") - BALANCES["ETH"], abs=1e-9)


def test_buy_fee_in_base_is_net_and_valued_in_quote(rig):
    """#17: the sim takes a BUY's fee in ETH (Binance's default): the fill is the quantity net of the fee, the fee
    valued at the fill price; the SELL of the position floored to the step goes through (no -2010), its fee in
    USDT; the dust left is under one step."""
    order = rig.order("buy", 0.1)
    fills = rig.broker.execute(order)
    rows = rig.journal.fills_of(order.client_id)
    assert rows and all(r["fee_asset"] == "ETH" for r in rows)
    for r in rows:
        assert r["fee"] == pytest.approx(r["quantity"] * 0.001)
        assert r["fee_quote"] == pytest.approx(r["fee"] * r["price"])
    assert sum(f.quantity for f in fills) == pytest.approx(0.1 - sum(r["fee"] for r in rows))
    assert [f.fee for f in fills] == pytest.approx([r["fee_quote"] for r in rows])
    rig.assert_books(order.client_id, fills)

    position = rig.journal.position()
    free = rig.client.fetch_balance()["ETH"]["free"] - BALANCES["ETH"]
    sell = rig.order("sell", float(rig.broker.amount_text(min(free, position))), bar=1)
    rig.broker.execute(sell)
    assert rig.journal.order(sell.client_id)["status"] == "filled"
    sold = rig.journal.fills_of(sell.client_id)
    assert all(r["fee_asset"] == "USDT" and r["fee_quote"] == r["fee"] for r in sold)
    dust = rig.journal.position()
    assert 0 <= dust < float(STEP)
    assert dust == pytest.approx(rig.sim.balance("ETH") - BALANCES["ETH"], abs=1e-12)


# ---------------------------------------------------------------------------------------------------- the feed
class FeedClient:
    """A real client whose klines can be doctored: ``scramble`` (duplicates, reverse order, stale bars), ``freeze_at``
    (no bar at or after this open time: the exchange stops closing bars) and a fake market clock ``now``."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.scramble = False
        self.freeze_at: int | None = None
        self.now: int | None = None
        self.calls = 0

    def fetch_ohlcv(self, *args: Any, **kwargs: Any) -> list[list[float]]:
        self.calls += 1
        rows = self._client.fetch_ohlcv(*args, **kwargs)
        if self.freeze_at is not None:
            rows = [r for r in rows if r[0] < self.freeze_at]
        if self.scramble and rows:
            old = self._client.fetch_ohlcv(SYMBOL, "1h", rows[0][0] - 5 * TF_MS, 3)
            rows = list(reversed(rows)) + rows[:2] + old
        return rows

    @property
    def last_response_headers(self) -> dict[str, str]:
        headers = dict(self._client.last_response_headers or {})
        if self.now is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "x-sim-time"} | {"X-Sim-Time": str(self.now)}
        return headers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _feed(client: Any, ft: FakeTime, events: list, **kwargs: Any) -> LiveFeed:
    return LiveFeed(client, SYMBOL, TF_MS, lambda bars: bars, poll_s=60.0, sleep=ft.sleep,
                    on_event=lambda kind, **p: events.append((kind, p)), **kwargs)


def _times(bars) -> list[int]:
    return [int(t) for t in bars.index.as_unit("ms").asi8]


def test_feed_backfills_a_gap_each_bar_once_in_order(venue, eth_1h_bars):
    """#11: three bars close between two polls (a dropped connection, a stall): the next poll delivers all three,
    in order, each once, as the exchange has them; the bar still open is never delivered."""
    ft, events = FakeTime(), []
    feed = _feed(venue.client(), ft, events)
    t0 = venue.now()
    feed.start(t0 - TF_MS)
    venue.step(3)
    bars = feed.next_rows()
    assert _times(bars) == [t0, t0 + TF_MS, t0 + 2 * TF_MS]
    expected = eth_1h_bars.set_index("timestamp").loc[_times(bars), ["open", "high", "low", "close", "volume"]]
    np.testing.assert_allclose(bars[["open", "high", "low", "close", "volume"]].to_numpy(), expected.to_numpy())
    assert ("backfill", {"first_ms": t0, "bars": 3}) in events
    venue.step(1)
    assert _times(feed.next_rows()) == [t0 + 3 * TF_MS]
    assert (feed.bars_delivered, feed.backfilled) == (4, 2)
    assert feed.last_ms + TF_MS == venue.now()  # the bar open now is not delivered
    assert ft.sleeps == []  # every bar was there at the first poll


def test_feed_drops_duplicates_out_of_order_and_old_bars(venue):
    """#8 (bars): the exchange answers with duplicates, in reverse order and with bars already delivered: each
    new bar once, in order; a poll with nothing new delivers nothing."""
    ft, events = FakeTime(), []
    client = FeedClient(venue.client())
    client.scramble = True
    feed = _feed(client, ft, events, should_stop=lambda: client.calls >= 2)
    t0 = venue.now()
    feed.start(t0 - TF_MS)
    venue.step(2)
    assert _times(feed.next_rows()) == [t0, t0 + TF_MS]
    assert feed.next_rows() is None  # polled again: only duplicates and old bars came, nothing delivered
    assert feed.bars_delivered == 2 and client.calls == 2


def test_feed_stale_watchdog_fires_when_no_bar_closes_for_two_timeframes(venue):
    """#10: the exchange stops closing bars while its clock runs on: `feed_stale` once the last bar is more than 2
    timeframes + grace old (and once only); no bar is delivered meanwhile; `feed_recovered` when bars come back,
    the missed ones backfilled."""
    ft, events = FakeTime(), []
    client = FeedClient(venue.client())
    t0 = venue.now()
    client.freeze_at = t0  # no bar after the last closed one
    client.now = t0

    def sleep(seconds: float) -> None:  # the market clock runs while the feed waits
        ft.sleep(seconds)
        client.now += int(seconds * 1000)

    feed = LiveFeed(client, SYMBOL, TF_MS, lambda bars: bars, poll_s=600.0, stale_bars=2.0, grace_s=10.0, sleep=sleep,
                    on_event=lambda kind, **p: events.append((kind, p)), should_stop=lambda: client.now > t0 + 4 * TF_MS)
    feed.start(t0 - TF_MS)
    assert feed.next_rows() is None
    stale = [p for k, p in events if k == "feed_stale"]
    assert len(stale) == 1 and feed.stale
    assert 2 * 3600 + 10 < stale[0]["lag_s"] <= 2 * 3600 + 10 + 600
    assert feed.bars_delivered == 0

    client.freeze_at = client.now = None  # the exchange is back, three bars later
    venue.step(3)
    feed.should_stop = lambda: False
    assert _times(feed.next_rows()) == [t0, t0 + TF_MS, t0 + 2 * TF_MS]
    assert not feed.stale and ("feed_recovered", {"bars": 3}) in events
    assert [k for k, _ in events].count("feed_stale") == 1


# ---------------------------------------------------------------------------------------------------- keys
LEAK_KEY = "LeakCheckKey7f3a9c0e5b1d2468ACEGIKMOQSUW"
LEAK_SECRET = "LeakCheckSecret/9b8a7c6d+5e4f3a2b1c0d=XYZ"


SIGNATURE = re.compile(r"signature=[0-9a-fA-F]{16}")


@pytest.fixture(scope="module")
def leak_session(tiny_run, sim_server, tmp_path_factory) -> dict[str, Any]:
    """#20: a short session through run_live against a replay exchange holding a known key, with DEBUG logging on
    for ccxt and urllib3 (a handler on the root logger, as an operator would configure it) and faults whose errors
    echo requests. Returns ``texts``: every text it left (stdout, stderr, the log, the summary and each file under
    the run directory, the default journal's place), and ``weights``: the request weight it used (#13). A redaction
    filter left by an earlier test is taken off meanwhile."""
    from spotgym.live import keys as keys_mod

    run = tmp_path_factory.mktemp("leak") / "run"
    shutil.copytree(tiny_run, run)
    loggers = [logging.getLogger(n) for n in ("", "ccxt", "ccxt.base.exchange", "urllib3", "urllib3.connectionpool",
                                              "spotgym")]
    saved = [(lg, lg.level, list(lg.filters)) for lg in loggers]
    saved_installed = keys_mod._installed
    log_text, out, err = io.StringIO(), io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(log_text)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    try:
        keys_mod._installed = None
        for lg in loggers:
            lg.filters = [f for f in lg.filters if not isinstance(f, keys_mod.SecretRedactor)]
            lg.setLevel(logging.DEBUG)
        loggers[0].addHandler(handler)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                sim_server(START, api_key=LEAK_KEY, api_secret=LEAK_SECRET) as sim:
            sim.set_faults([{"kind": "lost_reply"}, {"kind": "http_error", "status": 500, "path": "/api/v3/myTrades"},
                            {"kind": "reject"}])
            settings = LiveSettings(mode="sim", sim_url=sim.url, sim_api_key=LEAK_KEY, sim_api_secret=LEAK_SECRET,
                                    session="leak", bars=4, checkpoint=True)
            try:
                summary = repr(run_live(run, settings))
            except Exception as exc:  # a failed session must not leak either
                summary = f"{type(exc).__name__}: {exc}"
            injected = sim.injected
            api = [r for r in sim.requests() if r.path.startswith("/api/")]
            first_post = next(i for i, r in enumerate(api) if (r.method, r.path) == ("POST", "/api/v3/order"))
            weights = {"startup": sum(request_weight(r.method, r.path, r.params) for r in api[:first_post]),
                       "session": sum(request_weight(r.method, r.path, r.params) for r in api), "requests": len(api)}
    finally:
        loggers[0].removeHandler(handler)
        for lg, level, filters in saved:
            lg.setLevel(level)
            lg.filters = filters
        keys_mod._installed = saved_installed
    assert injected >= 2, "the faults did not bite"
    assert "LeakCheck" not in summary and "orders" in summary, summary
    texts = {"stdout": out.getvalue(), "stderr": err.getvalue(), "summary": summary, "log": log_text.getvalue()}
    for path in run.rglob("*"):
        if path.is_file():
            texts[str(path.relative_to(run))] = path.read_bytes().decode("latin-1")
    return {"texts": texts, "weights": weights}


def _leaks(texts: dict[str, str]) -> dict[str, list[str]]:
    needles = (LEAK_KEY, LEAK_SECRET, urllib.parse.quote(LEAK_SECRET, safe=""))
    found = {name: [n for n in needles if n in text] + SIGNATURE.findall(text)[:1] for name, text in texts.items()}
    return {name: hits for name, hits in found.items() if hits}


def test_no_key_or_secret_in_the_journal_files_or_output(leak_session):
    """#20: the journal (and every other file under the run directory), stdout, stderr and the summary hold no key,
    secret or request signature."""
    texts = leak_session["texts"]
    assert any(name.endswith("journal.sqlite") for name in texts)
    assert len(texts["stdout"]) > 0
    assert _leaks({k: v for k, v in texts.items() if k != "log"}) == {}


def test_session_stays_within_the_request_weight_budget(leak_session):
    """#13: start-up (markets, 1000 bars of warm-up, balances) and a four-bar session with faults use a small part of
    Binance's 6000 weight per minute."""
    weights = leak_session["weights"]
    assert weights["startup"] < 100 and weights["session"] < 300, weights


def test_no_key_or_secret_in_debug_logs(leak_session):
    """#20: the DEBUG log of ccxt and urllib3 holds no key, secret or request signature."""
    log_text = leak_session["texts"]["log"]
    assert "DEBUG" in log_text
    assert _leaks({"log": log_text}) == {}
