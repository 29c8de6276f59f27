"""Over-fitting statistics for walk-forward evaluation and tuning: PSR, deflated Sharpe, PBO (CSCV).

Pure functions of numpy/pandas inputs (no env import), used by ``spotgym evaluate`` / ``spotgym tune``
to say how much of a selected configuration's Sharpe ratio is explained by the number of trials run.

Conventions, chosen once and used by every function here:

- **Sharpe ratios are per period, never annualised**: ``SR = mean(r) / std(r, ddof=1)`` of the simple
  per-bar returns, risk-free rate 0 -- the same estimator as
  :func:`spotgym.backtest.metrics.compute_metrics` before its ``sqrt(periods_per_year)`` scaling. To
  use an annualised Sharpe here divide it by ``sqrt(periods_per_year)`` (and a variance of
  annualised Sharpes by ``periods_per_year``). PSR/DSR are only meaningful on this per-period scale,
  because ``T`` counts periods.
- **Skewness** ``γ3 = m3 / m2**1.5`` and **kurtosis** ``γ4 = m4 / m2**2`` are the plain moment
  estimators with ``m_k = mean((r - mean(r))**k)`` (divisor ``n``; scipy's ``skew``/``kurtosis`` with
  ``bias=True, fisher=False``). Kurtosis is **non-excess**: 3 for normal returns. The moment
  estimators always satisfy ``γ4 >= γ3**2 + 1``, which keeps the PSR variance term positive.
- The normal CDF Φ and its inverse Φ⁻¹ come from :class:`statistics.NormalDist` (no scipy needed).

References:

- Bailey, D. H. & López de Prado, M. (2012). "The Sharpe Ratio Efficient Frontier". *Journal of Risk*
  15(2), 3-44 -- the probabilistic Sharpe ratio (PSR); restated in López de Prado (2018), *Advances in
  Financial Machine Learning*, §14.7.2.
- Bailey, D. H. & López de Prado, M. (2014). "The Deflated Sharpe Ratio: Correcting for Selection
  Bias, Backtest Overfitting and Non-Normality". *Journal of Portfolio Management* 40(5), 94-107 --
  the expected maximum Sharpe ratio under the null and the DSR; AFML §14.7.3.
- Bailey, D. H., Borwein, J., López de Prado, M. & Zhu, Q. J. (2017, SSRN 2013). "The Probability of
  Backtest Overfitting". *Journal of Computational Finance* 20(4), 39-69 -- combinatorially
  symmetric cross-validation (CSCV) and PBO; AFML §11.6.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "EULER_MASCHERONI",
    "DeflatedSharpeResult",
    "PBOResult",
    "SharpeStats",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "probability_of_backtest_overfitting",
    "sharpe_ratios",
    "sharpe_stats",
]

EULER_MASCHERONI = 0.5772156649015329
"""γ, the Euler-Mascheroni constant in the expected-maximum approximation."""

DEFAULT_MAX_COMBINATIONS = 20_000
"""Default cap on CSCV combinations: every one of C(16, 8) = 12 870 for the default 16 splits."""

_STD_NORMAL = NormalDist()


# --------------------------------------------------------------------------------------------------
# Sharpe ratio statistics
# --------------------------------------------------------------------------------------------------


class SharpeStats(NamedTuple):
    """The four sample statistics PSR/DSR need; unpacks as ``(sr, n_obs, skew, kurtosis)``.

    ``sr`` is per period (not annualised), ``kurtosis`` is non-excess (3 for normal returns).
    """

    sr: float
    n_obs: int
    skew: float
    kurtosis: float


def _returns_1d(returns: Any, what: str = "returns") -> np.ndarray:
    values = np.asarray(returns.to_numpy() if isinstance(returns, pd.Series) else returns, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {values.shape}")
    if not np.isfinite(values).all():
        i = int(np.argmax(~np.isfinite(values)))
        raise ValueError(f"{what} has a non-finite value {values[i]} at position {i}")
    return values


def sharpe_stats(returns: Any) -> SharpeStats:
    """Per-period Sharpe ratio, sample size, skewness and (non-excess) kurtosis of ``returns``.

    ``sr = mean(r) / std(r, ddof=1)``; ``skew = m3 / m2**1.5``; ``kurtosis = m4 / m2**2`` with the
    central moments ``m_k = mean((r - mean(r))**k)`` (see the module docstring for why).

    Args:
        returns: 1-D simple per-period returns (array-like or Series), all finite, at least 2.

    Raises:
        ValueError: fewer than 2 returns, a non-finite value, or constant returns (zero variance:
            the Sharpe ratio, skewness and kurtosis are undefined).
    """
    r = _returns_1d(returns)
    n = r.size
    if n < 2:
        raise ValueError(f"returns need at least 2 observations, got {n}")
    dev = r - r.mean()
    m2 = float(np.mean(dev**2))
    if m2 <= 0.0:
        raise ValueError("returns are constant (zero variance): Sharpe ratio, skewness and kurtosis are undefined")
    m3 = float(np.mean(dev**3))
    m4 = float(np.mean(dev**4))
    std = math.sqrt(m2 * n / (n - 1))
    return SharpeStats(sr=float(r.mean()) / std, n_obs=n, skew=m3 / m2**1.5, kurtosis=m4 / m2**2)


def _performance_matrix(performance: Any) -> np.ndarray:
    values = performance.to_numpy(dtype=np.float64) if isinstance(performance, pd.DataFrame) else performance
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"performance must be 2-D (periods x trials), got shape {values.shape}")
    if not np.isfinite(values).all():
        row, col = (int(i[0]) for i in np.nonzero(~np.isfinite(values)))
        raise ValueError(f"performance has a non-finite value {values[row, col]} at row {row}, trial {col}")
    return values


def _sharpe_from_moments(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``mean / sqrt(var)``; a zero-variance column is 0 when its mean is 0, else ±inf (ranks still work)."""
    std = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        sr = mean / std
    flat = std == 0.0
    sr[flat] = np.where(mean[flat] == 0.0, 0.0, np.copysign(np.inf, mean[flat]))
    return sr


def sharpe_ratios(performance: Any) -> np.ndarray:
    """Per-period Sharpe ratio of every column of a (periods x trials) return matrix or DataFrame.

    Same estimator as :func:`sharpe_stats` (``mean / std(ddof=1)``); a constant column gets 0 when its
    mean is 0 and ±inf otherwise. Use it to get the cross-trial variance for the DSR:
    ``np.var(sharpe_ratios(perf), ddof=1)``.
    """
    m = _performance_matrix(performance)
    if m.shape[0] < 2:
        raise ValueError(f"performance needs at least 2 periods, got {m.shape[0]}")
    return _sharpe_from_moments(m.mean(axis=0), m.var(axis=0, ddof=1))


# --------------------------------------------------------------------------------------------------
# PSR, expected maximum Sharpe, DSR
# --------------------------------------------------------------------------------------------------


def _check_n_obs(n_obs: Any) -> int:
    if isinstance(n_obs, bool) or not float(n_obs).is_integer():
        raise ValueError(f"n_obs must be an integer, got {n_obs!r}")
    n = int(n_obs)
    if n < 2:
        raise ValueError(f"n_obs must be at least 2 (the PSR uses sqrt(T - 1)), got {n}")
    return n


def _psr_z(sharpe: float, n_obs: int, skew: float, kurtosis: float, sr_benchmark: float) -> float:
    for name, value in (("sharpe", sharpe), ("skew", skew), ("kurtosis", kurtosis), ("sr_benchmark", sr_benchmark)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    if kurtosis < 1.0:
        raise ValueError(f"kurtosis must be the non-excess kurtosis (>= 1, 3 for normal), got {kurtosis}")
    variance_term = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance_term <= 0.0:
        raise ValueError(
            f"inconsistent moments: 1 - skew*SR + (kurtosis-1)/4*SR^2 = {variance_term} <= 0 "
            f"(needs kurtosis >= skew^2 + 1; was an excess kurtosis passed?)"
        )
    return (sharpe - sr_benchmark) * math.sqrt(n_obs - 1) / math.sqrt(variance_term)


def probabilistic_sharpe_ratio(
    sharpe: float, n_obs: int, skew: float, kurtosis: float, sr_benchmark: float = 0.0
) -> float:
    """Probabilistic Sharpe ratio: the probability that the true Sharpe ratio exceeds ``sr_benchmark``.

    Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier", §3 (AFML §14.7.2)::

        PSR(SR*) = Φ( (SR - SR*) * sqrt(T - 1) / sqrt(1 - γ3*SR + (γ4 - 1)/4 * SR²) )

    Args:
        sharpe: observed Sharpe ratio SR, **per period** (not annualised).
        n_obs: T, the number of returns SR was estimated from (>= 2).
        skew: γ3, sample skewness of the returns (0 for normal).
        kurtosis: γ4, sample **non-excess** kurtosis of the returns (3 for normal, not 0).
        sr_benchmark: SR*, the per-period benchmark Sharpe ratio (default 0: "any edge at all").

    Returns:
        PSR in [0, 1].

    Raises:
        ValueError: n_obs < 2 or not an integer, a non-finite input, kurtosis < 1, or moments for
            which the variance term is not positive (kurtosis < skew² + 1).
    """
    n = _check_n_obs(n_obs)
    z = _psr_z(float(sharpe), n, float(skew), float(kurtosis), float(sr_benchmark))
    return _STD_NORMAL.cdf(z)


def _check_n_trials(n_trials: Any) -> int:
    if isinstance(n_trials, bool) or not float(n_trials).is_integer():
        raise ValueError(f"n_trials must be an integer, got {n_trials!r}")
    n = int(n_trials)
    if n < 1:
        raise ValueError(f"n_trials must be at least 1, got {n}")
    return n


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` independent trials with zero true Sharpe.

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio", the threshold SR₀ of the DSR (from
    the False Strategy theorem; AFML §14.7.3)::

        E[max SR] ≈ sqrt(V[SR]) * ( (1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)) ),   γ ≈ 0.5772157

    Args:
        n_trials: N, the number of (effectively independent) trials tried; ``N == 1`` gives 0 (no
            selection, and Φ⁻¹(0) would be -inf).
        sr_variance: V[SR], the variance of the trials' **per-period** Sharpe ratios (>= 0).

    Raises:
        ValueError: n_trials < 1 or not an integer; sr_variance negative or not finite.
    """
    n = _check_n_trials(n_trials)
    v = float(sr_variance)
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"sr_variance must be a finite, non-negative variance, got {sr_variance}")
    if n == 1 or v == 0.0:
        return 0.0
    g = EULER_MASCHERONI
    z = (1.0 - g) * _STD_NORMAL.inv_cdf(1.0 - 1.0 / n) + g * _STD_NORMAL.inv_cdf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(v) * z


@dataclass(frozen=True)
class DeflatedSharpeResult:
    """Deflated Sharpe ratio of one selected strategy; every Sharpe here is per period.

    Attributes:
        dsr: PSR against ``sr_star`` -- the probability that the true Sharpe exceeds what the best of
            ``n_trials`` zero-skill trials would show. 0.95 is the usual bar.
        psr: PSR against 0 (no deflation for the number of trials).
        sr: observed per-period Sharpe ratio.
        sr_star: expected maximum Sharpe under the null, :func:`expected_max_sharpe`.
        n_trials, n_obs, skew, kurtosis, sr_variance: the inputs (kurtosis non-excess).
        z: the standardised statistic, ``dsr = Φ(z)``.
    """

    dsr: float
    psr: float
    sr: float
    sr_star: float
    n_trials: int
    n_obs: int
    skew: float
    kurtosis: float
    sr_variance: float
    z: float


def deflated_sharpe_ratio(
    returns_or_stats: Any, n_trials: int, sr_variance_across_trials: float
) -> DeflatedSharpeResult:
    """Deflated Sharpe ratio: PSR with the benchmark set to the expected maximum Sharpe of the trials.

    Bailey & López de Prado (2014), "The Deflated Sharpe Ratio" (AFML §14.7.3)::

        DSR = PSR(SR₀) = Φ( (SR - SR₀) * sqrt(T - 1) / sqrt(1 - γ3*SR + (γ4 - 1)/4 * SR²) ),
        SR₀ = sqrt(V[SR_n]) * ( (1 - γ) Φ⁻¹(1 - 1/N) + γ Φ⁻¹(1 - 1/(N e)) )

    Args:
        returns_or_stats: either the selected strategy's per-period returns (1-D array, list or
            Series), or its statistics as a :class:`SharpeStats` / plain ``tuple``
            ``(sr, n_obs, skew, kurtosis)`` with ``sr`` per period and ``kurtosis`` non-excess. A plain
            ``tuple`` is always read as statistics -- pass returns as an array, list or Series.
        n_trials: N, the number of trials tried before selecting this one (>= 1; 1 means no
            selection: SR₀ = 0 and DSR = PSR).
        sr_variance_across_trials: V[SR_n], the variance of the per-period Sharpe ratios across the
            trials (e.g. ``np.var(sharpe_ratios(perf), ddof=1)``), >= 0.

    Raises:
        ValueError: n_trials < 1, n_obs < 2, a negative or non-finite variance, constant returns, or
            inconsistent moments (see :func:`probabilistic_sharpe_ratio`).
    """
    if isinstance(returns_or_stats, tuple):
        if len(returns_or_stats) != 4:
            raise ValueError(
                f"statistics must be (sr, n_obs, skew, kurtosis), got a tuple of {len(returns_or_stats)}; "
                "pass returns as an array, list or Series"
            )
        sr, n_obs, skew, kurt = returns_or_stats
        stats = SharpeStats(float(sr), _check_n_obs(n_obs), float(skew), float(kurt))
    else:
        stats = sharpe_stats(returns_or_stats)
    n = _check_n_trials(n_trials)
    sr_star = expected_max_sharpe(n, sr_variance_across_trials)
    z = _psr_z(stats.sr, stats.n_obs, stats.skew, stats.kurtosis, sr_star)
    psr = probabilistic_sharpe_ratio(stats.sr, stats.n_obs, stats.skew, stats.kurtosis, 0.0)
    return DeflatedSharpeResult(
        dsr=_STD_NORMAL.cdf(z),
        psr=psr,
        sr=stats.sr,
        sr_star=sr_star,
        n_trials=n,
        n_obs=stats.n_obs,
        skew=stats.skew,
        kurtosis=stats.kurtosis,
        sr_variance=float(sr_variance_across_trials),
        z=z,
    )


# --------------------------------------------------------------------------------------------------
# Probability of backtest over-fitting (CSCV)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PBOResult:
    """Probability of backtest over-fitting from combinatorially symmetric cross-validation.

    Per combination ``c`` (rows aligned across the arrays):

    Attributes:
        pbo: fraction of combinations with ``logit <= 0`` (the IS-best trial at or below the OOS median).
        logits: λ_c = ln(ω̄_c / (1 - ω̄_c)).
        oos_rank: ω̄_c = (OOS rank of the IS-best trial, 1 = worst ... N = best) / (N + 1).
        best_trial: column index of the IS-best trial.
        is_performance, oos_performance: the metric of that trial in-sample and out-of-sample.
        n_combinations: number of combinations evaluated (all, or the seeded sample).
        n_total_combinations: C(S, S/2).
        sampled: True when the combinations are a seeded sample of all of them.
        n_splits, n_trials: S and N.
        n_obs_used: rows used, ``S * (T // S)`` (the oldest ``T % S`` rows are dropped).
        degradation_slope, degradation_intercept: OLS fit ``oos = intercept + slope * is`` over the
            combinations (performance degradation; NaN when the IS values do not vary).
        prob_oos_loss: fraction of combinations whose IS-best trial has an OOS metric < 0.
        metric: the metric's name.
        trial_names: the DataFrame's column labels, or ``0..N-1``.
    """

    pbo: float
    logits: np.ndarray
    oos_rank: np.ndarray
    best_trial: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray
    n_combinations: int
    n_total_combinations: int
    sampled: bool
    n_splits: int
    n_trials: int
    n_obs_used: int
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float
    metric: str
    trial_names: list[Any] = field(default_factory=list)


def _cscv_masks(n_splits: int, max_combinations: int | None, random_state: int | None) -> tuple[np.ndarray, int, bool]:
    """Boolean (C, S) in-sample masks holding every combination together with its complement.

    All C(S, S/2) combinations when that is <= ``max_combinations``; otherwise a seeded uniform sample
    (without replacement) of ``max_combinations // 2`` complement pairs, so the sample stays symmetric.
    """
    half = n_splits // 2
    total = math.comb(n_splits, half)
    # Enumerate the combinations that hold block 0; each one's complement is the other half.
    if max_combinations is None or total <= max_combinations:
        rows = [(0, *rest) for rest in combinations(range(1, n_splits), half - 1)]
        sampled = False
    else:
        n_pairs = max_combinations // 2
        rng = np.random.default_rng(random_state)
        pairs_total = total // 2
        if pairs_total <= 4 * n_pairs:
            every = [(0, *rest) for rest in combinations(range(1, n_splits), half - 1)]
            pick = np.sort(rng.choice(len(every), size=n_pairs, replace=False))
            rows = [every[i] for i in pick]
        else:
            seen: set[tuple[int, ...]] = set()
            rows = []
            while len(rows) < n_pairs:
                draw = np.argsort(rng.random((2 * (n_pairs - len(rows)), n_splits - 1)), axis=1)[:, : half - 1] + 1
                for rest in np.sort(draw, axis=1):
                    key = (0, *(int(b) for b in rest))
                    if key not in seen:
                        seen.add(key)
                        rows.append(key)
                        if len(rows) == n_pairs:
                            break
        sampled = True
    masks = np.zeros((len(rows), n_splits), dtype=bool)
    for i, row in enumerate(rows):
        masks[i, list(row)] = True
    # Interleave each combination with its complement: c0, ~c0, c1, ~c1, ...
    both = np.empty((2 * len(rows), n_splits), dtype=bool)
    both[0::2] = masks
    both[1::2] = ~masks
    return both, total, sampled


_FAST_METRICS = ("sharpe", "mean")


def probability_of_backtest_overfitting(
    performance: Any,
    n_splits: int = 16,
    metric: str | Callable[[np.ndarray], np.ndarray] = "sharpe",
    *,
    max_combinations: int | None = DEFAULT_MAX_COMBINATIONS,
    random_state: int | None = 0,
) -> PBOResult:
    """Probability of backtest over-fitting by combinatorially symmetric cross-validation (CSCV).

    Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest Overfitting", §2 (the
    CSCV algorithm; AFML §11.6):

    1. ``M`` is the (T x N) matrix of per-period returns of N trials over the same T periods.
    2. Split the rows into S contiguous blocks of ``T // S`` rows (the oldest ``T % S`` rows are
       dropped so all blocks are equal, as the paper requires).
    3. For each combination c of S/2 blocks: in-sample J = those blocks, out-of-sample J̄ = the rest.
       R_c, R̄_c = the metric of every trial on J, J̄.
    4. n* = argmax R_c (first on ties); ω̄_c = rank of R̄_c[n*] among R̄_c / (N + 1), rank 1 = worst,
       ties averaged; λ_c = ln(ω̄_c / (1 - ω̄_c)).
    5. PBO = #{λ_c <= 0} / #combinations (the IS winner does no better than the OOS median).

    Performance degradation (paper §4): an OLS fit of R̄_c[n*] on R_c[n*] across combinations, and
    the probability of an OOS loss P[R̄_c[n*] < 0].

    Args:
        performance: (T x N) array or DataFrame of per-period returns, one column per trial, all finite.
        n_splits: S, even, >= 2 and <= T. The default 16 gives C(16, 8) = 12 870 combinations.
        metric: ``"sharpe"`` (per-period ``mean / std(ddof=1)``; a constant column is 0 or ±inf) or
            ``"mean"`` -- both computed from per-block sums, vectorised over all combinations -- or a
            callable mapping a (rows x N) returns matrix to N metric values (higher = better), called
            twice per combination.
        max_combinations: cap on the combinations evaluated (None = no cap). Beyond it a uniform sample
            without replacement of ``max_combinations // 2`` combinations, each with its complement,
            is drawn with ``numpy.random.default_rng(random_state)`` (so results are reproducible).
        random_state: seed for that sample.

    Raises:
        ValueError: fewer than 2 trials; S odd, < 2 or > T; a non-finite value; an in-sample half too
            short for the Sharpe ratio (< 2 rows); ``max_combinations < 2``; an unknown metric name.
    """
    names = list(performance.columns) if isinstance(performance, pd.DataFrame) else None
    m = _performance_matrix(performance)
    t_rows, n_trials = m.shape
    if n_trials < 2:
        raise ValueError(f"PBO needs at least 2 trials (columns), got {n_trials}")
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)):
        raise ValueError(f"n_splits must be an integer, got {n_splits!r}")
    s = int(n_splits)
    if s < 2 or s % 2:
        raise ValueError(f"n_splits must be even and >= 2, got {s}")
    if t_rows < s:
        raise ValueError(f"performance has {t_rows} periods, fewer than n_splits={s}")
    if max_combinations is not None and max_combinations < 2:
        raise ValueError(f"max_combinations must be >= 2 (a combination and its complement) or None, got {max_combinations}")
    if isinstance(metric, str) and metric not in _FAST_METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {_FAST_METRICS} or a callable")
    block = t_rows // s
    half_rows = block * (s // 2)
    if metric == "sharpe" and half_rows < 2:
        raise ValueError(f"each half holds {half_rows} row(s); the Sharpe ratio needs at least 2 (more periods or fewer splits)")
    m = m[t_rows - block * s :]

    masks, total, sampled = _cscv_masks(s, max_combinations, random_state)
    n_comb = masks.shape[0]

    if isinstance(metric, str):
        # Per-block sums of the (column-centred, for numerical stability) returns and their squares;
        # the IS/OOS sums of any combination are then a (C x S) @ (S x N) product.
        centre = m.mean(axis=0)
        dev = (m - centre).reshape(s, block, n_trials)
        sums, sq_sums = dev.sum(axis=1), (dev**2).sum(axis=1)
        w_is = masks.astype(np.float64)
        w_oos = 1.0 - w_is

        def evaluate(weights: np.ndarray) -> np.ndarray:
            mean_dev = weights @ sums / half_rows
            if metric == "mean":
                return mean_dev + centre
            var = (weights @ sq_sums - half_rows * mean_dev**2) / (half_rows - 1)
            return _sharpe_from_moments(mean_dev + centre, var)

        r_is, r_oos = evaluate(w_is), evaluate(w_oos)
    else:
        blocks = m.reshape(s, block, n_trials)
        r_is = np.empty((n_comb, n_trials))
        r_oos = np.empty((n_comb, n_trials))
        for i, mask in enumerate(masks):
            for out, sel in ((r_is, mask), (r_oos, ~mask)):
                values = np.asarray(metric(blocks[sel].reshape(half_rows, n_trials)), dtype=np.float64)
                if values.shape != (n_trials,):
                    raise ValueError(f"metric must return {n_trials} values (one per trial), got shape {values.shape}")
                if np.isnan(values).any():
                    raise ValueError("metric returned NaN")
                out[i] = values

    rows = np.arange(n_comb)
    best = np.argmax(r_is, axis=1)
    is_best = r_is[rows, best]
    oos_best = r_oos[rows, best]
    below = (r_oos < oos_best[:, None]).sum(axis=1)
    equal = (r_oos == oos_best[:, None]).sum(axis=1)  # includes the trial itself
    rank = below + (equal + 1) / 2.0
    omega = rank / (n_trials + 1)
    logits = np.log(omega / (1.0 - omega))

    slope = intercept = math.nan
    finite = np.isfinite(is_best) & np.isfinite(oos_best)
    x, y = is_best[finite], oos_best[finite]
    if x.size >= 2 and np.ptp(x) > 0:
        slope, intercept = (float(v) for v in np.polyfit(x, y, 1))

    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        oos_rank=omega,
        best_trial=best,
        is_performance=is_best,
        oos_performance=oos_best,
        n_combinations=n_comb,
        n_total_combinations=total,
        sampled=sampled,
        n_splits=s,
        n_trials=n_trials,
        n_obs_used=block * s,
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=float(np.mean(oos_best < 0.0)),
        metric=metric if isinstance(metric, str) else getattr(metric, "__name__", "custom"),
        trial_names=names if names is not None else list(range(n_trials)),
    )
