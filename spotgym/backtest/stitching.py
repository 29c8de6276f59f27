"""Stitching the out-of-sample test blocks of walk-forward folds into one curve.

Each fold's curve is rescaled to start where the previous one ended and its first point (the initial
equity before the first decision, now equal to the previous end) is dropped, so the stitched per-bar
returns are exactly the folds' returns one after another. Fills are scaled by the same factor. Each
fold starts flat: a position still open at a fold's end is sold at that bar's close (the price the
equity curve marks it at) paying the env's fee, and that fold's last equity point is the value after
the sale, so the stitched curve, the fills and the round trips reconcile and no round trip spans two
folds. The same applies to every baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spotgym.backtest.metrics import TRADE_COLUMNS

__all__ = ["stitch_equity", "stitch_runs"]

_DUST = 1e-9


def stitch_equity(curves: Sequence[pd.Series]) -> tuple[pd.Series, list[float]]:
    """Chain equity curves: curve k is scaled to start at curve k-1's last value, its first point dropped.

    Returns the stitched curve and each curve's scale factor (1 for the first).
    """
    if not curves:
        raise ValueError("stitch_equity needs at least one curve")
    pieces, scales, level = [], [], None
    for curve in curves:
        values = curve.to_numpy(dtype=np.float64)
        if len(values) < 2:
            raise ValueError("every curve needs at least 2 points (initial equity + one bar)")
        if level is None:
            scale, piece = 1.0, curve.astype(np.float64)
        else:
            if values[0] <= 0:
                raise ValueError("a curve must start at a positive equity")
            scale = level / values[0]
            piece = curve.iloc[1:].astype(np.float64) * scale
        scales.append(float(scale))
        level = values[-1] * scale
        pieces.append(piece)
    stitched = pd.concat(pieces)
    if not stitched.index.is_monotonic_increasing or stitched.index.has_duplicates:
        raise ValueError("the curves overlap in time; stitch consecutive, disjoint out-of-sample blocks")
    return stitched.rename("equity"), scales


def _fills(trades: pd.DataFrame) -> pd.DataFrame:
    if not len(trades):
        return pd.DataFrame(columns=list(TRADE_COLUMNS))
    return trades[list(TRADE_COLUMNS)].copy()


def _held(trades: pd.DataFrame) -> tuple[float, float]:
    """(units still held, units bought) by a fill list."""
    if not len(trades):
        return 0.0, 0.0
    qty = trades["quantity"].to_numpy(dtype=np.float64)
    buy = (trades["side"] == "buy").to_numpy()
    return float(np.where(buy, qty, -qty).sum()), float(qty[buy].sum())


def stitch_runs(rollouts: Sequence[Any], close_prices: Sequence[float], fee: float = 0.0) -> dict[str, Any]:
    """Stitch fold rollouts (``Rollout``: equity, trades, exposure) into one out-of-sample run.

    ``close_prices[k]``: the close of fold k's last bar, where a position still open is sold paying ``fee``
    (a fraction of the notional, the env's fee) -- every fold but the last (see the module docstring).
    Returns ``equity``, ``trades``, ``exposure``, ``fold`` (fold index per equity point), ``scales`` and
    ``closes`` (the sales added, in each fold's own units).
    """
    last = len(rollouts) - 1
    curves, fold_fills, closes = [], [], []
    for k, run in enumerate(rollouts):
        trades = _fills(run.trades)
        curve = run.equity.astype(np.float64).copy()
        held, bought = _held(trades)
        if k < last and held > _DUST * max(bought, 1.0):
            price = float(close_prices[k])
            sale = {"timestamp": run.equity.index[-1], "side": "sell", "price": price, "quantity": held,
                    "notional": price * held, "fee": price * held * fee}
            curve.iloc[-1] -= sale["fee"]  # the last point is the value after the sale
            trades = pd.concat([trades, pd.DataFrame([sale])], ignore_index=True)
            closes.append({"fold": k, **sale})
        curves.append(curve)
        fold_fills.append(trades)
    equity, scales = stitch_equity(curves)
    fills, exposures, folds = [], [], []
    for k, (run, trades, scale) in enumerate(zip(rollouts, fold_fills, scales)):
        exposure = run.exposure.astype(np.float64) if k == 0 else run.exposure.iloc[1:].astype(np.float64)
        exposures.append(exposure)
        folds.append(np.full(len(exposure), k))
        if len(trades):
            scaled = trades.copy()
            for column in ("quantity", "notional", "fee"):
                scaled[column] = scaled[column].astype(np.float64) * scale
            fills.append(scaled)
    trades = pd.concat(fills, ignore_index=True) if fills else pd.DataFrame(columns=list(TRADE_COLUMNS))
    return {"equity": equity, "trades": trades, "exposure": pd.concat(exposures).rename("exposure"),
            "fold": np.concatenate(folds), "scales": scales, "closes": closes}
