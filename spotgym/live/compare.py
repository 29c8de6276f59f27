"""``spotgym live compare``: sessions side by side over their common span, and whether their difference is real.

Per session: return, annualised Sharpe, max drawdown, annual turnover (traded notional over mean equity), fees,
fills. Per pair (each session against the first): a paired moving-block bootstrap of the per-bar return
differences over the bars both sessions marked — the mean difference, its 95 % interval and a two-sided p-value
(blocks keep the returns' autocorrelation; bars are paired, so the market's own moves cancel out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest.metrics import drawdown
from spotgym.live.journal import Journal

__all__ = ["Comparison", "compare_sessions", "paired_bootstrap"]

YEAR_MS = 365.25 * 86_400_000


@dataclass
class Comparison:
    span: tuple[pd.Timestamp, pd.Timestamp]
    bars: int
    sessions: pd.DataFrame  # one row per session
    pairs: pd.DataFrame  # one row per session after the first, against the first

    def text(self) -> str:
        lines = [f"common span {self.span[0]} -> {self.span[1]} ({self.bars} bars)", ""]
        s = self.sessions
        lines.append(f"{'session':<32} {'return':>9} {'Sharpe':>7} {'max DD':>7} {'turnover/yr':>11} {'fees':>9} "
                     f"{'fills':>5}")
        for r in s.itertuples():
            lines.append(f"{r.session:<32} {100 * r.total_return:>+8.2f}% {r.sharpe:>7.2f} {100 * r.max_drawdown:>6.1f}% "
                         f"{r.turnover_annual:>10.1f}x {r.fees:>9.2f} {r.fills:>5d}")
        if len(self.pairs):
            lines += ["", "paired bootstrap of per-bar return differences (moving blocks), against "
                          f"{s.iloc[0].session}:"]
            for r in self.pairs.itertuples():
                lines.append(f"  {r.session}: mean {r.mean_diff_bps:+.3f} bp/bar, 95 % CI "
                             f"[{r.ci_low_bps:+.3f}, {r.ci_high_bps:+.3f}] bp, p = {r.p_value:.3f} "
                             f"({'different' if r.p_value < 0.05 else 'not distinguishable'} at 5 %)")
        return "\n".join(lines)


def paired_bootstrap(diff: np.ndarray, *, block: int | None = None, n: int = 2000,
                     seed: int = 0) -> tuple[float, float, float, float]:
    """(mean, 2.5 %, 97.5 %, two-sided p) of ``diff``'s mean under a moving-block bootstrap."""
    d = np.asarray(diff, dtype=np.float64)
    m = len(d)
    if m < 2:
        return float(d.mean()) if m else 0.0, float("nan"), float("nan"), 1.0
    block = block or max(1, int(round(m ** (1 / 3))))
    block = min(block, m)
    rng = np.random.default_rng(seed)
    k = int(np.ceil(m / block))
    starts = rng.integers(0, m - block + 1, size=(n, k))
    idx = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(n, -1)[:, :m]
    means = d[idx].mean(axis=1)
    centred = means - means.mean()  # the null: no difference, the same spread
    p = float(np.mean(np.abs(centred) >= abs(d.mean())))
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975)), p


def compare_sessions(target: str, sessions: Sequence[str] | None = None, *, seed: int = 0) -> Comparison:
    names = list(sessions) if sessions else sorted(r["name"] for r in Journal.session_names(target)
                                                   if r["mode"] != "retrain")
    if len(names) < 2:
        raise ValueError(f"compare needs two or more sessions; {target} has {names or 'none'}")
    curves, fills = {}, {}
    for name in names:
        j = Journal(target, name)
        try:
            if j.session_row() is None:
                raise ValueError(f"no session {name!r} in {target}")
            e = j.frame("equity")
            fills[name] = j.frame("fills")
        finally:
            j.close()
        if len(e) < 2:
            raise ValueError(f"session {name!r} has fewer than two marked bars")
        curves[name] = pd.Series(e["equity"].to_numpy(np.float64), index=e["bar_ms"].to_numpy(np.int64))
    common = sorted(set.intersection(*(set(c.index) for c in curves.values())))
    if len(common) < 3:
        raise ValueError("the sessions share fewer than three marked bars: nothing to compare")
    tf = int(np.diff(common).min())
    per_year = YEAR_MS / tf
    rows, rets = [], {}
    lo, hi = common[0], common[-1]
    for name in names:
        eq = curves[name].loc[common].to_numpy()
        r = np.diff(np.log(eq))
        rets[name] = r
        f = fills[name]
        f = f[(f["time_ms"] >= lo) & (f["time_ms"] <= hi + tf)]
        notional = float((f["quantity"] * f["price"]).sum()) if len(f) else 0.0
        years = (len(common) - 1) / per_year
        sd = r.std(ddof=1)
        rows.append({"session": name, "total_return": float(eq[-1] / eq[0] - 1.0),
                     "sharpe": float(r.mean() / sd * np.sqrt(per_year)) if sd > 0 else 0.0,
                     "max_drawdown": float(drawdown(eq).max()),
                     "turnover_annual": notional / float(eq.mean()) / years if years > 0 else 0.0,
                     "fees": float(f["fee_quote"].sum()) if len(f) else 0.0, "fills": int(len(f))})
    pairs = []
    first = names[0]
    for name in names[1:]:
        mean, low, high, p = paired_bootstrap(rets[name] - rets[first], seed=seed)
        pairs.append({"session": name, "against": first, "mean_diff_bps": 1e4 * mean, "ci_low_bps": 1e4 * low,
                      "ci_high_bps": 1e4 * high, "p_value": p})
    span = (pd.Timestamp(lo, unit="ms", tz="UTC"), pd.Timestamp(hi, unit="ms", tz="UTC"))
    return Comparison(span, len(common), pd.DataFrame(rows), pd.DataFrame(pairs))


def as_dict(c: Comparison) -> dict[str, Any]:
    return {"span": [str(c.span[0]), str(c.span[1])], "bars": c.bars, "sessions": c.sessions.to_dict("records"),
            "pairs": c.pairs.to_dict("records")}
