"""One self-contained HTML backtest report: what the agent did, and whether it beat holding.

The page opens offline (plotly.js is inlined once, no CDN) and holds, top to bottom: a verdict
banner (agent vs buy-and-hold on return and Sharpe), the metrics table agent vs baselines,
candlesticks with every fill marked at its real time and price, the equity curves, the drawdowns
(those three share the time axis) and the distribution of round-trip returns.

Long runs stay usable: above ``max_candles`` bars the candles are resampled to the smallest
coarser timeframe that fits (OHLC aggregation), equity lines keep the last point of each such
bucket and drawdown lines the deepest one, each at its real timestamp; trade markers are never
thinned. Plotly gets naive UTC times because plotly.js ignores timezone offsets.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from spotgym.backtest.metrics import drawdown_series, round_trips, utc_index, validate_equity, validate_trades
from spotgym.backtest.overfitting import format_overfitting
from spotgym.core import num, pct

__all__ = ["DISPLAY_RULES", "REPORT_CSS", "decisions_section", "display_rule", "main_figure", "metrics_table", "plot_times",
           "summary_table", "trip_figure", "validate_bars", "verdict_banner", "walkforward_section", "write_report"]

# candidate display timeframes for downsampling, finest first
DISPLAY_RULES = ("5min", "15min", "30min", "1h", "2h", "4h", "6h", "12h", "1D", "2D", "3D", "7D", "14D", "28D")
_BUY, _SELL, _AGENT, _HOLD = "#16a34a", "#dc2626", "#1d4ed8", "#111827"
_BASELINE_COLORS = ("#f59e0b", "#8b5cf6", "#0891b2", "#db2777", "#65a30d", "#78716c")
# metrics table rows: key, label, format (pct: percent, spct: signed percent, num, int, days, money)
_ROWS = (
    ("total_return", "Total return", "spct"),
    ("cagr", "CAGR", "spct"),
    ("annual_volatility", "Annual volatility", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("calmar", "Calmar", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_duration_days", "Longest drawdown (days)", "days"),
    ("n_trades", "Fills", "int"),
    ("n_round_trips", "Round trips", "int"),
    ("win_rate", "Win rate", "pct"),
    ("profit_factor", "Profit factor", "num"),
    ("avg_win", "Avg winning trip", "spct"),
    ("avg_loss", "Avg losing trip", "spct"),
    ("exposure", "Mean exposure", "pct"),
    ("turnover_annual", "Turnover / year (x equity)", "num"),
    ("fees_paid", "Fees paid", "money"),
    ("final_equity", "Final equity", "money"),
)
BASE_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #111827; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
.sub { color: #4b5563; font-size: 13px; margin-bottom: 14px; }
"""
REPORT_CSS = BASE_CSS + """
.verdict { padding: 10px 14px; border-radius: 6px; margin-bottom: 14px; font-size: 15px; }
.verdict.good { background: #dcfce7; border: 1px solid #16a34a; }
.verdict.bad { background: #fee2e2; border: 1px solid #dc2626; }
.verdict.mixed { background: #fef9c3; border: 1px solid #ca8a04; }
table.metrics { border-collapse: collapse; font-size: 13px; margin-bottom: 18px; }
table.metrics th, table.metrics td { padding: 4px 12px; border-bottom: 1px solid #e5e7eb; text-align: right; }
table.metrics th:first-child, table.metrics td:first-child { text-align: left; }
table.metrics thead th { border-bottom: 2px solid #9ca3af; }
table.metrics td.agent { font-weight: 600; }
td.beat { background: #dcfce7; } td.lost { background: #fee2e2; }
"""


def plot_times(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Naive UTC times for plotly (which would drop a timezone offset rather than apply it)."""
    return index.tz_convert("UTC").tz_localize(None)


def validate_bars(bars: pd.DataFrame) -> pd.DataFrame:
    """OHLC float columns on a strictly increasing UTC index, or a ValueError naming the problem."""
    if not isinstance(bars, pd.DataFrame):
        raise TypeError(f"bars must be a pandas DataFrame, got {type(bars).__name__}")
    missing = [c for c in ("open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"bars is missing columns {missing}")
    if len(bars) == 0:
        raise ValueError("bars is empty")
    out = bars[["open", "high", "low", "close"]].astype(np.float64)
    out.index = utc_index(bars.index, "bars index")
    steps = np.diff(out.index.asi8)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise ValueError(f"bars index is not strictly increasing at position {i}: {out.index[i - 1]} then {out.index[i]}")
    return out


def display_rule(index: pd.DatetimeIndex, max_candles: int) -> str | None:
    """The finest rule in :data:`DISPLAY_RULES` that shows ``index`` in at most ``max_candles`` candles."""
    if len(index) <= max_candles:
        return None
    bar = (index[1:] - index[:-1]).median()
    span = index[-1] - index[0]
    for rule in DISPLAY_RULES:
        step = pd.Timedelta(rule)
        if step > bar and span / step < max_candles:
            return rule
    return DISPLAY_RULES[-1]


def _thin(series: pd.Series, rule: str | None, keep: str) -> pd.Series:
    """One real point per ``rule`` bucket: the last (``keep="last"``) or the largest (``"max"``)."""
    if rule is None:
        return series
    codes = series.index.floor(rule).asi8
    if keep == "last":
        positions = np.flatnonzero(np.r_[codes[1:] != codes[:-1], True])
    else:
        positions = pd.Series(series.to_numpy()).groupby(codes).idxmax().to_numpy()
    return series.iloc[np.union1d(positions, [0])]


def _fmt(value: Any, kind: str) -> str:
    """Table text for one metric value; None (undefined or unbounded) shows as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "pct":
        return pct(value, 2)
    if kind == "spct":
        return pct(value, 2, signed=True)
    if kind == "int":
        return f"{int(value):,}"
    if kind == "days":
        return f"{value:,.1f}"
    if kind == "money":
        return f"{value:,.2f}"
    return num(value)


def _beats(agent: Mapping[str, Any], hold: Mapping[str, Any], key: str) -> bool | None:
    """Whether the agent's ``key`` is strictly higher than buy-and-hold's; None when either is missing."""
    a, b = agent.get(key), hold.get(key)
    return None if a is None or b is None else a > b


def verdict_banner(metrics: Mapping[str, Any]) -> str:
    """The banner: did the agent beat buy-and-hold on total return and on Sharpe?"""
    agent, hold = metrics.get("agent", {}), metrics.get("baselines", {}).get("buy_and_hold")
    if hold is None:
        return '<div class="verdict mixed">No buy-and-hold baseline in the metrics: nothing to compare against.</div>'
    parts, wins = [], []
    for key, label, kind in (("total_return", "return", "spct"), ("sharpe", "Sharpe", "num")):
        beat = _beats(agent, hold, key)
        wins.append(beat)
        word = {True: "beat", False: "did not beat", None: "cannot be compared with"}[beat]
        parts.append(f"<b>{word}</b> buy-and-hold on {label} "
                     f"({_fmt(agent.get(key), kind)} vs {_fmt(hold.get(key), kind)})")
    css = "good" if all(w is True for w in wins) else "bad" if all(w is False for w in wins) else "mixed"
    return f'<div class="verdict {css}">The agent {parts[0]} and {parts[1]}.</div>'


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """HTML table, one column per strategy; the agent's return and Sharpe cells coloured vs buy-and-hold."""
    agent = metrics.get("agent", {})
    baselines = dict(metrics.get("baselines", {}))
    hold = baselines.get("buy_and_hold")
    columns = {"agent": agent, **baselines}
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = []
    for key, label, kind in _ROWS:
        cells = [f"<td>{html.escape(label)}</td>"]
        for name, values in columns.items():
            value = values.get(key)
            text = _fmt(value, kind)
            if key == "profit_factor" and value is None and values.get("n_round_trips") and values.get("win_rate") == 1:
                text = "∞ (no losses)"
            css = ["agent"] if name == "agent" else []
            if name == "agent" and hold is not None and key in ("total_return", "sharpe"):
                beat = _beats(agent, hold, key)
                css += [] if beat is None else ["beat" if beat else "lost"]
            cells.append(f'<td class="{" ".join(css)}">{html.escape(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="metrics"><thead><tr><th>metric</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _marker_trace(fills: pd.DataFrame, side: str) -> go.Scatter:
    """Every fill of one side at its real time and price, with price/qty/notional/fee on hover."""
    rows = fills[fills["side"] == side]
    buy = side == "buy"
    size = 11 if len(fills) <= 300 else 8 if len(fills) <= 2000 else 6  # thousands of fills must not hide the candles
    return go.Scatter(
        x=plot_times(pd.DatetimeIndex(rows["timestamp"])), y=rows["price"].to_numpy(), mode="markers",
        name=f"{'Buy ▲' if buy else 'Sell ▼'} ({len(rows)})", legendgroup="fills",
        marker={"symbol": "triangle-up" if buy else "triangle-down", "size": size, "color": _BUY if buy else _SELL,
                "line": {"width": 1, "color": "#ffffff"}},
        customdata=rows[["quantity", "notional", "fee"]].to_numpy(),
        hovertemplate=(f"<b>{side}</b> %{{x|%Y-%m-%d %H:%M}}<br>price %{{y:,.4f}}<br>qty %{{customdata[0]:,.6f}}"
                       "<br>notional %{customdata[1]:,.2f}<br>fee %{customdata[2]:,.4f}<extra></extra>"),
    )


def main_figure(candles: pd.DataFrame, curves: dict[str, pd.Series], fills: pd.DataFrame,
                 rule: str | None, n_bars: int) -> go.Figure:
    """Candles + fills, equity curves and drawdowns on one shared time axis."""
    candle_title = "Price and fills" if rule is None else f"Price ({rule} candles from {n_bars:,} bars) and fills"
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.5, 0.3, 0.2],
                        subplot_titles=(candle_title, "Equity", "Drawdown"))
    fig.add_trace(go.Candlestick(
        x=plot_times(candles.index), open=candles["open"], high=candles["high"], low=candles["low"],
        close=candles["close"], name="price", showlegend=False,
        increasing={"line": {"color": "#26a69a"}}, decreasing={"line": {"color": "#ef5350"}},
    ), row=1, col=1)
    for side in ("buy", "sell"):
        fig.add_trace(_marker_trace(fills, side), row=1, col=1)

    names = list(curves)
    others = iter(_BASELINE_COLORS * (len(names) // len(_BASELINE_COLORS) + 1))
    colors = {name: _AGENT if i == 0 else _HOLD if name == "buy_and_hold" else next(others)
              for i, name in enumerate(names)}
    for i, name in enumerate(names):
        line = {"color": colors[name], "width": 2.5 if i == 0 else 1.5 if name == "buy_and_hold" else 1}
        if name == "buy_and_hold":
            line["dash"] = "dash"
        equity = _thin(curves[name], rule, "last")
        fig.add_trace(go.Scatter(
            x=plot_times(equity.index), y=equity.to_numpy(), name=name, legendgroup=name, line=line,
            opacity=1.0 if i == 0 or name == "buy_and_hold" else 0.75,
            hovertemplate=f"{html.escape(name)} %{{y:,.2f}}<extra></extra>",
        ), row=2, col=1)
        if i == 0 or name == "buy_and_hold":
            dd = _thin(drawdown_series(curves[name]), rule, "max")
            fig.add_trace(go.Scatter(
                x=plot_times(dd.index), y=-dd.to_numpy(), name=name, legendgroup=name, showlegend=False,
                line={**line, "width": 1}, fill="tozeroy" if i == 0 else None,
                hovertemplate=f"{html.escape(name)} drawdown %{{y:.2%}}<extra></extra>",
            ), row=3, col=1)

    values = np.concatenate([c.to_numpy() for c in curves.values()])
    positive = values[values > 0]
    if len(positive) and positive.max() / positive.min() > 10:
        fig.update_yaxes(type="log", dtick=1, row=2, col=1)  # one tick per decade, no "2 5" minor labels
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="equity", row=2, col=1)
    fig.update_yaxes(title_text="below peak", tickformat=".0%", row=3, col=1)
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_xaxes(title_text="time (UTC)", row=3, col=1)
    fig.update_layout(height=1100, template="plotly_white", hovermode="x unified", margin={"t": 40, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.03, "x": 0})
    return fig


def trip_figure(fills: pd.DataFrame) -> go.Figure:
    """Histogram of the agent's round-trip returns, winners green and losers red."""
    trips = round_trips(fills)
    fig = go.Figure()
    returns = trips["return"].to_numpy()
    if len(trips):
        width = max(float(np.ptp(returns)) / 40, 1e-4)
        start = math.floor(float(returns.min()) / width) * width  # 0 falls on a bin edge
        bins = {"start": start, "end": float(returns.max()) + width, "size": width}
        for label, mask, color in (("winners", returns > 0, _BUY), ("losers / flat", returns <= 0, _SELL)):
            fig.add_trace(go.Histogram(x=returns[mask], xbins=bins, name=f"{label} ({int(mask.sum())})",
                                       marker_color=color, opacity=0.8,
                                       hovertemplate="return %{x:.2%}<br>%{y} trips<extra></extra>"))
        fig.add_vline(x=0, line={"color": "#6b7280", "dash": "dot"})
        title = (f"Round-trip returns after fees ({len(trips)} trips, "
                 f"win rate {(returns > 0).mean():.1%}, median {np.median(returns):+.2%})")
    else:
        fig.add_annotation(text="no closed round trips", showarrow=False, font={"size": 16})
        title = "Round-trip returns after fees (none closed)"
    fig.update_layout(title=title, barmode="overlay", height=380, template="plotly_white",
                      xaxis={"title": "return per round trip", "tickformat": ".1%"}, yaxis={"title": "trips"},
                      margin={"t": 60, "b": 40})
    return fig


def write_report(
    path: str | Path,
    *,
    bars: pd.DataFrame,
    equity: Mapping[str, pd.Series],
    trades: pd.DataFrame | None,
    metrics: Mapping[str, Any],
    title: str = "spotgym backtest",
    max_candles: int = 5000,
    sections: tuple[str, ...] = (),
) -> Path:
    """Write the self-contained HTML report and return its path.

    ``bars``: open/high/low/close indexed by time. ``equity``: name -> equity Series, the agent
    first and ``"buy_and_hold"`` among the baselines. ``trades``: the agent's fills (see
    :func:`spotgym.backtest.metrics.validate_trades`). ``metrics``: the ``metrics.json`` document,
    ``{"agent": {...}, "baselines": {name: {...}}}``. ``sections``: extra HTML blocks shown above the
    verdict banner (e.g. ``walkforward_section``).
    """
    if not equity:
        raise ValueError("equity is empty: pass at least the agent's curve")
    if max_candles < 2:
        raise ValueError(f"max_candles must be >= 2, got {max_candles}")
    if "agent" not in metrics:
        raise ValueError(f"metrics must be the metrics.json document with an 'agent' key, got keys {list(metrics)}")
    ohlc = validate_bars(bars)
    curves = {str(name): validate_equity(series) for name, series in equity.items()}
    fills = validate_trades(trades)
    rule = display_rule(ohlc.index, max_candles)
    candles = ohlc if rule is None else ohlc.groupby(ohlc.index.floor(rule)).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last"})

    main = main_figure(candles, curves, fills, rule, len(ohlc))
    trips = trip_figure(fills)
    config = {"displaylogo": False, "scrollZoom": True, "responsive": True}
    n_buys = int((fills["side"] == "buy").sum())
    agent = metrics["agent"]
    period = f"{ohlc.index[0]:%Y-%m-%d %H:%M} → {ohlc.index[-1]:%Y-%m-%d %H:%M} UTC"
    summary = (f"{period} · {len(ohlc):,} bars · agent <b>{html.escape(next(iter(curves)))}</b>: "
               f"{len(fills):,} fills ({n_buys:,} buys ▲, {len(fills) - n_buys:,} sells ▼) · "
               f"final equity {_fmt(agent.get('final_equity'), 'money')}")
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="sub">{summary}</div>',
        *sections,
        verdict_banner(metrics),
        metrics_table(metrics),
        main.to_html(full_html=False, include_plotlyjs=True, config=config, default_width="100%"),
        trips.to_html(full_html=False, include_plotlyjs=False, config=config, default_width="100%"),
        "</body></html>",
    ])
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def summary_table(agent_name: str, agent: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> str:
    """The console table of agent vs baselines: return, CAGR, Sharpe, max drawdown, fills."""
    rows = [f"{'':22s} {'return':>9s} {'CAGR':>9s} {'Sharpe':>7s} {'max DD':>8s} {'trades':>7s}"]
    for name, m in [(agent_name + " (agent)", agent), *baselines.items()]:
        rows.append(f"{name:22s} {pct(m['total_return'], signed=True):>9s} {pct(m['cagr'], signed=True):>9s} "
                    f"{num(m['sharpe']):>7s} {pct(m['max_drawdown']):>8s} {m['n_trades']:>7d}")
    return "\n".join(rows)


def walkforward_section(doc: Mapping[str, Any]) -> str:
    """The walk-forward block of a report: success criteria, selection luck (DSR, PBO), per-fold table."""
    esc = html.escape
    rows = "".join(
        f'<tr><td style="font-weight:600;color:{_BUY if c["passed"] else _SELL}">'
        f'{"PASS" if c["passed"] else "FAIL"}</td><td>{esc(c["name"])}</td><td>{esc(c["text"])}</td></tr>'
        for c in doc["criteria"])
    parts = ['<div class="walkforward">',
             "<h2 style=\"font-size:17px\">Success criteria (measured on the stitched out-of-sample curve)</h2>",
             f'<table class="metrics"><tbody>{rows or "<tr><td>none configured</td></tr>"}</tbody></table>']
    dsr, pbo = doc["deflated_sharpe"], doc["pbo"]
    text = format_overfitting(dsr, pbo).split("\n")
    parts.append("<h2 style=\"font-size:17px\">Selection luck</h2>")
    parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in text) + f"<li>{esc(dsr.get('note', ''))}</li></ul>")
    head = ("<tr><th>fold</th><th>test span</th><th>configs</th><th>agent return</th><th>agent Sharpe</th>"
            "<th>agent max DD</th><th>buy-and-hold return</th><th>buy-and-hold Sharpe</th><th>run</th></tr>")
    body = []
    for f in doc["folds"]:
        a, b = f["agent"], f["baselines"]["buy_and_hold"]
        test = f["split"]["test"]
        body.append(f"<tr><td>{f['index']}</td><td>{esc(test['first'])} → {esc(test['last'])}</td>"
                    f"<td>{f['n_configs']}</td><td>{pct(a['total_return'], 2, signed=True)}</td>"
                    f"<td>{num(a['sharpe'], 3)}</td><td>{pct(a['max_drawdown'], 2)}</td>"
                    f"<td>{pct(b['total_return'], 2, signed=True)}</td><td>{num(b['sharpe'], 3)}</td>"
                    f"<td>{esc(f['run_dir'])}</td></tr>")
    parts.append("<h2 style=\"font-size:17px\">Per fold (test blocks)</h2>")
    parts.append(f'<table class="metrics"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>')
    parts.append('<div class="sub">The folds\' test blocks follow one another without a gap; each block is rescaled '
                 "to start where the previous ended, and a position open at a block's end is sold at its last close "
                 "paying the fee.</div></div>")
    return "\n".join(parts)


def decisions_section(selection: str | None, decisions: pd.DataFrame | None) -> str:
    """What decided: the run's model selection (``selection``: one line, e.g. that nothing beat cash on
    validation) and how often each risk rule changed a decision (from ``decisions.csv``'s ``risk`` column)."""
    esc = html.escape
    parts = ['<div class="walkforward">', "<h2 style=\"font-size:17px\">Decisions</h2>", "<ul>"]
    if selection:
        parts.append(f"<li>Model selection: {esc(selection)}</li>")
    if decisions is not None and len(decisions):
        counts: dict[str, int] = {}
        for cell in decisions["risk"].fillna(""):
            for name in str(cell).split("|") if cell else ():
                counts[name] = counts.get(name, 0) + 1
        halted = int(decisions["halted"].astype(bool).sum())
        text = ", ".join(f"{name} {n:,}" for name, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        parts.append(f"<li>{len(decisions):,} decisions; the risk rules changed "
                     f"{int((decisions['risk'].fillna('') != '').sum()):,} of them"
                     + (f" ({esc(text)})" if text else "") + (f"; {halted:,} taken while halted" if halted else "")
                     + " (decisions.csv lists each)</li>")
    parts.append("</ul></div>")
    return "\n".join(parts)
