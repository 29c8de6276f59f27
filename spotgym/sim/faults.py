"""Injected failures: what the live runner must survive, on purpose.

One schema for the YAML file (``--faults``) and ``POST /sim/faults``::

    {"rules": [{"kind": "http_error", "status": 503, "path": "/api/v3/order", "count": 1}, ...]}

``count`` (default 1) is how many times a rule fires (``null``: until the rules are replaced); ``path`` picks
the REST path it applies to (default: every path) or, for websocket kinds, ``stream`` picks the stream
(default: every stream). Kinds and their fields:

- ``http_error``: answer with ``status`` (default 503; 400-599) and Binance's body for it; ``retry_after``
  seconds for 429 / 418.
- ``latency``: delay the reply by ``ms`` (wall time).
- ``lost_reply``: a POST / PUT / DELETE to ``path`` (default ``/api/v3/order``; a cancel is
  ``DELETE /api/v3/order`` too) is executed but the client gets ``status`` (default 504, Binance's
  "execution status unknown"), or with ``mode: timeout`` no reply for ``ms`` first.
- ``reject``: the next order is rejected with ``code`` / ``msg`` (default -2010, insufficient balance).
- ``partial_fill``: the next accepted order (one the exchange then rejects does not use the rule up) fills only ``fraction`` (default 0.5) of what it would; a MARKET order's
  rest expires, a LIMIT order's rest stays on the book (IOC / FOK expire).
- ``ws_drop``: close websocket connections (those carrying ``stream`` when given): the next ``count``
  of them to have a frame to send, or with ``ms`` every one (idle and new ones too) for that long.
- ``ws_stall``: connections stay open but send nothing for ``ms`` (wall time).
- ``duplicate_event``: the next event is sent twice; ``out_of_order_event``: the next two events are sent
  in swapped order.
- ``maintenance``: for ``ms`` of wall time every REST request gets 503 and websockets are closed and refused.
- ``clock_skew``: the server's clock (``/api/v3/time`` and the ``recvWindow`` check) is off by ``ms``.

Every injected fault is logged (``faults.log``: kind, path or stream, sim time, wall time); the lasting kinds
(``ws_stall``, ``clock_skew``) once, when they first apply, and ``maintenance`` at each request or connection
it refuses or closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from fastapi.responses import JSONResponse

__all__ = ["FAULT_KINDS", "FaultRule", "Faults"]

log = logging.getLogger("spotgym.sim.faults")

FAULT_KINDS = ("http_error", "latency", "lost_reply", "reject", "partial_fill", "ws_drop", "ws_stall",
               "duplicate_event", "out_of_order_event", "maintenance", "clock_skew")
_FIELDS = {
    "http_error": {"status", "retry_after"}, "latency": {"ms"}, "lost_reply": {"status", "mode", "ms"},
    "reject": {"code", "msg"}, "partial_fill": {"fraction"}, "ws_drop": {"stream", "ms"}, "ws_stall": {"ms", "stream"},
    "duplicate_event": {"stream"}, "out_of_order_event": {"stream"}, "maintenance": {"ms"}, "clock_skew": {"ms"},
}
_COMMON = {"kind", "path", "count"}

# Binance's own error bodies for the statuses a fault can take (ccxt maps these codes to
# OperationFailed / RateLimitExceeded / DDoSProtection / RequestTimeout, as it would live).
_FAULT_BODIES: dict[int, tuple[int, str]] = {
    418: (-1003, "Way too much request weight used; IP banned until further notice."),
    429: (-1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
    504: (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
}
_DEFAULT_FAULT_BODY = (-1001, "Internal error; unable to process your request. Please try again.")


@dataclass
class FaultRule:
    """One rule of the schema; ``remaining`` None fires until replaced."""

    kind: str
    path: str | None = None
    remaining: int | None = 1
    options: dict[str, Any] = field(default_factory=dict)
    until: float | None = None  # wall time (s) a timed kind (maintenance, ws_stall) lasts until
    noted: bool = False  # a lasting kind (ws_stall, clock_skew) is logged once, when it first bites

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "rules[0]") -> FaultRule:
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}: a fault rule is a mapping with 'kind', got {raw!r}")
        kind = raw.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"{where}.kind: must be one of {list(FAULT_KINDS)}, got {kind!r}")
        unknown = sorted(set(raw) - _COMMON - _FIELDS[kind])
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown} for {kind}; known: {sorted(_COMMON | _FIELDS[kind])}")
        count = raw.get("count", 1)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ValueError(f"{where}.count: an integer >= 1 or null (until replaced), got {count!r}")
        options = {k: v for k, v in raw.items() if k not in _COMMON}
        for name in ("status", "retry_after", "ms", "code"):
            if name in options and (isinstance(options[name], bool) or not isinstance(options[name], int)):
                raise ValueError(f"{where}.{name}: an integer, got {options[name]!r}")
        if "status" in options and not 400 <= options["status"] <= 599:
            raise ValueError(f"{where}.status: an HTTP error status (400-599), got {options['status']!r}")
        for name in ("retry_after", "ms"):
            if name in options and options[name] < 0 and kind != "clock_skew":  # a clock may be behind
                raise ValueError(f"{where}.{name}: >= 0, got {options[name]!r}")
        for name in ("stream", "msg", "mode"):
            if name in options and not isinstance(options[name], str):
                raise ValueError(f"{where}.{name}: a string, got {options[name]!r}")
        if raw.get("path") is not None and not (isinstance(raw["path"], str) and raw["path"].startswith("/")):
            raise ValueError(f"{where}.path: a request path such as '/api/v3/order', got {raw['path']!r}")
        if "fraction" in options and not (isinstance(options["fraction"], int | float) and 0 <= options["fraction"] < 1):
            raise ValueError(f"{where}.fraction: a number in [0, 1), got {options['fraction']!r}")
        if kind == "lost_reply" and options.get("mode", "error") not in ("error", "timeout"):
            raise ValueError(f"{where}.mode: 'error' or 'timeout', got {options.get('mode')!r}")
        if kind in ("maintenance", "ws_stall", "clock_skew") and "ms" not in options:
            raise ValueError(f"{where}.ms: required for {kind}")
        path = raw.get("path")
        if kind == "lost_reply" and path is None:
            path = "/api/v3/order"
        return cls(kind, path, count, options)

    def applies(self, path: str | None) -> bool:
        return self.path is None or path is None or self.path == path

    @property
    def live(self) -> bool:
        if self.until is not None:
            return time.time() < self.until and self.remaining != 0
        return self.remaining is None or self.remaining > 0


class Faults:
    """The active fault rules; the server asks it at each hook, and it says what to inject (thread-safe)."""

    def __init__(self, spec: Mapping[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self.rules: list[FaultRule] = []
        self.injected = 0
        self.log: list[dict[str, Any]] = []
        self.sim_clock: Callable[[], int] = lambda: 0
        self._seen: Counter[str | None] = Counter()
        self._numbered: dict[tuple[str | None, int], int] = {}
        if spec is not None:
            self.set(spec)

    # ------------------------------------------------------------------ configuration
    @classmethod
    def from_file(cls, path: str | Path) -> Faults:
        try:
            spec = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"faults file {path}: {exc}") from None
        try:
            return cls(spec)
        except ValueError as exc:
            raise ValueError(f"faults file {path}: {exc}") from None

    def set(self, spec: Mapping[str, Any]) -> None:
        """Replace the rules with ``{"rules": [...]}`` (the schema above); ValueError naming a bad field."""
        if not isinstance(spec, Mapping) or set(spec) - {"rules"}:
            raise ValueError(f"faults: expected {{'rules': [...]}}, got {spec!r}")
        raw = spec.get("rules") or []
        if not isinstance(raw, list):
            raise ValueError(f"faults.rules: a list of rules, got {raw!r}")
        rules = [FaultRule.from_mapping(r, f"rules[{i}]") for i, r in enumerate(raw)]
        now = time.time()
        for rule in rules:
            if rule.kind in ("maintenance", "ws_stall") or (rule.kind == "ws_drop" and "ms" in rule.options):
                rule.until = now + rule.options["ms"] / 1000.0
        with self._lock:
            self.rules = rules

    def clear(self) -> None:
        """No rules, an empty fault log and a zero count (a test's fresh start)."""
        with self._lock:
            self.rules = []
            self.log.clear()
            self.injected = 0

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [{"kind": r.kind, "path": r.path, "remaining": r.remaining, **r.options}
                              for r in self.rules if r.live], "injected": self.injected, "log": self.log[-100:]}

    # the scripted helpers tests use: fail requests by count or by arrival number
    def fail_next(self, count: int = 1, *, status: int = 503, path: str | None = "/api/v3/klines") -> None:
        """Fail the next ``count`` requests to ``path`` with HTTP ``status``."""
        with self._lock:
            self.rules.append(FaultRule("http_error", path, count, {"status": status}))

    def fail_request(self, *numbers: int, status: int = 500, path: str | None = "/api/v3/klines") -> None:
        """Fail the requests to ``path`` whose 1-based arrival number is in ``numbers``."""
        with self._lock:
            for number in numbers:
                self._numbered[(path, number)] = status

    # ------------------------------------------------------------------ hooks
    def _fire(self, kind: str, where: str | None, match: Callable[[FaultRule], bool] | None = None,
              sim_time: int | None = None, peek: bool = False) -> FaultRule | None:
        """The first live rule of ``kind`` applying to ``where``; it is counted and logged (at ``sim_time``, default
        the market clock now) unless ``peek``."""
        with self._lock:
            for rule in self.rules:
                if rule.kind != kind or not rule.live or not (match(rule) if match else rule.applies(where)):
                    continue
                if rule.until is not None and time.time() >= rule.until:
                    rule.remaining = 0
                    continue
                if peek:
                    return rule
                if rule.remaining is not None and rule.until is None:
                    rule.remaining -= 1
                self._note(kind, where, sim_time)
                return rule
        return None

    def note(self, kind: str, where: str | None) -> None:
        """Log a fault the server applied on its own (e.g. a websocket refused during maintenance)."""
        with self._lock:
            self._note(kind, where)

    def _note(self, kind: str, where: str | None, sim_time: int | None = None) -> None:
        self.injected += 1
        entry = {"kind": kind, "where": where, "sim_time": int(self.sim_clock() if sim_time is None else sim_time),
                 "wall_time": round(time.time(), 3)}
        self.log.append(entry)
        log.warning("fault injected: %s on %s at sim time %s", kind, where or "*", entry["sim_time"])

    def http(self, path: str) -> tuple[int, int | None] | None:
        """(status, Retry-After) to answer a request to ``path`` with instead of serving it, or None."""
        with self._lock:
            self._seen[path] += 1
            self._seen[None] += 1
            for key in ((path, self._seen[path]), (None, self._seen[None])):
                if key in self._numbered:
                    status = self._numbered.pop(key)
                    self._note("http_error", path)
                    return status, None
        if self.maintenance():
            with self._lock:
                self._note("maintenance", path)
            return 503, None
        rule = self._fire("http_error", path)
        if rule is None:
            return None
        status = int(rule.options.get("status", 503))
        retry = rule.options.get("retry_after", 60 if status in (418, 429) else None)
        return status, retry

    def latency_ms(self, path: str) -> int:
        rule = self._fire("latency", path)
        return 0 if rule is None else int(rule.options.get("ms", 1000))

    def lost_reply(self, path: str) -> FaultRule | None:
        return self._fire("lost_reply", path)

    def order_reject(self) -> tuple[int, str] | None:
        rule = self._fire("reject", "/api/v3/order")
        if rule is None:
            return None
        return (int(rule.options.get("code", -2010)),
                str(rule.options.get("msg", "Account has insufficient balance for requested action.")))

    def partial_fill(self, peek: bool = False) -> float | None:
        """The share of the next order to fill; ``peek`` asks without using the rule up (an order that is then
        rejected must not consume it)."""
        rule = self._fire("partial_fill", "/api/v3/order", peek=peek)
        return None if rule is None else float(rule.options.get("fraction", 0.5))

    def maintenance(self) -> bool:
        now = time.time()
        with self._lock:
            return any(r.kind == "maintenance" and r.until is not None and now < r.until for r in self.rules)

    def clock_offset_ms(self, where: str | None = None) -> int:
        """The server clock's offset (ms) from clock_skew rules; each rule is logged the first time it applies."""
        with self._lock:
            offset = 0
            for rule in self.rules:
                if rule.kind == "clock_skew":
                    offset += int(rule.options["ms"])
                    if not rule.noted:
                        rule.noted = True
                        self._note("clock_skew", where)
            return offset

    def ws_should_drop(self, streams: set[str], timed_only: bool = False, sim_time: int | None = None) -> bool:
        """Whether a connection carrying ``streams`` (user-data connections: ``{"user"}``) must be closed now, instead
        of sending a frame made at ``sim_time`` (``timed_only``: only by a rule with ``ms``, which drops every
        connection, idle ones too)."""
        def match(rule: FaultRule) -> bool:
            return (rule.options.get("stream") is None or rule.options["stream"] in streams) and \
                (not timed_only or rule.until is not None)
        return self._fire("ws_drop", ",".join(sorted(streams)) or None, match=match, sim_time=sim_time) is not None

    def ws_stalled(self, streams: set[str]) -> bool:
        """Whether a connection carrying ``streams`` must stay silent now."""
        now = time.time()
        with self._lock:
            for rule in self.rules:
                if rule.kind == "ws_stall" and rule.until is not None and now < rule.until:
                    stream = rule.options.get("stream")
                    if stream is None or stream in streams:
                        if not rule.noted:  # log the stall once
                            rule.noted = True
                            self._note("ws_stall", stream)
                        return True
        return False

    def event_fault(self, stream: str) -> str | None:
        """``"duplicate"`` / ``"swap"`` for the next event on ``stream``, or None."""
        for kind, what in (("duplicate_event", "duplicate"), ("out_of_order_event", "swap")):
            rule = self._fire(kind, stream, match=lambda r: r.options.get("stream") in (None, stream))
            if rule is not None:
                return what
        return None

    @staticmethod
    def response(status: int, retry_after: int | None = None) -> JSONResponse:
        code, msg = _FAULT_BODIES.get(status, _DEFAULT_FAULT_BODY)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse({"code": code, "msg": msg}, status_code=status, headers=headers)
