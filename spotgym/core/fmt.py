"""How numbers are shown to people (console tables, reports): one place, so they read the same everywhere."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["num", "pct"]

MISSING = "—"


def _defined(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def pct(value: Any, digits: int = 1, signed: bool = False, missing: str = MISSING) -> str:
    """A fraction as a percentage: ``pct(0.123)`` -> ``12.3%``, ``pct(0.05, 2, signed=True)`` -> ``+5.00%``."""
    if not _defined(value):
        return missing
    return f"{value * 100:{'+' if signed else ''}.{digits}f}%"


def num(value: Any, digits: int = 2, missing: str = MISSING) -> str:
    """A plain number with ``digits`` decimals (``missing`` when undefined)."""
    if not _defined(value):
        return missing
    return f"{value:.{digits}f}"
