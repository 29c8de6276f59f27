"""Shared fixtures: the real Binance sample data from ``$SPOTGYM_DATA`` or ``../shared/data``."""

from __future__ import annotations

import pytest

from spotgym.datasets import shared_file


@pytest.fixture(scope="session")
def eth_1h_path():
    return shared_file("BINANCE_ETHUSDT_1h.csv.gz")


@pytest.fixture(scope="session")
def eth_5m_path():
    return shared_file("BINANCE_ETHUSDT_5m.csv.gz")


@pytest.fixture(scope="session")
def eth_1m_path():
    return shared_file("BINANCE_ETHUSDT_1m.csv.gz")
