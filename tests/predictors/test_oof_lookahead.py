"""Out-of-fold predictor columns are causal; an in-sample fit is caught by the same checker."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from spotgym.data import load_bars
from spotgym.features import LookaheadError, assert_no_lookahead, build_features
from spotgym.predictors import (
    FrameSpec,
    build_frame,
    build_frame_with_report,
    default_frame_spec,
    make_predictor,
    predictor_folds,
    tiny_stacking,
)
from spotgym.predictors.metrics import verdicts

SPEC = default_frame_spec(tiny=True)
OOF_COLUMNS = list(SPEC.predictors.output_columns)
# every predictor kind, on the same refit schedule (the generic causality tests run over all of them); without
# the ARIMA baseline, which adds fold metrics, never columns (its own causality test is in test_arima.py)
ALL_KINDS = FrameSpec(SPEC.features, replace(tiny_stacking(gbm=True), arima=None))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    torch.set_num_threads(1)
    monkeypatch.setenv("SPOTGYM_PREDICTIONS_CACHE", str(tmp_path / "predictions"))


@pytest.fixture(scope="module")
def bars(eth_1h_path):
    return load_bars(eth_1h_path).iloc[:3000]  # 2017-08-17 .. 2017-12-20; indicator warm-up ends at row 698


@pytest.fixture(scope="module")
def built(bars):
    return build_frame_with_report(bars, SPEC, cache=False)


def test_oof_columns_pass_the_lookahead_checker(bars):
    # cuts: before the first block, inside blocks 0 and 1, in the last (partial) block; every kind's columns
    assert {m.kind for m in ALL_KINDS.predictors.models} == {"lstm", "regime", "gbm"}
    compute = lambda b: build_frame(b, ALL_KINDS, cache=False)  # noqa: E731
    assert assert_no_lookahead(compute, bars, cuts=[1500, 1750, 2400, 2950]) == [1500, 1750, 2400, 2950]


@pytest.mark.parametrize("kind", ["lstm", "regime", "gbm"])
def test_in_sample_variant_is_caught(bars, kind):
    """The same model fitted on every labelled row (the classic leak) fails the checker."""
    config = next(m for m in ALL_KINDS.predictors.models if m.kind == kind)

    def in_sample(b):
        frame = build_features(b)
        model = make_predictor(config).fit(frame, range(len(frame)))
        return frame.with_columns(config.output_columns, model.predict(frame))

    with pytest.raises(LookaheadError, match=config.name):
        assert_no_lookahead(in_sample, bars, cuts=[2000], columns=list(config.output_columns))


def test_rows_without_oof_are_nan_and_invalid_never_zero(built):
    frame, result = built.frame, built.predictions
    assert frame.columns[-len(OOF_COLUMNS):] == tuple(OOF_COLUMNS)
    first = int(np.flatnonzero(result.has_oof)[0])
    # warm-up 698 + min_train 800 + val 200 + (purge 12) before and after the validation slice
    assert first == 698 + 800 + 12 + 200 + 12 == 1722
    oof = frame.values[:, -len(OOF_COLUMNS):]
    assert np.isnan(oof[:first]).all() and not frame.valid[:first].any()
    assert np.isfinite(oof[first:]).all() and frame.valid[first:].all()
    np.testing.assert_array_equal(frame.valid, result.has_oof & np.isfinite(frame.values[:, :18]).all(axis=1))
    p = frame.values[first:, [frame.columns.index(c) for c in ("lstm_p_down", "lstm_p_flat", "lstm_p_up")]]
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


def test_each_block_is_written_by_a_model_trained_before_it(bars):
    spec = tiny_stacking(gbm=True)
    indicators = build_features(bars)
    for config in spec.models:
        folds = predictor_folds(make_predictor(config), indicators, spec)
        assert len(folds) == 3 and folds[0].test.start == 1722 and folds[-1].test.stop == 3000
        for fold in folds:
            # no training or validation label (which looks `horizon` bars ahead) reaches into the block
            assert fold.train.stop - 1 + config.horizon < fold.test.start
            assert fold.val.stop - 1 + config.horizon < fold.test.start
            assert fold.train.stop - 1 + config.horizon < fold.val.start
        assert all(b.test.start == a.test.stop for a, b in zip(folds, folds[1:]))


def test_fold_metrics_are_reported_against_baselines(built):
    folds = built.predictions.folds
    assert [(f["predictor"], f["fold"]) for f in folds] == [("lstm", 0), ("lstm", 1), ("lstm", 2),
                                                           ("regime", 0), ("regime", 1), ("regime", 2)]
    lstm, regime = folds[0], folds[3]
    for key in ("ret_mae", "ret_mae_zero", "ret_mae_persistence", "ret_dir_acc", "ret_dir_acc_majority",
                "ret_dir_acc_persistence", "ret_dir_acc_reversal", "ret_mae_arima", "ret_dir_acc_arima", "cls_log_loss", "cls_log_loss_prior", "cls_acc", "cls_acc_majority"):
        assert np.isfinite(lstm[key]), key
    for key in ("trend_acc", "trend_acc_majority", "trend_acc_persistence", "trend_log_loss",
                "trend_log_loss_prior", "vol_acc", "vol_log_loss", "vol_log_loss_prior"):
        assert np.isfinite(regime[key]), key
    assert lstm["arima_order"] == "1,0,1" and "arima_order" not in regime  # the baseline of return forecasts only
    # the last block [2922, 3000) is cut short by the data; its last `horizon` rows have no label yet
    assert lstm["n_eval"] == 600 and regime["n_eval"] == 600
    assert folds[2]["n_eval"] == 78 - 1 and folds[5]["n_eval"] == 78 - 12
    report = built.predictions.report()
    assert "lstm fold 0" in report and "regime fold 2" in report
    summary = built.predictions.summary()
    assert summary["lstm"]["folds"] == 3 and summary["regime"]["n_eval"] > 1200
    # every verdict in the report agrees with its numbers: an error lower than the baseline's is an edge
    pairs = re.findall(r"(\w+_mae)=([\d.e+-]+) vs (\w+)=([\d.e+-]+): (edge|no edge)", report)
    # vs the zero, the persistence and the ARIMA forecast
    assert {p[0] for p in pairs} == {"ret_mae"} and [p[2] for p in pairs] == ["ret_mae_zero", "ret_mae_persistence",
                                                                               "ret_mae_arima"]
    for _, value, _, ref, verdict in pairs:
        assert verdict == ("edge" if float(value) < float(ref) else "no edge")


def test_verdicts_on_hand_made_numbers():
    """Errors: lower than the baseline is an edge. Accuracies: higher by >= 2 binomial standard errors of the
    baseline is an edge, higher by less is noise: 0.55 vs 0.50 is z = 0.05 / sqrt(0.25 / n)."""
    lines = verdicts({"n_eval": 10_000.0, "ret_mae": 0.010, "ret_mae_zero": 0.012, "ret_mae_persistence": 0.009,
                      "ret_dir_acc": 0.55, "ret_dir_acc_majority": 0.50})
    assert "ret_mae=0.01 vs ret_mae_zero=0.012: edge" in lines
    assert "ret_mae=0.01 vs ret_mae_persistence=0.009: no edge" in lines
    assert "ret_dir_acc=0.55 vs ret_dir_acc_majority=0.5: edge (z=+10.0)" in lines
    few = verdicts({"n_eval": 100.0, "ret_dir_acc": 0.55, "ret_dir_acc_majority": 0.50})
    assert few == ["ret_dir_acc=0.55 vs ret_dir_acc_majority=0.5: within noise (z=+1.0)"]
    worse = verdicts({"n_eval": 100.0, "ret_dir_acc": 0.45, "ret_dir_acc_majority": 0.50})
    assert worse == ["ret_dir_acc=0.45 vs ret_dir_acc_majority=0.5: no edge (z=-1.0)"]



def test_too_little_data_gives_marked_rows_not_an_error(bars):
    frame = build_frame(bars.iloc[:1500], SPEC, cache=False)  # the first block would start at row 1722
    assert frame.columns[-len(OOF_COLUMNS):] == tuple(OOF_COLUMNS)
    assert np.isnan(frame.values[:, -len(OOF_COLUMNS):]).all() and not frame.valid.any()
