"""Aggregating bars to a coarser timeframe (first / max / min / last / sum)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from spotgym.data.timeframes import ms_to_timeframe, timeframe_to_ms


def resample_bars(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """OHLCV bars of ``bars`` (from ``load_bars``) aggregated to ``timeframe``.

    Buckets are aligned to the epoch (as Binance aligns its klines). A bucket is kept only when
    every source bar in it is present and real (not a gap-filled synthetic bar), so the result
    never contains a partly observed bar: incomplete buckets — gaps, and the first / last
    bucket of the span — are dropped. ``attrs["dropped_buckets"]`` counts them.
    """
    src_tf = bars.attrs.get("timeframe")
    if src_tf is None:
        raise ValueError("resample_bars needs bars.attrs['timeframe'] (use load_bars) to know the source bar length")
    src_ms, dst_ms = timeframe_to_ms(src_tf), timeframe_to_ms(timeframe)
    if dst_ms <= src_ms or dst_ms % src_ms:
        raise ValueError(f"cannot resample {src_tf} bars to {timeframe}: the target must be a whole multiple "
                         f"of the source timeframe")
    per_bucket = dst_ms // src_ms

    ms = bars.index.as_unit("ms").asi8
    bucket = ms - ms % dst_ms
    real = ~bars["synthetic"].to_numpy(bool) if "synthetic" in bars else np.ones(len(bars), bool)
    grouped = bars.groupby(bucket, sort=True)
    out = pd.DataFrame({
        "open": grouped["open"].first(),
        "high": grouped["high"].max(),
        "low": grouped["low"].min(),
        "close": grouped["close"].last(),
        "volume": grouped["volume"].sum(),
    })
    n_real = pd.Series(real, index=bars.index).groupby(bucket, sort=True).sum()
    complete = (n_real == per_bucket).to_numpy()
    result = out.loc[complete]
    result.index = pd.DatetimeIndex(pd.to_datetime(result.index.to_numpy(np.int64), unit="ms", utc=True), name="time")
    result.attrs.update(bars.attrs)
    result.attrs.update(timeframe=ms_to_timeframe(dst_ms), dropped_buckets=int((~complete).sum()))
    result.attrs.pop("gaps", None)
    return result
