"""Security and limits as Binance does them: the API-key header, HMAC-SHA256 signatures over the raw query or
body, the ``timestamp`` / ``recvWindow`` window against the server's wall clock, and request weight counted
per minute (``X-MBX-USED-WEIGHT-1M``; over the limit 429 with ``Retry-After``, still hammering 418)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from spotgym.sim.errors import BinanceError

__all__ = ["WEIGHT_LIMIT", "RateLimiter", "check_signed", "request_weight", "sign"]

WEIGHT_LIMIT = 6000  # per minute, as Binance's REQUEST_WEIGHT
MAX_RECV_WINDOW = 60_000
DEFAULT_RECV_WINDOW = 5_000
BAN_SECONDS = 120


def sign(secret: str, payload: str) -> str:
    """Binance's HMAC-SHA256 signature: hex digest of ``payload`` keyed by ``secret``."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def check_signed(raw: str, api_key: str | None, secrets: Callable[[str], str | None], server_ms: int
                 ) -> dict[str, str]:
    """Verify a signed request (``raw``: the query string, or the form body of a POST, exactly as received);
    returns its parameters. Binance's errors: -2014 / -2015 for a missing or unknown key, -1022 for a bad
    signature, -1021 for a timestamp outside ``recvWindow`` of the server's clock."""
    if not api_key:
        raise BinanceError(-2014, "API-key format invalid.", 401)
    secret = secrets(api_key)
    if secret is None:
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    body, sep, signature = raw.rpartition("&signature=")
    if not sep:
        if raw.startswith("signature="):
            body, signature = "", raw[len("signature="):]
        else:
            raise BinanceError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
    if not hmac.compare_digest(sign(secret, body), signature.split("&", 1)[0]):
        raise BinanceError(-1022, "Signature for this request is not valid.")
    params = dict(parse_qsl(body, keep_blank_values=True))
    try:
        timestamp = int(params["timestamp"])
    except KeyError:
        raise BinanceError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.") from None
    except ValueError:
        raise BinanceError(-1100, "Illegal characters found in parameter 'timestamp'; legal range is '^[0-9]{1,20}$'.") from None
    try:
        window = int(params.get("recvWindow", DEFAULT_RECV_WINDOW))
    except ValueError:
        raise BinanceError(-1100, "Illegal characters found in parameter 'recvWindow'.") from None
    if window > MAX_RECV_WINDOW:
        raise BinanceError(-1131, "recvWindow must be less than 60000")
    if timestamp >= server_ms + 1000 or server_ms - timestamp > window:
        raise BinanceError(-1021, "Timestamp for this request is outside of the recvWindow.")
    return params


# request weights of the endpoints (Binance's, 2024), by (method, path); depth depends on its limit
_WEIGHTS: dict[tuple[str, str], int] = {
    ("GET", "/api/v3/exchangeInfo"): 20, ("GET", "/api/v3/klines"): 2, ("GET", "/api/v3/time"): 1,
    ("GET", "/api/v3/ping"): 1, ("GET", "/api/v3/account"): 20, ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4, ("DELETE", "/api/v3/order"): 1, ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/myTrades"): 20, ("GET", "/api/v3/avgPrice"): 2,
}


def request_weight(method: str, path: str, params: Mapping[str, str]) -> int:
    if path == "/api/v3/depth":
        limit = int(params.get("limit", 100) or 100)
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    if path in ("/api/v3/ticker/24hr",):
        return 2 if params.get("symbol") else 80
    if path in ("/api/v3/ticker/price", "/api/v3/ticker/bookTicker"):
        return 2 if params.get("symbol") else 4
    if path == "/api/v3/openOrders" and method == "GET":
        return 6 if params.get("symbol") else 80
    return _WEIGHTS.get((method, path), 1)


@dataclass
class RateLimiter:
    """Request weight per client (IP) per wall-clock minute; a client that keeps sending after a 429 is banned
    (418) for ``ban_seconds``."""

    limit: int = WEIGHT_LIMIT
    ban_seconds: int = BAN_SECONDS
    clock: Callable[[], float] = time.time
    _used: dict[str, tuple[int, int]] = field(default_factory=dict)  # client -> (minute, weight)
    _refused: dict[str, int] = field(default_factory=dict)  # client -> 429s answered this minute
    _banned: dict[str, float] = field(default_factory=dict)  # client -> ban end (s)

    def charge(self, client: str, weight: int) -> tuple[int, int | None, int | None]:
        """Count ``weight`` for ``client``; returns (used weight, HTTP status 429 / 418 or None, Retry-After)."""
        now = self.clock()
        minute = int(now // 60)
        ban = self._banned.get(client)
        if ban is not None and now < ban:
            return self._used.get(client, (minute, 0))[1], 418, int(ban - now) + 1
        used_minute, used = self._used.get(client, (minute, 0))
        if used_minute != minute:
            used = 0
            self._refused.pop(client, None)
        used += weight
        self._used[client] = (minute, used)
        if used <= self.limit:
            return used, None, None
        retry = int((minute + 1) * 60 - now) + 1
        self._refused[client] = self._refused.get(client, 0) + 1
        if self._refused[client] > 3:  # kept hammering after being told
            self._banned[client] = now + self.ban_seconds
            return used, 418, self.ban_seconds
        return used, 429, retry
