"""Risk: the rules that sit between an action's target and its fill (``RiskConfig`` and, next, their kernel step)."""

from spotgym.risk.config import RISK_RULES, RiskConfig, RiskNotApplied

__all__ = ["RISK_RULES", "RiskConfig", "RiskNotApplied"]
