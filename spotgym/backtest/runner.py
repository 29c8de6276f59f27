"""``spotgym backtest RUN_DIR``: the trained policy and the baselines over one split, one pass each,
through the same env; writes metrics.json, trades.csv, equity.csv and report.html."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
SPLITS = ("val", "test")


def load_model(run_dir: Path, algo: str):
    """The run's best model (``model.zip``) with its algorithm class from the registry."""
    from spotgym.agents.registry import ALGOS

    path = run_dir / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished `spotgym train` run?")
    return ALGOS[algo.lower().replace("-", "_")].load_class().load(path, device="cpu")


def rows_between(frame, first: str, last: str) -> range:
    """Rows of ``frame`` from bar time ``first`` to ``last`` inclusive."""
    index = frame.index
    start = int(index.searchsorted(pd.Timestamp(first)))
    stop = int(index.searchsorted(pd.Timestamp(last), side="right"))
    if stop - start < 2:
        raise ValueError(f"the data hold no bars between {first} and {last}")
    return range(start, stop)


def baseline_targets(bars: pd.DataFrame, frame) -> dict[str, np.ndarray]:
    """Target exposures of every baseline on these bars (causal; see ``spotgym.agents.baselines``)."""
    from spotgym.agents import baselines as b

    macd, rsi = b.macd_rule(bars), b.rsi_rule(bars)
    targets = {"buy_and_hold": b.buy_and_hold(bars), "macd_rule": macd, "rsi_rule": rsi}
    forecast = forecast_column(frame)
    votes = [macd, rsi]
    if forecast is not None:
        targets["lstm_forecast_rule"] = b.forecast_rule(frame.column(forecast))
        votes.append(targets["lstm_forecast_rule"])
    targets["majority_vote"] = b.majority_vote(*votes)
    return targets


def run_baselines(frame, config, rows: range, targets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each baseline's target exposures through the env over ``rows``: same costs and exchange filters as
    ``config``, continuous target actions. Returns name -> ``Rollout``."""
    from spotgym.agents.rollout import run_policy, target_actor

    cfg = config.replace(action="continuous")
    return {name: run_policy(frame, cfg, rows, target_actor(t)) for name, t in targets.items()}


def forecast_column(frame) -> str | None:
    """The LSTM's next-return forecast column, if the frame has predictor columns."""
    for name in frame.columns:
        if name.startswith(("lstm_ret", "gru_ret")):
            return name
    return None


def frame_with_fitted_predictors(run_dir: Path, exp, bars: pd.DataFrame, manifest: dict[str, Any]):
    """The frame of new bars: indicators rebuilt causally, predictor columns from the run's fitted models
    (``RUN_DIR/predictors``; no refitting on the new data)."""
    from spotgym.features import build_features
    from spotgym.predictors import load_predictor

    spec = exp.feature_spec()
    frame = build_features(bars, spec.indicator_spec)
    if spec.predictors is None:
        return frame
    trained_until = pd.Timestamp(manifest["data"]["last"])
    if bars.index[0] <= trained_until:
        log.warning("the new data start at %s, before the end of the run's data (%s): the predictors were fitted "
                    "on some of these bars, so their columns are in-sample there", bars.index[0], trained_until)
    for model_cfg in spec.predictors.models:
        folder = run_dir / "predictors" / model_cfg.name
        model = load_predictor(folder, frame=frame, feature_spec=spec.indicator_spec)
        values = model.predict(frame)
        frame = frame.with_columns(model.output_columns, values, valid=np.isfinite(values).all(axis=1))
    return frame


def backtest(run_dir: str | Path, split: str = "test", data: str | Path | None = None,
             out: str | Path | None = None) -> Path:
    """Backtest a run over ``split`` of its own data, or over every usable bar of ``data``."""
    from spotgym.agents.rollout import model_actor, run_policy
    from spotgym.agents.train import prepare, usable_rows
    from spotgym.backtest import write_metrics_json, write_report
    from spotgym.data import load_bars
    from spotgym.experiment import load_experiment

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {split!r}")
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}/config.yaml not found: not a spotgym run directory")
    exp = load_experiment(run_dir / "config.yaml")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    if data is None:
        prepared = prepare(exp)
        frame, bars = prepared.frame, prepared.bars
        split_info = manifest["split"][split]
        rows = rows_between(frame, split_info["first"], split_info["last"])
        label = split
    else:
        bars = load_bars(data, exp.data.gap_policy)
        if bars.attrs["timeframe"] != exp.data.timeframe:
            raise ValueError(f"{data} holds {bars.attrs['timeframe']} bars; the run was trained on {exp.data.timeframe}")
        frame = frame_with_fitted_predictors(run_dir, exp, bars, manifest)
        rows = usable_rows(frame, exp.env_config().window)
        label = Path(data).name
    if list(frame.columns) != manifest["features"]["columns"]:
        raise ValueError(f"the rebuilt frame's columns {list(frame.columns)} differ from the run's "
                         f"{manifest['features']['columns']}")

    out_dir = Path(out) if out else run_dir / "backtest" / split
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = exp.env_config()
    model = load_model(run_dir, exp.agent.algo)
    agent = run_policy(frame, cfg, rows, model_actor(model))
    baseline_runs = run_baselines(frame, cfg, rows, baseline_targets(bars, frame))

    agent_metrics = agent.metrics(exp.data.timeframe)
    baseline_metrics = {name: r.metrics(exp.data.timeframe) for name, r in baseline_runs.items()}
    write_metrics_json(out_dir / "metrics.json", agent_metrics, baseline_metrics)
    agent.trades.to_csv(out_dir / "trades.csv", index=False)
    equity = agent.equity_frame()
    equity["buy_and_hold"] = baseline_runs["buy_and_hold"].equity.to_numpy()
    equity.to_csv(out_dir / "equity.csv", index=False)
    shown = bars.iloc[rows.start: rows.stop + 1]
    write_report(out_dir / "report.html", bars=shown,
                 equity={exp.agent.algo: agent.equity, **{n: r.equity for n, r in baseline_runs.items()}},
                 trades=agent.trades, metrics={"agent": agent_metrics, "baselines": baseline_metrics},
                 title=f"{exp.data.symbol} {exp.data.timeframe} — {exp.name} ({label})")
    print(summary_table(exp.agent.algo, agent_metrics, baseline_metrics))
    return out_dir


def summary_table(agent_name: str, agent: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> str:
    """The console table of agent vs baselines."""
    def fmt(v: Any, kind: str = "signed") -> str:
        if v is None:
            return "—"
        return {"signed": f"{v * 100:+.1f}%", "pct": f"{v * 100:.1f}%", "num": f"{v:.2f}"}[kind]

    rows = [f"{'':22s} {'return':>9s} {'CAGR':>9s} {'Sharpe':>7s} {'max DD':>8s} {'trades':>7s}"]
    for name, m in [(agent_name + " (agent)", agent), *baselines.items()]:
        rows.append(f"{name:22s} {fmt(m['total_return']):>9s} {fmt(m['cagr']):>9s} "
                    f"{fmt(m['sharpe'], 'num'):>7s} {fmt(m['max_drawdown'], 'pct'):>8s} {m['n_trades']:>7d}")
    return "\n".join(rows)
