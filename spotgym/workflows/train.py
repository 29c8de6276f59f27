"""``spotgym train``: experiment -> frame (indicators + OOF predictor columns) -> VecTradingEnv -> SB3 agent (or an
ensemble of agents and rules), with periodic validation, TensorBoard / W&B tracking and a self-describing run dir.

Model selection is honest about cash: a checkpoint is kept only if it beats staying in cash on validation (a
positive return after fees); when none does, the run says so (``metrics.json`` ``"selected": "cash"``, the
command's summary, the backtest report) and its actor holds cash (``load_run_actor``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3.common.vec_env import VecMonitor
from tqdm.auto import tqdm

from spotgym.agents import (
    EnsembleActor,
    EnsembleConfig,
    cash_actor,
    load_model,
    make_agent,
    model_actor,
    resolve_device,
    rule_actor,
)
from spotgym.agents.callbacks import ProgressBar, TradingScalars, ValidationCallback, beats_cash
from spotgym.backtest import run_policy
from spotgym.core import FeatureFrame
from spotgym.envs import Actor, EnvConfig, PooledVecEnv, VecTradingEnv
from spotgym.workflows.errors import ExperimentError
from spotgym.workflows.experiment import Experiment, apply_values
from spotgym.workflows.prepare import Prepared, bars_hash, env_rows_config, pool_rows, prepare, split_record
from spotgym.workflows.runs import git_commit, make_run_dir, package_versions, save_predictors, start_wandb, write_json

__all__ = ["load_run_actor", "selection_summary", "train"]


def train(exp: Experiment, *, progress: bool = True, prepared: Prepared | None = None, fold: int = -1,
          callbacks: list | None = None, select_metric: str = "sharpe", select_mode: str = "max",
          on_evaluation: Callable[[int, dict[str, Any]], bool | None] | None = None) -> Path:
    """Train the experiment's agent on fold ``fold``'s training rows (default: the last fold, validated on
    its validation rows); return the run directory.

    Writes ``config.yaml``, ``manifest.json``, ``model.zip`` (the best validation model by ``select_metric`` /
    ``select_mode`` among those that beat cash), ``metrics.json`` (``selected``: ``agent``, ``ensemble`` or
    ``cash``), TensorBoard events under ``tensorboard/`` and an offline W&B run under ``wandb/``. With
    ``agent.ensemble``, each trained member gets ``members/<name>/model.zip`` (trained in parallel processes
    when cores allow) and the ensemble is validated as one actor. ``callbacks`` are extra SB3 callbacks;
    ``on_evaluation(index, metrics)`` sees every validation evaluation and stops training by returning
    ``False`` (the tuner's pruning hook; ``metrics.json`` then says ``"stopped_early": true``).
    """
    started = time.perf_counter()
    prepared = prepare(exp, progress=progress) if prepared is None else prepared
    try:
        fold_index = range(len(prepared.folds))[fold]
    except IndexError:
        raise ExperimentError(f"fold {fold}: the evaluation has {len(prepared.folds)} fold(s)") from None
    frame, fold = prepared.frame, prepared.folds[fold_index]
    run_dir = make_run_dir(exp)
    (run_dir / "config.yaml").write_text(exp.to_yaml())
    spec = exp.frame_spec()
    manifest = {
        "experiment": exp.name, "experiment_hash": exp.hash, "created": pd.Timestamp.now("UTC").isoformat(),
        "data": {"source": prepared.bars.attrs.get("source"), "hash": bars_hash(prepared.bars),
                 "rows": len(prepared.bars), "timeframe": prepared.bars.attrs.get("timeframe"),
                 "first": prepared.bars.index[0].isoformat(), "last": prepared.bars.index[-1].isoformat()},
        "features": {"hash": spec.hash, "indicators_hash": spec.features.hash, "columns": list(frame.columns)},
        "predictors": None if spec.predictors is None else
        {"models": {m.name: m.hash for m in spec.predictors.models}, "refit_every": spec.predictors.refit_every},
        "split": {name: split_record(frame, rows) for name, rows in
                  (("train", fold.train), ("val", fold.val), ("test", fold.test))},
        "fold": {"index": fold_index, "of": len(prepared.folds)},
        "venue": {"exchange": exp.data.exchange, "symbol": exp.data.symbol, "rules": prepared.rules.to_dict(),
                  "rules_source": prepared.rules_source},
        "seed": exp.seed, "device": resolve_device(exp.agent.device),
        "git_commit": git_commit(), "versions": package_versions(),
    }
    train_cfg = env_rows_config(exp, prepared, fold.train, training=True)
    pool_parts = _pool_training_parts(exp, prepared, fold.train, train_cfg)
    if pool_parts:
        manifest["pool"] = [{"symbol": part.symbol, "source": part.bars.attrs.get("source"),
                             "hash": bars_hash(part.bars), "rules": part.rules.to_dict(),
                             "rules_source": part.rules_source, "train": split_record(part.frame, range(cfg.start_row,
                                                                                                        cfg.end_row))}
                            for part, (_, cfg) in zip(prepared.pool, pool_parts)]
    write_json(run_dir / "manifest.json", manifest)

    wandb_run = start_wandb(exp, run_dir)
    try:
        tb_dir = str(run_dir / "tensorboard") if exp.tracking.tensorboard else None
        predictor_metrics = save_predictors(prepared.predictions, run_dir, tb_dir, progress)
        for part in prepared.pool or []:
            save_predictors(part.predictions, run_dir / "pool" / part.symbol.replace("/", "_"), None, False)
        val_cfg = env_rows_config(exp, prepared, fold.val, training=False)
        job = _Job(frame, train_cfg, val_cfg, fold.val, exp.data.timeframe, pool_parts)
        ensemble = exp.agent.ensemble_config()
        if ensemble is None:
            result = train_agent(exp, job, run_dir, tb_dir, progress=progress, callbacks=callbacks,
                                 select_metric=select_metric, select_mode=select_mode, on_evaluation=on_evaluation)
            metrics = {**result, "selected": "agent" if result["beats_cash"] else "cash"}
        else:
            metrics = _train_ensemble(exp, ensemble, job, run_dir, tb_dir, progress, select_metric, select_mode)
        metrics["wall_s"] = round(time.perf_counter() - started, 2)
        metrics["predictors"] = predictor_metrics
        write_json(run_dir / "metrics.json", metrics)
        if wandb_run is not None:
            best = (metrics.get("best") or {}).get("val") or {}
            wandb_run.summary.update({f"best_val_{k}": v for k, v in best.items() if isinstance(v, int | float)})
            wandb_run.summary["selected"] = metrics["selected"]
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    return run_dir


def _pool_training_parts(exp: Experiment, prepared: Prepared, rows: range,
                         train_cfg: EnvConfig) -> list[tuple[FeatureFrame, EnvConfig]]:
    """(frame, config) of each pooled symbol over the training split's dates."""
    parts = []
    for part in prepared.pool or []:
        span = pool_rows(part, prepared.frame, rows, train_cfg.window)
        episode = train_cfg.episode_length
        if len(span) < 2 or (episode is not None and len(span) - 1 < min(episode, 2)):
            raise ExperimentError(f"data.pool {part.symbol}: no bars to train on over the training split's dates "
                                  f"({prepared.frame.index[rows.start]} to {prepared.frame.index[rows.stop - 1]})")
        cfg = part.env_config(exp).replace(start_row=span.start, end_row=span.stop,
                                           episode_length=None if episode is None else min(episode, len(span) - 1))
        parts.append((part.frame, cfg))
    return parts


class _Job:
    """What every agent of a run trains and validates on (picklable, for the member processes)."""

    def __init__(self, frame: FeatureFrame, train_cfg: EnvConfig, val_cfg: EnvConfig, val_rows: range,
                 timeframe: str, pool_parts: list[tuple[FeatureFrame, EnvConfig]] | None = None) -> None:
        self.frame, self.train_cfg, self.val_cfg = frame, train_cfg, val_cfg
        self.val_rows, self.timeframe = val_rows, timeframe
        self.pool_parts = pool_parts or []

    def train_env(self, n_envs: int, seed: int):
        """The training VecEnv: the main symbol's accounts, or with a pool one VecEnv over every symbol."""
        if not self.pool_parts:
            return VecTradingEnv(self.frame, n_envs, self.train_cfg, seed=seed)
        parts = [(self.frame, self.train_cfg), *self.pool_parts]
        if n_envs < len(parts):
            raise ExperimentError(f"agent.n_envs: {n_envs} accounts cannot cover {len(parts)} symbols (main + pool)")
        return PooledVecEnv(parts, n_envs, seed=seed)

    def validate(self, actor: Actor) -> dict[str, Any]:
        return run_policy(self.frame, self.val_cfg, self.val_rows, actor).metrics(self.timeframe)


def train_agent(exp: Experiment, job: _Job, out_dir: Path, tb_dir: str | None, *, progress: bool = True,
                callbacks: list | None = None, select_metric: str = "sharpe", select_mode: str = "max",
                on_evaluation: Callable[[int, dict[str, Any]], bool | None] | None = None,
                tb_name: str = "train") -> dict[str, Any]:
    """Train one SB3 agent of ``exp.agent`` on ``job``; the kept checkpoint goes to ``out_dir/model.zip``.
    Returns its part of ``metrics.json`` (best, history, ``beats_cash``...)."""
    torch.manual_seed(exp.seed)
    np.random.seed(exp.seed)
    inner = job.train_env(exp.agent.n_envs, exp.seed)
    venv = VecMonitor(inner)
    model = make_agent(exp.agent.algo, venv, params=exp.agent.params, policy=exp.agent.policy,
                       seed=exp.seed, device=exp.agent.device, tensorboard_log=tb_dir)
    bar = ProgressBar(exp.agent.timesteps, disable=not progress)
    validation = ValidationCallback(lambda m: job.validate(model_actor(m)), exp.agent.eval_every,
                                    out_dir / "model.zip", select_metric, progress=bar, select_mode=select_mode,
                                    on_evaluation=on_evaluation)
    model.learn(exp.agent.timesteps,
                callback=[bar, TradingScalars(job.train_cfg.initial_cash), validation, *(callbacks or [])],
                tb_log_name=tb_name)
    if not validation.stopped_early and (not validation.history
                                         or validation.history[-1]["timestep"] != model.num_timesteps):
        validation.run_evaluation()  # the final policy competes for "best" too
    return {
        "best": {"timestep": validation.best_timestep, "val": validation.best_metrics},
        "beats_cash": validation.found_beats_cash,
        "select": {"metric": select_metric, "mode": select_mode},
        "stopped_early": validation.stopped_early,
        "history": validation.history,
        "timesteps": int(model.num_timesteps),
        "algo": exp.agent.algo,
        "seed": exp.seed,
        "accounts": ({str(inner.symbols[off]): int(n) for off, n in zip(inner.offsets, inner.counts)}
                     if isinstance(inner, PooledVecEnv) else {str(job.frame.symbol): int(exp.agent.n_envs)}),
    }


# ---------------------------------------------------------------------- ensembles
def member_experiment(exp: Experiment, ensemble: EnsembleConfig, name: str) -> Experiment:
    """The experiment one trained member runs: the agent section with the member's overrides, no ensemble."""
    k, member = next((k, m) for k, m in enumerate(ensemble.members) if m.name == name)
    agent = {**exp.agent.__dict__, "ensemble": None}
    if member.algo is not None and member.algo != exp.agent.algo:
        agent["algo"], agent["params"] = member.algo, {}
    agent["params"] = {**agent["params"], **member.params}
    if member.timesteps is not None:
        agent["timesteps"] = member.timesteps
    seed = member.seed if member.seed is not None else exp.seed + k
    return apply_values(exp, {"agent": agent, "seed": seed})


def _train_member(exp: Experiment, ensemble: EnsembleConfig, name: str, job: _Job, out_dir: Path,
                  tb_dir: str | None, threads: int, progress: bool, select_metric: str,
                  select_mode: str) -> tuple[str, dict[str, Any]]:
    if threads:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = train_agent(member_experiment(exp, ensemble, name), job, out_dir, tb_dir, progress=progress,
                         select_metric=select_metric, select_mode=select_mode, tb_name=f"member_{name}")
    return name, result


def _train_ensemble(exp: Experiment, ensemble: EnsembleConfig, job: _Job, run_dir: Path, tb_dir: str | None,
                    progress: bool, select_metric: str, select_mode: str) -> dict[str, Any]:
    trained = [m.name for m in ensemble.members if m.trained]
    cores = os.cpu_count() or 1
    workers = min(ensemble.workers or cores, len(trained), cores)
    results: dict[str, dict[str, Any]] = {}
    args = dict(job=job, tb_dir=tb_dir, select_metric=select_metric, select_mode=select_mode)
    if workers <= 1:
        for name in trained:
            results[name] = _train_member(exp, ensemble, name, out_dir=run_dir / "members" / name, threads=0,
                                          progress=progress, **args)[1]
    else:  # one process per member at a time, the cores shared out; spawn: no forked torch / numba threads
        threads = max(1, cores // workers)
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_train_member, exp, ensemble, name, out_dir=run_dir / "members" / name,
                                   threads=threads, progress=False, **args) for name in trained]
            for future in tqdm(as_completed(futures), total=len(futures), desc="ensemble members",
                               disable=not progress, unit="member"):
                name, result = future.result()
                results[name] = result
    actor = load_run_actor(run_dir, exp, job.val_cfg, members=results)
    val = job.validate(actor)
    ok = beats_cash(val)
    return {"best": {"timestep": None, "val": val}, "beats_cash": ok, "selected": "ensemble" if ok else "cash",
            "ensemble": ensemble.to_dict(),
            "members": {m.name: results.get(m.name, {"rule": m.rule}) for m in ensemble.members}}


# ---------------------------------------------------------------------- the actor of a run
def load_run_actor(run_dir: str | Path, exp: Experiment, config: EnvConfig, *,
                   members: dict[str, dict[str, Any]] | None = None, checkpoint: bool = False) -> Actor:
    """The actor a run trades with, for an env built with ``config``: its kept model, its ensemble (members
    that did not beat cash on validation hold cash), or cash when the run's selection says nothing beat it.
    ``checkpoint=True``: the kept checkpoints trade even where the selection chose cash."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    if metrics.get("selected") == "cash" and not checkpoint:
        return cash_actor(config)
    ensemble = exp.agent.ensemble_config()
    if ensemble is None:
        return model_actor(load_model(run_dir, exp.agent.algo))
    members = members if members is not None else metrics.get("members", {})
    actors = []
    for m in ensemble.members:
        if not m.trained:
            actors.append((m.name, rule_actor(m.rule, config)))
        elif not checkpoint and not (members.get(m.name) or {}).get("beats_cash", False):
            actors.append((m.name, cash_actor(config)))
        else:
            algo = (members[m.name] or {}).get("algo") or m.algo or exp.agent.algo
            actors.append((m.name, model_actor(load_model(run_dir / "members" / m.name, algo))))
    return EnsembleActor(actors, config, ensemble.combine)


def selection_summary(run_dir: str | Path) -> str:
    """One line on what the run kept: the checkpoint and its validation result, or that nothing beat cash."""
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    val = (metrics.get("best") or {}).get("val") or {}
    result = (f"validation return {100 * (val.get('total_return') or 0):+.1f} %, Sharpe {val.get('sharpe') or 0:.2f}, "
              f"turnover {val.get('turnover_annual') or 0:.0f}x/yr, fees {val.get('fees_paid') or 0:,.0f}")
    selected = metrics.get("selected", "agent")
    if selected == "cash":
        return (f"no checkpoint beat staying in cash on validation (best: {result}): the run holds cash; its "
                f"backtest and live actor trade nothing")
    if selected == "ensemble":
        kept = sum(1 for m in (metrics.get("members") or {}).values() if m.get("beats_cash") or m.get("rule"))
        return f"ensemble of {len(metrics.get('members') or {})} members ({kept} trading): {result}"
    return f"kept the checkpoint at {metrics['best']['timestep']:,} steps: {result}"
