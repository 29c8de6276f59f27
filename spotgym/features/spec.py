"""Declaring a feature set by indicator name + parameters, as it appears in experiment configs."""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from spotgym.features.indicators import INDICATORS
from spotgym.features.normalize import NORMALIZERS
from spotgym.predictors.config import StackingSpec, default_stacking, tiny_stacking


@dataclass(frozen=True)
class IndicatorSpec:
    """One indicator: a registered name and its keyword parameters (validated against the function)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in INDICATORS:
            raise ValueError(f"unknown indicator {self.name!r}; known: {sorted(INDICATORS)}")
        accepted = set(inspect.signature(INDICATORS[self.name]).parameters) - {"bars"}
        unknown = [k for k, _ in self.params if k not in accepted]
        if unknown:
            raise ValueError(f"indicator {self.name!r} has no parameter(s) {unknown}; accepted: {sorted(accepted)}")
        object.__setattr__(self, "params", tuple(sorted((k, _freeze(v)) for k, v in self.params)))

    @classmethod
    def from_config(cls, item: str | Mapping[str, Any]) -> IndicatorSpec:
        """``"rsi"`` or ``{"name": "rsi", "window": 21}``."""
        if isinstance(item, str):
            return cls(item)
        if not isinstance(item, Mapping) or "name" not in item:
            raise ValueError(f"an indicator is a name or a mapping with a 'name' key, got {item!r}")
        return cls(str(item["name"]), tuple((k, v) for k, v in item.items() if k != "name"))

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params}}


@dataclass(frozen=True)
class FeatureSpec:
    """The indicator set, how it is normalised (causally), and the predictors stacked on top.

    ``normalize``: ``rolling`` (default), ``expanding`` or ``none``; ``norm_window`` bars;
    ``clip``: bound on the z-scores (None for no clipping). ``predictors``: a
    ``spotgym.predictors.StackingSpec`` whose models' out-of-fold outputs are appended as columns
    (None: indicators only).
    """

    indicators: tuple[IndicatorSpec, ...]
    normalize: str = "rolling"
    norm_window: int = 500
    clip: float | None = 5.0
    predictors: StackingSpec | None = None

    def __post_init__(self) -> None:
        if not self.indicators:
            raise ValueError("FeatureSpec.indicators is empty: name at least one indicator")
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"FeatureSpec.normalize must be one of {NORMALIZERS}, got {self.normalize!r}")
        if not isinstance(self.norm_window, int) or self.norm_window < 2:
            raise ValueError(f"FeatureSpec.norm_window must be an int >= 2, got {self.norm_window!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"FeatureSpec.clip must be > 0 or None, got {self.clip!r}")
        if self.predictors is not None and not isinstance(self.predictors, StackingSpec):
            raise ValueError(f"FeatureSpec.predictors must be a StackingSpec or None, got {self.predictors!r}")

    @property
    def indicator_spec(self) -> FeatureSpec:
        """This spec without predictors: what the predictors' input columns are built with."""
        return self if self.predictors is None else replace(self, predictors=None)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeatureSpec:
        """Build from a mapping like ``{"indicators": ["rsi", {"name": "macd", "fast": 8}], "norm_window": 300}``.

        ``predictors`` (optional): ``{"models": [{"kind": "lstm", "hidden": 16}, {"kind": "regime"}],
        "refit_every": 2000, ...}`` (see ``StackingSpec``).
        """
        known = {"indicators", "normalize", "norm_window", "clip", "predictors"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown feature key(s) {unknown}; known: {sorted(known)}")
        items = config.get("indicators")
        if not isinstance(items, list | tuple):
            raise ValueError("features.indicators must be a list of indicator names or mappings")
        kwargs: dict[str, Any] = {k: config[k] for k in ("normalize", "norm_window", "clip") if k in config}
        if config.get("predictors") is not None:
            kwargs["predictors"] = StackingSpec.from_config(config["predictors"])
        return cls(tuple(IndicatorSpec.from_config(i) for i in items), **kwargs)

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "indicators": [i.to_config() for i in self.indicators],
            "normalize": self.normalize,
            "norm_window": self.norm_window,
            "clip": self.clip,
        }
        if self.predictors is not None:  # absent rather than None: indicator-only hashes stay as they were
            out["predictors"] = self.predictors.to_config()
        return out

    @property
    def hash(self) -> str:
        """Stable short hash of the configuration (cache keys, run manifests)."""
        blob = json.dumps(self.to_config(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


DEFAULT_INDICATORS: tuple[str | dict[str, Any], ...] = (
    {"name": "log_return", "lags": [1, 4, 16, 64]},
    {"name": "realized_vol", "window": 24},
    {"name": "macd", "fast": 12, "slow": 26, "signal": 9},
    {"name": "rsi", "window": 14},
    {"name": "bollinger", "window": 20, "dev": 2.0},
    {"name": "atr", "window": 14},
    {"name": "ema_ratio", "windows": [10, 50, 200]},
    {"name": "stoch", "window": 14, "smooth": 3},
    {"name": "volume_z", "window": 96},
)


def default_spec(predictors: bool = False, tiny: bool = False) -> FeatureSpec:
    """The default indicator set: returns, volatility, MACD, RSI, Bollinger, ATR, EMA ratios, stochastic, volume.

    ``predictors=True`` stacks the default predictors on top (an LSTM forecaster and the regime
    classifier, out-of-fold; minutes over 64k 1h rows on two cores); with ``tiny=True`` the small
    CPU variant that trains in seconds (tests, benchmarks, smoke checks). ``tiny`` alone changes
    nothing.
    """
    stacking = (tiny_stacking() if tiny else default_stacking()) if predictors else None
    return FeatureSpec(tuple(IndicatorSpec.from_config(i) for i in DEFAULT_INDICATORS), predictors=stacking)
