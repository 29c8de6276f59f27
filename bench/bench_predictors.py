"""Out-of-fold predictor columns over ETH/USDT 1h 2017-2024: wall time, per-fold training, inference rate.

    python bench/bench_predictors.py [--spec default|tiny] [--no-gbm] [--rows N] [--device auto|cpu|cuda] [--torch-threads 1]

Measures, on the shipped ETH/USDT 1h history (64,524 rows): the indicator build, the whole
out-of-fold generation of the spec's predictors (every refit block, early stopping, evaluation
with the ARIMA baseline; cache off), the per-fold fit time of each predictor, batch inference
(windows/s for the LSTM, rows/s for the regime classifier and the GBM), live ``update`` cost per bar at
full history, and a cache hit. The spec's LSTM + regime models get the LightGBM forecaster beside them
(``GBMConfig()`` defaults, or ``tiny_gbm()`` for the tiny spec; ``--no-gbm``: without it), and every
predictor's fit and inference times are also given as ratios to the LSTM's in the same run; the ARIMA
baseline's share of the wall time is printed on its own.
The reference measured in the same run is one *single* fit of each predictor on everything
before the last block — what an in-sample (leaky) pipeline pays — so ``oof/single`` says what
leak-free out-of-fold stacking costs relative to it. The fold metrics against the naive
baselines are printed as measured. Raw results go to ``bench/results/predictors_<spec>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared-data locator
from shared_data import shared_file  # noqa: E402

from spotgym.data import load_bars  # noqa: E402
from spotgym.features import build_features  # noqa: E402
from spotgym.predictors import (  # noqa: E402
    GBMConfig,
    LSTMConfig,
    default_frame_spec,
    library_versions,
    make_predictor,
    oof_predictions,
    predictor_folds,
    tiny_gbm,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", choices=("default", "tiny"), default="default")
    parser.add_argument("--no-gbm", action="store_true", help="without the LightGBM forecaster beside the LSTM")
    parser.add_argument("--rows", type=int, default=None, help="first N rows only (default: all)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                        help="override the LSTM device of the spec")
    parser.add_argument("--torch-threads", type=int, default=None, help="override the predictors' thread count")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    spec = default_frame_spec(tiny=args.spec == "tiny")
    models = spec.predictors.models
    if not args.no_gbm:
        models = (*models, tiny_gbm() if args.spec == "tiny" else GBMConfig())
    if args.device is not None:
        models = tuple(replace(m, device=args.device) if isinstance(m, LSTMConfig) else m for m in models)
    if args.torch_threads is not None:
        models = tuple(replace(m, threads=args.torch_threads) for m in models)
    spec = replace(spec, predictors=replace(spec.predictors, models=models))
    bars = load_bars(shared_file("BINANCE_ETHUSDT_1h.csv.gz"))
    if args.rows:
        bars = bars.iloc[: args.rows]
    print(f"ETH/USDT 1h: {len(bars):,} rows {bars.index[0]} .. {bars.index[-1]}; spec {args.spec} "
          f"({spec.hash}); torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")

    t0 = time.perf_counter()
    frame = build_features(bars, spec.features)
    t_indicators = time.perf_counter() - t0

    tmp = tempfile.TemporaryDirectory()
    result = oof_predictions(frame, spec.predictors, spec.features, cache=tmp.name, progress=True)
    t_oof = result.wall_s  # training, prediction and evaluation; writing the cache entry comes after
    hit = oof_predictions(frame, spec.predictors, spec.features, cache=tmp.name, progress=False)
    assert hit.cached and np.array_equal(hit.values, result.values, equal_nan=True)
    t_cache = hit.wall_s
    tmp.cleanup()

    per_model = []
    for config in spec.predictors.models:
        folds = [f for f in result.folds if f["predictor"] == config.name and "skipped" not in f]
        model = result.models[config.name]
        fit_s = [f["fit_s"] for f in folds]
        # batch inference over the whole history with the newest model
        t0 = time.perf_counter()
        out = model.predict(frame)
        t_pred = time.perf_counter() - t0
        predicted = int(np.isfinite(out).all(axis=1).sum())
        # reference: one fit on everything before the last block (what an in-sample pipeline pays once)
        last = predictor_folds(make_predictor(config), frame, spec.predictors)[-1]
        t0 = time.perf_counter()
        make_predictor(config).fit(frame, last.train, val_rows=last.val)
        t_single = time.perf_counter() - t0
        # live update at full history
        model.begin_stream(bars.iloc[:-5])  # the stacker attached the indicator spec to the model
        t0 = time.perf_counter()
        for i in range(len(bars) - 5, len(bars)):
            model.update(bars.iloc[i])
        t_update = (time.perf_counter() - t0) / 5
        per_model.append({
            "predictor": config.name, "kind": config.kind, "config": config.to_config(), "folds": len(folds),
            "fit_s_total": round(sum(fit_s), 2), "fit_s_mean": round(statistics.mean(fit_s), 2),
            "fit_s_max": round(max(fit_s), 2), "fit_s_first_last": [round(fit_s[0], 2), round(fit_s[-1], 2)],
            "epochs_or_iters": [f.get("epochs", f.get("n_iter")) for f in folds],
            "predict_rows": predicted, "predict_s": round(t_pred, 3),
            "predict_per_s": round(predicted / t_pred), "single_fit_s": round(t_single, 2),
            "update_ms_per_bar": round(1000 * t_update, 1)})

    single_total = sum(m["single_fit_s"] for m in per_model)
    ref = next((m for m in per_model if m["kind"] == "lstm"), per_model[0])  # the LSTM, measured in this run
    for m in per_model:
        m["fit_vs_lstm"] = round(m["fit_s_total"] / ref["fit_s_total"], 3) if ref["fit_s_total"] else None
        m["infer_rate_vs_lstm"] = round(m["predict_per_s"] / ref["predict_per_s"], 2) if ref["predict_per_s"] else None
    arima_s = sum(f.get("arima_s", 0.0) for f in result.folds)
    first_oof = int(np.flatnonzero(result.has_oof)[0]) if result.has_oof.any() else -1
    print()
    print(f"{'predictor':10s} {'folds':>5s} {'fit total s':>11s} {'fit/fold s':>10s} {'max s':>6s} "
          f"{'single s':>8s} {'infer /s':>10s} {'update ms':>9s} {'fit/lstm':>8s} {'infer/lstm':>10s}")
    for m in per_model:
        print(f"{m['predictor']:10s} {m['folds']:5d} {m['fit_s_total']:11.1f} {m['fit_s_mean']:10.2f} "
              f"{m['fit_s_max']:6.2f} {m['single_fit_s']:8.2f} {m['predict_per_s']:10,d} {m['update_ms_per_bar']:9.1f} "
              f"{m['fit_vs_lstm']:8.3f} {m['infer_rate_vs_lstm']:10.2f}")
    print(f"indicators {t_indicators:.2f} s | OOF generation {t_oof:.1f} s wall ({t_oof / 60:.2f} min) | "
          f"oof/single fit {t_oof / single_total:.1f}x | ARIMA baseline {arima_s:.1f} s of it | "
          f"cache hit {t_cache:.3f} s | "
          f"first OOF row {first_oof} ({frame.index[first_oof] if first_oof >= 0 else '-'}), "
          f"OOF rows {int(result.has_oof.sum()):,}")

    out = Path(args.out or f"bench/results/predictors_{args.spec}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": pd.Timestamp.now("UTC").isoformat(), "machine": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(), "versions": library_versions(), "spec": args.spec,
        "spec_hash": spec.hash, "rows": len(bars), "indicators_s": round(t_indicators, 3),
        "oof_wall_s": round(t_oof, 2), "oof_over_single_fit": round(t_oof / single_total, 2),
        "arima_baseline_s": round(arima_s, 2), "gbm": not args.no_gbm,
        "cache_hit_s": round(t_cache, 4), "first_oof_row": first_oof, "oof_rows": int(result.has_oof.sum()),
        "predictors": per_model, "summary": result.summary(), "folds": result.folds}, indent=1, default=str))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
