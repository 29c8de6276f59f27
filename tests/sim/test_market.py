"""``Market.kline_rows`` against a brute-force reference: every kline of the interval rebuilt from the base bars
with pandas, selected as Binance documents (``startTime``: the first ``limit`` opening at or after it; else the
last ``limit`` opening at or before ``endTime`` or now), on data with gaps cut in, at clocks inside and between
bars. The served rows only read a window around the answer, so this checks that window's edges."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from spotgym.sim.market import Market
from spotgym.venue import rules_for

HOUR = 3_600_000


@pytest.fixture(scope="module")
def gappy(eth_1h_path) -> pd.DataFrame:
    bars = pd.read_csv(eth_1h_path, nrows=900)
    # holes: one bar, a 4h-aligned run, and a run straddling a day boundary
    return bars.drop(index=[101, *range(200, 208), *range(410, 431)]).reset_index(drop=True)


def reference(bars: pd.DataFrame, interval_ms: int, start: int | None, end: int | None, limit: int,
              now: int) -> list[tuple]:
    """(open time, o, h, l, c, v) of the closed klines a query selects (the rows wholly before ``now``)."""
    opened = bars[bars["timestamp"] <= now]
    key = opened["timestamp"] - opened["timestamp"] % interval_ms
    grouped = opened.groupby(key).agg(o=("open", "first"), h=("high", "max"), l=("low", "min"),
                                      c=("close", "last"), v=("volume", "sum"), last=("timestamp", "max"))
    opens = grouped.index.to_numpy()
    if start is not None:
        chosen = grouped[(opens >= start) & (opens <= (end if end is not None else np.inf))].iloc[:limit]
    else:
        chosen = grouped[opens <= (end if end is not None else now)].iloc[-limit:] if limit else grouped.iloc[:0]
    return [(int(t), r.o, r.h, r.l, r.c, r.v) for t, r in chosen.iterrows()]


@pytest.mark.parametrize("interval_ms", [HOUR, 4 * HOUR, 24 * HOUR])
def test_kline_rows_match_a_brute_force_regrouping(gappy, interval_ms):
    market = Market("ETH/USDT", rules_for("ETH/USDT"), gappy["timestamp"].to_numpy(),
                    gappy[["open", "high", "low", "close", "volume"]].to_numpy(), HOUR)
    ts = gappy["timestamp"].to_numpy()
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(300):
        now = int(rng.integers(ts[0] - HOUR, ts[-1] + 3 * HOUR))
        limit = int(rng.integers(1, 40))
        start = int(rng.integers(ts[0] - 2 * HOUR, now + HOUR)) if rng.random() < 0.5 else None
        end = int(rng.integers(ts[0], now + HOUR)) if rng.random() < 0.3 else None
        rows = market.kline_rows(interval_ms, start, end, limit, now)
        want = reference(gappy, interval_ms, start, end, limit, now)
        assert [r[0] for r in rows] == [w[0] for w in want], (now, start, end, limit)
        for row, expected in zip(rows, want):
            if row[0] + interval_ms <= now and row[6] < ts[-1] + HOUR:  # closed: the whole bars' values
                got = (row[0], *map(float, row[1:6]))
                np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-12)
                checked += 1
            else:  # the open kline: opened at the reference's open, range inside the reference's
                assert float(row[1]) == expected[1]
                assert expected[3] - 1e-9 <= float(row[3]) <= float(row[2]) <= expected[2] + 1e-9
    assert checked > 500  # the sample reaches plenty of closed rows
