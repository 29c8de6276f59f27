"""``RiskConfig``: the ``risk:`` section of an experiment and of a live config, validated on construction.

Every rule is off unless its key is given. The rules run inside the env's step path (``spotgym.risk.nb``:
a kernel step between the action's target and the fill), so training, backtest and live apply them alike;
``EnvConfig(risk=...)`` carries them to every env.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spotgym.core import checks

__all__ = ["DEFAULT_VOL_WINDOW", "RISK_RULES", "RiskConfig"]

# rule -> what it does (the help text of the risk: section)
RISK_RULES: dict[str, str] = {
    "max_exposure": "cap on the fraction of equity held in the asset (0..1)",
    "vol_target": "annualised volatility the position is scaled to, from causal realised volatility",
    "vol_window": "bars of realised volatility behind vol_target and kelly_fraction (default 168)",
    "kelly_fraction": "cap the position at this fraction of the Kelly one, forecast / variance per bar (0..1)",
    "kelly_column": "the frame column of a raw log-return forecast behind kelly_fraction (e.g. a gbm predictor's "
                    "gbm_ret_h1; the LSTM's return column is in units of its training std, not raw)",
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
DEFAULT_VOL_WINDOW = 168
MAX_ORDERS_PER_HOUR = 3600  # one slot of per-account state each: a bound that keeps the state small


@dataclass(frozen=True)
class RiskConfig:
    """The risk rules; ``None`` = off. Fractions are in (0, 1], counts are integers >= 1."""

    max_exposure: float | None = None
    vol_target: float | None = None
    vol_window: int | None = None
    kelly_fraction: float | None = None
    kelly_column: str | None = None
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
        if self.vol_window is not None and self.vol_target is None and self.kelly_fraction is None:
            checks.fail("RiskConfig", "vol_window", "needs vol_target or kelly_fraction", self.vol_window)
        if (self.kelly_fraction is None) != (self.kelly_column is None):
            raise ValueError("RiskConfig.kelly_fraction and RiskConfig.kelly_column go together: the Kelly cap needs "
                             "the column of a return forecast (e.g. kelly_column: gbm_ret_h1)")
        if self.kelly_column is not None and not isinstance(self.kelly_column, str):
            checks.fail("RiskConfig", "kelly_column", "must be a column name", self.kelly_column)
        if self.max_orders_per_hour is not None and self.max_orders_per_hour > MAX_ORDERS_PER_HOUR:
            checks.fail("RiskConfig", "max_orders_per_hour", f"must be <= {MAX_ORDERS_PER_HOUR}",
                        self.max_orders_per_hour)
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

    @property
    def kelly_horizon(self) -> int:
        """Bars the Kelly column forecasts over (its ``_h<N>`` suffix; 1 without one): the per-bar mean
        is the forecast / N."""
        match = re.search(r"_h(\d+)$", self.kelly_column or "")
        return int(match.group(1)) if match else 1
