"""The ``spotgym`` command as a user runs it (in-process through ``main``)."""

from __future__ import annotations

import gzip

import pandas as pd

from spotgym.cli import main


def test_data_check_prints_the_report(eth_1h_path, capsys):
    assert main(["data", "check", str(eth_1h_path)]) == 0
    out = capsys.readouterr().out
    assert "rows:       64,524" in out and "timeframe:  1h" in out
    assert "gaps:       28 (missing bars: 128, longest: 2018-02-08T01:00Z - 2018-02-09T09:00Z (33))" in out
    assert "zero-volume bars: 6" in out


def test_data_check_fails_naming_file_row_problem(tmp_path, eth_1h_path, capsys):
    raw = pd.read_csv(eth_1h_path).iloc[:50].copy()
    raw.loc[17, "high"] = raw.loc[17, "low"] - 1.0
    bad = tmp_path / "BAD_ETHUSDT_1h.csv.gz"
    with gzip.open(bad, "wt") as fh:
        raw.to_csv(fh, index=False)
    assert main(["data", "check", str(eth_1h_path), str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "row 17" in err and "high < max(open, close)" in err


def test_data_resample_writes_a_loadable_file(tmp_path, eth_1m_path, capsys):
    out = tmp_path / "eth_1h.csv"
    assert main(["data", "resample", str(eth_1m_path), "--timeframe", "1h", "--out", str(out)]) == 0
    written = pd.read_csv(out)
    assert len(written) == 719 and list(written.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert main(["data", "check", str(out), "--timeframe", "1h"]) == 0
