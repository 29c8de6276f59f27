"""``spotgym evaluate``: walk-forward evaluation with every number measured out of sample.

For each of the K folds of ``WalkForward`` (the experiment's ``evaluation`` section, ``--folds`` K):

1. The frame's predictor columns are already out-of-fold: ``prepare`` builds them with start-anchored,
   causal refits (every row's prediction comes from a model fitted strictly before that row), which
   is stronger than "fitted inside the fold's training span" -- no fold's test rows ever reach a
   predictor that predicts them. Indicators and scalers are causal too (see ``spotgym.features``).
2. The agent is trained on the fold's training rows and its checkpoint chosen on the fold's
   validation rows (``spotgym train``'s loop); with ``--tune-trials N`` an Optuna study of N trials
   (``spotgym.agents.tuning``) runs inside the fold first and its best trial's model is used.
3. The agent and the baselines (buy-and-hold, indicator rules; same env, fees and filters) are run
   over the fold's test rows, which neither the training, the checkpoint choice nor the tuner saw.

Stitching: the test blocks of consecutive folds are separated by the next fold's validation block
and the purge/embargo bars, so the stitched out-of-sample curve joins the test blocks only. Each
fold's curve is rescaled to start where the previous one ended and its first point (the initial
equity before the first decision, now equal to the previous end) is dropped, so the stitched per-bar
returns are exactly the folds' returns one after another. Fills are scaled by the same factor. Each
fold starts flat: a position still open at a fold's end is closed by a zero-fee synthetic sell at that
bar's close (the price the equity curve marks it at), so round trips never span two folds; these
synthetic fills are listed in ``walkforward.json``. The same applies to every baseline.

Over-fitting: the deflated Sharpe ratio (Bailey & López de Prado 2014) of the stitched agent returns,
with N = configurations tried (1 per fold without tuning, the finished trials of every fold's study
with tuning) and V[SR] = the variance of those configurations' per-period validation Sharpe ratios;
the probability of backtest over-fitting (CSCV) per fold across the tuning trials' validation returns,
or "not computable" with the reason. The seed's success criteria are measured on the stitched curve
and printed beside the result with PASS/FAIL.

Writes ``walkforward.json``, ``equity.csv`` and ``report.html`` (the backtest report of the stitched
curves with the criteria, over-fitting statistics and per-fold table on top) under ``--out``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest.metrics import TRADE_COLUMNS

__all__ = ["CRITERIA", "FoldOutcome", "evaluate", "format_criteria", "stitch_equity", "stitch_runs",
           "success_criteria"]

# The seed's success criteria on the stitched out-of-sample curve.
CRITERIA = {"min_annual_return": 3.0, "max_drawdown": 0.15}
_DUST = 1e-9


@dataclass
class FoldOutcome:
    """One fold's out-of-sample result and what was tried to get it."""

    index: int
    rows: dict[str, range]
    run_dir: Path
    agent: Any  # Rollout over the test rows
    baselines: dict[str, Any]
    n_configs: int
    config_sharpes: list[float]  # per-period validation Sharpe of every configuration tried
    val_matrix: pd.DataFrame = field(default_factory=pd.DataFrame)  # tuning trials' validation returns
    values: dict[str, Any] | None = None  # the tuned values of the chosen configuration
    study: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------------
# Stitching
# --------------------------------------------------------------------------------------------------


def stitch_equity(curves: Sequence[pd.Series]) -> tuple[pd.Series, list[float]]:
    """Chain equity curves: curve k is scaled to start at curve k-1's last value, its first point dropped.

    Returns the stitched curve and each curve's scale factor (1 for the first).
    """
    if not curves:
        raise ValueError("stitch_equity needs at least one curve")
    pieces, scales, level = [], [], None
    for curve in curves:
        values = curve.to_numpy(dtype=np.float64)
        if len(values) < 2:
            raise ValueError("every curve needs at least 2 points (initial equity + one bar)")
        if level is None:
            scale, piece = 1.0, curve.astype(np.float64)
        else:
            if values[0] <= 0:
                raise ValueError("a curve must start at a positive equity")
            scale = level / values[0]
            piece = curve.iloc[1:].astype(np.float64) * scale
        scales.append(float(scale))
        level = values[-1] * scale
        pieces.append(piece)
    stitched = pd.concat(pieces)
    if not stitched.index.is_monotonic_increasing or stitched.index.has_duplicates:
        raise ValueError("the curves overlap in time; stitch consecutive, disjoint out-of-sample blocks")
    return stitched.rename("equity"), scales


def _scaled_fills(trades: pd.DataFrame, scale: float) -> pd.DataFrame:
    out = trades[list(TRADE_COLUMNS)].copy()
    for column in ("quantity", "notional", "fee"):
        out[column] = out[column].astype(np.float64) * scale
    return out


def _held(trades: pd.DataFrame) -> float:
    signed = np.where(trades["side"] == "buy", 1.0, -1.0) * trades["quantity"].to_numpy(dtype=np.float64)
    return float(signed.sum())


def stitch_runs(rollouts: Sequence[Any], close_prices: Sequence[float]) -> dict[str, Any]:
    """Stitch fold rollouts (``Rollout``: equity, trades, exposure) into one out-of-sample run.

    ``close_prices[k]``: the close of fold k's last bar, where an open position is closed by a zero-fee
    synthetic sell (every fold but the last; see the module docstring). Returns ``equity``, ``trades``,
    ``exposure``, ``fold`` (fold index per equity point), ``scales`` and ``synthetic`` (the closes added).
    """
    equity, scales = stitch_equity([r.equity for r in rollouts])
    fills, exposures, folds, synthetic = [], [], [], []
    last = len(rollouts) - 1
    for k, (run, scale) in enumerate(zip(rollouts, scales)):
        trades = _scaled_fills(run.trades, scale) if len(run.trades) else pd.DataFrame(columns=list(TRADE_COLUMNS))
        exposure = run.exposure.astype(np.float64) if k == 0 else run.exposure.iloc[1:].astype(np.float64)
        exposures.append(exposure)
        folds.append(np.full(len(exposure), k))
        held = _held(trades) if len(trades) else 0.0
        bought = float(trades.loc[trades["side"] == "buy", "quantity"].sum()) if len(trades) else 0.0
        if k < last and held > _DUST * max(bought, 1.0):
            price = float(close_prices[k])
            close = {"timestamp": run.equity.index[-1], "side": "sell", "price": price, "quantity": held,
                     "notional": price * held, "fee": 0.0}
            trades = pd.concat([trades, pd.DataFrame([close])], ignore_index=True)
            synthetic.append({"fold": k, **close})
        fills.append(trades)
    non_empty = [f for f in fills if len(f)]
    trades = pd.concat(non_empty, ignore_index=True) if non_empty else pd.DataFrame(columns=list(TRADE_COLUMNS))
    return {"equity": equity, "trades": trades, "exposure": pd.concat(exposures).rename("exposure"),
            "fold": np.concatenate(folds), "scales": scales, "synthetic": synthetic}


# --------------------------------------------------------------------------------------------------
# Success criteria
# --------------------------------------------------------------------------------------------------


def success_criteria(agent: dict[str, Any], buy_and_hold: dict[str, Any]) -> list[dict[str, Any]]:
    """The seed's criteria measured on the stitched curve: CAGR >= 300 %, max drawdown < 15 %, and a
    Sharpe ratio above buy-and-hold's (risk-adjusted). An undefined value fails."""
    cagr, dd = agent.get("cagr"), agent.get("max_drawdown")
    sharpe, bh_sharpe = agent.get("sharpe"), buy_and_hold.get("sharpe")

    def pct(v: float | None) -> str:
        return "undefined" if v is None else f"{v * 100:.1f}%"

    def num(v: float | None) -> str:
        return "undefined" if v is None else f"{v:.2f}"

    return [
        {"name": "annualised return >= 300%", "measured": cagr, "target": CRITERIA["min_annual_return"],
         "passed": cagr is not None and cagr >= CRITERIA["min_annual_return"], "text": pct(cagr)},
        {"name": "max drawdown < 15%", "measured": dd, "target": CRITERIA["max_drawdown"],
         "passed": dd is not None and dd < CRITERIA["max_drawdown"], "text": pct(dd)},
        {"name": "beats buy-and-hold risk-adjusted (Sharpe)", "measured": sharpe, "target": bh_sharpe,
         "passed": sharpe is not None and bh_sharpe is not None and sharpe > bh_sharpe,
         "text": f"agent {num(sharpe)} vs buy-and-hold {num(bh_sharpe)}"},
    ]


def format_criteria(criteria: list[dict[str, Any]]) -> str:
    lines = ["Success criteria (stitched out-of-sample curve, measured):"]
    for c in criteria:
        lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['name']:44s} measured: {c['text']}")
    return "\n".join(lines)


def _format_overfitting(dsr: dict[str, Any], pbo: dict[str, Any]) -> str:
    if dsr.get("computable"):
        first = (f"Deflated Sharpe ratio: {dsr['dsr']:.3f} (per-period SR {dsr['sr']:.4f} vs SR0 {dsr['sr_star']:.4f} "
                 f"expected from {dsr['n_trials']} configuration(s); PSR {dsr['psr']:.3f})")
    else:
        first = f"Deflated Sharpe ratio: not computable ({dsr.get('reason')})"
    if pbo.get("computable"):
        second = f"Probability of backtest over-fitting: {pbo['pbo']:.3f} ({pbo.get('detail', '')})"
    else:
        second = f"Probability of backtest over-fitting: not computable ({pbo.get('reason')})"
    return f"{first}\n{second}"


# --------------------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------------------


def _out_dir(exp, out: str | Path | None) -> Path:
    if out:
        path = Path(out)
    else:
        stamp = pd.Timestamp.now("UTC").strftime("%Y%m%dT%H%M%SZ")
        path = Path(exp.run.root) / f"{exp.name}-walkforward-{stamp}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _train_fold(fold_exp, prepared, k: int, progress: bool) -> Path:
    """Train fold k, or reuse a finished run of the very same configuration in its directory (resume)."""
    from spotgym.agents.train import train
    from spotgym.experiment import load_experiment

    run_dir = Path(fold_exp.run.dir)
    if (run_dir / "metrics.json").is_file() and (run_dir / "model.zip").is_file():
        if load_experiment(run_dir / "config.yaml").hash == fold_exp.hash:
            return run_dir
    return train(fold_exp, progress=progress, prepared=prepared, fold=k)


def _run_fold(exp, prepared, k: int, fold_dir: Path, *, tune_trials: int, n_jobs: int, storage: str | None,
              study_prefix: str, targets: dict[str, np.ndarray], progress: bool) -> FoldOutcome:
    from spotgym.agents.rollout import model_actor, run_policy
    from spotgym.agents.spaces import apply_values
    from spotgym.agents.tuning import TuneError, simple_returns, tune, validation_rollout
    from spotgym.backtest.runner import load_model, run_baselines
    from spotgym.backtest.stats import sharpe_ratios

    fold = prepared.folds[k]
    values, study_doc, matrix = None, None, pd.DataFrame()
    if tune_trials:
        result = tune(exp, tune_trials, storage=storage, study_name=f"{study_prefix}-fold{k}", n_jobs=n_jobs,
                      study_dir=fold_dir / "tune", fold=k, prepared=prepared,
                      progress=progress)
        best = result.summary.get("best")
        if not best:
            raise TuneError(f"fold {k}: no tuning trial completed ({result.summary.get('states')})")
        matrix = result.returns if result.returns is not None else pd.DataFrame()
        sharpes = list(sharpe_ratios(matrix)) if matrix.shape[1] and len(matrix) >= 2 else []
        values, run_dir = best.get("values") or {}, Path(best["run_dir"])
        fold_exp = apply_values(exp, values)
        n_configs = int(result.summary["finished"])
        study_doc = {"name": result.study_name, "storage": result.storage, "dir": str(result.study_dir),
                     "finished": result.summary["finished"], "states": result.summary["states"],
                     "best": {k2: best.get(k2) for k2 in ("number", "value", "values", "run_dir")},
                     "report": str(result.report) if result.report else None}
    else:
        fold_exp = apply_values(exp, {"run.dir": str(fold_dir / "train")})
        run_dir = _train_fold(fold_exp, prepared, k, progress)
        val = validation_rollout(run_dir, fold_exp, prepared, k)
        r = simple_returns(val.equity)
        sharpes = list(sharpe_ratios(r[:, None])) if len(r) >= 2 else []
        n_configs = 1
    model = load_model(run_dir, fold_exp.agent.algo)
    frame = prepared.frame
    agent = run_policy(frame, fold_exp.env_config(), fold.test, model_actor(model))
    baselines = run_baselines(frame, exp.env_config(), fold.test, targets)
    rows = {"train": fold.train, "val": fold.val, "test": fold.test}
    return FoldOutcome(k, rows, run_dir, agent, baselines, n_configs, [float(s) for s in sharpes], matrix, values,
                       study_doc)


def evaluate(exp, *, folds: int | None = None, tune_trials: int = 0, n_jobs: int = 1, storage: str | None = None,
             out: str | Path | None = None, progress: bool = True) -> Path:
    """Walk-forward evaluation of ``exp`` over ``folds`` folds (default ``evaluation.folds``); returns the
    output directory holding ``walkforward.json``, ``equity.csv``, ``report.html`` and the fold runs."""
    from spotgym.agents.spaces import apply_values, parse_tune_config
    from spotgym.agents.train import bars_hash, split_record, write_json
    from spotgym.agents.tuning import dsr_stats, pbo_stats, prepare_for_tuning, simple_returns
    from spotgym.backtest import bars_per_year, compute_metrics, write_report
    from spotgym.backtest.runner import baseline_targets, summary_table
    from spotgym.experiment import ExperimentError

    if folds is not None:
        if folds < 1:
            raise ExperimentError(f"--folds: must be >= 1, got {folds}")
        exp = apply_values(exp, {"evaluation.folds": int(folds)})
    if tune_trials < 0:
        raise ExperimentError(f"--tune-trials: must be >= 0, got {tune_trials}")
    config = parse_tune_config(exp) if tune_trials else None
    prepared = prepare_for_tuning(exp, config)
    out_dir = _out_dir(exp, out)
    frame, bars, timeframe = prepared.frame, prepared.bars, exp.data.timeframe
    ppy = bars_per_year(timeframe)
    targets = baseline_targets(bars, frame)

    outcomes = []
    for k in range(len(prepared.folds)):
        print(f"fold {k + 1}/{len(prepared.folds)}: {prepared.folds[k]}", flush=True)
        outcomes.append(_run_fold(exp, prepared, k, out_dir / f"fold_{k}", tune_trials=tune_trials,
                                  n_jobs=n_jobs, storage=storage, study_prefix=out_dir.name, targets=targets,
                                  progress=progress))

    closes = [float(frame.close[o.rows["test"].stop - 1]) for o in outcomes]
    agent = stitch_runs([o.agent for o in outcomes], closes)
    names = list(targets)
    stitched_baselines = {n: stitch_runs([o.baselines[n] for o in outcomes], closes) for n in names}

    def metrics_of(run: dict[str, Any]) -> dict[str, Any]:
        return compute_metrics(run["equity"], run["trades"], run["exposure"], periods_per_year=ppy)

    overall_agent = metrics_of(agent)
    overall_baselines = {n: metrics_of(r) for n, r in stitched_baselines.items()}
    criteria = success_criteria(overall_agent, overall_baselines["buy_and_hold"])

    n_trials = sum(o.n_configs for o in outcomes)
    sr_values = np.asarray([s for o in outcomes for s in o.config_sharpes], dtype=np.float64)
    dsr = dsr_stats(simple_returns(agent["equity"]), n_trials, sr_values)
    dsr["note"] = ("stitched out-of-sample agent returns; N = configurations tried over all folds "
                   f"({'finished tuning trials' if tune_trials else 'one per fold, no tuning'}); V[SR] from their "
                   "per-period validation Sharpe ratios; the choice of checkpoint within a run is not counted")
    if tune_trials:
        per_fold = {o.index: pbo_stats(o.val_matrix) for o in outcomes}
        values = [p["pbo"] for p in per_fold.values() if p.get("computable")]
        if values:
            pbo = {"computable": True, "pbo": float(np.mean(values)), "per_fold": per_fold,
                   "detail": f"mean over {len(values)} fold(s) of CSCV across each fold's tuning trials' "
                             "validation returns"}
        else:
            reasons = "; ".join(f"fold {k}: {p['reason']}" for k, p in per_fold.items())
            pbo = {"computable": False, "reason": reasons, "per_fold": per_fold}
    else:
        pbo = {"computable": False, "reason": "one configuration per fold (no tuning): PBO compares >= 2 "
                                              "configurations over the same bars; run with --tune-trials N >= 2"}

    fold_docs = []
    for o in outcomes:
        fold_docs.append({
            "index": o.index, "split": {name: split_record(frame, rows) for name, rows in o.rows.items()},
            "run_dir": str(o.run_dir), "n_configs": o.n_configs, "values": o.values, "study": o.study,
            "scale": agent["scales"][o.index],
            "agent": o.agent.metrics(timeframe),
            "baselines": {n: r.metrics(timeframe) for n, r in o.baselines.items()},
        })
    document = {
        "experiment": exp.name, "experiment_hash": exp.hash, "created": pd.Timestamp.now("UTC").isoformat(),
        "data": {"source": bars.attrs.get("source"), "hash": bars_hash(bars), "timeframe": timeframe},
        "algo": exp.agent.algo, "n_folds": len(outcomes), "tune_trials": tune_trials, "n_trials": n_trials,
        "folds": fold_docs,
        "overall": {"agent": overall_agent, "baselines": overall_baselines},
        "deflated_sharpe": dsr, "pbo": pbo,
        "criteria": criteria, "all_criteria_pass": all(c["passed"] for c in criteria),
        "stitching": {"method": "each fold's test curve rescaled to start where the previous ended; first point "
                                "dropped; positions open at a fold end closed at its last close without fee",
                      "synthetic_closes": {"agent": agent["synthetic"],
                                           **{n: r["synthetic"] for n, r in stitched_baselines.items()}}},
        "predictors": "predictor columns are causal start-anchored out-of-fold refits (spotgym.predictors): no "
                      "test row reaches a predictor fitted on it",
    }
    write_json(out_dir / "walkforward.json", document)

    equity = pd.DataFrame({"timestamp": agent["equity"].index, "fold": agent["fold"],
                           "equity": agent["equity"].to_numpy(), "exposure": agent["exposure"].to_numpy()})
    equity["drawdown"] = (1.0 - equity["equity"] / equity["equity"].cummax()).to_numpy()
    for n, r in stitched_baselines.items():
        equity[n] = r["equity"].to_numpy()
    equity.to_csv(out_dir / "equity.csv", index=False)

    first, last = outcomes[0].rows["test"], outcomes[-1].rows["test"]
    algo = exp.agent.algo
    report = write_report(
        out_dir / "report.html", bars=bars.iloc[first.start: last.stop + 1],
        equity={algo: agent["equity"], **{n: r["equity"] for n, r in stitched_baselines.items()}},
        trades=agent["trades"], metrics={"agent": overall_agent, "baselines": overall_baselines},
        title=f"{exp.data.symbol} {timeframe} — {exp.name}: walk-forward, {len(outcomes)} folds stitched out of sample")
    _inject_section(report, _section_html(document))

    print("\nPer fold (test blocks):")
    for o, doc in zip(outcomes, fold_docs):
        test = doc["split"]["test"]
        print(f"fold {o.index}: {test['first']} -> {test['last']} ({o.n_configs} configuration(s))")
        print(summary_table(algo, doc["agent"], doc["baselines"]))
    print("\nStitched out-of-sample:")
    print(summary_table(algo, overall_agent, overall_baselines))
    print()
    print(format_criteria(criteria))
    print(_format_overfitting(dsr, pbo))
    return out_dir


# --------------------------------------------------------------------------------------------------
# Report section
# --------------------------------------------------------------------------------------------------


def _pct(v: Any, signed: bool = True) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v * 100:+.2f}%" if signed else f"{v * 100:.2f}%"


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:.3f}"


def _section_html(doc: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(
        f'<tr><td style="font-weight:600;color:{"#16a34a" if c["passed"] else "#dc2626"}">'
        f'{"PASS" if c["passed"] else "FAIL"}</td><td>{esc(c["name"])}</td><td>{esc(c["text"])}</td></tr>'
        for c in doc["criteria"])
    parts = ['<div class="walkforward">',
             "<h2 style=\"font-size:17px\">Success criteria (measured on the stitched out-of-sample curve)</h2>",
             f'<table class="metrics"><tbody>{rows}</tbody></table>']
    dsr, pbo = doc["deflated_sharpe"], doc["pbo"]
    text = _format_overfitting(dsr, pbo).split("\n")
    parts.append("<h2 style=\"font-size:17px\">Selection luck</h2>")
    parts.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in text) + f"<li>{esc(dsr.get('note', ''))}</li></ul>")
    head = ("<tr><th>fold</th><th>test span</th><th>configs</th><th>agent return</th><th>agent Sharpe</th>"
            "<th>agent max DD</th><th>buy-and-hold return</th><th>buy-and-hold Sharpe</th><th>run</th></tr>")
    body = []
    for f in doc["folds"]:
        a, b = f["agent"], f["baselines"]["buy_and_hold"]
        test = f["split"]["test"]
        body.append(f"<tr><td>{f['index']}</td><td>{esc(test['first'])} → {esc(test['last'])}</td>"
                    f"<td>{f['n_configs']}</td><td>{_pct(a['total_return'])}</td><td>{_num(a['sharpe'])}</td>"
                    f"<td>{_pct(a['max_drawdown'], False)}</td><td>{_pct(b['total_return'])}</td>"
                    f"<td>{_num(b['sharpe'])}</td><td>{esc(f['run_dir'])}</td></tr>")
    parts.append("<h2 style=\"font-size:17px\">Per fold (test blocks)</h2>")
    parts.append(f'<table class="metrics"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>')
    parts.append('<div class="sub">The curves below join the folds\' test blocks only (the next fold\'s '
                 "validation block and the purge gap between them are not traded); each block is rescaled to "
                 "start where the previous ended.</div></div>")
    return "\n".join(parts)


def _inject_section(report: Path, section: str) -> None:
    """Put the walk-forward section above the backtest report's verdict banner."""
    page = report.read_text(encoding="utf-8")
    marker = '<div class="verdict'
    page = page.replace(marker, section + "\n" + marker, 1) if marker in page else page.replace(
        "<body>", "<body>" + section, 1)
    report.write_text(page, encoding="utf-8")


def load_walkforward(out_dir: str | Path) -> dict[str, Any]:
    """The ``walkforward.json`` of an evaluation directory."""
    return json.loads((Path(out_dir) / "walkforward.json").read_text())
