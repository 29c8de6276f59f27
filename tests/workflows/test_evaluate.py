"""spotgym evaluate: K=2 walk-forward folds on real ETH/USDT 1h (with and without tuning inside the folds)
writing the stitched artifacts; the printed criteria checked against numbers recomputed from equity.csv."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from spotgym.cli import main

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


def test_evaluate_writes_the_stitched_artifacts(evaluated, eth_1h_path):
    out, _ = evaluated
    assert {"walkforward.json", "equity.csv", "report.html", "fold_0", "fold_1"} <= {p.name for p in out.iterdir()}
    doc = json.loads((out / "walkforward.json").read_text())
    assert doc["n_folds"] == 2 and len(doc["folds"]) == 2 and doc["n_trials"] == 2
    f0, f1 = doc["folds"]
    # the test blocks tile the out-of-sample span: fold 1's test starts where fold 0's ends, and each fold's
    # validation is the end of the span before its own test block (purged)
    assert f0["split"]["test"]["rows"][1] == f1["split"]["test"]["rows"][0]
    assert f1["split"]["val"]["rows"][1] + 4 == f1["split"]["test"]["rows"][0]
    assert f1["split"]["train"]["rows"][1] + 4 == f1["split"]["val"]["rows"][0]
    assert f1["split"]["train"]["rows"][1] > f0["split"]["train"]["rows"][1]
    for fold in doc["folds"]:
        manifest = json.loads((out / f"fold_{fold['index']}" / "train" / "manifest.json").read_text())
        assert manifest["split"]["test"]["rows"] == fold["split"]["test"]["rows"]
        assert {"buy_and_hold", "macd_rule", "rsi_rule", "majority_vote"} <= set(fold["baselines"])
    equity = pd.read_csv(out / "equity.csv")
    n0 = f0["split"]["test"]["rows"][1] - f0["split"]["test"]["rows"][0]
    n1 = f1["split"]["test"]["rows"][1] - f1["split"]["test"]["rows"][0]
    # the initial point, then every bar once: fold 0's pass ends on fold 1's first bar, where fold 1 starts
    assert len(equity) == 1 + n0 + (n1 - 1) and list(equity["fold"].unique()) == [0, 1]
    # every out-of-sample bar is on the stitched curve exactly once: no untraded stretch between the blocks
    stamps = pd.to_datetime(equity["timestamp"])
    raw = pd.to_datetime(pd.read_csv(eth_1h_path)["timestamp"], unit="ms", utc=True)
    assert list(stamps) == list(raw[(raw >= stamps.iloc[0]) & (raw <= stamps.iloc[-1])])
    assert {"timestamp", "equity", "exposure", "drawdown", "buy_and_hold", "macd_rule"} <= set(equity.columns)
    overall = doc["overall"]["agent"]
    assert overall["final_equity"] == pytest.approx(equity["equity"].iloc[-1])
    assert overall["n_bars"] == len(equity) - 1
    assert doc["overall"]["baselines"]["buy_and_hold"]["final_equity"] == pytest.approx(equity["buy_and_hold"].iloc[-1])
    page = (out / "report.html").read_text()
    assert page.count("plotly.js v") == 1 and "Success criteria" in page and "Per fold (test blocks)" in page
    assert '<script src="http' not in page


def test_stitched_equity_is_continuous_across_folds(evaluated, exp_file):
    from spotgym.agents import load_model, model_actor
    from spotgym.backtest import run_policy
    from spotgym.workflows.experiment import load_experiment
    from spotgym.workflows.prepare import prepare

    out, _ = evaluated
    doc = json.loads((out / "walkforward.json").read_text())
    equity = pd.read_csv(out / "equity.csv")
    e0 = equity.loc[equity["fold"] == 0, "equity"].to_numpy()
    e1 = equity.loc[equity["fold"] == 1, "equity"].to_numpy()
    f0, f1 = doc["folds"]
    agent_sales = doc["stitching"]["closes"]["agent"]  # a position open at fold 0's end is sold paying the fee
    assert e0[0] == 10_000.0
    assert e0[-1] == pytest.approx(f0["agent"]["final_equity"] - sum(c["fee"] for c in agent_sales))
    # fold 1's own curve, replayed from its model, rescaled by hand to start at fold 0's end
    exp = load_experiment(exp_file, ["evaluation.folds=2"])
    prepared = prepare(exp)
    rows = range(*f1["split"]["test"]["rows"])  # the last block: its pass ends with the data
    own = run_policy(prepared.frame, prepared.env_config(exp), rows,
                     model_actor(load_model(out / "fold_1" / "train", "ppo"))).equity.to_numpy()
    assert own[-1] == pytest.approx(f1["agent"]["final_equity"])
    scale = e0[-1] / own[0]
    assert f1["scale"] == pytest.approx(scale)
    np.testing.assert_allclose(e1, own[1:] * scale, rtol=1e-9)
    # so the first stitched return of fold 1 is fold 1's own first return: no jump at the boundary
    assert e1[0] / e0[-1] == pytest.approx(own[1] / own[0], rel=1e-9)
    # buy-and-hold is stitched the same way: its position is sold at fold 0's last close paying the 0.1 % fee,
    # and its fold-1 block starts where that left it
    b0 = equity.loc[equity["fold"] == 0, "buy_and_hold"].to_numpy()
    sale = doc["stitching"]["closes"]["buy_and_hold"][0]
    assert sale["fold"] == 0 and sale["fee"] == pytest.approx(0.001 * sale["price"] * sale["quantity"])
    assert b0[-1] == pytest.approx(f0["baselines"]["buy_and_hold"]["final_equity"] - sale["fee"])
    assert equity["buy_and_hold"].iloc[-1] == pytest.approx(
        f1["baselines"]["buy_and_hold"]["final_equity"] * b0[-1] / 10_000.0)


def test_evaluate_prints_the_criteria_and_selection_statistics(evaluated):
    """Each printed PASS / FAIL agrees with the criterion recomputed by hand from equity.csv (calendar CAGR,
    running-peak drawdown, per-bar Sharpe of the agent and of buy-and-hold over the same bars)."""
    out, printed = evaluated
    doc = json.loads((out / "walkforward.json").read_text())
    equity = pd.read_csv(out / "equity.csv", parse_dates=["timestamp"])
    eq, hold = equity["equity"].to_numpy(), equity["buy_and_hold"].to_numpy()
    years = (equity["timestamp"].iloc[-1] - equity["timestamp"].iloc[0]) / pd.Timedelta(days=365)
    cagr = (eq[-1] / eq[0]) ** (1 / years) - 1
    max_dd = float(np.max(1 - eq / np.maximum.accumulate(eq)))

    def sharpe(curve):
        r = curve[1:] / curve[:-1] - 1
        return r.mean() / r.std(ddof=1) * np.sqrt(8760)

    expected = {"annualised return >= 300%": (cagr >= 3.0, f"{cagr * 100:.1f}%"),
                "max drawdown < 15%": (max_dd < 0.15, f"{max_dd * 100:.1f}%"),
                "beats buy-and-hold risk-adjusted (Sharpe)": (sharpe(eq) > sharpe(hold),
                                                              f"agent {sharpe(eq):.2f} vs buy-and-hold {sharpe(hold):.2f}")}
    assert "Success criteria (stitched out-of-sample curve, measured):" in printed
    for name, (passed, text) in expected.items():
        line = next(x for x in printed.splitlines() if name in x)
        assert line.strip().startswith("PASS" if passed else "FAIL"), line
        assert line.rstrip().endswith(f"measured: {text}"), line
    assert [c["passed"] for c in doc["criteria"]] == [v[0] for v in expected.values()]
    assert doc["criteria_config"] == {"min_annual_return": 3.0, "max_drawdown": 0.15, "beat_buy_and_hold": True}
    dsr = doc["deflated_sharpe"]
    assert dsr["computable"] and dsr["n_trials"] == 2 and 0.0 <= dsr["dsr"] <= 1.0
    assert "Deflated Sharpe ratio:" in printed
    assert doc["pbo"]["computable"] is False and "no tuning" in doc["pbo"]["reason"]
    assert "Probability of backtest over-fitting: not computable" in printed


def test_criteria_are_configuration(exp_file, tmp_path, capsys):
    """evaluation.criteria replaces the defaults: a 0 % return floor, a 99 % drawdown cap, no buy-and-hold test."""
    out = tmp_path / "lenient"
    assert main(["evaluate", str(exp_file), "--folds", "1", "--out", str(out), "--quiet",
                 "--set", "evaluation.criteria={min_annual_return: -0.99, max_drawdown: 0.99, "
                          "beat_buy_and_hold: false}"]) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "walkforward.json").read_text())
    assert [c["name"] for c in doc["criteria"]] == ["annualised return >= -99%", "max drawdown < 99%"]
    assert "beats buy-and-hold" not in printed and "PASS  max drawdown < 99%" in printed
    assert main(["evaluate", str(exp_file), "--set", "evaluation.criteria={min_return: 1}"]) == 2
    assert "evaluation.criteria: unknown criteria ['min_return']" in capsys.readouterr().err


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
