"""The research loop end to end on real ETH/USDT data with a tiny budget: train -> run dir -> backtest."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spotgym.agents import target_actor
from spotgym.agents.baselines import buy_and_hold
from spotgym.backtest import run_policy
from spotgym.cli import main
from spotgym.data import load_bars
from spotgym.envs import EnvConfig
from spotgym.features import build_features
from spotgym.workflows.experiment import ExperimentError, load_experiment

TINY = ["agent.timesteps=512", "agent.n_envs=4", "agent.eval_every=256", "agent.params={n_steps: 64, batch_size: 128}",
        "tracking.wandb_mode=offline"]


@pytest.fixture(scope="module")
def experiment_file(tmp_path_factory, eth_1h_path):
    path = tmp_path_factory.mktemp("exp") / "tiny.yaml"
    path.write_text(yaml.safe_dump({
        "name": "tiny",
        "seed": 3,
        "data": {"path": str(eth_1h_path), "start": "2021-01-01", "end": "2021-06-30T23:00"},
        "env": {"action": "levels", "window": 8, "episode_length": 128, "fee": 0.001},
        "agent": {"algo": "ppo"},
        "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
    }))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, experiment_file):
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for name in ("a", "b"):  # the same experiment and seed twice: the metrics must agree
        assert main(["train", str(experiment_file), "--quiet", *[f"--set={s}" for s in TINY],
                     f"--set=run.dir={root / name}"]) == 0
        dirs.append(root / name)
    return dirs


def test_run_directory_contents(trained):
    run = trained[0]
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "manifest.json", "model.zip", "metrics.json",
                                               "tensorboard", "wandb"}
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["agent"]["timesteps"] == 512 and config["run"]["dir"] == str(run)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed"] == 3 and len(manifest["data"]["hash"]) == 16
    assert manifest["versions"]["stable-baselines3"] and manifest["features"]["hash"]
    assert manifest["predictors"] is None  # this experiment names none; see test_shipped_experiments
    train_rows, val_rows, test_rows = (manifest["split"][k]["rows"] for k in ("train", "val", "test"))
    assert train_rows[1] + 4 == val_rows[0] and val_rows[1] + 4 == test_rows[0]  # purge between splits
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["timesteps"] == 512
    assert [h["timestep"] for h in metrics["history"]] == [256, 512]
    assert metrics["best"]["val"]["n_bars"] == val_rows[1] - val_rows[0] - 1  # rows [a, b): b - a - 1 steps


def test_same_experiment_and_seed_reproduce_the_metrics(trained):
    a, b = (json.loads((run / "metrics.json").read_text()) for run in trained)
    assert a["history"] == b["history"]
    assert a["best"] == b["best"]


def test_tensorboard_and_wandb_receive_trading_scalars(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = glob.glob(str(trained[0] / "tensorboard" / "*"))
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"trading/val_sharpe", "trading/val_max_drawdown", "trading/val_turnover", "trading/val_fees_paid",
            "trading/val_total_return", "trading/train_episode_return", "train/value_loss"} <= tags
    assert len(acc.Scalars("trading/val_sharpe")) == 2
    offline = glob.glob(str(trained[0] / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(offline) == 1  # `wandb sync` uploads this later
    blob = Path(offline[0]).read_bytes()
    assert b"trading/val_sharpe" in blob and b"train/value_loss" in blob


def test_a_run_whose_checkpoints_lose_to_cash_holds_cash(trained, capsys):
    run = trained[0]
    metrics = json.loads((run / "metrics.json").read_text())
    # 512 steps of PPO: every checkpoint lost money on validation (fees), so the run keeps none of them
    assert [h["beats_cash"] for h in metrics["history"]] == [h["total_return"] > 0 for h in metrics["history"]]
    assert metrics["selected"] == "cash" and not metrics["beats_cash"]
    assert main(["backtest", str(run), "--out", str(run / "bt_selected")]) == 0
    out = capsys.readouterr().out
    assert "selection: no checkpoint beat staying in cash on validation" in out
    assert len(pd.read_csv(run / "bt_selected" / "trades.csv")) == 0
    decisions = pd.read_csv(run / "bt_selected" / "decisions.csv")
    assert (decisions["position"] == 0).all() and len(decisions) > 100
    assert "no checkpoint beat staying in cash" in (run / "bt_selected" / "report.html").read_text()


def test_backtest_writes_four_artifacts_that_reconcile(trained, capsys, eth_1h_path):
    run = trained[0]
    assert main(["backtest", str(run), "--checkpoint"]) == 0  # the kept checkpoint, though it lost to cash
    out = run / "backtest" / "test"
    assert "buy_and_hold" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"agent", "baselines"}
    assert {"buy_and_hold", "macd_rule", "rsi_rule", "majority_vote"} <= set(metrics["baselines"])
    for block in (metrics["agent"], *metrics["baselines"].values()):
        assert {"total_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "profit_factor", "win_rate",
                "n_trades", "exposure", "turnover", "fees_paid"} <= set(block)
    equity = pd.read_csv(out / "equity.csv")
    trades = pd.read_csv(out / "trades.csv")
    manifest = json.loads((run / "manifest.json").read_text())
    test_rows = manifest["split"]["test"]["rows"]
    assert len(equity) == test_rows[1] - test_rows[0]  # initial point + one per step
    assert equity["equity"].iloc[0] == 10_000.0
    assert equity["timestamp"].iloc[0] == manifest["split"]["test"]["first"].replace("T", " ")
    agent = metrics["agent"]
    assert agent["n_trades"] == len(trades)
    assert agent["fees_paid"] == pytest.approx(trades["fee"].sum(), rel=1e-12, abs=1e-12)
    assert agent["final_equity"] == pytest.approx(equity["equity"].iloc[-1], rel=1e-12)
    assert agent["total_return"] == pytest.approx(equity["equity"].iloc[-1] / 10_000.0 - 1, rel=1e-12)
    # every fill, checked against the raw bars by hand: at the open of the bar after the decision, worsened by
    # the 1 bp slippage and rounded to the 0.01 tick against the trader, a quantity on the 0.0001 lot step,
    # at least 5 USDT of notional, and a fee of 0.1 % of it (Binance's ETH/USDT rules, written out here)
    raw = pd.read_csv(eth_1h_path).set_index("timestamp")
    assert len(trades) > 0
    for fill in trades.itertuples():
        ms = int(pd.Timestamp(fill.timestamp).value // 10**6)
        open_px = raw.loc[ms, "open"]
        expected = (np.ceil(round(open_px * 1.0001 / 0.01, 6)) * 0.01 if fill.side == "buy"
                    else np.floor(round(open_px * 0.9999 / 0.01, 6)) * 0.01)
        assert fill.price == pytest.approx(expected, abs=1e-9), fill
        assert round(fill.quantity / 0.0001, 6) == pytest.approx(round(fill.quantity / 0.0001), abs=1e-6), fill
        assert fill.notional == pytest.approx(fill.price * fill.quantity, rel=1e-12)
        assert fill.notional >= 5.0 and fill.fee == pytest.approx(0.001 * fill.notional, rel=1e-12)
    # the equity path reconciles with the fills: the final cash + units * last close is the final equity
    cash, units = 10_000.0, 0.0
    for fill in trades.itertuples():
        sign = 1.0 if fill.side == "buy" else -1.0
        cash -= sign * fill.notional + fill.fee
        units += sign * fill.quantity
    last_ms = int(pd.Timestamp(equity["timestamp"].iloc[-1]).value // 10**6)
    assert cash + units * raw.loc[last_ms, "close"] == pytest.approx(agent["final_equity"], rel=1e-9)
    # buy-and-hold in the report's equity.csv is the baseline's curve
    bh = metrics["baselines"]["buy_and_hold"]
    assert bh["total_return"] == pytest.approx(equity["buy_and_hold"].iloc[-1] / 10_000.0 - 1, rel=1e-12)
    html = (out / "report.html").read_text()
    assert "<script src=\"http" not in html and "buy_and_hold" in html


def test_backtest_on_another_file(trained, tmp_path, eth_1h_path):
    fresh = pd.read_csv(eth_1h_path)
    fresh = fresh[(fresh["timestamp"] >= pd.Timestamp("2022-01-01").value // 10**6)].iloc[:1500]
    path = tmp_path / "ETHUSDT_fresh_1h.csv"
    fresh.to_csv(path, index=False)
    assert main(["backtest", str(trained[0]), "--data", str(path), "--out", str(tmp_path / "bt")]) == 0
    equity = pd.read_csv(tmp_path / "bt" / "equity.csv")
    assert equity["timestamp"].iloc[-1].startswith(str(pd.Timestamp(fresh["timestamp"].iloc[-1], unit="ms"))[:13])


def test_buy_and_hold_rollout_matches_hand_computation(eth_1h_path):
    bars = load_bars(eth_1h_path, start="2024-01-01", end="2024-02-29")
    frame = build_features(bars)
    rows = range(frame.first_valid_row + 7, len(frame))
    assert frame.valid[frame.first_valid_row:].all()  # no masked row in this span: a plain sequential pass
    cfg = EnvConfig(action="continuous", window=8, fee=0.001, slippage_bps=0.0, filters=None)
    result = run_policy(frame, cfg, rows, target_actor(buy_and_hold(bars)))
    # all in at the open of the first fill bar: qty * open * (1 + fee) = cash
    qty = 10_000.0 / (frame.open[rows.start + 1] * 1.001)
    expected = np.r_[10_000.0, qty * frame.close[rows.start + 1: rows.stop]]
    np.testing.assert_allclose(result.equity.to_numpy(), expected, rtol=1e-9)
    assert len(result.trades) == 1 and result.trades["fee"].iloc[0] == pytest.approx(qty * frame.open[rows.start + 1] * 0.001)
    assert result.total_reward == pytest.approx(np.log(expected[-1] / 10_000.0), abs=1e-9)


def test_experiment_errors_name_the_key(experiment_file):
    with pytest.raises(ExperimentError, match=r"agent\.timestep: unknown key"):
        load_experiment(experiment_file, ["agent.timestep=5"])
    with pytest.raises(ExperimentError, match=r"agent\.n_envs: expected int"):
        load_experiment(experiment_file, ["agent.n_envs=many"])
    with pytest.raises(ExperimentError, match=r"env: .*'rewrd'"):
        load_experiment(experiment_file, ["env.rewrd=log"])
    with pytest.raises(ExperimentError, match=r"env: EnvConfig.fee"):
        load_experiment(experiment_file, ["env.fee=-1"])
    with pytest.raises(ExperimentError, match=r"features: unknown indicator"):
        load_experiment(experiment_file, ["features={indicators: [nope]}"])
    with pytest.raises(ExperimentError, match=r"data\.gap_policy"):
        load_experiment(experiment_file, ["data.gap_policy=guess"])
    with pytest.raises(ExperimentError, match="expected key=value"):
        load_experiment(experiment_file, ["seed"])
    exp = load_experiment(experiment_file, ["seed=9", "agent.timesteps=1e4", "run.dir=/tmp/x"])
    assert (exp.seed, exp.agent.timesteps, exp.run.dir) == (9, 10_000, "/tmp/x")


def test_algorithm_and_action_space_mismatch_is_clear(experiment_file, tmp_path):
    # found when the experiment is loaded, before any data is read or any predictor trained
    with pytest.raises(ExperimentError, match="sac needs a Box action space .* set env.action to continuous"):
        load_experiment(experiment_file, ["agent.algo=sac", f"run.dir={tmp_path / 'r'}", "tracking.wandb=false"])
    with pytest.raises(ExperimentError, match=r"agent.algo: unknown algorithm 'pp0'"):
        load_experiment(experiment_file, ["agent.algo=pp0"])
