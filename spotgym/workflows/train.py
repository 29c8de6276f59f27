"""``spotgym train``: experiment -> frame (indicators + OOF predictor columns) -> VecTradingEnv -> SB3 agent, with
periodic validation, TensorBoard / W&B tracking and a self-describing run dir."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3.common.vec_env import VecMonitor

from spotgym.agents import make_agent, model_actor, resolve_device
from spotgym.agents.callbacks import ProgressBar, TradingScalars, ValidationCallback
from spotgym.backtest import run_policy
from spotgym.envs import VecTradingEnv
from spotgym.workflows.errors import ExperimentError
from spotgym.workflows.experiment import Experiment
from spotgym.workflows.prepare import Prepared, bars_hash, env_rows_config, prepare, split_record
from spotgym.workflows.runs import git_commit, make_run_dir, package_versions, save_predictors, start_wandb, write_json

__all__ = ["train"]


def train(exp: Experiment, *, progress: bool = True, prepared: Prepared | None = None, fold: int = -1,
          callbacks: list | None = None, select_metric: str = "sharpe", select_mode: str = "max",
          on_evaluation: Callable[[int, dict[str, Any]], bool | None] | None = None) -> Path:
    """Train the experiment's agent on fold ``fold``'s training rows (default: the last fold, validated on
    its validation rows); return the run directory.

    Writes ``config.yaml``, ``manifest.json``, ``model.zip`` (the best validation model by
    ``select_metric`` / ``select_mode``), ``metrics.json``, TensorBoard events under ``tensorboard/`` and an
    offline W&B run under ``wandb/``. ``callbacks`` are extra SB3 callbacks; ``on_evaluation(index,
    metrics)`` sees every validation evaluation and stops training by returning ``False`` (the tuner's
    pruning hook; ``metrics.json`` then says ``"stopped_early": true``).
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
    write_json(run_dir / "manifest.json", manifest)

    torch.manual_seed(exp.seed)
    np.random.seed(exp.seed)
    wandb_run = start_wandb(exp, run_dir)
    try:
        tb_dir = str(run_dir / "tensorboard") if exp.tracking.tensorboard else None
        predictor_metrics = save_predictors(prepared.predictions, run_dir, tb_dir, progress)
        train_cfg = env_rows_config(exp, prepared, fold.train, training=True)
        venv = VecMonitor(VecTradingEnv(frame, exp.agent.n_envs, train_cfg, seed=exp.seed))
        model = make_agent(exp.agent.algo, venv, params=exp.agent.params, policy=exp.agent.policy,
                           seed=exp.seed, device=exp.agent.device, tensorboard_log=tb_dir)
        val_cfg = env_rows_config(exp, prepared, fold.val, training=False)
        timeframe = exp.data.timeframe

        def evaluate(m) -> dict[str, Any]:
            return run_policy(frame, val_cfg, fold.val, model_actor(m)).metrics(timeframe)

        bar = ProgressBar(exp.agent.timesteps, disable=not progress)
        validation = ValidationCallback(evaluate, exp.agent.eval_every, run_dir / "model.zip", select_metric,
                                        progress=bar, select_mode=select_mode, on_evaluation=on_evaluation)
        model.learn(exp.agent.timesteps,
                    callback=[bar, TradingScalars(train_cfg.initial_cash), validation, *(callbacks or [])],
                    tb_log_name="train")
        if not validation.stopped_early and (not validation.history
                                             or validation.history[-1]["timestep"] != model.num_timesteps):
            validation.run_evaluation()  # the final policy competes for "best" too
        train_s = time.perf_counter() - started
        metrics = {
            "best": {"timestep": validation.best_timestep, "val": validation.best_metrics},
            "select": {"metric": select_metric, "mode": select_mode},
            "stopped_early": validation.stopped_early,
            "history": validation.history,
            "timesteps": int(model.num_timesteps),
            "wall_s": round(train_s, 2),
            "predictors": predictor_metrics,
        }
        write_json(run_dir / "metrics.json", metrics)
        if wandb_run is not None:
            wandb_run.summary.update({f"best_val_{k}": v for k, v in (validation.best_metrics or {}).items()
                                      if isinstance(v, int | float)})
    finally:
        if wandb_run is not None:
            wandb_run.finish()
    return run_dir
