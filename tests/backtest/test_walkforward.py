"""spotgym evaluate: stitching by hand, the success criteria, and K=2 walk-forward folds on real ETH/USDT 1h
(with and without tuning inside the folds) writing the stitched artifacts."""

from __future__ import annotations

import contextlib
import io
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from spotgym.backtest import compute_metrics
from spotgym.backtest.walkforward import format_criteria, stitch_equity, stitch_runs, success_criteria
from spotgym.cli import main

TIMES = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC")


def series(values, start):
    return pd.Series(values, index=TIMES[start:start + len(values)], dtype=float)


def test_stitch_equity_rescales_each_fold_to_start_where_the_previous_ended():
    a = series([100.0, 110.0, 121.0], 0)
    b = series([200.0, 180.0, 198.0], 4)  # a gap of one bar between the blocks, as between test blocks
    stitched, scales = stitch_equity([a, b])
    # by hand: b is scaled by 121 / 200 = 0.605 and its first point (== 121 after scaling) dropped
    assert scales == [1.0, pytest.approx(0.605)]
    np.testing.assert_allclose(stitched.to_numpy(), [100.0, 110.0, 121.0, 108.9, 119.79])
    assert list(stitched.index) == [TIMES[0], TIMES[1], TIMES[2], TIMES[5], TIMES[6]]
    # the stitched returns are exactly the folds' returns one after another
    returns = stitched.pct_change().dropna().to_numpy()
    np.testing.assert_allclose(returns, [0.1, 0.1, -0.1, 0.1])
    with pytest.raises(ValueError, match="overlap"):
        stitch_equity([a, series([1.0, 2.0], 1)])


def rollout(equity, trades, exposure):
    columns = ["timestamp", "side", "price", "quantity", "notional", "fee"]
    return SimpleNamespace(equity=equity, trades=pd.DataFrame(trades, columns=columns),
                           exposure=pd.Series(exposure, index=equity.index))


def test_stitch_runs_scales_fills_and_closes_a_position_left_open_at_a_fold_end():
    # fold 0 buys 1 unit at 100 (fee 0.1) and still holds it at its last close, 110
    f0 = rollout(series([1000.0, 999.9, 1009.9], 0), [(TIMES[1], "buy", 100.0, 1.0, 100.0, 0.1)], [0, 0.1, 0.109])
    # fold 1 starts flat with 500, buys 2 units at 50 and sells them at 55
    f1 = rollout(series([500.0, 499.9, 509.8], 4),
                 [(TIMES[5], "buy", 50.0, 2.0, 100.0, 0.1), (TIMES[6], "sell", 55.0, 2.0, 110.0, 0.11)],
                 [0, 0.2, 0])
    run = stitch_runs([f0, f1], close_prices=[110.0, 56.0])
    scale = 1009.9 / 500.0
    assert run["scales"] == [1.0, pytest.approx(scale)]
    trades = run["trades"]
    assert list(trades["side"]) == ["buy", "sell", "buy", "sell"]
    closing = trades.iloc[1]  # synthetic: at fold 0's last bar, at its close, without fee
    assert (closing["timestamp"], closing["price"], closing["quantity"], closing["fee"]) == (TIMES[2], 110.0, 1.0, 0.0)
    assert run["synthetic"] == [{"fold": 0, "timestamp": TIMES[2], "side": "sell", "price": 110.0, "quantity": 1.0,
                                 "notional": 110.0, "fee": 0.0}]
    np.testing.assert_allclose(trades["quantity"].iloc[2:], [2.0 * scale, 2.0 * scale])
    np.testing.assert_allclose(trades["fee"].iloc[2:], [0.1 * scale, 0.11 * scale])
    assert list(run["fold"]) == [0, 0, 0, 1, 1]
    assert len(run["exposure"]) == len(run["equity"]) == 5
    metrics = compute_metrics(run["equity"], trades, run["exposure"])
    assert metrics["n_round_trips"] == 2  # the trips never span the fold boundary
    assert metrics["fees_paid"] == pytest.approx(0.1 + 0.21 * scale)


def test_success_criteria_are_measured_not_assumed():
    hold = {"sharpe": 1.0}
    good = success_criteria({"cagr": 3.2, "max_drawdown": 0.1, "sharpe": 1.5}, hold)
    assert [c["passed"] for c in good] == [True, True, True]
    bad = success_criteria({"cagr": 2.99, "max_drawdown": 0.15, "sharpe": 1.0}, hold)
    assert [c["passed"] for c in bad] == [False, False, False]  # 15 % is not < 15 %; a tie does not beat
    undefined = success_criteria({"cagr": None, "max_drawdown": 0.01, "sharpe": None}, hold)
    assert [c["passed"] for c in undefined] == [False, True, False]
    text = format_criteria(good + bad)
    assert "PASS  annualised return >= 300%" in text and "measured: 320.0%" in text
    assert "FAIL  max drawdown < 15%" in text and "agent 1.00 vs buy-and-hold 1.00" in text


# --------------------------------------------------------------------------------------------------
# spotgym evaluate on real data
# --------------------------------------------------------------------------------------------------

TINY = {
    "name": "wf-tiny",
    "seed": 2,
    "data": {"start": "2021-01-01", "end": "2021-06-15T23:00"},
    "env": {"action": "levels", "window": 8, "episode_length": 128, "fee": 0.001},
    "agent": {"algo": "ppo", "timesteps": 256, "n_envs": 2, "eval_every": 128,
              "params": {"n_steps": 64, "batch_size": 64}},
    "evaluation": {"folds": 1, "val_size": 0.12, "test_size": 0.15, "purge": 4},
    "tracking": {"wandb": False, "tensorboard": False},
    "tune": {"space": {"agent.params.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
                       "env.window": [8, 16]}, "pruner": "none"},
}


@pytest.fixture(scope="module")
def exp_file(tmp_path_factory, eth_1h_path):
    path = tmp_path_factory.mktemp("wf-exp") / "wf.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": {**TINY["data"], "path": str(eth_1h_path)}}))
    return path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, exp_file):
    out = tmp_path_factory.mktemp("wf") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["evaluate", str(exp_file), "--folds", "2", "--out", str(out), "--quiet"]) == 0
    return out, printed.getvalue()


def test_evaluate_writes_the_stitched_artifacts(evaluated):
    out, _ = evaluated
    assert {"walkforward.json", "equity.csv", "report.html", "fold_0", "fold_1"} <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "walkforward.json").read_text())
    assert doc["n_folds"] == 2 and len(doc["folds"]) == 2 and doc["n_trials"] == 2
    f0, f1 = doc["folds"]
    # each fold trained on its own training span, the test blocks in order and disjoint
    assert f0["split"]["test"]["rows"][1] <= f1["split"]["val"]["rows"][0] < f1["split"]["test"]["rows"][0]
    assert f1["split"]["train"]["rows"][1] > f0["split"]["train"]["rows"][1]
    for fold in doc["folds"]:
        manifest = json.loads((out / f"fold_{fold['index']}" / "train" / "manifest.json").read_text())
        assert manifest["split"]["test"]["rows"] == fold["split"]["test"]["rows"]
        assert {"buy_and_hold", "macd_rule", "rsi_rule", "majority_vote"} <= set(fold["baselines"])
    equity = pd.read_csv(out / "equity.csv")
    n0 = f0["split"]["test"]["rows"][1] - f0["split"]["test"]["rows"][0]
    n1 = f1["split"]["test"]["rows"][1] - f1["split"]["test"]["rows"][0]
    assert len(equity) == n0 + n1 - 1 and list(equity["fold"].unique()) == [0, 1]
    assert {"timestamp", "equity", "exposure", "drawdown", "buy_and_hold", "macd_rule"} <= set(equity.columns)
    overall = doc["overall"]["agent"]
    assert overall["final_equity"] == pytest.approx(equity["equity"].iloc[-1])
    assert overall["n_bars"] == len(equity) - 1
    assert doc["overall"]["baselines"]["buy_and_hold"]["final_equity"] == pytest.approx(equity["buy_and_hold"].iloc[-1])
    page = (out / "report.html").read_text()
    assert page.count("plotly.js v") == 1 and "Success criteria" in page and "Per fold (test blocks)" in page
    assert '<script src="http' not in page


def test_stitched_equity_is_continuous_across_folds(evaluated, exp_file):
    from spotgym.agents.rollout import model_actor, run_policy
    from spotgym.agents.train import prepare
    from spotgym.backtest.runner import load_model
    from spotgym.experiment import load_experiment

    out, _ = evaluated
    doc = json.loads((out / "walkforward.json").read_text())
    equity = pd.read_csv(out / "equity.csv")
    e0 = equity.loc[equity["fold"] == 0, "equity"].to_numpy()
    e1 = equity.loc[equity["fold"] == 1, "equity"].to_numpy()
    f0, f1 = doc["folds"]
    assert e0[0] == 10_000.0 and e0[-1] == pytest.approx(f0["agent"]["final_equity"])
    # fold 1's own curve, replayed from its model, rescaled by hand to start at fold 0's end
    exp = load_experiment(exp_file, ["evaluation.folds=2"])
    prepared = prepare(exp)
    rows = range(*f1["split"]["test"]["rows"])
    own = run_policy(prepared.frame, exp.env_config(), rows,
                     model_actor(load_model(out / "fold_1" / "train", "ppo"))).equity.to_numpy()
    assert own[-1] == pytest.approx(f1["agent"]["final_equity"])
    scale = e0[-1] / own[0]
    assert f1["scale"] == pytest.approx(scale)
    np.testing.assert_allclose(e1, own[1:] * scale, rtol=1e-9)
    # so the first stitched return of fold 1 is fold 1's own first return: no jump at the boundary
    assert e1[0] / e0[-1] == pytest.approx(own[1] / own[0], rel=1e-9)
    # buy-and-hold is stitched the same way: its fold-1 block starts at its fold-0 end
    b0 = equity.loc[equity["fold"] == 0, "buy_and_hold"].to_numpy()
    assert b0[-1] == pytest.approx(f0["baselines"]["buy_and_hold"]["final_equity"])
    assert equity["buy_and_hold"].iloc[-1] == pytest.approx(
        f1["baselines"]["buy_and_hold"]["final_equity"] * b0[-1] / 10_000.0)


def test_evaluate_prints_the_criteria_and_selection_statistics(evaluated):
    out, printed = evaluated
    doc = json.loads((out / "walkforward.json").read_text())
    assert "Success criteria (stitched out-of-sample curve, measured):" in printed
    for name in ("annualised return >= 300%", "max drawdown < 15%", "beats buy-and-hold risk-adjusted (Sharpe)"):
        line = next(x for x in printed.splitlines() if name in x)
        assert line.strip().startswith(("PASS", "FAIL")) and "measured:" in line
    cagr = doc["overall"]["agent"]["cagr"]
    assert f"measured: {cagr * 100:.1f}%" in printed
    assert [c["passed"] for c in doc["criteria"]] == [c["passed"] for c in success_criteria(
        doc["overall"]["agent"], doc["overall"]["baselines"]["buy_and_hold"])]
    dsr = doc["deflated_sharpe"]
    assert dsr["computable"] and dsr["n_trials"] == 2 and 0.0 <= dsr["dsr"] <= 1.0
    assert "Deflated Sharpe ratio:" in printed
    assert doc["pbo"]["computable"] is False and "no tuning" in doc["pbo"]["reason"]
    assert "Probability of backtest over-fitting: not computable" in printed


def test_evaluate_with_tuning_inside_each_fold(exp_file, tmp_path, capsys):
    out = tmp_path / "tuned"
    assert main(["evaluate", str(exp_file), "--folds", "2", "--tune-trials", "2", "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "walkforward.json").read_text())
    assert doc["n_trials"] == 4 and doc["deflated_sharpe"]["n_trials"] == 4
    for fold in doc["folds"]:
        study = fold["study"]
        assert study["finished"] == 2 and fold["n_configs"] == 2
        tune_dir = out / f"fold_{fold['index']}" / "tune"
        assert (tune_dir / "report.html").is_file() and (tune_dir / "best.json").is_file()
        assert fold["run_dir"] == study["best"]["run_dir"]  # the best trial's model is the fold's model
        manifest = json.loads((tune_dir.parent / "tune" / "trials" / "trial_0000" / "manifest.json").read_text())
        assert manifest["fold"]["index"] == fold["index"]  # tuned on this fold's train/val, never its test
        assert manifest["split"]["test"]["rows"] == fold["split"]["test"]["rows"]
    assert doc["pbo"]["computable"] is True and set(doc["pbo"]["per_fold"]) == {"0", "1"}
    assert 0.0 <= doc["pbo"]["pbo"] <= 1.0
    assert "Probability of backtest over-fitting: " in capsys.readouterr().out
