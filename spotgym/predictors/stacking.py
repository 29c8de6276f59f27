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

Pooled fitting (``pooled_oof_predictions``, ``StackingSpec.fit = "pooled"``): several symbols' frames (same
indicator columns, each normalised on its own bars) share every refit. The schedule is the first (main)
frame's; block k starts at the main frame's time T_k. Its model is fitted on one combined frame: each
symbol's rows with times before T_k, the symbols separated by runs of NaN rows (longer than any
predictor's lookback + label horizon, so no input window and no label crosses from one symbol into
another, and every label past a symbol's cut is NaN). Training and validation rows of each symbol are those
whose times fall in the main fold's training / validation spans (expanding: from the symbol's first row).
The model then predicts every symbol's own rows with times in [T_k, T_k+1) (the last block: to the end of
each symbol's data). Nothing at or after T_k, of any symbol, reaches block k's model.

Results are cached on disk under a key made of the frame's content (timestamps, prices,
feature values and column names; with pooled fitting, every symbol's frame and the fit mode), the
stacking config and the library versions, so a second run with the same data and spec loads instead of
training.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
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


# ---------------------------------------------------------------------- pooled fitting
def pooled_oof_predictions(frames: Sequence[FeatureFrame], spec: StackingSpec, feature_spec: FeatureSpec | None = None,
                           *, cache: str | os.PathLike | bool | None = None,
                           progress: bool | None = None) -> list[StackingResult]:
    """Out-of-fold columns of ``spec``'s predictors for several symbols' frames, each refit block fitted once on
    the rows of every symbol (see the module docstring) — one ``StackingResult`` per frame, in order.

    ``frames[0]`` is the main symbol: its rows set the refit schedule (as ``oof_predictions`` would) and its
    fold records carry the ARIMA baseline. Every result's ``models`` are the same newest-block models. Fold
    records give ``n_train`` / ``n_val`` over all symbols (as the model counted them), ``fit: pooled`` and
    ``train_rows``: per symbol, its training rows with finite inputs. A symbol's rows before the first block
    (in time) have no prediction; its fold metrics (and ARIMA baseline) are computed on its own rows, against
    naive baselines from its own training span (none when that span is empty). ``cache`` / ``progress``: see ``oof_predictions``.
    """
    t0 = time.perf_counter()
    frames = list(frames)
    if not frames:
        raise ValueError("pooled_oof_predictions needs at least one frame")
    for k, other in enumerate(frames[1:], start=1):
        if other.columns != frames[0].columns:
            raise ValueError(f"pooled fitting needs the same feature columns in every frame; frame {k} "
                             f"({other.symbol}) has {list(other.columns)}, frame 0 ({frames[0].symbol}) "
                             f"{list(frames[0].columns)}")
    root = resolve_cache_dir(cache)
    entry = root / pooled_cache_key(frames, spec) if root is not None else None
    if entry is not None:
        hits = _read_pooled_cache(entry, spec, len(frames))
        if hits is not None:
            logger.info("pooled predictor columns loaded from cache %s", entry)
            for hit in hits:
                hit.wall_s = time.perf_counter() - t0
            return hits

    main = frames[0]
    columns = spec.output_columns
    names = [f.symbol or f"frame{k}" for k, f in enumerate(frames)]
    times = [f.timestamps_ms for f in frames]
    values = [np.full((len(f), len(columns)), np.nan, dtype=np.float32) for f in frames]
    has_oof = [np.ones(len(f), dtype=bool) for f in frames]
    folds_out: list[list[dict[str, Any]]] = [[] for _ in frames]
    arima_fits: list[dict[Any, Any]] = [{} for _ in frames]  # per symbol: training span -> fitted ARIMA
    models: dict[str, BasePredictor | None] = {}
    plan = [(config, predictor_folds(make_predictor(config, feature_spec), main, spec)) for config in spec.models]
    gap = separator_rows(spec, feature_spec)
    expanding = spec.max_train_rows is None
    col = 0
    bar = tqdm(total=sum(len(f) for _, f in plan), desc="pooled predictor folds", unit="fold",
               disable=None if progress is None else not progress, leave=False)
    try:
        for config, folds in plan:
            width = len(config.output_columns)
            covered = [np.zeros(len(f), dtype=bool) for f in frames]
            models[config.name] = None
            if not folds:
                logger.warning("%s: too few rows of %s for a first out-of-fold block (min_train=%d + gaps after the "
                               "warm-up); its columns stay NaN in every pooled symbol", config.name, names[0],
                               spec.min_train)
            starts = [int(times[0][fold.test.start]) for fold in folds]
            proto = make_predictor(config, feature_spec)
            usable = [proto.predictable(proto.input_matrix(f)) if folds else None for f in frames]
            for k, fold in enumerate(folds):
                spans = [_symbol_spans(fold, t, times[0], starts, k, expanding, main=(s == 0))
                         for s, t in enumerate(times)]
                combined, train, val = _combined_frame(frames, spans, gap)
                records = [_fold_record(config.name, config.kind, fold, main)]
                records += [_pool_fold_record(config.name, config.kind, fold.index, frames[s], spans[s])
                            for s in range(1, len(frames))]
                train_rows = {names[s]: int(usable[s][spans[s]["train"].start:spans[s]["train"].stop].sum())
                              for s in range(len(frames))}  # rows with finite inputs, per symbol
                model = make_predictor(config, feature_spec)
                t_fit = time.perf_counter()
                try:
                    model.fit(combined, train, val_rows=val)
                except NotEnoughData as exc:
                    logger.warning("%s pooled fold %d: %s; the block stays without predictions", config.name,
                                   fold.index, exc)
                    for s, record in enumerate(records):
                        folds_out[s].append({**record, "fit": "pooled", "train_rows": train_rows,
                                             "skipped": str(exc)})
                    bar.update()
                    continue
                fit_s = time.perf_counter() - t_fit
                for s, record in enumerate(records):
                    test = spans[s]["test"]
                    record.update(fit="pooled", train_rows=train_rows, fit_s=fit_s)
                    for key in ("n_train", "n_val", "epochs", "best_epoch", "n_iter"):
                        if key in model.fit_info:
                            record[key] = model.fit_info[key]
                    if len(test):
                        t_pred = time.perf_counter()
                        out = model.predict(frames[s], test)
                        record["predict_s"] = time.perf_counter() - t_pred
                        values[s][test.start:test.stop, col:col + width] = out
                        covered[s][test.start:test.stop] = np.isfinite(out).all(axis=1)
                        own_train = spans[s]["train"]
                        if len(own_train):  # the naive baselines need the symbol's own training labels
                            record.update(model.evaluate(frames[s], test, out, own_train))
                            if spec.arima is not None and "return" in config.targets:
                                record.update(arima_fold_metrics(frames[s].close, own_train, test, out,
                                                                 config.horizon, spec.arima, arima_fits[s]))
                    folds_out[s].append(record)
                models[config.name] = model
                line = format_folds([records[0]]) + f" (pooled: {train_rows})"
                logger.info(line)
                if not bar.disable:
                    bar.write(line)
                bar.update()
            for s in range(len(frames)):
                has_oof[s] &= covered[s]
            col += width
    finally:
        bar.close()
    for s, records in enumerate(folds_out):
        done = [f for f in records if "skipped" not in f]
        if done:
            text = format_summary(done)
            logger.info("pooled out-of-fold evaluation, %s:\n%s", names[s], text)
            if progress:
                tqdm.write(f"{names[s]}:\n{text}")
        values[s][~has_oof[s]] = np.nan
    wall = time.perf_counter() - t0
    results = [StackingResult(columns, values[s], has_oof[s], folds_out[s], dict(models), entry, False, wall)
               for s in range(len(frames))]
    if entry is not None:
        _write_pooled_cache(entry, results)
    return results


def separator_rows(spec: StackingSpec, feature_spec: FeatureSpec | None = None) -> int:
    """NaN rows between two symbols in a pooled training frame: longer than any predictor's lookback plus its
    label horizon (and a regime model's volatility window), so no input window or label spans two symbols."""
    longest = 0
    for config in spec.models:
        need = make_predictor(config, feature_spec).lookback + config.horizon + int(getattr(config, "vol_window", 0))
        longest = max(longest, need)
    return longest + 1


def _between(times: np.ndarray, lo: int | None, hi: int | None) -> range:
    """Rows of a sorted timestamp array with lo <= time < hi (None: unbounded)."""
    start = 0 if lo is None else int(np.searchsorted(times, lo, side="left"))
    stop = len(times) if hi is None else int(np.searchsorted(times, hi, side="left"))
    return range(start, max(start, stop))


def _symbol_spans(fold: Fold, times: np.ndarray, main_times: np.ndarray, starts: list[int], k: int,
                  expanding: bool, *, main: bool) -> dict[str, Any]:
    """A symbol's rows of the main ``fold``, by time: ``train`` / ``val`` (inside the main fold's spans; expanding:
    from the symbol's first row), ``test`` (block k's times), and ``cut`` (rows before the block's start)."""
    block_start = starts[k]
    block_stop = starts[k + 1] if k + 1 < len(starts) else None
    test = _between(times, block_start, block_stop)
    cut = int(np.searchsorted(times, block_start, side="left"))
    if main:  # the main symbol: its fold rows exactly, as oof_predictions uses them
        return {"train": fold.train, "val": fold.val, "test": fold.test, "cut": fold.test.start}
    if len(fold.train):
        lo = None if expanding else int(main_times[fold.train.start])
        train = _between(times, lo, int(main_times[fold.train.stop]))
    else:
        train = range(0)
    val = _between(times, int(main_times[fold.val.start]), int(main_times[fold.val.stop])) if len(fold.val) \
        else range(0)
    return {"train": train, "val": val, "test": test, "cut": cut}


def _combined_frame(frames: list[FeatureFrame], spans: list[dict[str, Any]],
                    gap: int) -> tuple[FeatureFrame, np.ndarray, np.ndarray]:
    """One training frame: each contributing symbol's rows before its cut, then ``gap`` NaN rows; with the
    training and validation rows shifted to it. The index is synthetic (hourly from 1970): the predictors read
    rows, never times, and the symbols' times overlap."""
    blocks: dict[str, list[np.ndarray]] = {k: [] for k in ("values", "open", "high", "low", "close", "volume")}
    synthetic: list[np.ndarray] = []
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    offset = 0
    width = frames[0].values.shape[1]
    for frame, span in zip(frames, spans):
        if not len(span["train"]) and not len(span["val"]):
            continue
        cut = span["cut"]
        blocks["values"] += [frame.values[:cut], np.full((gap, width), np.nan, dtype=np.float32)]
        for name in ("open", "high", "low", "close", "volume"):
            blocks[name] += [getattr(frame, name)[:cut], np.full(gap, np.nan)]
        synthetic += [frame.synthetic[:cut], np.zeros(gap, dtype=bool)]
        train.append(offset + np.asarray(span["train"], dtype=np.int64))
        val.append(offset + np.asarray(span["val"], dtype=np.int64))
        offset += cut + gap
    n = offset
    combined = FeatureFrame(values=np.concatenate(blocks["values"]) if n else np.empty((0, width), np.float32),
                            columns=frames[0].columns,
                            index=pd.to_datetime(np.arange(n, dtype=np.int64) * 3_600_000, unit="ms", utc=True),
                            **{name: np.concatenate(blocks[name]) if n else np.empty(0)
                               for name in ("open", "high", "low", "close", "volume")},
                            synthetic=np.concatenate(synthetic) if n else np.empty(0, bool))
    empty = np.empty(0, np.int64)
    return (combined, np.concatenate(train) if train else empty, np.concatenate(val) if val else empty)


def _pool_fold_record(name: str, kind: str, index: int, frame: FeatureFrame, span: dict[str, Any]) -> dict[str, Any]:
    test = span["test"]
    record = {"predictor": name, "kind": kind, "fold": index, "symbol": frame.symbol, "test_start": test.start,
              "test_stop": test.stop, "test_from": None, "test_to": None, "n_train": len(span["train"]),
              "n_val": len(span["val"]), "fit_s": 0.0, "predict_s": 0.0, "n_eval": 0}
    if len(test):
        record["test_from"], record["test_to"] = str(frame.index[test.start]), str(frame.index[test.stop - 1])
    return record


def pooled_cache_key(frames: Sequence[FeatureFrame], spec: StackingSpec) -> str:
    """Cache entry name of a pooled fit: every frame's content, in order, the fit mode, the stacking config and the
    library versions."""
    return stable_hash({"frames": [frame_fingerprint(f) for f in frames], "fit": "pooled", "spec": spec.to_config(),
                        "versions": library_versions(), "format": CACHE_FORMAT}, length=32)


def _write_pooled_cache(entry: Path, results: list[StackingResult]) -> None:
    arrays = {}
    for k, result in enumerate(results):
        arrays[f"values_{k}"], arrays[f"has_oof_{k}"] = result.values, result.has_oof
    _publish_entry(entry, arrays, results[0].models, {"fit": "pooled", "columns": list(results[0].columns),
                                                      "parts": [r.folds for r in results], "wall_s": results[0].wall_s})


def _read_pooled_cache(entry: Path, spec: StackingSpec, n_frames: int) -> list[StackingResult] | None:
    loaded = _load_entry(entry, spec, lambda r: r.get("fit") == "pooled" and len(r["parts"]) == n_frames)
    if loaded is None:
        return None
    report, arrays, models = loaded
    columns = tuple(report["columns"])
    return [StackingResult(columns, arrays[f"values_{k}"], arrays[f"has_oof_{k}"], folds, dict(models), entry, True)
            for k, folds in enumerate(report["parts"])]


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
    _publish_entry(entry, {"values": result.values, "has_oof": result.has_oof}, result.models,
                   {"columns": list(result.columns), "folds": result.folds, "wall_s": result.wall_s})


def _read_cache(entry: Path, spec: StackingSpec) -> StackingResult | None:
    loaded = _load_entry(entry, spec, lambda r: "folds" in r)
    if loaded is None:
        return None
    report, arrays, models = loaded
    return StackingResult(tuple(report["columns"]), arrays["values"], arrays["has_oof"], report["folds"], models,
                          entry, True)


def _publish_entry(entry: Path, arrays: dict[str, np.ndarray], models: dict[str, BasePredictor | None],
                   report: dict[str, Any]) -> None:
    """Write a cache entry (``oof.npz``, the fitted models, ``report.json``) into a temporary folder and move it
    into place in one step, so a reader never sees half an entry."""
    tmp = entry.parent / f".{entry.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.savez(tmp / "oof.npz", **arrays)
        for name, model in models.items():
            if model is not None:
                model.save(tmp / "models" / name)
        report = {"format": CACHE_FORMAT, **report, "models": [n for n, m in models.items() if m is not None]}
        (tmp / "report.json").write_text(json.dumps(report, indent=1, default=_plain))
        try:
            os.replace(tmp, entry)
        except OSError:  # another process wrote the same entry first: its content is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        logger.warning("could not write the predictor cache %s: %s", entry, exc)
        shutil.rmtree(tmp, ignore_errors=True)


def _load_entry(entry: Path, spec: StackingSpec, fits: Any
                ) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, BasePredictor | None]] | None:
    """(report, arrays, models) of a cache entry written by ``_publish_entry`` for ``spec``, or None when it is
    missing, of another format or columns, not what ``fits(report)`` wants, or unreadable."""
    if not (entry / "report.json").is_file():
        return None
    try:
        report = json.loads((entry / "report.json").read_text())
        if report.get("format") != CACHE_FORMAT or tuple(report["columns"]) != spec.output_columns or not fits(report):
            return None
        with np.load(entry / "oof.npz") as data:
            arrays = {k: data[k] for k in data.files}
        models: dict[str, BasePredictor | None] = {m.name: None for m in spec.models}
        for name in report.get("models", []):
            models[name] = load_predictor(entry / "models" / name)
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("ignoring an unreadable predictor cache entry %s: %s", entry, exc)
        return None
    return report, arrays, models


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
