"""Features: indicator sets on top of ``ta``, causal normalisation, and the ``FeatureFrame``."""

from spotgym.features.build import FeatureBuild, build_features, build_features_with_report, indicator_columns
from spotgym.features.frame import FeatureFrame
from spotgym.features.indicators import INDICATORS
from spotgym.features.lookahead import LookaheadError, assert_no_lookahead
from spotgym.features.spec import FeatureSpec, IndicatorSpec, default_spec

__all__ = [
    "INDICATORS",
    "FeatureBuild",
    "FeatureFrame",
    "FeatureSpec",
    "IndicatorSpec",
    "LookaheadError",
    "assert_no_lookahead",
    "build_features",
    "build_features_with_report",
    "default_spec",
    "indicator_columns",
]
