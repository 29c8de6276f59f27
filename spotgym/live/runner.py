"""``spotgym live run``: a trained run trading through the same env it was trained and backtested in.

The runner loads the run (model or ensemble, fitted predictors, env config, exchange rules), builds the frame
over ``warmup_bars`` of closed bars fetched from the exchange, wraps ``TradingEnv(live=True)`` in
``ExecutionEnv`` around a ``LiveFeed`` and a broker, and trades bar by bar: decide on the close of bar t, write
the decision and the order intent to the journal, send, book the actual fills, mark the account at each
close. Five modes reach the exchange through the same code path (``spotgym.venue.make_exchange``):

- ``sim``: the replay exchange, in-process on loopback (``--data FILE --from ISO --bars N``: the runner steps
  its clock bar by bar, so each order meets the market paused at the next bar's open) or attached by URL;
- ``paper``: the exchange's public bars, fills by the env's own fill model, no keys;
- ``testnet`` / ``demo`` / ``live``: real ccxt clients with keys (environment or keystore); ``live`` needs
  ``--i-understand-this-trades-real-money``, a key that cannot withdraw and a journal that reconciles.

A restarted runner (same journal and session) settles every order the journal does not know the fate of by
its client order id before anything else, takes its account from the exchange's balances, restores the risk
state (a drawdown halt survives) and goes on from the current bar: nothing lost, nothing sent twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests
import yaml

from spotgym.agents.ensemble import action_target, cash_action
from spotgym.data.timeframes import timeframe_to_ms
from spotgym.envs import FROM_VENUE, TradingEnv
from spotgym.envs import nb as env_nb
from spotgym.live.broker import BrokerHalted, CcxtBroker, OrderUnresolved, PaperBroker, client_order_id, session_prefix
from spotgym.live.feed import LiveFeed
from spotgym.live.journal import Journal
from spotgym.live.logs import configure_json_log, default_log_path, set_log_context
from spotgym.live.metrics import LiveMetrics
from spotgym.live.notify import NotifyHub
from spotgym.predictors.stream import FrameStream
from spotgym.risk import flag_names
from spotgym.venue import make_exchange
from spotgym.workflows.backtest import WARMUP_BARS, run_rules, utc_time
from spotgym.workflows.experiment import Experiment, load_experiment
from spotgym.workflows.train import load_run_actor, selection_summary

__all__ = ["LIVE_MODES", "WARMUP_BARS", "LiveError", "LiveSettings", "SharedMarket", "default_journal",
           "load_live_config", "run_live", "run_live_many"]

log = logging.getLogger("spotgym.live")

LIVE_MODES = ("sim", "paper", "testnet", "demo", "live")
STALE_POLICIES = ("hold", "flatten", "stop")


class LiveError(ValueError):
    """A live run that must not start (bad input, a refused key, an unreconciled journal): one clear line."""


@dataclass
class LiveSettings:
    """Everything ``spotgym live run`` takes (flags override the ``--config`` file's keys)."""

    mode: str
    symbol: str | None = None
    session: str | None = None
    journal: str | None = None
    sim_url: str | None = None
    data: str | None = None
    start: str | None = None  # --from: the first decision's bar (open time)
    bars: int | None = None
    speed: str = "max"
    warmup_bars: int = WARMUP_BARS
    poll_seconds: float = 1.0
    stale_bars: float = 2.0
    stale_policy: str = "hold"
    price_source: str = "ticker"  # size orders at the last traded price ("close": at the decision's close)
    budget: float | None = None  # the most quote currency the session may use (default: the free balance)
    key: str | None = None  # keystore name (default: environment variables)
    exchange: str = "binance"
    risk: dict[str, Any] | None = None  # risk rules replacing the run's (the live config's `risk:`)
    sim_api_key: str | None = None
    sim_api_secret: str | None = None
    confirm_real_money: bool = False
    retrain_every: str | None = None  # e.g. "30d": retrain + promotion (`spotgym retrain`) in the background
    retrain_eval_bars: int = 720
    retrain_margin: float = 0.0
    retrain_wait_s: float = 300.0  # at the session's end, wait this long for a running retrain, then stop it
    sim_model: str = "env"  # the in-process replay's book and fees: "env" (fills as the backtest) or "binance"
    checkpoint: bool = False  # trade the kept checkpoint even where the run's selection chose cash
    drive_clock: bool = True  # step an attached replay exchange whose clock is manual
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.mode not in LIVE_MODES:
            raise LiveError(f"--mode must be one of {', '.join(LIVE_MODES)}, got {self.mode!r}")
        if self.stale_policy not in STALE_POLICIES:
            raise LiveError(f"stale_policy must be one of {STALE_POLICIES}, got {self.stale_policy!r}")
        if self.retrain_every is not None:
            try:
                every = pd.Timedelta(self.retrain_every)
            except (ValueError, TypeError):
                raise LiveError(f"retrain_every: {self.retrain_every!r} is not a duration (e.g. 30d, 720h)") from None
            if every <= pd.Timedelta(0):
                raise LiveError(f"retrain_every must be positive, got {self.retrain_every!r}")
        if self.sim_model not in ("env", "binance"):
            raise LiveError(f"sim_model must be 'env' or 'binance', got {self.sim_model!r}")
        if self.price_source not in ("ticker", "close"):
            raise LiveError(f"price_source must be 'ticker' or 'close', got {self.price_source!r}")
        if self.data and self.sim_url:
            raise LiveError("give --data (an in-process replay exchange) or --sim-url (a running one), not both")
        if self.data and self.mode not in ("sim", "paper"):
            raise LiveError(f"--data replays history: it goes with --mode sim or paper, not {self.mode}")
        if self.sim_url and self.mode not in ("sim", "paper"):
            raise LiveError(f"--sim-url goes with --mode sim or paper, not {self.mode}")
        if self.mode == "sim" and not (self.data or self.sim_url):
            raise LiveError("--mode sim needs --data FILE --from ISO (in-process) or --sim-url URL")
        if self.data and not self.start:
            raise LiveError("--data needs --from ISO: where the replay starts trading")
        if self.bars is not None and self.bars < 1:
            raise LiveError(f"--bars must be >= 1, got {self.bars}")
        if self.warmup_bars < 50:
            raise LiveError(f"warmup_bars must be >= 50, got {self.warmup_bars}")
        if self.budget is not None and not self.budget > 0:
            raise LiveError(f"budget must be > 0, got {self.budget}")


def load_live_config(path: str | Path) -> dict[str, Any]:
    """The ``--config live.yaml`` keys (those of ``LiveSettings`` but mode/journal/session flags), checked."""
    p = Path(path)
    if not p.is_file():
        raise LiveError(f"live config {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise LiveError(f"live config {p}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise LiveError(f"live config {p}: expected a mapping of settings")
    known = {f.name for f in fields(LiveSettings)} - {"extra", "confirm_real_money", "mode"}
    extra_ok = {"notify", "alerts", "metrics", "log_file"}  # read by the operations layer (alerts, metrics, logs)
    unknown = sorted(set(data) - known - extra_ok)
    if unknown:
        raise LiveError(f"live config {p}: unknown key(s) {unknown}; known: {sorted(known)}")
    return data


def default_journal(run_dir: Path, session: str) -> Path:
    return Path(run_dir) / "live" / session / "journal.sqlite"


def obs_hash(obs: Any) -> str:
    h = hashlib.sha1()
    if isinstance(obs, dict):
        for key in sorted(obs):
            h.update(np.ascontiguousarray(obs[key]).tobytes())
    else:
        h.update(np.ascontiguousarray(obs).tobytes())
    return h.hexdigest()[:16]


def _ts(value: str) -> pd.Timestamp:
    return utc_time(value, "--from")


class _Stop:
    """SIGINT / SIGTERM ask the loop to stop between bars (a second SIGINT interrupts at once)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        def handler(signum, _frame):
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested = True
        with contextlib.suppress(ValueError):  # not the main thread: no handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class LiveRunner:
    """One session of one run. ``run()`` trades until ``bars`` bars have passed, the feed ends or a stop."""

    def __init__(self, run_dir: str | Path, settings: LiveSettings, *, out=print,
                 shared: SharedMarket | None = None) -> None:
        settings.check()
        self.shared = shared  # A/B: one replay exchange and one clock for several sessions, an account each
        from spotgym.live.retrain import champion_run

        self.run_dir = champion_run(run_dir)  # a run directory, or the champion file `spotgym retrain` keeps
        if not (self.run_dir / "config.yaml").is_file() or not (self.run_dir / "manifest.json").is_file():
            raise LiveError(f"{self.run_dir} is not a trained spotgym run directory (no config.yaml / manifest.json)")
        self.s, self.out = settings, out
        self.exp: Experiment = load_experiment(self.run_dir / "config.yaml")
        self.manifest = json.loads((self.run_dir / "manifest.json").read_text())
        self.symbol = (settings.symbol or self.exp.data.symbol).upper()
        self.tf_ms = timeframe_to_ms(self.exp.data.timeframe)
        cfg = self.exp.env_config()
        if cfg.filters == FROM_VENUE:
            cfg = cfg.replace(filters=run_rules(self.manifest, None, self.exp))
        if settings.risk is not None:
            cfg = cfg.replace(risk=settings.risk or None)
        self.cfg = cfg.replace(start_row=0, end_row=None, episode_length=None)
        start = f"-{_ts(settings.start):%Y%m%dT%H%M}" if settings.start else ""
        self.session = settings.session or (f"{settings.mode}-{self.symbol.replace('/', '')}{start}-"
                                            f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        target = settings.journal or default_journal(self.run_dir, self.session)
        self.journal = Journal(target, self.session)
        try:
            self.hub = NotifyHub(settings.extra.get("notify"), session=self.session)
        except ValueError as exc:
            raise LiveError(f"live config notify: {exc}") from None
        self.metrics = LiveMetrics(self.session)
        self.journal.listeners.append(self._on_journal_event)
        self.stack = contextlib.ExitStack()
        self.bars_done = 0
        self.decisions = 0
        self._challengers = []
        self.paused = False

    # ------------------------------------------------------------------ events
    def event(self, kind: str, bar_ms: int | None = None, **payload: Any) -> None:
        self.journal.event(kind, bar_ms, **payload)
        if kind in ("feed_stale", "ban", "order_rejected", "order_ambiguous", "overfill", "reconcile_difference",
                    "missed_bars", "blocked", "order_given_up"):
            log.warning("%s %s", kind, payload, extra={"kind": kind, "bar": bar_ms,
                                                      "client_id": payload.get("client_id")})

    def _on_journal_event(self, kind: str, bar_ms: int | None, payload: dict[str, Any]) -> None:
        """Every journal event row: to the notifiers (alerts) and the Prometheus metrics."""
        self.hub.emit(kind, payload, bar_ms)
        self.metrics.on_event(kind, payload)

    # ------------------------------------------------------------------ connection
    def _sim_in_process(self) -> tuple[str, str, str]:
        from spotgym.sim import create_app, serve_in_thread

        first = _ts(self.s.start)
        start_ms = int(first.value // 1_000_000) + self.tf_ms  # the first decision's bar has just closed
        key, secret = "sg-live-" + secrets.token_hex(8), secrets.token_hex(24)
        base, quote = self.symbol.split("/")
        app = create_app({f"{self.symbol}@{self.exp.data.timeframe}": self.s.data}, start_ms=start_ms, speed="manual",
                         rules={self.symbol: self.cfg.filters} if self.cfg.filters else None, fee=self.cfg.fee,
                         balances={quote: self.s.budget or self.cfg.initial_cash, base: 0.0},
                         api_key=key, api_secret=secret, **self._sim_market_model())
        url = self.stack.enter_context(serve_in_thread(app))
        return url, key, secret

    def _sim_market_model(self) -> dict[str, Any]:
        """The in-process replay's book and fees, set so the exchange fills as the env's fill model does when it
        pauses at a bar's open (``sim_model: env``, the default): the synthetic book's touch at the open +/- the
        env's slippage (its spread twice that) and fees out of the quote balance, as with fees paid in BNB. So a
        replay of a span equals its backtest fill for fill. ``sim_model: binance``: 1 bp spread and the fee taken
        from the asset received, as Binance does by default."""
        if self.s.sim_model == "binance":
            return {}
        return {"spread_bps": 2 * self.cfg.slippage_bps if self.cfg.slippage_bps > 0 else None, "fee_asset": "quote"}

    def _connect(self) -> None:
        s = self.s
        self.sim_url, self.drive = s.sim_url, False
        key = secret = None
        if self.shared is not None:
            self.sim_url, key, secret = self.shared.url, *self.shared.credentials(self.session)
        elif s.data:
            self.sim_url, key, secret = self._sim_in_process()
            self.drive = True
        elif s.sim_url:
            from spotgym.sim.state import DEFAULT_API_KEY, DEFAULT_API_SECRET

            key, secret = s.sim_api_key or DEFAULT_API_KEY, s.sim_api_secret or DEFAULT_API_SECRET
            try:
                state = requests.get(s.sim_url.rstrip("/") + "/sim/state", timeout=10).json()
            except (requests.RequestException, ValueError) as exc:
                raise LiveError(f"--sim-url {s.sim_url}: no replay exchange answers there ({type(exc).__name__})") from None
            self.drive = s.drive_clock and state.get("clock") == "manual"
        self.secrets: tuple[str, ...] = ()
        if self.sim_url is not None:
            if s.mode == "paper":
                key = secret = None
            self.client = make_exchange(s.exchange, mode="sim", sim_url=self.sim_url, api_key=key, secret=secret)
        elif s.mode == "paper":
            self.client = make_exchange(s.exchange, mode="live")
        else:
            self.client = self._real_client()
        try:
            self.client.load_markets()
        except Exception as exc:
            raise LiveError(f"cannot load the exchange's markets: {type(exc).__name__}: {str(exc)[:200]}") from None
        if self.symbol not in self.client.markets:
            raise LiveError(f"{self.symbol} is not a market of {s.exchange} ({s.mode})")
        self.secrets = tuple(x for x in (key, secret) if x)
        if self.secrets:  # ccxt logs signed URLs and the key header at DEBUG: never let them out, sim keys included
            from spotgym.live import keys

            keys.install_redaction(self.secrets)

    def _real_client(self):
        from spotgym.live import keys

        s = self.s
        if s.mode == "live" and not s.confirm_real_money:
            raise LiveError("--mode live trades real money: add --i-understand-this-trades-real-money to go on")
        try:
            creds = keys.resolve_credentials(s.mode, exchange=s.exchange, key_name=s.key)
        except keys.KeyStoreError as exc:
            raise LiveError(str(exc)) from None
        keys.install_redaction(creds)
        client = make_exchange(s.exchange, mode=s.mode, api_key=creds.api_key, secret=creds.secret)
        try:
            for warning in keys.vet_key(client, s.mode):
                self.out(f"warning: {warning}")
        except (keys.KeyRefused, keys.KeyStoreError) as exc:
            raise LiveError(str(exc)) from None
        return client

    def _step_clock(self) -> None:
        reply = requests.post(self.sim_url.rstrip("/") + "/sim/step", params={"bars": 1}, timeout=30)
        if reply.status_code != 200:
            raise LiveError(f"the replay exchange did not step its clock: {reply.text[:200]}")

    # ------------------------------------------------------------------ frame
    def _frame_stream(self, bars: pd.DataFrame) -> FrameStream:
        """The run's frame over the warm-up bars, grown bar by bar as the batch pipeline would build it."""
        spec = self.exp.frame_spec()
        return FrameStream(bars, spec, self.run_dir / "predictors" if spec.predictors is not None else None)

    # ------------------------------------------------------------------ the session
    def run(self) -> dict[str, Any]:
        reason = "error"
        self._log = None
        with self.stack, _Stop() as stop:
            try:
                summary = self._run(stop)
                reason = "halted" if summary.get("halted") else "done"
                return summary
            except BaseException as exc:
                reason = f"error: {type(exc).__name__}: {str(exc)[:200]}"
                raise
            finally:
                set_log_context(bar=None, client_id=None)  # the thread's log lines are no longer this session's
                with contextlib.suppress(Exception):
                    self.event("session_stop", None, reason=reason, bars=self.bars_done)
                self.journal.set_session(state="stopped")
                self.journal.close()
                self.hub.close(10)
                self.metrics.close()
                if self._log is not None:
                    logging.getLogger().removeHandler(self._log)
                    self._log.close()

    def _run(self, stop: _Stop) -> dict[str, Any]:
        s = self.s
        self._log = configure_json_log(s.extra.get("log_file") or default_log_path(self.journal.url), self.session)
        self._connect()
        self.hub.add_secrets(self.secrets)
        m = s.extra.get("metrics") or {}
        if m.get("port") is not None:
            host = m.get("host", "127.0.0.1")
            self.out(f"metrics: http://{host}:{self.metrics.serve(int(m['port']), host)}/metrics")
        row = self.journal.open_session(mode=s.mode, symbol=self.symbol, run_dir=str(self.run_dir.resolve()),
                                        info={"sim_url": self.sim_url if not s.data else None, "data": s.data,
                                              "from": s.start, "bars": s.bars, "exchange": s.exchange})
        resumed = row.get("last_bar_ms") is not None
        selection = selection_summary(self.run_dir) if (self.run_dir / "metrics.json").is_file() else None
        actor = load_run_actor(self.run_dir, self.exp, self.cfg, checkpoint=s.checkpoint)
        self.out(f"live: session {self.session} ({s.mode}, {self.symbol}), journal {self.journal.url}")
        if selection:
            self.out(f"selection: {selection}")

        # the broker first: a restart settles what the journal does not know before anything else
        if s.mode == "paper":
            broker: Any = None
        else:
            broker = CcxtBroker(self.client, self.journal, self.symbol, price_source=s.price_source,
                                on_event=lambda kind, **p: self.event(kind, None, **p))
            try:
                broker.resolve_pending()
            except (OrderUnresolved, BrokerHalted) as exc:
                raise LiveError(f"the journal holds an order the exchange has not resolved: {exc}; "
                                "not trading until it does") from None

        # warm-up history and the frame
        def rows_for(bars: pd.DataFrame):
            self.metrics.bar_received()  # the decision-latency clock starts when the closed bar is in
            return stream.update(bars)

        feed = LiveFeed(self.client, self.symbol, self.tf_ms, rows_for,
                        gap_policy=self.exp.data.gap_policy, poll_s=s.poll_seconds, stale_bars=s.stale_bars,
                        before_poll=(self.shared.arrive if self.shared is not None
                                     else self._step_clock if self.drive else None),
                        should_stop=lambda: stop.requested or "stop" in self._peek_commands(),
                        on_event=lambda kind, **p: self.event(kind, None, **p))
        self._with_retries("the exchange's clock", lambda: self.client.fetch_time() if self.sim_url is None
                           else self.client.fetch_ohlcv(self.symbol, self.exp.data.timeframe, None, 1))
        now = feed.now_ms()
        last = (now // self.tf_ms) * self.tf_ms - self.tf_ms  # the last closed bar
        if s.start and not resumed:
            first = int(_ts(s.start).value // 1_000_000)
            if first > last:
                raise LiveError(f"--from {s.start} is after the exchange's last closed bar")
        bars = self._with_retries("warm-up history", lambda: feed.fetch_closed(last - s.warmup_bars * self.tf_ms, last))
        if len(bars) < 50:
            raise LiveError(f"the exchange gave {len(bars)} closed bars of warm-up history; at least 50 are needed")
        if self.exp.data.gap_policy == "fill":
            from spotgym.data import load_bars
            bars = load_bars(bars, "fill", timeframe=self.exp.data.timeframe, symbol=self.symbol)
        stream = self._frame_stream(bars)
        frame = stream.frame
        if list(frame.columns) != self.manifest["features"]["columns"]:
            raise LiveError(f"the live frame's columns differ from the run's: {list(frame.columns)}")
        try:
            env = TradingEnv(frame, self.cfg.replace(start_row=len(frame) - 1), live=True)
        except ValueError as exc:
            raise LiveError(f"{exc}: {len(bars)} bars of warm-up do not define the last bar's observation "
                            "(raise warmup_bars)") from None
        obs, info = env.reset()
        if env.row != len(frame) - 1:
            raise LiveError(f"the last closed bar ({frame.index[-1]}) cannot carry a decision: its observation window "
                            "is not fully defined (raise warmup_bars)")
        last_ms = int(frame.timestamps_ms[-1])
        feed.start(last_ms, float(frame.close[-1]))
        if resumed and last_ms > int(row["last_bar_ms"]) + self.tf_ms:
            self.event("missed_bars", last_ms, since_ms=int(row["last_bar_ms"]),
                       bars=int((last_ms - int(row["last_bar_ms"])) // self.tf_ms) - 1)

        # the account: the exchange's balances (paper: the journal's fills)
        if broker is not None:
            # the session trades its own position (its journaled fills), never coins it did not buy: a new
            # session starts flat; the exchange must hold at least what the journal says
            quote_free, base_total = self._balances(broker)
            own = max(self.journal.position(), 0.0)
            step = self.cfg.filters.step_size if self.cfg.filters else 0.0
            if own > base_total + max(1e-8, 2 * step):
                self.event("reconcile_difference", last_ms, journal_position=own, exchange_position=base_total)
                message = (f"the journal's fills add up to {own:g} {self.symbol.split('/')[0]} but the exchange "
                           f"holds {base_total:g}")
                if s.mode == "live":
                    raise LiveError(f"unreconciled journal: {message}; not trading real money on it "
                                    "(start a new --session once the difference is understood)")
                self.out(f"reconcile: {message}: trading what the exchange holds")
            units = min(own, base_total)
            cash = quote_free
            if s.budget:
                cash = min(quote_free, self.journal.paper_account(s.budget)[0])
            env.sync_account(max(cash, 0.0), units)
            broker.sizer = lambda action, price: env.plan_order(action, price, slippage=True)
        else:
            cash0 = s.budget or self.cfg.initial_cash
            cash, units = self.journal.paper_account(cash0)
            env.sync_account(cash, units)
            broker = PaperBroker(self.journal, lambda a, o, v: env.engine.fill(a, o, v))
        env.restore_risk(row.get("risk_state"))
        self.journal.mark_applied([f["trade_id"] for f in self.journal.unapplied_fills()])
        obs, info = env.observe()
        self.event("session_ready", last_ms, equity=env.equity, cash=env.cash, position=env.position,
                   resumed=resumed)
        self.metrics.on_bar(last_ms, equity=env.equity, position=env.position, cash=env.cash)
        self.metrics.bar_received()

        from spotgym.wrappers import ExecutionEnv

        def on_bar(bar_info: dict[str, Any]) -> None:
            self.bars_done += 1
            bar_ms = int(env.market.timestamps_ms[env.row])
            self.journal.record_equity(bar_ms, equity=env.equity, exposure=float(bar_info["exposure"]),
                                       position=env.position, cash=env.cash, price=float(env.market.close[env.row]))
            set_log_context(bar=bar_ms, client_id=None)
            self.metrics.on_bar(bar_ms, equity=env.equity, position=env.position, cash=env.cash,
                                exposure=float(bar_info["exposure"]), price=float(env.market.close[env.row]))
            self.metrics.on_feed_lag(max(0.0, (feed.now_ms() - bar_ms - self.tf_ms) / 1000))
            self.hub.track_day(bar_ms, equity=env.equity, trades=len(wrapped.fills),
                               fees=float(env.engine.fs[0, env_nb.FEES]))

        wrapped = ExecutionEnv(env, feed, broker, id_prefix=session_prefix(self.session), timeframe_ms=self.tf_ms,
                               on_bar=on_bar)
        wrapped._last = (obs, info)
        self.journal.record_equity(last_ms, equity=env.equity, exposure=float(info["exposure"]),
                                   position=env.position, cash=env.cash, price=float(frame.close[-1]))
        first_equity, first_price = env.equity, float(frame.close[-1])
        started = time.perf_counter()
        truncated = False
        while not truncated and (s.bars is None or self.bars_done < s.bars):
            for cmd in self.journal.take_commands():
                self._command(cmd, env)
            if stop.requested or self.stopping:
                break
            bar_ms = int(env.market.timestamps_ms[env.row])
            if feed.stale and s.stale_policy == "stop":
                self.event("stopped_stale", bar_ms)
                break
            forced = self.paused or (feed.stale and s.stale_policy == "flatten")
            action = cash_action(self.cfg) if forced else actor(obs, info, env)
            order = wrapped.make_order(action)
            seq = 0
            while order.side != "none" and (row_ := self.journal.order(order.client_id)) is not None \
                    and row_["status"] == "not_placed":  # an earlier life's intent that never left: a fresh id
                seq += 1
                order = dataclasses.replace(order, client_id=client_order_id(self.session, bar_ms, seq))
            flags = int(env.engine._gate_flags[0])
            target = action_target(action, self.cfg, float(info["exposure"]))
            latency = self.metrics.order_sent() if order.side != "none" else None
            self.journal.record_decision(bar_ms, obs_hash=obs_hash(obs), action=float(np.asarray(action).reshape(-1)[0]),
                                         target=target, risk="|".join(flag_names(flags)) or ("paused" if forced else ""),
                                         halted=int(env.halted), client_id=order.client_id if order.side != "none"
                                         else None, side=order.side, quantity=order.quantity, equity=env.equity,
                                         position=env.position, cash=env.cash,
                                         latency_ms=None if latency is None else 1000 * latency)
            self.decisions += 1
            set_log_context(bar=bar_ms, client_id=order.client_id if order.side != "none" else None)
            try:
                obs, _, _, truncated, info = wrapped.execute(order)
            except BrokerHalted as exc:
                self.event("halted", bar_ms, reason=str(exc))
                self.out(f"halted: {exc}")
                break
            self.journal.mark_applied([f["trade_id"] for f in self.journal.unapplied_fills()])
            self.journal.set_session(last_bar_ms=int(env.market.timestamps_ms[env.row]), risk_state=env.risk_state())
            self._current_bar_ms = int(env.market.timestamps_ms[env.row])
            if s.retrain_every:
                self._retrain_tick(self._current_bar_ms)
        if s.retrain_every:
            self._retrain_finish()
        elapsed = time.perf_counter() - started
        last_price = float(env.market.close[env.row])
        counts = self.journal.counts()
        summary = {"session": self.session, "mode": s.mode, "symbol": self.symbol, "bars": self.bars_done,
                   "decisions": self.decisions, "orders": counts["orders"], "fills": counts["fills"],
                   "fees": float(env.engine.fs[0, env_nb.FEES]), "equity": env.equity, "start_equity": first_equity,
                   "return": env.equity / first_equity - 1.0 if first_equity else 0.0,
                   "buy_and_hold": last_price / first_price - 1.0, "position": env.position, "cash": env.cash,
                   "halted": env.halted, "journal": self.journal.url, "seconds": elapsed,
                   "requests": getattr(broker, "requests", 0), "order_posts": getattr(broker, "posts", 0)}
        self.out(_summary_text(summary))
        return summary

    stopping = False
    _retrain: tuple[subprocess.Popen, Path, int] | None = None
    _challengers: list[subprocess.Popen]
    _current_bar_ms: int = 0
    _last_retrain_ms: int | None = None
    retrains = 0

    # ------------------------------------------------------------------ scheduled retraining
    def _retrain_tick(self, bar_ms: int) -> None:
        """Start `spotgym retrain` in the background every ``retrain_every`` of market time; collect its verdict."""
        if self._retrain is not None:
            if self._retrain[0].poll() is None:
                return
            self._retrain_collect()
        every = int(pd.Timedelta(self.s.retrain_every).total_seconds() * 1000)
        if self._last_retrain_ms is None:
            self._last_retrain_ms = bar_ms
            return
        if bar_ms - self._last_retrain_ms < every:
            return
        self._last_retrain_ms = bar_ms
        self.retrains += 1
        s = self.s
        champion = self.run_dir.parent / "champion.json"
        out = self.run_dir.parent / f"{self.exp.name}-candidate-{self.session}-{self.retrains}"
        cmd = [sys.executable, "-m", "spotgym.cli", "retrain", str(champion if champion.is_file() else self.run_dir),
               "--eval-bars", str(s.retrain_eval_bars), "--margin", str(s.retrain_margin), "--out", str(out),
               "--champion-file", str(champion), "--journal", self.journal.url, "--session", self.session, "--quiet"]
        if s.checkpoint:
            cmd.append("--checkpoint")
        if s.data:
            cmd += ["--data", s.data, "--until", pd.Timestamp(bar_ms, unit="ms", tz="UTC").isoformat()]
        elif self.sim_url:
            cmd += ["--sim-url", self.sim_url]
        else:
            cmd += ["--exchange-mode", "testnet" if s.mode == "testnet" else "live"]
        log_path = out.with_suffix(".log")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        self._retrain = (proc, out, bar_ms)
        self.event("retrain_started", bar_ms, candidate=str(out), log=str(log_path), pid=proc.pid)

    def _retrain_collect(self) -> None:
        proc, out, bar_ms = self._retrain
        self._retrain = None
        decision_path = out / "retrain.json"
        if proc.returncode != 0 or not decision_path.is_file():
            self.event("retrain_failed", bar_ms, candidate=str(out), returncode=proc.returncode,
                       log=str(out.with_suffix(".log")))
            return
        d = json.loads(decision_path.read_text())
        self.event("retrain_finished", bar_ms, promoted=d["promoted"], candidate=d["candidate"],
                   candidate_value=d["candidate_value"], champion_value=d["champion_value"], metric=d["metric"])
        if d["promoted"]:
            self.out(f"retrain: candidate {out.name} PROMOTED ({d['metric']} {d['candidate_value']:.3f} vs "
                     f"{d['champion_value']:.3f}); champion.json names it: the next start of this session trades it")
        self._start_challenger(Path(d["candidate"]), bar_ms)

    def _start_challenger(self, candidate: Path, bar_ms: int) -> None:
        """The candidate trades in paper beside this session (its own session in the same journal, for
        `spotgym live compare`), for the bars this session has left."""
        s = self.s
        left = None if s.bars is None else s.bars - self.bars_done
        name = f"{self.session}-challenger-{self.retrains}"
        if left is not None and left < 2:
            self.event("challenger_skipped", bar_ms, candidate=str(candidate), reason="the session ends now")
            return
        cmd = [sys.executable, "-m", "spotgym.cli", "live", "run", str(candidate), "--mode", "paper", "--session", name,
               "--journal", self.journal.url]
        if left is not None:
            cmd += ["--bars", str(left)]
        if s.checkpoint:
            cmd.append("--checkpoint")
        if s.data:
            cmd += ["--data", s.data, "--from", pd.Timestamp(self._current_bar_ms, unit="ms", tz="UTC").isoformat()]
        elif self.sim_url:
            config = candidate / f"challenger-{self.session}.yaml"
            config.write_text(yaml.safe_dump({"drive_clock": False, "poll_seconds": s.poll_seconds}))
            cmd += ["--sim-url", self.sim_url, "--config", str(config)]
        log_path = candidate / f"challenger-{self.session}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT)
        self._challengers.append(proc)
        self.event("challenger_started", bar_ms, session=name, candidate=str(candidate), pid=proc.pid, log=str(log_path))

    def _retrain_finish(self) -> None:
        if self._retrain is not None:
            proc = self._retrain[0]
            try:
                proc.wait(timeout=self.s.retrain_wait_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=30)
            self._retrain_collect()
        for proc in self._challengers:  # a challenger trades this session's bars: it ends with them
            try:
                proc.wait(timeout=self.s.retrain_wait_s)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=30)

    def _balances(self, broker: CcxtBroker) -> tuple[float, float]:
        return self._with_retries("the exchange's balances", broker.balances)

    def _with_retries(self, what: str, call: Callable[[], Any], tries: int = 6) -> Any:
        """A start-up read, asked again through transient failures (network, 5xx, 429 after its Retry-After)."""
        import ccxt

        from spotgym.live.broker import retry_after_seconds

        for attempt in range(tries):
            try:
                return call()
            except BrokerHalted:
                raise
            except (ccxt.NetworkError, ccxt.ExchangeNotAvailable) as exc:
                if attempt == tries - 1:
                    raise LiveError(f"{what} unavailable after {tries} tries: {type(exc).__name__}") from None
                wait = retry_after_seconds(self.client, min(2.0 ** attempt, 10.0))
                self.event("startup_retry", None, what=what, error=type(exc).__name__, wait_s=wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _peek_commands(self) -> list[str]:
        return self.journal.pending_commands()

    def _command(self, cmd: str, env: TradingEnv) -> None:
        self.event("command_applied", None, command=cmd)
        if cmd == "stop":
            self.stopping = True
        elif cmd == "flatten":
            self.paused = True
            self.out("flatten: going to cash; entries paused until `spotgym live resume`")
        elif cmd == "pause":
            self.paused = True
        elif cmd in ("resume", "reset_halt"):
            self.paused = False
            if env.halted:
                env.reset_halt()


def _summary_text(s: dict[str, Any]) -> str:
    return (f"live: {s['session']} done — {s['bars']} bars, {s['decisions']} decisions, {s['orders']} orders, "
            f"{s['fills']} fills, fees {s['fees']:,.2f}; equity {s['start_equity']:,.2f} -> {s['equity']:,.2f} "
            f"({100 * s['return']:+.2f} %, buy & hold {100 * s['buy_and_hold']:+.2f} %){' HALTED' if s['halted'] else ''}"
            f" in {s['seconds']:.1f} s\n  journal: {s['journal']}")


def run_live(run_dir: str | Path, settings: LiveSettings, *, out=print) -> dict[str, Any]:
    return LiveRunner(run_dir, settings, out=out).run()


class SharedMarket:
    """Several sessions on one feed (A/B): one replay exchange (in-process, or attached by URL), an account and an
    API key per session, and one market clock that moves to the next bar only when every session still trading has
    finished its decision on the current one (``arrive``; a session that ends ``leave``s)."""

    def __init__(self, url: str, step: Callable[[], None] | None, add_account: Callable[[str, str], None]) -> None:
        self.url, self._step, self._add_account = url, step, add_account
        self._cond = threading.Condition()
        self._active = 0
        self._arrived = 0
        self._generation = 0
        self._keys: dict[str, tuple[str, str]] = {}
        self.error: BaseException | None = None

    def join(self) -> None:
        with self._cond:
            self._active += 1

    def credentials(self, session: str) -> tuple[str, str]:
        with self._cond:
            if session not in self._keys:
                key, secret = f"sg-ab-{secrets.token_hex(6)}", secrets.token_hex(24)
                self._add_account(key, secret)
                self._keys[session] = (key, secret)
            return self._keys[session]

    def arrive(self) -> None:
        if self._step is None:
            return  # a driven clock (speed X): every session polls on its own
        with self._cond:
            generation = self._generation
            self._arrived += 1
            if self._arrived >= self._active:
                self._advance()
            else:
                while generation == self._generation:
                    self._cond.wait(1.0)
        if self.error is not None:
            raise LiveError(f"the shared market clock failed: {self.error}")

    def leave(self) -> None:
        with self._cond:
            self._active -= 1
            if self._active > 0 and self._arrived >= self._active:
                self._advance()

    def _advance(self) -> None:
        try:
            self._step()
        except BaseException as exc:  # every waiting session sees it
            self.error = exc
        self._arrived = 0
        self._generation += 1
        self._cond.notify_all()


def run_live_many(run_dirs: list[str | Path], settings: LiveSettings, *, out=print,
                  keys: list[str] | None = None) -> list[dict[str, Any]]:
    """A/B: every run in ``run_dirs`` trades as its own session (named ``<session>-<i>-<run dir name>``) on one
    shared feed: the replay exchange in-process (``--data``) or attached (``--sim-url``), an account each; paper
    (each session its own paper account on the same public bars); or testnet / demo with one keystore key (one
    exchange account) per session, ``keys[i]`` for ``run_dirs[i]``. Returns each session's summary."""
    if len(run_dirs) < 2:
        raise LiveError("A/B needs at least two run directories")
    if settings.mode == "live":
        raise LiveError("A/B sessions run in --mode sim, paper, testnet or demo, not with real money")
    real = settings.mode in ("testnet", "demo")
    if real and (not keys or len(keys) != len(run_dirs) or len(set(keys)) != len(keys)):
        raise LiveError(f"A/B on {settings.mode} needs one key per session (an exchange account each): give "
                        f"--key NAME once per run, {len(run_dirs)} different names")
    base = settings.session or f"ab-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    names = [f"{base}-{i}-{Path(r).name}" for i, r in enumerate(run_dirs)]
    journal = settings.journal or str(default_journal(Path(run_dirs[0]), base))
    runners = [LiveRunner(r, dataclasses.replace(settings, session=n, journal=journal,
                                                 key=keys[i] if real else settings.key), out=out)
               for i, (r, n) in enumerate(zip(run_dirs, names, strict=True))]
    symbols = {(r.symbol, r.tf_ms) for r in runners}
    if len(symbols) != 1:
        raise LiveError(f"the runs trade different markets or timeframes {sorted(symbols)}: one feed serves one")
    shared = None
    with contextlib.ExitStack() as stack:
        if settings.mode == "sim" or settings.data or settings.sim_url:
            shared = _shared_market(runners[0], settings, stack)
            for r in runners:
                r.shared = shared
                shared.join()
        results: list[Any] = [None] * len(runners)

        def work(i: int) -> None:
            try:
                results[i] = runners[i].run()
            except BaseException as exc:
                results[i] = exc
            finally:
                if shared is not None:
                    shared.leave()

        threads = [threading.Thread(target=work, args=(i,), name=f"spotgym-live-{names[i]}") for i in range(len(runners))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    out(f"A/B: {len(names)} sessions in {journal}; compare: spotgym live compare --journal {journal}")
    return results


def _shared_market(first: LiveRunner, s: LiveSettings, stack: contextlib.ExitStack) -> SharedMarket:
    cash = s.budget or first.cfg.initial_cash
    base, quote = first.symbol.split("/")
    if s.data:
        from spotgym.sim import create_app, serve_in_thread

        start_ms = int(_ts(s.start).value // 1_000_000) + first.tf_ms
        app = create_app({f"{first.symbol}@{first.exp.data.timeframe}": s.data}, start_ms=start_ms, speed="manual",
                         rules={first.symbol: first.cfg.filters} if first.cfg.filters else None, fee=first.cfg.fee,
                         balances={quote: cash, base: 0.0}, **first._sim_market_model())
        url = stack.enter_context(serve_in_thread(app))

        def add(key: str, secret: str) -> None:
            app.state.exchange.add_account(key, secret, {quote: cash, base: 0.0})
        return SharedMarket(url, lambda: _post_step(url), add)
    url = s.sim_url.rstrip("/")
    try:
        state = requests.get(url + "/sim/state", timeout=10).json()
    except (requests.RequestException, ValueError) as exc:
        raise LiveError(f"--sim-url {url}: no replay exchange answers there ({type(exc).__name__})") from None

    def add_remote(key: str, secret: str) -> None:
        reply = requests.post(url + "/sim/accounts", json={"api_key": key, "api_secret": secret,
                                                          "balances": {quote: cash, base: 0.0}}, timeout=10)
        if reply.status_code != 200:
            raise LiveError(f"the replay exchange refused a new account: {reply.text[:200]}")
    return SharedMarket(url, (lambda: _post_step(url)) if state.get("clock") == "manual" else None, add_remote)


def _post_step(url: str) -> None:
    reply = requests.post(url.rstrip("/") + "/sim/step", params={"bars": 1}, timeout=30)
    if reply.status_code != 200:
        raise LiveError(f"the replay exchange did not step its clock: {reply.text[:200]}")
