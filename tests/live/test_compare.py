"""The paired bootstrap behind `spotgym live compare`: no difference is not significant, a clear one is, and the
interval holds the true mean of a known process."""

from __future__ import annotations

import numpy as np

from spotgym.live.compare import paired_bootstrap


def test_no_difference_is_not_significant():
    mean, low, high, p = paired_bootstrap(np.zeros(300))
    assert (mean, low, high) == (0.0, 0.0, 0.0) and p == 1.0


def test_a_clear_edge_is_significant_and_its_interval_holds_the_mean():
    rng = np.random.default_rng(3)
    d = 2e-4 + 1e-3 * rng.standard_normal(5000)  # 2 bp a bar better, noise 10 bp: t ~ 14
    mean, low, high, p = paired_bootstrap(d, seed=1)
    assert abs(mean - d.mean()) < 1e-15 and low < 2e-4 < high and low > 0 and p < 0.01


def test_noise_alone_is_mostly_not_significant():
    rng = np.random.default_rng(5)
    ps = [paired_bootstrap(1e-3 * rng.standard_normal(400), n=500, seed=k)[3] for k in range(40)]
    assert 0.0 < np.mean(np.array(ps) < 0.05) <= 0.2  # near the 5 % a fair test gives
