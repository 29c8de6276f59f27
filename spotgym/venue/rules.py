"""``TradingRules``: an exchange's rules for one spot symbol, the one class the env, the replay exchange
and the live broker all use.

Binance's spot filters: ``PRICE_FILTER`` (tick size, min / max price), ``LOT_SIZE`` (lot step, min /
max quantity) and ``NOTIONAL`` (min / max order value in the quote currency). A rule set to 0 is off.

How the env applies them (``spotgym.envs.nb.sim_fill_nb``; the kernel reads the first four):

- prices are rounded to the tick conservatively: buys up, sells down;
- quantities are floored to the lot step (never rounded up past the cash available);
- an order whose quantity is below ``min_qty`` or whose notional is below ``min_notional`` is
  rejected: no trade, no fee;
- a sell that would leave a remainder below ``min_qty`` or ``min_notional`` sells the whole
  position instead (the exchange would not let the dust be sold later), and a full exit sells the
  whole balance as it is.

The maxima (``max_price``, ``max_qty``, ``max_notional``) are served by the replay exchange and
checked by the exchange; the env's accounts are far below them.

Where the rules of a symbol come from (``rules_for``): the exchange's own markets when a ccxt client
is given (live, testnet, or the replay exchange's ``exchangeInfo``), else the shipped snapshot of
Binance's spot filters (``binance_spot.json``, common symbols). A symbol in neither is an error:
give the rules explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from spotgym.core import checks

__all__ = ["KERNEL_FIELDS", "TradingRules", "UnknownSymbol", "known_symbols", "normalize_symbol", "rules_for"]

KERNEL_FIELDS = ("tick_size", "step_size", "min_qty", "min_notional")  # what the env's fill kernel reads
SNAPSHOT = "binance_spot.json"

# ccxt precision modes (ccxt.base.decimal_to_precision): DECIMAL_PLACES = 2, SIGNIFICANT_DIGITS = 3,
# TICK_SIZE = 4. Binance uses TICK_SIZE in ccxt >= 4.
_DECIMAL_PLACES = 2
_TICK_SIZE = 4


class UnknownSymbol(ValueError):
    """No trading rules are known for a symbol (not in the exchange's markets nor in the snapshot)."""


@dataclass(frozen=True)
class TradingRules:
    """One symbol's spot trading rules; every rule is a number >= 0, and 0 switches it off."""

    symbol: str = ""
    tick_size: float = 0.0
    step_size: float = 0.0
    min_qty: float = 0.0
    min_notional: float = 0.0
    min_price: float = 0.0
    max_price: float = 0.0
    max_qty: float = 0.0
    max_notional: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str):
            checks.fail("TradingRules", "symbol", "must be a string such as 'ETH/USDT'", self.symbol)
        for f in fields(self):
            if f.name != "symbol":
                value = 0.0 if getattr(self, f.name) is None else getattr(self, f.name)
                object.__setattr__(self, f.name, checks.number("TradingRules", f.name, value, 0.0))
        for low, high in (("min_price", "max_price"), ("min_qty", "max_qty"), ("min_notional", "max_notional")):
            lo, hi = getattr(self, low), getattr(self, high)
            if hi and lo > hi:
                checks.fail("TradingRules", low, f"exceeds {high}={hi:g}", lo)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def off(cls, symbol: str = "") -> TradingRules:
        """Every rule switched off."""
        return cls(symbol=symbol)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> TradingRules:
        """From a plain mapping (a YAML/JSON config block); unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TradingRules field(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: (str(v) if k == "symbol" else v) for k, v in data.items()})

    @classmethod
    def from_binance_filters(cls, filters: list[Mapping[str, Any]], symbol: str = "") -> TradingRules:
        """From the ``filters`` list of one symbol in Binance's ``exchangeInfo``."""
        values: dict[str, Any] = {}
        for flt in filters or ():
            kind = flt.get("filterType")
            if kind == "PRICE_FILTER":
                values.update(tick_size=flt.get("tickSize"), min_price=flt.get("minPrice"),
                              max_price=flt.get("maxPrice"))
            elif kind == "LOT_SIZE":
                values.update(step_size=flt.get("stepSize"), min_qty=flt.get("minQty"), max_qty=flt.get("maxQty"))
            elif kind == "NOTIONAL" or (kind == "MIN_NOTIONAL" and "min_notional" not in values):
                values.update(min_notional=flt.get("minNotional"), max_notional=flt.get("maxNotional"))
        return cls(symbol=symbol, **{k: _decimal(k, v) for k, v in values.items()})

    @classmethod
    def from_ccxt_market(cls, market: Mapping[str, Any], precision_mode: int | None = None) -> TradingRules:
        """From one entry of a ccxt ``exchange.markets`` (e.g. ``exchange.market("ETH/USDT")``).

        Binance's raw ``info["filters"]`` are used when present because they are exact; otherwise
        ccxt's unified ``precision`` and ``limits``. ``precision_mode`` is ``exchange.precisionMode``;
        without it, a precision that is a whole number >= 1 is read as a count of decimal places
        (ccxt < 4 style) and anything else as a tick size.
        """
        symbol = str(market.get("symbol") or "")
        info = market.get("info") or {}
        if info.get("filters"):
            return cls.from_binance_filters(info["filters"], symbol)
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}

        def limit(kind: str, end: str) -> Any:
            return (limits.get(kind) or {}).get(end)

        return cls(symbol=symbol,
                   tick_size=_precision_to_step(precision.get("price"), precision_mode),
                   step_size=_precision_to_step(precision.get("amount"), precision_mode),
                   min_qty=limit("amount", "min"), max_qty=limit("amount", "max"),
                   min_price=limit("price", "min"), max_price=limit("price", "max"),
                   min_notional=limit("cost", "min"), max_notional=limit("cost", "max"))

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_array(self) -> np.ndarray:
        """``[tick_size, step_size, min_qty, min_notional]`` as float64 (the kernels' layout)."""
        return np.array([getattr(self, name) for name in KERNEL_FIELDS], dtype=np.float64)

    def binance_filters(self) -> list[dict[str, Any]]:
        """This symbol's ``filters`` as Binance's ``exchangeInfo`` serves them (decimal strings)."""
        d = {f.name: _text(getattr(self, f.name)) for f in fields(self) if f.name != "symbol"}
        return [
            {"filterType": "PRICE_FILTER", "minPrice": d["min_price"], "maxPrice": d["max_price"],
             "tickSize": d["tick_size"]},
            {"filterType": "LOT_SIZE", "minQty": d["min_qty"], "maxQty": d["max_qty"], "stepSize": d["step_size"]},
            {"filterType": "NOTIONAL", "minNotional": d["min_notional"], "applyMinToMarket": True,
             "maxNotional": d["max_notional"], "applyMaxToMarket": False, "avgPriceMins": 5},
        ]


def _decimal(name: str, value: Any) -> float:
    if value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        checks.fail("TradingRules", name, "must be a decimal number", value)


def _text(value: float) -> str:
    """A rule as Binance's decimal string, the shortest form that round-trips (``0.01``, ``9000``)."""
    return np.format_float_positional(value, trim="-")


def _precision_to_step(value: Any, mode: int | None) -> float:
    if value is None:
        return 0.0
    value = float(value)
    if mode == _DECIMAL_PLACES or (mode is None and value >= 1 and value.is_integer()):
        return 10.0 ** -int(value)
    if mode is None or mode == _TICK_SIZE:
        return value
    raise ValueError(f"precision mode {mode} (significant digits) cannot be turned into a tick/lot step")


# ---------------------------------------------------------------------- where a symbol's rules come from
@cache
def _snapshot() -> dict[str, Any]:
    return json.loads(resources.files("spotgym.venue").joinpath(SNAPSHOT).read_text(encoding="utf-8"))


def known_symbols(exchange: str = "binance") -> tuple[str, ...]:
    """Symbols of the shipped snapshot (``exchange='binance'`` only)."""
    return tuple(sorted(_snapshot()["symbols"])) if exchange.lower() == "binance" else ()


def rules_for(symbol: str, exchange: str = "binance", *, client: Any = None) -> TradingRules:
    """The trading rules of ``symbol``: from ``client``'s markets when a ccxt client is given (the exchange
    itself, its testnet, or the replay exchange), else from the shipped Binance spot snapshot.

    Raises ``UnknownSymbol`` naming the symbol and what is known otherwise.
    """
    symbol = normalize_symbol(symbol)
    if client is not None:
        markets = client.markets or client.load_markets()
        if symbol not in markets:
            raise UnknownSymbol(f"{getattr(client, 'id', exchange)} has no market {symbol!r}")
        return TradingRules.from_ccxt_market(markets[symbol], getattr(client, "precisionMode", None))
    snap = _snapshot()
    entry = snap["symbols"].get(symbol) if exchange.lower() == snap["exchange"] else None
    if entry is None:
        known = ", ".join(known_symbols(exchange)) or "none"
        raise UnknownSymbol(f"no trading rules known for {exchange} {symbol!r} offline (the shipped snapshot holds: "
                            f"{known}); give them explicitly, e.g. env.filters: {{tick_size: 0.01, step_size: 0.001, "
                            f"min_qty: 0.001, min_notional: 5}}, or filters: null for none")
    return TradingRules(symbol=symbol, **{k: float(v) for k, v in entry.items()})


def normalize_symbol(symbol: str) -> str:
    """``eth/usdt`` -> ``ETH/USDT``; a symbol without ``/`` is an error naming it."""
    if not isinstance(symbol, str) or symbol.count("/") != 1 or not all(symbol.split("/")):
        raise UnknownSymbol(f"symbol {symbol!r} is not of the form BASE/QUOTE (e.g. ETH/USDT)")
    return symbol.upper()
