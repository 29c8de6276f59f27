"""Backtest metrics: hand-computed tiny cases, an independent pandas reference, edge cases, JSON safety."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from spotgym.backtest import (
    bars_per_year,
    compute_metrics,
    drawdown_series,
    round_trips,
    to_jsonable,
    write_metrics_json,
)


def _hourly(values: list[float], start: str = "2024-01-01") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="h", tz="UTC"), dtype=float)


def _fills(rows: list[tuple[int, str, float, float, float]]) -> pd.DataFrame:
    """(hour, side, price, quantity, fee) -> fill frame with notional = price * quantity."""
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    return pd.DataFrame({
        "timestamp": [t0 + pd.Timedelta(hours=h) for h, *_ in rows],
        "side": [r[1] for r in rows],
        "price": [r[2] for r in rows],
        "quantity": [r[3] for r in rows],
        "notional": [r[2] * r[3] for r in rows],
        "fee": [r[4] for r in rows],
    })


# Two round trips and an open position, hand-computed:
#  trip 1: buy 2 @ 100 (fee 0.20); sell 1 @ 110 (fee 0.11, partial exit); sell 1 @ 120 (fee 0.12)
#          entry 100, exit (110 + 120) / 2 = 115, fees 0.43, pnl = 230 - 200 - 0.43 = 29.57,
#          return = 29.57 / 200 = 0.14785
#  trip 2: buy 1 @ 100 (fee 0.10); buy 1 @ 90 (fee 0.09, scale-in); sell 2 @ 80 (fee 0.16)
#          entry 190 / 2 = 95, exit 80, fees 0.35, pnl = 160 - 190 - 0.35 = -30.35,
#          return = -30.35 / 190
#  then buy 0.5 @ 100 (fee 0.05) stays open: not a round trip, but its fee and notional count.
FILLS = _fills([
    (1, "buy", 100.0, 2.0, 0.20), (2, "sell", 110.0, 1.0, 0.11), (3, "sell", 120.0, 1.0, 0.12),
    (4, "buy", 100.0, 1.0, 0.10), (5, "buy", 90.0, 1.0, 0.09), (6, "sell", 80.0, 2.0, 0.16),
    (7, "buy", 100.0, 0.5, 0.05),
])


def test_bars_per_year_is_24_7():
    assert bars_per_year("1h") == 8760
    assert bars_per_year("1d") == 365
    assert bars_per_year("5m") == 365 * 288


def test_hand_computed_tiny_curve():
    # equity 100 -> 110 -> 99 -> 121 on bars 365/3 days apart: periods_per_year=3 and the 3 bars span one year
    stamps = pd.Timestamp("2023-01-01", tz="UTC") + pd.to_timedelta([0, 1, 2, 3], unit="D") * (365 / 3)
    m = compute_metrics(pd.Series([100.0, 110, 99, 121], index=stamps), periods_per_year=3)
    # returns r = [0.1, -0.1, 121/99 - 1 = 2/9]; mean = (2/9)/3 = 2/27
    r = np.array([0.1, -0.1, 2 / 9])
    assert m["total_return"] == pytest.approx(0.21)  # 121 / 100 - 1
    assert m["cagr"] == pytest.approx(0.21)  # one year elapsed
    assert m["max_drawdown"] == pytest.approx(0.1)  # peak 110, trough 99: 11 / 110
    assert m["calmar"] == pytest.approx(2.1)  # 0.21 / 0.1
    # sample std: deviations (0.1 - 2/27, -0.1 - 2/27, 2/9 - 2/27), squared, summed, / 2
    std = math.sqrt(((0.1 - 2 / 27) ** 2 + (-0.1 - 2 / 27) ** 2 + (2 / 9 - 2 / 27) ** 2) / 2)
    assert std == pytest.approx(r.std(ddof=1))
    assert m["annual_volatility"] == pytest.approx(std * math.sqrt(3))
    assert m["sharpe"] == pytest.approx(2 / 27 / std * math.sqrt(3))
    # downside deviation: sqrt(mean([0, 0.01, 0])) = sqrt(0.01 / 3)
    assert m["sortino"] == pytest.approx(2 / 27 / math.sqrt(0.01 / 3) * math.sqrt(3))
    # under water from the peak at bar 1 until the new high at bar 3: 2 bars = 2 * 365 / 3 days
    assert m["max_drawdown_duration"] == 2
    assert m["max_drawdown_duration_days"] == pytest.approx(2 * 365 / 3)
    assert (m["n_bars"], m["final_equity"], m["initial_equity"]) == (3, 121.0, 100.0)
    assert (m["start"], m["end"]) == ("2023-01-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00")


def test_cagr_is_on_calendar_time_so_gaps_do_not_inflate_it():
    """Two hourly curves with the same 10 returns; the second has a 30-day exchange halt in the middle. Counting
    bars would call both 10 hours long; on the calendar the second spans 30 days + 10 hours."""
    values = [100.0 * 1.001 ** k for k in range(11)]
    plain = _hourly(values)
    halted = pd.Series(values, index=plain.index.where(plain.index < plain.index[5], plain.index + pd.Timedelta(days=30)))
    growth = values[-1] / values[0]
    a = compute_metrics(plain, periods_per_year=8760)
    b = compute_metrics(halted, periods_per_year=8760)
    assert a["cagr"] == pytest.approx(growth ** (8760 / 10) - 1, rel=1e-9)
    assert b["cagr"] == pytest.approx(growth ** (365 * 24 / (30 * 24 + 10)) - 1, rel=1e-9)
    assert b["cagr"] < a["cagr"] / 100
    # per-bar statistics stay per bar: the same returns give the same Sharpe
    assert a["sharpe"] == b["sharpe"] and a["n_bars"] == b["n_bars"] == 10
    assert b["turnover_annual"] == 0.0


def test_periods_per_year_inferred_from_index():
    assert compute_metrics(_hourly([100, 101, 102]))["periods_per_year"] == pytest.approx(8760)
    ms = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC").as_unit("ms").asi8
    assert compute_metrics(pd.Series([1.0, 2.0, 3.0], index=ms))["periods_per_year"] == pytest.approx(365)


def test_drawdown_series_and_unrecovered_duration():
    eq = _hourly([100, 120, 90, 100])
    assert drawdown_series(eq).to_numpy() == pytest.approx([0, 0, 0.25, 1 - 100 / 120])
    m = compute_metrics(eq)
    assert m["max_drawdown"] == pytest.approx(0.25)
    assert m["max_drawdown_duration"] == 2  # from the peak at bar 1 to the last bar, never recovered


def _longest_underwater(values: np.ndarray) -> int:
    """Bars from a peak to the first bar back at or above it (or to the end), the longest such spell."""
    longest, peak, peak_at = 0, values[0], 0
    for i, v in enumerate(values):
        if v >= peak:
            longest = max(longest, i - peak_at)
            peak, peak_at = v, i
    return max(longest, len(values) - 1 - peak_at)


def test_random_walk_matches_independent_reference():
    rng = np.random.default_rng(7)
    eq = pd.Series(1000 * np.exp(np.cumsum(rng.normal(0.0002, 0.01, 3000))),
                   index=pd.date_range("2022-01-01", periods=3000, freq="h", tz="UTC"))
    ppy = 8760.0
    m = compute_metrics(eq, periods_per_year=ppy)
    r = eq.pct_change().dropna()
    dd = 1 - eq / eq.cummax()
    years = (len(eq) - 1) / ppy  # gap-free hourly bars: calendar years = bars / 8760
    cagr = (eq.iloc[-1] / eq.iloc[0]) ** (1 / years) - 1
    expected = {
        "total_return": eq.iloc[-1] / eq.iloc[0] - 1,
        "cagr": cagr,
        "annual_volatility": r.std() * math.sqrt(ppy),
        "sharpe": r.mean() / r.std() * math.sqrt(ppy),
        "sortino": r.mean() / math.sqrt((r.clip(upper=0) ** 2).mean()) * math.sqrt(ppy),
        "max_drawdown": dd.max(),
        "calmar": cagr / dd.max(),
    }
    for key, value in expected.items():
        assert m[key] == pytest.approx(value, rel=1e-9), key
    longest = _longest_underwater(eq.to_numpy())
    assert longest > 10
    assert m["max_drawdown_duration"] == longest
    assert m["max_drawdown_duration_days"] == pytest.approx(longest / 24)


def test_round_trips_hand_computed():
    trips = round_trips(FILLS)
    assert list(trips.columns) == ["entry_time", "exit_time", "entry_price", "exit_price", "quantity", "fees",
                                   "pnl", "return", "n_fills"]
    assert len(trips) == 2
    t0 = pd.Timestamp("2024-01-01", tz="UTC")
    first, second = trips.iloc[0], trips.iloc[1]
    assert (first["entry_time"], first["exit_time"]) == (t0 + pd.Timedelta(hours=1), t0 + pd.Timedelta(hours=3))
    assert first["entry_price"] == pytest.approx(100)
    assert first["exit_price"] == pytest.approx(115)
    assert first["quantity"] == pytest.approx(2)
    assert first["fees"] == pytest.approx(0.43)
    assert first["pnl"] == pytest.approx(29.57)
    assert first["return"] == pytest.approx(0.14785)
    assert first["n_fills"] == 3
    assert second["entry_price"] == pytest.approx(95)
    assert second["exit_price"] == pytest.approx(80)
    assert second["pnl"] == pytest.approx(-30.35)
    assert second["return"] == pytest.approx(-30.35 / 190)


def test_trade_statistics_from_fills():
    eq = _hourly([1000.0, 1010, 1020, 1005, 1000, 990, 980, 985])
    exposure = np.array([0, 0.2, 0.1, 0.0, 0.1, 0.19, 0.0, 0.05])
    m = compute_metrics(eq, FILLS, exposure)
    assert (m["n_trades"], m["n_round_trips"]) == (7, 2)
    assert m["win_rate"] == pytest.approx(0.5)
    assert m["profit_factor"] == pytest.approx(29.57 / 30.35)
    assert m["avg_win"] == pytest.approx(0.14785)
    assert m["avg_loss"] == pytest.approx(-30.35 / 190)
    assert m["fees_paid"] == pytest.approx(0.83)
    traded = 200 + 110 + 120 + 100 + 90 + 160 + 50
    assert m["turnover"] == pytest.approx(traded / eq.mean())
    assert m["turnover_annual"] == pytest.approx(traded / eq.mean() / (7 / 8760))
    assert m["exposure"] == pytest.approx(exposure.mean())


def test_flat_equity_ratios_are_zero_not_nan():
    m = compute_metrics(_hourly([100.0] * 6))
    for key in ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown"):
        assert m[key] == 0.0, key
    assert m["max_drawdown_duration"] == 0
    assert (m["n_trades"], m["profit_factor"], m["win_rate"], m["avg_win"], m["avg_loss"]) == (0, None, None, None, None)
    json.dumps(m, allow_nan=False)


def test_no_losing_trades_gives_unbounded_profit_factor_as_none():
    fills = _fills([(1, "buy", 100.0, 1.0, 0.1), (2, "sell", 110.0, 1.0, 0.1)])
    m = compute_metrics(_hourly([100.0, 100, 109.8]), fills)
    assert (m["win_rate"], m["profit_factor"], m["avg_loss"]) == (1.0, None, None)
    assert m["avg_win"] == pytest.approx(9.8 / 100)
    # a steady rise has no downside: Sortino is unbounded too
    assert m["sortino"] is None


def test_equity_near_zero_and_ruin_stay_finite():
    near = compute_metrics(_hourly([100.0, 50.0, 1e-12, 1e-12, 2e-12]))
    assert near["max_drawdown"] == pytest.approx(1.0)
    assert near["total_return"] == pytest.approx(-1.0)
    ruined = compute_metrics(_hourly([100.0, 0.0, 0.0]))
    assert (ruined["cagr"], ruined["max_drawdown"], ruined["total_return"]) == (-1.0, 1.0, -1.0)
    assert ruined["calmar"] == -1.0
    for m in (near, ruined):
        json.dumps(m, allow_nan=False)
        assert all(v is None or not isinstance(v, float) or math.isfinite(v) for v in m.values())


def test_growth_too_fast_to_annualise_gives_none():
    m = compute_metrics(_hourly([100.0, 1e6]), periods_per_year=bars_per_year("1m"))
    assert m["cagr"] is None and m["calmar"] is None


@pytest.mark.parametrize(
    ("equity", "message"),
    [
        (pd.Series([1.0, 2.0, 3.0], index=pd.DatetimeIndex(["2024-01-01 02:00", "2024-01-01 01:00", "2024-01-01 03:00"],
                                                           tz="UTC")), "not strictly increasing at position 1"),
        (_hourly([100.0, -1.0]), "negative"),
        (_hourly([100.0, np.nan]), "non-finite"),
        (_hourly([0.0, 1.0]), "initial equity must be positive"),
        (_hourly([100.0]), "at least 2 points"),
    ],
)
def test_bad_equity_is_named(equity, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(equity)


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="indexed by time"):
        compute_metrics([100.0, 101.0])
    with pytest.raises(TypeError, match="timestamps"):
        compute_metrics(pd.Series([100.0, 101.0], index=[0.5, 1.5]))
    with pytest.raises(ValueError, match="missing columns"):
        round_trips(FILLS.drop(columns="fee"))
    with pytest.raises(ValueError, match="'buy' or 'sell'"):
        round_trips(FILLS.assign(side="long"))
    with pytest.raises(ValueError, match="cannot go short"):
        round_trips(_fills([(1, "buy", 100.0, 1.0, 0.0), (2, "sell", 100.0, 1.5, 0.0)]))
    with pytest.raises(ValueError, match="not sorted by timestamp at row 1"):
        round_trips(FILLS.iloc[[1, 0]])
    with pytest.raises(ValueError, match="exposure must be 1-D"):
        compute_metrics(_hourly([100.0, 101.0, 102.0]), exposure=np.zeros(5))


def test_round_trips_of_nothing_and_float_dust():
    assert round_trips(None).empty
    dust = _fills([(1, "buy", 100.0, 0.3, 0.0), (2, "buy", 100.0, 0.6, 0.0), (3, "sell", 100.0, 0.9, 0.0)])
    assert 0.3 + 0.6 != 0.9  # the float sum leaves dust: the trip must still close
    assert len(round_trips(dust)) == 1


def test_to_jsonable_and_metrics_json(tmp_path):
    raw = {"a": np.float64("nan"), "b": np.int64(3), "c": [np.inf, 1.5], "d": pd.Timestamp("2024-01-01", tz="UTC"),
           "e": (np.bool_(True), None), "f": pd.NaT}
    assert to_jsonable(raw) == {"a": None, "b": 3, "c": [None, 1.5], "d": "2024-01-01T00:00:00+00:00",
                                "e": [True, None], "f": None}
    with pytest.raises(TypeError, match="JSON-safe"):
        to_jsonable({"x": object()})
    agent = compute_metrics(_hourly([100.0, 110, 99, 121]))
    hold = compute_metrics(_hourly([100.0, 100, 100, 100]))
    path = write_metrics_json(tmp_path / "metrics.json", agent, {"buy_and_hold": hold})
    loaded = json.loads(path.read_text())
    assert loaded["agent"] == agent
    assert loaded["baselines"]["buy_and_hold"]["sharpe"] == 0.0
