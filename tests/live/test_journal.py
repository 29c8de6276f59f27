"""The journal's own promises: an intent is written once, a trade id is applied once, commands are consumed once,
and a journal written by an earlier version (fewer columns) opens, reads and takes new rows."""

from __future__ import annotations

import sqlite3

from spotgym.live.journal import Journal


def test_intent_fill_and_command_are_each_taken_once(tmp_path):
    j = Journal(tmp_path / "j.sqlite", "s")
    j.open_session(mode="sim", symbol="ETH/USDT", run_dir="r")
    assert j.record_intent("c1", 1, "buy", 0.5, 3000.0) is True
    assert j.record_intent("c1", 1, "buy", 0.5, 3000.0) is False  # a restart at the same decision
    fill = dict(trade_id="t1", client_id="c1", time_ms=2, side="buy", quantity=0.5, price=3000.0, fee=0.0005,
                fee_asset="ETH", fee_quote=1.5)
    assert j.record_fill(**fill) is True and j.record_fill(**fill) is False
    assert j.position() == 0.5 - 0.0005  # the fee taken in ETH
    j.request("flatten", user="alice")
    assert j.pending_commands() == ["flatten"] and j.take_commands() == ["flatten"] and j.take_commands() == []
    events = j.frame("events")
    assert events[events["kind"] == "command"].iloc[0]["payload"] == {"kind": "flatten", "user": "alice"}
    j.close()


def test_a_journal_of_an_earlier_version_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    j = Journal(path, "s")
    j.open_session(mode="sim", symbol="ETH/USDT", run_dir="r")
    j.record_decision(1, obs_hash="h", action=1.0, target=0.5, risk="", halted=0, side="buy", quantity=0.1)
    j.close()
    with sqlite3.connect(path) as db:  # as written before decisions had a latency column
        db.execute("ALTER TABLE decisions DROP COLUMN latency_ms")
    j = Journal(path, "s")
    j.record_decision(2, obs_hash="h2", action=0.0, target=0.0, risk="", halted=0, side="sell", quantity=0.1,
                      latency_ms=4.2)
    d = j.frame("decisions")
    j.close()
    assert list(d["bar_ms"]) == [1, 2] and d["latency_ms"].isna().iloc[0] and d["latency_ms"].iloc[1] == 4.2
