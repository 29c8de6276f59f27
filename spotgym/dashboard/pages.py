"""The dashboard's HTML: one layout, one function per page. Every value that comes from disk or a journal goes
through :func:`esc`; figures travel as JSON in ``<script type="application/json">`` blocks that
``/static/dashboard.js`` hands to Plotly (no inline script runs, so the page's Content-Security-Policy allows none).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import plotly.graph_objects as go

from spotgym.backtest import report as bt_report
from spotgym.core import num, pct
from spotgym.dashboard.catalog import RunSummary, Scan, SplitData
from spotgym.dashboard.live_view import DASHBOARD_COMMANDS, LiveRef

__all__ = ["esc", "layout", "login_page"]

NAV = (("runs", "/runs", "Runs"), ("studies", "/studies", "Studies"), ("live", "/live", "Live"),
       ("compare", "/compare", "Compare"))
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": True}

CSS = bt_report.REPORT_CSS + """
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font-size: 14px; background: #fff; }
header.top { display: flex; align-items: center; gap: 6px; padding: 8px 24px; background: #111827; color: #f9fafb; }
header.top a { color: #d1d5db; text-decoration: none; padding: 5px 10px; border-radius: 5px; font-size: 14px; }
header.top a:hover { color: #fff; background: #1f2937; }
header.top a.active { color: #fff; background: #374151; }
header.top .brand { font-weight: 700; color: #fff; margin-right: 14px; letter-spacing: .02em; }
header.top .who { margin-left: auto; display: flex; gap: 10px; align-items: center; color: #9ca3af; font-size: 13px; }
header.top .who form { margin: 0; }
header.top .who button { background: transparent; color: #d1d5db; border: 1px solid #4b5563; padding: 3px 10px; }
header.top .who button:hover { background: #1f2937; color: #fff; }
main { padding: 18px 24px 48px; }
h2 { font-size: 17px; margin: 26px 0 8px; }
a { color: #1d4ed8; }
code { background: #f3f4f6; padding: 1px 5px; border-radius: 4px; font-size: 12.5px; }
.sub { color: #4b5563; }
.note { color: #6b7280; font-size: 13px; }
.empty { padding: 16px 18px; border: 1px dashed #d1d5db; border-radius: 6px; color: #374151; background: #f9fafb;
         margin: 8px 0 14px; line-height: 1.5; }
.problems { padding: 8px 14px; border-left: 4px solid #ca8a04; background: #fefce8; margin: 6px 0 12px; font-size: 13px; }
.toolbar { display: flex; gap: 10px; align-items: center; margin: 10px 0; flex-wrap: wrap; }
.toolbar input[type=search] { padding: 6px 10px; width: 340px; border: 1px solid #d1d5db; border-radius: 5px;
                              font-size: 14px; }
.count { color: #6b7280; font-size: 13px; }
button, .btn { font: inherit; font-size: 13px; padding: 6px 14px; border-radius: 5px; border: 1px solid #d1d5db;
               background: #fff; color: #111827; cursor: pointer; text-decoration: none; display: inline-block; }
button:hover:not(:disabled), .btn:hover { background: #f3f4f6; }
button:disabled { opacity: .45; cursor: default; }
button.primary { background: #1d4ed8; border-color: #1d4ed8; color: #fff; }
button.primary:hover:not(:disabled) { background: #1e40af; }
button.warn { border-color: #ca8a04; color: #854d0e; background: #fefce8; }
button.danger { border-color: #dc2626; color: #fff; background: #dc2626; }
button.danger:hover:not(:disabled) { background: #b91c1c; }
.scroll { overflow-x: auto; }
table.data { border-collapse: collapse; font-size: 13px; }
table.data.wide { width: 100%; }
table.data th, table.data td { padding: 5px 8px; border-bottom: 1px solid #e5e7eb; text-align: right;
                               white-space: nowrap; }
table.data th.l, table.data td.l { text-align: left; }
table.data td.wrap { white-space: normal; max-width: 520px; overflow-wrap: anywhere; }
table.data thead th { background: #f9fafb; border-bottom: 2px solid #9ca3af; font-weight: 600; position: sticky;
                      top: 0; }
table.sortable thead th[data-sort] { cursor: pointer; user-select: none; }
table.sortable thead th[data-sort]:hover { background: #eef2ff; }
table.sortable thead th.asc::after { content: " ▲"; font-size: 10px; }
table.sortable thead th.desc::after { content: " ▼"; font-size: 10px; }
table.data tbody tr:hover td { background: #f9fafb; }
td.beat, td.beat:hover { background: #dcfce7 !important; } td.lost { background: #fee2e2 !important; }
.pos { color: #15803d; } .neg { color: #b91c1c; } .muted { color: #9ca3af; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         vertical-align: middle; background: #e5e7eb; color: #374151; }
.badge.running, .badge.ok { background: #dcfce7; color: #166534; }
.badge.stopped { background: #e5e7eb; color: #374151; }
.badge.stale, .badge.halted, .badge.warn { background: #fee2e2; color: #991b1b; }
.badge.cash { background: #fef9c3; color: #854d0e; }
.tabs { display: flex; gap: 4px; margin: 14px 0 12px; flex-wrap: wrap; align-items: center; }
.tabs .label { color: #6b7280; font-size: 13px; margin-right: 6px; }
.tabs a { padding: 5px 12px; border: 1px solid #d1d5db; border-radius: 5px; text-decoration: none; color: #111827;
          font-size: 13px; }
.tabs a.active { background: #1d4ed8; border-color: #1d4ed8; color: #fff; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin: 12px 0; }
.card { border: 1px solid #e5e7eb; border-radius: 6px; padding: 8px 12px; }
.card .k { color: #6b7280; font-size: 12px; }
.card .v { font-size: 18px; font-weight: 600; margin-top: 2px; white-space: nowrap; overflow: hidden;
           text-overflow: ellipsis; }
.card .d { color: #6b7280; font-size: 12px; margin-top: 2px; }
.card .v.time { font-size: 15px; padding-top: 3px; }
.controls { display: flex; gap: 8px; align-items: center; margin: 12px 0 4px; flex-wrap: wrap; }
.controls .status { font-size: 13px; color: #374151; margin-left: 8px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 6px 28px; }
.plot { width: 100%; min-height: 200px; }
tr.warn td { background: #fef2f2; }
details.picker { margin: 18px 0; } details.picker summary { cursor: pointer; color: #1d4ed8; }
.login { max-width: 360px; margin: 90px auto; border: 1px solid #e5e7eb; border-radius: 8px; padding: 26px 28px;
         box-shadow: 0 1px 3px rgba(0,0,0,.06); }
.login h1 { margin-bottom: 14px; }
.login label { display: block; font-size: 13px; color: #374151; margin: 12px 0 4px; }
.login input[type=text], .login input[type=password] { width: 100%; padding: 8px 10px; border: 1px solid #d1d5db;
                                                      border-radius: 5px; font-size: 14px; }
.login button { width: 100%; margin-top: 18px; padding: 9px; font-size: 14px; }
.error { color: #b91c1c; background: #fef2f2; border: 1px solid #fecaca; padding: 8px 10px; border-radius: 5px;
         font-size: 13px; margin-bottom: 6px; }
.walkforward h2 { margin-top: 22px; }
.walkforward table.metrics th, .walkforward table.metrics td { white-space: nowrap; }
.walkforward table.metrics td:nth-child(2), .walkforward table.metrics td:last-child,
.walkforward table.metrics th:nth-child(2), .walkforward table.metrics th:last-child { text-align: left; }
tr.best td { background: #dcfce7; font-weight: 600; }
.tall { max-height: 440px; overflow-y: auto; }
"""


# ------------------------------------------------------------------------------------------------------------ bits
def esc(value: Any) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _sort_value(value: Any) -> str:
    v = _finite(value)
    return "" if v is None else repr(v)


def td(text: str, value: Any = None, cls: str = "") -> str:
    """A cell; ``value``: the number it sorts by."""
    attrs = f' class="{cls}"' if cls else ""
    if value is not None:
        attrs += f' data-v="{_sort_value(value)}"'
    return f"<td{attrs}>{text}</td>"


def signed_class(value: Any) -> str:
    v = _finite(value)
    return "" if v is None or v == 0 else "pos" if v > 0 else "neg"


def plot(fig: go.Figure, div_id: str) -> str:
    """A figure's div and its JSON; ``dashboard.js`` draws it."""
    payload = fig.to_json().replace("<", "\\u003c")  # JSON strings only: nothing can end the <script> block
    return (f'<div class="plot" id="{esc(div_id)}" data-figure="{esc(div_id)}-data"></div>'
            f'<script type="application/json" id="{esc(div_id)}-data">{payload}</script>')


def data_block(block_id: str, value: Any) -> str:
    payload = json.dumps(value, default=str, allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{esc(block_id)}">{payload}</script>'


def empty(text: str) -> str:
    return f'<div class="empty">{text}</div>'


def problems(items: Iterable[str]) -> str:
    items = list(items)
    if not items:
        return ""
    return '<div class="problems">' + "<br>".join(esc(p) for p in items) + "</div>"


def layout(title: str, body: str, *, user: str | None = None, csrf: str | None = None, active: str = "",
           plotly: bool = False) -> str:
    nav = ""
    if user is not None:
        links = "".join(f'<a href="{href}"{" class=active" if key == active else ""}>{label}</a>'
                        for key, href, label in NAV)
        nav = (f'<header class="top"><a class="brand" href="/runs">spotgym</a>{links}'
               f'<div class="who">signed in as <b>{esc(user)}</b>'
               f'<form method="post" action="/logout"><input type="hidden" name="csrf_token" value="{esc(csrf)}">'
               f'<button type="submit">Log out</button></form></div></header>')
    scripts = ('<script src="/static/plotly.min.js"></script>' if plotly else "") + (
        '<script src="/static/dashboard.js"></script>' if user is not None else "")
    return ("<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, '
            f'initial-scale=1"><title>{esc(title)} · spotgym dashboard</title><link rel="icon" href="data:,">'
            + (f'<meta name="csrf-token" content="{esc(csrf)}">' if csrf else "")
            + f"<style>{CSS}</style></head><body>{nav}<main>{body}</main>{scripts}</body></html>")


# ------------------------------------------------------------------------------------------------------------ login
def login_page(*, error: str | None = None, next_url: str = "/", username: str = "", no_users: bool = False) -> str:
    body = ['<div class="login"><h1>spotgym dashboard</h1>']
    if no_users:
        body.append('<div class="error">No user exists yet. In a terminal on this machine run '
                    "<code>spotgym dashboard add-user NAME</code>, then sign in here.</div>")
    if error:
        body.append(f'<div class="error">{esc(error)}</div>')
    body.append(f'<form method="post" action="/login"><input type="hidden" name="next" value="{esc(next_url)}">'
                f'<label for="username">User name</label><input type="text" id="username" name="username" '
                f'value="{esc(username)}" autocomplete="username" autofocus required>'
                '<label for="password">Password</label><input type="password" id="password" name="password" '
                'autocomplete="current-password" required>'
                '<button type="submit" class="primary">Sign in</button></form></div>')
    return layout("Sign in", "".join(body))


def error_page(title: str, message: str, *, user: str | None, csrf: str | None) -> str:
    return layout(title, f"<h1>{esc(title)}</h1>{empty(esc(message))}", user=user, csrf=csrf)


# ------------------------------------------------------------------------------------------------------------ runs
def _created(text: str | None) -> str:
    return (text or "")[:16].replace("T", " ")


def runs_page(scan: Scan, roots: list[str], *, user: str, csrf: str) -> str:
    where = ", ".join(f"<code>{esc(r)}</code>" for r in roots) or "no folder"
    head = (f'<h1>Runs</h1><div class="sub">{len(scan.runs):,} run{"s" if len(scan.runs) != 1 else ""} under '
            f"{where}. Metrics are each run's <b>test</b>-split backtest, the agent beside buy-and-hold (green: the "
            "agent did better). Click a column to sort; tick two or more runs to compare their equity curves."
            + (f" {missing:,} of them have no test backtest yet (<code>spotgym backtest RUN_DIR</code> makes one)."
               if (missing := sum(1 for r in scan.runs if r.metrics is None)) else "")
            + '</div>' + problems(scan.problems))
    if not scan.runs:
        return layout("Runs", head + empty(
            "No run directories found. A run directory holds <code>config.yaml</code> and <code>manifest.json</code>: "
            "<code>spotgym train EXPERIMENT.yaml</code> writes one under <code>runs/</code>, and "
            "<code>spotgym backtest RUN_DIR</code> adds the backtest shown here. Point the dashboard at other folders "
            "with <code>--runs DIR</code>."), user=user, csrf=csrf, active="runs")
    rows = []
    for r in scan.runs:
        a, h = r.agent, r.hold
        ret, hret = _finite(a.get("total_return")), _finite(h.get("total_return"))
        sh, hsh = _finite(a.get("sharpe")), _finite(h.get("sharpe"))
        beat = "" if ret is None or hret is None else "beat" if ret > hret else "lost"
        beat_sh = "" if sh is None or hsh is None else "beat" if sh > hsh else "lost"
        badge = (' <span class="badge cash" title="its model selection found no checkpoint better than cash on '
                 'validation; a backtest made with --checkpoint trades the checkpoint anyway">cash</span>'
                 if r.selected == "cash" else "")
        splits = ", ".join(esc(s) for s in r.splits) if r.splits else '<span class="muted">none</span>'
        search = " ".join(str(x) for x in (r.name, r.experiment, r.algo, r.symbol, r.timeframe) if x).lower()
        market = " ".join(x for x in (r.symbol, r.timeframe) if x)
        rows.append(
            f'<tr data-search="{esc(search)}"><td><input type="checkbox" name="run" value="{r.id}" '
            f'aria-label="select {esc(r.name)}"></td>'
            + td(f'<a href="/run/{r.id}">{esc(r.name)}</a>{badge}', cls="l", value=None)
            + td(esc(r.experiment or "—"), cls="l") + td(esc(r.algo or "—"), cls="l") + td(esc(market or "—"), cls="l")
            + td(esc(_created(r.created)), cls="l")
            + td(pct(ret, 2, signed=True), ret, beat) + td(pct(hret, 2, signed=True), hret)
            + td(num(sh), sh, beat_sh) + td(num(hsh), hsh)
            + td(pct(a.get("max_drawdown"), 1), a.get("max_drawdown"))
            + td(f"{int(a['n_trades']):,}" if a.get("n_trades") is not None else "—", a.get("n_trades"))
            + td(pct(a.get("win_rate"), 1), a.get("win_rate")) + td(num(a.get("profit_factor")), a.get("profit_factor"))
            + td(splits, cls="l") + "</tr>")
    cols = [("", None), ("Run", "text"), ("Experiment", "text"), ("Algo", "text"), ("Market", "text"),
            ("Created", "text"), ("Return", "num"), ("Buy &amp; hold", "num"), ("Sharpe", "num"),
            ("B&amp;H Sharpe", "num"), ("Max DD", "num"), ("Fills", "num"), ("Win rate", "num"),
            ("Profit factor", "num"), ("Backtests", "text")]
    thead = "".join(f'<th class="{"l" if kind != "num" else ""}"' + (f' data-sort="{kind}"' if kind else "")
                    + f">{label}</th>" for label, kind in cols)
    body = (head + '<form method="get" action="/compare" class="compare-form">'
            '<div class="toolbar"><input type="search" placeholder="Filter by run, experiment, algo or market" '
            'data-filter="runs-table" aria-label="filter runs">'
            f'<span class="count" data-count-for="runs-table">{len(scan.runs):,} shown</span>'
            '<button type="submit" class="primary" data-compare-button disabled>Compare selected</button>'
            '<span class="note">(pick 2 or more)</span></div>'
            f'<div class="scroll"><table class="data wide sortable" id="runs-table"><thead><tr>{thead}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></form>')
    return layout("Runs", body, user=user, csrf=csrf, active="runs")


def run_page(run: RunSummary, split: SplitData | None, *, figures: tuple[go.Figure, go.Figure, Any] | None,
             figure_error: str | None, vetoes: tuple[list[dict[str, Any]], dict[str, int], int],
             selection: str | None, walkforward: str | None, user: str, csrf: str) -> str:
    meta = " · ".join(esc(x) for x in (f"experiment {run.experiment}" if run.experiment else None, run.algo,
                                       " ".join(x for x in (run.symbol, run.timeframe) if x) or None,
                                       f"trained {_created(run.created)} UTC" if run.created else None) if x)
    parts = [f"<h1>{esc(run.name)}</h1>", f'<div class="sub">{meta}<br><code>{esc(run.path)}</code></div>']
    if selection:
        cash = run.selected == "cash"
        parts.append(f'<div class="note">Model selection: {esc(selection.rstrip("."))}.'
                     + (" The backtests below may trade the kept checkpoint anyway (<code>--checkpoint</code>)."
                        if cash and run.splits else "") + "</div>")
    if not run.splits:
        parts.append(empty(f"No backtest in this run yet. Run <code>spotgym backtest {esc(run.path)}</code> (add "
                           "<code>--split val</code> for the validation split, <code>--checkpoint</code> to trade the "
                           "kept checkpoint of a run that holds cash) and reload."))
    else:
        tabs = "".join(f'<a href="/run/{run.id}?split={quote(s)}"{" class=active" if split and s == split.name else ""}>'
                       f"{esc(s)}</a>" for s in run.splits)
        parts.append(f'<div class="tabs"><span class="label">Backtest:</span>{tabs}</div>')
    if split is not None:
        parts.append(_split_body(run, split, figures, figure_error, vetoes))
    if walkforward:
        parts.append(f"<h2>Walk-forward evaluation</h2>{walkforward}")
    return layout(run.name, "".join(parts), user=user, csrf=csrf, active="runs", plotly=figures is not None)


def _split_body(run: RunSummary, split: SplitData, figures, figure_error, vetoes) -> str:
    parts = []
    metrics = split.metrics
    if "agent" in metrics:
        parts.append(bt_report.verdict_banner(metrics))
        parts.append(f'<div class="scroll">{bt_report.metrics_table(metrics)}</div>')
    else:
        parts.append(empty(f"<code>{esc(split.path / 'metrics.json')}</code> cannot be read."))
    if figures is None:
        parts.append(empty(f"The charts cannot be drawn: {esc(figure_error)}"))
    else:
        main, trips, fills = figures
        eq = split.equity
        n_buys = int((fills["side"] == "buy").sum())
        span = f"{str(eq['timestamp'].iloc[0])[:16]} → {str(eq['timestamp'].iloc[-1])[:16]} UTC"
        parts.append(f'<h2>Price, fills, equity and drawdown</h2><div class="note">{esc(span)} · {len(eq) - 1:,} bars · '
                     f"{len(fills):,} fills ({n_buys:,} buys ▲, {len(fills) - n_buys:,} sells ▼). Drag to zoom "
                     "(the three panels share the time axis), double-click to reset.</div>")
        if split.bars_note:
            parts.append(f'<div class="problems">{esc(split.bars_note)}</div>')
        parts.append(plot(main, "run-main"))
        parts.append("<h2>Round-trip returns</h2>")
        parts.append(plot(trips, "run-trips") if trips is not None else empty(
            "No closed round trip in this backtest (a round trip runs from flat to flat), so there is no return "
            "distribution to draw."))
    rows, counts, total = vetoes
    n_dec = 0 if split.decisions is None else len(split.decisions)
    parts.append("<h2>Risk vetoes</h2>")
    if split.decisions is None:
        parts.append(empty("This backtest has no <code>decisions.csv</code>."))
    elif not total:
        parts.append(empty(f"The risk rules changed none of the {n_dec:,} decisions."))
    else:
        per_rule = ", ".join(f"{esc(k)} <b>{v:,}</b>" for k, v in counts.items())
        parts.append(f'<div class="note">The risk rules changed {total:,} of {n_dec:,} decisions: {per_rule}.'
                     + (f" The last {len(rows):,} are listed." if len(rows) < total else "") + "</div>")
        cols = [c for c in ("timestamp", "action", "risk", "halted", "trade", "position", "exposure", "equity")
                if c in split.decisions.columns]
        head = "".join(f'<th class="{"l" if c in ("timestamp", "risk") else ""}">{esc(c)}</th>' for c in cols)
        body = []
        for row in reversed(rows):
            cells = []
            for c in cols:
                v = row.get(c)
                if c == "timestamp":
                    cells.append(td(esc(str(v)[:16]), cls="l"))
                elif c == "risk":
                    cells.append(td(f"<b>{esc(v)}</b>", cls="l"))
                elif isinstance(v, float):
                    cells.append(td(esc(f"{v:,.4g}" if c != "equity" else f"{v:,.2f}")))
                else:
                    cells.append(td(esc(v)))
            body.append("<tr>" + "".join(cells) + "</tr>")
        parts.append(f'<div class="scroll" style="max-height:420px;overflow-y:auto"><table class="data">'
                     f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    return "".join(parts)


# ------------------------------------------------------------------------------------------------------------ studies
def studies_page(rows: list[Any], problems_: list[str], run_links: Mapping[str, tuple[str, str]], *, user: str,
                 csrf: str) -> str:
    head = ('<h1>Studies</h1><div class="sub">Optuna studies: the <code>study.db</code> files <code>spotgym tune</code> '
            "wrote under the runs folders, and the storages given with <code>--study URL</code>.</div>"
            + problems(problems_))
    if not rows:
        return layout("Studies", head + empty(
            "No study found. <code>spotgym tune EXPERIMENT.yaml --trials N</code> writes one "
            "(<code>runs/tune-NAME/study.db</code>); a shared storage can be given with <code>--study URL</code>."),
            user=user, csrf=csrf, active="studies")
    body = []
    for r in rows:
        states = ", ".join(f"{v} {k.lower()}" for k, v in sorted(r.states.items()))
        params = ", ".join(f"{k}={_short(v)}" for k, v in r.best_params.items())
        link = run_links.get(r.best_run_dir or "")
        best_run = (f'<a href="/run/{link[0]}">{esc(link[1])}</a>' if link
                    else esc(r.best_run_dir) if r.best_run_dir else '<span class="muted">—</span>')
        href = f"/study/{r.ref.id}?{urlencode({'name': r.name})}"
        body.append(f'<tr><td class="l"><a href="{esc(href)}">{esc(r.name)}</a></td><td class="l">'
                    f'<code>{esc(r.ref.where)}</code></td><td class="l">{esc(r.direction)}</td>'
                    + td(f"{r.total:,}", r.total) + f'<td class="l">{esc(states)}</td>'
                    + td(esc(_short(r.best_value)), r.best_value)
                    + f'<td class="l">{esc(r.best_number if r.best_number is not None else "—")}</td>'
                    f'<td class="l wrap">{esc(params) or "—"}</td><td class="l">{best_run}</td>'
                    f'<td class="l">{esc(r.started or "—")}</td></tr>')
    table = ('<div class="scroll"><table class="data wide sortable" id="studies-table"><thead><tr>'
             '<th class="l" data-sort="text">Study</th><th class="l">Storage</th><th class="l">Direction</th>'
             '<th data-sort="num">Trials</th><th class="l">States</th><th data-sort="num">Best value</th>'
             '<th class="l">Best trial</th><th class="l">Best parameters</th><th class="l">Best trial\'s run</th>'
             f'<th class="l" data-sort="text">Started</th></tr></thead><tbody>{"".join(body)}</tbody></table></div>')
    return layout("Studies", head + table, user=user, csrf=csrf, active="studies")


def _short(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else "—"
    return str(value)


def study_page(row: Any, plots: list[tuple[str, go.Figure | None, str | None]], trials: list[Any],
               run_links: Mapping[str, tuple[str, str]], *, user: str, csrf: str) -> str:
    parts = [f"<h1>Study {esc(row.name)}</h1>",
             f'<div class="sub">storage <code>{esc(row.ref.where)}</code> · direction {esc(row.direction)} · '
             f"{row.total:,} trials ({esc(', '.join(f'{v} {k.lower()}' for k, v in sorted(row.states.items())))})</div>"]
    parts.append("<h2>Best trial</h2>")
    if row.best_number is None:
        parts.append(empty("No trial has completed yet."))
    else:
        link = run_links.get(row.best_run_dir or "")
        run = (f'<a href="/run/{link[0]}">{esc(link[1])}</a>' if link else
               f"<code>{esc(row.best_run_dir)}</code> (not under the runs folders)" if row.best_run_dir else "—")
        items = [("trial", esc(row.best_number)), ("value", esc(_short(row.best_value))), ("run", run)]
        items += [(esc(k), esc(_short(v))) for k, v in row.best_params.items()]
        parts.append('<table class="data"><tbody>' + "".join(
            f'<tr><td class="l">{k}</td><td class="l">{v}</td></tr>' for k, v in items) + "</tbody></table>")
    for title, fig, reason in plots:
        parts.append(f"<h2>{esc(title)}</h2>")
        if fig is None:
            parts.append(empty(f"Not drawn: {esc(reason)}"))
        else:
            parts.append(plot(fig, "study-" + title.lower().replace(" ", "-")))
    parts.append("<h2>Trials</h2>")
    body = []
    for t in trials:
        link = run_links.get(str(t.user_attrs.get("run_dir") or ""))
        run = (f'<a href="/run/{link[0]}">{esc(link[1])}</a>' if link else
               esc(t.user_attrs.get("run_dir") or "—"))
        params = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        best = ' class="best"' if t.number == row.best_number else ""
        body.append(f"<tr{best}>" + td(esc(t.number), t.number) + f'<td class="l">{esc(t.state.name.lower())}</td>'
                    + td(esc(_short(t.value)), t.value) + f'<td class="l wrap">{esc(params)}</td>'
                    f'<td class="l">{run}</td></tr>')
    parts.append('<div class="scroll"><table class="data sortable" id="trials-table"><thead><tr>'
                 '<th data-sort="num">#</th><th class="l" data-sort="text">State</th><th data-sort="num">Value</th>'
                 '<th class="l">Parameters</th><th class="l">Run</th></tr></thead><tbody>' + "".join(body)
                 + "</tbody></table></div>")
    return layout(f"Study {row.name}", "".join(parts), user=user, csrf=csrf, active="studies",
                  plotly=any(f is not None for _, f, _ in plots))


# ------------------------------------------------------------------------------------------------------------ live
def live_rows(items: list[tuple[LiveRef, dict[str, Any] | None]]) -> str:
    """The Live list's table body (also what the list page polls)."""
    rows = []
    for ref, status in items:
        s = status or {}
        state = ref.row.get("state") or "?"
        halted = bool((ref.row.get("risk_state") or {}).get("halted"))
        badge = f'<span class="badge {esc(state)}">{esc(state)}</span>' + (
            ' <span class="badge halted">halted</span>' if halted else "")
        ret = s.get("return")
        rows.append(
            f'<tr data-search="{esc((ref.name + " " + str(ref.row.get("symbol")) + " " + str(ref.row.get("mode"))).lower())}">'
            f'<td><input type="checkbox" name="live" value="{ref.id}" aria-label="select {esc(ref.name)}"></td>'
            f'<td class="l"><a href="/live/{ref.id}">{esc(ref.name)}</a></td>'
            f'<td class="l">{esc(ref.row.get("mode"))}</td><td class="l">{esc(ref.row.get("symbol"))}</td>'
            f'<td class="l">{badge}</td><td class="l">{esc(s.get("last_bar") or "—")}</td>'
            + td(f"{s['equity']:,.2f}" if s.get("equity") is not None else "—", s.get("equity"))
            + td(pct(ret, 2, signed=True), ret, signed_class(ret))
            + td(f"{s['position']:.6g}" if s.get("position") is not None else "—", s.get("position"))
            + td(f"{s.get('fills', 0):,}", s.get("fills"))
            + f'<td class="l wrap"><code>{esc(ref.where)}</code></td></tr>')
    return "".join(rows)


def live_list_page(items: list[tuple[LiveRef, dict[str, Any] | None]], problems_: list[str], *, user: str,
                   csrf: str) -> str:
    head = ('<h1>Live sessions</h1><div class="sub">Sessions of the journals given with <code>--journal</code> and of '
            "those under the runs (<code>RUN/live/SESSION/journal.sqlite</code>). This list refreshes every few "
            "seconds; open a session to watch it bar by bar and to pause, flatten or stop it.</div>"
            + problems(problems_))
    none = empty("No live session yet. Start one with <code>spotgym live run RUN_DIR --mode sim --data FILE --from "
                 "ISO</code> (or paper / testnet / live); its journal under the run is found on its own, another "
                 "journal can be given with <code>--journal URL</code>.")
    body = (head + f'<div id="live-none"{" hidden" if items else ""}>{none}</div>'
            '<form method="get" action="/compare" class="compare-form">'
            f'<div class="toolbar"{" hidden" if not items else ""} id="live-toolbar">'
            '<button type="submit" class="primary" data-compare-button disabled>Compare selected</button>'
            '<span class="note">(pick 2 or more sessions)</span></div>'
            f'<div class="scroll"{" hidden" if not items else ""} id="live-list"><table class="data wide sortable" '
            'id="live-table"><thead><tr><th></th><th class="l" data-sort="text">Session</th><th class="l">Mode</th>'
            '<th class="l">Symbol</th><th class="l">State</th><th class="l" data-sort="text">Last bar</th>'
            '<th data-sort="num">Equity</th><th data-sort="num">Return</th><th data-sort="num">Position</th>'
            '<th data-sort="num">Fills</th><th class="l">Journal</th></tr></thead>'
            f'<tbody data-refresh="/live?rows=1">{live_rows(items)}</tbody></table></div></form>')
    return layout("Live", body, user=user, csrf=csrf, active="live")


def live_page(ref: LiveRef, view: dict[str, Any], *, user: str, csrf: str) -> str:
    s = view["session"]
    run = (f' · run <a href="/run/{esc(s["run_id"])}">{esc(s["run_name"])}</a>' if s.get("run_id")
           else f" · run <code>{esc(s.get('run_dir'))}</code>" if s.get("run_dir") else "")
    labels = {"pause": ("Pause", "", "Pause the session? From its next decision it holds what it has and opens "
                        "nothing new, until Resume."),
              "resume": ("Resume", "", "Resume the session? It lifts a pause or a flatten; the agent decides again "
                         "from the next bar."),
              "flatten": ("Flatten", "warn", "Flatten the session? At its next decision it sells everything it holds "
                          "(goes to cash) and pauses entries until Resume."),
              "stop": ("Stop", "danger", "Stop the session's runner? It stops before its next decision; orders in "
                       "flight are settled first. Starting it again resumes from the journal.")}
    buttons = "".join(
        f'<button type="button" class="{labels[k][1]}" data-command="{k}" data-confirm="{esc(labels[k][2])}">'
        f"{labels[k][0]}</button>" for k in ("pause", "resume", "flatten", "stop") if k in DASHBOARD_COMMANDS)
    cards = "".join(f'<div class="card"><div class="k">{label}</div><div class="v{" time" if key == "last_bar" else ""}" '
                    f'data-field="{key}">—</div>'
                    f'<div class="d" data-field="{key}-detail"></div></div>'
                    for key, label in (("equity", "Equity"), ("return", "Return since start"),
                                       ("position", "Position"), ("cash", "Cash"), ("price", "Last price"),
                                       ("last_bar", "Last bar (UTC)"), ("feed", "Feed"), ("activity", "Activity")))

    def table(tid: str, cols: list[tuple[str, str]], title: str, none: str) -> str:
        head = "".join(f'<th class="{"l" if kind == "l" else ""}">{label}</th>' for label, kind in cols)
        return (f"<section><h2>{title}</h2><div class=\"scroll tall\"><table class=\"data wide\" id=\"{tid}\">"
                f"<thead><tr>{head}</tr></thead><tbody></tbody></table></div>"
                f'<div class="empty" id="{tid}-empty" hidden>{none}</div></section>')

    body = (f'<h1>Session {esc(ref.name)} <span class="badge" data-field="state-badge">{esc(s.get("state"))}</span> '
            f'<span class="badge halted" data-field="halted-badge" hidden>risk halt</span> '
            f'<span class="badge cash" data-field="paused-badge" hidden>paused</span></h1>'
            f'<div class="sub">{esc(s.get("mode"))} · {esc(s.get("symbol"))} · started {esc(s.get("created"))} UTC'
            f'{run} · journal <code>{esc(ref.where)}</code></div>'
            f'<div class="controls">{buttons}<span class="status" id="command-status" role="status"></span></div>'
            '<div class="note" data-field="controls-note"></div>'
            '<div class="note" data-field="pending"></div>'
            f'<div class="cards">{cards}</div>'
            '<h2>Equity</h2><div class="empty" id="live-equity-empty" hidden>No equity marks yet: the runner journals '
            "one at each bar's close.</div>"
            '<div class="plot" id="live-equity" style="height:380px"></div>'
            '<div class="grid2">'
            + table("orders-table", [("Order", "l"), ("Bar", "l"), ("Side", "l"), ("Quantity", "r"), ("Status", "l"),
                                     ("Filled", "r"), ("Tries", "r"), ("Error", "l")], "Open orders",
                    "No open orders: every order of this session is settled.")
            + table("fills-table", [("Time (UTC)", "l"), ("Side", "l"), ("Quantity", "r"), ("Price", "r"),
                                    ("Fee", "r")], "Fills (newest first)", "No fills yet.")
            + "</div>"
            + table("decisions-table", [("Bar (UTC)", "l"), ("Action", "r"), ("Target", "r"), ("Risk verdict", "l"),
                                        ("Order", "l"), ("Quantity", "r"), ("Equity", "r"), ("Position", "r")],
                    "Decisions (newest first)", "No decision yet: the first comes at the first closed bar.")
            + table("events-table", [("Time (UTC)", "l"), ("Bar", "l"), ("Event", "l"), ("Details", "l")],
                    "Alerts, commands and session events (newest first)", "No alert or command so far.")
            + data_block("live-data", view)
            + f'<div hidden id="live-config" data-url="/api/live/{ref.id}" '
              f'data-command-url="/api/live/{ref.id}/command"></div>')
    return layout(f"Live {ref.name}", body, user=user, csrf=csrf, active="live", plotly=True)


# ------------------------------------------------------------------------------------------------------------ compare
def compare_page(*, curves: list[Any], metrics: list[dict[str, Any]], fig: go.Figure | None, span: Any,
                 notes: list[str], runs: list[RunSummary], sessions: list[LiveRef], chosen: set[str], split: str,
                 user: str, csrf: str) -> str:
    parts = ['<h1>Compare</h1>']
    picker_open = len(curves) < 2
    if len(curves) < 2:
        parts.append('<div class="sub">Pick two or more backtests or live sessions: their equity curves are drawn as '
                     "returns from the start of the span they share, with the metrics recomputed over that span."
                     "</div>")
        parts.append(problems(notes))
        if curves:
            parts.append(empty(f"Only one item selected ({esc(curves[0].label)}): pick at least one more below."))
    else:
        if span is not None:
            parts.append(f'<div class="sub">{len(curves)} items over the span they share: {span[0]:%Y-%m-%d %H:%M} → '
                         f"{span[1]:%Y-%m-%d %H:%M} UTC. Each curve is its return since that span's start; the "
                         "metrics are recomputed over it.</div>")
        else:
            parts.append('<div class="sub">These items share no time span: each curve is drawn from its own start and '
                         "the metrics cover each one's own span.</div>")
        parts.append(problems(notes))
        parts.append(plot(fig, "compare-chart"))
        rows = []
        for c, m in zip(curves, metrics):
            ret = m.get("total_return")
            label = f'<a href="{esc(c.link)}">{esc(c.label)}</a>' if c.link else esc(c.label)
            rows.append(f'<tr><td class="l">{label}</td><td class="l">{esc(c.kind)}</td>'
                        f'<td class="l">{m["first"]:%Y-%m-%d %H:%M} → {m["last"]:%Y-%m-%d %H:%M}</td>'
                        + td(f"{m['bars']:,}", m["bars"]) + td(pct(ret, 2, signed=True), ret, signed_class(ret))
                        + td(pct(m.get("cagr"), 1, signed=True), m.get("cagr"))
                        + td(num(m.get("sharpe")), m.get("sharpe")) + td(num(m.get("sortino")), m.get("sortino"))
                        + td(pct(m.get("max_drawdown"), 1), m.get("max_drawdown"))
                        + td(f"{m.get('n_trades') or 0:,}", m.get("n_trades"))
                        + td(pct(m.get("win_rate"), 1), m.get("win_rate"))
                        + td(num(m.get("profit_factor")), m.get("profit_factor"))
                        + td(pct(m.get("exposure"), 1), m.get("exposure"))
                        + td(f"{m['final_equity']:,.2f}" if _finite(m.get("final_equity")) is not None else "—",
                             m.get("final_equity")) + "</tr>")
        parts.append('<h2>Metrics over the span</h2><div class="scroll"><table class="data sortable" id="compare-table">'
                     '<thead><tr><th class="l" data-sort="text">Item</th><th class="l">Kind</th><th class="l">Span (UTC)'
                     '</th><th data-sort="num">Bars</th><th data-sort="num">Return</th><th data-sort="num">CAGR</th>'
                     '<th data-sort="num">Sharpe</th><th data-sort="num">Sortino</th><th data-sort="num">Max DD</th>'
                     '<th data-sort="num">Fills</th><th data-sort="num">Win rate</th><th data-sort="num">Profit factor'
                     '</th><th data-sort="num">Exposure</th><th data-sort="num">Final equity</th></tr></thead><tbody>'
                     + "".join(rows) + "</tbody></table></div>")
    parts.append(_picker(runs, sessions, chosen, split, picker_open))
    return layout("Compare", "".join(parts), user=user, csrf=csrf, active="compare", plotly=fig is not None)


def _picker(runs: list[RunSummary], sessions: list[LiveRef], chosen: set[str], split: str, open_: bool) -> str:
    splits = sorted({s for r in runs for s in r.splits}, key=lambda s: (s not in ("test", "val"), s != "test", s))
    if not runs and not sessions:
        return empty("Nothing to compare yet: no run with a backtest and no live session was found.")
    opts = "".join(f'<option value="{esc(s)}"{" selected" if s == split else ""}>{esc(s)}</option>'
                   for s in (splits or ["test"]))
    run_rows = "".join(
        f'<tr><td><input type="checkbox" name="run" value="{r.id}"{" checked" if r.id in chosen else ""} '
        f'aria-label="select {esc(r.name)}"></td><td class="l">{esc(r.name)}</td><td class="l">{esc(r.experiment)}'
        f'</td><td class="l">{esc(", ".join(r.splits))}</td></tr>' for r in runs if r.splits)
    live_rows_ = "".join(
        f'<tr><td><input type="checkbox" name="live" value="{s.id}"{" checked" if s.id in chosen else ""} '
        f'aria-label="select {esc(s.name)}"></td><td class="l">{esc(s.name)}</td><td class="l">'
        f'{esc(s.row.get("mode"))} {esc(s.row.get("symbol"))}</td><td class="l">{esc(s.row.get("state"))}</td></tr>'
        for s in sessions)
    body = ('<form method="get" action="/compare" class="compare-form">'
            f'<div class="toolbar"><label>Backtest split of the runs: <select name="split">{opts}</select></label>'
            '<button type="submit" class="primary" data-compare-button disabled>Compare selected</button></div>'
            '<div class="grid2">'
            + (f'<section><h2>Runs</h2><div class="scroll" style="max-height:360px;overflow-y:auto">'
               f'<table class="data wide"><thead><tr><th></th><th class="l">Run</th><th class="l">Experiment</th>'
               f'<th class="l">Backtests</th></tr></thead><tbody>{run_rows}</tbody></table></div></section>'
               if run_rows else '<section><h2>Runs</h2><div class="empty">No run has a backtest yet.</div></section>')
            + (f'<section><h2>Live sessions</h2><div class="scroll" style="max-height:360px;overflow-y:auto">'
               f'<table class="data wide"><thead><tr><th></th><th class="l">Session</th><th class="l">Market</th>'
               f'<th class="l">State</th></tr></thead><tbody>{live_rows_}</tbody></table></div></section>'
               if live_rows_ else '<section><h2>Live sessions</h2><div class="empty">No live session found.</div>'
                                  "</section>")
            + "</div></form>")
    if open_:
        return body
    return f'<details class="picker"><summary>Change the selection</summary>{body}</details>'
