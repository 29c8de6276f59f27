"""What every workflow (train, backtest, tune, evaluate) starts from: the experiment's bars, its full frame
(indicators + out-of-fold predictor columns), the walk-forward folds over the rows the env can trade, and
the trading rules of its symbol; with ``data.pool``, the same for each pooled symbol (``PoolPart``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from spotgym.core import FeatureFrame, array_digest
from spotgym.data import Fold, WalkForward, load_bars
from spotgym.data.download import DownloadError, download_ohlcv
from spotgym.data.io import symbol_from_name
from spotgym.envs import FROM_VENUE, EnvConfig, decision_rows
from spotgym.predictors.pipeline import build_frame_with_report, build_frames_with_report
from spotgym.venue import TradingRules, UnknownSymbol, make_exchange, rules_for
from spotgym.workflows.errors import ExperimentError
from spotgym.workflows.experiment import Experiment

__all__ = ["DATA_PATH_ENV", "PoolPart", "Prepared", "bars_hash", "env_rows_config", "load_experiment_bars",
           "pool_rows", "prepare", "resolve_rules", "split_record"]

DATA_PATH_ENV = "SPOTGYM_DATA_PATH"


@dataclass
class PoolPart:
    """A pooled symbol: its bars, its own frame (features normalised on its data; predictor columns fitted on its
    data, or with ``predictors.fit: pooled`` by the models fitted on every symbol) and rules."""

    symbol: str
    bars: pd.DataFrame
    frame: FeatureFrame
    rules: TradingRules
    rules_source: str
    predictions: Any = None

    def env_config(self, exp: Experiment, **overrides: Any) -> EnvConfig:
        cfg = exp.env_config(**overrides)
        return cfg.replace(filters=self.rules) if cfg.filters == FROM_VENUE else cfg


@dataclass
class Prepared:
    """The bars, the frame, the folds, the predictors' stacking report and the symbol's trading rules."""

    bars: pd.DataFrame
    frame: FeatureFrame
    folds: list[Fold]
    rules: TradingRules
    predictions: Any = None  # spotgym.predictors.StackingResult when the experiment names predictors
    rules_source: str = "snapshot"
    pool: list[PoolPart] | None = None  # data.pool's symbols

    def env_config(self, exp: Experiment, **overrides: Any) -> EnvConfig:
        """The experiment's env config with the resolved trading rules in place of ``filters: venue``."""
        cfg = exp.env_config(**overrides)
        return cfg.replace(filters=self.rules) if cfg.filters == FROM_VENUE else cfg


def load_experiment_bars(exp: Experiment) -> tuple[pd.DataFrame, Any]:
    """The experiment's bars and the ccxt client they came from (None for a file): ``data.path`` (or
    ``$SPOTGYM_DATA_PATH``), else the download cache, brought up to date from the exchange first
    (resumable, so this only fetches newer bars)."""
    d = exp.data
    return _load_symbol_bars(exp, d.symbol, d.path or os.environ.get(DATA_PATH_ENV), d.start, d.end, "data")


def _load_symbol_bars(exp: Experiment, symbol: str, source: str | None, start: str | None, end: str | None,
                      where: str) -> tuple[pd.DataFrame, Any]:
    d = exp.data
    client = None
    if not source:
        client = make_exchange(d.exchange)
        try:
            result = download_ohlcv(symbol, d.timeframe, since=start, exchange=d.exchange, client=client)
        except DownloadError as exc:
            raise DownloadError(f"{exc}\n(no connection to {d.exchange}? train on a file instead: "
                                f"--set {where}.path=FILE" + (f", or set ${DATA_PATH_ENV})" if where == "data" else ")")
                                ) from exc
        source = str(result.path)
    named = symbol_from_name(source)
    if named is not None and named != symbol:
        raise ExperimentError(f"{where}.symbol is {symbol} but {source} looks like {named} bars; set {where}.symbol "
                              f"to match the file")
    bars = load_bars(source, d.gap_policy, start=start, end=end, symbol=symbol)
    if bars.attrs["timeframe"] != d.timeframe:
        raise ExperimentError(f"data.timeframe is {d.timeframe} but {source} holds {bars.attrs['timeframe']} bars")
    return bars, client


def resolve_rules(exp: Experiment, client: Any = None, symbol: str | None = None) -> tuple[TradingRules, str]:
    """The trading rules the env applies to ``symbol`` (default the experiment's) and where they came from:
    ``env.filters`` when given, else the exchange's markets (when ``client`` is the exchange the bars came
    from), else the shipped snapshot."""
    cfg = exp.env_config()
    symbol = symbol or exp.data.symbol
    if cfg.filters is None:
        return TradingRules.off(symbol), "off (env.filters: null)"
    if isinstance(cfg.filters, TradingRules):
        return cfg.filters, "env.filters"
    if client is not None:
        try:
            return rules_for(symbol, exp.data.exchange, client=client), f"{exp.data.exchange} markets"
        except Exception as exc:  # the exchange did not answer: fall back on the snapshot, and say so
            note = f"snapshot ({exp.data.exchange} markets unavailable: {type(exc).__name__})"
    else:
        note = "snapshot"
    try:
        return rules_for(symbol, exp.data.exchange), note
    except UnknownSymbol as exc:
        raise ExperimentError(f"env.filters: {exc}") from None


def bars_hash(bars: pd.DataFrame) -> str:
    """Fingerprint of the bars (timestamps + OHLCV bytes) for manifests and caches."""
    ohlcv = bars[["open", "high", "low", "close", "volume"]].to_numpy(dtype="float64")
    return array_digest([bars.index.as_unit("ms").asi8, ohlcv], length=16)


def prepare(exp: Experiment, bars: pd.DataFrame | None = None, *, progress: bool = False) -> Prepared:
    """Load bars, build the frame (indicators + out-of-fold predictor columns, cached on disk), split the rows
    the env can trade into the evaluation's walk-forward folds, and resolve the symbol's trading rules."""
    exp.validate()
    client = None
    if bars is None:
        bars, client = load_experiment_bars(exp)
    rules, source = resolve_rules(exp, client)
    pooled = [_load_pool_part(exp, item) for item in exp.data.pool or []]
    spec = exp.frame_spec()
    all_bars = [bars, *(part[1] for part in pooled)]
    if spec.predictors is not None and spec.predictors.fit == "pooled":  # each refit block fitted on every symbol
        builds = build_frames_with_report(all_bars, spec, progress=progress)
    else:  # each symbol's predictors fitted on its own rows
        builds = [build_frame_with_report(b, spec, progress=progress) for b in all_bars]
    build = builds[0]
    frame = build.frame
    ev = exp.evaluation
    splitter = WalkForward(n_folds=ev.folds, val_size=ev.val_size, test_size=ev.test_size, purge=ev.purge,
                           embargo=ev.embargo, min_train=0.2)
    try:
        rows = decision_rows(frame, exp.env_config().window)
    except ValueError as exc:
        raise ExperimentError(str(exc)) from None
    folds = splitter.split(rows)
    pool = [PoolPart(symbol, part_bars, b.frame, part_rules, part_source, b.predictions)
            for (symbol, part_bars, part_rules, part_source), b in zip(pooled, builds[1:])]
    return Prepared(bars, frame, folds, rules, build.predictions, source, pool or None)


def _load_pool_part(exp: Experiment, item: dict[str, Any]) -> tuple[str, pd.DataFrame, TradingRules, str]:
    """A pooled symbol's bars and trading rules (its frame is built with the main symbol's, see ``prepare``)."""
    symbol = item["symbol"]
    bars, client = _load_symbol_bars(exp, symbol, item.get("path"), item.get("start") or exp.data.start,
                                     item.get("end") or exp.data.end, f"data.pool ({symbol})")
    rules, source = resolve_rules(exp, client, symbol)
    return symbol, bars, rules, source


def pool_rows(part: PoolPart, frame: FeatureFrame, rows: range, window: int) -> range:
    """The rows of a pooled symbol's frame over the same dates as ``rows`` of the main ``frame`` (decidable
    rows only: past the pooled frame's warm-up). Empty when the dates do not overlap."""
    first, last = frame.index[rows.start], frame.index[rows.stop - 1]
    index = part.frame.index
    start = int(index.searchsorted(first))
    stop = int(index.searchsorted(last, side="right"))
    try:
        start = max(start, decision_rows(part.frame, window).start)
    except ValueError:
        return range(0)
    return range(start, max(start, stop))


def env_rows_config(exp: Experiment, prepared: Prepared, rows: range, *, training: bool) -> EnvConfig:
    """The env config for a row range: training draws random episodes, evaluation one pass."""
    cfg = prepared.env_config(exp)
    episode = cfg.episode_length if training else None
    if training and episode is not None and episode > len(rows) - 1:
        episode = len(rows) - 1
    return cfg.replace(start_row=rows.start, end_row=rows.stop, episode_length=episode)


def split_record(frame: FeatureFrame, rows: range) -> dict[str, Any]:
    """A split as rows and as times (first decision bar, bar after the last decision), so a backtest finds
    the same bars even if the data source has grown since training."""
    return {"rows": [rows.start, rows.stop], "first": frame.index[rows.start].isoformat(),
            "last": frame.index[rows.stop - 1].isoformat()}
