"""Live sessions for the dashboard: the journals given with ``--journal`` and those found under the runs
(``RUN/live/<session>/journal.sqlite``), each session's state as the JSON the Live page polls, and the commands
sent from it.

The snapshot of a session is rebuilt only when its journal changed (row counts, last bar, state): a background thread
checks each watched session every ``refresh_s`` (a few indexed ``COUNT`` queries) and rebuilds it then; every client
polling the session shares the result, so a poll itself reads no database. Only the public ``Journal`` API is used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.dashboard.catalog import Catalog, redact_url, short_id
from spotgym.live.journal import COMMANDS, Journal, journal_url

__all__ = ["DASHBOARD_COMMANDS", "LiveRef", "LiveSources", "ROUTINE_EVENTS", "WARNING_EVENTS"]

DASHBOARD_COMMANDS = tuple(c for c in ("pause", "flatten", "stop", "resume") if c in COMMANDS)
ROUTINE_EVENTS = {"decision", "intent", "fill", "order_sent", "order_filled", "order_open"}
WARNING_EVENTS = {"feed_stale", "feed_error", "ban", "order_rejected", "order_ambiguous", "overfill",
                  "reconcile_difference", "missed_bars", "blocked", "order_given_up", "halted", "stopped_stale",
                  "order_unknown", "order_expired"}
TABLE_ROWS = 50
JOURNAL_TABLES = {"sessions", "orders", "fills", "decisions", "equity", "events", "commands"}
log = logging.getLogger("spotgym.dashboard")


@dataclass(frozen=True)
class LiveRef:
    """One session of one journal."""

    id: str
    url: str
    name: str
    row: dict[str, Any]

    @property
    def where(self) -> str:
        return redact_url(self.url)


def _sqlite_ready(url: str) -> bool:
    """False for a SQLite journal whose tables are not all there yet. Opening it with ``Journal`` would create them
    too, racing the runner that is creating them (SQLite: "table ... already exists" in the runner); so a journal is
    read only once its runner made it. Other databases: True."""
    if not url.startswith("sqlite:///"):
        return True
    path = url[len("sqlite:///"):]
    if not Path(path).is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return False
    return JOURNAL_TABLES <= names


def _bar(ms: Any) -> str | None:
    if ms is None or (isinstance(ms, float) and not np.isfinite(ms)):
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


def _wall(ms: Any) -> str | None:
    if ms is None:
        return None
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M:%S")


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def _records(frame: pd.DataFrame, limit: int) -> list[dict[str, Any]]:
    return frame.tail(limit).iloc[::-1].to_dict("records") if len(frame) else []


class LiveSources:
    """The sessions of every journal; ``snapshot(ref)``; ``command(ref, kind, user)``."""

    def __init__(self, catalog: Catalog, targets: list[str] = (), *, list_ttl_s: float = 3.0,
                 max_age_s: float = 30.0, refresh_s: float = 0.25, watch_s: float = 30.0) -> None:
        self.catalog = catalog
        self.targets = list(targets)
        self.list_ttl_s, self.max_age_s, self.refresh_s, self.watch_s = list_ttl_s, max_age_s, refresh_s, watch_s
        self._seen: dict[str, tuple[float, LiveRef]] = {}
        self._checked: dict[str, float] = {}
        self._refs: dict[str, LiveRef] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._names: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self._journals: dict[tuple[str, str], Journal] = {}
        self._snapshots: dict[str, tuple[tuple[Any, ...], float, dict[str, Any]]] = {}
        self._building: dict[str, threading.Lock] = {}
        self.problems: list[str] = []

    # ------------------------------------------------------------------ discovery
    def _urls(self) -> list[str]:
        urls, problems = [], []
        for target in self.targets:
            if "://" not in target and not Path(target).expanduser().is_file():
                problems.append(f"journal {target} does not exist")
                continue
            urls.append(journal_url(target))
        for run in self.catalog.last.runs:
            urls += [journal_url(p) for p in run.journals]
        self.problems = problems
        return list(dict.fromkeys(urls))

    def _sessions_of(self, url: str) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._names.get(url)
        if cached is not None and now - cached[0] < self.list_ttl_s:
            return cached[1]
        if not _sqlite_ready(url):  # a runner is creating this journal right now: look again next time
            return []
        try:
            rows = Journal.session_names(url)
        except Exception as exc:  # an unreachable database: listed as a problem, the others still shown
            self.problems.append(f"journal {redact_url(url)} cannot be read ({type(exc).__name__})")
            rows = []
        self._names[url] = (now, rows)
        return rows

    def sessions(self) -> list[LiveRef]:
        refs = []
        for url in self._urls():
            for row in self._sessions_of(url):
                refs.append(LiveRef(short_id(url, row["name"]), url, row["name"], row))
        refs.sort(key=lambda r: r.row.get("created_ms") or 0, reverse=True)
        self._refs.update((r.id, r) for r in refs)
        return refs

    def get(self, session_id: str) -> LiveRef | None:
        """A session by id: one listed before (no query), else from a fresh listing of the journals."""
        ref = self._refs.get(session_id)
        if ref is not None:
            return ref
        self._names.clear()  # a session started a moment ago
        return next((r for r in self.sessions() if r.id == session_id), None)

    def journal(self, ref: LiveRef) -> Journal:
        key = (ref.url, ref.name)
        with self._lock:
            j = self._journals.get(key)
            if j is None:
                j = self._journals[key] = Journal(ref.url, ref.name)
            return j

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for j in self._journals.values():
                j.close()
            self._journals.clear()

    # ------------------------------------------------------------------ commands
    def command(self, ref: LiveRef, kind: str, user: str) -> None:
        if kind not in DASHBOARD_COMMANDS:
            raise ValueError(f"command must be one of {', '.join(DASHBOARD_COMMANDS)}, got {kind!r}")
        self.journal(ref).request(kind, user=user)

    # ------------------------------------------------------------------ the snapshot
    def _key(self, j: Journal) -> tuple[Any, ...]:
        row = j.session_row() or {}
        halted = bool((row.get("risk_state") or {}).get("halted"))
        return (tuple(sorted(j.counts().items())), row.get("last_bar_ms"), row.get("state"), halted)

    def snapshot(self, ref: LiveRef, *, watch: bool = True) -> dict[str, Any]:
        """The session's latest snapshot. The first call builds it. ``watch``: from then on a background thread keeps
        it current (checking the journal every ``refresh_s`` while someone asked for it in the last ``watch_s``), so a
        poll costs no database query; otherwise (the Live list) it is checked when older than ``list_ttl_s``."""
        cached = self._snapshots.get(ref.id)
        if watch:
            self._seen[ref.id] = (time.monotonic(), ref)
            self._start_refresher()
            return cached[2] if cached is not None else self.refresh(ref)
        if cached is not None and time.monotonic() - self._checked.get(ref.id, 0.0) < self.list_ttl_s:
            return cached[2]
        return self.refresh(ref)

    def refresh(self, ref: LiveRef, force: bool = False) -> dict[str, Any]:
        """Rebuild the snapshot if the journal changed (or is older than ``max_age_s``, or ``force``)."""
        j = self.journal(ref)
        with self._lock:
            lock = self._building.setdefault(ref.id, threading.Lock())
        with lock:
            key = self._key(j)
            self._checked[ref.id] = time.monotonic()
            cached = self._snapshots.get(ref.id)
            if (not force and cached is not None and cached[0] == key
                    and time.monotonic() - cached[1] < self.max_age_s):
                return cached[2]
            snap = self._build(ref, j)
            snap["version"] = hashlib.sha1(json.dumps([key, snap["equity"]["n"]], default=str).encode()
                                           ).hexdigest()[:16]
            self._snapshots[ref.id] = (key, time.monotonic(), snap)
            return snap

    def _start_refresher(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._refresh_loop, name="dashboard-live-refresh",
                                                daemon=True)
                self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            now = time.monotonic()
            for sid, (seen, ref) in list(self._seen.items()):
                if now - seen > self.watch_s:
                    self._seen.pop(sid, None)
                    continue
                try:
                    self.refresh(ref)
                except Exception as exc:  # a locked or vanished journal: keep the last snapshot, try again
                    log.debug("refreshing %s: %s", ref.name, exc)

    def _build(self, ref: LiveRef, j: Journal) -> dict[str, Any]:
        row = j.session_row() or dict(ref.row)
        eq = j.frame("equity")
        fills = j.frame("fills")
        dec = j.frame("decisions")
        events = j.frame("events")
        orders = j.unresolved_orders()
        pending = j.pending_commands()
        counts = j.counts()
        run = self.catalog.run_at(row.get("run_dir"))

        equity = eq["equity"].to_numpy(np.float64) if len(eq) else np.zeros(0)
        price = eq["price"].to_numpy(np.float64) if len(eq) else np.zeros(0)
        hold = equity[0] * price / price[0] if len(eq) and price[0] > 0 else np.full(len(eq), np.nan)
        times = (pd.to_datetime(eq["bar_ms"].to_numpy(np.int64), unit="ms").strftime("%Y-%m-%d %H:%M").tolist()
                 if len(eq) else [])
        last = eq.iloc[-1] if len(eq) else None
        account = {
            "equity": _num(last["equity"]) if last is not None else None,
            "cash": _num(last["cash"]) if last is not None else None,
            "position": _num(last["position"]) if last is not None else None,
            "price": _num(last["price"]) if last is not None else None,
            "exposure": _num(last["exposure"]) if last is not None else None,
            "start_equity": _num(equity[0]) if len(equity) else None,
            "return": _num(equity[-1] / equity[0] - 1.0) if len(equity) and equity[0] else None,
            "hold_return": _num(hold[-1] / hold[0] - 1.0) if len(hold) and hold[0] else None,
        }
        kinds = events["kind"].tolist() if len(events) else []
        feed_events = events[events["kind"].isin(["feed_stale", "feed_recovered"])] if len(events) else events
        stale = bool(len(feed_events)) and feed_events["kind"].iloc[-1] == "feed_stale"
        last_decision = events[events["kind"] == "decision"]["wall_ms"] if len(events) else pd.Series([], dtype=float)
        feed = {
            "status": ("stopped" if row.get("state") != "running" else "stale" if stale
                       else "waiting for the first bar" if not len(dec) else "ok"),
            "last_bar": _bar(row.get("last_bar_ms")),
            "last_decision_wall_ms": int(last_decision.iloc[-1]) if len(last_decision) else None,
            "errors": kinds.count("feed_error"), "stale_events": kinds.count("feed_stale"),
            "backfills": kinds.count("backfill"), "missed_bars": kinds.count("missed_bars"),
        }
        notable = events[~events["kind"].isin(ROUTINE_EVENTS)] if len(events) else events
        paused = None  # the runner's pause (pause / flatten until resume), which a restarted runner forgets
        for e in events[events["kind"].isin(["command_applied", "session_start", "session_resume"])].itertuples() \
                if len(events) else ():
            command = (e.payload or {}).get("command") if e.kind == "command_applied" else None
            paused = command if command in ("pause", "flatten") else None if command in ("resume", None) else paused
        return {
            "id": ref.id,
            "session": {"name": ref.name, "mode": row.get("mode"), "symbol": row.get("symbol"),
                        "state": row.get("state"), "created": _wall(row.get("created_ms")),
                        "last_bar": _bar(row.get("last_bar_ms")),
                        "halted": bool((row.get("risk_state") or {}).get("halted")),
                        "paused": paused if row.get("state") == "running" else None,
                        "run_dir": row.get("run_dir"), "run_id": run.id if run else None,
                        "run_name": run.name if run else None, "journal": ref.where},
            "account": account,
            "equity": {"n": len(eq), "t": times, "equity": [_num(v) for v in equity],
                       "hold": [_num(v) for v in hold]},
            "orders": [{"client_id": o["client_id"], "bar": _bar(o["bar_ms"]), "side": o["side"],
                        "quantity": _num(o["quantity"]), "status": o["status"], "filled": _num(o["filled"]),
                        "attempts": o["attempts"], "error": (o.get("last_error") or "")[:200]} for o in orders],
            "fills": [{"time": _wall(f["time_ms"]), "side": f["side"], "quantity": _num(f["quantity"]),
                       "price": _num(f["price"]), "fee": _num(f["fee_quote"]), "client_id": f["client_id"]}
                      for f in _records(fills, TABLE_ROWS)],
            "decisions": [{"bar": _bar(d["bar_ms"]), "action": _num(d["action"]), "target": _num(d["target"]),
                           "risk": d["risk"] or "", "halted": bool(d["halted"]), "side": d["side"] or "none",
                           "quantity": _num(d["quantity"]), "equity": _num(d["equity"]),
                           "position": _num(d["position"])} for d in _records(dec, TABLE_ROWS)],
            "events": [{"time": _wall(e["wall_ms"]), "bar": _bar(e["bar_ms"]) if pd.notna(e["bar_ms"]) else None,
                        "kind": e["kind"], "level": "warn" if e["kind"] in WARNING_EVENTS else "info",
                        "text": json.dumps(e["payload"], separators=(", ", ": "), default=str)[:300]}
                       for e in _records(notable, TABLE_ROWS)],
            "feed": feed,
            "counts": {**counts, "equity": len(eq), "fills": len(fills)},
            "pending": pending,
        }

    @staticmethod
    def view(snap: dict[str, Any], since: int = 0, version: str | None = None) -> dict[str, Any]:
        """What one poll returns: nothing but the version when the client has it, else the snapshot with the equity
        points after the first ``since`` (all of them when ``since`` is past the end: the journal was replaced)."""
        if version and version == snap["version"]:
            return {"version": snap["version"], "unchanged": True}
        eq = snap["equity"]
        n = eq["n"]
        start = since if 0 <= since <= n else 0
        out = dict(snap)
        out["equity"] = {"n": n, "from": start, "t": eq["t"][start:], "equity": eq["equity"][start:],
                         "hold": eq["hold"][start:]}
        return out
