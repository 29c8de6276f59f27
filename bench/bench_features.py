"""Feature-set throughput: the default spec over one year of 1-minute bars and the ETH/USDT 1h history.

    python bench/bench_features.py [--repeats 3]

The year of minutes (525,600 rows) is the shipped ETH/USDT 1m month tiled: each copy is
rescaled so its first open continues the previous copy's last close, timestamps run on. The
reference measured in the same run is the same indicators computed with plain ``ta`` classes
(ATR included, whose Python loop is why spotgym computes ATR with ``ewm``), without the causal
normalisation: the ratio says what spotgym's whole feature build costs relative to ``ta`` alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import ta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared-data locator
from shared_data import shared_file  # noqa: E402

from spotgym.data import load_bars  # noqa: E402
from spotgym.features import build_features, default_spec  # noqa: E402

YEAR_OF_MINUTES = 525_600


def tiled_minutes(rows: int = YEAR_OF_MINUTES) -> pd.DataFrame:
    month = load_bars(shared_file("BINANCE_ETHUSDT_1m.csv.gz"))
    parts, scale, copies = [], 1.0, -(-rows // len(month))
    for k in range(copies):
        part = month.copy()
        part[["open", "high", "low", "close"]] *= scale
        scale = part["close"].iloc[-1] / month["open"].iloc[0]
        part.index = month.index + pd.Timedelta(minutes=len(month) * k)
        parts.append(part)
    bars = pd.concat(parts).iloc[:rows]
    bars.attrs["timeframe"] = "1m"
    return bars


def ta_reference(bars: pd.DataFrame) -> None:
    """The default indicator set computed with plain ``ta`` classes (no normalisation)."""
    c, h, lo, v = bars["close"], bars["high"], bars["low"], bars["volume"]
    m = ta.trend.MACD(c)
    m.macd(), m.macd_signal(), m.macd_diff()
    ta.momentum.RSIIndicator(c).rsi()
    b = ta.volatility.BollingerBands(c)
    b.bollinger_pband(), b.bollinger_wband()
    ta.volatility.AverageTrueRange(h, lo, c).average_true_range()
    for w in (10, 50, 200):
        ta.trend.EMAIndicator(c, w).ema_indicator()
    s = ta.momentum.StochasticOscillator(h, lo, c)
    s.stoch(), s.stoch_signal()
    np.log1p(v).rolling(96).std()
    for lag in (1, 4, 16, 64):
        np.log(c).diff(lag)
    np.log(c).diff().rolling(24).std()


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="bench/results/features.json")
    args = parser.parse_args()

    datasets = {"1m x 525,600 (tiled year)": tiled_minutes(),
                "ETH/USDT 1h 2017-2024": load_bars(shared_file("BINANCE_ETHUSDT_1h.csv.gz"))}
    spec = default_spec()
    build_features(next(iter(datasets.values())).iloc[:2000], spec)  # warm imports
    results = []
    for name, bars in datasets.items():
        ours = timed(lambda b=bars: build_features(b, spec), args.repeats)
        ref = timed(lambda b=bars: ta_reference(b), args.repeats)
        frame = build_features(bars, spec)
        results.append({"data": name, "rows": len(bars), "columns": frame.n_features,
                        "spotgym_s": round(ours, 3), "ta_reference_s": round(ref, 3),
                        "ratio_ta_over_spotgym": round(ref / ours, 2),
                        "rows_per_s": round(len(bars) / ours)})
    print(f"{'data':28s} {'rows':>9s} {'cols':>4s} {'spotgym s':>10s} {'ta-only s':>10s} {'ta/spotgym':>10s}")
    for r in results:
        print(f"{r['data']:28s} {r['rows']:9,d} {r['columns']:4d} {r['spotgym_s']:10.3f} "
              f"{r['ta_reference_s']:10.3f} {r['ratio_ta_over_spotgym']:10.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": pd.Timestamp.now("UTC").isoformat(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
