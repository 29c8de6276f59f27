"""The dashboard's Plotly figures. The Run page draws the backtest report's own figures (``spotgym.backtest.report``:
candles with every fill at its real time and price, equity vs baselines, drawdown, round-trip returns); the
Compare, Live and Study pages add theirs here."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from spotgym.backtest import compute_metrics, validate_equity, validate_trades
from spotgym.backtest import report as bt_report
from spotgym.dashboard.catalog import SplitData

__all__ = ["Curve", "compare_figure", "compare_metrics", "run_figures", "study_figure", "veto_rows"]

MAX_CANDLES = 5000
_COLORS = ("#1d4ed8", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777", "#65a30d", "#78716c")


def _utc(values: Any) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(values, utc=True))


def run_figures(split: SplitData, agent_name: str) -> tuple[go.Figure, go.Figure | None, pd.DataFrame]:
    """The report's main figure (candles + fills, equity vs buy-and-hold, drawdown) and its round-trip histogram
    (None without a closed round trip), from one backtest folder; and the validated fills (one marker each)."""
    eq = split.equity
    index = _utc(eq["timestamp"])
    curves = {agent_name: validate_equity(pd.Series(eq["equity"].to_numpy(np.float64), index=index))}
    if "buy_and_hold" in eq.columns:
        curves["buy_and_hold"] = validate_equity(pd.Series(eq["buy_and_hold"].to_numpy(np.float64), index=index))
    fills = validate_trades(split.trades)
    if split.bars is not None and len(split.bars):
        ohlc = bt_report.validate_bars(split.bars)
        n_bars = len(ohlc)
        rule = bt_report.display_rule(ohlc.index, MAX_CANDLES)
        candles = ohlc if rule is None else ohlc.groupby(ohlc.index.floor(rule)).agg(
            {"open": "first", "high": "max", "low": "min", "close": "last"})
    else:
        candles = pd.DataFrame({c: np.zeros(0) for c in ("open", "high", "low", "close")},
                               index=pd.DatetimeIndex([], tz="UTC"))
        rule, n_bars = None, 0
    main = bt_report.main_figure(candles, curves, fills, rule, n_bars)
    if not n_bars:
        main.add_annotation(text=f"no price candles: {split.bars_note or 'price data unavailable'}", showarrow=False,
                            xref="x domain", yref="y domain", x=0.5, y=0.5, font={"size": 13, "color": "#6b7280"})
    if not len(fills):
        main.add_annotation(text="no fills in this backtest: the agent held cash throughout", showarrow=False,
                            xref="x domain", yref="y domain", x=0.5, y=0.92, font={"size": 13, "color": "#6b7280"},
                            bgcolor="rgba(255,255,255,0.8)")
    main.update_layout(height=980, legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0,
                                           "traceorder": "normal"},
                       margin={"t": 60, "b": 40, "l": 70, "r": 20})
    trips = bt_report.trip_figure(fills)
    if not trips.data:  # no closed round trip: the page says so instead of drawing empty axes
        trips = None
    else:
        trips.update_layout(height=360, margin={"t": 60, "b": 50, "l": 70, "r": 20})
    return main, trips, fills


def veto_rows(decisions: pd.DataFrame | None, limit: int = 200) -> tuple[list[dict[str, Any]], dict[str, int], int]:
    """The decisions the risk rules changed (newest last, at most ``limit``), counts per rule, and their total."""
    if decisions is None or "risk" not in decisions.columns or not len(decisions):
        return [], {}, 0
    risk = decisions["risk"].astype(str).replace("nan", "")
    vetoed = decisions[risk != ""]
    counts: dict[str, int] = {}
    for cell in risk[risk != ""]:
        for name in cell.split("|"):
            counts[name] = counts.get(name, 0) + 1
    rows = vetoed.tail(limit).to_dict("records")
    return rows, dict(sorted(counts.items(), key=lambda kv: -kv[1])), len(vetoed)


# ---------------------------------------------------------------------------------------------------- compare
@dataclass
class Curve:
    """One thing compared: a backtest's agent or a live session (equity on a UTC index, its fills)."""

    label: str
    kind: str  # "run" | "live"
    equity: pd.Series
    trades: pd.DataFrame | None
    hold: pd.Series | None = None
    link: str | None = None
    exposure: pd.Series | None = None


def common_span(curves: list[Curve]) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    first = max(c.equity.index[0] for c in curves)
    last = min(c.equity.index[-1] for c in curves)
    if last <= first:
        return None
    if any(len(c.equity.loc[first:last]) < 2 for c in curves):
        return None
    return first, last


def _clip(c: Curve, span: tuple[pd.Timestamp, pd.Timestamp] | None) -> tuple[pd.Series, pd.DataFrame | None]:
    if span is None:
        return c.equity, c.trades
    eq = c.equity.loc[span[0]:span[1]]
    trades = None
    if c.trades is not None and len(c.trades):
        t = validate_trades(c.trades)
        trades = t[(t["timestamp"] >= span[0]) & (t["timestamp"] <= span[1])]
    return eq, trades


def compare_figure(curves: list[Curve], span: tuple[pd.Timestamp, pd.Timestamp] | None) -> go.Figure:
    """Every curve as its return since the common span's start (or its own start when they share no span)."""
    fig = go.Figure()
    for i, c in enumerate(curves):
        eq, _ = _clip(c, span)
        fig.add_trace(go.Scatter(x=bt_report.plot_times(eq.index), y=eq.to_numpy() / eq.iloc[0] - 1.0,
                                 name=c.label, line={"color": _COLORS[i % len(_COLORS)], "width": 2},
                                 hovertemplate=f"{c.label}: %{{y:+.2%}}<extra></extra>"))
    hold = next((c for c in curves if c.hold is not None), None)
    if hold is not None:
        h = hold.hold.loc[span[0]:span[1]] if span is not None else hold.hold
        if len(h) >= 2:
            fig.add_trace(go.Scatter(x=bt_report.plot_times(h.index), y=h.to_numpy() / h.iloc[0] - 1.0,
                                     name=f"buy-and-hold ({hold.label})",
                                     line={"color": "#111827", "width": 1.5, "dash": "dash"},
                                     hovertemplate="buy-and-hold: %{y:+.2%}<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#9ca3af", "width": 1})
    fig.update_layout(template="plotly_white", height=520, hovermode="x unified",
                      yaxis={"title": "return since start", "tickformat": ".0%"},
                      xaxis={"title": "time (UTC)"}, margin={"t": 30, "b": 50, "l": 70, "r": 20},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return fig


def compare_metrics(curves: list[Curve], span: tuple[pd.Timestamp, pd.Timestamp] | None) -> list[dict[str, Any]]:
    """Each curve's metrics over the common span (its own whole span when there is none)."""
    out = []
    for c in curves:
        eq, trades = _clip(c, span)
        exposure = None if c.exposure is None else c.exposure.reindex(eq.index).fillna(0.0).to_numpy()
        try:
            m = compute_metrics(eq, trades, exposure)
        except ValueError:  # the span cuts a position open at its start: the trip statistics are undefined
            m = compute_metrics(eq, None, exposure)
            for key in ("win_rate", "profit_factor", "n_round_trips", "avg_win", "avg_loss"):
                m[key] = None
            m["n_trades"] = 0 if trades is None else len(trades)
        m["first"], m["last"], m["bars"] = eq.index[0], eq.index[-1], len(eq)
        out.append(m)
    return out


# ---------------------------------------------------------------------------------------------------- studies
def study_figure(study, name: str) -> tuple[go.Figure | None, str | None]:
    """An ``optuna.visualization`` plot of ``study`` (``name``: e.g. ``plot_optimization_history``), or why not."""
    from spotgym.backtest import tune_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fig, reason = tune_report.study_figure(study, name)
    if fig is not None:  # the page's heading names the plot: no second title inside it
        fig.update_layout(template="plotly_white", height=440, title=None, margin={"t": 30, "b": 50, "l": 70, "r": 20})
        fig.update_yaxes(automargin=True)
        fig.update_xaxes(automargin=True)
        if name == "plot_param_importances":
            fig.update_yaxes(title=None)
    return fig, reason


def finite(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
