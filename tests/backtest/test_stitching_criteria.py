"""Walk-forward stitching and the success criteria, by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from spotgym.backtest import Criteria, compute_metrics, format_criteria, stitch_equity, stitch_runs, success_criteria

TIMES = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC")


def series(values, start):
    return pd.Series(values, index=TIMES[start:start + len(values)], dtype=float)


def test_stitch_equity_rescales_each_fold_to_start_where_the_previous_ended():
    a = series([100.0, 110.0, 121.0], 0)
    b = series([200.0, 180.0, 198.0], 4)  # a gap of one bar between the blocks, as between test blocks
    stitched, scales = stitch_equity([a, b])
    # by hand: b is scaled by 121 / 200 = 0.605 and its first point (== 121 after scaling) dropped
    assert scales == [1.0, pytest.approx(0.605)]
    np.testing.assert_allclose(stitched.to_numpy(), [100.0, 110.0, 121.0, 108.9, 119.79])
    assert list(stitched.index) == [TIMES[0], TIMES[1], TIMES[2], TIMES[5], TIMES[6]]
    # the stitched returns are exactly the folds' returns one after another
    returns = stitched.pct_change().dropna().to_numpy()
    np.testing.assert_allclose(returns, [0.1, 0.1, -0.1, 0.1])
    with pytest.raises(ValueError, match="overlap"):
        stitch_equity([a, series([1.0, 2.0], 1)])


def rollout(equity, trades, exposure):
    columns = ["timestamp", "side", "price", "quantity", "notional", "fee"]
    return SimpleNamespace(equity=equity, trades=pd.DataFrame(trades, columns=columns),
                           exposure=pd.Series(exposure, index=equity.index))


def test_stitch_runs_sells_a_position_left_open_at_a_fold_end_paying_the_fee():
    # fold 0 buys 1 unit at 100 (fee 0.1) and still holds it at its last close, 110: equity 1009.9
    f0 = rollout(series([1000.0, 999.9, 1009.9], 0), [(TIMES[1], "buy", 100.0, 1.0, 100.0, 0.1)], [0, 0.1, 0.109])
    # fold 1 starts flat with 500, buys 2 units at 50 and sells them at 55
    f1 = rollout(series([500.0, 499.9, 509.8], 4),
                 [(TIMES[5], "buy", 50.0, 2.0, 100.0, 0.1), (TIMES[6], "sell", 55.0, 2.0, 110.0, 0.11)],
                 [0, 0.2, 0])
    run = stitch_runs([f0, f1], close_prices=[110.0, 56.0], fee=0.001)
    # by hand: the sale at fold 0's last close (110) pays 0.001 * 110 = 0.11; fold 0 ends at 1009.9 - 0.11
    end0 = 1009.9 - 0.11
    scale = end0 / 500.0
    assert run["scales"] == [1.0, pytest.approx(scale)]
    np.testing.assert_allclose(run["equity"].to_numpy(), [1000.0, 999.9, end0, 499.9 * scale, 509.8 * scale])
    trades = run["trades"]
    assert list(trades["side"]) == ["buy", "sell", "buy", "sell"]
    closing = trades.iloc[1]
    assert (closing["timestamp"], closing["price"], closing["quantity"]) == (TIMES[2], 110.0, 1.0)
    assert closing["fee"] == pytest.approx(0.11)
    assert run["closes"] == [{"fold": 0, "timestamp": TIMES[2], "side": "sell", "price": 110.0, "quantity": 1.0,
                              "notional": 110.0, "fee": pytest.approx(0.11)}]
    np.testing.assert_allclose(trades["quantity"].iloc[2:], [2.0 * scale, 2.0 * scale])
    np.testing.assert_allclose(trades["fee"].iloc[2:], [0.1 * scale, 0.11 * scale])
    assert list(run["fold"]) == [0, 0, 0, 1, 1]
    assert len(run["exposure"]) == len(run["equity"]) == 5
    metrics = compute_metrics(run["equity"], trades, run["exposure"])
    assert metrics["n_round_trips"] == 2  # the trips never span the fold boundary
    assert metrics["fees_paid"] == pytest.approx(0.1 + 0.11 + 0.21 * scale)
    # the fills reconcile with fold 0's curve: 1000 - 100.1 (buy) + 110 - 0.11 (sale) = its last point
    assert 1000.0 - 100.1 + 110.0 - 0.11 == pytest.approx(run["equity"].iloc[2])
    # fee 0 keeps the old zero-cost close; the last fold's open position is never closed
    free = stitch_runs([f0, f1], close_prices=[110.0, 56.0])
    assert free["equity"].iloc[2] == 1009.9 and free["closes"][0]["fee"] == 0.0
    assert stitch_runs([f0], close_prices=[110.0], fee=0.001)["closes"] == []  # the last fold stays open


def test_success_criteria_are_measured_not_assumed():
    hold = {"sharpe": 1.0}
    good = success_criteria({"cagr": 3.2, "max_drawdown": 0.1, "sharpe": 1.5}, hold)
    assert [c["passed"] for c in good] == [True, True, True]
    bad = success_criteria({"cagr": 2.99, "max_drawdown": 0.15, "sharpe": 1.0}, hold)
    assert [c["passed"] for c in bad] == [False, False, False]  # 15 % is not < 15 %; a tie does not beat
    undefined = success_criteria({"cagr": None, "max_drawdown": 0.01, "sharpe": None}, hold)
    assert [c["passed"] for c in undefined] == [False, True, False]
    # the criteria are configuration: another target, and a criterion switched off
    mine = Criteria(min_annual_return=0.2, max_drawdown=None, beat_buy_and_hold=True)
    results = success_criteria({"cagr": 0.25, "max_drawdown": 0.9, "sharpe": 0.5}, hold, mine)
    assert [(c["name"], c["passed"]) for c in results] == [("annualised return >= 20%", True),
                                                          ("beats buy-and-hold risk-adjusted (Sharpe)", False)]
    with pytest.raises(ValueError, match="Criteria.max_drawdown"):
        Criteria(max_drawdown=1.5)
    with pytest.raises(ValueError, match=r"unknown criteria \['min_return'\]"):
        Criteria.from_mapping({"min_return": 1.0})
    text = format_criteria(good + bad)
    assert "PASS  annualised return >= 300%" in text and "measured: 320.0%" in text
    assert "FAIL  max drawdown < 15%" in text and "agent 1.00 vs buy-and-hold 1.00" in text
