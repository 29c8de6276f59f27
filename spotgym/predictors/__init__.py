"""Predictors: models whose out-of-fold outputs become feature columns (LSTM/GRU forecaster, LightGBM
forecaster, regime classifier), and the pipeline that builds the full frame from indicators + predictor columns.

    frame = build_frame(bars, default_frame_spec(tiny=True))   # indicators + out-of-fold LSTM / regime columns

``oof_predictions`` is the stacker underneath (its fold metrics compare every return forecaster with
an ARIMA baseline, ``spotgym.predictors.arima``), ``load_predictor`` reloads a saved model for live
``update``, ``apply_fitted_predictors`` applies a run's fitted models to new bars.

Names are imported on first use (PEP 562), so code that needs only the configs (validating an
experiment) does not pay for importing torch and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "base": ("BasePredictor", "NotEnoughData", "Predictor", "library_versions"),
    "registry": ("load_predictor", "make_predictor"),
    "classifier": ("RegimeClassifier",),
    "config": ("ArimaConfig", "GBMConfig", "LSTMConfig", "PredictorConfig", "RegimeConfig", "StackingSpec",
               "default_stacking", "predictor_config", "tiny_gbm", "tiny_stacking"),
    "gbm": ("GBMPredictor",),
    "lstm": ("LSTMPredictor",),
    "metrics": ("format_folds", "format_summary", "summarize"),
    "pipeline": ("FrameBuild", "FrameSpec", "apply_fitted_predictors", "build_frame", "build_frame_with_report",
                 "default_frame_spec"),
    "stacking": ("CACHE_ENV", "StackingResult", "cache_key", "oof_predictions", "predictor_folds",
                 "resolve_cache_dir", "stacking_walk_forward"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "CACHE_ENV",
    "ArimaConfig",
    "BasePredictor",
    "FrameBuild",
    "FrameSpec",
    "apply_fitted_predictors",
    "build_frame",
    "build_frame_with_report",
    "default_frame_spec",
    "GBMConfig",
    "GBMPredictor",
    "LSTMConfig",
    "LSTMPredictor",
    "NotEnoughData",
    "Predictor",
    "PredictorConfig",
    "RegimeClassifier",
    "RegimeConfig",
    "StackingResult",
    "StackingSpec",
    "cache_key",
    "default_stacking",
    "format_folds",
    "format_summary",
    "library_versions",
    "load_predictor",
    "make_predictor",
    "oof_predictions",
    "predictor_config",
    "predictor_folds",
    "resolve_cache_dir",
    "stacking_walk_forward",
    "summarize",
    "tiny_gbm",
    "tiny_stacking",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'spotgym.predictors' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"spotgym.predictors.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs
    from spotgym.predictors.base import BasePredictor, NotEnoughData, Predictor, library_versions
    from spotgym.predictors.classifier import RegimeClassifier
    from spotgym.predictors.config import (
        ArimaConfig,
        GBMConfig,
        LSTMConfig,
        PredictorConfig,
        RegimeConfig,
        StackingSpec,
        default_stacking,
        predictor_config,
        tiny_gbm,
        tiny_stacking,
    )
    from spotgym.predictors.gbm import GBMPredictor
    from spotgym.predictors.lstm import LSTMPredictor
    from spotgym.predictors.metrics import format_folds, format_summary, summarize
    from spotgym.predictors.pipeline import (
        FrameBuild,
        FrameSpec,
        apply_fitted_predictors,
        build_frame,
        build_frame_with_report,
        default_frame_spec,
    )
    from spotgym.predictors.registry import load_predictor, make_predictor
    from spotgym.predictors.stacking import (
        CACHE_ENV,
        StackingResult,
        cache_key,
        oof_predictions,
        predictor_folds,
        resolve_cache_dir,
        stacking_walk_forward,
    )
