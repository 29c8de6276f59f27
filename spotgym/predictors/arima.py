"""The ARIMA baseline of return forecasts: what a linear model of the return series alone scores.

Per fold, ``fit_arma`` fits ARMA(p, q) with a constant mean to the one-bar log returns of the
training rows (statsmodels ``ARIMA(order=(p, 0, q), trend="c")``, innovations MLE on returns
scaled to unit variance — the state-space optimiser struggles with variances near 1e-4 — at most
``ArimaConfig.max_train`` of the most recent rows). ``arma_forecast`` then runs the fitted model
forward with fixed parameters: innovations e_t = w_t - sum_j theta_j e_{t-j} (``scipy.signal.lfilter``,
a causal IIR filter) with w_t the AR residual of the demeaned return, and the h-step forecasts by the
usual ARMA recursion. Forecast t therefore uses returns up to t only. The filter starts at the
first fitted row with zero pre-sample innovations (the conditional, not the exact Kalman start;
the difference decays like theta^n and is gone long before the test block).

``arima_fold_metrics`` scores the forecast on exactly the rows a predictor's ``evaluate`` scored
(``ret_mae_arima``, ``ret_dir_acc_arima``), so the verdicts compare like with like.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spotgym.predictors.config import ArimaConfig
from spotgym.predictors.labels import forward_log_return
from spotgym.predictors.metrics import baseline_forecast_metrics

__all__ = ["ArmaFit", "arima_fold_metrics", "arma_forecast", "fit_arma"]


@dataclass(frozen=True)
class ArmaFit:
    """Fitted ARMA(p, q) of one-bar log returns in raw units: r_t - mean = sum ar_i (r_{t-i} - mean) + e_t +
    sum ma_j e_{t-j}. ``start`` / ``stop``: the rows whose returns it was fitted on (the filter starts at ``start``)."""

    order: tuple[int, int, int]
    mean: float
    ar: tuple[float, ...]
    ma: tuple[float, ...]
    sigma2: float
    aic: float
    start: int
    stop: int


def one_bar_returns(close: np.ndarray) -> np.ndarray:
    """log(close[t] / close[t - 1]) per row (NaN at row 0); causal."""
    logc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(logc.shape, np.nan)
    out[1:] = np.diff(logc)
    return out


def fit_arma(close: np.ndarray, rows: range, config: ArimaConfig) -> ArmaFit:
    """Fit every order of ``config`` to the one-bar returns at ``rows`` (contiguous; the last ``max_train``);
    keep the lowest AIC. Raises ``ValueError`` when no order gives a usable (invertible) model."""
    from statsmodels.tsa.arima.model import ARIMA  # ~1 s to import: only when a baseline is fitted

    start, stop = max(rows.start, 1), rows.stop
    if config.max_train is not None:
        start = max(start, stop - config.max_train)
    r = one_bar_returns(np.asarray(close[start - 1:stop], dtype=np.float64))[1:]
    if len(r) < 50 or not np.isfinite(r).all():
        raise ValueError(f"ARIMA baseline needs >= 50 finite training returns, got {len(r)} rows")
    scale = float(np.std(r))
    if not scale > 0:
        raise ValueError("ARIMA baseline: the training returns are constant")
    best: ArmaFit | None = None
    errors = []
    for order in config.orders:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # convergence chatter; the fit is judged by its roots and AIC
                res = ARIMA(r / scale, order=order, trend="c").fit(method="innovations_mle")
        except (ValueError, np.linalg.LinAlgError) as exc:
            errors.append(f"{order}: {exc}")
            continue
        names = list(res.model.param_names)
        params = np.asarray(res.params, dtype=np.float64)
        ar = tuple(float(v) for v in np.asarray(res.arparams, dtype=np.float64))
        ma = tuple(float(v) for v in np.asarray(res.maparams, dtype=np.float64))
        if ma and not np.all(np.abs(np.roots(np.r_[ma[::-1], 1.0])) > 1.0 + 1e-9):
            errors.append(f"{order}: MA part not invertible")
            continue
        fit = ArmaFit(order=tuple(order), mean=float(params[names.index("const")]) * scale, ar=ar, ma=ma,
                      sigma2=float(params[names.index("sigma2")]) * scale ** 2, aic=float(res.aic), start=start,
                      stop=stop)
        if best is None or fit.aic < best.aic:
            best = fit
    if best is None:
        raise ValueError(f"ARIMA baseline: no usable fit ({'; '.join(errors)})")
    return best


def _lagged(a: np.ndarray, lag: int) -> np.ndarray:
    """a[t - lag] at position t (zero before the start: the conditional pre-sample value of deviations)."""
    if lag == 0:
        return a
    out = np.zeros_like(a)
    out[lag:] = a[: len(a) - lag]
    return out


def arma_forecast(close: np.ndarray, fit: ArmaFit, rows: np.ndarray, horizon: int) -> np.ndarray:
    """Forecasts of log(close[t + horizon] / close[t]) at ``rows`` (each >= ``fit.start``) from the returns of
    rows ``fit.start`` .. t only: the sum of the 1..h-step ARMA forecasts of the one-bar return."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return np.empty(0)
    if rows.min() < fit.start:
        raise ValueError(f"ARIMA forecasts start at the first fitted row {fit.start}, asked for row {rows.min()}")
    from scipy.signal import lfilter  # a statsmodels dependency; imported when a baseline is computed

    stop = int(rows.max()) + 1
    z = one_bar_returns(np.asarray(close[fit.start - 1:stop], dtype=np.float64))[1:] - fit.mean
    w = z.copy()
    for i, phi in enumerate(fit.ar, start=1):
        w -= phi * _lagged(z, i)
    e = lfilter([1.0], np.r_[1.0, fit.ma], w) if fit.ma else w
    steps: list[np.ndarray] = []  # steps[k - 1]: the k-step forecast of the demeaned return, made at t
    total = np.zeros_like(z)
    for k in range(1, horizon + 1):
        f = np.zeros_like(z)
        for i, phi in enumerate(fit.ar, start=1):
            f += phi * (steps[k - i - 1] if k - i >= 1 else _lagged(z, i - k))
        for j in range(k, len(fit.ma) + 1):
            f += fit.ma[j - 1] * _lagged(e, j - k)
        steps.append(f)
        total += f
    return horizon * fit.mean + total[rows - fit.start]


def arima_fold_metrics(close: np.ndarray, train_rows: range, test_rows: range, outputs: np.ndarray, horizon: int,
                       config: ArimaConfig, cache: MutableMapping[Any, ArmaFit | str] | None = None,
                       prefix: str = "ret_") -> dict[str, Any]:
    """``{prefix}mae_arima`` and ``{prefix}dir_acc_arima`` on the test rows a return forecaster was scored on
    (finite ``outputs`` and a known ``horizon``-bar return), plus the order and the time taken.

    ``cache``: fits by training span, shared by the predictors of one stacking run (the fit depends on
    the training rows only, not on the predictor or its horizon). A failed fit gives ``arima_error``
    and no metrics.
    """
    t0 = time.perf_counter()
    key = (train_rows.start, train_rows.stop, config)
    fit = cache.get(key) if cache is not None else None
    if fit is None:
        try:
            fit = fit_arma(close, train_rows, config)
        except ValueError as exc:
            fit = str(exc)
        if cache is not None:
            cache[key] = fit
    if isinstance(fit, str):
        return {"arima_error": fit}
    idx = np.arange(test_rows.start, min(test_rows.stop, len(close)), dtype=np.int64)
    fwd = forward_log_return(close, horizon)
    ok = np.isfinite(fwd[idx]) & np.isfinite(outputs[: len(idx)]).all(axis=1)
    forecast = arma_forecast(close, fit, idx[ok], horizon)
    metrics = baseline_forecast_metrics(prefix, fwd[idx][ok], {"arima": forecast})
    return {**metrics, "arima_order": ",".join(str(v) for v in fit.order), "arima_s": time.perf_counter() - t0}
