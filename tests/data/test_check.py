"""Unreadable bar files become one ``BarsError`` naming file and problem; single-bar price spikes are found."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from shared_data import shared_file

from spotgym.cli import main
from spotgym.data import BarsError, inspect_bars, load_bars, read_raw
from spotgym.data.validate import SPIKE_RATIO, find_suspicious

HEADER = "timestamp,open,high,low,close,volume\n"

# kind -> (file name, what the problem line must say)
BAD_FILES = {
    "directory": ("dir_ETHUSDT_1h.csv", "is a directory, not a bar file"),
    "truncated_gz": ("truncated_ETHUSDT_1h.csv.gz", "truncated gzip file"),
    "empty": ("empty_ETHUSDT_1h.csv", "empty file (0 bytes)"),
    "empty_gz": ("empty_ETHUSDT_1h.csv.gz", "empty file (0 bytes)"),
    "blank_lines": ("blank_ETHUSDT_1h.csv", "empty file: no header and no rows"),
    "empty_inside_gz": ("hollow_ETHUSDT_1h.csv.gz", "empty file: no header and no rows after decompression"),
    "header_only": ("header_ETHUSDT_1h.csv", "no rows (header only, no bars)"),
    "not_gzip": ("plain_ETHUSDT_1h.csv.gz", "not gzip data although the name ends in .gz"),
    "gzip_named_csv": ("packed_ETHUSDT_1h.csv", "not CSV text: the file holds gzip-compressed data"),
    "bad_parquet": ("junk_ETHUSDT_1h.parquet", "not a readable parquet file"),
    "bad_feather": ("junk_ETHUSDT_1h.feather", "not a readable feather file"),
    "unsupported": ("bars_ETHUSDT_1h.txt", "unsupported file type"),
    "binary_csv": ("binary_ETHUSDT_1h.csv", "not UTF-8 text: binary or wrongly encoded data (undecodable byte 0x80)"),
    "latin1_csv": ("latin_ETHUSDT_1h.csv", "not UTF-8 text: binary or wrongly encoded data (undecodable byte 0xe9)"),
    "wrong_columns": ("cols_ETHUSDT_1h.csv", "missing column(s) ['timestamp', 'open', 'high', 'low', 'close', 'volume']"),
}


def make_bad_file(kind: str, folder, eth_1h_path):
    """Write the bad file of ``kind`` into ``folder``; return (path, expected problem text)."""
    name, problem = BAD_FILES[kind]
    path = folder / name
    if kind == "directory":
        path.mkdir()
    elif kind == "truncated_gz":
        data = eth_1h_path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind in ("empty", "empty_gz"):
        path.write_bytes(b"")
    elif kind == "blank_lines":
        path.write_text("\n\n\n")
    elif kind == "empty_inside_gz":
        path.write_bytes(gzip.compress(b""))
    elif kind == "header_only":
        path.write_text(HEADER)
    elif kind == "not_gzip":
        path.write_text(HEADER + "1502942400000,301.13,302.57,298.0,301.61,125.66877\n")
    elif kind == "gzip_named_csv":
        path.write_bytes(eth_1h_path.read_bytes()[:5000])
    elif kind in ("bad_parquet", "bad_feather"):
        path.write_bytes(b"this is not a columnar file at all\n" * 10)
    elif kind == "unsupported":
        path.write_text(HEADER)
    elif kind == "binary_csv":
        path.write_bytes(bytes(range(128, 256)) * 8)
    elif kind == "latin1_csv":
        path.write_bytes((HEADER + "1502942400000,301.13,302.57,298.0,301.61,125.66877 é\n").encode("latin-1"))
    elif kind == "wrong_columns":
        path.write_text("a,b\n1,2\n")
    return path, problem


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_unreadable_file_is_one_bars_error_naming_file_and_problem(kind, tmp_path, eth_1h_path):
    path, problem = make_bad_file(kind, tmp_path, eth_1h_path)
    for read in (load_bars, inspect_bars):
        with pytest.raises(BarsError) as err:
            read(path)
        assert err.value.source == str(path)
        assert str(err.value) == f"{path}: {err.value.problem}"
        assert problem in err.value.problem
        assert "\n" not in str(err.value)


def test_read_raw_converts_low_level_errors(tmp_path, eth_1h_path):
    path, _ = make_bad_file("truncated_gz", tmp_path, eth_1h_path)
    with pytest.raises(BarsError, match="truncated gzip file") as err:
        read_raw(path)
    assert isinstance(err.value.__cause__, EOFError)  # the original error stays reachable
    with pytest.raises(FileNotFoundError):
        read_raw(tmp_path / "nowhere_1h.csv")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inspect_bars(tmp_path / "nowhere_1h.csv")


def test_good_files_still_read_the_same(tmp_path, eth_1h_path):
    bars = load_bars(eth_1h_path)
    assert len(bars) == 64_524 and bars["close"].iloc[-1] == pd.read_csv(eth_1h_path)["close"].iloc[-1]
    raw = pd.read_csv(eth_1h_path).iloc[:300]
    raw.to_feather(tmp_path / "x_1h.feather")
    raw.to_parquet(tmp_path / "x_1h.parquet", index=False)
    pd.testing.assert_frame_equal(load_bars(tmp_path / "x_1h.feather"), load_bars(tmp_path / "x_1h.parquet"))


# --- the command: one line per bad file, the next files still checked -------------------------------------


def _good_file(tmp_path, eth_1h_path):
    good = tmp_path / "GOOD_ETHUSDT_1h.csv"
    pd.read_csv(eth_1h_path).iloc[:500].to_csv(good, index=False)
    return good


@pytest.mark.parametrize("kind", ["missing", *sorted(BAD_FILES)])
def test_data_check_bad_file_is_one_line_and_the_next_file_is_checked(kind, tmp_path, eth_1h_path, capsys):
    if kind == "missing":
        bad, problem = tmp_path / "nowhere_ETHUSDT_1h.csv", "no such file"
    else:
        bad, problem = make_bad_file(kind, tmp_path, eth_1h_path)
    good = _good_file(tmp_path, eth_1h_path)
    assert main(["data", "check", str(bad), str(good)]) == 1
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith(f"error: {bad}: ") and problem in line
    assert "Traceback" not in out + err
    assert f"source:     {good}" in out and "rows:       500" in out  # the good file after it is still reported
    assert str(bad) not in out


def test_data_check_every_bad_file_in_one_command_exits_1_without_traceback(tmp_path, eth_1h_path):
    bad = [make_bad_file(kind, tmp_path, eth_1h_path) for kind in sorted(BAD_FILES)]
    good = _good_file(tmp_path, eth_1h_path)
    paths = [str(p) for p, _ in bad]
    cmd = [sys.executable, "-c", "import sys; from spotgym.cli import main; sys.exit(main())",
           "data", "check", *paths[:5], str(good), *paths[5:]]
    env = {k: v for k, v in os.environ.items() if k != "SPOTGYM_TRACEBACK"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == len(bad)
    for line, (path, problem) in zip(lines, bad, strict=True):
        assert line.startswith(f"error: {path}: ") and problem in line
    assert f"source:     {good}" in done.stdout and done.stdout.count("source:") == 1


# --- suspicious bars --------------------------------------------------------------------------------------


def spiked_copy(eth_1h_path, tmp_path, changes: dict[tuple[int, str], float], name="BINANCE_ETHUSDT_1h.csv"):
    """The real 1h data with ``{(row, column): factor}`` applied, high / low widened to stay formally valid."""
    raw = pd.read_csv(eth_1h_path)
    for (row, col), factor in changes.items():
        raw.loc[row, col] = raw.loc[row, col] * factor
        raw.loc[row, "high"] = raw.loc[row, ["open", "high", "low", "close"]].max()
        raw.loc[row, "low"] = raw.loc[row, ["open", "high", "low", "close"]].min()
    path = tmp_path / name
    raw.to_csv(path, index=False)
    return path, raw


def test_close_spike_up_and_down_reported_at_its_row(tmp_path, eth_1h_path):
    path, raw = spiked_copy(eth_1h_path, tmp_path, {(30_000, "close"): 1000.0, (40_000, "close"): 0.001})
    original = pd.read_csv(eth_1h_path)
    report = inspect_bars(path)
    assert [(b.row, b.column) for b in report.suspicious] == [(30_000, "close"), (40_000, "close")]
    up, down = report.suspicious
    assert up.value == raw.loc[30_000, "close"] == pytest.approx(original.loc[30_000, "close"] * 1000)
    assert down.value == raw.loc[40_000, "close"] == pytest.approx(original.loc[40_000, "close"] / 1000)
    assert (up.timestamp_ms, down.timestamp_ms) == (raw.loc[30_000, "timestamp"], raw.loc[40_000, "timestamp"])
    # the reference is a median of the neighbours' real closes, so within a few per cent of the true close
    for bar, row in ((up, 30_000), (down, 40_000)):
        neighbours = original.loc[row - 3 : row + 3, "close"].drop(row)
        assert neighbours.min() <= bar.reference <= neighbours.max()
    assert 900 < up.ratio < 1100 and 1 / 1100 < down.ratio < 1 / 900
    summary = report.summary()
    assert "suspicious bars: 2 (a price over 5x or under 1/5 of the neighbours' median close)" in summary
    assert "  row 30000 (2021-01-22T22:00Z): close 1225010 vs neighbours' median close" in summary
    assert "  row 40000 (2022-03-16T03:00Z): close 2.6204 vs neighbours' median close" in summary
    assert report.rows == 64_524 and len(report.gaps) == 28  # the rest of the report is unchanged


def test_high_wick_first_and_last_bar_spikes(tmp_path, eth_1h_path):
    last = 64_523
    path, raw = spiked_copy(eth_1h_path, tmp_path, {(50_000, "high"): 1000.0, (0, "close"): 1000.0,
                                                    (last, "low"): 0.001})
    found = {(b.row, b.column): b.value for b in inspect_bars(path).suspicious}
    assert found == {(0, "close"): raw.loc[0, "close"], (50_000, "high"): raw.loc[50_000, "high"],
                     (last, "low"): raw.loc[last, "low"]}


def test_listing_is_capped_in_the_summary(tmp_path, eth_1h_path):
    path, _ = spiked_copy(eth_1h_path, tmp_path, {(1000 * k, "close"): 1000.0 for k in range(1, 9)})
    report = inspect_bars(path)
    assert len(report.suspicious) == 8
    listed = [line for line in report.summary().splitlines() if line.startswith("  row ")]
    assert len(listed) == 5 and listed[0].startswith("  row 1000 ")
    assert "  ... and 3 more" in report.summary()


def test_real_moves_are_not_spikes():
    ts = 1_700_000_000_000 + 3_600_000 * np.arange(40)
    close = np.where(np.arange(40) < 20, 1000.0, 90.0)  # a crash to 1/11 that stays: not a single-bar spike
    df = pd.DataFrame({"timestamp": ts, "open": close, "high": close, "low": close, "close": close, "volume": 1.0})
    assert find_suspicious(df) == ()
    df.loc[25, ["high", "close"]] = 90.0 * 6  # one bar 6x above both sides: a spike
    assert [(b.row, b.column, b.value, b.reference) for b in find_suspicious(df)] == [(25, "close", 540.0, 90.0)]
    assert find_suspicious(df, ratio=7.0) == ()
    with pytest.raises(ValueError, match="ratio must be > 1"):
        find_suspicious(df, ratio=1.0)


def test_the_real_2017_eth_wick_is_seen_only_below_the_default_threshold(eth_1h_path):
    raw = pd.read_csv(eth_1h_path)
    assert find_suspicious(raw) == ()
    (wick,) = find_suspicious(raw, ratio=2.0)  # 2017-08-22T04:00Z: open 144.21 while the market was near 300
    assert (wick.row, wick.column, wick.value) == (120, "open", 144.21)
    assert 1 / wick.ratio < SPIKE_RATIO / 2  # the default leaves more than 2x margin over the worst real bar


@pytest.mark.parametrize("name", ["BINANCE_ETHUSDT_1h.csv.gz", "BINANCE_ETHUSDT_5m.csv.gz",
                                  "BINANCE_BTCUSDT_1h.csv.gz", "BINANCE_SOLUSDT_1h.csv"])
def test_real_files_have_no_suspicious_bars(name):
    report = inspect_bars(shared_file(name))
    assert report.rows > 38_000
    assert report.suspicious == ()
    assert "suspicious bars: 0" in report.summary().splitlines()
