"""``spotgym train``: experiment -> frame (features + OOF predictor columns) -> VecTradingEnv ->
SB3 agent, with periodic validation, TensorBoard / W&B tracking and a self-describing run dir."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.data import Fold, WalkForward, load_bars
from spotgym.experiment import Experiment, ExperimentError
from spotgym.features import FeatureFrame, build_features_with_report

log = logging.getLogger(__name__)
DATA_PATH_ENV = "SPOTGYM_DATA_PATH"
TRACKED_PACKAGES = ("spotgym", "numpy", "pandas", "numba", "torch", "gymnasium", "stable-baselines3",
                    "sb3-contrib", "ta", "ccxt", "scikit-learn")


@dataclass
class Prepared:
    """What every workflow (train, backtest, tune, evaluate) starts from."""

    bars: pd.DataFrame
    frame: FeatureFrame
    folds: list[Fold]
    predictions: Any = None  # spotgym.predictors.StackingResult when the spec names predictors


def load_experiment_bars(exp: Experiment) -> pd.DataFrame:
    """The experiment's bars: ``data.path`` (or ``$SPOTGYM_DATA_PATH``), else the download cache,
    brought up to date from the exchange first (resumable, so this only fetches newer bars)."""
    d = exp.data
    source = d.path or os.environ.get(DATA_PATH_ENV)
    if not source:
        from spotgym.data.download import DownloadError, download_ohlcv

        try:
            result = download_ohlcv(d.symbol, d.timeframe, since=d.start, exchange=d.exchange)
        except DownloadError as exc:
            raise DownloadError(f"{exc}\n(no connection to {d.exchange}? train on a file instead: "
                                f"--set data.path=FILE, or set ${DATA_PATH_ENV})") from exc
        source = str(result.path)
    bars = load_bars(source, d.gap_policy, start=d.start, end=d.end)
    if bars.attrs["timeframe"] != d.timeframe:
        raise ExperimentError(f"data.timeframe is {d.timeframe} but {source} holds {bars.attrs['timeframe']} bars")
    return bars


def bars_hash(bars: pd.DataFrame) -> str:
    """Fingerprint of the bars (timestamps + OHLCV bytes) for manifests and caches."""
    h = hashlib.sha256(bars.index.as_unit("ms").asi8.tobytes())
    h.update(np.ascontiguousarray(bars[["open", "high", "low", "close", "volume"]].to_numpy(np.float64)).tobytes())
    return h.hexdigest()[:16]


def prepare(exp: Experiment, bars: pd.DataFrame | None = None, *, progress: bool = False) -> Prepared:
    """Load bars, build the frame (indicators + out-of-fold predictor columns, cached on disk), and split
    the usable rows into the evaluation's walk-forward folds."""
    bars = load_experiment_bars(exp) if bars is None else bars
    build = build_features_with_report(bars, exp.feature_spec(), progress=progress)
    frame = build.frame
    ev = exp.evaluation
    splitter = WalkForward(n_folds=ev.folds, val_size=ev.val_size, test_size=ev.test_size, purge=ev.purge,
                           embargo=ev.embargo, min_train=0.2)
    folds = splitter.split(usable_rows(frame, exp.env_config().window))
    return Prepared(bars, frame, folds, build.predictions)


def usable_rows(frame: FeatureFrame, window: int) -> range:
    """Rows the env can decide on: every row of a full observation window is valid (past the warm-up)."""
    first = frame.first_valid_row
    if first < 0 or len(frame) - (first + window - 1) < 2:
        raise ExperimentError("too few valid rows in the feature frame: the data are shorter than the warm-up "
                              "plus one observation window")
    return range(first + window - 1, len(frame))


def env_rows_config(exp: Experiment, rows: range, *, training: bool):
    """The env config for a row range: training draws random episodes, evaluation one pass."""
    cfg = exp.env_config()
    episode = cfg.episode_length if training else None
    if training and episode is not None and episode > len(rows) - 1:
        episode = len(rows) - 1
    return cfg.replace(start_row=rows.start, end_row=rows.stop, episode_length=episode)


def split_record(frame: FeatureFrame, rows: range) -> dict[str, Any]:
    """A split as rows and as times (first decision bar, bar after the last decision), so a backtest finds
    the same bars even if the data source has grown since training."""
    return {"rows": [rows.start, rows.stop], "first": frame.index[rows.start].isoformat(),
            "last": frame.index[rows.stop - 1].isoformat()}


def save_predictors(predictions: Any, run_dir: Path, tb_dir: str | None, verbose: bool) -> dict[str, Any] | None:
    """Keep the predictors' newest fitted models (for ``backtest --data`` and live use) under
    ``RUN_DIR/predictors/<name>/``, log their out-of-fold metrics per fold to TensorBoard
    (``predictors/<name>/<metric>``, step = fold) and return them for ``metrics.json``."""
    if predictions is None:
        return None
    for name, model in predictions.models.items():
        if model is not None:
            model.save(run_dir / "predictors" / name)
    if tb_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(Path(tb_dir) / "predictors")) as writer:
            skip = {"fold", "test_start", "test_stop"}
            for record in predictions.folds:
                for key, value in record.items():
                    if key not in skip and isinstance(value, int | float) and np.isfinite(value):
                        writer.add_scalar(f"predictors/{record['predictor']}/{key}", value, record["fold"])
    if verbose:
        print(predictions.report())
    return {"summary": predictions.summary(), "folds": predictions.folds, "cached": predictions.cached}


def make_run_dir(exp: Experiment) -> Path:
    if exp.run.dir:
        path = Path(exp.run.dir)
    else:
        stamp = pd.Timestamp.now("UTC").strftime("%Y%m%dT%H%M%SZ")
        path = Path(exp.run.root) / f"{exp.name}-{stamp}"
    if path.exists() and any(path.iterdir()):
        raise ExperimentError(f"run.dir {path} exists and is not empty: pick another (--set run.dir=...)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_json(path: Path, data: Any) -> None:
    from spotgym.backtest import to_jsonable

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def start_wandb(exp: Experiment, run_dir: Path):
    """A W&B run mirroring TensorBoard; offline unless a key is configured (or disabled)."""
    t = exp.tracking
    if not t.wandb or t.wandb_mode == "disabled":
        return None
    mode = t.wandb_mode
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    return wandb.init(project=t.wandb_project, name=run_dir.name, dir=str(run_dir), mode=mode,
                      config=exp.to_dict(), sync_tensorboard=t.tensorboard, reinit="finish_previous")


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
    import torch
    from stable_baselines3.common.vec_env import VecMonitor

    from spotgym.agents.callbacks import ProgressBar, TradingScalars, ValidationCallback
    from spotgym.agents.registry import make_agent, resolve_device
    from spotgym.agents.rollout import model_actor, run_policy
    from spotgym.envs import VecTradingEnv

    started = time.perf_counter()
    prepared = prepare(exp, progress=progress) if prepared is None else prepared
    try:
        fold_index = range(len(prepared.folds))[fold]
    except IndexError:
        raise ExperimentError(f"fold {fold}: the evaluation has {len(prepared.folds)} fold(s)") from None
    frame, fold = prepared.frame, prepared.folds[fold_index]
    run_dir = make_run_dir(exp)
    (run_dir / "config.yaml").write_text(exp.to_yaml())
    spec = exp.feature_spec()
    manifest = {
        "experiment": exp.name, "experiment_hash": exp.hash, "created": pd.Timestamp.now("UTC").isoformat(),
        "data": {"source": prepared.bars.attrs.get("source"), "hash": bars_hash(prepared.bars),
                 "rows": len(prepared.bars), "timeframe": prepared.bars.attrs.get("timeframe"),
                 "first": prepared.bars.index[0].isoformat(), "last": prepared.bars.index[-1].isoformat()},
        "features": {"hash": spec.hash, "indicators_hash": spec.indicator_spec.hash, "columns": list(frame.columns)},
        "predictors": None if spec.predictors is None else
        {"models": {m.name: m.hash for m in spec.predictors.models}, "refit_every": spec.predictors.refit_every},
        "split": {name: split_record(frame, rows) for name, rows in
                  (("train", fold.train), ("val", fold.val), ("test", fold.test))},
        "fold": {"index": fold_index, "of": len(prepared.folds)},
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
        train_cfg = env_rows_config(exp, fold.train, training=True)
        venv = VecMonitor(VecTradingEnv(frame, exp.agent.n_envs, train_cfg, seed=exp.seed))
        model = make_agent(exp.agent.algo, venv, params=exp.agent.params, policy=exp.agent.policy,
                           seed=exp.seed, device=exp.agent.device, tensorboard_log=tb_dir)
        val_cfg = env_rows_config(exp, fold.val, training=False)
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
