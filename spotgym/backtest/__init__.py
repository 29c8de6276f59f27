"""Backtest: the engine that runs an actor through the env, metrics and round trips, over-fitting statistics
(deflated Sharpe, PBO), walk-forward stitching, success criteria, and the HTML reports. No workflow and no
training here: ``spotgym.workflows`` composes these.
"""

from spotgym.backtest.criteria import Criteria, format_criteria, success_criteria
from spotgym.backtest.engine import Rollout, run_baselines, run_policy
from spotgym.backtest.metrics import (
    ROUND_TRIP_COLUMNS,
    TRADE_COLUMNS,
    bars_per_year,
    compute_metrics,
    drawdown,
    drawdown_series,
    round_trips,
    simple_returns,
    to_jsonable,
    utc_index,
    validate_equity,
    validate_trades,
    write_metrics_json,
)
from spotgym.backtest.overfitting import dsr_stats, format_overfitting, overfitting_stats, pbo_splits, pbo_stats
from spotgym.backtest.report import decisions_section, summary_table, walkforward_section, write_report
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
from spotgym.backtest.stitching import stitch_equity, stitch_runs

__all__ = [
    "ROUND_TRIP_COLUMNS",
    "TRADE_COLUMNS",
    "Criteria",
    "DeflatedSharpeResult",
    "PBOResult",
    "Rollout",
    "SharpeStats",
    "bars_per_year",
    "compute_metrics",
    "decisions_section",
    "deflated_sharpe_ratio",
    "drawdown",
    "drawdown_series",
    "dsr_stats",
    "expected_max_sharpe",
    "format_criteria",
    "format_overfitting",
    "overfitting_stats",
    "pbo_splits",
    "pbo_stats",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "round_trips",
    "run_baselines",
    "run_policy",
    "sharpe_ratios",
    "sharpe_stats",
    "simple_returns",
    "stitch_equity",
    "stitch_runs",
    "success_criteria",
    "summary_table",
    "to_jsonable",
    "utc_index",
    "validate_equity",
    "validate_trades",
    "walkforward_section",
    "write_metrics_json",
    "write_report",
]
