"""Restarts (checklist #1 and #6 of shared/ref/live_reliability.md): the runner killed with SIGKILL between sending an
order and its reply, and killed between journaling an intent and sending it. The restarted runner (same journal,
same session) settles each from the exchange by its client order id before anything else: nothing lost, nothing
sent twice, and trading goes on.

The first case runs everything as an operator would: ``spotgym sim serve`` and ``spotgym live run`` in processes of
their own, the runner killed with ``kill -9`` while the exchange holds the reply (a ``lost_reply`` fault in
``timeout`` mode: the order executes, the reply never comes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from spotgym.live.broker import client_order_id
from spotgym.live.journal import Journal
from spotgym.live.runner import LiveSettings, run_live
from spotgym.sim.state import DEFAULT_API_KEY, DEFAULT_API_SECRET
from spotgym.venue import make_exchange

REPO = Path(__file__).resolve().parents[2]
SYMBOL = "ETH/USDT"
TF_MS = 3_600_000
START = "2024-06-03T08:00"  # the market clock's start: the runner's first decision is on the bar of 07:00
START_MS = 1_717_401_600_000
HISTORY_BARS = 1_200


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("SPOTGYM_TRACEBACK", None)
    return env


class Proc:
    """A child process whose output is collected by a thread (so its pipe never fills)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        self.lines: list[str] = []
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                                     cwd=REPO)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        with open(self.log, "a", encoding="utf-8") as fh:
            for line in self.proc.stdout:  # type: ignore[union-attr]
                self.lines.append(line.rstrip("\n"))
                fh.write(line)

    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {prefix!r} line (rc {self.proc.poll()}):\n{self.text()[-3000:]}")

    def finish(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running after {timeout} s:\n{self.text()[-3000:]}") from None
        self.reader.join(5)
        return rc

    def stop(self) -> None:
        """Killed: nothing of it needs a graceful end (the sim would wait on the reply it holds back)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def data_file(eth_1h_bars, tmp_path_factory) -> Path:
    """The 1h ETH/USDT bars around START (the runner's warm-up fits), as a CSV the sim process reads quickly."""
    ts = eth_1h_bars["timestamp"]
    bars = eth_1h_bars[(ts >= START_MS - HISTORY_BARS * TF_MS) & (ts < START_MS + 200 * TF_MS)]
    path = tmp_path_factory.mktemp("restart_data") / "ETHUSDT_1h.csv"
    bars.to_csv(path, index=False)
    return path


@contextlib.contextmanager
def sim_process(data_file: Path, log: Path) -> Iterator[str]:
    """``spotgym sim serve`` in a process of its own (manual clock at START, the default account); yields its URL."""
    sim = Proc([sys.executable, "-m", "spotgym.cli", "sim", "serve", "--data", f"{SYMBOL}={data_file}", "--start", START,
                "--step", "manual", "--port", "0", "--api-key", DEFAULT_API_KEY, "--api-secret", DEFAULT_API_SECRET,
                "--log-level", "warning"], log)
    try:
        yield sim.wait_for("sim: listening on ", 60)
    finally:
        sim.stop()


def _journal_rows(path: Path, sql: str, *args: Any) -> list[tuple]:
    """Rows of the journal read as another process would (the runner may be writing); [] while it is not there."""
    if not path.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # the tables are not made yet
        return []


def _until(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _exchange_orders(client) -> dict[str, list[dict[str, Any]]]:
    """Every order of the account at the exchange (allOrders), by client order id."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in client.fetch_orders(SYMBOL):
        out.setdefault(o["clientOrderId"], []).append(o)
    return out


def test_kill_9_between_send_and_reply_then_restart(tiny_run, data_file, tmp_path):
    """#1: the runner is killed (SIGKILL) while its order has executed at the exchange but the reply has not come
    back. The restarted runner finds the order by its client order id (a `reconciled` event), journals it filled
    with its fills once, never sends it again, and trades on; the exchange's position equals the journal's."""
    journal_path = tmp_path / "journal.sqlite"
    session = "restart"
    with sim_process(data_file, tmp_path / "sim.log") as url:
        client = make_exchange(mode="sim", sim_url=url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET)
        client.load_markets()
        reply = requests.post(url + "/sim/faults", json={"rules": [{"kind": "lost_reply", "mode": "timeout",
                                                                    "ms": 60_000}]}, timeout=10)
        assert reply.status_code == 200, reply.text
        argv = [sys.executable, "-m", "spotgym.cli", "live", "run", str(tiny_run), "--mode", "sim", "--sim-url", url,
                "--session", session, "--journal", str(journal_path), "--checkpoint"]

        # 1. the runner sends its first order; the exchange executes it and keeps the reply
        first = Proc(argv + ["--bars", "24"], tmp_path / "runner1.log")
        try:
            cid, = _until(lambda: next(iter(_journal_rows(journal_path, "SELECT client_id FROM orders WHERE session=? "
                                                           "AND status='sent'", session)), None), 90, "an order `sent`")

            def at_exchange():
                with contextlib.suppress(Exception):
                    return client.fetch_order(None, SYMBOL, {"origClientOrderId": cid})
            placed = _until(at_exchange, 8, f"{cid} at the exchange")
            os.kill(first.proc.pid, signal.SIGKILL)  # kill -9 between the send and the reply
            assert first.finish(30) == -signal.SIGKILL
        finally:
            first.stop()
        assert placed["status"] == "closed"
        assert _journal_rows(journal_path, "SELECT status, attempts FROM orders WHERE client_id=?", cid) == [("sent", 1)]
        assert _journal_rows(journal_path, "SELECT COUNT(*) FROM fills WHERE client_id=?", cid) == [(0,)]
        decisions_before = _journal_rows(journal_path, "SELECT COUNT(*), MAX(bar_ms) FROM decisions WHERE session=?",
                                         session)[0]
        faults = requests.get(url + "/sim/faults", timeout=10).json()
        assert faults["injected"] == 1 and faults["log"][0]["kind"] == "lost_reply"

        # 2. the exchange answers again; the same command is started again
        assert requests.post(url + "/sim/faults", json={"rules": []}, timeout=10).status_code == 200
        second = Proc(argv + ["--bars", "3"], tmp_path / "runner2.log")
        try:
            assert second.finish(120) == 0, second.text()[-3000:]
        finally:
            second.stop()

        by_cid = _exchange_orders(client)
        trades = client.fetch_my_trades(SYMBOL)
        balance = client.fetch_balance()

    journal = Journal(journal_path, session)
    try:
        orders, fills = journal.frame("orders"), journal.frame("fills")
        events, decisions = journal.frame("events"), journal.frame("decisions")
        row = journal.order(cid)
        position = journal.position()
    finally:
        journal.close()

    # the killed order: one exchange order, settled from the exchange, its fills journaled once, never resent
    assert len(by_cid[cid]) == 1 and by_cid[cid][0]["status"] == "closed"
    assert row["status"] == "filled" and row["attempts"] == 1
    assert [h[1] for h in row["history"]] == ["intent", "sent", "filled"]
    assert row["filled"] == pytest.approx(by_cid[cid][0]["filled"])
    its_trades = sorted(str(t["id"]) for t in trades if t["order"] == by_cid[cid][0]["id"])
    assert sorted(fills[fills["client_id"] == cid]["trade_id"]) == its_trades
    reconciled = [p for k, p in zip(events["kind"], events["payload"], strict=True) if k == "reconciled"]
    assert reconciled == [{"client_id": cid, "found": True, "status": "closed"}]
    assert "session_resume" in set(events["kind"])

    # the whole session: nothing lost, nothing duplicated, nothing missing from the journal
    duplicated = {c: len(v) for c, v in by_cid.items() if len(v) > 1}
    lost = sorted(set(by_cid) - set(orders["client_id"]))  # exchange orders the journal does not know
    missing = sorted({str(t["id"]) for t in trades} - set(fills["trade_id"]))  # exchange trades not journaled
    assert (duplicated, lost, missing) == ({}, [], [])
    assert (orders["attempts"] <= 1).all()  # no client id POSTed twice
    assert set(orders["status"]) <= {"filled", "expired"}
    assert len(decisions) > decisions_before[0] and decisions["bar_ms"].max() > decisions_before[1]
    assert position == pytest.approx(float(balance["ETH"]["total"]), abs=1e-9)
    print(f"\nrestart figures: injections 1, exchange orders {sum(len(v) for v in by_cid.values())}, journal orders "
          f"{len(orders)}, lost {len(lost)}, duplicated {len(duplicated)}, journal rows missing {len(missing)}, "
          f"decisions {decisions_before[0]} before the kill + {len(decisions) - decisions_before[0]} after, position "
          f"{position:.4f} ETH both sides")


def test_killed_between_intent_and_send_is_never_placed(tiny_run, sim_server, tmp_path):
    """#1/#6: the runner died after journaling an intent and before sending it (the intent written by hand, never
    sent). The restarted runner asks the exchange, finds nothing, marks it `not_placed` (never sent) with a
    `reconciled` event, and trades on."""
    journal_path = tmp_path / "journal.sqlite"
    session = "intent-only"
    cid = client_order_id(session, START_MS - TF_MS)  # the decision on the bar of 07:00, the runner's first
    journal = Journal(journal_path, session)
    assert journal.record_intent(cid, START_MS - TF_MS, "buy", 1.0, 3800.0)
    journal.close()
    lines: list[str] = []
    with sim_server(START) as sim:
        summary = run_live(tiny_run, LiveSettings(mode="sim", sim_url=sim.url, session=session,
                                                  journal=str(journal_path), bars=12, checkpoint=True),
                           out=lines.append)
        exchange_orders = sim.orders()
        eth = sim.balance("ETH")
    journal = Journal(journal_path, session)
    try:
        row = journal.order(cid)
        orders, events = journal.frame("orders"), journal.frame("events")
        position = journal.position()
    finally:
        journal.close()
    assert row["status"] == "not_placed" and row["attempts"] == 0
    assert "never sent" in row["history"][-1][2]
    assert [o for o in exchange_orders if o.client_id == cid] == []
    reconciled = [p for k, p in zip(events["kind"], events["payload"], strict=True) if k == "reconciled"]
    assert [(p["client_id"], p["found"]) for p in reconciled] == [(cid, False)]
    # trading goes on: later decisions are sent and filled, one exchange order each
    traded = orders[(orders["client_id"] != cid)]
    assert len(traded) >= 1 and set(traded["status"]) == {"filled"}
    assert sorted(o.client_id for o in exchange_orders) == sorted(traded["client_id"])
    assert summary["decisions"] == 12
    assert position == pytest.approx(eth, abs=1e-9)
    # the decision on that bar is not lost with its dead intent: it goes out under the next id of the bar
    assert client_order_id(session, START_MS - TF_MS, 1) in set(traded["client_id"])
