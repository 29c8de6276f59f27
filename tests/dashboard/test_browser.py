"""The dashboard in a real browser (headless Chromium from the OS, driven by Playwright): login required and
rate-limited; the runs page lists the trained runs; the run page's chart holds one marker per fill of trades.csv;
a live session trading through the replay exchange appears and its equity updates in the open page within 2 s of
the journal's new row; Flatten from the page reaches the journal (with the user) and the exchange (the runner
goes to cash); every page renders without a console error (screenshots of each are kept in ``shots``)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from dash_synthetic import PASSWORD, USER

from spotgym.live.journal import Journal
from spotgym.live.runner import LiveSettings, run_live
from spotgym.sim import create_app, serve_in_thread
from spotgym.sim.state import DEFAULT_API_KEY

START = "2024-06-03T00:00"
TF_MS = 3_600_000
SESSION = "web"


def _run(api: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in api if r["name"] == name)


def _api_runs(page) -> list[dict[str, Any]]:
    return page.evaluate("fetch('/api/runs').then(r => r.json())")


# ---------------------------------------------------------------------------------------------------- access
def test_login_required_and_rate_limited(open_page, shots):
    page = open_page(login_first=False)
    page.goto("/runs")
    assert "/login?next=%2Fruns" in page.url
    page.screenshot(path=shots / "login.png")
    assert page.evaluate("fetch('/api/runs').then(r => r.status)") == 401
    assert page.evaluate("fetch('/api/live').then(r => r.status)") == 401
    statuses = []
    for _ in range(6):
        page.fill("#username", "mallory")
        page.fill("#password", "not-the-password")
        with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as reply:
            page.click("button[type=submit]")
        statuses.append(reply.value.status)
    assert statuses == [401] * 5 + [429]
    assert "Too many failed sign-ins" in page.inner_text(".error")
    page.screenshot(path=shots / "login-rate-limited.png")
    # the limit is per user name and address: the real user still signs in, and lands where it was going
    page.goto("/live")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/live")
    assert page.evaluate("fetch('/api/runs').then(r => r.status)") == 200
    # Chromium logs each 401 / 429 answer (the refused fetches, the failed sign-ins) as a console error: only those
    assert all("status of 401" in e or "status of 429" in e for e in page.console_errors), page.console_errors


# ---------------------------------------------------------------------------------------------------- runs
def test_runs_page_lists_the_trained_runs(open_page, dash_root, shots):
    page = open_page()
    page.goto("/runs")
    rows = page.locator("#runs-table tbody tr")
    assert rows.count() == 2
    text = page.inner_text("#runs-table")
    assert "tiny" in text and "tiny-cash" in text and "tinydash" in text
    names = {r["name"]: r for r in _api_runs(page)}
    assert set(names) == {"tiny", "tiny-cash"}
    assert Path(names["tiny"]["path"]) == dash_root / "tiny"
    assert names["tiny"]["metrics"]["agent"]["n_trades"] > 0 and names["tiny-cash"]["metrics"]["agent"]["n_trades"] == 0
    # filter, sort, then select both and compare
    page.fill("input[data-filter=runs-table]", "cash")
    assert page.locator("#runs-table tbody tr:visible").count() == 1
    page.fill("input[data-filter=runs-table]", "")
    page.click("#runs-table th:has-text('Fills')")
    first = page.locator("#runs-table tbody tr").first.inner_text()
    page.click("#runs-table th:has-text('Fills')")
    assert page.locator("#runs-table tbody tr").first.inner_text() != first
    page.screenshot(path=shots / "runs.png", full_page=True)
    button = page.locator("[data-compare-button]")
    assert button.is_disabled()
    for box in page.locator("#runs-table tbody input[type=checkbox]").all():
        box.check()
    assert button.is_enabled()
    button.click()
    page.wait_for_url("**/compare?*")
    page.wait_for_selector("#compare-chart .main-svg")
    assert page.evaluate("document.getElementById('compare-chart').data.length") >= 2
    assert page.locator("#compare-table tbody tr").count() == 2
    page.screenshot(path=shots / "compare-runs.png", full_page=True)
    assert not page.console_errors


def test_run_page_chart_holds_a_marker_per_fill(open_page, dash_root, shots):
    page = open_page()
    run = _run(_api_runs(page), "tiny")
    for split in ("test", "val"):
        trades = pd.read_csv(dash_root / "tiny" / "backtest" / split / "trades.csv")
        page.goto(f"/run/{run['id']}?split={split}")
        page.wait_for_selector("#run-main .main-svg")
        counts = page.evaluate("""() => document.getElementById('run-main')._fullData  // what is drawn
            .filter(t => t.legendgroup === 'fills').map(t => [t.name, t.x.length, t.y.length])""")
        assert len(counts) == 2 and all(n == m for _, n, m in counts)
        assert sum(n for _, n, _ in counts) == len(trades) > 0
        # each marker at its fill's real time (naive UTC on the chart) and price
        marks = page.evaluate("""() => document.getElementById('run-main')._fullData
            .filter(t => t.legendgroup === 'fills').flatMap(t => Array.from(t.x, (x, i) => [x, t.y[i]]))""")
        drawn = sorted((pd.Timestamp(x), round(y, 6)) for x, y in marks)
        expected = sorted((pd.Timestamp(t).tz_convert(None), round(p, 6))
                          for t, p in zip(pd.to_datetime(trades["timestamp"], utc=True), trades["price"]))
        assert drawn == expected
        page.screenshot(path=shots / f"run-{split}.png", full_page=True)
        # zoom: the markers stay on the price axis the candles use, at the fills' real times and prices
        page.evaluate("Plotly.relayout('run-main', {'xaxis.range': ['2024-03-01', '2024-03-05']})")
        axes = page.evaluate("""() => document.getElementById('run-main')._fullData
            .filter(t => t.type === 'candlestick' || t.legendgroup === 'fills').map(t => t.xaxis + t.yaxis)""")
        assert set(axes) == {"xy"}
    assert "Risk vetoes" in page.inner_text("main")
    assert not page.console_errors


# ---------------------------------------------------------------------------------------------------- live
@pytest.fixture(scope="module")
def live_session(dash_root, eth_1h_path) -> Iterator[dict[str, Any]]:
    """The ``tiny`` run trading in a runner thread against a replay exchange on a manual clock that the test steps;
    its journal is the default one under the run, so the dashboard finds it on its own."""
    bars = pd.read_csv(eth_1h_path)
    start_ms = int(pd.Timestamp(START, tz="UTC").value // 1_000_000)
    ts = bars["timestamp"]
    bars = bars[(ts >= start_ms - 1_200 * TF_MS) & (ts < start_ms + 300 * TF_MS)].reset_index(drop=True)
    app = create_app({"ETH/USDT@1h": bars}, start_ms=start_ms, speed="manual")
    journal_path = dash_root / "tiny" / "live" / SESSION / "journal.sqlite"
    with serve_in_thread(app) as url:
        settings = LiveSettings(mode="sim", sim_url=url, session=SESSION, journal=str(journal_path), checkpoint=True,
                                poll_seconds=0.05, drive_clock=False)
        failure: list[BaseException] = []

        def target():
            try:
                run_live(dash_root / "tiny", settings, out=lambda *_: None)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failure.append(exc)

        thread = threading.Thread(target=target, name="dash-live-runner", daemon=True)
        thread.start()
        journal = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not failure:
            time.sleep(0.05)
            if _marks(journal_path) < 1:  # read-only until the runner has made the journal (no CREATE racing it)
                continue
            journal = Journal(journal_path, SESSION)
            break
        assert not failure, failure
        assert journal is not None, "the runner wrote no journal within 60 s"
        state = {"url": url, "app": app, "journal": journal, "thread": thread, "failure": failure}
        yield state
        journal.request("stop")
        thread.join(timeout=20)
        journal.close()
        assert not thread.is_alive(), "the runner did not stop"


def _marks(path: Path) -> int:
    """Equity marks and decisions of the session both there (their minimum), read without creating anything."""
    if not path.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            return min(conn.execute(f"SELECT count(*) FROM {t} WHERE session = ?", (SESSION,)).fetchone()[0]
                       for t in ("equity", "decisions"))
    except sqlite3.Error:
        return 0


def _step(live: dict[str, Any]) -> float:
    """One bar on the replay exchange; returns when the runner has journaled its equity mark (monotonic time)."""
    j: Journal = live["journal"]
    before = len(j.frame("equity"))
    reply = requests.post(live["url"] + "/sim/step", params={"bars": 1}, timeout=10)
    assert reply.status_code == 200, reply.text
    deadline = time.monotonic() + 20
    while len(j.frame("equity")) <= before:
        assert not live["failure"], live["failure"]
        assert time.monotonic() < deadline, "the runner journaled no equity mark for the new bar"
        time.sleep(0.01)
    return time.monotonic()


def _points(page) -> int:
    return page.evaluate("(document.getElementById('live-equity').data || [{x: []}])[0].x.length")


def test_live_session_appears_and_its_equity_updates_in_the_open_page(open_page, live_session, shots):
    page = open_page()
    page.goto("/live")
    link = page.locator("#live-table a", has_text=SESSION)
    link.wait_for()
    page.screenshot(path=shots / "live.png", full_page=True)
    link.click()
    page.wait_for_selector("#live-equity .main-svg")
    assert page.inner_text("[data-field=state-badge]") == "running"
    for _ in range(3):
        before = _points(page)
        journaled = _step(live_session)
        page.wait_for_function(f"() => (document.getElementById('live-equity').data || [{{x: []}}])[0].x.length > {before}",
                               timeout=2_000)
        assert time.monotonic() - journaled < 2.0
        assert _points(page) == len(live_session["journal"].frame("equity"))
    last = live_session["journal"].frame("equity")["bar_ms"].iloc[-1]
    page.wait_for_function("() => document.querySelector('[data-field=last_bar]').textContent.length > 4")
    assert page.locator("#decisions-table tbody tr").count() >= 3
    assert page.inner_text("[data-field=last_bar]") == pd.Timestamp(int(last), unit="ms").strftime("%Y-%m-%d %H:%M")
    page.screenshot(path=shots / "live-session.png", full_page=True)
    assert not page.console_errors


def test_flatten_from_the_page_reaches_the_journal_and_the_exchange(open_page, live_session, shots):
    j: Journal = live_session["journal"]
    exchange = live_session["app"].state.exchange
    for _ in range(60):  # until the agent holds ETH
        if float(j.frame("equity")["position"].iloc[-1]) > 0:
            break
        _step(live_session)
    assert float(j.frame("equity")["position"].iloc[-1]) > 0, "the agent bought nothing in 60 bars"
    page = open_page()
    page.goto("/live")
    page.locator("#live-table a", has_text=SESSION).click()
    page.wait_for_selector("#live-equity .main-svg")
    dialogs = []
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.click("button[data-command=flatten]")
    page.wait_for_function("() => document.getElementById('command-status').textContent.includes('flatten sent')")
    assert dialogs and "Flatten the session?" in dialogs[0]
    commands = [e for e in j.frame("events").itertuples() if e.kind == "command"]
    assert [(c.payload["kind"], c.payload["user"]) for c in commands] == [("flatten", USER)]
    page.wait_for_function("() => document.querySelector('[data-field=pending]').textContent.includes('flatten')",
                           timeout=3_000)
    n_decisions = len(j.frame("decisions"))
    _step(live_session)  # the runner reads the command before its next decision: it sells everything
    deadline = time.monotonic() + 10
    while len(j.frame("decisions")) <= n_decisions:
        assert time.monotonic() < deadline, "no decision after the step"
        time.sleep(0.01)
    decisions = j.frame("decisions")
    assert decisions["risk"].iloc[-1] == "paused" and decisions["side"].iloc[-1] == "sell"
    deadline = time.monotonic() + 5
    while exchange.accounts[DEFAULT_API_KEY].balances.get("ETH", [0.0, 0.0])[0] > 1e-4:
        assert time.monotonic() < deadline, exchange.accounts[DEFAULT_API_KEY].balances
        time.sleep(0.02)
    _step(live_session)
    # in cash: what is left is less than one lot step (0.0001 ETH; the buys paid their fee in ETH), nothing to sell
    assert 0 <= float(j.frame("equity")["position"].iloc[-1]) < 1e-4
    assert sum(exchange.accounts[DEFAULT_API_KEY].balances.get("ETH", [0.0, 0.0])) < 1e-4
    assert "command_applied" in set(j.frame("events")["kind"])
    page.wait_for_function("() => document.querySelector('#decisions-table tbody tr td:nth-child(4)').textContent "
                           "=== 'paused'", timeout=3_000)
    page.wait_for_function("() => document.querySelector('[data-field=pending]').textContent === ''", timeout=3_000)
    assert page.inner_text("[data-field=paused-badge]") == "flattened: entries paused"
    page.screenshot(path=shots / "live-flattened.png", full_page=True)
    assert not page.console_errors


# ---------------------------------------------------------------------------------------------------- every page
def test_every_page_renders_without_console_errors(open_page, live_session, shots):
    page = open_page()
    runs = {r["name"]: r["id"] for r in _api_runs(page)}
    sessions = page.evaluate("fetch('/api/live').then(r => r.json())")
    sid = next(s["id"] for s in sessions if s["session"] == SESSION)
    pages = {
        "runs": "/runs", "run-cash": f"/run/{runs['tiny-cash']}", "studies": "/studies", "live-list": "/live",
        "compare-pick": "/compare", "compare-mixed": f"/compare?run={runs['tiny']}&live={sid}",
        "compare-val": f"/compare?run={runs['tiny']}&run={runs['tiny-cash']}&split=val",
    }
    for name, path in pages.items():
        reply = page.goto(path)
        assert reply.status == 200, (path, reply.status)
        page.wait_for_load_state("networkidle")
        assert page.locator("main h1").count() == 1
        page.screenshot(path=shots / f"{name}.png", full_page=True)
    page.goto("/studies")
    assert "tinydash" in page.inner_text("#studies-table")
    page.click("#studies-table a:has-text('tinydash')")
    page.wait_for_selector("#study-optimisation-history .main-svg")
    assert page.locator("#trials-table tbody tr").count() == 8
    assert page.locator("a:has-text('tiny')").count() >= 1  # best trial -> its run
    page.screenshot(path=shots / "study.png", full_page=True)
    page.goto(f"/run/{runs['tiny-cash']}")
    assert "no fills in this backtest" in page.evaluate(
        "JSON.stringify(document.getElementById('run-main').layout.annotations)")
    assert "No closed round trip" in page.inner_text("main")
    assert not page.console_errors, page.console_errors
    assert len(list(shots.glob("*.png"))) >= 8
    page.click("button:has-text('Log out')")
    page.wait_for_url("**/login")
    assert page.evaluate("fetch('/api/runs').then(r => r.status)") == 401
