"""Loading and validating bars: real files, gap policies, and one test per bad-input rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotgym.data import BarsError, inspect_bars, load_bars

H = 3_600_000


def write_csv(tmp_path, rows, name="BINANCE_TEST_1h.csv", header="timestamp,open,high,low,close,volume"):
    path = tmp_path / name
    path.write_text(header + "\n" + "\n".join(",".join(str(v) for v in r) for r in rows) + "\n")
    return path


def good_rows(n=6, start=1_700_000_000_000 // H * H):
    return [[start + i * H, 100 + i, 102 + i, 99 + i, 101 + i, 10.0 + i] for i in range(n)]


def test_real_eth_1h_matches_shared_readme(eth_1h_path):
    bars = load_bars(eth_1h_path)
    assert len(bars) == 64_524
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert str(bars.index.tz) == "UTC"
    assert bars.index[0] == pd.Timestamp("2017-08-17T04:00Z")
    assert bars.index[-1] == pd.Timestamp("2024-12-31T23:00Z")
    assert bars.attrs["timeframe"] == "1h"
    gaps = bars.attrs["gaps"]
    assert len(gaps) == 28 and sum(g.n_missing for g in gaps) == 128
    assert max(g.n_missing for g in gaps) == 33  # 2018-02-08T01:00Z .. 2018-02-09T09:00Z


def test_inspect_report_of_5m_file(eth_5m_path):
    report = inspect_bars(eth_5m_path)
    assert (report.rows, report.timeframe, len(report.gaps), report.missing_bars) == (278_820, "5m", 3, 2_268)
    assert report.longest_gap.n_missing == 1_964
    assert report.zero_volume_rows == 14
    assert "gaps:       3 (missing bars: 2,268" in report.summary()


def test_gap_policies(tmp_path):
    rows = good_rows(6)
    del rows[2:4]  # two missing bars
    path = write_csv(tmp_path, rows)
    marked = load_bars(path, "mark")
    assert len(marked) == 4 and "synthetic" not in marked
    assert [(g.n_missing, g.first_missing_ms) for g in marked.attrs["gaps"]] == [(2, rows[1][0] + H)]
    with pytest.raises(BarsError, match="gap_policy='fail'"):
        load_bars(path, "fail")
    filled = load_bars(path, "fill")
    assert len(filled) == 6
    assert filled["synthetic"].tolist() == [False, False, True, True, False, False]
    flat = filled.iloc[2:4]
    prev_close = rows[1][4]
    assert (flat[["open", "high", "low", "close"]].to_numpy() == prev_close).all()
    assert (flat["volume"] == 0).all()
    with pytest.raises(ValueError, match="gap_policy must be one of"):
        load_bars(path, "interpolate")


def test_start_end_and_dataframe_source(eth_1h_path):
    bars = load_bars(eth_1h_path, start="2024-01-01", end="2024-01-31T23:00")
    assert len(bars) == 31 * 24
    again = load_bars(bars.copy())
    pd.testing.assert_frame_equal(again, bars, check_freq=False)


@pytest.mark.parametrize(
    ("mutate", "message", "row"),
    [
        (lambda r: r.__setitem__(3, [r[3][0], "abc", *r[3][2:]]), "column 'open' is not numeric", 3),
        (lambda r: r.__setitem__(2, [r[1][0], *r[2][1:]]), "duplicate timestamp", 2),
        (lambda r: r.__setitem__(4, [r[2][0] - H, *r[4][1:]]), "not sorted", 4),
        (lambda r: r.__setitem__(3, [r[3][0] + 1_000, *r[3][1:]]), "off the 1h grid", 3),
        (lambda r: r.__setitem__(1, [r[1][0], 100, 102, 99, "nan", 5]), "close is nan", 1),
        (lambda r: r.__setitem__(5, [r[5][0], 100, 102, 99, "inf", 5]), "close is inf", 5),
        (lambda r: r.__setitem__(2, [r[2][0], 0, 102, 0, 101, 5]), "non-positive price", 2),
        (lambda r: r.__setitem__(4, [r[4][0], 100, 100.5, 99, 101, 5]), r"high < max\(open, close\)", 4),
        (lambda r: r.__setitem__(1, [r[1][0], 100, 102, 100.5, 101, 5]), r"low > min\(open, close\)", 1),
        (lambda r: r.__setitem__(3, [r[3][0], 100, 102, 99, 101, -1]), "negative volume", 3),
    ],
)
def test_bad_input_names_file_row_and_problem(tmp_path, mutate, message, row):
    rows = good_rows(6)
    mutate(rows)
    path = write_csv(tmp_path, rows)
    with pytest.raises(BarsError, match=message) as err:
        load_bars(path)
    assert err.value.row == row
    assert str(path) in str(err.value) and f"row {row}" in str(err.value)


def test_missing_column_is_named(tmp_path):
    path = write_csv(tmp_path, [r[:5] for r in good_rows(3)], header="timestamp,open,high,low,close")
    with pytest.raises(BarsError, match=r"missing column\(s\) \['volume'\]"):
        load_bars(path)


def test_parquet_and_csv_gz_read_the_same(tmp_path, eth_1h_path):
    raw = pd.read_csv(eth_1h_path).iloc[:500]
    raw.to_parquet(tmp_path / "x_1h.parquet", index=False)
    raw.to_csv(tmp_path / "x_1h.csv.gz", index=False)
    a, b = load_bars(tmp_path / "x_1h.parquet"), load_bars(tmp_path / "x_1h.csv.gz")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(a["close"].to_numpy(), raw["close"].to_numpy())


def test_cache_spec_resolves_into_cache_dir(tmp_path, monkeypatch, eth_1h_path):
    monkeypatch.setenv("SPOTGYM_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="spotgym data download"):
        load_bars("binance:ETH/USDT:1h")
    target = tmp_path / "binance" / "ETH_USDT-1h.parquet"
    target.parent.mkdir(parents=True)
    pd.read_csv(eth_1h_path).iloc[:100].to_parquet(target, index=False)
    assert len(load_bars("binance:ETH/USDT:1h")) == 100
