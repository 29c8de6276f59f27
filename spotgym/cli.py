"""The ``spotgym`` command: data download / check / resample, train, backtest, tune, evaluate.

A thin shell over ``spotgym.workflows`` and ``spotgym.data``: it parses arguments, calls one function and
prints where the results are. Nothing imports it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _data_download(args: argparse.Namespace) -> int:
    from spotgym.data.download import download_ohlcv
    from spotgym.venue import make_exchange

    client = make_exchange(args.exchange, mode="sim", sim_url=args.sim_url) if args.sim_url else None
    result = download_ohlcv(args.symbol, args.timeframe, since=args.since, exchange=args.exchange,
                            data_dir=args.data_dir, client=client, progress=not args.quiet)
    print(f"{result.path}: {result.rows_added:,} new bars, {result.rows_total:,} in total")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    """Check every file given; a problem is one ``error: <file>: <problem>`` line on stderr, never a traceback."""
    from spotgym.data import BarsError, inspect_bars

    spike = {} if args.spike_ratio is None else {"spike_ratio": args.spike_ratio}
    if args.spike_ratio is not None and not args.spike_ratio > 1:
        print(f"error: --spike-ratio must be > 1, got {args.spike_ratio:g}", file=sys.stderr)
        return 2
    status = 0
    for path in args.paths:
        try:
            report = inspect_bars(path, timeframe=args.timeframe, **spike)
        except BarsError as exc:
            problem = str(exc)
        except FileNotFoundError as exc:
            problem = str(exc)
            if problem == f"bar file {Path(path).expanduser()} does not exist":
                problem = "no such file"
            problem = f"{path}: {problem}"
        except Exception as exc:  # whatever else a file can do: still one line, and the next files are checked
            if os.environ.get("SPOTGYM_TRACEBACK"):
                raise
            problem = f"{path}: cannot check ({type(exc).__name__}: {exc})"
        else:
            print(report.summary())
            print()
            if report.suspicious:
                first = report.suspicious[0]
                problem = f"{report.source}: {len(report.suspicious):,} suspicious bar(s), first: {first}"
            else:
                continue
        print(f"error: {' '.join(problem.split())}", file=sys.stderr)
        status = 1
    return status


def _data_resample(args: argparse.Namespace) -> int:
    from spotgym.data import load_bars, resample_bars

    bars = resample_bars(load_bars(args.path, gap_policy="mark"), args.timeframe)
    out = Path(args.out)
    frame = bars.reset_index(drop=True)
    frame.insert(0, "timestamp", bars.index.as_unit("ms").asi8)
    if out.name.endswith(".parquet"):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)
    print(f"{out}: {len(bars):,} {args.timeframe} bars ({bars.attrs['dropped_buckets']} incomplete buckets dropped)")
    return 0


def _train(args: argparse.Namespace) -> int:
    from spotgym.workflows.experiment import load_experiment
    from spotgym.workflows.train import selection_summary, train

    exp = load_experiment(args.experiment, args.set)
    run_dir = train(exp, progress=not args.quiet)
    print(f"selection:     {selection_summary(run_dir)}")
    print(f"run directory: {run_dir}")
    print(f"TensorBoard:   tensorboard --logdir {run_dir / 'tensorboard'}")
    print(f"backtest:      spotgym backtest {run_dir}")
    return 0


def _backtest(args: argparse.Namespace) -> int:
    from spotgym.workflows.backtest import backtest

    out = backtest(args.run_dir, split=args.split, data=args.data, out=args.out, checkpoint=args.checkpoint,
                   start=args.start, end=args.end, warmup_bars=args.warmup_bars)
    print(f"report:        {out / 'report.html'}")
    print(f"metrics:       {out / 'metrics.json'} (trades.csv, decisions.csv, equity.csv beside it)")
    return 0


def _live_run(args: argparse.Namespace) -> int:
    from spotgym.live.runner import LiveSettings, load_live_config, run_live

    values = load_live_config(args.config) if args.config else {}
    extra = {k: values.pop(k) for k in ("notify", "alerts", "metrics", "log_file") if k in values}
    flags = {"symbol": args.symbol, "session": args.session, "journal": args.journal, "sim_url": args.sim_url,
             "data": args.data, "start": args.start, "bars": args.bars, "speed": args.speed,
             "key": args.key[0] if args.key and len(args.key) == 1 else None,
             "retrain_every": args.retrain_every}
    values.update({k: v for k, v in flags.items() if v is not None})
    settings = LiveSettings(mode=args.mode, confirm_real_money=args.i_understand_this_trades_real_money,
                            checkpoint=args.checkpoint, extra=extra, **values)
    if len(args.run_dir) > 1:  # A/B: several runs on one feed, a session and an account each
        from spotgym.live.runner import run_live_many

        summaries = run_live_many(args.run_dir, settings, keys=args.key)
        print(f"export:        spotgym live export --session NAME --journal {summaries[0]['journal']} --out DIR "
              f"(sessions: {', '.join(s['session'] for s in summaries)})")
        return 0
    if args.key and len(args.key) > 1:
        raise ValueError("several --key go with several run directories (A/B: one key per session)")
    summary = run_live(args.run_dir[0], settings)
    print(f"export:        spotgym live export --session {summary['session']} --journal {summary['journal']} "
          "--out DIR")
    return 0


def _journal_for(args: argparse.Namespace) -> str:
    """``--journal``, else the one journal under ``./runs/*/live/<session>/`` (the default place)."""
    if args.journal:
        return args.journal
    found = sorted(Path(".").glob(f"runs/**/live/{args.session}/journal.sqlite")) if args.session else []
    if len(found) == 1:
        return str(found[0])
    raise ValueError("give --journal URL_OR_PATH (the session's journal: RUN_DIR/live/<session>/journal.sqlite by "
                     "default)" + (f"; {len(found)} journals match" if found else ""))


def _live_status(args: argparse.Namespace) -> int:
    from spotgym.live.export import session_status
    from spotgym.live.journal import Journal

    target = _journal_for(args)
    names = [args.session] if args.session else [r["name"] for r in Journal.session_names(target)]
    if not names:
        print(f"no sessions in {target}")
        return 0
    for name in names:
        j = Journal(target, name)
        try:
            st = session_status(j)
        finally:
            j.close()
        eq = "-" if st["equity"] is None else f"{st['equity']:,.2f}"
        print(f"{st['session']}: {st['mode']} {st['symbol']} {st['state']}{' HALTED' if st['halted'] else ''}, "
              f"last bar {st['last_bar']}, equity {eq}, position {st['position']}, {st['decisions']} decisions, "
              f"{st['orders']} orders ({st['unresolved_orders']} unresolved), {st['fills']} fills")
    return 0


def _live_command(args: argparse.Namespace) -> int:
    from spotgym.live.journal import Journal

    target = _journal_for(args)
    j = Journal(target, args.session)
    try:
        j.request(args.live_command.replace("-", "_"))
    finally:
        j.close()
    print(f"{args.live_command}: requested for session {args.session} (the runner applies it before its next decision)")
    return 0


def _live_compare(args: argparse.Namespace) -> int:
    import json

    from spotgym.live.compare import as_dict, compare_sessions

    comparison = compare_sessions(_journal_for(args), args.sessions or None, seed=args.seed)
    print(comparison.text())
    if args.out:
        Path(args.out).write_text(json.dumps(as_dict(comparison), indent=1, default=str))
        print(f"written:       {args.out}")
    return 0


def _retrain(args: argparse.Namespace) -> int:
    from spotgym.live.retrain import bars_from_exchange, retrain

    if (args.data is None) == (args.sim_url is None and args.exchange_mode is None):
        raise ValueError("give --data FILE, or --sim-url URL / --exchange-mode live|testnet to download the bars "
                         "up to now through the exchange")
    data = args.data or bars_from_exchange(args.champion, sim_url=args.sim_url, mode=args.exchange_mode or "live",
                                           data_dir=args.data_dir, progress=not args.quiet)
    if args.data is None:
        print(f"bars:          {data}")
    d = retrain(args.champion, data=data, until=args.until, eval_bars=args.eval_bars, metric=args.metric,
                margin=args.margin, out=args.out, champion_file=args.champion_file, journal=args.journal,
                session=args.session, overrides=args.set, checkpoint=args.checkpoint, progress=not args.quiet)
    verdict = "PROMOTED" if d["promoted"] else "kept the champion"
    print(f"retrain:       {verdict}: candidate {d['metric']} {d['candidate_value']:.3f} vs champion "
          f"{d['champion_value']:.3f} (margin {d['margin']:g}) over {d['eval_span'][0]} -> {d['eval_span'][1]}")
    print(f"candidate:     {d['candidate']} (retrain.json: the evidence)")
    print(f"champion file: {d['champion_file']}")
    return 0


def _live_export(args: argparse.Namespace) -> int:
    from spotgym.live.export import export_session
    from spotgym.live.journal import Journal

    j = Journal(_journal_for(args), args.session)
    try:
        paths = export_session(j, args.out)
    finally:
        j.close()
    print(f"exported:      {', '.join(p.name for p in paths.values())} to {args.out}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from spotgym.workflows.experiment import load_experiment
    from spotgym.workflows.tune import tune

    exp = load_experiment(args.experiment, args.set)
    result = tune(exp, args.trials, storage=args.storage, study_name=args.study, n_jobs=args.n_jobs,
                  study_dir=args.dir, retrain=args.retrain_best, progress=not args.quiet)
    best = result.summary.get("best")
    print(f"study:         {result.study_name} ({result.storage}), {result.summary['finished']} trials finished "
          f"{result.summary['states']}")
    if best:
        print(f"best trial:    #{best['number']} validation {result.summary['metric']} = {best['value']:.4f}")
        for key, value in (best.get("values") or {}).items():
            print(f"               {key} = {value}")
        print(f"best run:      {best['run_dir']}")
    print(f"report:        {result.report}")
    print(f"best.json:     {result.study_dir / 'best.json'}")
    if result.retrained:
        print(f"retrained:     {result.retrained}  (spotgym backtest {result.retrained})")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from spotgym.workflows.evaluate import evaluate
    from spotgym.workflows.experiment import load_experiment

    exp = load_experiment(args.experiment, args.set)
    out = evaluate(exp, folds=args.folds, tune_trials=args.tune_trials, n_jobs=args.n_jobs, storage=args.storage,
                   out=args.out, progress=not args.quiet)
    print(f"report:        {out / 'report.html'}")
    print(f"results:       {out / 'walkforward.json'} (equity.csv beside it, fold runs in fold_*/)")
    return 0


def _pairs(items: list[str], what: str, example: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"{what} {item!r}: expected {example}")
        out[key.strip()] = value.strip()
    return out


def _sim_serve(args: argparse.Namespace) -> int:
    import secrets

    import pandas as pd

    from spotgym.data import read_raw
    from spotgym.sim import Faults, create_app, serve

    if not args.data:
        raise ValueError("--data SYMBOL=FILE: give at least one market, e.g. --data ETH/USDT=BINANCE_ETHUSDT_1h.csv.gz")
    files = _pairs(args.data, "--data", "SYMBOL=FILE, e.g. ETH/USDT=BINANCE_ETHUSDT_1h.csv.gz")
    markets = {}
    for symbol, path in files.items():
        if not Path(path).expanduser().is_file():
            raise FileNotFoundError(f"--data {symbol}={path}: no such file")
        markets[symbol] = read_raw(Path(path).expanduser())
    balances = {}
    for asset, amount in _pairs(args.balance, "--balance", "ASSET=AMOUNT, e.g. USDT=10000").items():
        try:
            balances[asset.upper()] = float(amount)
        except ValueError:
            raise ValueError(f"--balance {asset}={amount}: the amount is not a number") from None
    if (args.api_key is None) != (args.api_secret is None):
        raise ValueError("--api-key and --api-secret go together")
    key = args.api_key or "sim-" + secrets.token_hex(8)
    secret = args.api_secret or secrets.token_hex(24)
    if args.step is not None and args.speed is not None:
        raise ValueError("--speed and --step manual exclude each other")
    speed: float | str = "manual" if args.step == "manual" else (args.speed or "1")
    if speed not in ("manual", "max"):
        try:
            speed = float(speed)
        except ValueError:
            raise ValueError(f"--speed {args.speed}: a positive number or 'max'") from None
    faults = Faults.from_file(args.faults) if args.faults else Faults()
    if args.start is None:
        start = max(int(frame["timestamp"].iloc[0]) for frame in markets.values() if len(frame))
    else:
        try:
            when = pd.Timestamp(args.start)
        except ValueError:
            raise ValueError(f"--start {args.start}: not a date / time") from None
        when = when.tz_localize("UTC") if when.tzinfo is None else when.tz_convert("UTC")
        start = when.value // 1_000_000
    captures = _pairs(args.capture, "--capture", "SYMBOL=FILE, e.g. ETH/USDT=BINANCE_ETHUSDT_l2feed_20240808.jsonl.gz")
    app = create_app(markets, start_ms=int(start), speed=speed, bar_pause_ms=args.bar_pause_ms, faults=faults,
                     fee=args.fee, spread_bps=args.spread_bps, fee_asset=args.fee_asset,
                     ticks_per_bar=args.ticks_per_bar, balances=balances or None, api_key=key,
                     api_secret=secret, seed=args.seed, event_log=args.event_log, captures=captures or None)
    ex = app.state.exchange
    print(f"sim: {', '.join(f'{m.symbol} ({len(m.timestamps):,} bars)' for m in ex.markets.values())}, market clock "
          f"at {pd.Timestamp(ex.now(), unit='ms', tz='UTC').isoformat()}, {app.state.clock_mode}", flush=True)
    print(f"sim: API key {key}  secret {secret}", flush=True)
    serve(app, host=args.host, port=args.port, log_level=args.log_level, ws_compression=args.ws_compression)
    return 0


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an experiment value, e.g. --set agent.timesteps=5000 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spotgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="download, check and resample market data")
    data_sub = data.add_subparsers(dest="data_command", required=True)

    dl = data_sub.add_parser("download", help="download OHLCV bars through ccxt into the local cache (resumable)")
    dl.add_argument("--symbol", required=True, help="market symbol, e.g. ETH/USDT")
    dl.add_argument("--timeframe", required=True, help="bar length, e.g. 1m, 5m, 1h")
    dl.add_argument("--since", default=None, help="first bar (ISO date or ms) for a fresh cache; default 2017-08-17")
    dl.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    dl.add_argument("--data-dir", default=None, help="cache root (default $SPOTGYM_CACHE or ~/.cache/spotgym)")
    dl.add_argument("--sim-url", default=None,
                    help="download from a local replay server (spotgym.sim) at this URL instead of the exchange")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    dl.set_defaults(func=_data_download)

    check = data_sub.add_parser(
        "check",
        help="validate bar files and print rows, span, gaps, zero-volume and suspicious bars",
        description="Check every file given and print a report for each readable one. A file that cannot be "
                    "read or breaks a rule (missing, a directory, empty, header only, a truncated or non-gzip "
                    ".gz, not UTF-8, corrupt parquet, wrong columns, unsorted / duplicate / off-grid timestamps, "
                    "bad prices) gets one line 'error: FILE: PROBLEM' on stderr and the next files are still "
                    "checked. Suspicious bars are formally valid bars with a price more than --spike-ratio times "
                    "(or under 1/--spike-ratio of) the median close of the 3 bars before AND of the 3 bars "
                    "after it: a single-bar spike such as a close 1000x its neighbours. They are listed in the "
                    "report and ALSO make the file fail (one stderr line), because one such bar poisons training "
                    "and backtests. Exit status: 0 when every file is clean, 1 when any file failed or has "
                    "suspicious bars.",
    )
    check.add_argument("paths", nargs="+", help="CSV / CSV.gz / parquet files or cache specs (binance:ETH/USDT:1h)")
    check.add_argument("--timeframe", default=None, help="expected timeframe (default: from the file name or data)")
    check.add_argument("--spike-ratio", type=float, default=None, metavar="R",
                       help="flag a bar whose price is over R times, or under 1/R, the median close of the bars "
                            "on both sides (default 5; the largest real move in the shared ETH/BTC/SOL files is "
                            "2.1x; raise it for thin markets with real wicks)")
    check.set_defaults(func=_data_check)

    rs = data_sub.add_parser("resample", help="aggregate bars to a coarser timeframe (incomplete buckets dropped)")
    rs.add_argument("path", help="source bar file or cache spec")
    rs.add_argument("--timeframe", required=True, help="target timeframe, e.g. 1h")
    rs.add_argument("--out", required=True, help="output .csv, .csv.gz or .parquet")
    rs.set_defaults(func=_data_resample)

    from spotgym.data.record import add_record_command

    add_record_command(data_sub)

    tr = sub.add_parser("train", help="train an agent from an experiment file; writes a run directory")
    tr.add_argument("experiment", help="experiment YAML, e.g. experiments/ethusdt_1h_ppo.yaml")
    add_set_option(tr)
    tr.add_argument("--quiet", action="store_true", help="no progress bars")
    tr.set_defaults(func=_train)

    bt = sub.add_parser("backtest", help="backtest a trained run against the baselines; writes report.html")
    bt.add_argument("run_dir", help="a run directory written by `spotgym train`")
    bt.add_argument("--split", default="test", choices=["val", "test"], help="which split of the run's data")
    bt.add_argument("--data", default=None, help="backtest over every usable bar of another file of the same market")
    bt.add_argument("--out", default=None, help="output directory (default RUN_DIR/backtest/<split>)")
    bt.add_argument("--checkpoint", action="store_true",
                    help="trade the kept checkpoint even when the run selected cash (nothing beat cash on validation): "
                         "to see what was rejected")
    bt.add_argument("--from", dest="start", default=None, metavar="ISO",
                    help="with --data: trade from the bar opening at ISO (the bars before it only warm up)")
    bt.add_argument("--to", dest="end", default=None, metavar="ISO", help="with --data: ... to the bar opening at ISO")
    bt.add_argument("--warmup-bars", type=int, default=1000, metavar="N",
                    help="with --from: bars before it the frame is built over (default 1000, as `spotgym live run`)")
    bt.set_defaults(func=_backtest)

    tu = sub.add_parser("tune", help="Optuna (TPE) hyper-parameter search on the validation split; resumable, "
                                     "many workers / machines share one study through --storage")
    tu.add_argument("experiment", help="experiment YAML (its tune: section declares the search space)")
    tu.add_argument("--trials", type=int, default=None,
                    help="finished trials the study should hold (default tune.n_trials, 20); a re-run resumes")
    tu.add_argument("--storage", default=None,
                    help="SQLAlchemy URL of the study storage, e.g. postgresql://user@host/db "
                         "(default sqlite in the study directory)")
    tu.add_argument("--study", default=None, help="study name (default the experiment name)")
    tu.add_argument("--n-jobs", type=int, default=1, help="worker processes on this machine (default 1)")
    tu.add_argument("--dir", default=None, help="study directory (default <run.root>/tune-<study>)")
    tu.add_argument("--retrain-best", action="store_true",
                    help="train the best trial's configuration again as a normal run directory")
    add_set_option(tu)
    tu.add_argument("--quiet", action="store_true", help="no per-trial log lines")
    tu.set_defaults(func=_tune)

    ev = sub.add_parser("evaluate", help="walk-forward evaluation: train (optionally tune) per fold, backtest on each "
                                         "fold's test block, stitch, deflated Sharpe / PBO, success criteria")
    ev.add_argument("experiment", help="experiment YAML")
    ev.add_argument("--folds", type=int, default=None, help="number of walk-forward folds (default evaluation.folds)")
    ev.add_argument("--tune-trials", type=int, default=0,
                    help="tune inside each fold with this many trials first (default 0: train as configured)")
    ev.add_argument("--n-jobs", type=int, default=1, help="tuning worker processes per fold (default 1)")
    ev.add_argument("--storage", default=None, help="tuning storage URL (default a sqlite file per fold)")
    ev.add_argument("--out", default=None, help="output directory (default <run.root>/<name>-walkforward-<time>)")
    add_set_option(ev)
    ev.add_argument("--quiet", action="store_true", help="no progress bars or per-trial log lines")
    ev.set_defaults(func=_evaluate)
    sim = sub.add_parser("sim", help="the replay exchange: history replayed as a live Binance spot market")
    sim_sub = sim.add_subparsers(dest="sim_command", required=True)
    sv = sim_sub.add_parser(
        "serve", help="serve Binance's REST + websocket protocol over history (ccxt / ccxt.pro trade against it)",
        description="Replays bar files as a live Binance spot market on loopback: unmodified ccxt / ccxt.pro "
                    "trade against it with only the URLs changed (spotgym.venue.make_exchange(mode='sim', "
                    "sim_url=URL)). Prints 'sim: listening on http://HOST:PORT' once it accepts connections.")
    sv.add_argument("--data", action="append", default=[], metavar="SYMBOL=FILE",
                    help="a market and its bar file (CSV / CSV.gz / parquet; repeatable); any interval that is a "
                         "whole multiple of the file's timeframe is served, aggregated")
    sv.add_argument("--capture", action="append", default=[], metavar="SYMBOL=FILE",
                    help="a recorded L2 feed (*_l2feed_*.jsonl.gz) whose book and trades are replayed as recorded "
                         "for the span it covers (repeatable)")
    sv.add_argument("--start", default=None, metavar="ISO",
                    help="where the market clock starts (default: the first bar every market has)")
    sv.add_argument("--speed", default=None, metavar="X",
                    help="the market clock runs X times real time (default 1); 'max': bar by bar as fast as possible, "
                         "pausing --bar-pause-ms at each bar open so a client reacting to a closed bar is filled at "
                         "the next open")
    sv.add_argument("--step", choices=["manual"], default=None,
                    help="manual: the clock moves only through POST /sim/step?bars=N")
    sv.add_argument("--bar-pause-ms", type=int, default=250, metavar="MS",
                    help="with --speed max: wall time to wait at each bar open (default 250)")
    sv.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    sv.add_argument("--balance", action="append", default=[], metavar="ASSET=AMOUNT",
                    help="starting balance of every account (repeatable; default USDT=10000)")
    sv.add_argument("--api-key", default=None, help="the account's API key (default: a random one, printed)")
    sv.add_argument("--api-secret", default=None, help="its secret (default: a random one, printed)")
    sv.add_argument("--faults", default=None, metavar="FILE.yaml",
                    help="fault rules to inject, {rules: [{kind: http_error, status: 503, path: /api/v3/order}, ...]} "
                         "(the schema of POST /sim/faults)")
    sv.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    sv.add_argument("--fee", type=float, default=0.001, help="commission rate per fill (default 0.001)")
    sv.add_argument("--spread-bps", type=float, default=None, metavar="BPS",
                    help="best bid to best ask of the synthetic book, in basis points (default 1)")
    sv.add_argument("--fee-asset", choices=["received", "quote"], default="received",
                    help="who pays the commission: the asset a fill brings in (Binance's default) or always the quote "
                         "asset (as when fees are paid in BNB)")
    sv.add_argument("--ticks-per-bar", type=int, default=4, help="trades per bar of the intrabar path (>= 4)")
    sv.add_argument("--event-log", default=None, metavar="FILE",
                    help="append every event (market streams with subscribers, trades, user data) to FILE")
    sv.add_argument("--ws-compression", action="store_true",
                    help="accept permessage-deflate on websockets, as Binance does (off: on loopback it only costs CPU)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    sv.set_defaults(func=_sim_serve)

    live = sub.add_parser("live", help="trade a run: sim, paper, testnet, demo or live, journaled")
    live_sub = live.add_subparsers(dest="live_command", required=True)
    lr = live_sub.add_parser("run", help="trade a trained run through the same env, bar by bar")
    lr.add_argument("run_dir", nargs="+",
                    help="a run directory written by `spotgym train`; several: A/B sessions on one feed (sim, paper)")
    lr.add_argument("--mode", required=True, choices=["sim", "paper", "testnet", "demo", "live"])
    lr.add_argument("--symbol", default=None, help="market to trade (default: the run's)")
    lr.add_argument("--sim-url", default=None, metavar="URL", help="a running `spotgym sim serve` to trade against")
    lr.add_argument("--data", default=None, metavar="FILE",
                    help="replay FILE in-process (the real replay exchange on loopback) from --from")
    lr.add_argument("--from", dest="start", default=None, metavar="ISO", help="with --data: the first decision's bar")
    lr.add_argument("--bars", type=int, default=None, metavar="N", help="stop after N bars (default: run until stopped)")
    lr.add_argument("--speed", default=None, help="with --data: max (the runner steps the clock bar by bar)")
    lr.add_argument("--journal", default=None, metavar="URL",
                    help="journal: a SQLite path or a SQLAlchemy URL (default RUN_DIR/live/<session>/journal.sqlite)")
    lr.add_argument("--session", default=None, metavar="NAME", help="session name (same name + journal: resume)")
    lr.add_argument("--config", default=None, metavar="live.yaml",
                    help="live settings: warmup_bars, poll_seconds, stale_bars, stale_policy (hold|flatten|stop), "
                         "budget, key, risk, price_source")
    lr.add_argument("--key", action="append", default=None, metavar="NAME",
                    help="keystore key (default: SPOTGYM_<MODE>_API_KEY/SECRET); A/B on testnet / demo: once per run")
    lr.add_argument("--checkpoint", action="store_true", help="trade the kept checkpoint even if the run selected cash")
    lr.add_argument("--retrain-every", default=None, metavar="DURATION",
                    help="e.g. 30d: run `spotgym retrain` in the background every DURATION of market time (promotion "
                         "by margin into champion.json; live config: retrain_eval_bars, retrain_margin)")
    lr.add_argument("--i-understand-this-trades-real-money", action="store_true",
                    help="required by --mode live")
    lr.set_defaults(func=_live_run)
    ls_ = live_sub.add_parser("status", help="sessions of a journal: state, account, orders")
    ls_.add_argument("--journal", default=None, metavar="URL")
    ls_.add_argument("--session", default=None, metavar="NAME")
    ls_.set_defaults(func=_live_status)
    for name, text in (("stop", "stop the session's runner before its next decision"),
                       ("flatten", "go to cash at the next decision and pause entries"),
                       ("pause", "hold cash from the next decision on"), ("resume", "lift a pause / flatten / halt"),
                       ("reset-halt", "lift the risk layer's drawdown halt")):
        lc = live_sub.add_parser(name, help=text)
        lc.add_argument("--session", required=True, metavar="NAME")
        lc.add_argument("--journal", default=None, metavar="URL")
        lc.set_defaults(func=_live_command)
    le = live_sub.add_parser("export", help="a session's decisions, orders, fills and equity as CSV")
    le.add_argument("--session", required=True, metavar="NAME")
    le.add_argument("--journal", default=None, metavar="URL")
    le.add_argument("--out", required=True, metavar="DIR")
    le.set_defaults(func=_live_export)
    lcmp = live_sub.add_parser("compare", help="sessions side by side over their common span, with a paired "
                                                "bootstrap of their per-bar return differences")
    lcmp.add_argument("--journal", default=None, metavar="URL")
    lcmp.add_argument("--sessions", nargs="*", default=None, metavar="NAME", help="default: every session of the journal")
    lcmp.add_argument("--session", default=None, help=argparse.SUPPRESS)
    lcmp.add_argument("--seed", type=int, default=0)
    lcmp.add_argument("--out", default=None, metavar="FILE.json")
    lcmp.set_defaults(func=_live_compare)
    from spotgym.live.logs import add_logs_command

    add_logs_command(live_sub)

    rt = sub.add_parser("retrain", help="retrain the champion's experiment up to the latest unseen span, compare "
                                        "both over it, promote the candidate only if it wins by a margin")
    rt.add_argument("champion", help="the champion run directory, or its champion.json")
    rt.add_argument("--data", default=None, metavar="FILE", help="bars up to now (same market and timeframe)")
    rt.add_argument("--sim-url", default=None, metavar="URL",
                    help="download the bars up to now through this replay exchange instead (up to its market clock)")
    rt.add_argument("--exchange-mode", default=None, choices=["live", "testnet"],
                    help="download the bars up to now from the real exchange instead (public data, no keys)")
    rt.add_argument("--data-dir", default=None, metavar="DIR", help="where downloaded bars are cached")
    rt.add_argument("--until", default=None, metavar="ISO", help="the last bar to use (default: the file's last)")
    rt.add_argument("--eval-bars", type=int, default=720, metavar="N",
                    help="the most recent N bars: unseen by the candidate, both runs backtested there (default 720)")
    rt.add_argument("--metric", default="sharpe", choices=["sharpe", "total_return", "calmar", "sortino"])
    rt.add_argument("--margin", type=float, default=0.0, help="the candidate must beat the champion by this much")
    rt.add_argument("--out", default=None, metavar="DIR", help="the candidate's run directory")
    rt.add_argument("--champion-file", default=None, metavar="FILE",
                    help="where the current champion is named (default: champion.json beside the champion run)")
    rt.add_argument("--journal", default=None, metavar="URL", help="also journal the decision and its evidence")
    rt.add_argument("--session", default=None, metavar="NAME")
    rt.add_argument("--checkpoint", action="store_true", help="compare the kept checkpoints even where cash was selected")
    rt.add_argument("--quiet", action="store_true")
    add_set_option(rt)
    rt.set_defaults(func=_retrain)

    from spotgym.live.keys import add_keys_commands

    add_keys_commands(sub)
    from spotgym.dashboard.commands import add_dashboard_commands

    add_dashboard_commands(sub)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the input's fault (bad config, missing file, unreachable exchange): printed as one
    line naming the problem instead of a traceback (``SPOTGYM_TRACEBACK=1`` shows it)."""
    from spotgym.data.download import DownloadError
    from spotgym.workflows.errors import TuneError

    return ValueError, FileNotFoundError, DownloadError, TuneError


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("SPOTGYM_TRACEBACK"):
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
