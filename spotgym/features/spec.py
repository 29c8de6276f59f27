"""Declaring a feature set by indicator name + parameters, as it appears in experiment configs."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spotgym.core import stable_hash
from spotgym.features.indicators import INDICATORS
from spotgym.features.normalize import NORMALIZERS

__all__ = ["DEFAULT_INDICATORS", "FeatureSpec", "IndicatorSpec", "default_spec"]


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
    """The indicator set and how it is normalised (causally).

    ``normalize``: ``rolling`` (default), ``expanding`` or ``none``; ``norm_window`` bars;
    ``clip``: bound on the z-scores (None for no clipping). Predictor columns stacked on top are
    ``spotgym.predictors``' business (``FrameSpec``).
    """

    indicators: tuple[IndicatorSpec, ...]
    normalize: str = "rolling"
    norm_window: int = 500
    clip: float | None = 5.0

    def __post_init__(self) -> None:
        if not self.indicators:
            raise ValueError("FeatureSpec.indicators is empty: name at least one indicator")
        if self.normalize not in NORMALIZERS:
            raise ValueError(f"FeatureSpec.normalize must be one of {NORMALIZERS}, got {self.normalize!r}")
        if not isinstance(self.norm_window, int) or self.norm_window < 2:
            raise ValueError(f"FeatureSpec.norm_window must be an int >= 2, got {self.norm_window!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"FeatureSpec.clip must be > 0 or None, got {self.clip!r}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeatureSpec:
        """Build from a mapping like ``{"indicators": ["rsi", {"name": "macd", "fast": 8}], "norm_window": 300}``."""
        known = {"indicators", "normalize", "norm_window", "clip"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown feature key(s) {unknown}; known: {sorted(known)}")
        items = config.get("indicators")
        if not isinstance(items, list | tuple):
            raise ValueError("features.indicators must be a list of indicator names or mappings")
        kwargs: dict[str, Any] = {k: config[k] for k in ("normalize", "norm_window", "clip") if k in config}
        return cls(tuple(IndicatorSpec.from_config(i) for i in items), **kwargs)

    def to_config(self) -> dict[str, Any]:
        return {
            "indicators": [i.to_config() for i in self.indicators],
            "normalize": self.normalize,
            "norm_window": self.norm_window,
            "clip": self.clip,
        }

    @property
    def hash(self) -> str:
        """Stable short hash of the configuration (cache keys, run manifests, saved predictors)."""
        return stable_hash(self.to_config())


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


def default_spec() -> FeatureSpec:
    """The default indicator set: returns, volatility, MACD, RSI, Bollinger, ATR, EMA ratios, stochastic, volume.

    Predictor columns on top of it: ``spotgym.predictors.default_frame_spec()``.
    """
    return FeatureSpec(tuple(IndicatorSpec.from_config(i) for i in DEFAULT_INDICATORS))
