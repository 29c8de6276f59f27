"""``spotgym tune``: Bayesian (Optuna TPE) hyper-parameter search over one walk-forward fold.

Each trial is a normal ``spotgym train`` run (its own run dir under ``<study dir>/trials/``) on the
fold's training rows; its score is the best validation value of ``tune.metric`` (after fees) that
``ValidationCallback`` measured on the fold's validation rows -- the same checkpoint that run keeps
as ``model.zip``. Every validation evaluation is reported to the trial (``trial.report(value,
index)``) and the pruner may stop a trial there (``optuna.TrialPruned``). The test rows are never
seen: ``spotgym evaluate`` tunes inside each fold and scores on that fold's test block only.

Storage and workers:

- The study lives in an RDB: a SQLite file ``<study dir>/study.db`` by default, or any SQLAlchemy URL
  (``--storage postgresql://user@host/db``) so that worker processes on many machines share one study.
- ``--n-jobs K`` starts K worker processes (multiprocessing spawn). Every worker -- and every other
  ``spotgym tune`` started elsewhere with the same ``--storage``/``--study`` -- loads the study and runs
  trials until the study holds N finished (COMPLETE or PRUNED) trials, so re-running an interrupted
  study resumes it and stops at N in total. A worker starts a new trial only while finished + running
  + waiting trials are fewer than N; a trial that finds N live trials numbered before it (two workers
  raced) is failed at once as ``surplus`` without training, so the study ends with exactly N.
- Heartbeats: a running trial's worker writes a heartbeat every ``tune.heartbeat_interval`` seconds; a
  trial silent for ``tune.grace_period`` seconds (its worker was killed) is failed by the next worker
  that looks, and re-queued with the same parameters up to ``tune.max_retry`` times.
- The TPE sampler is seeded with ``seed + (number of trials in the study)`` before each trial, so one
  worker reproduces its sequence and parallel workers do not propose identical start-up trials.

Per trial the user attributes hold the searched values (``values``, dotted experiment keys), the run dir,
the worker, the validation metrics and the validation per-bar returns of the kept model (``val_returns``,
zlib + base64 float32), from which the deflated Sharpe ratio and the probability of backtest
over-fitting across trials are computed wherever the study is read.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import socket
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest import Rollout, overfitting_stats, run_policy, simple_returns
from spotgym.backtest.tune_report import write_tune_report
from spotgym.core import stable_hash
from spotgym.workflows.errors import ExperimentError, TuneError
from spotgym.workflows.experiment import Experiment, apply_values, load_experiment
from spotgym.workflows.prepare import Prepared, bars_hash, env_rows_config, prepare
from spotgym.workflows.runs import write_json
from spotgym.workflows.search_space import TuneConfig, max_window, suggest_values
from spotgym.workflows.train import load_run_actor, train

__all__ = ["TuneError", "TuneResult", "decode_returns", "encode_returns", "prepare_for_tuning", "returns_matrix",
           "tune", "tuning_fingerprint", "validation_rollout"]

log = logging.getLogger(__name__)
STUDY_ATTR = "spotgym"
SUMMARY_METRICS = ("total_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "n_trades", "exposure",
                   "turnover", "fees_paid")
POLL_S = 1.0


class SurplusTrial(Exception):
    """Raised (and caught) when a trial would take the study past N finished trials."""


@dataclass
class TuneResult:
    """What ``tune`` leaves behind."""

    study_name: str
    storage: str
    study_dir: Path
    summary: dict[str, Any]
    report: Path | None
    retrained: Path | None = None
    returns: pd.DataFrame | None = None  # (validation bars x finished trials) per-bar returns


# --------------------------------------------------------------------------------------------------
# Storage and study
# --------------------------------------------------------------------------------------------------


def default_storage(study_dir: Path) -> str:
    return f"sqlite:///{(Path(study_dir) / 'study.db').resolve()}"


def redact(url: str) -> str:
    """The storage URL without its password (for logs and best.json)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a URL sqlalchemy cannot parse: keep only what follows the credentials
        return url.split("@")[-1] if "@" in url else url


def make_storage(url: str, config: TuneConfig):
    """An RDB storage with heartbeats (stale trials failed and retried); SQLite waits on locks."""
    import optuna

    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry  # optuna >= 4.9

        retry_kw = "heartbeat_stale_trial_callback"
    except ImportError:  # pragma: no cover - older optuna
        from optuna.storages import RetryFailedTrialCallback as Retry

        retry_kw = "failed_trial_callback"
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 120}}
    with warnings.catch_warnings():  # heartbeats are "experimental" in optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = Retry(max_retry=config.max_retry)
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=config.heartbeat_interval,
                                          grace_period=config.grace_period, **{retry_kw: callback})


def tuning_fingerprint(exp: Experiment) -> str:
    """Hash of what a study's trials must share: data, features, predictors, env, risk, agent, evaluation, seed and
    the tune section -- not the data file's path, run dir, tracking or device, which may differ between the
    machines of one study (the bars themselves are compared by their hash)."""
    raw = exp.to_dict()
    agent = dict(raw["agent"])
    agent.pop("device", None)
    raw["data"] = {k: v for k, v in raw["data"].items() if k != "path"}
    tune = {k: v for k, v in (raw.get("tune") or {}).items() if k != "n_trials"}
    blob = {k: raw[k] for k in ("data", "features", "predictors", "env", "evaluation", "seed")}
    if raw.get("risk"):  # absent when empty, so studies made before the risk section keep their fingerprint
        blob["risk"] = raw["risk"]
    blob.update(agent=agent, tune=tune)
    return stable_hash(blob)


def study_attrs(exp: Experiment, config: TuneConfig, data_hash: str, fold: int) -> dict[str, Any]:
    return {"fingerprint": tuning_fingerprint(exp), "data_hash": data_hash, "fold": fold, "metric": config.metric,
            "experiment": exp.name}


def open_study(exp: Experiment, config: TuneConfig, storage_url: str, study_name: str, *, attrs: dict[str, Any],
               create: bool):
    """Create (or load) the study and check that it was made from the same experiment, data and fold."""
    import optuna

    storage = make_storage(storage_url, config)
    if create:
        study = optuna.create_study(storage=storage, study_name=study_name, direction=config.direction,
                                    load_if_exists=True, sampler=config.make_sampler(exp.seed),
                                    pruner=config.make_pruner())
    else:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=config.make_sampler(exp.seed),
                                  pruner=config.make_pruner())
    stored = study.user_attrs.get(STUDY_ATTR)
    if stored is None:
        study.set_user_attr(STUDY_ATTR, attrs)
    else:
        for key in ("fingerprint", "data_hash", "fold", "metric"):
            if stored.get(key) != attrs[key]:
                raise TuneError(f"study {study_name!r} in {redact(storage_url)} was made with a different {key} "
                                f"({stored.get(key)!r}, this run: {attrs[key]!r}); pick another --study or storage")
    direction = study.direction.name.lower()
    if direction != config.direction:
        raise TuneError(f"study {study_name!r} {direction}s but tune.direction is {config.direction}")
    return study


def prepare_for_tuning(exp: Experiment, config: TuneConfig | None) -> Prepared:
    """``prepare`` with the fold boundaries of the largest window in the space: every trial, whatever its
    window, trains and validates on the same rows, so trials (and their returns) are comparable."""
    window = max_window(exp.env_config().window, config)
    base = exp if window == exp.env_config().window else apply_values(exp, {"env.window": window})
    return prepare(base)


# --------------------------------------------------------------------------------------------------
# Returns <-> trial attributes
# --------------------------------------------------------------------------------------------------


def encode_returns(returns: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.asarray(returns, dtype="<f4").tobytes(), 9)).decode("ascii")


def decode_returns(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f4").astype(np.float64)


def returns_matrix(trials: list[Any]) -> pd.DataFrame:
    """(bars x trials) validation returns of the trials that recorded them (columns ``trial_<n>``)."""
    columns = {}
    for t in trials:
        text = t.user_attrs.get("val_returns")
        if text:
            columns[f"trial_{t.number}"] = decode_returns(text)
    if not columns:
        return pd.DataFrame()
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise TuneError(f"trials recorded validation returns of different lengths {sorted(lengths)}")
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------------------------------
# The objective and the worker loop
# --------------------------------------------------------------------------------------------------


def _live_states():
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


def validation_rollout(run_dir: Path, exp: Experiment, prepared: Prepared, fold: int) -> Rollout:
    """The run's actor (its kept model, or cash when nothing beat cash) over the fold's validation rows, one
    deterministic pass."""
    rows = prepared.folds[fold].val
    cfg = env_rows_config(exp, prepared, rows, training=False)
    return run_policy(prepared.frame, cfg, rows, load_run_actor(run_dir, exp, cfg))


class Objective:
    """One trial = one ``train`` run on fold ``fold`` with the trial's values; returns the validation score."""

    def __init__(self, exp: Experiment, config: TuneConfig, prepared: Prepared, study_dir: Path, fold: int,
                 n_trials: int) -> None:
        self.exp, self.config, self.prepared = exp, config, prepared
        self.study_dir, self.fold, self.n_trials = Path(study_dir), fold, n_trials
        self.last_error: str | None = None

    def run_dir(self, number: int) -> Path:
        path = self.study_dir / "trials" / f"trial_{number:04d}"
        if path.exists() and any(path.iterdir()):  # another study used this directory before
            path = path.with_name(f"{path.name}-{os.getpid()}-{time.time_ns() % 10**6}")
        return path

    def __call__(self, trial) -> float:
        import optuna

        try:
            return self._run(trial)
        except (optuna.TrialPruned, SurplusTrial):
            raise
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"  # optuna logs the traceback
            raise

    def _run(self, trial) -> float:
        import optuna

        live = _live_states()
        earlier = sum(1 for t in trial.study.get_trials(deepcopy=False, states=live) if t.number < trial.number)
        if earlier >= self.n_trials:
            trial.set_user_attr("surplus", True)
            raise SurplusTrial(f"the study already holds {earlier} live trials before trial {trial.number}")
        config, metric = self.config, self.config.metric
        values = suggest_values(trial, config, self.exp.agent.algo)
        run_dir = self.run_dir(trial.number)
        trial.set_user_attr("values", values)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial_exp = apply_values(self.exp, {**values, "run.dir": str(run_dir)})

        def on_evaluation(index: int, metrics: dict[str, Any]) -> bool | None:
            value = metrics.get(metric)
            if value is None or not math.isfinite(float(value)):
                return None
            trial.report(float(value), index)
            return False if trial.should_prune() else None

        train(trial_exp, progress=False, prepared=self.prepared, fold=self.fold, select_metric=metric,
              select_mode=config.select_mode, on_evaluation=on_evaluation)
        result = json.loads((run_dir / "metrics.json").read_text())
        best = result["best"]["val"] or {}
        trial.set_user_attr("val_metrics", {k: best.get(k) for k in SUMMARY_METRICS})
        trial.set_user_attr("best_timestep", result["best"]["timestep"])
        # the kept model's validation returns, pruned trials included: they are configurations tried too
        rollout = validation_rollout(run_dir, trial_exp, self.prepared, self.fold)
        rollout.equity_frame().to_csv(run_dir / "val_equity.csv", index=False)
        trial.set_user_attr("val_returns", encode_returns(simple_returns(rollout.equity)))
        if result.get("stopped_early"):
            raise optuna.TrialPruned(f"pruned after {len(result['history'])} validation evaluation(s)")
        value = best.get(metric)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"the validation {metric} is undefined ({value!r}); cannot score the trial")
        return float(value)


@dataclass
class _Counts:
    done: int
    running: int
    waiting: int
    total: int


def _counts(study) -> _Counts:
    from optuna.trial import TrialState

    states = Counter(t.state for t in study.get_trials(deepcopy=False))
    return _Counts(states[TrialState.COMPLETE] + states[TrialState.PRUNED], states[TrialState.RUNNING],
                   states[TrialState.WAITING], sum(states.values()))


def _fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def optimize_until(study, objective: Objective, config: TuneConfig, seed: int, n_trials: int) -> None:
    """Run trials in this process until the study holds ``n_trials`` finished ones (see the module doc)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failures = 0
    while True:
        counts = _counts(study)
        if counts.done >= n_trials:
            return
        if counts.waiting == 0 and counts.done + counts.running >= n_trials:
            _fail_stale(study)  # a killed worker's trial becomes WAITING again after the grace period
            time.sleep(POLL_S)
            continue
        study.sampler = config.make_sampler(seed + counts.total)
        finished: list[Any] = []
        objective.last_error = None
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True,
                           callbacks=[lambda _study, trial, out=finished: out.append(trial)])
        except UpdateFinishedTrialError as exc:
            # another worker declared this trial stale (no heartbeat for grace_period) and re-queued it
            log.warning("a trial was finished by another worker while it ran (%s); its retry runs instead", exc)
            continue
        trial = finished[0] if finished else None
        if trial is not None and trial.state == TrialState.FAIL and not trial.user_attrs.get("surplus"):
            failures += 1
            if failures >= config.max_failures:
                raise TuneError(f"{failures} trials failed in a row (tune.max_failures); last: trial {trial.number}: "
                                f"{objective.last_error or 'see the log'}")
        else:
            failures = 0


def run_worker(exp_raw: dict[str, Any], storage_url: str, study_name: str, n_trials: int, study_dir: str,
               fold: int, threads: int | None = None, verbosity: int = logging.INFO,
               prepared: Prepared | None = None) -> None:
    """One worker: load the study and run trials until it holds ``n_trials`` finished ones."""
    import optuna

    optuna.logging.set_verbosity(verbosity)
    if threads:
        import torch

        torch.set_num_threads(threads)
    exp = load_experiment(exp_raw)
    config = exp.tune_config()
    prepared = prepared if prepared is not None else prepare_for_tuning(exp, config)
    attrs = study_attrs(exp, config, bars_hash(prepared.bars), fold)
    study = open_study(exp, config, storage_url, study_name, attrs=attrs, create=False)
    objective = Objective(exp, config, prepared, Path(study_dir), fold, n_trials)
    optimize_until(study, objective, config, exp.seed, n_trials)


def _worker_entry(kwargs: dict[str, Any]) -> None:  # the spawn target
    run_worker(**kwargs)


# --------------------------------------------------------------------------------------------------
# tune(): create, run workers, summarise, report, retrain
# --------------------------------------------------------------------------------------------------


def summarize(study, config: TuneConfig, n_trials: int, storage_url: str) -> dict[str, Any]:
    """best.json: the best trial, trial counts, and over-fitting statistics across the trials."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    finished = states["COMPLETE"] + states["PRUNED"]
    doc: dict[str, Any] = {
        "study": study.study_name, "storage": redact(storage_url), "metric": config.metric,
        "direction": config.direction, "n_trials": n_trials, "finished": finished, "states": dict(states),
        "attrs": study.user_attrs.get(STUDY_ATTR), "best": None,
    }
    if not complete:
        doc["overfitting"] = overfitting_stats(None, finished, pd.DataFrame())
        return doc
    best = study.best_trial
    doc["best"] = {"number": best.number, "value": best.value, "values": best.user_attrs.get("values"),
                   "params": best.params, "run_dir": best.user_attrs.get("run_dir"),
                   "worker": best.user_attrs.get("worker"), "val_metrics": best.user_attrs.get("val_metrics")}
    matrix = returns_matrix([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)])
    selected = decode_returns(best.user_attrs["val_returns"]) if best.user_attrs.get("val_returns") else None
    doc["overfitting"] = overfitting_stats(selected, finished, matrix)
    doc["overfitting"]["note"] = ("per-bar returns on the validation rows the trials were selected on; N counts "
                                  "every finished trial; V[SR] and PBO use the kept checkpoint of every finished "
                                  "trial (pruned ones included: they are configurations tried too)")
    return doc


def retrain_best(exp: Experiment, summary: dict[str, Any], config: TuneConfig, prepared: Prepared, fold: int,
                 run_dir: Path, progress: bool = True) -> Path:
    """Train the best trial's configuration again as a normal run directory (same fold, same seed)."""
    best = summary.get("best")
    if not best:
        raise TuneError("no completed trial to retrain")
    best_exp = apply_values(exp, {**(best["values"] or {}), "run.dir": str(run_dir)})
    return train(best_exp, progress=progress, prepared=prepared, fold=fold, select_metric=config.metric,
                 select_mode=config.select_mode)


def tune(exp: Experiment, n_trials: int | None = None, *, storage: str | None = None, study_name: str | None = None,
         n_jobs: int = 1, study_dir: str | Path | None = None, fold: int = -1, retrain: bool = False,
         prepared: Prepared | None = None, progress: bool = True, report: bool = True) -> TuneResult:
    """Run (or resume) the study until it holds ``n_trials`` finished trials; write best.json and report.html.

    ``n_jobs`` worker processes run here (1 = in this process); ``storage`` is an SQLAlchemy URL (default a
    SQLite file in the study dir); ``fold`` the walk-forward fold trained and validated on (default the last,
    like ``spotgym train``); ``retrain`` trains the best configuration again as a normal run dir.
    """
    import optuna

    config = exp.tune_config()
    n_trials = config.n_trials if n_trials is None else int(n_trials)
    if n_trials < 1:
        raise ExperimentError(f"--trials: must be >= 1, got {n_trials}")
    if n_jobs < 1:
        raise ExperimentError(f"--n-jobs: must be >= 1, got {n_jobs}")
    study_name = study_name or exp.name
    study_dir = Path(study_dir) if study_dir else Path(exp.run.root) / f"tune-{study_name}"
    study_dir.mkdir(parents=True, exist_ok=True)
    storage_url = storage or default_storage(study_dir)
    prepared = prepared if prepared is not None else prepare_for_tuning(exp, config)
    try:
        fold = range(len(prepared.folds))[fold]
    except IndexError:
        raise ExperimentError(f"fold {fold}: the evaluation has {len(prepared.folds)} fold(s)") from None
    verbosity = logging.INFO if progress else logging.WARNING
    optuna.logging.set_verbosity(verbosity)
    attrs = study_attrs(exp, config, bars_hash(prepared.bars), fold)
    study = open_study(exp, config, storage_url, study_name, attrs=attrs, create=True)
    log.info("study %s (%s): %d/%d trials finished", study_name, redact(storage_url), _counts(study).done, n_trials)

    kwargs = {"exp_raw": exp.to_dict(), "storage_url": storage_url, "study_name": study_name, "n_trials": n_trials,
              "study_dir": str(study_dir), "fold": fold, "verbosity": verbosity}
    if n_jobs == 1:
        run_worker(**kwargs, prepared=prepared)
    else:
        _run_processes(kwargs, n_jobs)

    study = open_study(exp, config, storage_url, study_name, attrs=attrs, create=False)
    summary = summarize(study, config, n_trials, storage_url)
    report_path = None
    if report:
        report_path = write_tune_report(study_dir / "report.html", study, summary)
        summary["report"] = str(report_path)
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    result = TuneResult(study_name, redact(storage_url), study_dir, summary, report_path,
                        returns=returns_matrix(finished))
    if retrain and summary.get("best"):
        stamp = pd.Timestamp.now("UTC").strftime("%Y%m%dT%H%M%SZ")
        run_dir = Path(exp.run.dir) if exp.run.dir else study_dir / f"best-trial{summary['best']['number']:04d}-{stamp}"
        result.retrained = retrain_best(exp, summary, config, prepared, fold, run_dir, progress=progress)
        summary["retrained"] = str(result.retrained)
    write_json(study_dir / "best.json", summary)
    return result


def _run_processes(kwargs: dict[str, Any], n_jobs: int) -> None:
    """K spawned workers sharing the study; torch threads split between them; a failure is raised after all end."""
    ctx = mp.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_jobs)
    procs = [ctx.Process(target=_worker_entry, args=({**kwargs, "threads": threads},), name=f"spotgym-tune-{i}")
             for i in range(n_jobs)]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                with contextlib.suppress(Exception):
                    p.join(10)
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise TuneError(f"worker process(es) failed: {bad} (their tracebacks are above)")
