"""Selection luck, as JSON-ready documents: the deflated Sharpe ratio of a selected configuration given how
many were tried, and the probability of backtest over-fitting (CSCV) across them. The maths is in
``spotgym.backtest.stats``; this module decides what is computable and says why when it is not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest.stats import deflated_sharpe_ratio, probability_of_backtest_overfitting, sharpe_ratios

__all__ = ["dsr_stats", "format_overfitting", "overfitting_stats", "pbo_splits", "pbo_stats"]


def pbo_splits(n_obs: int) -> int:
    """CSCV blocks for T observations: 16 when there is room, fewer (even, >= 2) for short samples, 0 = too short."""
    s = min(16, n_obs // 4)
    s -= s % 2
    return s if s >= 2 else 0


def dsr_stats(selected: np.ndarray | None, n_trials: int, sr_values: np.ndarray | None) -> dict[str, Any]:
    """Deflated Sharpe ratio of the ``selected`` per-bar returns given ``n_trials`` configurations tried and
    the per-period Sharpe ratios of those configurations (``sr_values``; their variance, ddof=1, is V[SR];
    non-finite ones are left out, fewer than two give V = 0 and DSR = PSR). Says why when not computable."""
    finite = np.asarray([] if sr_values is None else sr_values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    variance = float(np.var(finite, ddof=1)) if finite.size >= 2 else 0.0
    if selected is None:
        return {"computable": False, "reason": "no returns of the selected configuration", "n_trials": int(n_trials)}
    try:
        d = deflated_sharpe_ratio(np.asarray(selected, dtype=np.float64), max(int(n_trials), 1), variance)
    except ValueError as exc:
        return {"computable": False, "reason": str(exc), "n_trials": int(n_trials)}
    return {"computable": True, "dsr": d.dsr, "psr": d.psr, "sr": d.sr, "sr_star": d.sr_star, "n_trials": d.n_trials,
            "n_obs": d.n_obs, "skew": d.skew, "kurtosis": d.kurtosis, "sr_variance": d.sr_variance,
            "n_sr_values": int(finite.size), "per_period": True}


def pbo_stats(matrix: pd.DataFrame) -> dict[str, Any]:
    """PBO (CSCV) over a (bars x configurations) return matrix; says why when not computable."""
    n_cols = matrix.shape[1]
    splits = pbo_splits(len(matrix))
    if n_cols < 2:
        return {"computable": False,
                "reason": f"PBO needs the returns of >= 2 configurations over the same bars, got {n_cols}"}
    if not splits:
        return {"computable": False, "reason": f"{len(matrix)} bars are too few for CSCV (need >= 8)"}
    try:
        p = probability_of_backtest_overfitting(matrix, n_splits=splits)
    except ValueError as exc:
        return {"computable": False, "reason": str(exc)}
    return {"computable": True, "pbo": p.pbo, "n_splits": p.n_splits, "n_trials": p.n_trials,
            "n_combinations": p.n_combinations, "prob_oos_loss": p.prob_oos_loss,
            "degradation_slope": p.degradation_slope, "n_obs_used": p.n_obs_used}


def overfitting_stats(selected: np.ndarray | None, n_trials: int, matrix: pd.DataFrame) -> dict[str, Any]:
    """DSR of ``selected`` (V[SR] from the columns of ``matrix``) and PBO over ``matrix``."""
    sr_values = sharpe_ratios(matrix) if matrix.shape[1] >= 1 and len(matrix) >= 2 else None
    return {"dsr": dsr_stats(selected, n_trials, sr_values), "pbo": pbo_stats(matrix)}


def format_overfitting(dsr: dict[str, Any], pbo: dict[str, Any]) -> str:
    """Two lines: the deflated Sharpe ratio and the PBO, or why each is not computable."""
    if dsr.get("computable"):
        first = (f"Deflated Sharpe ratio: {dsr['dsr']:.3f} (per-period SR {dsr['sr']:.4f} vs SR0 {dsr['sr_star']:.4f} "
                 f"expected from {dsr['n_trials']} configuration(s); PSR {dsr['psr']:.3f})")
    else:
        first = f"Deflated Sharpe ratio: not computable ({dsr.get('reason')})"
    if pbo.get("computable"):
        second = f"Probability of backtest over-fitting: {pbo['pbo']:.3f} ({pbo.get('detail', '')})"
    else:
        second = f"Probability of backtest over-fitting: not computable ({pbo.get('reason')})"
    return f"{first}\n{second}"
