"""Bars -> the full ``FeatureFrame``: indicator columns (``spotgym.features``) plus the out-of-fold columns of
the predictors stacked on them. This is what experiments train and backtest on.

``FrameSpec`` names both halves; ``build_frame(bars, spec)`` builds the frame (fitting the predictors
out of fold, cached on disk); ``build_frames_with_report`` builds several symbols' frames at once (with
``predictors.fit: pooled``, one fit per refit block over all of them); ``apply_fitted_predictors`` appends the columns of already fitted
models (a run's ``predictors/``) to the indicator frame of new bars, without refitting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.core import FeatureFrame, stable_hash
from spotgym.features import FeatureSpec, build_features, default_spec
from spotgym.predictors.config import StackingSpec, default_stacking, tiny_stacking
from spotgym.predictors.registry import load_predictor
from spotgym.predictors.stacking import StackingResult, oof_predictions, pooled_oof_predictions

__all__ = ["FrameBuild", "FrameSpec", "apply_fitted_predictors", "build_frame", "build_frame_with_report",
           "build_frames_with_report", "default_frame_spec"]


@dataclass(frozen=True)
class FrameSpec:
    """The indicator ``features`` and the ``predictors`` stacked on them (None: indicators only)."""

    features: FeatureSpec = field(default_factory=default_spec)
    predictors: StackingSpec | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.features, FeatureSpec):
            raise ValueError(f"FrameSpec.features must be a FeatureSpec, got {self.features!r}")
        if self.predictors is not None and not isinstance(self.predictors, StackingSpec):
            raise ValueError(f"FrameSpec.predictors must be a StackingSpec or None, got {self.predictors!r}")

    @classmethod
    def from_config(cls, features: Mapping[str, Any] | None, predictors: Mapping[str, Any] | None = None) -> FrameSpec:
        """From an experiment's ``features`` block (empty: the default indicators) and ``predictors`` block."""
        feature_spec = FeatureSpec.from_config(features) if features else default_spec()
        return cls(feature_spec, StackingSpec.from_config(predictors) if predictors else None)

    def to_config(self) -> dict[str, Any]:
        out = self.features.to_config()
        if self.predictors is not None:
            out["predictors"] = self.predictors.to_config()
        return out

    @property
    def hash(self) -> str:
        """Stable short hash of indicators + predictors (run manifests)."""
        return stable_hash(self.to_config())


def default_frame_spec(tiny: bool = False) -> FrameSpec:
    """The default indicators with the default predictors on top: an LSTM forecaster and the regime
    classifier, out of fold (minutes over 64k 1h rows on two cores). ``tiny=True``: the small CPU variant
    that trains in seconds (tests, benchmarks, smoke checks)."""
    return FrameSpec(default_spec(), tiny_stacking() if tiny else default_stacking())


@dataclass(frozen=True)
class FrameBuild:
    """``build_frame_with_report``'s result: the frame and the predictors' stacking report.

    ``predictions`` (None without predictors) holds the per-fold metrics (``.folds``, ``.summary()``,
    ``.report()``), the ``has_oof`` row mask, the newest fitted model of each predictor (``.models``)
    and whether it came from the disk cache.
    """

    frame: FeatureFrame
    predictions: StackingResult | None = None


def _as_frame_spec(spec: FrameSpec | FeatureSpec | None) -> FrameSpec:
    if spec is None:
        return FrameSpec()
    if isinstance(spec, FeatureSpec):
        return FrameSpec(spec)
    if not isinstance(spec, FrameSpec):
        raise TypeError(f"spec must be a FrameSpec (or a FeatureSpec for indicators only), got {type(spec).__name__}")
    return spec


def build_frame(bars: pd.DataFrame, spec: FrameSpec | FeatureSpec | None = None, *,
                cache: str | os.PathLike | bool | None = None, progress: bool | None = None) -> FeatureFrame:
    """The full ``FeatureFrame`` of ``bars``: indicators, then each predictor's out-of-fold columns.

    A row without an out-of-fold prediction (before the first refit block, inputs not finite) is not
    ``valid``; nothing is zero-filled. ``spec``: a ``FrameSpec`` (``None``: the default indicators and no
    predictors; ``default_frame_spec()`` adds the default predictors). ``cache`` / ``progress``: see
    ``spotgym.predictors.oof_predictions``. ``build_frame_with_report`` also returns the fold metrics.
    """
    return build_frame_with_report(bars, spec, cache=cache, progress=progress).frame


def build_frame_with_report(bars: pd.DataFrame, spec: FrameSpec | FeatureSpec | None = None, *,
                            cache: str | os.PathLike | bool | None = None,
                            progress: bool | None = None) -> FrameBuild:
    """``build_frame`` plus the predictors' stacking report (per-fold metrics, models, cache use)."""
    spec = _as_frame_spec(spec)
    frame = build_features(bars, spec.features)
    if spec.predictors is None:
        return FrameBuild(frame)
    result = oof_predictions(frame, spec.predictors, spec.features, cache=cache, progress=progress)
    return FrameBuild(frame.with_columns(result.columns, result.values, valid=result.has_oof), result)


def build_frames_with_report(bars: Sequence[pd.DataFrame], spec: FrameSpec | FeatureSpec | None = None, *,
                             cache: str | os.PathLike | bool | None = None,
                             progress: bool | None = None) -> list[FrameBuild]:
    """``build_frame_with_report`` for several symbols' bars (the first is the main symbol), one ``FrameBuild``
    each, in order. Indicators are always built (and normalised) per symbol; the predictors are fitted per
    symbol unless ``spec.predictors.fit`` is ``pooled``: then each refit block is fitted once on the rows of
    every symbol before it, on the main symbol's schedule (``spotgym.predictors.stacking.pooled_oof_predictions``)."""
    spec = _as_frame_spec(spec)
    if spec.predictors is None or spec.predictors.fit != "pooled":
        return [build_frame_with_report(b, spec, cache=cache, progress=progress) for b in bars]
    frames = [build_features(b, spec.features) for b in bars]
    results = pooled_oof_predictions(frames, spec.predictors, spec.features, cache=cache, progress=progress)
    return [FrameBuild(frame.with_columns(result.columns, result.values, valid=result.has_oof), result)
            for frame, result in zip(frames, results)]


def apply_fitted_predictors(bars: pd.DataFrame, spec: FrameSpec, folder: str | os.PathLike) -> FeatureFrame:
    """The frame of ``bars`` with the predictor columns of the models saved under ``folder/<name>/`` (a run's
    ``predictors/``), predicted causally row by row and never refitted on these bars."""
    spec = _as_frame_spec(spec)
    frame = build_features(bars, spec.features)
    if spec.predictors is None:
        return frame
    for model_cfg in spec.predictors.models:
        model = load_predictor(Path(folder) / model_cfg.name, frame=frame, feature_spec=spec.features)
        values = model.predict(frame)
        frame = frame.with_columns(model.output_columns, values, valid=np.isfinite(values).all(axis=1))
    return frame
