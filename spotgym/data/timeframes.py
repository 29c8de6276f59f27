"""Timeframe strings ("1m", "5m", "1h", "1d", ...) and their length in milliseconds."""

from __future__ import annotations

import re

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


def timeframe_to_ms(timeframe: str) -> int:
    """Length of one bar of ``timeframe`` in milliseconds; ValueError naming the bad value."""
    match = _PATTERN.match(str(timeframe).strip())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: expected <count><unit> with unit in s, m, h, d, w "
            "(e.g. '1m', '5m', '1h', '1d')"
        )
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def ms_to_timeframe(ms: int) -> str:
    """The canonical string for a bar length in ms (inverse of ``timeframe_to_ms``)."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNIT_MS[unit]
        if ms % size == 0 and ms >= size:
            return f"{ms // size}{unit}"
    raise ValueError(f"bar length {ms} ms is not a whole number of seconds")
