"""Scripted failures: the replay exchange answers with an error instead of serving, as Binance does under load."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from fastapi.responses import JSONResponse

__all__ = ["Faults"]

# Binance's own error bodies for the statuses a fault can take (ccxt maps these codes to
# OperationFailed / RateLimitExceeded / DDoSProtection / RequestTimeout, as it would live).
_FAULT_BODIES: dict[int, tuple[int, str]] = {
    418: (-1003, "Way too much request weight used; IP banned until further notice."),
    429: (-1003, "Too much request weight used; current limit is 6000 request weight per 1 MINUTE."),
    503: (-1008, "Server is currently overloaded with other requests. Please try again in a few minutes."),
    504: (-1007, "Timeout waiting for response from backend server. Send status unknown; execution status unknown."),
}
_DEFAULT_FAULT_BODY = (-1001, "Internal error; unable to process your request. Please try again.")


class Faults:
    """Scripted HTTP failures for tests: the server answers with an error instead of serving.

    ``path`` picks which requests a rule counts and hits (default klines; None for every path).
    Thread-safe; ``injected`` counts the failures served so a test can assert they happened.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: Counter[str | None] = Counter()
        self._next: list[list[Any]] = []  # [path, remaining, status]
        self._numbered: dict[tuple[str | None, int], int] = {}
        self.injected = 0

    def fail_next(self, count: int = 1, *, status: int = 503, path: str | None = "/api/v3/klines") -> None:
        """Fail the next ``count`` requests to ``path`` with HTTP ``status``."""
        with self._lock:
            self._next.append([path, count, status])

    def fail_request(self, *numbers: int, status: int = 500, path: str | None = "/api/v3/klines") -> None:
        """Fail the requests to ``path`` whose 1-based arrival number is in ``numbers``."""
        with self._lock:
            for number in numbers:
                self._numbered[(path, number)] = status

    def check(self, path: str) -> int | None:
        """Count a request to ``path``; the status to fail it with, or None to serve it."""
        with self._lock:
            self._seen[path] += 1
            self._seen[None] += 1
            status = None
            for key in ((path, self._seen[path]), (None, self._seen[None])):
                if key in self._numbered:
                    status = self._numbered.pop(key)
                    break
            else:
                for rule in self._next:
                    if rule[0] in (None, path) and rule[1] > 0:
                        rule[1] -= 1
                        status = rule[2]
                        break
            if status is not None:
                self.injected += 1
            return status

    @staticmethod
    def response(status: int) -> JSONResponse:
        code, msg = _FAULT_BODIES.get(status, _DEFAULT_FAULT_BODY)
        return JSONResponse({"code": code, "msg": msg}, status_code=status)
