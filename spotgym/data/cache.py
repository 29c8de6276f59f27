"""Where downloaded bars live: one parquet file per exchange / symbol / timeframe."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "SPOTGYM_CACHE"


def default_data_dir() -> Path:
    """The cache root: ``$SPOTGYM_CACHE`` or ``~/.cache/spotgym``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spotgym"


def cache_path(exchange: str, symbol: str, timeframe: str, data_dir: str | os.PathLike | None = None) -> Path:
    """``<data_dir>/<exchange>/<BASE>_<QUOTE>-<timeframe>.parquet`` (freqtrade-like naming)."""
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    safe_symbol = symbol.upper().replace("/", "_").replace(":", "_")
    return root / exchange.lower() / f"{safe_symbol}-{timeframe}.parquet"


def parse_cache_spec(spec: str) -> tuple[str, str, str]:
    """Split ``"binance:ETH/USDT:1h"`` into (exchange, symbol, timeframe)."""
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"bad cache spec {spec!r}: expected 'exchange:SYMBOL:timeframe', e.g. 'binance:ETH/USDT:1h'")
    return parts[0], parts[1], parts[2]
