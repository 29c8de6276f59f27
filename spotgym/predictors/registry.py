"""Which class implements each predictor ``kind``; making one from its config and loading a saved one.

The classes are imported on first use, so building or validating configs does not import torch or LightGBM.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spotgym.core import FeatureFrame
from spotgym.features import FeatureSpec
from spotgym.predictors.base import FORMAT_VERSION, META_FILE, BasePredictor, library_versions
from spotgym.predictors.config import PredictorConfig, predictor_config

__all__ = ["PREDICTOR_CLASSES", "load_predictor", "make_predictor", "predictor_class"]

# kind -> (module, class)
PREDICTOR_CLASSES: dict[str, tuple[str, str]] = {
    "lstm": ("spotgym.predictors.lstm", "LSTMPredictor"),
    "regime": ("spotgym.predictors.classifier", "RegimeClassifier"),
    "gbm": ("spotgym.predictors.gbm", "GBMPredictor"),
}


def predictor_class(kind: str) -> type[BasePredictor]:
    if kind not in PREDICTOR_CLASSES:
        raise ValueError(f"unknown predictor kind {kind!r}; known: {sorted(PREDICTOR_CLASSES)}")
    module, name = PREDICTOR_CLASSES[kind]
    return getattr(importlib.import_module(module), name)


def make_predictor(config: PredictorConfig | Mapping[str, Any], feature_spec: FeatureSpec | None = None) -> BasePredictor:
    """An unfitted predictor for ``config`` (a config object or a mapping with ``kind``)."""
    config = predictor_config(config)
    return predictor_class(config.kind)(config, feature_spec=feature_spec)


def load_predictor(path: str | Path, frame: FeatureFrame | None = None,
                   feature_spec: FeatureSpec | None = None) -> BasePredictor:
    """A predictor saved with ``save``; with ``frame`` / ``feature_spec``, fail clearly if they do not match it.

    A frame that lacks any input column the model was trained on, or a feature spec whose hash
    differs from the one the model was fitted with, raises ``ValueError``. Library versions that
    differ from the saving ones only warn (results may differ in the last bits).
    """
    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder} is not a saved predictor (no {META_FILE})")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{folder}: predictor format {meta.get('format')!r}, this spotgym reads {FORMAT_VERSION}")
    config = predictor_config(meta["config"])
    if config.hash != meta["config_hash"]:
        raise ValueError(f"{folder}: config hash mismatch (saved {meta['config_hash']}, rebuilt {config.hash}); "
                         "the config schema changed since it was saved")
    stored_spec = None
    if meta.get("feature_spec") is not None:
        stored_spec = FeatureSpec.from_config(meta["feature_spec"])
    if feature_spec is not None and stored_spec is not None and feature_spec.hash != stored_spec.hash:
        raise ValueError(f"{folder}: the model was fitted on features of spec {stored_spec.hash}, "
                         f"not the given spec {feature_spec.hash}")
    predictor = make_predictor(config, feature_spec=stored_spec or feature_spec)
    predictor.input_columns = tuple(meta["input_columns"])
    predictor.fit_info = meta.get("fit_info", {})
    predictor._set_fitted_state(meta["state"])
    predictor._load_payload(folder)
    saved, now = meta.get("versions", {}), library_versions()
    changed = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
    if changed:
        warnings.warn(f"{folder}: saved with other library versions {changed}; predictions may differ slightly",
                      stacklevel=2)
    if frame is not None:
        missing = [c for c in predictor.input_columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{folder}: the frame lacks input column(s) {missing} the model was trained on; "
                             f"trained on {list(predictor.input_columns)}, frame has {list(frame.columns)}")
    return predictor
