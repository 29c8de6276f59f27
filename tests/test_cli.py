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


def test_data_download_through_the_loopback_server_then_resume(tmp_path, eth_1h_path, capsys):
    from spotgym.data import cache_path, load_bars
    from spotgym.sim import create_app, serve_in_thread

    source = pd.read_csv(eth_1h_path).iloc[:1500]
    args = ["data", "download", "--symbol", "ETH/USDT", "--timeframe", "1h", "--since", "2017-08-17",
            "--data-dir", str(tmp_path), "--quiet", "--sim-url"]
    for rows, expected in ((1200, "1,200 new bars, 1,200 in total"), (1500, "300 new bars, 1,500 in total")):
        served = source.iloc[:rows]
        now = int(served["timestamp"].iloc[-1]) + 3_600_000 + 60_000  # a minute into the next (open) bar
        with serve_in_thread(create_app({"ETH/USDT@1h": served}, now_ms=now)) as url:
            assert main([*args, url]) == 0
        assert expected in capsys.readouterr().out
    cached = load_bars(cache_path("binance", "ETH/USDT", "1h", tmp_path))
    assert len(cached) == 1500
    assert (cached["close"].to_numpy() == source["close"].to_numpy()).all()


def test_user_errors_are_one_line_not_a_traceback(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: x\nagent: {algo: ppo}\n")
    assert main(["train", str(exp), "--set", "agent.timestep=5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: agent.timestep: unknown key; known: ['algo', 'device', 'eval_every', 'n_envs', 'params', "
        "'policy', 'timesteps']")
    assert main(["backtest", str(tmp_path)]) == 2
    assert "not a spotgym run directory" in capsys.readouterr().err
