"""The live journal: every decision, order intent, order update, fill, veto, alert and command of a session,
written (and committed) before the next step acts on it, so a killed runner resumes from it.

SQLAlchemy Core over SQLite (WAL mode, ``synchronous=FULL``: a committed row survives a crash of the process
or of the machine) by default, or PostgreSQL for deployments where a dashboard or several runners share one
journal. A plain path is a SQLite file; a URL (``sqlite:///...``, ``postgresql+psycopg2://...``) is used as is.

Tables:

- ``sessions``: one row per session (mode, symbol, run dir, state: running / stopped, the risk state, the last
  bar the runner finished);
- ``orders``: one row per client order id, written as an **intent** before the request leaves, then its
  status history (``intent`` -> ``sent`` -> ``open`` / ``filled`` / ``expired`` / ``rejected`` / ``unknown``);
- ``fills``: one row per exchange trade id (unique per session: a fill seen twice is applied once);
- ``decisions``: one row per bar decided on (observation hash, action, target, risk flags, account after);
- ``equity``: the account marked at each bar's close;
- ``events``: an append-only log of everything above plus alerts, reconciliation differences and commands;
- ``commands``: requests from outside (``spotgym live stop|flatten``), consumed by the runner.

Nothing secret is ever written here (the broker scrubs exception messages before they reach ``last_error``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

__all__ = ["ORDER_FINAL", "Journal", "journal_url"]

log = logging.getLogger("spotgym.live.journal")

metadata = MetaData()

sessions = Table(
    "sessions", metadata,
    Column("name", String(64), primary_key=True),
    Column("mode", String(16), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("run_dir", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # running | stopped
    Column("last_bar_ms", BigInteger),  # the last bar whose decision cycle finished
    Column("risk_state", JSON),  # the risk layer's per-account state (halt, peak, day, order ring)
    Column("info", JSON),  # mode details: sim url, data span, config
)
orders = Table(
    "orders", metadata,
    Column("client_id", String(64), primary_key=True),
    Column("session", String(64), nullable=False, index=True),
    Column("bar_ms", BigInteger, nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", Float, nullable=False),
    Column("reference_price", Float),
    Column("status", String(16), nullable=False),
    Column("exchange_id", String(64)),
    Column("filled", Float, nullable=False, default=0.0),
    Column("average", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("history", JSON),  # [[wall ms, status, note], ...]
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)
fills = Table(
    "fills", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(64), nullable=False, index=True),
    Column("trade_id", String(64), nullable=False),
    Column("client_id", String(64), nullable=False),
    Column("time_ms", BigInteger, nullable=False),
    Column("side", String(8), nullable=False),
    Column("quantity", Float, nullable=False),  # base units traded (> 0)
    Column("price", Float, nullable=False),
    Column("fee", Float, nullable=False),  # in the fee asset
    Column("fee_asset", String(16)),
    Column("fee_quote", Float, nullable=False),  # the fee valued in the quote currency
    Column("applied", Integer, nullable=False, default=0),  # booked into the env's account
    UniqueConstraint("session", "trade_id", name="uq_fill_trade"),
)
decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(64), nullable=False, index=True),
    Column("bar_ms", BigInteger, nullable=False),
    Column("obs_hash", String(32)),
    Column("action", Float),
    Column("target", Float),
    Column("risk", String(256)),
    Column("halted", Integer),
    Column("client_id", String(64)),
    Column("side", String(8)),
    Column("quantity", Float),
    Column("equity", Float),
    Column("position", Float),
    Column("cash", Float),
    Column("latency_ms", Float),  # closed bar received -> order made (features, predictors, env, policy, sizing)
    UniqueConstraint("session", "bar_ms", name="uq_decision_bar"),
)
equity = Table(
    "equity", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(64), nullable=False, index=True),
    Column("bar_ms", BigInteger, nullable=False),
    Column("equity", Float, nullable=False),
    Column("exposure", Float, nullable=False),
    Column("position", Float, nullable=False),
    Column("cash", Float, nullable=False),
    Column("price", Float, nullable=False),
    UniqueConstraint("session", "bar_ms", name="uq_equity_bar"),
)
events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(64), nullable=False, index=True),
    Column("wall_ms", BigInteger, nullable=False),
    Column("bar_ms", BigInteger),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON),
)
commands = Table(
    "commands", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("session", String(64), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # stop | flatten | pause | resume | reset_halt
    Column("created_ms", BigInteger, nullable=False),
    Column("consumed_ms", BigInteger),
)

ORDER_FINAL = ("filled", "expired", "canceled", "rejected", "not_placed")  # no more fills can come
COMMANDS = ("stop", "flatten", "pause", "resume", "reset_halt")


def _now() -> int:
    return int(time.time() * 1000)


def journal_url(target: str | Path) -> str:
    """``target`` as a SQLAlchemy URL: a path becomes a SQLite file URL (its folder created)."""
    text = str(target)
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _create_tables(engine: Engine) -> None:
    """Create the journal's tables; two processes opening a new SQLite journal at once can race on it (the loser
    sees "table ... already exists"): look again then."""
    from sqlalchemy.exc import OperationalError

    for attempt in range(5):
        try:
            metadata.create_all(engine)
            break
        except OperationalError as exc:
            if "already exists" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
    _add_missing_columns(engine)


def _add_missing_columns(engine: Engine) -> None:
    """A journal written by an earlier version lacks the nullable columns added since (e.g. ``decisions.latency_ms``):
    add them, so old sessions stay readable and resumable."""
    from sqlalchemy import inspect, text

    found = inspect(engine)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in found.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have and column.nullable:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as conn:
                    conn.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


class Journal:
    """``Journal(url_or_path, session)``: one session's rows in a (possibly shared) journal database."""

    def __init__(self, target: str | Path, session: str) -> None:
        self.url = journal_url(target)
        self.session = session
        self.engine: Engine = create_engine(self.url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        _create_tables(self.engine)
        # called with (kind, bar_ms, payload) for every event row (alerts, metrics); never allowed to fail a write
        self.listeners: list[Any] = []

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self.engine.begin() as conn:  # one transaction, committed on exit
            yield conn

    def _event(self, conn, kind: str, bar_ms: int | None, payload: Mapping[str, Any] | None) -> None:
        conn.execute(insert(events).values(session=self.session, wall_ms=_now(), bar_ms=bar_ms, kind=kind,
                                           payload=_plain(payload or {})))
        for listener in self.listeners:
            try:
                listener(kind, bar_ms, dict(payload or {}))
            except Exception:  # an alert or a metric must never cost a journal row
                log.exception("journal listener failed on %s", kind)

    # ------------------------------------------------------------------ session
    def open_session(self, *, mode: str, symbol: str, run_dir: str, info: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
        """Start the session, or resume it (same mode and symbol); returns its row."""
        with self._tx() as conn:
            row = conn.execute(select(sessions).where(sessions.c.name == self.session)).mappings().first()
            if row is None:
                conn.execute(insert(sessions).values(name=self.session, mode=mode, symbol=symbol, run_dir=run_dir,
                                                     created_ms=_now(), state="running", info=_plain(info or {})))
                self._event(conn, "session_start", None, {"mode": mode, "symbol": symbol, "run_dir": run_dir})
            else:
                if (row["mode"], row["symbol"]) != (mode, symbol):
                    raise ValueError(f"session {self.session!r} in {self.url} trades {row['symbol']} in {row['mode']} "
                                     f"mode, not {symbol} in {mode} mode: pick another --session")
                conn.execute(update(sessions).where(sessions.c.name == self.session).values(state="running"))
                self._event(conn, "session_resume", row["last_bar_ms"], {"mode": mode})
            return dict(conn.execute(select(sessions).where(sessions.c.name == self.session)).mappings().one())

    def session_row(self) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.name == self.session)).mappings().first()
            return dict(row) if row else None

    def set_session(self, **values: Any) -> None:
        with self._tx() as conn:
            conn.execute(update(sessions).where(sessions.c.name == self.session).values(**_plain(values)))

    def event(self, kind: str, bar_ms: int | None = None, **payload: Any) -> None:
        """An alert, a reconciliation difference, a note: appended to the log."""
        with self._tx() as conn:
            self._event(conn, kind, bar_ms, payload)

    # ------------------------------------------------------------------ orders
    def record_intent(self, client_id: str, bar_ms: int, side: str, quantity: float, reference_price: float) -> bool:
        """The order is about to be sent: written and committed first. False when the intent exists already
        (a restarted runner at the same decision: it must reconcile, not send again)."""
        now = _now()
        with self._tx() as conn:
            exists = conn.execute(select(orders.c.client_id).where(orders.c.client_id == client_id)).first()
            if exists:
                return False
            conn.execute(insert(orders).values(client_id=client_id, session=self.session, bar_ms=bar_ms, side=side,
                                               quantity=float(quantity), reference_price=float(reference_price),
                                               status="intent", filled=0.0, attempts=0,
                                               history=[[now, "intent", ""]], created_ms=now, updated_ms=now))
            self._event(conn, "intent", bar_ms, {"client_id": client_id, "side": side, "quantity": quantity})
        return True

    def update_order(self, client_id: str, status: str, *, note: str = "", attempt: bool = False,
                     **values: Any) -> None:
        """Move an order to ``status`` (its history keeps every step); ``values``: exchange_id, filled,
        average, last_error."""
        now = _now()
        with self._tx() as conn:
            row = conn.execute(select(orders).where(orders.c.client_id == client_id)).mappings().one()
            history = list(row["history"] or []) + [[now, status, note]]
            changes = {"status": status, "history": history, "updated_ms": now, **_plain(values)}
            if attempt:
                changes["attempts"] = row["attempts"] + 1
            conn.execute(update(orders).where(orders.c.client_id == client_id).values(**changes))
            self._event(conn, f"order_{status}", row["bar_ms"], {"client_id": client_id, "note": note,
                                                                  **_plain(values)})

    def order(self, client_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(orders).where(orders.c.client_id == client_id)).mappings().first()
            return dict(row) if row else None

    def unresolved_orders(self) -> list[dict[str, Any]]:
        """Orders of this session that may still change: intents not known to have reached the exchange,
        sent / open / unknown ones."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(orders).where(orders.c.session == self.session,
                                                     orders.c.status.not_in(ORDER_FINAL))
                                .order_by(orders.c.created_ms)).mappings().all()
            return [dict(r) for r in rows]

    # ------------------------------------------------------------------ fills
    def record_fill(self, *, trade_id: str, client_id: str, time_ms: int, side: str, quantity: float, price: float,
                    fee: float, fee_asset: str | None, fee_quote: float) -> bool:
        """A fill, keyed by the exchange's trade id: True when new, False when already journaled."""
        with self._tx() as conn:
            exists = conn.execute(select(fills.c.id).where(fills.c.session == self.session,
                                                           fills.c.trade_id == str(trade_id))).first()
            if exists:
                return False
            conn.execute(insert(fills).values(session=self.session, trade_id=str(trade_id), client_id=client_id,
                                              time_ms=int(time_ms), side=side, quantity=float(quantity),
                                              price=float(price), fee=float(fee), fee_asset=fee_asset,
                                              fee_quote=float(fee_quote), applied=0))
            self._event(conn, "fill", None, {"trade_id": str(trade_id), "client_id": client_id, "side": side,
                                             "quantity": quantity, "price": price, "fee_quote": fee_quote})
        return True

    def has_fill(self, trade_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(fills.c.id).where(fills.c.session == self.session,
                                                         fills.c.trade_id == str(trade_id))).first() is not None

    def fills_of(self, client_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(fills).where(fills.c.session == self.session, fills.c.client_id == client_id)
                                .order_by(fills.c.id)).mappings().all()
            return [dict(r) for r in rows]

    def unapplied_fills(self) -> list[dict[str, Any]]:
        """Fills journaled but not yet booked into the env's account (a crash between the two)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(fills).where(fills.c.session == self.session, fills.c.applied == 0)
                                .order_by(fills.c.time_ms, fills.c.id)).mappings().all()
            return [dict(r) for r in rows]

    def position(self) -> float:
        """Base units the journaled fills add up to (buys net of a fee taken in the base asset, minus sells)."""
        row = self.session_row()
        base = row["symbol"].split("/")[0] if row else None
        total = 0.0
        for f in self.frame("fills").itertuples():
            total += f.quantity if f.side == "buy" else -f.quantity
            if f.fee_asset == base:
                total -= f.fee
        return total

    def paper_account(self, cash0: float) -> tuple[float, float]:
        """(cash, units) of a paper account that started with ``cash0`` and took the journaled fills."""
        cash, units = float(cash0), 0.0
        for f in self.frame("fills").itertuples():
            sign = 1.0 if f.side == "buy" else -1.0
            cash -= sign * f.quantity * f.price + f.fee_quote
            units += sign * f.quantity
        return cash, max(units, 0.0)

    def mark_applied(self, trade_ids: list[str]) -> None:
        if not trade_ids:
            return
        with self._tx() as conn:
            conn.execute(update(fills).where(fills.c.session == self.session, fills.c.trade_id.in_(trade_ids))
                         .values(applied=1))

    # ------------------------------------------------------------------ decisions, equity
    def record_decision(self, bar_ms: int, **values: Any) -> None:
        with self._tx() as conn:
            exists = conn.execute(select(decisions.c.id).where(decisions.c.session == self.session,
                                                               decisions.c.bar_ms == bar_ms)).first()
            if exists:  # a restart re-deciding the same bar: the first record stands
                return
            conn.execute(insert(decisions).values(session=self.session, bar_ms=bar_ms, **_plain(values)))
            self._event(conn, "decision", bar_ms, values)

    def record_equity(self, bar_ms: int, **values: Any) -> None:
        with self._tx() as conn:
            exists = conn.execute(select(equity.c.id).where(equity.c.session == self.session,
                                                            equity.c.bar_ms == bar_ms)).first()
            if not exists:
                conn.execute(insert(equity).values(session=self.session, bar_ms=bar_ms, **_plain(values)))

    # ------------------------------------------------------------------ commands
    def request(self, kind: str, user: str | None = None) -> None:
        """A command from outside (``spotgym live stop|flatten``, the dashboard), picked up by the runner between
        bars; ``user``: who asked (kept in the event log)."""
        if kind not in COMMANDS:
            raise ValueError(f"command must be one of {COMMANDS}, got {kind!r}")
        if self.session_row() is None:
            raise ValueError(f"no session {self.session!r} in {self.url}")
        with self._tx() as conn:
            conn.execute(insert(commands).values(session=self.session, kind=kind, created_ms=_now()))
            self._event(conn, "command", None, {"kind": kind, "user": user})

    def pending_commands(self) -> list[str]:
        """The commands not yet consumed (read only)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(commands.c.kind).where(commands.c.session == self.session,
                                                              commands.c.consumed_ms.is_(None))).all()
            return [r[0] for r in rows]

    def take_commands(self) -> list[str]:
        """The pending commands, oldest first, marked consumed."""
        with self._tx() as conn:
            rows = conn.execute(select(commands).where(commands.c.session == self.session,
                                                       commands.c.consumed_ms.is_(None))
                                .order_by(commands.c.id)).mappings().all()
            if rows:
                conn.execute(update(commands).where(commands.c.id.in_([r["id"] for r in rows]))
                             .values(consumed_ms=_now()))
            return [r["kind"] for r in rows]

    # ------------------------------------------------------------------ reading back
    def frame(self, table: str) -> pd.DataFrame:
        """A table's rows of this session as a DataFrame (``orders``, ``fills``, ``decisions``, ``equity``,
        ``events``)."""
        t = {"orders": orders, "fills": fills, "decisions": decisions, "equity": equity, "events": events}[table]
        order_col = t.c.created_ms if t is orders else t.c.id
        with self.engine.connect() as conn:
            rows = conn.execute(select(t).where(t.c.session == self.session).order_by(order_col)).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in t.columns])

    def counts(self) -> dict[str, int]:
        out = {}
        with self.engine.connect() as conn:
            for name, t in (("orders", orders), ("fills", fills), ("decisions", decisions), ("events", events)):
                out[name] = conn.execute(select(func.count()).select_from(t).where(t.c.session == self.session)
                                         ).scalar_one()
        return out

    @staticmethod
    def session_names(target: str | Path) -> list[dict[str, Any]]:
        engine = create_engine(journal_url(target), future=True)
        try:
            _create_tables(engine)
            with engine.connect() as conn:
                return [dict(r) for r in conn.execute(select(sessions).order_by(sessions.c.created_ms)).mappings()]
        finally:
            engine.dispose()


def _plain(value: Any) -> Any:
    """JSON-safe copy (numpy scalars to Python)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
