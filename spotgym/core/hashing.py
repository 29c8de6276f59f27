"""Stable hashes: one way to fingerprint a config (JSON) and one way to fingerprint arrays (bytes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["array_digest", "stable_hash"]


def stable_hash(value: Any, length: int = 16) -> str:
    """Short sha256 of ``value`` as sorted JSON (non-JSON values by ``str``): the same config, the same hash,
    whatever the key order or the process."""
    blob = json.dumps(value, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def array_digest(arrays: Iterable[np.ndarray], extra: Any = None, length: int | None = None) -> str:
    """sha256 over the raw bytes of ``arrays`` (C order) and, if given, ``extra`` as sorted JSON."""
    h = hashlib.sha256()
    for arr in arrays:
        h.update(np.ascontiguousarray(arr).tobytes())
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    digest = h.hexdigest()
    return digest if length is None else digest[:length]
