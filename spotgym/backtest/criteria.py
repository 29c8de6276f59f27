"""Success criteria: what a result must reach to count as a success, measured, never assumed.

``Criteria`` is configuration (an experiment's ``evaluation.criteria``); its defaults are the project's
target: an annualised return of at least 300 %, a maximum drawdown under 15 %, and a Sharpe ratio above
buy-and-hold's over the same bars.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from spotgym.core import checks, num, pct

__all__ = ["Criteria", "format_criteria", "success_criteria"]


@dataclass(frozen=True)
class Criteria:
    """``min_annual_return`` (CAGR, a fraction: 3.0 = 300 %), ``max_drawdown`` (strictly below), and
    ``beat_buy_and_hold`` (Sharpe above buy-and-hold's). ``None`` switches a criterion off."""

    min_annual_return: float | None = 3.0
    max_drawdown: float | None = 0.15
    beat_buy_and_hold: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "min_annual_return", checks.number(
            "Criteria", "min_annual_return", self.min_annual_return, -1.0, allow_none=True))
        object.__setattr__(self, "max_drawdown", checks.number(
            "Criteria", "max_drawdown", self.max_drawdown, 0.0, 1.0, low_open=True, allow_none=True))
        if not isinstance(self.beat_buy_and_hold, bool):
            checks.fail("Criteria", "beat_buy_and_hold", "must be true or false", self.beat_buy_and_hold)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> Criteria:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def success_criteria(agent: Mapping[str, Any], buy_and_hold: Mapping[str, Any],
                     criteria: Criteria | None = None) -> list[dict[str, Any]]:
    """Each criterion that is on, measured on ``agent``'s metrics (``compute_metrics``), with PASS/FAIL.
    An undefined measurement fails."""
    c = Criteria() if criteria is None else criteria
    out: list[dict[str, Any]] = []
    if c.min_annual_return is not None:
        cagr = agent.get("cagr")
        out.append({"name": f"annualised return >= {pct(c.min_annual_return, 0)}", "measured": cagr,
                    "target": c.min_annual_return, "passed": cagr is not None and cagr >= c.min_annual_return,
                    "text": pct(cagr, missing="undefined")})
    if c.max_drawdown is not None:
        dd = agent.get("max_drawdown")
        out.append({"name": f"max drawdown < {pct(c.max_drawdown, 0)}", "measured": dd, "target": c.max_drawdown,
                    "passed": dd is not None and dd < c.max_drawdown, "text": pct(dd, missing="undefined")})
    if c.beat_buy_and_hold:
        sharpe, bh = agent.get("sharpe"), buy_and_hold.get("sharpe")
        out.append({"name": "beats buy-and-hold risk-adjusted (Sharpe)", "measured": sharpe, "target": bh,
                    "passed": sharpe is not None and bh is not None and sharpe > bh,
                    "text": f"agent {num(sharpe, missing='undefined')} vs buy-and-hold {num(bh, missing='undefined')}"})
    return out


def format_criteria(results: list[dict[str, Any]]) -> str:
    lines = ["Success criteria (stitched out-of-sample curve, measured):"]
    if not results:
        lines.append("  (none configured: evaluation.criteria switches them all off)")
    for c in results:
        lines.append(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['name']:44s} measured: {c['text']}")
    return "\n".join(lines)
