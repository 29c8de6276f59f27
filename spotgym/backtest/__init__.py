"""Backtest results: metrics and round trips from an equity curve and fills, and the HTML report.

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

__all__ = [
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
