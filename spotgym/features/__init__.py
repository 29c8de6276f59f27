"""Features: indicator sets on top of ``ta``, causal normalisation, the look-ahead checker.

``build_features(bars, spec=None)`` -> ``FeatureFrame`` (indicator columns only; predictor columns on
top of them come from ``spotgym.predictors.build_frame``).
"""

from spotgym.core import FeatureFrame
from spotgym.features.build import build_features, indicator_columns
from spotgym.features.indicators import INDICATORS
from spotgym.features.lookahead import LookaheadError, assert_no_lookahead
from spotgym.features.spec import DEFAULT_INDICATORS, FeatureSpec, IndicatorSpec, default_spec

__all__ = [
    "DEFAULT_INDICATORS",
    "INDICATORS",
    "FeatureFrame",
    "FeatureSpec",
    "IndicatorSpec",
    "LookaheadError",
    "assert_no_lookahead",
    "build_features",
    "default_spec",
    "indicator_columns",
]
