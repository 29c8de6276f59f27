"""Pooled predictor fitting (``predictors.fit: pooled``): each refit block fitted once on the rows of every symbol
before it, on the main symbol's schedule; causal across symbols, and really fed by the other symbols' rows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from shared_data import shared_file

from spotgym.data import load_bars
from spotgym.features import build_features, default_spec
from spotgym.predictors import stacking as stacking_module
from spotgym.predictors import tiny_stacking
from spotgym.predictors.config import StackingSpec
from spotgym.predictors.pipeline import FrameSpec, build_frames_with_report
from spotgym.predictors.stacking import (
    cache_key,
    oof_predictions,
    pooled_cache_key,
    pooled_oof_predictions,
    separator_rows,
)
from spotgym.workflows.experiment import ExperimentError, load_experiment
from spotgym.workflows.prepare import prepare

# every predictor kind (lstm, regime, gbm) on the tiny schedule: blocks of 600 rows from row 1722 of ETH
POOLED = replace(tiny_stacking(gbm=True), arima=None, fit="pooled")
PER_SYMBOL = replace(POOLED, fit="per_symbol")
SPEC = FrameSpec(default_spec(), POOLED)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("SPOTGYM_PREDICTIONS_CACHE", str(tmp_path / "predictions"))


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    """ETH (main) 2017-08-17 .. 2017-12-20 and BTC over the same dates with 40 bars missing (a gap: rows and times
    no longer line up between the symbols)."""
    eth = load_bars(eth_1h_path).iloc[:3000]
    btc = load_bars(shared_file("BINANCE_BTCUSDT_1h.csv.gz"))
    btc = btc[btc.index <= eth.index[-1]]
    btc = pd.concat([btc.iloc[:1900], btc.iloc[1940:]])
    btc.attrs = dict(load_bars(shared_file("BINANCE_BTCUSDT_1h.csv.gz")).attrs)
    return eth, btc


@pytest.fixture(scope="module")
def pooled(bars):
    return build_frames_with_report(list(bars), SPEC, cache=False)


def _perturb_after(b: pd.DataFrame, t: pd.Timestamp, rng: np.random.Generator) -> pd.DataFrame:
    """Bars with times after ``t`` replaced by another plausible path."""
    out = b.copy()
    after = out.index > t
    walk = np.exp(np.cumsum(rng.normal(0.0, 0.05, size=int(after.sum()))))
    for col in ("open", "high", "low", "close"):
        out.loc[after, col] = out.loc[after, col].to_numpy() * walk
    out.loc[after, "volume"] = out.loc[after, "volume"].to_numpy() * rng.uniform(0.2, 5.0, size=int(after.sum()))
    return out


def _check_causal(compute, bars, cuts):
    rng = np.random.default_rng(0)
    columns = list(POOLED.output_columns)
    base = compute(bars)
    for cut in cuts:
        t = bars[0].index[cut]
        for label, variant in (("perturbed", [_perturb_after(b, t, rng) for b in bars]),
                               ("truncated", [b[b.index <= t] for b in bars])):
            for symbol, (full, other) in enumerate(zip(base, compute(variant))):
                keep = int((full.frame.index <= t).sum())
                a = full.frame.values[:keep, -len(columns):].astype(np.float64)
                b = other.frame.values[:keep, -len(columns):].astype(np.float64)
                assert np.array_equal(np.isnan(a), np.isnan(b)), (label, symbol, cut)
                np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=f"{label} symbol {symbol} cut {cut}")
                assert np.array_equal(full.frame.valid[:keep], other.frame.valid[:keep]), (label, symbol, cut)


def test_pooled_columns_do_not_depend_on_any_symbols_later_bars(bars):
    """Cuts inside block 0 and block 1 (in the main symbol's rows); every symbol's bars after the cut are replaced
    by another path, then cut off: no pooled column of any symbol at or before the cut moves."""
    _check_causal(lambda b: build_frames_with_report(b, SPEC, cache=False), bars, cuts=[1900, 2400])


def test_the_causality_check_catches_a_pooled_fit_that_reads_later_bars(bars, monkeypatch):
    """The same check fails when the other symbols' rows are not cut at the block's start."""
    honest = stacking_module._symbol_spans

    def leaky(fold, times, *args, main, **kwargs):
        spans = honest(fold, times, *args, main=main, **kwargs)
        if not main:
            spans = {**spans, "cut": len(times), "train": range(spans["train"].start, len(times) - 30)}
        return spans

    monkeypatch.setattr(stacking_module, "_symbol_spans", leaky)
    with pytest.raises(AssertionError):
        _check_causal(lambda b: build_frames_with_report(b, SPEC, cache=False), bars, cuts=[2400])


def test_pooled_fit_trains_on_every_symbol(bars, pooled):
    eth, btc = (build_features(b) for b in bars)
    per = oof_predictions(eth, PER_SYMBOL, cache=False)
    main, pool = (build.predictions for build in pooled)
    assert len(main.folds) == len(per.folds) == 9  # 3 predictors x 3 blocks, the same schedule
    for own, shared in zip(per.folds, main.folds):
        assert (own["predictor"], own["fold"], own["test_start"]) == (shared["predictor"], shared["fold"],
                                                                     shared["test_start"])
        assert shared["fit"] == "pooled" and set(shared["train_rows"]) == {"ETH/USDT", "BTC/USDT"}
        assert shared["train_rows"]["BTC/USDT"] > 0.9 * shared["train_rows"]["ETH/USDT"]
        assert shared["n_train"] > 1.8 * own["n_train"], (own, shared)  # the BTC rows were used
    # the same model writes both symbols' rows of a block: a different fit from ETH's own, on both symbols
    columns = slice(-len(POOLED.output_columns), None)
    ok = main.has_oof & per.has_oof
    assert ok.sum() > 1200 and not np.allclose(main.values[ok], per.values[ok])
    # BTC's rows of each block are the rows over the block's dates
    assert pool.folds[0]["test_from"] == main.folds[0]["test_from"]
    first = int(np.flatnonzero(pool.has_oof)[0])
    assert btc.index[first] == eth.index[1722]
    assert np.isnan(pooled[1].frame.values[:first, columns]).all() and pooled[1].frame.valid[first:].any()
    assert np.isfinite(pooled[1].frame.values[first:, columns]).all()
    assert all(f["n_eval"] > 0 for f in pool.folds)
    # one set of newest models for every symbol: the last block's
    assert main.models.keys() == pool.models.keys() and all(main.models[k] is pool.models[k] for k in main.models)


def test_pooled_fit_of_one_symbol_is_the_per_symbol_fit(bars):
    """With nothing to pool, the combined training frame is the symbol's own rows: the same numbers, bit for bit."""
    eth = build_features(bars[0])
    alone = pooled_oof_predictions([eth], POOLED, cache=False)[0]
    per = oof_predictions(eth, PER_SYMBOL, cache=False)
    np.testing.assert_array_equal(alone.values, per.values)
    assert [f["n_train"] for f in alone.folds] == [f["n_train"] for f in per.folds]


def test_a_symbol_that_starts_late_is_predicted_by_the_pooled_models(bars):
    """BTC from ETH's row 1200 on: its indicators warm up (about 700 bars) inside block 0 [1722, 2322), no BTC row
    trains block 0's model, yet its rows get that model's predictions as soon as their inputs are finite (the
    pooled fit's gain for a young symbol; fitted alone it would wait min_train rows)."""
    eth, btc = bars
    late = btc[btc.index >= eth.index[1200]]
    late.attrs = dict(btc.attrs)
    main, pool = build_frames_with_report([eth, late], SPEC, cache=False)
    first = int(np.flatnonzero(pool.predictions.has_oof)[0])
    assert eth.index[1800] < late.index[first] < eth.index[2000]  # inside block 0
    block0 = [f for f in pool.predictions.folds if f["fold"] == 0]
    assert len(block0) == 3 and all(f["train_rows"]["BTC/USDT"] == 0 for f in block0)
    assert all(f["n_train"] == f["train_rows"]["ETH/USDT"] and f["n_eval"] > 0 for f in block0)  # fitted on ETH
    assert all(f["train_rows"]["BTC/USDT"] > 0 for f in pool.predictions.folds if f["fold"] > 0)


def test_separator_keeps_windows_and_labels_inside_one_symbol():
    gap = separator_rows(POOLED)
    assert gap > max(16 + 1, 5 + 1, 12 + 96)  # lstm window + h, gbm lags + h, regime h + vol window


def test_cache_key_holds_the_fit_mode_and_every_symbols_frame(bars, tmp_path):
    eth, btc = (build_features(b) for b in bars)
    assert "fit" not in PER_SYMBOL.to_config()  # per-symbol cache keys and spec hashes are as before the option
    assert POOLED.to_config()["fit"] == "pooled"
    key = pooled_cache_key([eth, btc], POOLED)
    assert key != pooled_cache_key([eth, btc.slice(0, len(btc) - 1)], POOLED)
    assert key != pooled_cache_key([btc, eth], POOLED) and key != cache_key(eth, POOLED)
    first = pooled_oof_predictions([eth, btc], POOLED, cache=tmp_path)
    second = pooled_oof_predictions([eth, btc], POOLED, cache=tmp_path)
    assert not first[0].cached and all(r.cached for r in second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.has_oof, b.has_oof)
        assert [f["n_train"] for f in a.folds] == [f["n_train"] for f in b.folds]
    model = second[0].models["lstm"]
    np.testing.assert_array_equal(model.predict(eth, range(2922, 3000)), first[0].values[2922:, :4])


def test_fit_mode_is_validated():
    with pytest.raises(ValueError, match=r"StackingSpec.fit must be one of \('per_symbol', 'pooled'\)"):
        StackingSpec.from_config({"models": [{"kind": "regime"}], "fit": "shared"})
    assert StackingSpec.from_config({**POOLED.to_config()}) == POOLED


def test_experiment_key_and_prepare(tmp_path, eth_1h_path):
    raw = {"name": "pooled_fit", "seed": 0,
           "data": {"path": str(eth_1h_path), "start": "2021-01-01", "end": "2021-04-30T23:00",
                    "pool": [{"symbol": "BTC/USDT", "path": str(shared_file("BINANCE_BTCUSDT_1h.csv.gz"))}]},
           "predictors": {**POOLED.to_config()},
           "env": {"action": "levels", "window": 8, "episode_length": 64},
           "agent": {"algo": "ppo"}, "tracking": {"wandb": False, "tensorboard": False}}
    with pytest.raises(ExperimentError, match="predictors.fit: 'pooled' .* data.pool is empty"):
        load_experiment(raw, ["data.pool=null"])
    with pytest.raises(ExperimentError, match=r"predictors: StackingSpec.fit must be one of"):
        load_experiment(raw, ["predictors.fit=joint"])
    prepared = prepare(load_experiment(raw))
    main, part = prepared.predictions, prepared.pool[0].predictions
    assert all(f["fit"] == "pooled" and f["train_rows"]["BTC/USDT"] > 0 for f in main.folds)
    assert part.models["lstm"] is main.models["lstm"]  # RUN_DIR/predictors: the newest block's pooled models
    assert prepared.pool[0].frame.columns == prepared.frame.columns and prepared.pool[0].frame.valid.any()
    per = prepare(load_experiment(raw, ["predictors.fit=per_symbol"]))
    assert all("fit" not in f for f in per.predictions.folds)
    assert per.pool[0].predictions.models["lstm"] is not per.predictions.models["lstm"]
