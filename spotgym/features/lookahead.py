"""The generic look-ahead checker: change the bars after t, and nothing up to t may change."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from spotgym.core import FeatureFrame

Output = FeatureFrame | pd.DataFrame | np.ndarray


class LookaheadError(AssertionError):
    """A column at some row t changed when only bars after t changed: it sees the future."""


def assert_no_lookahead(
    compute: Callable[[pd.DataFrame], Output],
    bars: pd.DataFrame,
    cuts: Sequence[int] | None = None,
    *,
    n_cuts: int = 4,
    seed: int = 0,
    rtol: float = 1e-9,
    atol: float = 1e-12,
    columns: Sequence[str] | None = None,
) -> list[int]:
    """Raise ``LookaheadError`` if any output cell at a row <= t depends on bars after t.

    ``compute(bars)`` returns a ``FeatureFrame``, DataFrame or (rows x columns) array aligned
    with ``bars``. For each cut t (``cuts``, or ``n_cuts`` random rows in the second half) the
    bars after t are (a) replaced by a different random price path and (b) cut off; rows 0..t of
    the output must be identical to the original run (NaN equals NaN) in both cases, and so
    must the ``valid`` mask of a ``FeatureFrame``. Returns the cuts checked.
    """
    n = len(bars)
    if n < 4:
        raise ValueError("assert_no_lookahead needs at least 4 bars")
    rng = np.random.default_rng(seed)
    if cuts is None:
        cuts = sorted(set(rng.integers(n // 2, n - 1, size=n_cuts).tolist()))
    base_values, base_valid, names = _as_matrix(compute(bars), columns)
    if base_values.shape[0] != n:
        raise ValueError(f"compute returned {base_values.shape[0]} rows for {n} bars; outputs must align with bars")
    for t in cuts:
        if not 0 <= t < n - 1:
            raise ValueError(f"cut {t} outside [0, {n - 2}]")
        for label, variant in (("perturbed", _perturb_after(bars, t, rng)), ("truncated", bars.iloc[: t + 1])):
            values, valid, _ = _as_matrix(compute(variant), columns)
            _compare(base_values[: t + 1], values[: t + 1], names, t, label, rtol, atol)
            if base_valid is not None and valid is not None and \
                    not np.array_equal(base_valid[: t + 1], valid[: t + 1]):
                row = int(np.flatnonzero(base_valid[: t + 1] != valid[: t + 1])[0])
                raise LookaheadError(f"valid mask at row {row} changed when bars after row {t} were {label}")
    return list(cuts)


def _perturb_after(bars: pd.DataFrame, t: int, rng: np.random.Generator) -> pd.DataFrame:
    """Bars with rows > t replaced by another plausible path (prices scaled by a random walk)."""
    out = bars.copy()
    m = len(bars) - t - 1
    walk = np.exp(np.cumsum(rng.normal(0.0, 0.05, size=m)))
    for col in ("open", "high", "low", "close"):
        if col in out.columns:
            out.iloc[t + 1:, out.columns.get_loc(col)] = out[col].to_numpy()[t + 1:] * walk
    if "volume" in out.columns:
        out.iloc[t + 1:, out.columns.get_loc("volume")] = out["volume"].to_numpy()[t + 1:] * \
            rng.uniform(0.2, 5.0, size=m)
    return out


def _as_matrix(output: Output, columns: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    if isinstance(output, FeatureFrame):
        names = list(columns or output.columns)
        idx = [output.columns.index(c) for c in names]
        return output.values[:, idx].astype(np.float64), output.valid, names
    if isinstance(output, pd.DataFrame):
        sub = output[list(columns)] if columns else output
        return sub.to_numpy(np.float64), None, [str(c) for c in sub.columns]
    arr = np.asarray(output, dtype=np.float64)
    arr = arr[:, None] if arr.ndim == 1 else arr.reshape(arr.shape[0], -1)
    return arr, None, [f"col{j}" for j in range(arr.shape[1])]


def _compare(base: np.ndarray, new: np.ndarray, names: list[str], t: int, label: str,
             rtol: float, atol: float) -> None:
    same = np.isclose(base, new, rtol=rtol, atol=atol) | (np.isnan(base) & np.isnan(new))
    if same.all():
        return
    bad_cols = np.flatnonzero(~same.all(axis=0))
    details = []
    for j in bad_cols[:10]:
        row = int(np.flatnonzero(~same[:, j])[0])
        details.append(f"{names[j]} (first at row {row}: {float(base[row, j])!r} -> {float(new[row, j])!r})")
    raise LookaheadError(f"{len(bad_cols)} column(s) changed at rows <= {t} when the bars after row {t} were "
                         f"{label}: " + "; ".join(details))
