"""Exchange rules applied to every order: tick size, lot step, minimum quantity, minimum notional.

Defaults are Binance spot ETH/USDT (``PRICE_FILTER.tickSize`` 0.01, ``LOT_SIZE.stepSize`` and
``minQty`` 0.0001, ``NOTIONAL.minNotional`` 5 USDT). Each rule is switched off by setting it to
0 (or ``None``); ``EnvConfig(filters=None)`` switches all of them off.

How the env applies them (``spotgym.envs.nb.sim_fill_nb``):

- prices are rounded to the tick conservatively: buys up, sells down;
- quantities are floored to the lot step (never rounded up past the cash available);
- an order whose quantity is below ``min_qty`` or whose notional is below ``min_notional`` is
  rejected: no trade, no fee;
- a sell that would leave a remainder below ``min_qty`` or ``min_notional`` sells the whole
  position instead (the exchange would not let the dust be sold later), and a full exit sells the
  whole balance as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["ETHUSDT_FILTERS", "ExchangeFilters"]

# ccxt precision modes (ccxt.base.decimal_to_precision): DECIMAL_PLACES = 2, SIGNIFICANT_DIGITS = 3,
# TICK_SIZE = 4. Binance uses TICK_SIZE in ccxt >= 4.
_DECIMAL_PLACES = 2
_TICK_SIZE = 4


def _rule(name: str, value: Any) -> float:
    value = 0.0 if value is None else float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"ExchangeFilters.{name} must be a finite number >= 0 (0 = off), got {value!r}")
    return value


@dataclass(frozen=True)
class ExchangeFilters:
    """Binance-style spot filters for one symbol; a rule set to 0 (or ``None``) is off."""

    tick_size: float = 0.01
    step_size: float = 0.0001
    min_qty: float = 0.0001
    min_notional: float = 5.0
    symbol: str = "ETH/USDT"

    def __post_init__(self) -> None:
        for name in ("tick_size", "step_size", "min_qty", "min_notional"):
            object.__setattr__(self, name, _rule(name, getattr(self, name)))

    @classmethod
    def off(cls, symbol: str = "") -> ExchangeFilters:
        """Every rule switched off (same as ``EnvConfig(filters=None)``)."""
        return cls(tick_size=0.0, step_size=0.0, min_qty=0.0, min_notional=0.0, symbol=symbol)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ExchangeFilters:
        """From a plain mapping (a YAML/JSON config block); unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ExchangeFilters field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    @classmethod
    def from_ccxt_market(cls, market: Mapping[str, Any], precision_mode: int | None = None) -> ExchangeFilters:
        """From one entry of a ccxt ``exchange.markets`` (e.g. ``exchange.market("ETH/USDT")``).

        Binance's raw ``info["filters"]`` (PRICE_FILTER, LOT_SIZE, NOTIONAL / MIN_NOTIONAL) are
        used when present because they are exact; otherwise ccxt's unified ``precision`` and
        ``limits``. ``precision_mode`` is ``exchange.precisionMode``; without it, a precision
        that is a whole number >= 1 is read as a count of decimal places (ccxt < 4 style) and
        anything else as a tick size.
        """
        symbol = str(market.get("symbol") or "")
        tick = step = min_qty = min_notional = None
        info = market.get("info") or {}
        for flt in info.get("filters") or ():
            kind = flt.get("filterType")
            if kind == "PRICE_FILTER":
                tick = flt.get("tickSize")
            elif kind == "LOT_SIZE":
                step, min_qty = flt.get("stepSize"), flt.get("minQty")
            elif kind in ("NOTIONAL", "MIN_NOTIONAL") and min_notional is None:
                min_notional = flt.get("minNotional")
        precision = market.get("precision") or {}
        limits = market.get("limits") or {}
        if tick is None:
            tick = _precision_to_step(precision.get("price"), precision_mode)
        if step is None:
            step = _precision_to_step(precision.get("amount"), precision_mode)
        if min_qty is None:
            min_qty = (limits.get("amount") or {}).get("min")
        if min_notional is None:
            min_notional = (limits.get("cost") or {}).get("min")
        return cls(tick_size=_rule("tick_size", tick), step_size=_rule("step_size", step),
                   min_qty=_rule("min_qty", min_qty), min_notional=_rule("min_notional", min_notional),
                   symbol=symbol)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def as_array(self) -> np.ndarray:
        """``[tick_size, step_size, min_qty, min_notional]`` as float64 (the kernels' layout)."""
        return np.array([self.tick_size, self.step_size, self.min_qty, self.min_notional], dtype=np.float64)


def _precision_to_step(value: Any, mode: int | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    if mode == _DECIMAL_PLACES or (mode is None and value >= 1 and value.is_integer()):
        return 10.0 ** -int(value)
    if mode is None or mode == _TICK_SIZE:
        return value
    raise ValueError(f"precision mode {mode} (significant digits) cannot be turned into a tick/lot step")


ETHUSDT_FILTERS = ExchangeFilters()
