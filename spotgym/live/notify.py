"""Alerts of a live session: the events worth a message, sent to webhooks, Telegram, e-mail or the log.

``NotifyHub(configs, session=..., secrets=...)`` takes the live config's ``notify:`` list, e.g.::

    notify:
      - {kind: webhook, url: "https://hooks.example.com/T0/B0/XXXX", headers: {Authorization: "Bearer ..."}}
      - {kind: telegram, token: "123456:ABC...", chat_id: "-100123", base_url: "https://api.telegram.org"}
      - {kind: email, host: smtp.example.com, port: 587, starttls: true, sender: bot@example.com,
         to: [me@example.com], username: bot@example.com, password: "...", events: [halted, kill_switch]}
      - {kind: log}                      # level: info (default) | warning | ...

Every notifier also takes ``name``, ``events`` (the kinds it gets: default ``ALERT_KINDS``, ``"*"``: every kind),
``max_per_minute`` (default 20), ``min_interval_s`` (default 0: seconds between two of its messages), ``dedupe_s``
(default 300: the same kind and key within it is sent once), ``max_tries`` (default 5), ``retry_s`` (default 2:
the first back-off, doubled after each failure, at most 300 s) and ``timeout_s`` (default 10, per request).

``hub.emit(kind, payload, bar_ms)`` returns at once: the event goes on a queue that one daemon worker thread
drains. Per notifier the worker filters (``events``), de-duplicates (``dedupe_key``), rate-limits (excess
messages are held back and summed up in one ``suppressed`` message once the notifier may send again, or at
``close``; the urgent kinds in ``URGENT_KINDS`` are never held back) and sends; a failed send is retried with
back-off up to ``max_tries`` times, then dropped with one warning on the ``spotgym.live.notify`` logger. A
4xx answer other than 408 / 429 drops the message at once (it will not get better); 429's ``retry_after`` is
honoured. Nothing a notifier does can raise into, or block, the caller. ``hub.close(timeout)`` flushes.

A ``decision`` event whose risk verdict (``risk``) is non-empty becomes a ``risk_veto``; a decision that finds the
account halted after one that did not becomes ``kill_switch`` (and ``halt_lifted`` the other way).

No secret in any message: every outgoing text and body, and every log line here, goes through
``spotgym.live.keys.redact`` with the hub's secrets plus every notifier's own (the Telegram token, which is in
its URL path, the SMTP password, webhook URLs and header values). No URL is ever logged.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import logging
import math
import queue
import smtplib
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from spotgym.live.keys import redact

__all__ = [
    "ALERT_KINDS",
    "KNOWN_KINDS",
    "NOTIFIER_KINDS",
    "URGENT_KINDS",
    "DailyTracker",
    "Message",
    "NotifyHub",
    "check_notify_config",
    "dedupe_key",
    "format_text",
]

log = logging.getLogger("spotgym.live.notify")
alerts_log = logging.getLogger("spotgym.live.alerts")  # the `log` notifier writes here

NOTIFIER_KINDS = ("webhook", "telegram", "email", "log")

# the kinds a notifier gets unless its `events` say otherwise
ALERT_KINDS = frozenset({
    "session_ready", "session_stop", "stopped_stale",  # session start (fresh or resumed) / stop
    "fill",
    "risk_veto", "kill_switch", "halt_lifted", "halted",  # risk vetoes, the kill switch, a broker halt
    "feed_stale", "feed_recovered",
    "order_rejected", "order_ambiguous", "order_given_up", "blocked", "ban", "overfill",  # order errors
    "reconcile_difference",
    "daily_summary",
})
# never held back by a rate limit (still de-duplicated)
URGENT_KINDS = frozenset({"kill_switch", "halted", "session_stop", "stopped_stale", "ban", "reconcile_difference"})
_ORDER_STATUSES = ("intent", "sent", "open", "filled", "expired", "canceled", "rejected", "unknown", "not_placed")
KNOWN_KINDS = ALERT_KINDS | {f"order_{s}" for s in _ORDER_STATUSES} | {
    "session_start", "session_resume", "decision", "intent", "no_order", "backfill", "feed_error", "throttled",
    "missed_bars", "command", "command_applied", "balances_retry", "fills_missing", "reconciled", "suppressed",
}

_COMMON = {"kind": str, "name": str, "events": list, "max_per_minute": int, "min_interval_s": float,
           "dedupe_s": float, "max_tries": int, "retry_s": float, "timeout_s": float}
_KEYS: dict[str, dict[str, Any]] = {
    "webhook": {"url": str, "headers": dict},
    "telegram": {"token": str, "chat_id": (str, int), "base_url": str},
    "email": {"host": str, "port": int, "sender": str, "to": (list, str), "username": str, "password": str,
              "starttls": bool, "ssl": bool},
    "log": {"level": str},
}
_REQUIRED = {"webhook": ("url",), "telegram": ("token", "chat_id"), "email": ("host", "sender", "to"), "log": ()}
_DEFAULTS = {"max_per_minute": 20, "min_interval_s": 0.0, "dedupe_s": 300.0, "max_tries": 5, "retry_s": 2.0,
             "timeout_s": 10.0}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_BACKOFF_S = 300.0
QUEUE_SIZE = 10_000
TICK_S = 0.1  # the worker wakes at least this often (held-back summaries, retries)


# ------------------------------------------------------------------------------------------------- configuration
def check_notify_config(configs: Any) -> list[dict[str, Any]]:
    """The ``notify:`` list checked and completed with defaults; a ``ValueError`` names the bad key."""
    if configs is None:
        return []
    if isinstance(configs, Mapping):
        configs = [configs]
    if not isinstance(configs, list | tuple):
        raise ValueError(f"notify: expected a list of notifiers, got {type(configs).__name__}")
    out = []
    for i, raw in enumerate(configs):
        where = f"notify[{i}]"
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: expected a mapping with a 'kind' key, got {type(raw).__name__}")
        kind = raw.get("kind")
        if kind not in NOTIFIER_KINDS:
            raise ValueError(f"{where}: 'kind' must be one of {', '.join(NOTIFIER_KINDS)}, got {kind!r}")
        where = f"notify[{i}] ({kind})"
        allowed = {**_COMMON, **_KEYS[kind]}
        for key in raw:
            if key not in allowed:
                raise ValueError(f"{where}: unknown key {key!r}; known: {sorted(allowed)}")
        for key in _REQUIRED[kind]:
            if raw.get(key) in (None, "", []):
                raise ValueError(f"{where}: missing key {key!r}")
        cfg: dict[str, Any] = {**_DEFAULTS, "name": f"{kind}[{i}]", "events": None}
        if kind == "telegram":
            cfg["base_url"] = "https://api.telegram.org"
        if kind == "email":
            cfg.update(port=25, starttls=False, ssl=False, username=None, password=None)
        if kind == "log":
            cfg["level"] = "info"
        for key, value in raw.items():
            cfg[key] = _check_value(where, key, value, allowed[key])
        _check_semantics(where, kind, cfg)
        out.append(cfg)
    return out


def _check_value(where: str, key: str, value: Any, typ: Any) -> Any:
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types and isinstance(value, int | float) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in types:
        raise ValueError(f"{where}: {key!r} must be {_type_text(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ValueError(f"{where}: {key!r} must be {_type_text(types)}, got {type(value).__name__}")
    return value


def _type_text(types: tuple[type, ...]) -> str:
    names = {str: "text", int: "an integer", float: "a number", bool: "true or false", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_semantics(where: str, kind: str, cfg: dict[str, Any]) -> None:
    for key in ("min_interval_s", "dedupe_s", "retry_s"):
        if not (math.isfinite(cfg[key]) and cfg[key] >= 0):
            raise ValueError(f"{where}: {key!r} must be >= 0, got {cfg[key]}")
    if not (math.isfinite(cfg["timeout_s"]) and cfg["timeout_s"] > 0):
        raise ValueError(f"{where}: 'timeout_s' must be > 0, got {cfg['timeout_s']}")
    if cfg["max_tries"] < 1:
        raise ValueError(f"{where}: 'max_tries' must be >= 1, got {cfg['max_tries']}")
    if cfg["max_per_minute"] < 0:
        raise ValueError(f"{where}: 'max_per_minute' must be >= 0 (0: no limit), got {cfg['max_per_minute']}")
    if cfg["events"] is not None:
        for e in cfg["events"]:
            if not isinstance(e, str) or (e != "*" and e not in KNOWN_KINDS and not e.startswith("order_")):
                raise ValueError(f"{where}: 'events' has an unknown event kind {e!r}; known: "
                                 f"{sorted(KNOWN_KINDS)} or '*'")
    for key in ("url", "base_url"):
        if key in cfg and urlsplit(cfg[key]).scheme not in ("http", "https"):
            raise ValueError(f"{where}: {key!r} must be an http:// or https:// URL")
    if kind == "webhook" and not all(isinstance(k, str) and isinstance(v, str) for k, v in cfg.get("headers",
                                                                                                     {}).items()):
        raise ValueError(f"{where}: 'headers' must map text to text")
    if kind == "email":
        if not 1 <= cfg["port"] <= 65535:
            raise ValueError(f"{where}: 'port' must be 1..65535, got {cfg['port']}")
        to = [cfg["to"]] if isinstance(cfg["to"], str) else cfg["to"]
        if not to or not all(isinstance(t, str) and "@" in t for t in to):
            raise ValueError(f"{where}: 'to' must be one address or a list of addresses")
        cfg["to"] = list(to)
        if cfg["starttls"] and cfg["ssl"]:
            raise ValueError(f"{where}: 'starttls' and 'ssl' exclude each other")
        if cfg["password"] is not None and cfg["username"] is None:
            raise ValueError(f"{where}: 'password' needs 'username'")
    if kind == "log" and cfg["level"] not in _LEVELS:
        raise ValueError(f"{where}: 'level' must be one of {sorted(_LEVELS)}, got {cfg['level']!r}")


# ------------------------------------------------------------------------------------------------- messages
@dataclass
class Message:
    kind: str
    session: str
    payload: dict[str, Any]
    bar_ms: int | None = None
    wall: float = field(default_factory=time.time)
    key: Any = None


def _iso(ms: float | None) -> str:
    if ms is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000)) + " UTC"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}" if abs(value) < 1e6 else f"{value:,.2f}"
    return str(value)


def format_text(msg: Message) -> str:
    """The message as text (the same for every notifier; the webhook's JSON body carries it as ``text``)."""
    p = msg.payload
    head = f"[spotgym {msg.session}] {msg.kind}" + (f" (bar {_iso(msg.bar_ms)})" if msg.bar_ms is not None else "")
    if msg.kind == "fill" and {"side", "quantity", "price"} <= set(p):
        body = f"{p['side']} {_num(p['quantity'])} @ {_num(p['price'])}, fee {_num(p.get('fee_quote', 0.0))}"
    elif msg.kind == "daily_summary":
        body = (f"{p.get('day', '')}: PnL {_num(p.get('pnl'))} ({100 * float(p.get('return') or 0.0):+.2f} %), "
                f"max drawdown {100 * float(p.get('drawdown') or 0.0):.2f} %, {p.get('trades')} trades, "
                f"fees {_num(p.get('fees'))}, equity {_num(p.get('equity'))}")
    elif msg.kind == "suppressed":
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(p.get("kinds", {}).items()))
        body = f"{p.get('count')} more alert(s) held back by the rate limit: {kinds}"
    else:
        body = ", ".join(f"{k}={_num(v)}" for k, v in p.items())
    return f"{head}: {body}" if body else head


_KEY_FIELDS: dict[str, tuple[str, ...] | None] = {
    "fill": ("trade_id",), "risk_veto": ("risk",), "kill_switch": (), "halt_lifted": (), "halted": ("reason",),
    "feed_stale": (), "feed_recovered": (), "ban": (), "blocked": ("client_id",), "overfill": ("trade_id",),
    "reconcile_difference": ("journal_position", "exchange_position"), "daily_summary": ("day",),
    "session_ready": None, "session_stop": None, "session_start": None, "session_resume": None, "suppressed": None,
}


def dedupe_key(kind: str, payload: Mapping[str, Any]) -> Any:
    """What makes two events of ``kind`` the same alert (None: never the same): order events by client order id,
    fills by trade id, risk vetoes by their flags, the feed's and the kill switch's by kind alone; otherwise the
    whole payload."""
    fields_ = _KEY_FIELDS.get(kind, ("client_id",) if kind.startswith("order_") else ...)
    if fields_ is None:
        return None
    if fields_ is ...:
        return (kind, json.dumps(payload, sort_keys=True, default=str))
    return (kind, *(str(payload.get(f)) for f in fields_))


# ------------------------------------------------------------------------------------------------- notifiers
class _SendError(Exception):
    def __init__(self, text: str, *, retry_after: float | None = None, permanent: bool = False) -> None:
        super().__init__(text)
        self.retry_after, self.permanent = retry_after, permanent


class _Notifier:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.kind, self.name = cfg["kind"], cfg["name"]
        self.events = None if cfg["events"] is None else frozenset(cfg["events"])
        self.max_per_minute, self.min_interval_s = cfg["max_per_minute"], cfg["min_interval_s"]
        self.dedupe_s, self.max_tries = cfg["dedupe_s"], cfg["max_tries"]
        self.retry_s, self.timeout_s = cfg["retry_s"], cfg["timeout_s"]
        self.window: deque[float] = deque()  # admission times in the last minute
        self.last_admit: float | None = None
        self.seen: dict[Any, float] = {}  # dedupe key -> when first sent in its window
        self.held: Counter[str] = Counter()  # kinds held back by the rate limit
        self.stats = Counter({"sent": 0, "failed": 0, "dropped": 0, "deduped": 0, "suppressed": 0})

    def secrets(self) -> list[str]:
        return []

    def wants(self, kind: str) -> bool:
        if kind == "suppressed":
            return True
        if self.events is None:
            return kind in ALERT_KINDS
        return "*" in self.events or kind in self.events

    def allowed(self, now: float) -> bool:
        while self.window and self.window[0] <= now - 60.0:
            self.window.popleft()
        if self.max_per_minute and len(self.window) >= self.max_per_minute:
            return False
        return not (self.min_interval_s and self.last_admit is not None
                    and now - self.last_admit < self.min_interval_s)

    def admitted(self, now: float) -> None:
        self.window.append(now)
        self.last_admit = now

    def duplicate(self, key: Any, now: float) -> bool:
        if key is None or not self.dedupe_s:
            return False
        first = self.seen.get(key)
        if first is not None and now - first < self.dedupe_s:
            return True
        self.seen[key] = now
        if len(self.seen) > 2000:
            self.seen = {k: t for k, t in self.seen.items() if now - t < self.dedupe_s}
        return False

    def send(self, msg: Message, text: str, scrub: Callable[[Any], str]) -> None:
        raise NotImplementedError


def _opener(url: str) -> urllib.request.OpenerDirector:
    """urllib (not requests: it logs nothing, and its errors never carry the URL); loopback skips any proxy."""
    host = urlsplit(url).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _post_json(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "spotgym-notify",
                                              **headers})
    try:
        with _opener(url).open(request, timeout=timeout) as reply:
            return reply.read()
    except urllib.error.HTTPError as exc:
        detail = b""
        with contextlib.suppress(Exception):
            detail = exc.read()[:300]
        retry_after = None
        with contextlib.suppress(Exception):
            retry_after = float(json.loads(detail).get("parameters", {}).get("retry_after"))
        if retry_after is None:
            with contextlib.suppress(Exception):
                retry_after = float(exc.headers.get("Retry-After"))
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 429)
        raise _SendError(f"HTTP {exc.code}: {detail.decode('utf-8', 'replace')}", retry_after=retry_after,
                         permanent=permanent) from None
    except urllib.error.URLError as exc:
        raise _SendError(f"URLError: {exc.reason}") from None
    except (OSError, ValueError) as exc:  # timeouts, resets, a bad URL
        raise _SendError(f"{type(exc).__name__}: {exc}") from None


class _Webhook(_Notifier):
    def secrets(self) -> list[str]:
        return [self.cfg["url"], *self.cfg.get("headers", {}).values()]

    def send(self, msg: Message, text: str, scrub: Callable[[Any], str]) -> None:
        body = {"session": msg.session, "kind": msg.kind, "bar_ms": msg.bar_ms, "bar": _iso(msg.bar_ms) or None,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(msg.wall)), "text": text,
                "payload": msg.payload}
        data = scrub(json.dumps(body, default=str))
        _post_json(self.cfg["url"], data.encode(), self.cfg.get("headers", {}), self.timeout_s)


class _Telegram(_Notifier):
    def secrets(self) -> list[str]:
        return [self.cfg["token"]]

    def send(self, msg: Message, text: str, scrub: Callable[[Any], str]) -> None:
        url = f"{self.cfg['base_url'].rstrip('/')}/bot{self.cfg['token']}/sendMessage"
        data = scrub(json.dumps({"chat_id": self.cfg["chat_id"], "text": text[:4000],
                                 "disable_web_page_preview": True}))
        reply = _post_json(url, data.encode(), {}, self.timeout_s)
        try:
            ok = json.loads(reply).get("ok", True)
        except ValueError:
            ok = True
        if ok is False:
            raise _SendError(f"Telegram says not ok: {reply[:200].decode('utf-8', 'replace')}")


class _Email(_Notifier):
    def secrets(self) -> list[str]:
        return [self.cfg["password"]] if self.cfg["password"] else []

    def send(self, msg: Message, text: str, scrub: Callable[[Any], str]) -> None:
        c = self.cfg
        mail = EmailMessage()
        mail["Subject"] = scrub(f"[spotgym {msg.session}] {msg.kind}")
        mail["From"], mail["To"] = c["sender"], ", ".join(c["to"])
        payload = json.dumps(msg.payload, indent=2, sort_keys=True, default=str)
        mail.set_content(scrub(f"{text}\n\n{payload}\n"))
        try:
            cls = smtplib.SMTP_SSL if c["ssl"] else smtplib.SMTP
            with cls(c["host"], c["port"], timeout=self.timeout_s) as smtp:
                if c["starttls"]:
                    smtp.starttls(context=ssl.create_default_context())
                if c["username"]:
                    smtp.login(c["username"], c["password"] or "")
                smtp.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            raise _SendError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", permanent=permanent) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise _SendError(f"{type(exc).__name__}: {exc}") from None


class _Log(_Notifier):
    def send(self, msg: Message, text: str, scrub: Callable[[Any], str]) -> None:
        alerts_log.log(_LEVELS[self.cfg["level"]], "%s", scrub(text),
                       extra={"session": msg.session, "bar": msg.bar_ms, "kind": msg.kind,
                              "client_id": msg.payload.get("client_id")})


_CLASSES: dict[str, type[_Notifier]] = {"webhook": _Webhook, "telegram": _Telegram, "email": _Email, "log": _Log}


# ------------------------------------------------------------------------------------------------- daily summary
class DailyTracker:
    """The figures of each UTC day from the marks made at each bar: ``update(bar_ms, equity=, trades=, fees=)``
    (``trades`` and ``fees``: the session's running totals) returns the finished day's summary (``day``, ``pnl``,
    ``return``, ``drawdown``: the day's largest fall from the session's equity peak, as a fraction, ``trades``,
    ``fees``, ``equity``) on the first bar of the next day, else None."""

    def __init__(self) -> None:
        self.day: str | None = None
        self.peak = -math.inf
        self.open_equity = self.equity = 0.0
        self.trades0 = self.trades = 0
        self.fees0 = self.fees = 0.0
        self.drawdown = 0.0

    def update(self, bar_ms: int, *, equity: float, trades: int = 0, fees: float = 0.0) -> dict[str, Any] | None:
        day = time.strftime("%Y-%m-%d", time.gmtime(int(bar_ms) / 1000))
        summary = None
        if self.day is None:
            self.day, self.open_equity, self.trades0, self.fees0 = day, float(equity), int(trades), float(fees)
        elif day != self.day:
            summary = self.summary()
            self.day, self.open_equity, self.trades0, self.fees0 = day, self.equity, self.trades, self.fees
            self.drawdown = 0.0
        self.equity, self.trades, self.fees = float(equity), int(trades), float(fees)
        self.peak = max(self.peak, self.equity)
        if self.peak > 0:
            self.drawdown = max(self.drawdown, 1.0 - self.equity / self.peak)
        return summary

    def summary(self) -> dict[str, Any]:
        """The current (possibly unfinished) day's figures."""
        pnl = self.equity - self.open_equity
        return {"day": self.day, "pnl": pnl, "return": pnl / self.open_equity if self.open_equity else 0.0,
                "drawdown": self.drawdown, "trades": self.trades - self.trades0, "fees": self.fees - self.fees0,
                "equity": self.equity}


# ------------------------------------------------------------------------------------------------- the hub
_STOP = object()


class NotifyHub:
    """``NotifyHub(configs, session=..., secrets=(), clock=time.monotonic)``: the notifiers of one session.

    ``clock`` drives the rate limits, the de-duplication windows and the retry back-off. ``emit`` never blocks
    and never raises; ``flush(timeout)`` waits until everything queued is sent or dropped;
    ``close(timeout)`` flushes (held-back messages summed up and sent regardless of the rate limit), stops the
    worker and returns how many messages were left undelivered. ``stats()``: per notifier, messages sent,
    failed tries, dropped, deduplicated and held back."""

    def __init__(self, configs: list[dict[str, Any]] | None, *, session: str, secrets: Iterable[Any] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session, self.clock = session, clock
        self.notifiers: list[_Notifier] = [_CLASSES[c["kind"]](c) for c in check_notify_config(configs)]
        self._secrets: tuple[str, ...] = ()
        self.add_secrets([*secrets, *(s for n in self.notifiers for s in n.secrets())])
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=QUEUE_SIZE)
        self._heap: list[tuple[float, int, int, Message, int]] = []  # (due, seq, notifier index, message, tries)
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._unfinished = 0  # events queued but not yet fanned out + messages in the heap
        self._lock = threading.Lock()
        self._halted = False
        self._closed = False
        self._closing_deadline: float | None = None
        self.lost = 0  # events the full queue could not take
        self._undelivered = 0  # messages dropped at close
        self.daily = DailyTracker()
        self._thread: threading.Thread | None = None
        if self.notifiers:
            self._thread = threading.Thread(target=self._work, name=f"notify-{session}", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ the caller's side
    def add_secrets(self, secrets: Iterable[Any]) -> None:
        """Hide these too (strings, or ``keys.Credentials``): e.g. the exchange keys, known once connected."""
        found = []
        for item in secrets:
            found.extend(getattr(item, "secrets", None) or ([item] if isinstance(item, str) else []))
        self._secrets = tuple(dict.fromkeys((*self._secrets, *(s for s in found if isinstance(s, str) and s))))

    def scrub(self, text: Any) -> str:
        """``text`` with every secret this hub knows replaced by ``***``."""
        return redact(text, self._secrets)

    def emit(self, kind: str, payload: Mapping[str, Any] | None = None, bar_ms: int | None = None, *,
             key: Any = ...) -> None:
        """Queue an event (``key``: its de-duplication key, default ``dedupe_key(kind, payload)``)."""
        try:
            if self._closed or not self.notifiers:
                return
            payload = dict(payload or {})
            kind = self._classify(kind, payload)
            if not any(n.wants(kind) for n in self.notifiers):
                return
            msg = Message(kind, self.session, payload, None if bar_ms is None else int(bar_ms))
            msg.key = dedupe_key(kind, payload) if key is ... else key
            with self._cond:
                self._unfinished += 1
            try:
                self._queue.put_nowait(msg)
            except queue.Full:
                with self._cond:
                    self._unfinished -= 1
                self.lost += 1
                if self.lost in (1, 10, 100) or self.lost % 1000 == 0:
                    log.warning("notify: the alert queue is full; %d event(s) lost so far", self.lost)
        except Exception as exc:  # never into trading
            log.debug("notify: emit failed: %s", self.scrub(f"{type(exc).__name__}: {exc}"))

    def _classify(self, kind: str, payload: dict[str, Any]) -> str:
        if kind != "decision":
            return kind
        halted = bool(payload.get("halted"))
        with self._lock:
            was, self._halted = self._halted, halted
        if halted and not was:
            return "kill_switch"
        if was and not halted:
            return "halt_lifted"
        return "risk_veto" if payload.get("risk") else "decision"

    def daily_summary(self, pnl: float, drawdown: float, trades: int, fees: float, equity: float, *,
                      day: str | None = None, bar_ms: int | None = None) -> None:
        """Send the day's figures (``drawdown``: a fraction, e.g. 0.05 for 5 %)."""
        if day is None:
            day = time.strftime("%Y-%m-%d", time.gmtime((bar_ms / 1000) if bar_ms is not None else time.time()))
        start = equity - pnl
        self.emit("daily_summary", {"day": day, "pnl": float(pnl), "return": pnl / start if start else 0.0,
                                    "drawdown": float(drawdown), "trades": int(trades), "fees": float(fees),
                                    "equity": float(equity)}, bar_ms)

    def track_day(self, bar_ms: int, *, equity: float, trades: int = 0, fees: float = 0.0) -> dict[str, Any] | None:
        """Call at each bar's mark: sends the daily summary when ``bar_ms`` starts a new UTC day (returned too)."""
        summary = self.daily.update(bar_ms, equity=equity, trades=trades, fees=fees)
        if summary is not None:
            self.emit("daily_summary", summary, bar_ms)
        return summary

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued event is sent or dropped (held-back messages aside); False on timeout."""
        if self._thread is None:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._unfinished > 0:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, TICK_S))
        return True

    def close(self, timeout: float = 10.0) -> int:
        """Flush within ``timeout`` seconds and stop; returns how many messages were left undelivered."""
        if self._closed:
            return 0
        self._closed = True
        if self._thread is None:
            return 0
        self._closing_deadline = time.monotonic() + timeout
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=max(timeout, 0.1))
        self._thread.join(timeout + 1.0)
        with self._cond:
            left = max(self._unfinished, 0)
        return self._undelivered + left

    def stats(self) -> dict[str, dict[str, int]]:
        return {n.name: dict(n.stats) for n in self.notifiers}

    def __enter__(self) -> NotifyHub:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ the worker
    def _done(self, n: int = 1) -> None:
        with self._cond:
            self._unfinished -= n
            if self._unfinished <= 0:
                self._cond.notify_all()

    def _work(self) -> None:
        stopping = False
        while True:
            try:
                wait = TICK_S
                if self._heap:
                    wait = min(TICK_S, max(0.0, self._heap[0][0] - self.clock()))
                try:
                    item = self._queue.get(timeout=wait) if not stopping else self._queue.get_nowait()
                except queue.Empty:
                    item = None
                while item is not None:
                    if item is _STOP:
                        stopping = True
                    else:
                        self._fan_out(item)
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                self._release_held(force=stopping)
                self._send_due(stopping)
                if stopping:
                    if not self._heap:
                        return
                    if time.monotonic() >= (self._closing_deadline or 0.0):
                        self._drop_all("at close")
                        return
                    time.sleep(min(TICK_S, max(0.0, self._heap[0][0] - self.clock())))
            except Exception as exc:  # the worker survives anything
                log.warning("notify: worker error: %s", self.scrub(f"{type(exc).__name__}: {exc}"))
                time.sleep(TICK_S)

    def _fan_out(self, msg: Message) -> None:
        now = self.clock()
        queued = 0
        for i, n in enumerate(self.notifiers):
            if not n.wants(msg.kind):
                continue
            if n.duplicate(msg.key, now):
                n.stats["deduped"] += 1
                continue
            if msg.kind not in URGENT_KINDS and not n.allowed(now):
                n.held[msg.kind] += 1
                n.stats["suppressed"] += 1
                continue
            n.admitted(now)
            heapq.heappush(self._heap, (now, next(self._seq), i, msg, 0))
            queued += 1
        with self._cond:
            self._unfinished += queued
        self._done()

    def _release_held(self, force: bool) -> None:
        now = self.clock()
        for i, n in enumerate(self.notifiers):
            if not n.held or not (force or n.allowed(now)):
                continue
            msg = Message("suppressed", self.session, {"count": sum(n.held.values()), "kinds": dict(n.held)})
            n.held.clear()
            n.admitted(now)
            with self._cond:
                self._unfinished += 1
            heapq.heappush(self._heap, (now, next(self._seq), i, msg, 0))

    def _send_due(self, stopping: bool) -> None:
        while self._heap and self._heap[0][0] <= self.clock():
            if stopping and time.monotonic() >= (self._closing_deadline or 0.0):
                return
            _, _, i, msg, tries = heapq.heappop(self._heap)
            n = self.notifiers[i]
            tries += 1
            try:
                clean = Message(msg.kind, msg.session, self._scrub_obj(msg.payload), msg.bar_ms, msg.wall, msg.key)
                n.send(clean, self.scrub(format_text(clean)), self.scrub)
            except Exception as exc:
                n.stats["failed"] += 1
                error = self.scrub(str(exc) if isinstance(exc, _SendError) else f"{type(exc).__name__}: {exc}")
                error = " ".join(error.split())[:300]
                permanent = isinstance(exc, _SendError) and exc.permanent
                if permanent or tries >= n.max_tries:
                    n.stats["dropped"] += 1
                    log.warning("notify: %s dropped a %s message after %d %s: %s", n.name, msg.kind, tries,
                                "try" if tries == 1 else "tries", error)
                    self._done()
                    continue
                backoff = min(n.retry_s * 2 ** (tries - 1), MAX_BACKOFF_S)
                if isinstance(exc, _SendError) and exc.retry_after is not None:
                    backoff = max(backoff, min(exc.retry_after, MAX_BACKOFF_S))
                log.info("notify: %s failed to send a %s message (try %d of %d): %s; again in %.3g s", n.name,
                         msg.kind, tries, n.max_tries, error, backoff)
                heapq.heappush(self._heap, (self.clock() + backoff, next(self._seq), i, msg, tries))
            else:
                n.stats["sent"] += 1
                self._done()

    def _scrub_obj(self, value: Any) -> Any:
        """A copy of a payload with every text in it (keys too) redacted."""
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {self.scrub(k) if isinstance(k, str) else k: self._scrub_obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set):
            return [self._scrub_obj(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        if hasattr(value, "item"):  # numpy scalars
            with contextlib.suppress(Exception):
                return value.item()
        return self.scrub(str(value))

    def _drop_all(self, why: str) -> None:
        dropped: Counter[str] = Counter()
        while self._heap:
            _, _, i, msg, _ = heapq.heappop(self._heap)
            self.notifiers[i].stats["dropped"] += 1
            dropped[self.notifiers[i].name] += 1
            self._done()
        self._undelivered += sum(dropped.values())
        for name, count in dropped.items():
            log.warning("notify: %s dropped %d undelivered message(s) %s", name, count, why)
