"""``spotgym retrain``: scheduled retraining with promotion by out-of-sample evidence.

A candidate is the champion's experiment retrained on every bar up to the start of the most recent
``eval_bars`` (so that span is unseen by it); champion and candidate are then backtested over that span through
the same env (``spotgym backtest --from --to``: the same warm-up, fills and costs), and the candidate is promoted
only if it beats the champion's ``metric`` by ``margin``. The decision and its evidence are written to
``retrain.json`` in the candidate's run directory, to the champion file (``champion.json``: the run that
``spotgym live run champion.json`` trades) when promoted, and to a live journal's events when one is given.
Schedule it (cron, a systemd timer) every 30 days; a challenger can meanwhile trade in paper as its own session
(``spotgym live run CANDIDATE --mode paper``) and be compared with ``spotgym live compare``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from spotgym.data import load_bars
from spotgym.data.timeframes import timeframe_to_ms
from spotgym.live.journal import Journal
from spotgym.workflows.backtest import backtest, utc_time
from spotgym.workflows.experiment import load_experiment
from spotgym.workflows.train import train

__all__ = ["METRICS", "bars_from_exchange", "champion_run", "retrain"]

METRICS = ("sharpe", "total_return", "calmar", "sortino")


def champion_run(path: str | Path) -> Path:
    """A run directory, or the run a ``champion.json`` names."""
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        try:
            run = Path(json.loads(p.read_text())["run_dir"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"{p}: not a champion file (expected {{\"run_dir\": ...}})") from None
        return run if run.is_absolute() else (p.parent / run).resolve()
    return p


def bars_from_exchange(champion: str | Path, *, sim_url: str | None = None, mode: str = "live",
                       data_dir: str | Path | None = None, progress: bool = False) -> Path:
    """Every closed bar of the champion's market up to now, downloaded through the exchange the live runner trades
    on (the replay exchange with ``sim_url``: up to its market clock), into the cache; the file's path."""
    from spotgym.data.download import download_ohlcv
    from spotgym.venue import make_exchange

    exp = load_experiment(champion_run(champion) / "config.yaml")
    client = make_exchange(exp.data.exchange, mode="sim" if sim_url else mode, sim_url=sim_url)
    now_ms = None
    if sim_url:  # the replay exchange's "now" is its market clock, not the wall clock
        import requests

        now_ms = int(requests.get(sim_url.rstrip("/") + "/sim/state", timeout=10).json()["time"])
    result = download_ohlcv(exp.data.symbol, exp.data.timeframe, exp.data.start, exchange=exp.data.exchange,
                            data_dir=data_dir, client=client, progress=progress, now_ms=now_ms)
    return Path(result.path)


def retrain(champion: str | Path, *, data: str | Path, until: str | None = None, eval_bars: int = 720,
            metric: str = "sharpe", margin: float = 0.0, out: str | Path | None = None,
            champion_file: str | Path | None = None, journal: str | None = None, session: str | None = None,
            overrides: list[str] | None = None, checkpoint: bool = False, progress: bool = False) -> dict[str, Any]:
    champion_path = Path(champion)
    champ = champion_run(champion_path)
    if not (champ / "config.yaml").is_file():
        raise ValueError(f"{champ} is not a trained spotgym run directory")
    if metric not in METRICS:
        raise ValueError(f"--metric must be one of {METRICS}, got {metric!r}")
    if eval_bars < 24:
        raise ValueError(f"--eval-bars must be >= 24, got {eval_bars}")
    exp = load_experiment(champ / "config.yaml")
    tf = pd.Timedelta(milliseconds=timeframe_to_ms(exp.data.timeframe))
    bars = load_bars(data, exp.data.gap_policy, symbol=exp.data.symbol)
    last = bars.index[-1] if until is None else utc_time(until, "--until")
    last = bars.index[bars.index.searchsorted(last, side="right") - 1]
    eval_start = last - eval_bars * tf
    if eval_start <= bars.index[0]:
        raise ValueError(f"{data} ends at {last}: too short for an evaluation span of {eval_bars} bars")
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    cand_dir = Path(out) if out else champ.parent / f"{exp.name}-candidate-{last:%Y%m%dT%H%M}-{stamp}"
    sets = [f"data.path={data}", f"data.end={(eval_start - tf).isoformat()}", f"run.dir={cand_dir}",
            *(overrides or [])]
    cand_exp = load_experiment(champ / "config.yaml", sets)
    candidate = train(cand_exp, progress=progress)
    results = {}
    for name, run in (("champion", champ), ("candidate", candidate)):
        bt = backtest(run, data=data, start=eval_start.isoformat(), end=last.isoformat(), checkpoint=checkpoint,
                      out=candidate / "retrain" / name)
        results[name] = json.loads((bt / "metrics.json").read_text())["agent"]
    c, k = float(results["champion"].get(metric) or 0.0), float(results["candidate"].get(metric) or 0.0)
    promoted = k >= c + margin
    decision = {"promoted": promoted, "metric": metric, "margin": margin, "champion": str(champ.resolve()),
                "candidate": str(candidate.resolve()), "champion_value": c, "candidate_value": k,
                "eval_span": [eval_start.isoformat(), last.isoformat()], "trained_until": (eval_start - tf).isoformat(),
                "evidence": {n: {m: r.get(m) for m in ("total_return", "sharpe", "max_drawdown", "turnover_annual",
                                                         "fees_paid", "n_trades")} for n, r in results.items()},
                "decided": pd.Timestamp.now(tz="UTC").isoformat()}
    (candidate / "retrain.json").write_text(json.dumps(decision, indent=1))
    target = Path(champion_file) if champion_file else (champion_path if champion_path.suffix == ".json"
                                                         else champ.parent / "champion.json")
    if promoted:
        target.write_text(json.dumps({"run_dir": str(candidate.resolve()), "since": decision["decided"],
                                      "previous": str(champ.resolve()), "evidence": decision["evidence"]}, indent=1))
    elif not target.exists():
        target.write_text(json.dumps({"run_dir": str(champ.resolve()), "since": decision["decided"]}, indent=1))
    decision["champion_file"] = str(target)
    if journal:
        j = Journal(journal, session or "retrain")
        try:
            if j.session_row() is None:
                j.open_session(mode="retrain", symbol=exp.data.symbol or "", run_dir=str(champ))
                j.set_session(state="stopped")
            j.event("retrain_decision", None, **decision)
        finally:
            j.close()
    return decision
