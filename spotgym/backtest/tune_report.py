"""The HTML report of a ``spotgym tune`` study: Optuna's visualisations and the best parameters.

One self-contained page that opens offline: plotly.js is inlined once in the head and every figure
refers to it (no CDN, no second copy). Top to bottom: the study summary, the best trial's values,
the over-fitting statistics across trials (deflated Sharpe, PBO), then optimisation history,
parameter importances, parallel coordinates, slice and intermediate values (the validation scores
the pruner saw), and a table of every trial. A plot Optuna cannot draw yet (e.g. importances with
fewer than two completed trials) is replaced by a line saying why.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from spotgym.backtest.report import BASE_CSS

__all__ = ["PLOTS", "study_figure", "write_tune_report"]

# section id, title, optuna.visualization function name
PLOTS = (
    ("optimization-history", "Optimisation history", "plot_optimization_history"),
    ("param-importances", "Parameter importances", "plot_param_importances"),
    ("parallel-coordinate", "Parallel coordinates", "plot_parallel_coordinate"),
    ("slice", "Slice", "plot_slice"),
    ("intermediate-values", "Validation scores seen by the pruner", "plot_intermediate_values"),
)
REPORT_CSS = BASE_CSS + """
h2 { font-size: 17px; margin: 22px 0 6px 0; }
.note { color: #6b7280; font-size: 13px; font-style: italic; }
table.t { border-collapse: collapse; font-size: 13px; margin-bottom: 12px; }
table.t th, table.t td { padding: 3px 10px; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: top; }
table.t thead th { border-bottom: 2px solid #9ca3af; }
tr.best td { background: #dcfce7; font-weight: 600; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows)
    return f'<table class="t"><tbody>{body}</tbody></table>'


def _overfitting(summary: Mapping[str, Any]) -> str:
    stats = summary.get("overfitting") or {}
    rows: list[tuple[str, Any]] = []
    dsr = stats.get("dsr") or {}
    if dsr.get("computable"):
        rows += [("deflated Sharpe ratio (DSR)", dsr["dsr"]), ("probabilistic Sharpe ratio (PSR, SR₀ = 0)", dsr["psr"]),
                 ("best trial's per-period Sharpe", dsr["sr"]),
                 ("expected max per-period Sharpe of N null trials (SR₀)", dsr["sr_star"]),
                 ("N trials", dsr["n_trials"]), ("variance of per-period Sharpe across trials", dsr["sr_variance"])]
    else:
        rows.append(("deflated Sharpe ratio (DSR)", f"not computable: {dsr.get('reason', 'no data')}"))
    pbo = stats.get("pbo") or {}
    if pbo.get("computable"):
        rows += [("probability of backtest over-fitting (PBO, CSCV)", pbo["pbo"]),
                 ("CSCV splits / combinations", f"{pbo['n_splits']} / {pbo['n_combinations']}"),
                 ("P(OOS loss of the IS-best trial)", pbo["prob_oos_loss"])]
    else:
        rows.append(("probability of backtest over-fitting (PBO)", f"not computable: {pbo.get('reason', 'no data')}"))
    note = stats.get("note")
    return _table(rows) + (f'<div class="note">{html.escape(note)}</div>' if note else "")


def _trials_table(study, best_number: int | None) -> str:
    head = "<tr><th>#</th><th>state</th><th>value</th><th>duration (s)</th><th>values</th><th>run dir</th></tr>"
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration is not None else None
        values = t.user_attrs.get("values") or t.params
        css = ' class="best"' if t.number == best_number else ""
        note = " (surplus)" if t.user_attrs.get("surplus") else ""
        rows.append(f"<tr{css}><td>{t.number}</td><td>{t.state.name}{note}</td><td>{_fmt(t.value)}</td>"
                    f"<td>{_fmt(duration)}</td><td>{html.escape(json.dumps(values))}</td>"
                    f"<td>{html.escape(str(t.user_attrs.get('run_dir', '')))}</td></tr>")
    return f'<table class="t"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def study_figure(study, name: str) -> tuple[Any | None, str | None]:
    import optuna.visualization as vis

    plot: Callable[..., Any] = getattr(vis, name)
    try:
        with warnings.catch_warnings():  # "too few trials to compute importances" etc.: the page says so
            warnings.simplefilter("ignore")
            fig = plot(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return None, str(exc)
    if not fig.data:
        return None, "no trial holds the data this plot needs yet"
    return fig, None


def write_tune_report(path: str | Path, study, summary: Mapping[str, Any], title: str | None = None) -> Path:
    """Write the study's report to ``path`` and return it. ``summary`` is the ``best.json`` document."""
    from plotly.offline import get_plotlyjs

    title = title or f"spotgym tune — {study.study_name}"
    best = summary.get("best") or {}
    config = {"displaylogo": False, "responsive": True}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<div class="sub">storage {html.escape(str(summary.get("storage")))} · objective: validation '
        f'{html.escape(str(summary.get("metric")))} after fees ({html.escape(str(summary.get("direction")))}) · '
        f'{summary.get("finished")} of {summary.get("n_trials")} trials finished · states '
        f'{html.escape(json.dumps(summary.get("states", {})))}</div>',
        '<h2 id="best">Best trial</h2>',
    ]
    if best:
        rows = [("trial", best.get("number")), ("value", best.get("value")), ("run dir", best.get("run_dir"))]
        rows += [(k, v) for k, v in (best.get("values") or {}).items()]
        rows += [(f"val {k}", v) for k, v in (best.get("val_metrics") or {}).items()]
        parts.append(_table(rows))
    else:
        parts.append('<div class="note">no trial has completed yet</div>')
    parts += ['<h2 id="overfitting">Selection luck across trials</h2>', _overfitting(summary)]
    for anchor, heading, name in PLOTS:
        parts.append(f'<h2 id="{anchor}">{html.escape(heading)}</h2>')
        fig, reason = study_figure(study, name)
        if fig is None:
            parts.append(f'<div class="note">not drawn: {html.escape(reason or "")}</div>')
        else:
            fig.update_layout(template="plotly_white", height=480, margin={"t": 50, "b": 40})
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, config=config, default_width="100%"))
    parts += ['<h2 id="trials">Trials</h2>', _trials_table(study, best.get("number")), "</body></html>"]
    path = Path(path)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
