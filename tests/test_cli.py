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
    assert "suspicious bars: 0" in out


def test_data_check_fails_naming_file_row_problem(tmp_path, eth_1h_path, capsys):
    raw = pd.read_csv(eth_1h_path).iloc[:50].copy()
    raw.loc[17, "high"] = raw.loc[17, "low"] - 1.0
    bad = tmp_path / "BAD_ETHUSDT_1h.csv.gz"
    with gzip.open(bad, "wt") as fh:
        raw.to_csv(fh, index=False)
    assert main(["data", "check", str(eth_1h_path), str(bad)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and "row 17" in err and "high < max(open, close)" in err


def test_data_check_reports_each_bad_file_in_one_line_and_goes_on(tmp_path, eth_1h_path, capsys):
    data = eth_1h_path.read_bytes()
    truncated = tmp_path / "CUT_ETHUSDT_1h.csv.gz"
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / "EMPTY_ETHUSDT_1h.csv"
    empty.write_bytes(b"")
    header = tmp_path / "HEADER_ETHUSDT_1h.csv"
    header.write_text("timestamp,open,high,low,close,volume\n")
    folder = tmp_path / "FOLDER_ETHUSDT_1h.csv"
    folder.mkdir()
    missing = tmp_path / "MISSING_ETHUSDT_1h.csv"
    good = tmp_path / "GOOD_ETHUSDT_1h.csv"
    pd.read_csv(eth_1h_path).iloc[:500].to_csv(good, index=False)
    args = [truncated, empty, good, header, folder, missing]
    assert main(["data", "check", *map(str, args)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"error: {truncated}: truncated gzip file: the compressed data ends before the end-of-stream marker",
        f"error: {empty}: empty file (0 bytes)",
        f"error: {header}: no rows (header only, no bars)",
        f"error: {folder}: is a directory, not a bar file",
        f"error: {missing}: no such file",
    ]
    assert "Traceback" not in out + err
    assert f"source:     {good}" in out and "rows:       500" in out and out.count("source:") == 1
    assert main(["data", "check", str(good)]) == 0


def test_data_check_fails_on_a_price_spike(tmp_path, eth_1h_path, capsys):
    raw = pd.read_csv(eth_1h_path)
    spiked = raw.loc[30_000, "close"] * 1000
    raw.loc[30_000, ["close", "high"]] = spiked
    path = tmp_path / "SPIKE_ETHUSDT_1h.csv"
    raw.to_csv(path, index=False)
    assert main(["data", "check", str(path), str(eth_1h_path)]) == 1
    out, err = capsys.readouterr()
    assert "suspicious bars: 1 (a price over 5x or under 1/5 of the neighbours' median close)" in out
    assert "  row 30000 (2021-01-22T22:00Z): close 1225010 vs neighbours' median close" in out
    assert out.count("suspicious bars: 0") == 1  # the real file after it
    (line,) = err.splitlines()
    assert line.startswith(f"error: {path}: 1 suspicious bar(s), first: row 30000 (2021-01-22T22:00Z): close 1225010")
    # a looser threshold lets it pass; a stricter one flags the real 2017 wick (open 144.21 near 300)
    assert main(["data", "check", str(path), "--spike-ratio", "2000"]) == 0
    assert main(["data", "check", str(eth_1h_path), "--spike-ratio", "2"]) == 1
    assert "row 120 (2017-08-22T04:00Z): open 144.21" in capsys.readouterr().err
    assert main(["data", "check", str(eth_1h_path), "--spike-ratio", "1"]) == 2
    assert capsys.readouterr().err.strip() == "error: --spike-ratio must be > 1, got 1"


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
        "error: agent.timestep: unknown key; known: ['algo', 'device', 'ensemble', 'eval_every', 'n_envs', "
        "'params', 'policy', 'timesteps']")
    assert main(["backtest", str(tmp_path)]) == 2
    assert "not a spotgym run directory" in capsys.readouterr().err
