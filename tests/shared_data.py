"""Locating the shared sample data for tests and benchmarks (``$SPOTGYM_DATA`` or ``../shared/data``)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SPOTGYM_DATA"
REPO_ROOT = Path(__file__).resolve().parent.parent  # tests/ -> the repository


def shared_data_dir() -> Path:
    """The shared data folder: ``$SPOTGYM_DATA``, else ``<repo>/../shared/data``.

    Raises FileNotFoundError saying where it looked, so a test run without the data fails
    with a clear message instead of a cryptic missing-file error deep in a fixture.
    """
    env = os.environ.get(DATA_ENV)
    candidates = [Path(env).expanduser()] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"shared market data not found (looked in: {looked}); set {DATA_ENV} to the folder holding "
        "BINANCE_ETHUSDT_1h.csv.gz etc., or place the repo beside ../shared"
    )


def shared_file(name: str) -> Path:
    """A file of the shared data folder by name, e.g. ``"BINANCE_ETHUSDT_1h.csv.gz"``."""
    path = shared_data_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; the shared data folder holds: "
                                f"{sorted(p.name for p in path.parent.iterdir())}")
    return path
