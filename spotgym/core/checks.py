"""Validation helpers for the frozen config classes: every error names ``Owner.field`` and the bad value."""

from __future__ import annotations

import math
from typing import Any, NoReturn

__all__ = ["fail", "integer", "names", "number"]


def fail(owner: str, field: str, message: str, value: Any) -> NoReturn:
    raise ValueError(f"{owner}.{field} {message}, got {value!r}")


def number(owner: str, field: str, value: Any, low: float | None = None, high: float | None = None, *,
           low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite float within the bounds (``*_open``: the bound itself is excluded)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool):
        v = math.nan
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
    bad = not math.isfinite(v)
    if not bad and low is not None:
        bad = v <= low if low_open else v < low
    if not bad and high is not None:
        bad = v >= high if high_open else v > high
    if bad:
        span = (f"{'(' if low_open else '['}{'-inf' if low is None else low}, "
                f"{'inf' if high is None else high}{')' if high_open else ']'}")
        fail(owner, field, f"must be a finite number in {span}" + (" or None" if allow_none else ""), value)
    return v


def integer(owner: str, field: str, value: Any, low: int, *, allow_none: bool = False) -> int | None:
    """``value`` as an int >= ``low`` (a whole float such as YAML's ``32.0`` is accepted)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or int(value) != value or value < low:
        fail(owner, field, f"must be an integer >= {low}" + (" or None" if allow_none else ""), value)
    return int(value)


def names(owner: str, field: str, value: Any, allowed: tuple[str, ...] | None = None, *,
          allow_none: bool = False) -> tuple[str, ...] | None:
    """A non-empty list of distinct non-empty names (optionally from ``allowed``) as a tuple."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) or not isinstance(value, list | tuple) or not value or \
            not all(isinstance(v, str) and v for v in value):
        fail(owner, field, "must be a non-empty list of names" + (" or None" if allow_none else ""), value)
    out = tuple(value)
    if len(set(out)) != len(out):
        fail(owner, field, "must not repeat a name", value)
    if allowed is not None:
        bad = [v for v in out if v not in allowed]
        if bad:
            fail(owner, field, f"has unknown name(s) {bad}; known: {list(allowed)}", value)
    return out
