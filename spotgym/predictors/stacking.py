"""Out-of-fold stacking: predictor columns that no model wrote for rows it was trained on.

For every predictor of a ``StackingSpec`` the rows after its warm-up are cut into start-anchored
walk-forward blocks of ``refit_every`` rows (``WalkForward(n_folds=None)``). The model that
writes block k is fitted on rows before block k only — minus ``purge`` (>= the label horizon, so
no training label looks into the block) and ``embargo`` — with early stopping on the slice just
before the block. Block boundaries depend only on the start of the data, and fits are seeded
and deterministic, so the column value at row t depends on bars 0..t only: the generic
look-ahead checker, truncation included, passes on every column. Rows before the first block
(or whose inputs are not finite) have no prediction: NaN and ``has_oof`` False, never zero.

Every fold of a return forecaster (a ``return`` target) is also scored against the ARIMA baseline of
``spec.arima`` (``spotgym.predictors.arima``): fitted on the fold's training rows, forecasting its
test rows causally; one fit per training span, shared by the predictors.

Results are cached on disk under a key made of the frame's content (timestamps, prices,
feature values and column names), the stacking config and the library versions, so a second
run with the same data and spec loads instead of training.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from spotgym.core import FeatureFrame, array_digest, stable_hash
from spotgym.data.cache import default_data_dir
from spotgym.data.splits import Fold, WalkForward
from spotgym.features import FeatureSpec
from spotgym.predictors.arima import arima_fold_metrics
from spotgym.predictors.base import BasePredictor, NotEnoughData, library_versions
from spotgym.predictors.config import StackingSpec
from spotgym.predictors.metrics import format_folds, format_summary, summarize
from spotgym.predictors.registry import load_predictor, make_predictor

logger = logging.getLogger("spotgym.predictors")

CACHE_ENV = "SPOTGYM_PREDICTIONS_CACHE"
CACHE_FORMAT = 2  # 2: fold records carry the ARIMA baseline
_OFF = {"", "0", "off", "false", "no", "none"}


@dataclass
class StackingResult:
    """Out-of-fold predictor columns of one frame, with per-fold evaluation.

    ``values``: float32 (rows, len(columns)), NaN where a row has no out-of-fold prediction;
    ``has_oof``: rows where every predictor has one; ``folds``: one dict per (predictor, fold)
    with the test span, training sizes and times, and metrics next to naive baselines;
    ``models``: per predictor, the fitted model of the newest block (the one live ``update``
    should use until the next refit; ``None`` entries never fitted). ``cached``: loaded from
    ``cache_path`` instead of trained.
    """

    columns: tuple[str, ...]
    values: np.ndarray
    has_oof: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, BasePredictor | None] = field(default_factory=dict)
    cache_path: Path | None = None
    cached: bool = False
    wall_s: float = 0.0

    def summary(self) -> dict[str, dict[str, float]]:
        """Fold metrics per predictor averaged over folds (weighted by evaluated rows)."""
        return summarize(self.folds)

    def report(self) -> str:
        """Per-fold lines plus the per-predictor verdicts against the baselines, as text."""
        return format_folds(self.folds) + "\n" + format_summary(self.folds)


def stacking_walk_forward(spec: StackingSpec) -> WalkForward:
    """The start-anchored refit schedule of ``spec``."""
    return WalkForward(n_folds=None, test_size=spec.refit_every, val_size=spec.val_size, min_train=spec.min_train,
                       purge=spec.effective_purge, embargo=spec.embargo, expanding=spec.max_train_rows is None,
                       train_size=spec.max_train_rows)


def predictor_folds(predictor: BasePredictor, frame: FeatureFrame, spec: StackingSpec) -> list[Fold]:
    """Folds of one predictor: anchored at its first row with all inputs finite (a causal anchor)."""
    finite = np.flatnonzero(np.isfinite(predictor.input_matrix(frame)).all(axis=1))
    if finite.size == 0:
        return []
    try:
        return stacking_walk_forward(spec).split(range(int(finite[0]), len(frame)))
    except ValueError:  # too few rows for a first block: no predictions yet
        return []


def oof_predictions(frame: FeatureFrame, spec: StackingSpec, feature_spec: FeatureSpec | None = None, *,
                    cache: str | os.PathLike | bool | None = None, progress: bool | None = None) -> StackingResult:
    """Out-of-fold columns of every predictor in ``spec`` over the indicator ``frame``.

    ``feature_spec``: the indicator spec ``frame`` was built with (attached to the saved models so
    they can ``update`` live). ``cache``: ``None``/``True`` = the default location
    (``$SPOTGYM_PREDICTIONS_CACHE``, where ``0``/``off`` disables it, else
    ``<spotgym cache>/predictions``), a path, or ``False`` for none. ``progress``: a tqdm bar over
    folds plus one printed line of metrics per fold (``None``: only on a terminal); every fold is
    also logged on the ``spotgym.predictors`` logger.
    """
    t0 = time.perf_counter()
    root = resolve_cache_dir(cache)
    entry = root / cache_key(frame, spec) if root is not None else None
    if entry is not None:
        hit = _read_cache(entry, spec)
        if hit is not None:
            logger.info("predictor columns loaded from cache %s", entry)
            hit.wall_s = time.perf_counter() - t0
            return hit

    n = len(frame)
    columns = spec.output_columns
    values = np.full((n, len(columns)), np.nan, dtype=np.float32)
    has_oof = np.ones(n, dtype=bool)
    plan = []
    for config in spec.models:
        proto = make_predictor(config, feature_spec)
        plan.append((config, predictor_folds(proto, frame, spec)))
    folds_out: list[dict[str, Any]] = []
    models: dict[str, BasePredictor | None] = {}
    arima_fits: dict[Any, Any] = {}  # training span -> fitted ARIMA baseline, shared by the return forecasters
    col = 0
    bar = tqdm(total=sum(len(f) for _, f in plan), desc="predictor folds", unit="fold",
               disable=None if progress is None else not progress, leave=False)
    try:
        for config, folds in plan:
            width = len(config.output_columns)
            covered = np.zeros(n, dtype=bool)
            models[config.name] = None
            if not folds:
                logger.warning("%s: too few rows for a first out-of-fold block (min_train=%d + gaps after the "
                               "warm-up); its columns stay NaN", config.name, spec.min_train)
            for fold in folds:
                record = _fold_record(config.name, config.kind, fold, frame)
                model = make_predictor(config, feature_spec)
                t_fit = time.perf_counter()
                try:
                    model.fit(frame, fold.train, val_rows=fold.val)
                except NotEnoughData as exc:
                    logger.warning("%s fold %d: %s; rows [%d, %d) stay without predictions", config.name,
                                   fold.index, exc, fold.test.start, fold.test.stop)
                    folds_out.append({**record, "skipped": str(exc)})
                    bar.update()
                    continue
                record["fit_s"] = time.perf_counter() - t_fit
                t_pred = time.perf_counter()
                out = model.predict(frame, fold.test)
                record["predict_s"] = time.perf_counter() - t_pred
                values[fold.test.start:fold.test.stop, col:col + width] = out
                covered[fold.test.start:fold.test.stop] = np.isfinite(out).all(axis=1)
                for key in ("n_train", "n_val", "epochs", "best_epoch", "n_iter"):
                    if key in model.fit_info:
                        record[key] = model.fit_info[key]
                record.update(model.evaluate(frame, fold.test, out, fold.train))
                if spec.arima is not None and "return" in config.targets:
                    record.update(arima_fold_metrics(frame.close, fold.train, fold.test, out, config.horizon,
                                                     spec.arima, arima_fits))
                folds_out.append(record)
                models[config.name] = model
                line = format_folds([record])
                logger.info(line)
                if not bar.disable:
                    bar.write(line)
                bar.update()
            has_oof &= covered
            col += width
    finally:
        bar.close()
    if folds_out:
        text = format_summary([f for f in folds_out if "skipped" not in f])
        logger.info("out-of-fold evaluation:\n%s", text)
        if progress:
            tqdm.write(text)
    values[~has_oof] = np.nan  # a row is either fully predicted or marked, never half-filled
    result = StackingResult(columns, values, has_oof, folds_out, models, entry, False, time.perf_counter() - t0)
    if entry is not None:
        _write_cache(entry, result)
    return result


# ---------------------------------------------------------------------- disk cache
def resolve_cache_dir(cache: str | os.PathLike | bool | None) -> Path | None:
    """Where predictor columns are cached (``None``: caching off); see ``oof_predictions``."""
    if cache is False:
        return None
    if cache is None or cache is True:
        env = os.environ.get(CACHE_ENV)
        if env is not None:
            return None if env.strip().lower() in _OFF else Path(env).expanduser()
        return default_data_dir() / "predictions"
    return Path(cache).expanduser()


def frame_fingerprint(frame: FeatureFrame) -> str:
    """sha256 of the frame's timestamps, OHLCV, synthetic flags, feature values and column names."""
    arrays = [frame.timestamps_ms, frame.open, frame.high, frame.low, frame.close, frame.volume, frame.synthetic,
              frame.values]
    return array_digest(arrays, extra=list(frame.columns))


def cache_key(frame: FeatureFrame, spec: StackingSpec) -> str:
    """Cache entry name: frame content + stacking config + library versions (which change the numbers)."""
    return stable_hash({"frame": frame_fingerprint(frame), "spec": spec.to_config(), "versions": library_versions(),
                        "format": CACHE_FORMAT}, length=32)


def _write_cache(entry: Path, result: StackingResult) -> None:
    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.savez(tmp / "oof.npz", values=result.values, has_oof=result.has_oof)
        for name, model in result.models.items():
            if model is not None:
                model.save(tmp / "models" / name)
        report = {"format": CACHE_FORMAT, "columns": list(result.columns), "folds": result.folds,
                  "models": [n for n, m in result.models.items() if m is not None], "wall_s": result.wall_s}
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=_plain))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process wrote the same entry first: its content is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        logger.warning("could not write the predictor cache %s: %s", entry, exc)
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(entry: Path, spec: StackingSpec) -> StackingResult | None:
    if not (entry / "report.json").is_file():
        return None
    try:
        report = json.loads((entry / "report.json").read_text())
        if report.get("format") != CACHE_FORMAT or tuple(report["columns"]) != spec.output_columns:
            return None
        with np.load(entry / "oof.npz") as data:
            values, has_oof = data["values"], data["has_oof"]
        models: dict[str, BasePredictor | None] = {m.name: None for m in spec.models}
        for name in report.get("models", []):
            models[name] = load_predictor(entry / "models" / name)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring an unreadable predictor cache entry %s: %s", entry, exc)
        return None
    return StackingResult(tuple(report["columns"]), values, has_oof, report["folds"], models, entry, True)


def _fold_record(name: str, kind: str, fold: Fold, frame: FeatureFrame) -> dict[str, Any]:
    last = min(fold.test.stop, len(frame)) - 1
    return {"predictor": name, "kind": kind, "fold": fold.index, "test_start": fold.test.start,
            "test_stop": fold.test.stop, "test_from": str(frame.index[fold.test.start]),
            "test_to": str(frame.index[last]), "n_train": len(fold.train), "n_val": len(fold.val),
            "fit_s": 0.0, "predict_s": 0.0, "n_eval": 0}


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
