"""The ARIMA baseline: causal forecasts, statsmodels' own numbers, and the edge theory predicts on an AR(1)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from statsmodels.tsa.arima.model import ARIMA

from spotgym.predictors import ArimaConfig
from spotgym.predictors.arima import arima_fold_metrics, arma_forecast, fit_arma


def _prices(returns: np.ndarray) -> np.ndarray:
    """Closes whose one-bar log return at row t is ``returns[t]`` (row 0 has none)."""
    return 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(returns[1:])]))


def _arma(n: int, phi: float, theta: float, mean: float = 0.0, sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(0.0, sigma, n)
    r = np.full(n, mean)
    for t in range(1, n):
        r[t] = mean + phi * (r[t - 1] - mean) + e[t] + theta * e[t - 1]
    return r


@pytest.fixture(scope="module")
def arma11():
    return _prices(_arma(6000, 0.5, 0.3, mean=0.001, seed=1))


def test_forecasts_are_causal(arma11):
    """Changing (or cutting off) the returns after row t leaves every forecast up to t unchanged, bit for bit."""
    close = arma11
    fit = fit_arma(close, range(1, 3000), ArimaConfig())
    rows = np.arange(3100, 6000)
    rng = np.random.default_rng(7)
    for horizon in (1, 4):
        base = arma_forecast(close, fit, rows, horizon)
        assert np.isfinite(base).all()
        for t in (3100, 4321, 5998):
            other = close.copy()
            other[t + 1:] *= np.exp(np.cumsum(rng.normal(0.0, 0.05, len(close) - t - 1)))
            upto = rows[rows <= t]
            np.testing.assert_array_equal(arma_forecast(other, fit, upto, horizon), base[: len(upto)])
            np.testing.assert_array_equal(arma_forecast(close[: t + 1], fit, upto, horizon), base[: len(upto)])
    # the fit sees the training rows only
    later = close.copy()
    later[3000:] *= 1.5
    assert fit_arma(later, range(1, 3000), ArimaConfig()) == fit


def test_forecasts_equal_statsmodels_on_the_same_parameters(arma11):
    """Sign conventions and the h-step recursion: our forecast at the last row is statsmodels' Kalman forecast."""
    fit = fit_arma(arma11, range(1, 4000), ArimaConfig())
    assert fit.order == (1, 0, 1)
    assert abs(fit.ar[0] - 0.5) < 0.1 and abs(fit.ma[0] - 0.3) < 0.1 and abs(fit.mean - 0.001) < 0.001
    returns = np.diff(np.log(arma11))[fit.start - 1:]  # rows fit.start .. end
    params = np.r_[fit.mean, fit.ar, fit.ma, fit.sigma2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kalman = ARIMA(returns, order=fit.order, trend="c").filter(params)
    for horizon in (1, 3):
        ours = arma_forecast(arma11, fit, np.array([len(arma11) - 1]), horizon)[0]
        assert ours == pytest.approx(float(np.sum(kalman.forecast(horizon))), rel=1e-9, abs=1e-12)


def test_beats_the_zero_forecast_by_what_theory_says_on_an_ar1():
    """r_t = 0.5 r_{t-1} + e_t, Gaussian. The one-step forecast 0.5 r_t leaves the innovation e_{t+1}:
    MAE ratio to the zero forecast sigma_e / sigma_r = sqrt(1 - phi^2), and the sign of phi r_t matches
    r_{t+1} with probability 1/2 + arcsin(phi) / pi (bivariate normal with correlation phi) = 2/3."""
    phi, n_train = 0.5, 4000
    close = _prices(_arma(24_000, phi, 0.0, seed=3))
    test = range(n_train + 100, len(close) - 1)
    outputs = np.zeros((len(test), 1))  # a model's outputs: only their finiteness (rows scored) matters here
    config = ArimaConfig(orders=((0, 0, 0), (1, 0, 0)), max_train=n_train)
    m = arima_fold_metrics(close, range(1, n_train + 1), test, outputs, 1, config)
    assert m["arima_order"] == "1,0,0"  # the AIC picks the true order over white noise
    actual = np.diff(np.log(close))[test.start:test.stop]  # r_{t+1} for t in test
    n = len(actual)
    fit = fit_arma(close, range(1, n_train + 1), config)
    err = np.abs(actual - arma_forecast(close, fit, np.arange(test.start, test.stop), 1))
    assert m["ret_mae_arima"] == pytest.approx(err.mean(), rel=1e-12)
    # MAE ratio: tolerance = 4 standard errors of a ratio of means (delta method) from the data
    zero = np.abs(actual)
    ratio = err.mean() / zero.mean()
    cov = np.cov(err, zero)
    se = ratio * math.sqrt(cov[0, 0] / err.mean() ** 2 + cov[1, 1] / zero.mean() ** 2
                           - 2 * cov[0, 1] / (err.mean() * zero.mean())) / math.sqrt(n)
    assert abs(ratio - math.sqrt(1 - phi ** 2)) < 4 * se + 0.005  # + the parameter estimation error (~1/n_train)
    # direction accuracy: tolerance = 4 binomial standard errors
    p = 0.5 + math.asin(phi) / math.pi
    assert abs(m["ret_dir_acc_arima"] - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert m["ret_dir_acc_arima"] > 0.64 and ratio < 0.88  # well clear of the zero forecast (ratio 1, accuracy 1/2)


def test_rows_without_a_score_and_failed_fits():
    close = _prices(_arma(1200, 0.2, 0.0, seed=5))
    outputs = np.zeros((200, 1))
    outputs[::2] = np.nan  # rows a model left without a prediction are not scored
    cache: dict = {}
    a = arima_fold_metrics(close, range(1, 900), range(1000, 1200), outputs, 3, ArimaConfig(), cache)
    assert len(cache) == 1 and a["arima_order"] == "1,0,1" and np.isfinite(a["ret_mae_arima"])
    b = arima_fold_metrics(close, range(1, 900), range(1000, 1200), outputs, 3, ArimaConfig(), cache)
    assert len(cache) == 1 and b["ret_mae_arima"] == a["ret_mae_arima"]  # the fit was reused
    short = arima_fold_metrics(close, range(1, 20), range(1000, 1200), outputs, 1, ArimaConfig())
    assert set(short) == {"arima_error"} and "50 finite training returns" in short["arima_error"]
