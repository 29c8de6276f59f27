"""Backtest results: metrics and round trips from an equity curve and fills, over-fitting
statistics (deflated Sharpe, PBO), and the HTML report.

Pure functions of arrays/DataFrames (no env import); ``spotgym backtest`` feeds them the equity
curves and fills of the agent and the baselines.
"""

from spotgym.backtest.metrics import (
    ROUND_TRIP_COLUMNS,
    TRADE_COLUMNS,
    bars_per_year,
    compute_metrics,
    drawdown_series,
    round_trips,
    to_jsonable,
    utc_index,
    validate_equity,
    validate_trades,
    write_metrics_json,
)
from spotgym.backtest.report import write_report
from spotgym.backtest.stats import (
    DeflatedSharpeResult,
    PBOResult,
    SharpeStats,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratios,
    sharpe_stats,
)

__all__ = [
    "DeflatedSharpeResult",
    "PBOResult",
    "SharpeStats",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "sharpe_ratios",
    "sharpe_stats",
    "ROUND_TRIP_COLUMNS",
    "TRADE_COLUMNS",
    "bars_per_year",
    "compute_metrics",
    "drawdown_series",
    "round_trips",
    "to_jsonable",
    "utc_index",
    "validate_equity",
    "validate_trades",
    "write_metrics_json",
    "write_report",
]
