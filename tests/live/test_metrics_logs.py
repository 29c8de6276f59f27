"""Metrics (``spotgym.live.metrics``: scraped over loopback HTTP and parsed) and structured logs
(``spotgym.live.logs``: JSON lines, redaction, the error summary and ``spotgym live logs``)."""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from spotgym.live.journal import Journal
from spotgym.live.logs import (
    JsonLogFormatter,
    SessionLogger,
    add_logs_command,
    configure_json_log,
    default_log_path,
    log_context,
    set_log_context,
    summarize_errors,
)
from spotgym.live.metrics import LiveMetrics

SECRET = "sEcR3t-9q8w7e6r5t4y3u2i1o"
BAR = 1_717_200_000_000  # 2024-06-01 00:00 UTC


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


# ------------------------------------------------------------------------------------------------- metrics
def test_metrics_scraped_over_http():
    m = LiveMetrics("s1")
    port = m.serve(0)
    try:
        assert port > 0 and m.serve(0) == port
        m.on_bar(BAR, equity=1000.0, position=0.5, cash=400.0, exposure=0.6, price=1200.0)
        m.on_bar(BAR + 3_600_000, equity=900.0, position=0.5, cash=400.0, exposure=0.55, price=1000.0)
        for status in ("sent", "filled", "filled", "rejected"):
            m.on_order(status)
        m.on_fill(1.25)
        m.on_fill(0.75)
        for seconds in (0.004, 0.02, 0.3):
            m.observe_decision(seconds)
        m.bar_received()
        assert m.order_sent() >= 0.0 and m.order_sent() is None
        m.on_feed_lag(2.5)
        m.on_feed_error()
        m.on_feed_error()
        m.on_feed_stale(True)
        m.on_feed_stale(False)
        m.on_risk(True, vetoed=True)
        got = scrape(port)
    finally:
        m.close()
    p = "spotgym_live_"
    assert value(got, p + "equity", session="s1") == 900.0
    assert value(got, p + "position", session="s1") == 0.5
    assert value(got, p + "cash", session="s1") == 400.0
    assert value(got, p + "exposure", session="s1") == 0.55
    assert value(got, p + "price", session="s1") == 1000.0
    assert value(got, p + "drawdown", session="s1") == pytest.approx(0.1)
    assert value(got, p + "last_bar_timestamp_seconds", session="s1") == (BAR + 3_600_000) / 1000
    assert value(got, p + "bars_total", session="s1") == 2
    assert value(got, p + "orders_total", session="s1", status="filled") == 2
    assert value(got, p + "orders_total", session="s1", status="rejected") == 1
    assert value(got, p + "fills_total", session="s1") == 2
    assert value(got, p + "fees_total", session="s1") == 2.0
    assert value(got, p + "decision_latency_seconds_count", session="s1") == 4
    assert value(got, p + "decision_latency_seconds_bucket", session="s1", le="0.005") >= 1
    assert value(got, p + "decision_latency_seconds_bucket", session="s1", le="0.025") >= 2
    assert value(got, p + "decision_latency_seconds_sum", session="s1") >= 0.324
    assert value(got, p + "feed_lag_seconds", session="s1") == 2.5
    assert value(got, p + "feed_errors_total", session="s1") == 2
    assert value(got, p + "feed_reconnects_total", session="s1") == 1
    assert value(got, p + "feed_stale", session="s1") == 0
    assert value(got, p + "risk_halted", session="s1") == 1
    assert value(got, p + "risk_vetoes_total", session="s1") == 1
    ours = [k for k in got if k[0].startswith(p)]
    assert ours and all(dict(labels).get("session") == "s1" for _, labels in ours)


def test_sessions_share_a_registry_and_events_move_metrics():
    reg = CollectorRegistry()
    a, b = LiveMetrics("a", reg), LiveMetrics("b", reg)
    port = a.serve(0)
    try:
        a.on_bar(BAR, equity=100.0)
        b.on_bar(BAR, equity=200.0)
        # the journal's events, as Journal / LiveRunner.event write them
        b.on_event("intent", {"client_id": "c1", "side": "buy", "quantity": 1.0})
        b.on_event("order_sent", {"client_id": "c1", "note": ""})
        b.on_event("order_filled", {"client_id": "c1", "note": "", "filled": 1.0})
        b.on_event("fill", {"trade_id": "t1", "client_id": "c1", "fee_quote": 0.2})
        b.on_event("order_rejected", {"client_id": "c2", "note": "InsufficientFunds", "last_error": "x"})
        b.on_event("order_rejected", {"client_id": "c2", "error": "InsufficientFunds"})  # the broker's alert
        b.on_event("decision", {"risk": "max_position", "halted": 0})
        b.on_event("feed_error", {"error": "NetworkError"})
        b.on_event("feed_stale", {"last_bar_ms": BAR, "lag_s": 9.0})
        b.on_event("feed_recovered", {"bars": 1})
        b.on_event("halted", {"reason": "ban"})
        got = scrape(port)
    finally:
        a.close()
    p = "spotgym_live_"
    assert value(got, p + "equity", session="a") == 100.0 and value(got, p + "equity", session="b") == 200.0
    assert value(got, p + "orders_total", session="b", status="intent") == 1
    assert value(got, p + "orders_total", session="b", status="filled") == 1
    assert value(got, p + "orders_total", session="b", status="rejected") == 1
    assert value(got, p + "fills_total", session="b") == 1 and value(got, p + "fees_total", session="b") == 0.2
    assert value(got, p + "decisions_total", session="b") == 1
    assert value(got, p + "risk_vetoes_total", session="b") == 1
    assert value(got, p + "feed_errors_total", session="b") == 1
    assert value(got, p + "feed_lag_seconds", session="b") == 9.0
    assert value(got, p + "feed_reconnects_total", session="b") == 1
    assert value(got, p + "risk_halted", session="b") == 1
    assert value(got, p + "events_total", session="b", kind="order_rejected") == 2
    assert (p + "fills_total", (("session", "a"),)) not in got or value(got, p + "fills_total", session="a") == 0


# ------------------------------------------------------------------------------------------------- logs
@pytest.fixture
def json_log(tmp_path):
    path = tmp_path / "live" / "s1" / "log.jsonl"
    handler = configure_json_log(path, "s1", [SECRET], logger="spotgym.test_logs")
    yield path, logging.getLogger("spotgym.test_logs")
    logging.getLogger("spotgym.test_logs").removeHandler(handler)
    handler.close()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_carry_session_bar_client_id_kind(json_log):
    path, lg = json_log
    lg.info("plain line")
    lg.warning("order %s rejected", "c1", extra={"bar": BAR, "client_id": "c1", "kind": "order_rejected"})
    SessionLogger(lg, session="s2").bind(kind="feed_stale").warning("stale")
    set_log_context(bar=BAR + 3_600_000)
    try:
        with log_context(client_id="c9"):
            lg.error("deep in the broker")
        lg.error("after the block")
    finally:
        set_log_context(bar=None)
    lg.debug("below the level")
    recs = lines(path)
    assert [r["message"] for r in recs] == ["plain line", "order c1 rejected", "stale", "deep in the broker",
                                            "after the block"]
    for r in recs:
        assert set(r) >= {"time", "level", "logger", "message", "session", "bar", "client_id", "kind"}
        assert r["time"].endswith("Z") and r["logger"] == "spotgym.test_logs"
    assert recs[0]["session"] == "s1" and recs[0]["bar"] is None and recs[0]["level"] == "INFO"
    assert recs[1] | {"time": None} == {"time": None, "level": "WARNING", "logger": "spotgym.test_logs",
                                        "message": "order c1 rejected", "session": "s1",
                                        "bar": "2024-06-01T00:00:00Z", "client_id": "c1", "kind": "order_rejected"}
    assert recs[2]["session"] == "s2" and recs[2]["kind"] == "feed_stale"
    assert recs[3]["bar"] == "2024-06-01T01:00:00Z" and recs[3]["client_id"] == "c9"
    assert recs[4]["bar"] == "2024-06-01T01:00:00Z" and recs[4]["client_id"] is None
    with pytest.raises(ValueError, match="unknown field"):
        set_log_context(price=1)


def test_json_log_redacts_secrets(json_log):
    path, lg = json_log
    lg.warning("key %s in GET /api/v3/order?signature=deadbeef01&x=1", SECRET)
    try:
        raise RuntimeError(f"boom with {SECRET}")
    except RuntimeError:
        lg.exception("failed", extra={"kind": "feed_error", "payload": {"secret": SECRET}})
    text = path.read_text()
    assert SECRET not in text and "deadbeef01" not in text and "***" in text
    recs = lines(path)
    assert "RuntimeError: boom with ***" in recs[1]["exc"] and recs[1]["payload"] == {"secret": "***"}


def test_formatter_alone():
    fmt = JsonLogFormatter("s1", [SECRET])
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "a %s", (SECRET,), None)
    out = json.loads(fmt.format(rec))
    assert out["message"] == "a ***" and out["session"] == "s1" and out["kind"] is None


def test_summarize_errors_of_a_log(json_log):
    path, lg = json_log
    for i in range(3):
        lg.warning("feed stale %d", i, extra={"kind": "feed_stale"})
    lg.error("rejected", extra={"kind": "order_rejected", "client_id": "c1"})
    lg.info("fine")  # not an error
    try:
        raise KeyError("x")
    except KeyError:
        lg.exception("unexpected")
    lg.warning("no kind here")
    with path.open("a") as fh:
        fh.write("not json\n")
        fh.write(json.dumps({"time": "2024-01-01T00:00:00.000Z", "level": "ERROR", "session": "other",
                             "message": "another session", "kind": "ban"}) + "\n")
    rows = summarize_errors(path, session="s1")
    by_kind = {r["kind"]: r for r in rows}
    assert set(by_kind) == {"feed_stale", "order_rejected", "KeyError", "log:spotgym.test_logs", "unparsed_line"}
    assert rows[0]["kind"] == "feed_stale" and rows[0]["count"] == 3
    assert rows[0]["example"] == "feed stale 0" and rows[0]["first"] <= rows[0]["last"]
    assert by_kind["KeyError"]["example"] == "unexpected"
    assert {r["kind"] for r in summarize_errors(path, min_level="ERROR")} == {"order_rejected", "KeyError", "ban",
                                                                              "unparsed_line"}
    with pytest.raises(ValueError, match="not found"):
        summarize_errors(path.parent / "missing.jsonl")


@pytest.fixture
def journal(tmp_path):
    path = tmp_path / "runs" / "r" / "live" / "s1" / "journal.sqlite"
    j = Journal(path, "s1")
    j.open_session(mode="sim", symbol="ETH/USDT", run_dir="r")
    j.event("feed_stale", BAR, last_bar_ms=BAR, lag_s=7300.0)
    j.event("feed_recovered", BAR, bars=2)
    j.event("feed_stale", BAR + 3_600_000, last_bar_ms=BAR + 3_600_000, lag_s=7400.0)
    j.event("order_rejected", BAR, client_id="c1", note="InsufficientFunds", last_error="InsufficientFunds")
    j.event("order_rejected", BAR, client_id="c1", error="InsufficientFunds")  # the broker's alert, same order
    j.event("order_rejected", BAR, client_id="c2", error="MinNotional")
    j.event("ban", None, retry_after_s=60.0, error="418 I'm a teapot")
    j.event("decision", BAR, risk="", halted=0)
    yield path, j
    j.close()


def test_summarize_errors_of_a_journal(journal):
    _, j = journal
    rows = summarize_errors(j)
    assert [(r["kind"], r["count"]) for r in rows] == [("feed_stale", 2), ("order_rejected", 2), ("ban", 1)]
    assert rows[1]["example"] == "InsufficientFunds" and rows[2]["example"] == "418 I'm a teapot"
    assert rows[0]["first"] <= rows[0]["last"] and rows[0]["source"].startswith("journal ")


def run_logs(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spotgym")
    sub = parser.add_subparsers(dest="command", required=True)
    live = sub.add_parser("live")
    add_logs_command(live.add_subparsers(dest="live_command", required=True))
    args = parser.parse_args(["live", "logs", *argv])
    return args.func(args)


def test_logs_command_from_the_journal(journal, capsys, monkeypatch):
    path, j = journal
    assert run_logs(["--session", "s1", "--journal", str(path), "--errors"]) == 0
    out = capsys.readouterr().out
    assert "journal events of s1: 5 in 3 kind(s)" in out and "feed_stale" in out and "e.g. InsufficientFunds" in out
    monkeypatch.chdir(path.parents[4])  # ./runs/r/live/s1/journal.sqlite is found by the session's name
    assert run_logs(["--session", "s1", "--tail", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and " ban " in out[0] and "decision" in out[1]


def test_logs_command_prefers_the_log_beside_the_journal(journal, capsys, monkeypatch):
    path, _ = journal
    assert default_log_path(path) == path.parent / "log.jsonl"
    assert default_log_path("postgresql+psycopg2://u@h/db") is None
    handler = configure_json_log(default_log_path(path), "s1", logger="spotgym.test_logs2")
    try:
        logging.getLogger("spotgym.test_logs2").error("exchange down", extra={"kind": "feed_error", "bar": BAR})
    finally:
        logging.getLogger("spotgym.test_logs2").removeHandler(handler)
        handler.close()
    monkeypatch.chdir(path.parents[4])
    assert run_logs(["--session", "s1", "--errors"]) == 0
    out = capsys.readouterr().out
    assert "feed_error" in out and "exchange down" in out and "journal events" not in out
    assert run_logs(["--session", "s1"]) == 0
    assert "[2024-06-01T00:00:00Z]: exchange down" in capsys.readouterr().out
    assert run_logs(["--session", "s1", "--journal", str(path), "--errors"]) == 0  # both when asked for the journal
    out = capsys.readouterr().out
    assert "feed_error" in out and "journal events of s1" in out


def test_logs_command_errors(tmp_path, journal, monkeypatch):
    path, _ = journal
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="give --log FILE or --journal URL"):
        run_logs(["--session", "nobody", "--errors"])
    with pytest.raises(ValueError, match="no session 'nobody'"):
        run_logs(["--session", "nobody", "--journal", str(path)])
    with pytest.raises(ValueError, match="no journal at"):
        run_logs(["--session", "s1", "--journal", str(tmp_path / "none.sqlite")])
    assert not (tmp_path / "none.sqlite").exists()
    with pytest.raises(ValueError, match="log file .* not found"):
        run_logs(["--session", "s1", "--log", str(tmp_path / "none.jsonl")])
