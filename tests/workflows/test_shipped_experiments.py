"""Every shipped experiment file trains end to end (tiny budget, a slice of the real data) and backtests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotgym.cli import main
from spotgym.workflows.experiment import load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SLICES = {  # timeframe -> (file, start, end, predictor refit schedule small enough for the slice)
    "1h": ("BINANCE_ETHUSDT_1h.csv.gz", "2020-06-01", "2021-06-30", 2500),
    "5m": ("BINANCE_ETHUSDT_5m.csv.gz", "2023-01-01", "2023-02-28", 3000),
}


def test_all_three_experiments_are_shipped():
    names = sorted(p.name for p in EXPERIMENTS.glob("*.yaml"))
    assert names == ["ethusdt_1h_maskable_ppo.yaml", "ethusdt_1h_ppo.yaml", "ethusdt_5m_recurrent_ppo.yaml"]


@pytest.mark.parametrize("name", ["ethusdt_1h_ppo", "ethusdt_1h_maskable_ppo", "ethusdt_5m_recurrent_ppo"])
def test_experiment_trains_and_backtests(name, tmp_path, monkeypatch):
    from shared_data import shared_file

    monkeypatch.setenv("SPOTGYM_PREDICTIONS_CACHE", str(tmp_path / "cache"))
    exp_file = EXPERIMENTS / f"{name}.yaml"
    timeframe = load_experiment(exp_file).data.timeframe
    file, start, end, refit = SLICES[timeframe]
    run = tmp_path / "run"
    overrides = [f"data.path={shared_file(file)}", f"data.start={start}", f"data.end={end}",
                 f"predictors.min_train={refit}", f"predictors.refit_every={refit}", "predictors.val_size=300",
                 "predictors.max_train_rows=null", "agent.timesteps=256", "agent.n_envs=2", "agent.eval_every=256",
                 "agent.params.n_steps=128", "agent.params.batch_size=128", "tracking.wandb=false",
                 "env.episode_length=128", f"run.dir={run}"]
    assert main(["train", str(exp_file), "--quiet", *[f"--set={o}" for o in overrides]]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["predictors"]["models"]) == set(metrics["predictors"]["summary"])
    assert all(len(h) == 16 for h in manifest["predictors"]["models"].values())
    assert metrics["timesteps"] >= 256 and metrics["best"]["val"]["n_bars"] > 100
    assert set(metrics["predictors"]["summary"]) == {m["name"] for m in load_experiment(exp_file).predictors["models"]}
    assert sorted(p.name for p in (run / "predictors").iterdir()) == sorted(metrics["predictors"]["summary"])
    assert main(["backtest", str(run), "--split", "val"]) == 0
    report = json.loads((run / "backtest" / "val" / "metrics.json").read_text())
    assert "lstm_forecast_rule" in report["baselines"]
