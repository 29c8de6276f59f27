"""One factory for every ccxt client spotgym uses: live, testnet, demo and the local replay server.

Every ccxt client spotgym makes comes from here, so the same client code path reaches real
Binance, its testnet / demo trading, or ``spotgym.sim`` (facts: ``shared/ref/ccxt_binance_local.md``).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

import ccxt

__all__ = ["MODES", "SPOT_ONLY_OPTIONS", "make_exchange", "rehost_urls"]

log = logging.getLogger(__name__)

Mode = Literal["live", "testnet", "demo", "sim"]
MODES: tuple[str, ...] = ("live", "testnet", "demo", "sim")

# With these, Binance's load_markets() makes exactly one call (GET /api/v3/exchangeInfo) instead of
# also loading futures markets and, with keys, margin pairs and currencies through sapi.
SPOT_ONLY_OPTIONS: dict[str, Any] = {
    "fetchMarkets": {"types": ["spot"]},
    "fetchMargins": False,
    "fetchCurrencies": False,
    "warnOnFetchOpenOrdersWithoutSymbol": False,
    "defaultType": "spot",
}

_SCHEME_HOST = re.compile(r"^[a-z]+://[^/]+")


def _rehost(url: str, base: str) -> str:
    """``https://api.binance.com/api/v3`` -> ``<base>/api/v3``: swap scheme and host, keep the path."""
    return _SCHEME_HOST.sub(base, url)


def rehost_urls(urls: dict[str, Any], base: str) -> None:
    """Point every URL of a (possibly nested) ccxt ``urls['api']`` table at ``base``, in place."""
    for key, value in urls.items():
        if isinstance(value, str):
            urls[key] = _rehost(value, base)
        elif isinstance(value, dict):
            rehost_urls(value, base)


def make_exchange(
    exchange_id: str = "binance",
    *,
    mode: Mode = "live",
    sim_url: str | None = None,
    api_key: str | None = None,
    secret: str | None = None,
    pro: bool = False,
    sync: bool = True,
) -> ccxt.Exchange:
    """A configured ccxt client for ``exchange_id`` in one of ``MODES``.

    - ``live``: the real exchange; ``testnet``: ccxt sandbox mode; ``demo``: Binance demo trading.
    - ``sim``: the spotgym replay server at ``sim_url`` (e.g. ``http://127.0.0.1:8765``): every REST
      URL is re-hosted there and, for ``pro``, every websocket URL onto ``ws://<host>/stream`` (ccxt.pro
      tells spot from futures streams by ``/stream`` in the URL). The rate limiter is off in sim only.

    ``sync=True`` returns a ``ccxt`` (requests) client, ``sync=False`` a ``ccxt.async_support`` one and
    ``pro=True`` (needs ``sync=False``) a ``ccxt.pro`` websocket client. Keys are handed to ccxt and
    never logged; ccxt's repr does not show them.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: expected one of {MODES}")
    if pro and sync:
        raise ValueError("pro=True gives an asyncio websocket client: pass sync=False as well")
    if (mode == "sim") != (sim_url is not None):
        raise ValueError(f"sim_url is required for mode='sim' and only allowed there (mode={mode!r}, sim_url={sim_url!r})")
    if (api_key is None) != (secret is None):
        raise ValueError("api_key and secret go together: pass both or neither")

    if pro:
        import ccxt.pro as module
    elif sync:
        module = ccxt
    else:
        import ccxt.async_support as module
    if exchange_id not in module.exchanges:
        raise ValueError(f"unknown exchange {exchange_id!r}: not one of ccxt's {len(module.exchanges)} exchanges")
    is_binance = exchange_id == "binance"
    if mode == "sim" and not is_binance:
        raise ValueError(f"mode='sim' replays a Binance-shaped API; exchange_id must be 'binance', not {exchange_id!r}")

    config: dict[str, Any] = {
        "enableRateLimit": mode != "sim",
        "options": dict(SPOT_ONLY_OPTIONS) if is_binance else {"defaultType": "spot"},
    }
    if api_key is not None:
        config.update(apiKey=api_key, secret=secret)
    exchange: ccxt.Exchange = getattr(module, exchange_id)(config)

    if mode == "testnet":
        exchange.set_sandbox_mode(True)
    elif mode == "demo":
        if not hasattr(exchange, "enable_demo_trading"):
            raise ValueError(f"{exchange_id} has no demo trading mode in ccxt; use mode='testnet'")
        exchange.enable_demo_trading(True)
    elif mode == "sim":
        base = sim_url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"sim_url must start with http:// or https://, got {sim_url!r}")
        api = exchange.urls["api"]
        ws = api.pop("ws", None)
        rehost_urls(api, base)
        if ws is not None:
            rehost_urls(ws, base.replace("http", "ws", 1) + "/stream")
            api["ws"] = ws
        # ccxt applies Binance's spot error-code table only to api.binance.com hosts; fold it in so
        # the re-hosted client raises the same exception classes as against the real exchange.
        exchange.exceptions["exact"] = {**exchange.exceptions["exact"], **exchange.exceptions["spot"]["exact"]}
    log.debug("ccxt %s client, mode=%s, rest=%s, keys=%s", exchange_id, mode,
              exchange.urls["api"].get("public"), "yes" if api_key else "no")
    return exchange
