"""A run directory and what describes it: the folder itself, the manifest's provenance (git commit, package
versions), JSON written atomically, the W&B run, the saved predictors."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest import to_jsonable
from spotgym.workflows.errors import ExperimentError
from spotgym.workflows.experiment import Experiment

__all__ = ["TRACKED_PACKAGES", "git_commit", "make_run_dir", "package_versions", "save_predictors", "start_wandb",
           "write_json"]

TRACKED_PACKAGES = ("spotgym", "numpy", "pandas", "numba", "torch", "gymnasium", "stable-baselines3",
                    "sb3-contrib", "ta", "ccxt", "scikit-learn")


def make_run_dir(exp: Experiment) -> Path:
    """``run.dir`` exactly, else ``<run.root>/<name>-<UTC time>``; an existing non-empty folder is an error."""
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
    """Strict JSON (no NaN), written to a temporary file and renamed: a reader never sees half a file."""
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
