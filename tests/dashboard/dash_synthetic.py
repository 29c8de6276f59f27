"""Synthetic run directories for the dashboard's HTTP tests and its benchmark: the files ``spotgym train`` and
``spotgym backtest`` write (config.yaml, manifest.json, metrics.json, backtest/test/*), with made-up numbers, so a
test needs no training. The browser tests use real trained runs instead (conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

USER, PASSWORD = "alice", "correct horse battery staple"
METRIC_KEYS = ("total_return", "cagr", "annual_volatility", "sharpe", "sortino", "calmar", "max_drawdown",
               "max_drawdown_duration_days", "profit_factor", "win_rate", "avg_win", "avg_loss", "n_trades",
               "n_round_trips", "exposure", "turnover_annual", "fees_paid", "final_equity")


def _metrics(rng: np.random.Generator, equity: np.ndarray, n_trades: int) -> dict:
    ret = float(equity[-1] / equity[0] - 1)
    return {"total_return": ret, "cagr": ret * 3, "annual_volatility": float(rng.uniform(0.2, 0.8)),
            "sharpe": float(rng.normal(0, 1.5)), "sortino": float(rng.normal(0, 2)), "calmar": float(rng.normal()),
            "max_drawdown": float(np.max(1 - equity / np.maximum.accumulate(equity))),
            "max_drawdown_duration_days": float(rng.uniform(1, 80)), "profit_factor": float(rng.uniform(0.5, 1.6)),
            "win_rate": float(rng.uniform(0.3, 0.6)), "avg_win": 0.01, "avg_loss": -0.01, "n_trades": n_trades,
            "n_round_trips": n_trades // 2, "exposure": 0.5, "turnover_annual": 100.0, "fees_paid": 12.5,
            "final_equity": float(equity[-1]), "initial_equity": float(equity[0]), "n_bars": len(equity) - 1}


def write_run(run: Path, *, seed: int = 0, bars: int = 200, backtest: bool = True, experiment: str = "synthetic",
              data_path: str | None = None) -> Path:
    """A run directory at ``run`` (hourly bars from 2024-01-01; ``backtest``: with a test-split backtest whose
    trades.csv holds an even number of alternating buy / sell fills)."""
    rng = np.random.default_rng(seed)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "name": experiment, "seed": seed,
        "data": {"exchange": "binance", "symbol": "ETH/USDT", "timeframe": "1h", "path": data_path,
                 "gap_policy": "mark"},
        "agent": {"algo": "ppo", "timesteps": 256}, "run": {"dir": str(run), "root": "runs"}}))
    (run / "manifest.json").write_text(json.dumps({
        "experiment": experiment, "created": f"2024-0{1 + seed % 9}-1{seed % 10}T12:00:00+00:00",
        "data": {"timeframe": "1h", "first": "2023-01-01T00:00:00+00:00", "last": "2024-01-01T00:00:00+00:00"},
        "venue": {"exchange": "binance", "symbol": "ETH/USDT"}, "seed": seed}))
    (run / "metrics.json").write_text(json.dumps({"best": {"timestep": 256, "val": {"total_return": 0.01}},
                                                  "selected": "agent", "beats_cash": True}))
    if backtest:
        out = run / "backtest" / "test"
        out.mkdir(parents=True, exist_ok=True)
        times = pd.date_range("2024-01-01", periods=bars + 1, freq="1h", tz="UTC")
        price = 2000 * np.exp(np.cumsum(rng.normal(0, 0.01, bars + 1)))
        equity = 10_000 * np.exp(np.cumsum(rng.normal(0, 0.005, bars + 1)))
        hold = 10_000 * price / price[0]
        pd.DataFrame({"timestamp": times, "equity": equity, "exposure": 0.5,
                      "drawdown": 1 - equity / np.maximum.accumulate(equity), "buy_and_hold": hold}
                     ).to_csv(out / "equity.csv", index=False)
        n = 2 * int(rng.integers(3, 12))
        at = np.sort(rng.choice(np.arange(1, bars), n, replace=False))
        qty = 2.0
        pd.DataFrame({"timestamp": times[at], "side": ["buy", "sell"] * (n // 2), "price": price[at],
                      "quantity": qty, "notional": qty * price[at], "fee": qty * price[at] * 0.001}
                     ).to_csv(out / "trades.csv", index=False)
        risk = np.where(rng.random(bars) < 0.05, "max_position", "")
        pd.DataFrame({"timestamp": times[:-1], "action": rng.integers(0, 3, bars).astype(float), "risk": risk,
                      "halted": False, "trade": False, "fill_qty": 0.0, "fill_price": 0.0, "fee": 0.0,
                      "position": 0.0, "exposure": 0.0, "equity": equity[:-1]}).to_csv(out / "decisions.csv",
                                                                                         index=False)
        (out / "metrics.json").write_text(json.dumps({
            "agent": _metrics(rng, equity, n),
            "baselines": {"buy_and_hold": _metrics(rng, hold, 1)}}))
    return run
