"""The OHLCV downloader against the local replay server (loopback only) on real ETH/USDT 1h bars."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI

from spotgym.data.download import DownloadError, DownloadResult, download_ohlcv, to_ms
from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import make_exchange

HOUR = 3_600_000
ROWS = 2400  # 2017-08-17 .. 2017-11-25, holds the 6-bar gap of 2017-09-06


@pytest.fixture(scope="module")
def bars(eth_1h_path) -> pd.DataFrame:
    frame = pd.read_csv(eth_1h_path, nrows=ROWS)
    assert np.diff(frame["timestamp"].to_numpy()).max() == 7 * HOUR  # pagination crosses a real gap
    return frame


@dataclass
class Sim:
    """A replay server over ``bars`` with a movable clock, and a ccxt client pointed at it."""

    app: FastAPI
    url: str
    now: int
    client: object = field(init=False)

    def __post_init__(self) -> None:
        self.client = make_exchange(mode="sim", sim_url=self.url)

    def kline_starts(self, since_request: int = 0) -> list[int]:
        """``startTime`` of every klines request from request number ``since_request`` on."""
        return [int(r.params["startTime"]) for r in self.app.state.requests[since_request:]
                if r.path == "/api/v3/klines"]


@pytest.fixture
def sim(bars):
    holder: dict[str, Sim] = {}
    app = create_app({"ETH/USDT@1h": bars}, now_ms=lambda: holder["sim"].now)
    with serve_in_thread(app) as url:
        holder["sim"] = Sim(app, url, now=int(bars["timestamp"].iat[-1]) + HOUR)  # last bar just closed
        yield holder["sim"]


def download(sim: Sim, data_dir: Path, **kwargs) -> DownloadResult:
    kwargs.setdefault("limit", 500)
    return download_ohlcv("ETH/USDT", "1h", data_dir=data_dir, client=sim.client, progress=False,
                          retry_delay=0.001, **kwargs)


def stored(result: DownloadResult) -> pd.DataFrame:
    return pd.read_parquet(result.path)


def test_pages_through_the_source_exactly(sim, bars, tmp_path):
    result = download(sim, tmp_path)  # default since 2017-08-17, before the first bar

    ts = bars["timestamp"].to_numpy()
    assert result.path == tmp_path / "binance" / "ETH_USDT-1h.parquet"
    assert (result.rows_added, result.rows_total) == (ROWS, ROWS)
    assert (result.first_ms, result.last_ms) == (ts[0], ts[-1])
    pd.testing.assert_frame_equal(stored(result), bars)  # int64 timestamp, float64 OHLCV, exact values
    # 5 pages of 500, each starting one bar after the previous page's last; no request past "now".
    assert sim.kline_starts() == [to_ms("2017-08-17"), *(ts[i] + HOUR for i in (499, 999, 1499, 1999))]


def test_resume_fetches_only_newer_bars(sim, bars, tmp_path):
    ts = bars["timestamp"].to_numpy()
    sim.now = int(ts[1200]) + HOUR
    first = download(sim, tmp_path, since="2017-08-17T04:00:00Z")
    before = stored(first)
    assert first.rows_total == 1201

    sim.now = int(ts[-1]) + HOUR
    mark = len(sim.app.state.requests)
    second = download(sim, tmp_path, since="2017-08-17T04:00:00Z")

    starts = sim.kline_starts(mark)
    assert starts[0] == ts[1200] + HOUR and min(starts) > ts[1200]
    assert (second.rows_added, second.rows_total) == (ROWS - 1201, ROWS)
    after = stored(second)
    pd.testing.assert_frame_equal(after.iloc[:1201], before)
    pd.testing.assert_frame_equal(after, bars)


def test_open_candle_is_never_stored(sim, bars, tmp_path):
    ts = bars["timestamp"].to_numpy()
    sim.now = int(ts[1000]) + 25 * 60_000  # 25 minutes into bar 1000
    served = sim.client.fetch_ohlcv("ETH/USDT", "1h", since=int(ts[999]), limit=5)
    assert [row[0] for row in served] == [ts[999], ts[1000]]  # the server does send the open bar ...
    assert served[1][5] < bars["volume"].iat[1000]  # ... partial

    result = download(sim, tmp_path)
    assert result.last_ms == ts[999]
    pd.testing.assert_frame_equal(stored(result), bars.iloc[:1000])

    sim.now = int(ts[1000]) + HOUR  # once it has closed, the final values are stored
    result = download(sim, tmp_path)
    pd.testing.assert_frame_equal(stored(result), bars.iloc[:1001])


def test_server_errors_are_retried_without_duplicates(sim, bars, tmp_path):
    faults = sim.app.state.faults
    faults.fail_request(2, status=429)
    faults.fail_request(3, status=503)
    faults.fail_request(5, status=500)

    result = download(sim, tmp_path)

    assert faults.injected == 3
    starts = sim.kline_starts()
    assert len(starts) == 5 + 3 and starts[1] == starts[2] == starts[3]  # page 2 asked for three times
    frame = stored(result)
    assert frame["timestamp"].is_unique
    pd.testing.assert_frame_equal(frame, bars)


def test_exhausted_retries_keep_fetched_pages_and_a_rerun_completes(sim, bars, tmp_path):
    ts = bars["timestamp"].to_numpy()
    sim.app.state.faults.fail_request(4, 5, 6, status=503)  # page 4 and both its retries

    with pytest.raises(DownloadError, match=r"failed 3 times(.|\n)*run again to resume"):
        download(sim, tmp_path, max_retries=2)  # flush_every=10: only the failure path writes here

    path = tmp_path / "binance" / "ETH_USDT-1h.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), bars.iloc[:1500])
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind

    mark = len(sim.app.state.requests)
    result = download(sim, tmp_path, max_retries=2)
    assert sim.kline_starts(mark)[0] == ts[1499] + HOUR
    assert result.rows_added == ROWS - 1500
    pd.testing.assert_frame_equal(stored(result), bars)


def test_pages_are_written_to_disk_every_flush_every_pages(sim, bars, tmp_path):
    path = tmp_path / "binance" / "ETH_USDT-1h.parquet"
    on_disk: list[int] = []
    fetch = sim.client.fetch_ohlcv

    def spying_fetch(*args, **kwargs):
        on_disk.append(len(pd.read_parquet(path)) if path.exists() else 0)
        return fetch(*args, **kwargs)

    sim.client.fetch_ohlcv = spying_fetch
    result = download(sim, tmp_path, flush_every=2)

    assert on_disk == [0, 0, 1000, 1000, 2000]
    pd.testing.assert_frame_equal(stored(result), bars)


def test_a_bar_repeated_within_a_page_is_stored_once(sim, bars, tmp_path):
    fetch = sim.client.fetch_ohlcv

    def fetch_with_a_revised_repeat(*args, **kwargs):
        page = fetch(*args, **kwargs)
        return page + [page[-1][:5] + [page[-1][5] + 1.0]]  # same open time, other volume

    sim.client.fetch_ohlcv = fetch_with_a_revised_repeat
    result = download(sim, tmp_path)

    frame = stored(result)
    assert result.rows_total == ROWS and frame["timestamp"].is_unique
    pd.testing.assert_frame_equal(frame.drop(columns="volume"), bars.drop(columns="volume"))


def test_exchange_market_id_resolves_to_the_unified_cache_name(sim, bars, tmp_path):
    result = download_ohlcv("ETHUSDT", "1h", data_dir=tmp_path, client=sim.client, progress=False)
    assert result.path.name == "ETH_USDT-1h.parquet"
    assert result.rows_total == ROWS


def test_unknown_symbol_is_a_clear_error(sim, tmp_path):
    with pytest.raises(ValueError, match=r"unknown symbol 'ETH/USDC'.*did you mean ETH/USDT"):
        download_ohlcv("ETH/USDC", "1h", data_dir=tmp_path, client=sim.client, progress=False)
    assert [r.path for r in sim.app.state.requests] == ["/api/v3/exchangeInfo"]
    assert not any(tmp_path.iterdir())


def test_unknown_timeframe_is_a_clear_error(sim, tmp_path):
    with pytest.raises(ValueError, match=r"unknown timeframe '7m' for binance"):
        download_ohlcv("ETH/USDT", "7m", data_dir=tmp_path, client=sim.client, progress=False)
    assert sim.app.state.requests == []
    # A Binance timeframe finer than the server's data: rejected (-1120), not retried.
    with pytest.raises(DownloadError, match=r"was rejected.*not 30m"):
        download_ohlcv("ETH/USDT", "30m", data_dir=tmp_path, client=sim.client, progress=False)
    assert len(sim.kline_starts()) == 1


@pytest.mark.parametrize("value", [
    1704067200000, "2024-01-01", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00+01:00",
    datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))),
    pd.Timestamp("2024-01-01"),
])
def test_since_accepts_ms_and_iso_dates(value):
    assert to_ms(value) == 1704067200000


@pytest.mark.parametrize("value, match", [
    (1704067200, "looks like epoch seconds"), ("last tuesday", "ISO date"), (True, "epoch ms"),
])
def test_since_rejects_bad_values(value, match):
    with pytest.raises(ValueError, match=match):
        to_ms(value)
