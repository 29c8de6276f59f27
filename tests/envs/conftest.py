"""Env fixtures: the real ETH/USDT 1h feature frame and a slice of it."""

from __future__ import annotations

import pytest

from spotgym.core import FeatureFrame
from spotgym.data import load_bars
from spotgym.features import build_features


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
