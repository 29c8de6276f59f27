"""``spotgym evaluate``: walk-forward evaluation with every number measured out of sample.

For each of the K folds of ``WalkForward`` (the experiment's ``evaluation`` section, ``--folds`` K):

1. The frame's predictor columns are already out-of-fold: ``prepare`` builds them with start-anchored,
   causal refits (every row's prediction comes from a model fitted strictly before that row), which
   is stronger than "fitted inside the fold's training span" -- no fold's test rows ever reach a
   predictor that predicts them. Indicators and scalers are causal too (see ``spotgym.features``).
2. The agent is trained on the fold's training rows and its checkpoint chosen on the fold's
   validation rows, the end of the span before its test block (``spotgym train``'s loop); with
   ``--tune-trials N`` an Optuna study of N trials (``spotgym.workflows.tune``) runs inside the fold
   first and its best trial's model is used.
3. The agent and the baselines (buy-and-hold, indicator rules; same env, fees and rules) are run
   over the fold's test rows, which neither the training, the checkpoint choice nor the tuner saw.

The test blocks follow one another without a gap, so the stitched out-of-sample curve
(``spotgym.backtest.stitch_runs``) covers every bar after the first training span once. Over-fitting:
the deflated Sharpe ratio (Bailey & López de Prado 2014) of the stitched agent returns, with N =
configurations tried (1 per fold without tuning, the finished trials of every fold's study with
tuning) and V[SR] = the variance of those configurations' per-period validation Sharpe ratios; the
probability of backtest over-fitting (CSCV) per fold across the tuning trials' validation returns, or
"not computable" with the reason. The experiment's success criteria (``evaluation.criteria``) are
measured on the stitched curve and printed beside the result with PASS/FAIL.

Writes ``walkforward.json``, ``equity.csv`` and ``report.html`` (the backtest report of the stitched
curves with the criteria, over-fitting statistics and per-fold table on top) under ``--out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.agents import baseline_targets
from spotgym.backtest import (
    bars_per_year,
    compute_metrics,
    drawdown,
    dsr_stats,
    format_criteria,
    format_overfitting,
    pbo_stats,
    run_baselines,
    run_policy,
    sharpe_ratios,
    simple_returns,
    stitch_runs,
    success_criteria,
    summary_table,
    walkforward_section,
    write_report,
)
from spotgym.workflows.errors import ExperimentError, TuneError
from spotgym.workflows.experiment import apply_values, load_experiment
from spotgym.workflows.prepare import bars_hash, split_record
from spotgym.workflows.runs import write_json
from spotgym.workflows.train import load_run_actor, train
from spotgym.workflows.tune import prepare_for_tuning, tune, validation_rollout

__all__ = ["FoldOutcome", "evaluate", "load_walkforward"]


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
    run_dir = Path(fold_exp.run.dir)
    if (run_dir / "metrics.json").is_file() and (run_dir / "model.zip").is_file():
        if load_experiment(run_dir / "config.yaml").hash == fold_exp.hash:
            return run_dir
    return train(fold_exp, progress=progress, prepared=prepared, fold=k)


def _run_fold(exp, prepared, k: int, fold_dir: Path, *, tune_trials: int, n_jobs: int, storage: str | None,
              study_prefix: str, targets: dict[str, np.ndarray], progress: bool) -> FoldOutcome:
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
    frame = prepared.frame
    # the pass over the test block ends on the next block's first bar: the last decision (at the block's last
    # close) fills and is marked there, so the stitched curve has every out-of-sample bar once, no gap
    passed = range(fold.test.start, min(fold.test.stop + 1, len(frame)))
    cfg = prepared.env_config(fold_exp)
    agent = run_policy(frame, cfg, passed, load_run_actor(run_dir, fold_exp, cfg))
    baselines = run_baselines(frame, prepared.env_config(exp), passed, targets)
    rows = {"train": fold.train, "val": fold.val, "test": fold.test}
    return FoldOutcome(k, rows, run_dir, agent, baselines, n_configs, [float(s) for s in sharpes], matrix, values,
                       study_doc)


def evaluate(exp, *, folds: int | None = None, tune_trials: int = 0, n_jobs: int = 1, storage: str | None = None,
             out: str | Path | None = None, progress: bool = True) -> Path:
    """Walk-forward evaluation of ``exp`` over ``folds`` folds (default ``evaluation.folds``); returns the
    output directory holding ``walkforward.json``, ``equity.csv``, ``report.html`` and the fold runs."""
    if folds is not None:
        if folds < 1:
            raise ExperimentError(f"--folds: must be >= 1, got {folds}")
        exp = apply_values(exp, {"evaluation.folds": int(folds)})
    if tune_trials < 0:
        raise ExperimentError(f"--tune-trials: must be >= 0, got {tune_trials}")
    config = exp.tune_config() if tune_trials else None
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

    closes = [float(frame.close[frame.index.get_loc(o.agent.equity.index[-1])]) for o in outcomes]  # each pass's last bar
    fee = prepared.env_config(exp).fee
    agent = stitch_runs([o.agent for o in outcomes], closes, fee)
    names = list(targets)
    stitched_baselines = {n: stitch_runs([o.baselines[n] for o in outcomes], closes, fee) for n in names}

    def metrics_of(run: dict[str, Any]) -> dict[str, Any]:
        return compute_metrics(run["equity"], run["trades"], run["exposure"], periods_per_year=ppy)

    overall_agent = metrics_of(agent)
    overall_baselines = {n: metrics_of(r) for n, r in stitched_baselines.items()}
    criteria = success_criteria(overall_agent, overall_baselines["buy_and_hold"], exp.evaluation.success_criteria())

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
        run_metrics = json.loads((Path(o.run_dir) / "metrics.json").read_text())
        fold_docs.append({
            "validation": {"selected": run_metrics.get("selected", "agent"),
                           "val": (run_metrics.get("best") or {}).get("val")},
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
        "criteria_config": exp.evaluation.success_criteria().to_dict(),
        "stitching": {"method": "contiguous test blocks; each fold's test curve rescaled to start where the previous "
                                "ended, first point dropped; a position open at a fold end sold at its last close "
                                f"paying the fee ({fee})",
                      "closes": {"agent": agent["closes"], **{n: r["closes"] for n, r in stitched_baselines.items()}}},
        "predictors": "predictor columns are causal start-anchored out-of-fold refits (spotgym.predictors): no "
                      "test row reaches a predictor fitted on it",
    }
    write_json(out_dir / "walkforward.json", document)

    equity = pd.DataFrame({"timestamp": agent["equity"].index, "fold": agent["fold"],
                           "equity": agent["equity"].to_numpy(), "exposure": agent["exposure"].to_numpy()})
    equity["drawdown"] = drawdown(equity["equity"].to_numpy())
    for n, r in stitched_baselines.items():
        equity[n] = r["equity"].to_numpy()
    equity.to_csv(out_dir / "equity.csv", index=False)

    first, last = outcomes[0].rows["test"], outcomes[-1].rows["test"]
    algo = exp.agent.algo
    write_report(
        out_dir / "report.html", bars=bars.iloc[first.start: last.stop + 1],
        equity={algo: agent["equity"], **{n: r["equity"] for n, r in stitched_baselines.items()}},
        trades=agent["trades"], metrics={"agent": overall_agent, "baselines": overall_baselines},
        title=f"{exp.data.symbol} {timeframe} — {exp.name}: walk-forward, {len(outcomes)} folds stitched out of sample",
        sections=(walkforward_section(document),))

    print("\nPer fold (test blocks):")
    for o, doc in zip(outcomes, fold_docs):
        test = doc["split"]["test"]
        print(f"fold {o.index}: {test['first']} -> {test['last']} ({o.n_configs} configuration(s))")
        print(summary_table(algo, doc["agent"], doc["baselines"]))
    print("\nStitched out-of-sample:")
    print(summary_table(algo, overall_agent, overall_baselines))
    print()
    print(format_criteria(criteria))
    print(format_overfitting(dsr, pbo))
    return out_dir


def load_walkforward(out_dir: str | Path) -> dict[str, Any]:
    """The ``walkforward.json`` of an evaluation directory."""
    return json.loads((Path(out_dir) / "walkforward.json").read_text())
