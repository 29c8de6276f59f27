"""Fold evaluation against naive baselines — reported as measured, edge or not.

Every metric is paired with what a model-free forecast scores on the same rows: the zero return
and persistence (the last h-bar return, or the last fully known label) for forecasts, the
training-set class frequencies (log loss) and majority class (accuracy) for classifiers. Return
forecasts are also compared with fitted baselines that see only the return series (``arima``:
``spotgym.predictors.arima``), scored by ``baseline_forecast_metrics`` on the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from spotgym.predictors.labels import backward_log_return, direction_labels, forward_log_return

EPS = 1e-12


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under row-wise class probabilities."""
    if len(y) == 0:
        return math.nan
    p = np.clip(proba[np.arange(len(y)), y.astype(int)], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def class_frequencies(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Class frequencies of ``y`` with add-one smoothing (a prior that never assigns probability 0)."""
    counts = np.bincount(y.astype(int), minlength=n_classes).astype(np.float64) + 1.0
    return counts / counts.sum()


def classification_metrics(prefix: str, y: np.ndarray, proba: np.ndarray, train_y: np.ndarray,
                           persistence: np.ndarray | None = None) -> dict[str, float]:
    """Accuracy and log loss of ``proba`` vs the training prior / majority class / persistence on labels ``y``."""
    n_classes = proba.shape[1]
    prior = class_frequencies(train_y, n_classes)
    out = {
        f"{prefix}acc": _mean(np.argmax(proba, axis=1) == y),
        f"{prefix}acc_majority": _mean(y == int(np.argmax(prior))),
        f"{prefix}log_loss": log_loss(y, proba),
        f"{prefix}log_loss_prior": log_loss(y, np.broadcast_to(prior, (len(y), n_classes))),
    }
    if persistence is not None:
        ok = ~np.isnan(persistence)
        out[f"{prefix}acc_persistence"] = _mean(persistence[ok] == y[ok])
    return out


def baseline_forecast_metrics(prefix: str, actual: np.ndarray, baselines: Mapping[str, np.ndarray]) -> dict[str, float]:
    """MAE and directional accuracy of each named baseline forecast (``{prefix}mae_<name>``,
    ``{prefix}dir_acc_<name>``) on the rows of ``actual`` — the same two numbers ``forecast_metrics`` gives a model."""
    nonzero = actual != 0
    out: dict[str, float] = {}
    for name, forecast in baselines.items():
        forecast = np.asarray(forecast, dtype=np.float64)
        out[f"{prefix}mae_{name}"] = _mean(np.abs(forecast - actual))
        out[f"{prefix}dir_acc_{name}"] = _mean(np.sign(forecast[nonzero]) == np.sign(actual[nonzero]))
    return out


def forecast_metrics(prefix: str, actual: np.ndarray, forecast: np.ndarray, persistence: np.ndarray,
                     train_actual: np.ndarray) -> dict[str, float]:
    """MAE and directional accuracy of a return forecast vs zero-return, persistence and majority sign.

    ``dir_acc_reversal`` is the sign-flipped persistence (bet that the last h-bar move reverses):
    short-horizon crypto returns are slightly anti-persistent, so it is the bar a direction
    forecast must clear before it claims more than mean reversion.
    """
    nonzero = actual != 0
    majority_up = float(np.mean(train_actual > 0)) >= 0.5 if len(train_actual) else True
    pers_ok = ~np.isnan(persistence)
    return {
        f"{prefix}mae": _mean(np.abs(forecast - actual)),
        f"{prefix}mae_zero": _mean(np.abs(actual)),
        f"{prefix}mae_persistence": _mean(np.abs(persistence[pers_ok] - actual[pers_ok])),
        f"{prefix}dir_acc": _mean(np.sign(forecast[nonzero]) == np.sign(actual[nonzero])),
        f"{prefix}dir_acc_persistence": _mean(np.sign(persistence[pers_ok & nonzero]) ==
                                              np.sign(actual[pers_ok & nonzero])),
        f"{prefix}dir_acc_reversal": _mean(-np.sign(persistence[pers_ok & nonzero]) ==
                                           np.sign(actual[pers_ok & nonzero])),
        f"{prefix}dir_acc_majority": _mean((actual[nonzero] > 0) == majority_up),
    }


def return_direction_metrics(close: np.ndarray, idx: np.ndarray, train_idx: np.ndarray, outputs: np.ndarray, *,
                             horizon: int, targets: Sequence[str], flat_threshold: float,
                             return_scale: float = 1.0) -> dict[str, Any]:
    """A return / direction forecaster's metrics on rows ``idx`` (the LSTM's and the GBM's alike): return MAE and
    direction vs zero, persistence, reversal and majority sign; class accuracy and log loss vs the training prior,
    the majority class and persistence. ``outputs``: the ``return`` column first (times ``return_scale`` is the
    log return), then the 3 direction probabilities."""
    fwd = forward_log_return(close, horizon)
    back = backward_log_return(close, horizon)
    ok = np.isfinite(fwd[idx]) & np.isfinite(outputs).all(axis=1)
    tr = train_idx[np.isfinite(fwd[train_idx])]
    actual, out = fwd[idx][ok], outputs[ok].astype(np.float64)
    metrics: dict[str, Any] = {"n_eval": int(ok.sum())}
    col = 0
    if "return" in targets:
        metrics.update(forecast_metrics("ret_", actual, out[:, 0] * return_scale, back[idx][ok], fwd[tr]))
        col = 1
    if "direction" in targets:
        y = direction_labels(actual, flat_threshold).astype(int)
        persistence = direction_labels(back[idx][ok], flat_threshold)
        metrics.update(classification_metrics("cls_", y, out[:, col:col + 3],
                                              direction_labels(fwd[tr], flat_threshold).astype(int), persistence))
    return metrics


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if np.size(values) else math.nan


# pairs (model metric, baseline metrics, lower is better) used by the verdict
_PAIRS = (
    ("log_loss", ("log_loss_prior",), True),
    ("dir_acc", ("dir_acc_majority", "dir_acc_persistence", "dir_acc_reversal", "dir_acc_arima"), False),
    ("acc", ("acc_majority", "acc_persistence"), False),
    ("mae", ("mae_zero", "mae_persistence", "mae_arima"), True),
)
_BASELINE_SUFFIXES = ("_prior", "_majority", "_persistence", "_reversal", "_zero", "_arima")


def summarize(folds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per predictor: every metric averaged over its folds, weighted by evaluated rows."""
    out: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(f["predictor"] for f in folds):
        rows = [f for f in folds if f["predictor"] == name and f.get("n_eval", 0) > 0]
        keys = [k for k in (rows[0] if rows else {}) if _is_metric(k, rows[0][k])]
        summary: dict[str, float] = {"folds": float(len([f for f in folds if f["predictor"] == name])),
                                     "n_eval": float(sum(f["n_eval"] for f in rows))}
        for k in keys:
            pairs = [(f[k], f["n_eval"]) for f in rows if not _isnan(f.get(k))]
            weight = sum(w for _, w in pairs)
            summary[k] = float(sum(v * w for v, w in pairs) / weight) if weight else math.nan
        out[name] = summary
    return out


def verdicts(summary: Mapping[str, float]) -> list[str]:
    """Plain-language comparisons of a summarised predictor against its baselines.

    Losses and errors: ``edge`` when lower than the baseline, else ``no edge``. Accuracies also
    carry a z-score against the baseline's binomial noise over the evaluated rows, and a higher
    accuracy with z < 2 reads ``within noise`` rather than ``edge``. The z-score treats rows as
    independent; labels over overlapping h-bar windows are not, so for h > 1 it overstates.
    """
    lines = []
    n = summary.get("n_eval", 0.0)
    for key in sorted(summary):
        if key.endswith(_BASELINE_SUFFIXES):
            continue
        for metric, baselines, lower in _PAIRS:
            prefix = key[: len(key) - len(metric)]
            if not key.endswith(metric) or (prefix and not prefix.endswith("_")):
                continue
            value = summary[key]
            for base in baselines:
                ref = summary.get(prefix + base)
                if ref is None or _isnan(ref) or _isnan(value):
                    continue
                head = f"{key}={value:.5g} vs {prefix + base}={ref:.5g}: "
                if lower:
                    lines.append(head + ("edge" if value < ref else "no edge"))
                    continue
                z = (value - ref) / math.sqrt(max(ref * (1 - ref), 1e-12) / n) if n > 0 else math.nan
                verdict = "no edge" if value <= ref else "edge" if z >= 2 else "within noise"
                lines.append(head + f"{verdict} (z={z:+.1f})")
            break
    return lines


def format_folds(folds: Iterable[Mapping[str, Any]]) -> str:
    """One line per fold: predictor, fold, test span, rows, and every metric next to its baselines."""
    lines = []
    for f in folds:
        head = (f"{f['predictor']} fold {f['fold']}: test [{f['test_start']}, {f['test_stop']}) "
                f"{f.get('test_from', '')}..{f.get('test_to', '')} n_eval={f['n_eval']} "
                f"train={f['n_train']} fit={f['fit_s']:.2f}s")
        metrics = " ".join(f"{k}={v:.5g}" for k, v in f.items() if _is_metric(k, v) and k not in _META)
        lines.append(f"{head} | {metrics}")
    return "\n".join(lines)


def format_summary(folds: Sequence[Mapping[str, Any]]) -> str:
    """The per-predictor summary with edge / no-edge verdicts against each baseline."""
    lines = []
    for name, summary in summarize(folds).items():
        lines.append(f"{name}: {int(summary['folds'])} folds, {int(summary['n_eval'])} evaluated rows")
        lines += [f"  {v}" for v in verdicts(summary)]
    return "\n".join(lines)


_META = {"fold", "test_start", "test_stop", "n_eval", "n_train", "n_val", "fit_s", "predict_s", "epochs",
         "best_epoch", "n_iter", "folds", "arima_s"}


def _is_metric(key: str, value: Any) -> bool:
    return key not in _META and isinstance(value, float | int) and not isinstance(value, bool)


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
