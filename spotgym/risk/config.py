"""``RiskConfig``: the ``risk:`` section of an experiment and of a live config, validated on construction.

Every rule is off unless its key is given. The rules run inside the env's step path (a kernel step
between the action's target and the fill, so training, backtest and live apply them alike); until that
step exists an enabled rule is refused where a run starts (``RiskConfig.require_none_enabled``) rather
than silently ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spotgym.core import checks

__all__ = ["RISK_RULES", "RiskConfig", "RiskNotApplied"]

# rule -> what it does (the help text of the risk: section)
RISK_RULES: dict[str, str] = {
    "max_exposure": "cap on the fraction of equity held in the asset (0..1)",
    "vol_target": "annualised volatility the position is scaled to, from causal realised volatility",
    "vol_window": "bars of realised volatility behind vol_target",
    "kelly_fraction": "fraction of the Kelly position from the predictors' forecast (0..1)",
    "stop_loss": "exit when the close falls this fraction below the entry price",
    "take_profit": "exit when the close rises this fraction above the entry price",
    "trailing_stop": "exit when the close falls this fraction below the highest close since entry",
    "max_drawdown": "flatten and halt new entries past this drawdown from the equity peak",
    "halt_cooldown_bars": "bars after a drawdown halt before entries resume (absent: until a manual reset)",
    "daily_loss_limit": "no new entries for the rest of the UTC day after losing this fraction of its start equity",
    "max_orders_per_hour": "orders allowed per rolling hour",
    "min_holding_bars": "bars a position is held before it may be reduced",
}
_FRACTIONS = ("max_exposure", "kelly_fraction", "stop_loss", "take_profit", "trailing_stop", "max_drawdown",
              "daily_loss_limit")
_COUNTS = ("vol_window", "halt_cooldown_bars", "max_orders_per_hour", "min_holding_bars")


class RiskNotApplied(ValueError):
    """A risk rule is configured that the env's step path does not apply yet."""


@dataclass(frozen=True)
class RiskConfig:
    """The risk rules; ``None`` = off. Fractions are in (0, 1], counts are integers >= 1."""

    max_exposure: float | None = None
    vol_target: float | None = None
    vol_window: int | None = None
    kelly_fraction: float | None = None
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None
    max_drawdown: float | None = None
    halt_cooldown_bars: int | None = None
    daily_loss_limit: float | None = None
    max_orders_per_hour: int | None = None
    min_holding_bars: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in _FRACTIONS:
            set_(self, name, checks.number("RiskConfig", name, getattr(self, name), 0.0, 1.0, low_open=True,
                                           allow_none=True))
        set_(self, "vol_target", checks.number("RiskConfig", "vol_target", self.vol_target, 0.0, low_open=True,
                                               allow_none=True))
        for name in _COUNTS:
            set_(self, name, checks.integer("RiskConfig", name, getattr(self, name), 1, allow_none=True))
        if self.vol_window is not None and self.vol_target is None:
            checks.fail("RiskConfig", "vol_window", "needs vol_target", self.vol_window)
        if self.halt_cooldown_bars is not None and self.max_drawdown is None:
            checks.fail("RiskConfig", "halt_cooldown_bars", "needs max_drawdown", self.halt_cooldown_bars)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> RiskConfig:
        """From a ``risk:`` block; an unknown key is an error listing the known rules."""
        data = dict(data or {})
        unknown = sorted(set(data) - set(RISK_RULES))
        if unknown:
            raise ValueError(f"unknown risk rule(s) {unknown}; known: {sorted(RISK_RULES)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def enabled(self) -> tuple[str, ...]:
        """The rules that are on (their keys given)."""
        return tuple(k for k, v in dataclasses.asdict(self).items() if v is not None)

    def require_none_enabled(self) -> None:
        """Refuse to start a run whose risk rules would not be applied by the env."""
        if self.enabled:
            raise RiskNotApplied(f"risk rule(s) {list(self.enabled)} are configured but the env does not apply risk "
                                 "rules yet; remove them (an unapplied rule would give numbers you did not ask for)")
