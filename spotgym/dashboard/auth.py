"""Sessions, CSRF tokens and the failed-login rate limit of the dashboard.

- A session is a random 256-bit token in the ``spotgym_session`` cookie (``HttpOnly; SameSite=Strict; Path=/``,
  plus ``Secure`` over https), kept in memory only: restarting the dashboard logs everyone out. It expires after
  ``idle_s`` without a request and ``max_s`` after the login in any case.
- Each session carries its own CSRF token; a state-changing request (POST ...) must send it in the
  ``X-CSRF-Token`` header or a ``csrf_token`` form field, compared in constant time, else 403.
- Failed logins are counted per (user name, client address) over a sliding window: after ``limit`` failures in
  ``window_s`` seconds every further attempt for that pair answers 429 until the oldest failure ages out (the right
  password too: guessing stops, it does not slow down). A second, looser limit per client address caps spraying
  many names from one place.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["COOKIE", "CSRF_FIELD", "CSRF_HEADER", "LoginLimiter", "Session", "SessionStore", "session_cookie"]

COOKIE = "spotgym_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


@dataclass
class Session:
    token: str
    user: str
    csrf: str
    created: float
    seen: float = field(default=0.0)

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(self.csrf.encode(), str(sent).encode())


class SessionStore:
    """In-memory sessions: ``create(user)``, ``get(token)`` (None when unknown or expired), ``drop(token)``."""

    def __init__(self, idle_s: float = 12 * 3600, max_s: float = 7 * 24 * 3600, clock=time.monotonic) -> None:
        self.idle_s, self.max_s, self.clock = idle_s, max_s, clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str) -> Session:
        now = self.clock()
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._expire(now)
            self._sessions[session.token] = session
        return session

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        now = self.clock()
        with self._lock:
            session = self._sessions.get(token)
            if session is None:
                return None
            if now - session.seen > self.idle_s or now - session.created > self.max_s:
                del self._sessions[token]
                return None
            session.seen = now
            return session

    def drop(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def _expire(self, now: float) -> None:
        dead = [t for t, s in self._sessions.items() if now - s.seen > self.idle_s or now - s.created > self.max_s]
        for t in dead:
            del self._sessions[t]

    def __len__(self) -> int:
        return len(self._sessions)


class LoginLimiter:
    """Failed logins per (user, address) and per address in a sliding window; ``retry_after(user, address)`` is 0
    while attempts are allowed, else the seconds until one is."""

    def __init__(self, limit: int = 5, window_s: float = 60.0, per_address: int = 30, clock=time.monotonic) -> None:
        self.limit, self.window_s, self.per_address, self.clock = limit, window_s, per_address, clock
        self._fails: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and now - q[0] >= self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def retry_after(self, user: str, address: str) -> float:
        now = self.clock()
        with self._lock:
            waits = []
            for key, limit in (((user.lower(), address), self.limit), (("", address), self.per_address)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    waits.append(self.window_s - (now - q[-limit]))
            return max(waits, default=0.0)

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in ((user.lower(), address), ("", address)):
                self._recent(key, now)
                self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._fails.pop((user.lower(), address), None)


def session_cookie(token: str, *, secure: bool, max_age: int | None = None) -> str:
    """The ``Set-Cookie`` value of a session (empty token + max_age 0: the cookie deleted)."""
    parts = [f"{COOKIE}={token}", "HttpOnly", "Path=/", "SameSite=Strict"]
    if max_age is not None:
        parts.append(f"Max-Age={max_age}")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)
