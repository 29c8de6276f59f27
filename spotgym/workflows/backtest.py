"""``spotgym backtest RUN_DIR``: the trained policy and the baselines over one split, one pass each, through the
same env; writes metrics.json, trades.csv, decisions.csv (every decision and what the risk rules made of it),
equity.csv and report.html."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from spotgym.agents import baseline_targets
from spotgym.backtest import (
    decisions_section,
    run_baselines,
    run_policy,
    summary_table,
    write_metrics_json,
    write_report,
)
from spotgym.data import load_bars
from spotgym.data.timeframes import timeframe_to_ms
from spotgym.envs import FROM_VENUE, decision_rows
from spotgym.predictors import apply_fitted_predictors
from spotgym.venue import TradingRules
from spotgym.workflows.errors import ExperimentError
from spotgym.workflows.experiment import Experiment, load_experiment
from spotgym.workflows.prepare import Prepared, pool_rows, prepare, resolve_rules
from spotgym.workflows.train import load_run_actor, selection_summary

__all__ = ["SPLITS", "WARMUP_BARS", "backtest", "frame_with_fitted_predictors", "rows_between", "run_rules", "utc_time"]

log = logging.getLogger(__name__)
SPLITS = ("val", "test")
WARMUP_BARS = 1000  # bars before --from that warm indicators and predictors up; `spotgym live run` fetches as many


def utc_time(value: str, flag: str) -> pd.Timestamp:
    """``value`` (ISO; naive = UTC) as a UTC timestamp; a ValueError naming ``flag`` when it is not a time."""
    try:
        t = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"{flag}: {value!r} is not a date / time (ISO, e.g. 2024-06-01 or 2024-06-01T12:00)") from None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def rows_between(frame, first: str, last: str) -> range:
    """Rows of ``frame`` from bar time ``first`` to ``last`` inclusive."""
    index = frame.index
    start = int(index.searchsorted(pd.Timestamp(first)))
    stop = int(index.searchsorted(pd.Timestamp(last), side="right"))
    if stop - start < 2:
        raise ValueError(f"the data hold no bars between {first} and {last}")
    return range(start, stop)


def frame_with_fitted_predictors(run_dir: Path, exp: Experiment, bars: pd.DataFrame, manifest: dict[str, Any]):
    """The frame of new bars: indicators rebuilt causally, predictor columns from the run's fitted models
    (``RUN_DIR/predictors``; no refitting on the new data)."""
    spec = exp.frame_spec()
    if spec.predictors is not None:
        trained_until = pd.Timestamp(manifest["data"]["last"])
        if bars.index[0] <= trained_until:
            log.warning("the new data start at %s, before the end of the run's data (%s): the predictors were "
                        "fitted on some of these bars, so their columns are in-sample there", bars.index[0],
                        trained_until)
    return apply_fitted_predictors(bars, spec, run_dir / "predictors")


def run_rules(manifest: dict[str, Any], prepared: Prepared | None, exp: Experiment) -> TradingRules:
    """The trading rules the run trained under (recorded in its manifest), so a backtest applies the same."""
    recorded = (manifest.get("venue") or {}).get("rules")
    if recorded is not None:
        return TradingRules.from_mapping(recorded)
    if prepared is not None:
        return prepared.rules
    return resolve_rules(exp)[0]


def _backtest_one(exp: Experiment, frame, bars: pd.DataFrame, rows: range, cfg, actor, out_dir: Path, title: str,
                  selection: str | None) -> None:
    """One symbol's backtest: the actor and the baselines over ``rows``, the five artifacts in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    agent = run_policy(frame, cfg, rows, actor)
    baseline_runs = run_baselines(frame, cfg, rows, baseline_targets(bars, frame))
    agent_metrics = agent.metrics(exp.data.timeframe)
    baseline_metrics = {name: r.metrics(exp.data.timeframe) for name, r in baseline_runs.items()}
    write_metrics_json(out_dir / "metrics.json", agent_metrics, baseline_metrics)
    agent.trades.to_csv(out_dir / "trades.csv", index=False)
    agent.decisions.to_csv(out_dir / "decisions.csv", index=False)
    equity = agent.equity_frame()
    equity["buy_and_hold"] = baseline_runs["buy_and_hold"].equity.to_numpy()
    equity.to_csv(out_dir / "equity.csv", index=False)
    shown = bars.iloc[rows.start: rows.stop + 1]
    write_report(out_dir / "report.html", bars=shown,
                 equity={exp.agent.algo: agent.equity, **{n: r.equity for n, r in baseline_runs.items()}},
                 trades=agent.trades, metrics={"agent": agent_metrics, "baselines": baseline_metrics},
                 title=title, sections=(decisions_section(selection, agent.decisions),))
    print(summary_table(exp.agent.algo, agent_metrics, baseline_metrics))


def backtest(run_dir: str | Path, split: str = "test", data: str | Path | None = None,
             out: str | Path | None = None, checkpoint: bool = False, start: str | None = None,
             end: str | None = None, warmup_bars: int = WARMUP_BARS) -> Path:
    """Backtest a run over ``split`` of its own data, or over every usable bar of ``data``. The run's actor
    trades (cash when its selection found nothing better); ``checkpoint=True`` trades the kept checkpoint
    regardless.

    ``start`` / ``end`` (with ``data``): trade from the bar opening at ``start`` to the bar opening at ``end``;
    the frame is built over ``warmup_bars`` bars before ``start`` and no earlier, exactly as ``spotgym live run``
    builds it from the exchange's history, so the two make the same decisions over the same span."""
    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {SPLITS}, got {split!r}")
    if (start is not None or end is not None) and data is None:
        raise ValueError("--from / --to go with --data FILE (the span of that file to trade)")
    if (start is None) != (end is None):
        raise ValueError("give --from and --to together")
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}/config.yaml not found: not a spotgym run directory")
    exp = load_experiment(run_dir / "config.yaml")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    prepared = None
    if data is None:
        prepared = prepare(exp)
        frame, bars = prepared.frame, prepared.bars
        split_info = manifest["split"][split]
        rows = rows_between(frame, split_info["first"], split_info["last"])
        label = split
    else:
        first = None
        if start is not None:
            first, last = utc_time(start, "--from"), utc_time(end, "--to")
            if last <= first:
                raise ValueError(f"--to {end} is not after --from {start}")
            tf = pd.Timedelta(milliseconds=timeframe_to_ms(exp.data.timeframe))
            bars = load_bars(data, exp.data.gap_policy, symbol=exp.data.symbol, start=first - warmup_bars * tf,
                             end=last)
        else:
            bars = load_bars(data, exp.data.gap_policy, symbol=exp.data.symbol)
        if bars.attrs["timeframe"] != exp.data.timeframe:
            raise ValueError(f"{data} holds {bars.attrs['timeframe']} bars; the run was trained on {exp.data.timeframe}")
        frame = frame_with_fitted_predictors(run_dir, exp, bars, manifest)
        try:
            rows = (rows_between(frame, str(first), str(last)) if first is not None
                    else decision_rows(frame, exp.env_config().window))
        except ValueError as exc:
            raise ExperimentError(f"{data}: {exc}") from None
        label = Path(data).name if first is None else f"{Path(data).name}, {start} → {end}"
    if list(frame.columns) != manifest["features"]["columns"]:
        raise ValueError(f"the rebuilt frame's columns {list(frame.columns)} differ from the run's "
                         f"{manifest['features']['columns']}")

    default = (f"{Path(data).name.split('.')[0]}_{first:%Y%m%dT%H%M}_{last:%Y%m%dT%H%M}" if data is not None
               and first is not None else split)
    out_dir = Path(out) if out else run_dir / "backtest" / default
    cfg = exp.env_config()
    if cfg.filters == FROM_VENUE:
        cfg = cfg.replace(filters=run_rules(manifest, prepared, exp))
    selection = selection_summary(run_dir) if (run_dir / "metrics.json").is_file() else None
    if selection and checkpoint:
        selection += " (this backtest trades the kept checkpoint anyway: --checkpoint)"
    if selection:
        print(f"selection: {selection}")
    actor = load_run_actor(run_dir, exp, cfg, checkpoint=checkpoint)
    _backtest_one(exp, frame, bars, rows, cfg, actor, out_dir, f"{exp.data.symbol} {exp.data.timeframe} — "
                  f"{exp.name} ({label})", selection)
    if prepared is not None:  # a pooled run: every other symbol over the same dates, into out/<SYMBOL>/
        recorded = {p["symbol"]: p for p in manifest.get("pool") or []}
        for part in prepared.pool or []:
            span = pool_rows(part, frame, rows, cfg.window)
            if len(span) < 2:
                print(f"{part.symbol}: no bars over {label}'s dates")
                continue
            rules = recorded.get(part.symbol, {}).get("rules")
            part_cfg = cfg.replace(filters=TradingRules.from_mapping(rules) if rules else part.rules)
            print(f"{part.symbol}:")
            _backtest_one(exp, part.frame, part.bars, span, part_cfg, load_run_actor(run_dir, exp, part_cfg,
                                                                                    checkpoint=checkpoint),
                          out_dir / part.symbol.replace("/", "_"),
                          f"{part.symbol} {exp.data.timeframe} — {exp.name} ({label}, pooled)", selection)
    return out_dir
