"""Locating the shared data: $SPOTGYM_DATA, else ../shared/data, else a clear error."""

from __future__ import annotations

import pytest
import shared_data as datasets


def test_env_var_wins(tmp_path, monkeypatch):
    (tmp_path / "BINANCE_X_1h.csv").write_text("timestamp,open,high,low,close,volume\n")
    monkeypatch.setenv("SPOTGYM_DATA", str(tmp_path))
    assert datasets.shared_data_dir() == tmp_path
    assert datasets.shared_file("BINANCE_X_1h.csv") == tmp_path / "BINANCE_X_1h.csv"
    with pytest.raises(FileNotFoundError, match=r"holds: \['BINANCE_X_1h.csv'\]"):
        datasets.shared_file("BINANCE_Y_1h.csv")


def test_missing_data_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTGYM_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setattr(datasets, "REPO_ROOT", tmp_path / "repo")
    with pytest.raises(FileNotFoundError, match="shared market data not found .*set SPOTGYM_DATA"):
        datasets.shared_data_dir()


def test_default_is_shared_data_beside_the_repo(monkeypatch):
    monkeypatch.delenv("SPOTGYM_DATA", raising=False)
    assert datasets.shared_data_dir() == datasets.REPO_ROOT.parent / "shared" / "data"
