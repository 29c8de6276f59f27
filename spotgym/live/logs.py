"""Structured logs of a live session, and ``spotgym live logs``.

- ``JsonLogFormatter(session, secrets)``: one JSON object per line with ``time`` (UTC, ms), ``level``, ``logger``,
  ``message``, ``session``, ``bar`` (the bar's open time, ISO), ``client_id`` and ``kind`` on every line (null
  when unknown), plus ``exc`` (a traceback) and ``payload`` when there. ``session`` / ``bar`` / ``client_id`` /
  ``kind`` come from the record (``extra={...}``, ``SessionLogger``), else from the context set by
  ``set_log_context`` / ``log_context`` (so lines logged deep in the broker or the feed carry the bar being
  decided), else the formatter's session. Every text is redacted (``keys.redact``).
- ``configure_json_log(path, session, secrets)``: a JSON-lines file handler on the root logger.
- ``summarize_errors(*sources, session=None)``: warnings and errors of JSON log files and error events of
  journals grouped by kind: count, first / last time, an example.
- ``add_logs_command(live_subparsers)``: ``spotgym live logs --session NAME [--journal URL] [--log FILE]
  [--errors] [--tail N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spotgym.live.keys import SecretRedactor, redact

if TYPE_CHECKING:  # the journal (SQLAlchemy, pandas) is imported where used: `spotgym --help` stays quick
    from spotgym.live.journal import Journal

__all__ = [
    "ERROR_KINDS",
    "JsonLogFormatter",
    "SessionLogger",
    "add_logs_command",
    "configure_json_log",
    "default_log_path",
    "log_context",
    "set_log_context",
    "summarize_errors",
]

CONTEXT_FIELDS = ("session", "bar", "client_id", "kind")
# the journal's events that are errors or warnings (`spotgym live logs --errors` from a journal)
ERROR_KINDS = frozenset({
    "feed_stale", "feed_error", "stopped_stale", "missed_bars", "order_rejected", "order_ambiguous", "order_unknown",
    "order_given_up", "blocked", "ban", "throttled", "overfill", "fills_missing", "reconcile_difference", "halted",
    "balances_retry",
})
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_COALESCE_MS = 5_000  # the same kind for the same order within this: one incident (broker alert + journal row)

_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("spotgym_log_context", default=None)


# ------------------------------------------------------------------------------------------------- context
def set_log_context(**fields: Any) -> None:
    """Set (``None``: clear) ``session`` / ``bar`` / ``client_id`` / ``kind`` for the lines logged from now on in
    this thread (e.g. ``set_log_context(bar=bar_ms, client_id=order.client_id)`` at each decision)."""
    _check_fields(fields)
    current = dict(_context.get() or {})
    for key, value in fields.items():
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
    _context.set(current)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """``set_log_context`` for a ``with`` block, restored after it."""
    _check_fields(fields)
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def _check_fields(fields: Mapping[str, Any]) -> None:
    unknown = sorted(set(fields) - set(CONTEXT_FIELDS))
    if unknown:
        raise ValueError(f"log context: unknown field(s) {unknown}; known: {list(CONTEXT_FIELDS)}")


class SessionLogger(logging.LoggerAdapter):
    """``SessionLogger(logger, session=..., bar=..., ...)``: a logger whose lines carry these fields (a call's own
    ``extra`` wins)."""

    def __init__(self, logger: logging.Logger, **fields: Any) -> None:
        _check_fields(fields)
        super().__init__(logger, fields)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs

    def bind(self, **fields: Any) -> SessionLogger:
        _check_fields(fields)
        return SessionLogger(self.logger, **{**(self.extra or {}), **fields})


# ------------------------------------------------------------------------------------------------- formatting
def _iso_ms(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def _bar_text(bar: Any) -> Any:
    if bar is None:
        return None
    if isinstance(bar, int | float) and not isinstance(bar, bool):
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(bar) / 1000))
    if hasattr(bar, "isoformat"):
        return bar.isoformat()
    return str(bar)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line (see the module's doc); ``secrets`` are redacted from every text."""

    def __init__(self, session: str | None = None, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.session = session
        self.secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        ctx = _context.get() or {}

        def field(name: str) -> Any:
            value = getattr(record, name, None)
            return ctx.get(name) if value is None else value

        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} % {record.args!r}"
        session = field("session") or self.session
        client_id = field("client_id")
        out: dict[str, Any] = {
            "time": _iso_ms(record.created), "level": record.levelname, "logger": record.name,
            "message": redact(message, self.secrets), "session": session, "bar": _bar_text(field("bar")),
            "client_id": None if client_id is None else str(client_id), "kind": field("kind"),
        }
        exc = record.exc_text
        if record.exc_info and not exc:
            exc = self.formatException(record.exc_info)
        if exc:
            out["exc"] = redact(exc, self.secrets)
        payload = getattr(record, "payload", None)
        if payload is not None:
            out["payload"] = json.loads(redact(json.dumps(payload, default=str), self.secrets))
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_json_log(path: str | Path, session: str | None, secrets: Iterable[str] = (), *,
                       level: int | str = logging.INFO, logger: str | None = None) -> logging.Handler:
    """Append JSON lines (``JsonLogFormatter``) to ``path`` for the records of ``logger`` (default: the root, so
    ccxt's and every library's too) at ``level`` and above; returns the handler (``logging.getLogger(logger)
    .removeHandler(h); h.close()`` undoes it). The logger's level is lowered to ``level`` where it was higher.
    Records are redacted by the handler (a ``SecretRedactor`` filter: secrets, signatures, API-key headers) before
    any formatting. When the root logger had no handler, warnings still reach stderr as before (Python's last-resort
    handler stops once a handler exists): a plain stderr handler at WARNING is added along."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else int(level)
    if not isinstance(level, int):
        raise ValueError(f"log level must be one of {list(_LEVELS)}")
    secrets = tuple(s for s in secrets if isinstance(s, str) and s)
    target = logging.getLogger(logger)
    if logger is None and not target.handlers:
        stderr = logging.StreamHandler(sys.stderr)
        stderr.setLevel(logging.WARNING)
        stderr.addFilter(SecretRedactor(secrets))
        target.addHandler(stderr)
    handler = logging.FileHandler(p, mode="a", encoding="utf-8")
    handler.setLevel(level)
    handler.addFilter(SecretRedactor(secrets))
    handler.setFormatter(JsonLogFormatter(session, secrets))
    target.addHandler(handler)
    if target.getEffectiveLevel() > level:
        target.setLevel(level)
    return handler


def default_log_path(journal: str | Path) -> Path | None:
    """The JSON log beside a SQLite journal (``RUN_DIR/live/<session>/log.jsonl`` for the default journal);
    None for a server database."""
    url = str(journal) if "://" in str(journal) else None
    if url is not None and not url.startswith("sqlite:///"):
        return None
    file = Path(url[len("sqlite:///"):]) if url else Path(journal).expanduser()
    return file.parent / "log.jsonl"


# ------------------------------------------------------------------------------------------------- reading back
def _read_log(path: Path, session: str | None) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = {"level": "ERROR", "kind": "unparsed_line", "message": line[:300]}
            if not isinstance(rec, dict):
                continue
            if session is not None and rec.get("session") not in (session, None):
                continue
            yield rec


def _error_kind(rec: Mapping[str, Any]) -> str:
    if rec.get("kind"):
        return str(rec["kind"])
    exc = rec.get("exc")
    if exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        name = last.split(":", 1)[0].strip().rsplit(".", 1)[-1]
        if name.isidentifier():
            return name
    return f"log:{rec.get('logger') or 'root'}"


def _example(payload: Mapping[str, Any]) -> str:
    for key in ("error", "reason", "note", "last_error"):
        if payload.get(key):
            return str(payload[key])
    return ", ".join(f"{k}={v}" for k, v in payload.items())


def _journal_events(journal: Journal, kinds: Iterable[str] | None = None, limit: int | None = None,
                    newest: bool = False) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from spotgym.live.journal import events

    q = select(events).where(events.c.session == journal.session)
    if kinds is not None:
        q = q.where(events.c.kind.in_(sorted(kinds)))
    q = q.order_by(events.c.id.desc() if newest else events.c.id)
    if limit is not None:
        q = q.limit(limit)
    with journal.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    return rows[::-1] if newest else rows


class _Groups:
    def __init__(self, source: str) -> None:
        self.source = source
        self.groups: dict[str, dict[str, Any]] = {}

    def add(self, kind: str, when: str, example: str) -> None:
        g = self.groups.get(kind)
        if g is None:
            self.groups[kind] = {"kind": kind, "count": 1, "first": when, "last": when,
                                 "example": " ".join(example.split())[:300], "source": self.source}
        else:
            g["count"] += 1
            g["first"], g["last"] = min(g["first"], when), max(g["last"], when)

    def rows(self) -> list[dict[str, Any]]:
        return sorted(self.groups.values(), key=lambda g: (-g["count"], g["kind"]))


def summarize_errors(*sources: str | Path | Journal, session: str | None = None, min_level: str = "WARNING",
                     secrets: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Errors of each source grouped by kind, most frequent first: ``{"kind", "count", "first", "last",
    "example", "source"}`` (times ISO UTC). A path is a JSON log file: its lines at ``min_level`` and above (of
    ``session`` when given), by their ``kind``, else their exception's type, else ``log:<logger>``. A ``Journal``:
    its session's events of ``ERROR_KINDS`` (the broker's alert and the journal's row of one order's rejection
    count once)."""
    from spotgym.live.journal import Journal

    floor = _LEVELS.get(min_level.upper())
    if floor is None:
        raise ValueError(f"min_level must be one of {list(_LEVELS)}, got {min_level!r}")
    out: list[dict[str, Any]] = []
    for source in sources:
        if isinstance(source, Journal):
            groups = _Groups(f"journal {source.url} ({source.session})")
            recent: dict[tuple[str, str], int] = {}
            for row in _journal_events(source, ERROR_KINDS):
                payload = row["payload"] or {}
                cid = payload.get("client_id")
                if cid is not None:
                    prev = recent.get((row["kind"], cid))
                    recent[(row["kind"], cid)] = row["wall_ms"]
                    if prev is not None and row["wall_ms"] - prev <= _COALESCE_MS:
                        continue
                groups.add(row["kind"], _iso_ms(row["wall_ms"] / 1000), redact(_example(payload), secrets))
        else:
            path = Path(source).expanduser()
            if not path.is_file():
                raise ValueError(f"log file {path} not found")
            groups = _Groups(f"log {path}")
            for rec in _read_log(path, session):
                if _LEVELS.get(str(rec.get("level", "")).upper(), 0) < floor:
                    continue
                groups.add(_error_kind(rec), str(rec.get("time") or ""), redact(str(rec.get("message") or ""),
                                                                                secrets))
        out.extend(groups.rows())
    return out


# ------------------------------------------------------------------------------------------------- the command
def _find_journal(args: argparse.Namespace) -> str | None:
    if args.journal:
        return args.journal
    found = sorted(Path(".").glob(f"runs/**/live/{args.session}/journal.sqlite"))
    if len(found) > 1:
        raise ValueError(f"{len(found)} journals hold a session {args.session!r} under ./runs: give --journal URL")
    return str(found[0]) if found else None


def _open_journal(target: str, session: str) -> Journal:
    from spotgym.live.journal import Journal, journal_url

    if "://" not in target and not Path(target).expanduser().is_file():
        raise ValueError(f"no journal at {target}")
    names = [r["name"] for r in Journal.session_names(target)]
    if session not in names:
        raise ValueError(f"no session {session!r} in {journal_url(target)}"
                         + (f" (sessions: {', '.join(names[:10])})" if names else ""))
    return Journal(target, session)


def _print_summary(rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        print(f"{title}: no errors")
        return
    print(f"{title}: {sum(r['count'] for r in rows)} in {len(rows)} kind(s)")
    width = max(len(r["kind"]) for r in rows)
    for r in rows:
        span = r["first"] if r["first"] == r["last"] else f"{r['first']} .. {r['last']}"
        print(f"  {r['kind']:<{width}}  {r['count']:>6}  {span}  e.g. {r['example'][:160]}")


def _live_logs(args: argparse.Namespace) -> int:
    if args.tail < 1:
        raise ValueError(f"--tail must be >= 1, got {args.tail}")
    target = _find_journal(args)
    log_file = Path(args.log).expanduser() if args.log else None
    if log_file is not None and not log_file.is_file():
        raise ValueError(f"log file {log_file} not found")
    if log_file is None and target is not None:
        guess = default_log_path(target)
        log_file = guess if guess is not None and guess.is_file() else None
    if log_file is None and target is None:
        raise ValueError(f"no log file and no journal for session {args.session!r}: give --log FILE or --journal URL")
    journal = _open_journal(target, args.session) if target is not None and (args.journal or log_file is None) \
        else None
    try:
        if args.errors:
            if log_file is not None:
                _print_summary(summarize_errors(log_file, session=args.session), f"log {log_file}")
            if journal is not None:
                _print_summary(summarize_errors(journal), f"journal events of {args.session}")
            return 0
        if log_file is not None:
            lines = [r for r in _read_log(log_file, args.session)][-args.tail:]
            for r in lines:
                where = " ".join(x for x in (r.get("bar"), r.get("client_id")) if x)
                print(f"{r.get('time', '')} {r.get('level', ''):<7} {r.get('logger', '')}"
                      f"{' [' + where + ']' if where else ''}: {r.get('message', '')}")
        else:
            for row in _journal_events(journal, limit=args.tail, newest=True):
                bar = f" bar {_bar_text(row['bar_ms'])}" if row["bar_ms"] is not None else ""
                payload = json.dumps(row["payload"] or {}, default=str, separators=(",", ":"))
                print(f"{_iso_ms(row['wall_ms'] / 1000)} {row['kind']}{bar} {payload}")
        return 0
    finally:
        if journal is not None:
            journal.close()


def add_logs_command(live_subparsers: Any) -> argparse.ArgumentParser:
    """``spotgym live logs``: a session's last log lines (or journal events), or with ``--errors`` its errors by
    kind."""
    p = live_subparsers.add_parser("logs", help="a session's log lines; --errors: its errors grouped by kind")
    p.add_argument("--session", required=True, metavar="NAME")
    p.add_argument("--journal", default=None, metavar="URL",
                   help="the session's journal (default: the one under ./runs/*/live/NAME/)")
    p.add_argument("--log", default=None, metavar="FILE",
                   help="the session's JSON log (default: log.jsonl beside a SQLite journal, where there is one)")
    p.add_argument("--errors", action="store_true",
                   help="errors and warnings grouped by kind: count, first / last time, an example "
                        "(from the log file; from the journal's events where there is none)")
    p.add_argument("--tail", type=int, default=50, metavar="N", help="without --errors: the last N lines (50)")
    p.set_defaults(func=_live_logs)
    return p
