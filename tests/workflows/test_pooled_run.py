"""Pooled training end to end on real data with a tiny budget: ETH/USDT with BTC/USDT and SOL/USDT in the pool,
each symbol its own frame and rules, trained over the same dates as ETH's training split, validated on ETH, and
backtested per symbol."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from shared_data import shared_file

from spotgym.cli import main
from spotgym.workflows.experiment import ExperimentError, load_experiment

TINY = ["agent.timesteps=256", "agent.n_envs=6", "agent.eval_every=256", "agent.params={n_steps: 32, batch_size: 64}",
        "tracking.wandb=false", "tracking.tensorboard=false"]


@pytest.fixture(scope="module")
def pooled(tmp_path_factory, eth_1h_path):
    root = tmp_path_factory.mktemp("pool")
    path = root / "pool.yaml"
    path.write_text(yaml.safe_dump({
        "name": "pool", "seed": 2,
        "data": {"path": str(eth_1h_path), "start": "2021-01-01", "end": "2021-05-31T23:00",
                 "pool": [{"symbol": "BTC/USDT", "path": str(shared_file("BINANCE_BTCUSDT_1h.csv.gz"))},
                          {"symbol": "SOL/USDT", "path": str(shared_file("BINANCE_SOLUSDT_1h.csv"))}]},
        "env": {"action": "levels", "window": 8, "episode_length": 96},
        "agent": {"algo": "ppo"},
        "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
    }))
    run = root / "run"
    assert main(["train", str(path), "--quiet", *[f"--set={s}" for s in TINY], f"--set=run.dir={run}"]) == 0
    return path, run


def test_each_pooled_symbol_trains_over_the_main_training_dates(pooled):
    _, run = pooled
    manifest = json.loads((run / "manifest.json").read_text())
    train = manifest["split"]["train"]
    assert [p["symbol"] for p in manifest["pool"]] == ["BTC/USDT", "SOL/USDT"]
    for part in manifest["pool"]:
        assert part["train"]["last"] == train["last"]  # the same dates: nothing from ETH's validation or test span
        assert part["train"]["first"] >= "2021-01-01" and part["rules"]["symbol"] == part["symbol"]
    accounts = json.loads((run / "metrics.json").read_text())["accounts"]
    assert set(accounts) == {"ETH/USDT", "BTC/USDT", "SOL/USDT"} and sum(accounts.values()) == 6
    assert min(accounts.values()) >= 1
    btc = manifest["pool"][0]["rules"]
    assert (btc["tick_size"], btc["step_size"]) == (0.01, 1e-05)  # BTC's own exchange rules, not ETH's


def test_the_backtest_reports_every_symbol_on_its_own_bars(pooled, capsys):
    _, run = pooled
    assert main(["backtest", str(run), "--checkpoint"]) == 0
    out = capsys.readouterr().out
    assert "BTC/USDT:" in out and "SOL/USDT:" in out
    manifest = json.loads((run / "manifest.json").read_text())
    test = manifest["split"]["test"]
    for symbol, name in (("BTC/USDT", "BINANCE_BTCUSDT_1h.csv.gz"), ("SOL/USDT", "BINANCE_SOLUSDT_1h.csv")):
        folder = run / "backtest" / "test" / symbol.replace("/", "_")
        equity = pd.read_csv(folder / "equity.csv")
        assert equity["timestamp"].iloc[0] == test["first"].replace("T", " ")  # the same dates as ETH's test
        raw = pd.read_csv(shared_file(name)).set_index("timestamp")
        trades = pd.read_csv(folder / "trades.csv")
        tick = next(p["rules"]["tick_size"] for p in manifest["pool"] if p["symbol"] == symbol)
        assert len(trades) > 0
        for fill in trades.itertuples():  # every fill at that symbol's open, 1 bp worse, on its own tick
            open_px = raw.loc[int(pd.Timestamp(fill.timestamp).value // 10**6), "open"]
            expected = (np.ceil(round(open_px * 1.0001 / tick, 6)) * tick if fill.side == "buy"
                        else np.floor(round(open_px * 0.9999 / tick, 6)) * tick)
            assert fill.price == pytest.approx(expected, abs=1e-9), (symbol, fill)
        metrics = json.loads((folder / "metrics.json").read_text())
        bh = metrics["baselines"]["buy_and_hold"]["total_return"]
        closes = raw.loc[[int(pd.Timestamp(t).value // 10**6) for t in equity["timestamp"]], "close"].to_numpy()
        assert bh == pytest.approx(closes[-1] / closes[0] - 1, abs=0.01)  # buy and hold of that symbol


def test_pool_config_errors(pooled):
    path, _ = pooled
    with pytest.raises(ExperimentError, match=r"data.pool\[0\].symbol: ETH/USDT is already in the data"):
        load_experiment(path, ["data.pool=[ETH/USDT]"])
    with pytest.raises(ExperimentError, match=r"data.pool\[0\].file: unknown key"):
        load_experiment(path, ["data.pool=[{symbol: BTC/USDT, file: x}]"])
    with pytest.raises(ExperimentError, match="leave env.filters at 'venue'"):
        load_experiment(path, ["env.filters={tick_size: 0.01, step_size: 0.0001, min_qty: 0.0001, min_notional: 5}"])
