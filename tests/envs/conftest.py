"""Env fixtures: the real ETH/USDT 1h feature frame and tiny hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotgym.data import load_bars
from spotgym.features import FeatureFrame, build_features


@pytest.fixture(scope="session")
def eth_1h_bars(eth_1h_path):
    return load_bars(eth_1h_path)


@pytest.fixture(scope="session")
def eth_1h_frame(eth_1h_bars) -> FeatureFrame:
    """The default features over the full real ETH/USDT 1h history (64,524 rows)."""
    return build_features(eth_1h_bars)


@pytest.fixture(scope="session")
def eth_small_frame(eth_1h_frame) -> FeatureFrame:
    """A 3,000-row slice of the real frame starting after the feature warm-up."""
    start = eth_1h_frame.first_valid_row
    return eth_1h_frame.slice(start, start + 3000)


def _make_frame(open_, close, volume=None, n_features: int = 1, valid=None) -> FeatureFrame:
    """A small frame with the given prices; feature j of row t is 100 * t + j (easy to read)."""
    open_ = np.asarray(open_, dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    n = len(open_)
    volume = np.full(n, 1e6) if volume is None else np.asarray(volume, dtype=np.float64)
    values = (100.0 * np.arange(n)[:, None] + np.arange(n_features)[None, :]).astype(np.float32)
    index = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    return FeatureFrame(values=values, columns=tuple(f"f{j}" for j in range(n_features)), index=index,
                        open=open_, high=np.maximum(open_, close), low=np.minimum(open_, close), close=close,
                        volume=volume, valid=valid)


@pytest.fixture(scope="session")
def make_frame():
    """``make_frame(open_, close, volume=None, n_features=1, valid=None) -> FeatureFrame``."""
    return _make_frame
