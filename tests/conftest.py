"""Shared fixtures: the real Binance sample data from ``$SPOTGYM_DATA`` or ``../shared/data``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from shared_data import shared_file

from spotgym.core import FeatureFrame


@pytest.fixture(scope="session")
def eth_1h_path():
    return shared_file("BINANCE_ETHUSDT_1h.csv.gz")


@pytest.fixture(scope="session")
def eth_5m_path():
    return shared_file("BINANCE_ETHUSDT_5m.csv.gz")


@pytest.fixture(scope="session")
def eth_1m_path():
    return shared_file("BINANCE_ETHUSDT_1m.csv.gz")


def _make_frame(open_, close, volume=None, n_features: int = 1, valid=None, synthetic=None,
                symbol: str | None = "ETH/USDT") -> FeatureFrame:
    """A small frame with the given prices; feature j of row t is 100 * t + j (easy to read)."""
    open_ = np.asarray(open_, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    n = len(open_)
    volume = np.full(n, 1e6) if volume is None else np.asarray(volume, dtype=np.float64)
    values = (100.0 * np.arange(n)[:, None] + np.arange(n_features)[None, :]).astype(np.float32)
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return FeatureFrame(values=values, columns=tuple(f"f{j}" for j in range(n_features)), index=index,
                        open=open_, high=np.maximum(open_, close), low=np.minimum(open_, close), close=close,
                        volume=volume, valid=valid, synthetic=synthetic, symbol=symbol)


@pytest.fixture(scope="session")
def make_frame():
    """``make_frame(open_, close, volume=None, n_features=1, valid=None, synthetic=None, symbol="ETH/USDT")``."""
    return _make_frame
