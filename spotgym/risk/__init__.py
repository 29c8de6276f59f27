"""Risk: the rules that sit between an action's target and its fill (``RiskConfig``, and their kernel,
``spotgym.risk.nb.risk_gate_nb``, which the env's step path calls)."""

from spotgym.risk.config import DEFAULT_VOL_WINDOW, RISK_RULES, RiskConfig
from spotgym.risk.nb import FLAG_NAMES, flag_names

__all__ = ["DEFAULT_VOL_WINDOW", "FLAG_NAMES", "RISK_RULES", "RiskConfig", "flag_names"]
