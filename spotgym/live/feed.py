"""The live bar feed: closed bars of one symbol from an exchange's REST API, as the env's feature rows.

Closed bars only: a bar is closed when its span has ended by the exchange's clock (the replay exchange's market
clock, read from each reply's ``X-Sim-Time``; a real exchange's server time otherwise). Polling from the last
bar delivered is its own backfill: after a disconnect, a stall or a restart every bar missed comes with the
next answer, each open time once, in order (duplicates and bars at or before the last one are dropped). A
staleness watchdog reports when no bar has closed for ``stale_bars`` timeframes (the runner applies its
policy: hold, flatten or stop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from spotgym.core import FeatureFrame
from spotgym.data import load_bars
from spotgym.data.timeframes import ms_to_timeframe

__all__ = ["FeedStopped", "LiveFeed", "sim_clock"]

log = logging.getLogger("spotgym.live.feed")


class FeedStopped(RuntimeError):
    """The runner asked the feed to stop waiting (a stop command, the staleness policy)."""


def sim_clock(client: Any) -> int | None:
    """The replay exchange's market clock, from the last reply's ``X-Sim-Time`` header (None elsewhere)."""
    headers = getattr(client, "last_response_headers", None) or {}
    for key, value in headers.items():
        if str(key).lower() == "x-sim-time":
            return int(value)
    return None


class LiveFeed:
    """``LiveFeed(client, symbol, timeframe_ms, rows_for)``: the ``Feed`` port over a ccxt client.

    ``rows_for(new_bars) -> FeatureFrame``: the frame rows of newly closed bars (the run's features and fitted
    predictors, streamed). ``before_poll()``: called once per ``next_rows`` before polling (the runner steps a
    manual replay clock there). ``should_stop()``: polled while waiting. ``on_event(kind, **payload)``: stale /
    recovered / backfill / poll errors.
    """

    def __init__(self, client: Any, symbol: str, timeframe_ms: int, rows_for: Callable[[pd.DataFrame], FeatureFrame],
                 *, gap_policy: str = "mark", poll_s: float = 1.0, stale_bars: float = 2.0, grace_s: float = 10.0,
                 before_poll: Callable[[], None] | None = None, should_stop: Callable[[], bool] | None = None,
                 on_event: Callable[..., None] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.symbol, self.tf = client, symbol, int(timeframe_ms)
        self.timeframe = ms_to_timeframe(self.tf)
        self.rows_for, self.gap_policy, self.poll_s = rows_for, gap_policy, poll_s
        self.stale_ms = int(stale_bars * self.tf + grace_s * 1000)
        self.before_poll, self.should_stop = before_poll, should_stop or (lambda: False)
        self.on_event = on_event or (lambda kind, **payload: None)
        self.sleep = sleep
        self.last_ms: int | None = None
        self.last_close: float | None = None
        self.stale = False
        self.bars_delivered = 0
        self.backfilled = 0  # bars that came more than one at a time (a gap refilled by REST)
        self.errors = 0

    # ------------------------------------------------------------------ clock
    def now_ms(self) -> int:
        """The exchange's clock: the replay exchange's market time, else the wall clock corrected by ccxt's
        measured time difference."""
        t = sim_clock(self.client)
        if t is not None:
            return t
        return int(time.time() * 1000) - int(self.client.options.get("timeDifference", 0) or 0)

    # ------------------------------------------------------------------ REST
    def fetch_closed(self, since_ms: int, until_ms: int | None = None) -> pd.DataFrame:
        """Every closed bar with open time in [since_ms, until_ms] (paged), as validated bars."""
        rows: list[list[float]] = []
        cursor = int(since_ms)
        while True:
            batch = self.client.fetch_ohlcv(self.symbol, self.timeframe, cursor, 1000)
            now = self.now_ms()
            batch = [b for b in batch if int(b[0]) >= cursor and int(b[0]) + self.tf <= now
                     and (until_ms is None or int(b[0]) <= until_ms)]
            rows += batch
            if len(batch) < 999 or (until_ms is not None and int(batch[-1][0]) >= until_ms):
                break
            cursor = int(batch[-1][0]) + self.tf
        return self._bars(rows)

    def _bars(self, rows: list[list[float]]) -> pd.DataFrame:
        if not rows:
            return pd.DataFrame(columns=["open", "high", "low", "close", "volume"],
                                index=pd.DatetimeIndex([], tz="UTC", name="time"), dtype=np.float64)
        df = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
        df = df.drop_duplicates("timestamp", keep="last").sort_values("timestamp")
        return load_bars(df, "mark", timeframe=ms_to_timeframe(self.tf), symbol=self.symbol)

    # ------------------------------------------------------------------ the port
    def start(self, last_ms: int, last_close: float | None = None) -> None:
        """Deliver bars after ``last_ms`` (the last bar of the warm-up history, which closed at ``last_close``)."""
        self.last_ms = int(last_ms)
        self.last_close = last_close

    def next_rows(self) -> FeatureFrame | None:
        """Block until at least one bar after the last one delivered has closed; its rows (None: stopped)."""
        if self.last_ms is None:
            raise RuntimeError("call start(last_ms) first")
        if self.before_poll is not None:
            self.before_poll()
        while True:
            if self.should_stop():
                return None
            try:
                bars = self.fetch_closed(self.last_ms + self.tf)
            except Exception as exc:  # the feed outlives a failed poll: log, back off, poll again
                self.errors += 1
                self.on_event("feed_error", error=f"{type(exc).__name__}: {str(exc)[:200]}")
                self.sleep(min(self.poll_s * 2 ** min(self.errors, 5), 30.0))
                continue
            bars = bars[bars.index.as_unit("ms").asi8 > self.last_ms] if len(bars) else bars
            if len(bars):
                return self._deliver(bars)
            lag = self.now_ms() - (self.last_ms + self.tf)
            if lag > self.stale_ms and not self.stale:
                self.stale = True
                self.on_event("feed_stale", last_bar_ms=self.last_ms, lag_s=lag / 1000)
            self.sleep(self.poll_s)

    def _deliver(self, bars: pd.DataFrame) -> FeatureFrame:
        times = bars.index.as_unit("ms").asi8
        if self.stale:
            self.stale = False
            self.on_event("feed_recovered", bars=len(bars))
        if len(bars) > 1:
            self.backfilled += len(bars) - 1
            self.on_event("backfill", first_ms=int(times[0]), bars=len(bars))
        if self.gap_policy == "fill":
            bars = _fill_from(bars, self.last_ms, self.tf, self.last_close)
        self.last_ms = int(times[-1])
        self.last_close = float(bars["close"].iloc[-1])
        self.bars_delivered += len(bars)
        self.errors = 0
        return self.rows_for(bars)


def _fill_from(bars: pd.DataFrame, last_ms: int, tf: int, last_close: float | None) -> pd.DataFrame:
    """Flat synthetic bars (as ``load_bars(gap_policy="fill")`` makes them) for missing bars after ``last_ms``."""
    start = pd.Timestamp(last_ms + tf, unit="ms", tz="UTC")
    grid = pd.date_range(start, bars.index[-1], freq=pd.Timedelta(milliseconds=tf), name="time")
    filled = bars.reindex(grid)
    synthetic = filled["close"].isna().to_numpy()
    prev = filled["close"].ffill()
    if last_close is not None:
        prev = prev.fillna(last_close)
    for col in ("open", "high", "low", "close"):
        filled[col] = filled[col].fillna(prev)
    filled["volume"] = filled["volume"].fillna(0.0)
    filled["synthetic"] = synthetic
    return filled
