"""Over-fitting statistics: hand-computed PSR/DSR, sharpe_stats, CSCV/PBO on constructed cases, input errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from spotgym.backtest.stats import (
    EULER_MASCHERONI,
    DeflatedSharpeResult,
    SharpeStats,
    _cscv_masks,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    probability_of_backtest_overfitting,
    sharpe_ratios,
    sharpe_stats,
)

LN2 = math.log(2.0)

# ------------------------------------------------------------------------------------------------
# sharpe_stats
# ------------------------------------------------------------------------------------------------


def test_sharpe_stats_hand_computed():
    # r = [10, -20, 30, 0, 20] * 1e-3 (work in units of 1e-3; SR, skew and kurtosis are scale-free)
    # mean = 40 / 5 = 8;  deviations d = [2, -28, 22, -8, 12]
    # sum d^2 = 4 + 784 + 484 + 64 + 144 = 1480  -> m2 = 296, var(ddof=1) = 370
    # sum d^3 = 8 - 21952 + 10648 - 512 + 1728 = -10080  -> m3 = -2016
    # sum d^4 = 16 + 614656 + 234256 + 4096 + 20736 = 873760  -> m4 = 174752
    # SR = 8 / sqrt(370) = 0.415900196;  skew = -2016 / 296^1.5 = -0.395870337
    # kurtosis = 174752 / 296^2 = 174752 / 87616 = 1.994521549 (non-excess)
    stats = sharpe_stats([0.010, -0.020, 0.030, 0.000, 0.020])
    assert isinstance(stats, SharpeStats)
    sr, n, skew, kurt = stats
    assert n == 5
    assert sr == pytest.approx(8 / math.sqrt(370), abs=1e-12)
    assert sr == pytest.approx(0.415900196, abs=1e-9)
    assert skew == pytest.approx(-2016 / 296**1.5, abs=1e-12)
    assert skew == pytest.approx(-0.395870337, abs=1e-9)
    assert kurt == pytest.approx(174752 / 87616, abs=1e-12)
    assert kurt == pytest.approx(1.994521549, abs=1e-9)
    # A Series gives the same numbers.
    assert sharpe_stats(pd.Series([0.010, -0.020, 0.030, 0.000, 0.020])) == pytest.approx(tuple(stats))


def test_sharpe_stats_errors():
    with pytest.raises(ValueError, match="at least 2"):
        sharpe_stats([0.01])
    with pytest.raises(ValueError, match="constant"):
        sharpe_stats([0.01, 0.01, 0.01])
    with pytest.raises(ValueError, match="non-finite"):
        sharpe_stats([0.01, float("nan"), 0.02])
    with pytest.raises(ValueError, match="one-dimensional"):
        sharpe_stats([[0.01, 0.02], [0.03, 0.04]])


def test_sharpe_ratios_per_column():
    m = np.array([[0.01, 0.0, 0.02], [0.03, 0.0, 0.02], [-0.01, 0.0, 0.02]])
    sr = sharpe_ratios(m)
    # column 0: mean 0.01, std(ddof=1) = 0.02 -> 0.5; column 1 flat at 0 -> 0; column 2 flat > 0 -> +inf
    assert sr[0] == pytest.approx(0.5, abs=1e-12)
    assert sr[1] == 0.0
    assert sr[2] == math.inf


# ------------------------------------------------------------------------------------------------
# PSR / expected max Sharpe / DSR
# ------------------------------------------------------------------------------------------------


def test_psr_normal_case_closed_form():
    # skew 0, kurtosis 3 -> denominator sqrt(1 + SR^2 / 2)
    # SR = 0.05, T = 500: z = 0.05 * sqrt(499) / sqrt(1.00125) = 0.05 * 22.338307904 / 1.000624805 = 1.116217977
    # PSR = Phi(z) = (1 + erf(z / sqrt 2)) / 2 = 0.867835579
    z = 0.05 * math.sqrt(499) / math.sqrt(1 + 0.05**2 / 2)
    assert z == pytest.approx(1.116217977, abs=1e-9)
    psr = probabilistic_sharpe_ratio(0.05, 500, 0.0, 3.0)
    assert psr == pytest.approx(0.5 * (1 + math.erf(z / math.sqrt(2))), abs=1e-12)
    assert psr == pytest.approx(0.867835579, abs=1e-9)
    # Against a benchmark equal to the observed SR the probability is exactly one half.
    assert probabilistic_sharpe_ratio(0.05, 500, -1.0, 6.0, sr_benchmark=0.05) == pytest.approx(0.5, abs=1e-15)


def test_deflated_sharpe_hand_computed():
    # SR = 0.1 per period, T = 1000, skew = -0.5, kurtosis = 4 (non-excess), N = 10 trials, V[SR] = 0.0025.
    # Expected max Sharpe under the null:
    #   Phi^-1(1 - 1/10)          = Phi^-1(0.9)          = 1.281551566
    #   1 - 1/(10 e)              = 1 - 0.036787944      = 0.963212056
    #   Phi^-1(0.963212056)                              = 1.789241765
    #   (1 - g) * 1.281551566 = 0.422784335 * 1.281551566 = 0.541819927
    #   g * 1.789241765       = 0.577215665 * 1.789241765 = 1.032778375
    #   sum                                              = 1.574598301
    #   SR* = sqrt(0.0025) * 1.574598301 = 0.05 * 1.574598301 = 0.078729915
    # DSR = PSR(SR*):
    #   variance term = 1 - (-0.5)(0.1) + (4 - 1)/4 * 0.1^2 = 1 + 0.05 + 0.0075 = 1.0575; sqrt = 1.028348190
    #   z = (0.1 - 0.078729915) * sqrt(999) / 1.028348190 = 0.021270085 * 31.606961259 / 1.028348190
    #     = 0.653750118
    #   DSR = Phi(0.653750118) = 0.743363596
    # Undeflated PSR(0): z = 0.1 * 31.606961259 / 1.028348190 = 3.073566090 -> Phi = 0.998942416
    assert EULER_MASCHERONI == pytest.approx(0.5772156649, abs=1e-10)
    sr_star = expected_max_sharpe(10, 0.0025)
    assert sr_star == pytest.approx(0.078729915, abs=1e-9)
    res = deflated_sharpe_ratio((0.1, 1000, -0.5, 4.0), n_trials=10, sr_variance_across_trials=0.0025)
    assert isinstance(res, DeflatedSharpeResult)
    assert res.sr_star == pytest.approx(0.078729915, abs=1e-9)
    assert res.z == pytest.approx(0.653750118, abs=1e-8)
    assert res.dsr == pytest.approx(0.743363596, abs=1e-6)
    assert res.psr == pytest.approx(0.998942416, abs=1e-6)
    assert (res.sr, res.n_trials, res.n_obs, res.skew, res.kurtosis) == (0.1, 10, 1000, -0.5, 4.0)
    assert res.dsr == pytest.approx(probabilistic_sharpe_ratio(0.1, 1000, -0.5, 4.0, sr_benchmark=sr_star), abs=1e-15)


def test_expected_max_sharpe_matches_exact_normal_maximum():
    # E[max of N iid N(0, 1)] = integral of x * N phi(x) Phi(x)^(N-1) dx (1.538753, 2.507594, 3.241436 for
    # N = 10, 100, 1000); the approximation is 2.3 %, 0.9 %, 0.4 % above it (it tightens as N grows).
    x = np.linspace(-10, 10, 40001)
    phi = np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    for n, rel in ((10, 0.03), (100, 0.012), (1000, 0.006)):
        exact = float(np.sum(x * n * phi * cdf ** (n - 1)) * (x[1] - x[0]))
        assert expected_max_sharpe(n, 1.0) == pytest.approx(exact, rel=rel)
    # Scales with the standard deviation of the trials' Sharpe ratios; grows with N.
    assert expected_max_sharpe(100, 4.0) == pytest.approx(2 * expected_max_sharpe(100, 1.0), rel=1e-12)
    assert expected_max_sharpe(2, 1.0) < expected_max_sharpe(10, 1.0) < expected_max_sharpe(1000, 1.0)
    assert expected_max_sharpe(1, 1.0) == 0.0
    assert expected_max_sharpe(50, 0.0) == 0.0


def test_dsr_single_trial_is_psr_and_returns_match_stats():
    rng = np.random.default_rng(7)
    r = rng.normal(0.001, 0.01, 500)
    stats = sharpe_stats(r)
    single = deflated_sharpe_ratio(r, n_trials=1, sr_variance_across_trials=0.01)
    assert single.sr_star == 0.0
    assert single.dsr == single.psr == pytest.approx(probabilistic_sharpe_ratio(*stats))
    from_stats = deflated_sharpe_ratio(stats, 25, 0.002)
    from_series = deflated_sharpe_ratio(pd.Series(r), 25, 0.002)
    assert from_stats == from_series
    assert from_stats.dsr < from_stats.psr  # deflation for 25 trials only lowers the probability


def test_psr_dsr_errors():
    with pytest.raises(ValueError, match="n_trials"):
        deflated_sharpe_ratio((0.1, 100, 0.0, 3.0), 0, 0.01)
    with pytest.raises(ValueError, match="n_trials"):
        expected_max_sharpe(2.5, 0.01)
    with pytest.raises(ValueError, match="n_obs"):
        deflated_sharpe_ratio((0.1, 1, 0.0, 3.0), 5, 0.01)
    with pytest.raises(ValueError, match="n_obs"):
        probabilistic_sharpe_ratio(0.1, 1, 0.0, 3.0)
    with pytest.raises(ValueError, match="non-negative"):
        deflated_sharpe_ratio((0.1, 100, 0.0, 3.0), 5, -0.01)
    with pytest.raises(ValueError, match="non-negative"):
        expected_max_sharpe(5, float("nan"))
    with pytest.raises(ValueError, match="non-excess"):
        probabilistic_sharpe_ratio(0.1, 100, 0.0, 0.0)  # an excess kurtosis of 0 passed by mistake
    with pytest.raises(ValueError, match="inconsistent moments"):
        probabilistic_sharpe_ratio(1.0, 100, 3.0, 1.5)  # kurtosis < skew^2 + 1
    with pytest.raises(ValueError, match="sr, n_obs, skew, kurtosis"):
        deflated_sharpe_ratio((0.1, 100, 0.0), 5, 0.01)
    with pytest.raises(ValueError, match="constant"):
        deflated_sharpe_ratio(np.zeros(10), 5, 0.01)


# ------------------------------------------------------------------------------------------------
# PBO (CSCV)
# ------------------------------------------------------------------------------------------------


def test_pbo_hand_computed_mean_metric_with_ties():
    # T = 4 rows, S = 4 blocks of one row, N = 2 trials, metric = mean (returns in percent, sums exact).
    #   A = [1, 2, -1, 3]  (total 5)      B = [2, 0, 1, 1]  (total 4)
    # IS blocks | IS means A, B | best (first on tie) | OOS means A, B | OOS rank of best | w = rank/3 | logit
    #   {0,1}   | 1.5, 1.0      | A                   | 1.0, 1.0       | 1.5 (tie)        | 1/2        | 0
    #   {2,3}   | 1.0, 1.0      | A (tie)             | 1.5, 1.0       | 2                | 2/3        | ln 2
    #   {0,2}   | 0.0, 1.5      | B                   | 2.5, 0.5       | 1                | 1/3        | -ln 2
    #   {1,3}   | 2.5, 0.5      | A                   | 0.0, 1.5       | 1                | 1/3        | -ln 2
    #   {0,3}   | 2.0, 1.5      | A                   | 0.5, 0.5       | 1.5 (tie)        | 1/2        | 0
    #   {1,2}   | 0.5, 0.5      | A (tie)             | 2.0, 1.5       | 2                | 2/3        | ln 2
    # PBO = #{logit <= 0} / 6 = 4/6.
    # Degradation: (IS, OOS) of the chosen trial, row by row:
    #   (1.5,1.0), (1.0,1.5), (1.5,0.5), (2.5,0.0), (2.0,0.5), (0.5,2.0);
    #   mean IS = 9/6 = 1.5, mean OOS = 5.5/6; sum dx*dy = -2.5, sum dx^2 = 2.5 -> slope = -1,
    #   intercept = 5.5/6 + 1.5 = 29/12. OOS loss (< 0) in none of them.
    perf = np.array([[1.0, 2.0], [2.0, 0.0], [-1.0, 1.0], [3.0, 1.0]])
    res = probability_of_backtest_overfitting(perf, n_splits=4, metric="mean")
    assert res.n_combinations == res.n_total_combinations == 6
    assert not res.sampled
    assert res.pbo == pytest.approx(4 / 6)
    np.testing.assert_allclose(np.sort(res.logits), [-LN2, -LN2, 0.0, 0.0, LN2, LN2], atol=1e-12)
    pairs = sorted(zip(res.is_performance.tolist(), res.oos_performance.tolist(), strict=True))
    assert pairs == [(0.5, 2.0), (1.0, 1.5), (1.5, 0.5), (1.5, 1.0), (2.0, 0.5), (2.5, 0.0)]
    assert sorted(res.best_trial.tolist()) == [0, 0, 0, 0, 0, 1]
    assert res.degradation_slope == pytest.approx(-1.0, abs=1e-12)
    assert res.degradation_intercept == pytest.approx(29 / 12, abs=1e-12)
    assert res.prob_oos_loss == 0.0
    assert res.n_obs_used == 4


def test_pbo_hand_computed_sharpe_metric():
    # T = 4, S = 2 (blocks = rows {0,1} and {2,3}), N = 2, metric = per-period Sharpe.
    # Two points (a, b): mean (a+b)/2, std(ddof=1) |a-b|/sqrt 2 -> SR = (a+b) / (sqrt 2 |a-b|).
    #   A = [.01, .03 | .02, .00]: SR block0 = .04/(sqrt2 * .02) = sqrt 2;  SR block1 = .02/(sqrt2 * .02) = 1/sqrt 2
    #   B = [.00, .01 | .03, .01]: SR block0 = .01/(sqrt2 * .01) = 1/sqrt 2; SR block1 = .04/(sqrt2 * .02) = sqrt 2
    # IS = block0 -> A best (sqrt 2) -> OOS block1: A = 1/sqrt 2 < B -> rank 1, w = 1/3, logit = -ln 2
    # IS = block1 -> B best (sqrt 2) -> OOS block0: B = 1/sqrt 2 < A -> rank 1, w = 1/3, logit = -ln 2
    # PBO = 1; IS values both sqrt 2 (no spread) -> degradation slope undefined (NaN).
    perf = pd.DataFrame({"A": [0.01, 0.03, 0.02, 0.00], "B": [0.00, 0.01, 0.03, 0.01]})
    res = probability_of_backtest_overfitting(perf, n_splits=2)
    assert res.n_combinations == 2
    assert res.pbo == 1.0
    np.testing.assert_allclose(res.logits, [-LN2, -LN2], atol=1e-12)
    np.testing.assert_allclose(res.oos_rank, [1 / 3, 1 / 3], atol=1e-12)
    np.testing.assert_allclose(res.is_performance, [math.sqrt(2)] * 2, atol=1e-9)
    np.testing.assert_allclose(res.oos_performance, [1 / math.sqrt(2)] * 2, atol=1e-9)
    assert sorted(res.best_trial.tolist()) == [0, 1]
    assert math.isnan(res.degradation_slope)
    assert res.trial_names == ["A", "B"]
    assert res.metric == "sharpe"


def test_pbo_pure_noise_is_about_one_half():
    # Exchangeable trials: the IS winner's OOS rank is uniform, so P[logit <= 0] = 1/2 for even N. One
    # data set's PBO is noisy (combinations share blocks), so pool 40 seeded data sets.
    rng = np.random.default_rng(12345)
    pbos = [probability_of_backtest_overfitting(rng.normal(0, 0.01, (400, 20)), n_splits=8).pbo for _ in range(40)]
    assert 0.35 < float(np.mean(pbos)) < 0.65


def test_pbo_genuine_edge_is_about_zero():
    # Trial 3 has a real edge (mean 0.5 sd per period) in every block: it wins IS and ranks top OOS.
    rng = np.random.default_rng(1)
    perf = rng.normal(0.0, 0.01, (1600, 20))
    perf[:, 3] += 0.005
    res = probability_of_backtest_overfitting(perf)  # default S = 16 -> all C(16, 8) = 12870 combinations
    assert res.n_combinations == 12870 and not res.sampled
    assert res.pbo < 0.05
    assert (res.best_trial == 3).mean() > 0.95
    assert res.prob_oos_loss < 0.05


def test_pbo_constructed_overfit_is_about_one():
    # Every trial is a permutation of the same returns, so IS sum + OOS sum is the same for all trials:
    # the best IS mean is exactly the worst OOS mean (PBO = 1), and nearly so for the Sharpe ratio.
    rng = np.random.default_rng(2)
    base = rng.normal(0.0, 0.01, 800)
    perf = np.column_stack([rng.permutation(base) for _ in range(10)])
    by_mean = probability_of_backtest_overfitting(perf, n_splits=8, metric="mean")
    assert by_mean.pbo == 1.0
    np.testing.assert_allclose(by_mean.logits, math.log(1 / 10), atol=1e-12)  # rank 1 of 10 -> w = 1/11
    assert by_mean.degradation_slope == pytest.approx(-1.0, abs=1e-9)  # OOS = total - IS
    assert probability_of_backtest_overfitting(perf, n_splits=8).pbo > 0.95


def test_pbo_callable_metric_matches_vectorised_sharpe():
    rng = np.random.default_rng(3)
    perf = rng.normal(0.0005, 0.01, (203, 6))  # 203 = 8 * 25 + 3: the 3 oldest rows are dropped

    def sharpe(m: np.ndarray) -> np.ndarray:
        return m.mean(axis=0) / m.std(axis=0, ddof=1)

    fast = probability_of_backtest_overfitting(perf, n_splits=8)
    slow = probability_of_backtest_overfitting(perf, n_splits=8, metric=sharpe)
    assert fast.n_obs_used == slow.n_obs_used == 200
    np.testing.assert_array_equal(fast.best_trial, slow.best_trial)
    np.testing.assert_allclose(fast.is_performance, slow.is_performance, atol=1e-12)
    np.testing.assert_allclose(fast.logits, slow.logits, atol=1e-12)
    assert fast.pbo == slow.pbo
    assert slow.metric == "sharpe"
    # Dropping the oldest rows: same result as passing the last 200 rows.
    trimmed = probability_of_backtest_overfitting(perf[3:], n_splits=8)
    np.testing.assert_allclose(trimmed.logits, fast.logits)


def test_pbo_sampled_combinations_are_symmetric_and_seeded():
    masks, total, sampled = _cscv_masks(20, 101, 0)
    assert sampled and total == math.comb(20, 10) and masks.shape == (100, 20)
    assert (masks.sum(axis=1) == 10).all()
    rows = {tuple(r) for r in masks.tolist()}
    assert len(rows) == 100  # no duplicates
    assert all(tuple((~np.array(r)).tolist()) in rows for r in rows)  # each combination with its complement
    # Dense case (total pairs <= 4x requested): sampled from the full enumeration.
    masks, total, sampled = _cscv_masks(8, 40, 0)
    assert sampled and total == 70 and len({tuple(r) for r in masks.tolist()}) == 40
    assert _cscv_masks(8, None, 0)[0].shape == (70, 8)

    rng = np.random.default_rng(4)
    perf = rng.normal(0.0, 0.01, (400, 5))
    a = probability_of_backtest_overfitting(perf, n_splits=20, max_combinations=500, random_state=11)
    b = probability_of_backtest_overfitting(perf, n_splits=20, max_combinations=500, random_state=11)
    assert a.sampled and a.n_combinations == 500 and a.n_total_combinations == 184756
    np.testing.assert_array_equal(a.logits, b.logits)


def test_pbo_errors():
    good = np.random.default_rng(5).normal(0, 0.01, (32, 4))
    with pytest.raises(ValueError, match="at least 2 trials"):
        probability_of_backtest_overfitting(good[:, :1], n_splits=4)
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(good, n_splits=5)
    with pytest.raises(ValueError, match="even"):
        probability_of_backtest_overfitting(good, n_splits=0)
    with pytest.raises(ValueError, match="integer"):
        probability_of_backtest_overfitting(good, n_splits=4.0)
    with pytest.raises(ValueError, match="fewer than n_splits"):
        probability_of_backtest_overfitting(good[:6], n_splits=8)
    with pytest.raises(ValueError, match="at least 2"):
        probability_of_backtest_overfitting(good[:2], n_splits=2)  # one row per half: no Sharpe
    bad = good.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite .* row 3, trial 2"):
        probability_of_backtest_overfitting(bad, n_splits=4)
    with pytest.raises(ValueError, match="2-D"):
        probability_of_backtest_overfitting(good[:, 0], n_splits=4)
    with pytest.raises(ValueError, match="unknown metric"):
        probability_of_backtest_overfitting(good, n_splits=4, metric="sortino")
    with pytest.raises(ValueError, match="max_combinations"):
        probability_of_backtest_overfitting(good, n_splits=4, max_combinations=1)
    with pytest.raises(ValueError, match="one per trial"):
        probability_of_backtest_overfitting(good, n_splits=4, metric=lambda m: m.mean())
