#!/usr/bin/env python
"""The replay exchange (spotgym.sim) under load: websocket market data, the REST order round trip, and a replay of
one year of minutes, each beside a reference measured in the same run (issue 10).

    python bench/bench_sim.py                 # ~8 min on 2 cores; bench/results/bench_sim_<UTC>.{json,md}
    python bench/bench_sim.py --profile       # + a py-spy profile of the sim server (pip install py-spy)
    python bench/bench_sim.py --quick         # under a minute: 1 round, short windows, 5% of the year
    python bench/bench_sim.py --rounds 3 --window 3 --scale 0.25 --ws-clients ccxt:1,ccxt:10

Every server runs in its own process (``python bench/bench_sim.py --serve sim|ref``: ``create_app`` or the bare
reference app, both served by ``spotgym.sim.app.serve``, i.e. the same uvicorn setup), every group of clients in
another, the market clock is driven from this process: client, server and driver never share a GIL.

1. **Websocket market data.** ETH/USDT 1m (the shipped month), ``--ticks-per-bar`` trades per bar (16), the
   market clock started ``--ws-start-day`` days into the month (15) and stepped with ``POST /sim/step?bars=B``.
   Each client subscribes to ``@trade``, ``@kline_1m``, ``@depth@100ms`` and ``@bookTicker`` (one socket per
   stream, as ccxt.pro opens them). ``ccxt:N``: N ccxt.pro clients (``watch_trades``, ``watch_ohlcv``,
   ``watch_order_book``, ``watch_bids_asks`` in loops) in one process; a message counts when ccxt.pro's
   ``handle_message`` has processed it. ``raw:N``: N plain ``websockets`` clients counting frames. The driver
   keeps the clients at most ~3 steps behind (a closed loop on the received count: sustained, not queued), and
   the rate is counted over ``--window`` seconds after a 0.5 s ramp. Reference: a bare FastAPI/uvicorn
   websocket server pushing pre-serialised frames (the sim's own frames for the same streams, recorded at start;
   only the depth ``U``/``u`` are rewritten to stay in sequence) on ``POST /push?bars=B`` to the same client kind
   driven the same way: the ceiling of the transport and the client. Each client configuration has its own
   sim and reference server (an idle subscriber would otherwise receive another configuration's events).
1b. **Event generation in process** (no transport): the same four streams subscribed on a ``ReplayExchange``,
   events serialised as the hub does, at several depths of history (1 day, 15 and 29 days into the month;
   6 and 12 months into the tiled year). Reference: the same at 1 day of history.
2. **REST order round trip.** ccxt (sync) ``create_order('ETH/USDT', 'market', buy|sell, 0.01)`` against the sim
   and ``fetch_time`` against the sim and against the bare reference app's ``GET /api/v3/time`` (same uvicorn,
   same process setup, same client: the HTTP stack with no work); p50 / p99 per round, interleaved. A sim and a
   reference server of their own; an untimed ``POST /sim/step?bars=1`` before each order (the synthetic book's
   liquidity taken by earlier orders comes back at the next tick only).
3. **Replay of one year of 1m bars**, no clients, in process: the shipped month tiled to 525,600 bars (each copy
   rescaled to continue the previous close), ``ReplayExchange(..., start_ms=first).advance_to(last)`` with and
   without the event log (``ex.record()``). References: a plain Python loop over the same ticks building the trade
   dict (and the same with ``json.dumps``, what a log line costs at least), and numpy vectorised path generation.

Every figure is a ratio to its reference within the same round; the tables give the median and the range over
rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

# module level: FastAPI resolves the (string) annotations of the reference app's routes against these globals
from fastapi import FastAPI, Request, Response, WebSocket, WebSocketDisconnect

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the shared-data locator

SYMBOL = "ETH/USDT"
SID = "ETHUSDT"
MONTH_FILE = "BINANCE_ETHUSDT_1m.csv.gz"
STREAMS = ("ethusdt@trade", "ethusdt@kline_1m", "ethusdt@depth@100ms", "ethusdt@bookTicker")
KINDS = ("trade", "kline", "depthUpdate", "bookTicker", "other")
MINUTE_MS = 60_000
DAY_BARS = 1_440
YEAR_OF_MINUTES = 525_600
REST_QTY = 0.01
PROFILE_RATE = 200  # py-spy samples per second


def log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)


def dumps(payload) -> str:
    return json.dumps(payload, separators=(",", ":"))


# --------------------------------------------------------------------------- data
def load_month():
    from shared_data import shared_file

    from spotgym.data import read_raw

    return read_raw(shared_file(MONTH_FILE))


def tiled_year(rows: int = YEAR_OF_MINUTES):
    """The shipped 1m month tiled to ``rows`` bars, each copy rescaled to continue the previous close (as
    bench/bench_features.py's ``tiled_minutes``), as a raw frame (``timestamp`` in ms + OHLCV)."""
    import pandas as pd

    month = load_month()
    ts = month["timestamp"].to_numpy()
    span = int(ts[-1] - ts[0]) + MINUTE_MS
    parts, scale = [], 1.0
    for k in range(-(-rows // len(month))):
        part = month.copy()
        part[["open", "high", "low", "close"]] *= scale
        scale = part["close"].iloc[-1] / month["open"].iloc[0]
        part["timestamp"] = ts + span * k
        parts.append(part)
    return pd.concat(parts, ignore_index=True).iloc[:rows].reset_index(drop=True)


# --------------------------------------------------------------------------- servers (subprocess side)
def reference_app(month, start_ms: int, ticks_per_bar: int, cycle_bars: int):
    """The bare reference: exchangeInfo and a depth snapshot for ccxt.pro, ``GET /api/v3/time``, and websocket
    streams that push the sim's own pre-serialised frames (recorded here, cycled) on ``POST /push?bars=B``."""
    from spotgym.sim import ReplayExchange

    ex = ReplayExchange({SYMBOL: month}, start_ms=start_ms, ticks_per_bar=ticks_per_bar)
    info = dumps(ex.exchange_info(0))
    book = ex.depth(SID, 1000)
    recorded: list[tuple[str, object]] = []
    ex.listeners.append(lambda kind, key, payload: recorded.append((key, payload)))
    for s in STREAMS:
        ex.watch(s)
    cycle: list[list[tuple[str, str | tuple[str, str]]]] = []
    for _ in range(cycle_bars):
        ex.step_bars(1)
        frames = []
        for key, payload in recorded:
            text = dumps(payload)
            if payload.get("e") == "depthUpdate":  # keep U/u in sequence when the cycle wraps
                i, j = text.index('"U":'), text.index(',"b":')
                frames.append((key, (text[:i], text[j:])))
            else:
                frames.append((key, text))
        cycle.append(frames)
        recorded.clear()
    state = {"pos": 0, "u": 1_000_000}
    subs: dict[str, list[asyncio.Queue]] = collections.defaultdict(list)
    app = FastAPI(title="bare reference")

    @app.get("/api/v3/time")
    async def server_time() -> dict[str, int]:
        return {"serverTime": time.time_ns() // 1_000_000}

    @app.get("/api/v3/exchangeInfo")
    async def exchange_info() -> Response:
        return Response(info, media_type="application/json")

    @app.get("/api/v3/depth")
    async def depth(request: Request) -> dict:
        return {"lastUpdateId": state["u"], "bids": book["bids"], "asks": book["asks"]}

    @app.post("/push")
    async def push(bars: int = 1) -> dict:
        for _ in range(bars):
            for key, frame in cycle[state["pos"] % len(cycle)]:
                queues = subs.get(key)
                if not queues:
                    continue
                if isinstance(frame, tuple):
                    state["u"] += 1
                    frame = f'{frame[0]}"U":{state["u"]},"u":{state["u"]}{frame[1]}'
                for q in queues:
                    q.put_nowait(frame)
            state["pos"] += 1
        await asyncio.sleep(0)
        return {"pos": state["pos"]}

    async def stream(ws: WebSocket) -> None:
        await ws.accept()
        queue: asyncio.Queue = asyncio.Queue()
        mine: list[str] = []

        async def sender() -> None:
            while True:
                await ws.send_text(await queue.get())

        task = asyncio.get_running_loop().create_task(sender())
        try:
            while True:
                message = json.loads(await ws.receive_text())
                if message.get("method") == "SUBSCRIBE":
                    for s in message.get("params") or []:
                        subs[s].append(queue)
                        mine.append(s)
                queue.put_nowait(dumps({"result": None, "id": message.get("id")}))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            task.cancel()
            for s in mine:
                subs[s].remove(queue)

    app.add_api_websocket_route("/stream/ws", stream)
    app.add_api_websocket_route("/stream/ws/{n}", stream)
    return app


def serve_main(args) -> int:
    from spotgym.sim import create_app
    from spotgym.sim.app import serve

    month = load_month()
    start_ms = int(month["timestamp"].iloc[args.start_index])
    if args.serve == "sim":
        app = create_app({SYMBOL: month}, start_ms=start_ms, speed="manual", ticks_per_bar=args.ticks_per_bar,
                         balances={"USDT": 1e9, "ETH": 1e6}, weight_limit=10**12)
    else:
        app = reference_app(month, start_ms, args.ticks_per_bar, args.cycle_bars)
    serve(app, host="127.0.0.1", port=0, log_level="warning")
    return 0


class Server:
    """A server subprocess; ``url`` once it prints 'sim: listening on URL'."""

    def __init__(self, kind: str, log_dir: Path, name: str, args) -> None:
        self.kind, self.name = kind, name
        self.log_path = log_dir / f"server_{name}.log"
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--start-index", str(args.start_index),
               "--ticks-per-bar", str(args.ticks_per_bar), "--cycle-bars", str(args.cycle_bars)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO)
        self.url: str | None = None

    def wait(self, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while self.url is None:
            for line in self.log_path.read_text().splitlines():
                if line.startswith("sim: listening on "):
                    self.url = line.split()[-1]
            if self.url is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server {self.name} did not start: {self.log_path.read_text()[-2000:]}")
                time.sleep(0.05)
        return self.url

    def step_path(self) -> str:
        return "/sim/step" if self.kind == "sim" else "/push"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------- clients (subprocess side)
def client_main(url: str, kind: str, n: int, counter, by_kind, errors, ready, stop) -> None:
    asyncio.run(_clients(url, kind, n, counter, by_kind, errors, ready, stop))


async def _clients(url, kind, n, counter, by_kind, errors, ready, stop) -> None:
    index = {k: i for i, k in enumerate(KINDS)}

    def note(message) -> None:
        counter.value += 1
        e = message.get("e", "bookTicker" if "u" in message and "b" in message else "other") \
            if isinstance(message, dict) else "other"
        by_kind[index.get(e, 4)] += 1

    tasks, closers = [], []
    if kind == "ccxt":
        from spotgym.venue import make_exchange

        async def forever(fn, *a) -> None:
            while True:
                try:
                    await fn(*a)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    errors.value += 1
                    if errors.value <= 3:
                        print(f"client error ({url}, {getattr(fn, '__name__', fn)}): {exc!r}"[:500], file=sys.stderr)
                    await asyncio.sleep(0.01)

        for _ in range(n):
            ex = make_exchange(mode="sim", sim_url=url, pro=True, sync=False)
            original = ex.handle_message

            def counted(client, message, _orig=original) -> None:
                if not (isinstance(message, dict) and "result" in message and "id" in message):
                    note(message)
                return _orig(client, message)

            ex.handle_message = counted  # ccxt.pro binds it when a socket is opened
            await ex.load_markets()
            closers.append(ex.close)
            tasks += [asyncio.create_task(forever(ex.watch_trades, SYMBOL)),
                      asyncio.create_task(forever(ex.watch_ohlcv, SYMBOL, "1m")),
                      asyncio.create_task(forever(ex.watch_order_book, SYMBOL)),
                      asyncio.create_task(forever(ex.watch_bids_asks, [SYMBOL]))]
    else:
        import websockets

        ws_base = url.replace("http", "ws", 1) + "/stream/ws"

        async def raw(i: int, stream: str) -> None:
            while True:  # reconnect when the server closes (the sim does after 24 h of market time)
                try:
                    async with websockets.connect(f"{ws_base}/{i}", max_queue=None, ping_interval=None) as ws:
                        await ws.send(dumps({"method": "SUBSCRIBE", "params": [stream], "id": 1}))
                        async for frame in ws:
                            message = json.loads(frame) if frame[2] != "r" else None  # '{"result":..' = the ack
                            if message is not None:
                                note(message)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - counted, reported
                    pass
                errors.value += 1
                await asyncio.sleep(0.01)

        for c in range(n):
            for i, stream in enumerate(STREAMS):
                tasks.append(asyncio.create_task(raw(c * len(STREAMS) + i, stream)))
    await asyncio.sleep(1.0)  # subscriptions acknowledged, depth snapshots fetched
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for close in closers:
        try:
            await close()
        except Exception:  # noqa: BLE001
            pass


class Clients:
    """A client process (``ccxt`` or ``raw``, ``n`` clients) against one server, with shared counters."""

    def __init__(self, ctx, server: Server, kind: str, n: int) -> None:
        self.server, self.kind, self.n = server, kind, n
        self.counter = ctx.RawValue("q", 0)
        self.by_kind = ctx.RawArray("q", len(KINDS))
        self.errors = ctx.RawValue("q", 0)
        self.ready, self.stop_event = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(target=client_main, args=(server.url, kind, n, self.counter, self.by_kind,
                                                          self.errors, self.ready, self.stop_event), daemon=True)
        self.proc.start()

    def wait_ready(self, timeout: float = 120.0) -> None:
        if not self.ready.wait(timeout):
            raise RuntimeError(f"{self.kind}:{self.n} clients on {self.server.name} not ready in {timeout} s")

    def kinds(self) -> dict[str, int]:
        return {k: int(self.by_kind[i]) for i, k in enumerate(KINDS)}

    def stop(self) -> None:
        self.stop_event.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --------------------------------------------------------------------------- figure 1: websocket market data
def drain(counter, quiet: float = 0.3, limit: float = 30.0) -> int:
    """Wait until the received count stops moving; returns it."""
    last, since, deadline = counter.value, time.monotonic(), time.monotonic() + limit
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = counter.value
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            break
    return last


class Pair:
    """One client configuration against its sim server and its reference server."""

    def __init__(self, spec: str, sims: Server, ref: Server, ctx, lead_steps: int = 3) -> None:
        self.lead_steps = lead_steps
        kind, _, n = spec.partition(":")
        self.spec, self.kind, self.n = spec, kind, int(n)
        self.servers = {"sim": sims, "ref": ref}
        self.clients = {name: Clients(ctx, srv, self.kind, self.n) for name, srv in self.servers.items()}
        self.per_bar: dict[str, float] = {}
        self.step_bars: dict[str, int] = {}

    def calibrate(self, session, name: str, bars: int = 12) -> None:
        """Messages per bar over a few single-bar steps (sets the step size: ~500 messages a step)."""
        c, srv = self.clients[name], self.servers[name]
        base = drain(c.counter)
        for _ in range(bars):
            session.post(srv.url + srv.step_path(), params={"bars": 1}).raise_for_status()
            time.sleep(0.01)
        got = drain(c.counter) - base
        if got <= 0:
            raise RuntimeError(f"{self.spec} on {srv.name}: no messages after {bars} bars (errors {c.errors.value})")
        self.per_bar[name] = got / bars
        self.step_bars[name] = max(1, round(500 / self.per_bar[name]))

    def measure(self, session, name: str, window: float, ramp: float = 0.5, profile: Path | None = None) -> dict:
        c, srv = self.clients[name], self.servers[name]
        per_bar, step = self.per_bar[name], self.step_bars[name]
        max_lead = self.lead_steps * step * per_bar
        url = srv.url + srv.step_path()
        base = drain(c.counter)
        errors0 = c.errors.value
        stepped = steps = 0
        t_start = time.perf_counter()
        t0 = t_start + ramp
        t1 = t0 + window
        c0 = c1 = None
        step_s = 0.0
        spy = None
        lost = rebases = 0
        last_count, last_move = base, t_start
        while True:
            now = time.perf_counter()
            if c0 is None and now >= t0:
                c0, t0 = c.counter.value, now
                if profile is not None:  # sample the server process (not this one) over the window
                    spy = subprocess.Popen(["py-spy", "record", "--pid", str(srv.proc.pid), "--duration",
                                            str(max(1, int(window))), "--rate", str(PROFILE_RATE), "--nonblocking",
                                            "--format", "raw", "-o", str(profile)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if now >= t1:
                c1, t1 = c.counter.value, now
                break
            count = c.counter.value
            lead = stepped * per_bar - lost - (count - base)
            if lead > max_lead:
                if count != last_count:
                    last_count, last_move = count, now
                elif now - last_move > 0.25:  # frames lost (a connection closed and reconnected): move on
                    lost += lead
                    rebases += 1
                time.sleep(0.001)
                continue
            ts = time.perf_counter()
            session.post(url, params={"bars": step}).raise_for_status()
            step_s += time.perf_counter() - ts
            stepped += step
            steps += 1
        end = drain(c.counter)
        if spy is not None:
            spy.wait(60)
        rate = (c1 - c0) / (t1 - t0)
        return {"msgs_per_s": rate, "per_client_msgs_per_s": rate / self.n, "window_s": t1 - t0,
                "received": c1 - c0, "bars_stepped": stepped, "steps": steps,
                "step_post_s": step_s, "backlog_after_window": end - c1,
                "expected": round(stepped * per_bar), "delivered": end - base,
                "errors": c.errors.value - errors0, "lost_frames_rebased": round(lost), "rebases": rebases}

    def stop(self) -> None:
        for c in self.clients.values():
            c.stop()


def ws_section(args, log_dir: Path) -> dict:
    import multiprocessing as mp

    import requests

    ctx = mp.get_context("spawn")
    specs = [s.strip() for s in args.ws_clients.split(",") if s.strip()]
    servers: list[Server] = []
    pairs: dict[str, Pair] = {}
    try:
        for spec in specs:
            safe = spec.replace(":", "_")
            servers += [Server("sim", log_dir, f"sim_{safe}", args), Server("ref", log_dir, f"ref_{safe}", args)]
        for s in servers:
            s.wait()
        log(f"{len(servers)} servers up ({', '.join(f'{s.name} {s.url}' for s in servers)})")
        for i, spec in enumerate(specs):
            pairs[spec] = Pair(spec, servers[2 * i], servers[2 * i + 1], ctx, args.lead_steps)
        for p in pairs.values():
            for c in p.clients.values():
                c.wait_ready()
        log("clients connected and subscribed")
        session = requests.Session()
        for p in pairs.values():
            for name in ("sim", "ref"):
                p.calibrate(session, name)
                p.measure(session, name, min(1.0, args.window), ramp=0.2)  # untimed warm-up
            log(f"{p.spec}: {p.per_bar['sim']:.1f} msgs/bar (sim), {p.per_bar['ref']:.1f} (ref); steps of "
                f"{p.step_bars['sim']} / {p.step_bars['ref']} bars; kinds {p.clients['sim'].kinds()}")
        rng = random.Random(args.seed)
        runs: dict[str, dict[str, list]] = {spec: {"sim": [], "ref": []} for spec in specs}
        for rnd in range(args.rounds):
            jobs = [(spec, name) for spec in specs for name in ("sim", "ref")]
            rng.shuffle(jobs)
            for spec, name in jobs:
                runs[spec][name].append(pairs[spec].measure(session, name, args.window))
            log(f"ws round {rnd + 1}: " + ", ".join(
                f"{spec} sim {runs[spec]['sim'][-1]['msgs_per_s']:,.0f} / ref {runs[spec]['ref'][-1]['msgs_per_s']:,.0f}"
                for spec in specs))
        profiles = {}
        if args.profile:
            if shutil.which("py-spy") is None:
                log("--profile: py-spy is not on PATH (pip install py-spy); no profile")
            else:
                for spec, p in list(pairs.items())[:1]:  # an extra, untimed window, the first configuration
                    path = log_dir / f"pyspy_sim_{spec.replace(':', '_')}.txt"
                    r = p.measure(session, "sim", args.window, profile=path)
                    profiles[spec] = summarize_profile(path, args.window, r["msgs_per_s"])
                    log(f"profile {spec}: server busy {profiles[spec]['busy']:.0%} of the window, top "
                        + ", ".join(f"{f['function']} {f['share']:.0%}" for f in profiles[spec]['inclusive'][:4]))
        meta = {spec: {"per_bar": p.per_bar, "step_bars": p.step_bars,
                       "kinds": {n: c.kinds() for n, c in p.clients.items()},
                       "errors": {n: c.errors.value for n, c in p.clients.items()}} for spec, p in pairs.items()}
        return {"runs": runs, "meta": meta, "profiles": profiles}
    finally:
        for p in pairs.values():
            p.stop()
        for s in servers:
            s.stop()


def summarize_profile(path: Path, window: float, rate: float, top: int = 10) -> dict:
    """py-spy's collapsed stacks of the sim server -> busy share, self and inclusive time by function."""
    own, incl, total = collections.Counter(), collections.Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        own[_short(frames[-1])] += n
        for name in {_short(f) for f in frames}:
            incl[name] += n
    def share(counter, keep=lambda name: True):
        return [{"function": k, "share": v / total} for k, v in counter.most_common() if keep(k)][:top]

    def ours(name: str) -> bool:  # the sim's own frames and the websocket / json work under them
        return any(t in name for t in ("sim/", "websockets/", "permessage_deflate", "json/")) and \
            not name.startswith(("serve (", "serve_main"))

    return {"samples": total, "busy": total / (PROFILE_RATE * max(1, int(window))), "msgs_per_s": rate,
            "self": share(own), "inclusive": share(incl, ours)}


def _short(frame: str) -> str:
    """'kline_rows (spotgym/sim/market.py:159)' -> 'kline_rows (sim/market.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    parts = path.split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if path else name


def summarize_ws(ws: dict) -> list[dict]:
    rows = []
    for spec, r in ws["runs"].items():
        sim = [x["msgs_per_s"] for x in r["sim"]]
        ref = [x["msgs_per_s"] for x in r["ref"]]
        ratio = [a / b for a, b in zip(sim, ref)]
        n = int(spec.split(":")[1])
        rows.append({"clients": spec, "n": n, "sim": stats(sim), "ref": stats(ref), "ratio": stats(ratio),
                     "sim_per_client": stats([x / n for x in sim]),
                     "errors_sim": sum(x["errors"] for x in r["sim"]),
                     "errors_ref": sum(x["errors"] for x in r["ref"])})
    return rows


# --------------------------------------------------------------------------- figure 2: REST round trip
def rest_section(args, log_dir: Path) -> dict:
    """A sim and a reference server of their own (no websocket clients on them), one sync ccxt client each."""
    import requests

    from spotgym.venue import make_exchange

    sim, ref = Server("sim", log_dir, "sim_rest", args), Server("ref", log_dir, "ref_rest", args)
    try:
        sim.wait()
        ref.wait()
        return _rest_rounds(args, sim, ref, requests.Session(), make_exchange)
    finally:
        sim.stop()
        ref.stop()


def _rest_rounds(args, sim: Server, ref: Server, session, make_exchange) -> dict:
    ex_sim = make_exchange(mode="sim", sim_url=sim.url, api_key="spotgym-sim-key", secret="spotgym-sim-secret")
    ex_ref = make_exchange(mode="sim", sim_url=ref.url)
    ex_sim.load_markets()
    side = ["buy"]

    def before_order() -> None:  # untimed: one bar on, so the book is whole again (taken liquidity comes back
        session.post(sim.url + "/sim/step", params={"bars": 1}).raise_for_status()  # at the next tick only)

    def order() -> None:
        o = ex_sim.create_order(SYMBOL, "market", side[0], REST_QTY)
        assert o["status"] == "closed", o
        side[0] = "sell" if side[0] == "buy" else "buy"

    jobs = {"create_order market (sim)": (order, before_order), "fetch_time (sim)": (ex_sim.fetch_time, None),
            "fetch_time (bare FastAPI)": (ex_ref.fetch_time, None)}
    for fn, before in jobs.values():  # warm-up: connections, first-call paths
        for _ in range(20):
            if before is not None:
                before()
            fn()
    rng = random.Random(args.seed)
    runs: dict[str, list] = {k: [] for k in jobs}
    for rnd in range(args.rounds):
        order_ = list(jobs)
        rng.shuffle(order_)
        for name in order_:
            (fn, before), lat = jobs[name], []
            for _ in range(args.rest_calls):
                if before is not None:
                    before()
                t = time.perf_counter()
                fn()
                lat.append(time.perf_counter() - t)
            lat.sort()
            runs[name].append({"p50_ms": pct(lat, 50) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
                               "mean_ms": statistics.fmean(lat) * 1e3, "calls": len(lat)})
        log(f"rest round {rnd + 1}: " + ", ".join(f"{k} p50 {runs[k][-1]['p50_ms']:.2f} ms" for k in jobs))
    return {"runs": runs}


def pct(sorted_values: list[float], q: float) -> float:
    k = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize_rest(rest: dict) -> tuple[list, list]:
    ref_name = "fetch_time (bare FastAPI)"
    rows, ratios = [], []
    ref = rest["runs"][ref_name]
    for name, r in rest["runs"].items():
        rows.append({"call": name, "p50": stats([x["p50_ms"] for x in r]), "p99": stats([x["p99_ms"] for x in r]),
                     "calls": r[0]["calls"]})
        if name != ref_name:
            for q in ("p50", "p99"):
                ratios.append({"num": name, "den": ref_name, "q": q,
                               "ratio": stats([a[f"{q}_ms"] / b[f"{q}_ms"] for a, b in zip(r, ref)])})
    return rows, ratios


# --------------------------------------------------------------------------- figure 1b: generation in process
def generation_section(args, month, year) -> dict:
    from spotgym.sim import ReplayExchange

    positions = [("month, 1 day in", month, DAY_BARS), ("month, 15 days in", month, 15 * DAY_BARS),
                 ("month, 29 days in", month, 29 * DAY_BARS)]
    if year is not None and len(year) > 200 * DAY_BARS:
        positions += [("year, 6 months in", year, len(year) // 2), ("year, 12 months in", year, len(year) - 2 * DAY_BARS)]
    runs: dict[str, list] = {p[0]: [] for p in positions}

    def one(frame, at: int) -> tuple[dict, list[str]]:
        ex = ReplayExchange({SYMBOL: frame}, start_ms=int(frame["timestamp"].iloc[at]),
                            ticks_per_bar=args.ticks_per_bar)
        frames: list[str] = []
        ex.listeners.append(lambda kind, key, payload: frames.append(dumps(payload)))  # as the hub, once per event
        for s in STREAMS:
            ex.watch(s)
        ticks0 = ex.ticks_replayed
        t = time.perf_counter()
        ex.step_bars(args.gen_bars)
        el = time.perf_counter() - t
        ticks = ex.ticks_replayed - ticks0
        return {"events": len(frames), "ticks": ticks, "s": el, "events_per_s": len(frames) / el,
                "us_per_tick": el / ticks * 1e6, "history_bars": at}, frames

    for rnd in range(args.gen_rounds):
        for label, frame, at in positions:
            runs[label].append(one(frame, at)[0])
        log(f"generation round {rnd + 1}: " + ", ".join(f"{k} {v[-1]['events_per_s']:,.0f} ev/s"
                                                     for k, v in runs.items()))
    return {"runs": runs, "bars": args.gen_bars}


def summarize_generation(gen: dict) -> list[dict]:
    ref = gen["runs"]["month, 1 day in"]
    rows = []
    for label, r in gen["runs"].items():
        rows.append({"position": label, "history_bars": r[0]["history_bars"],
                     "events_per_s": stats([x["events_per_s"] for x in r]),
                     "us_per_tick": stats([x["us_per_tick"] for x in r]),
                     "ratio": stats([x["events_per_s"] / y["events_per_s"] for x, y in zip(r, ref)])})
    return rows


# --------------------------------------------------------------------------- figure 3: replay of a year
def replay_section(args, year) -> dict:
    import numpy as np

    from spotgym.sim import ReplayExchange
    from spotgym.sim.market import fmt

    first = int(year["timestamp"].iloc[0])
    runs: dict[str, list] = {k: [] for k in ("build", "replay", "replay + event log", "ref: trade dict loop",
                                             "ref: trade dict + json.dumps loop", "ref: numpy path generation")}
    stream = "ethusdt@trade"
    for rnd in range(args.replay_rounds):
        jobs = ["replay", "replay + event log", "ref: trade dict loop", "ref: trade dict + json.dumps loop",
                "ref: numpy path generation"]
        random.Random(args.seed + rnd).shuffle(jobs)
        for job in jobs:
            t = time.perf_counter()
            ex = ReplayExchange({SYMBOL: year}, start_ms=first)
            build_s = time.perf_counter() - t
            market = ex.markets[SID]
            tpb = market.ticks_per_bar
            end = market.end_ms - 1
            total_ticks = len(market.timestamps) * market.ticks_per_bar
            if job == "replay" or job == "replay + event log":
                runs["build"].append({"s": build_s})
                events = ex.record() if job == "replay + event log" else None
                ticks0 = ex.ticks_replayed
                t = time.perf_counter()
                ex.advance_to(end)
                el = time.perf_counter() - t
                ticks = ex.ticks_replayed - ticks0
                n_events = len(events) if events is not None else 0
                runs[job].append({"s": el, "ticks": ticks, "ticks_per_s": ticks / el, "events": n_events,
                                  "events_per_s": n_events / el})
                del events, ex
            elif job == "ref: numpy path generation":
                t = time.perf_counter()
                market._tick_paths()
                el = time.perf_counter() - t
                runs[job].append({"s": el, "ticks": total_ticks, "ticks_per_s": total_ticks / el})
            else:
                step = market.interval_ms // market.ticks_per_bar
                times = (market.timestamps[:, None] + np.arange(market.ticks_per_bar) * step).ravel().tolist()
                prices = market._paths.ravel().tolist()
                qtys = market._qtys.ravel().tolist()
                ser = job.endswith("json.dumps loop")
                del ex, market
                t = time.perf_counter()
                prev = prices[0]
                for i, (now, p, q) in enumerate(zip(times, prices, qtys)):
                    event = {"e": "trade", "E": now, "s": SID, "t": i, "p": fmt(p), "q": fmt(q), "T": now,
                             "m": p < prev, "M": True}
                    if ser:
                        json.dumps(["market", stream, event], separators=(",", ":"))
                    prev = p
                el = time.perf_counter() - t
                runs[job].append({"s": el, "ticks": len(times), "ticks_per_s": len(times) / el,
                                  "events_per_s": len(times) / el})
        log(f"replay round {rnd + 1}: " + ", ".join(f"{k} {v[-1]['s']:.2f}s" for k, v in runs.items() if v))
    return {"runs": runs, "bars": len(year), "ticks_per_bar": tpb}


def summarize_replay(rep: dict) -> tuple[list, list]:
    r = rep["runs"]
    rows = []
    for name in ("replay", "replay + event log", "ref: trade dict loop", "ref: trade dict + json.dumps loop",
                 "ref: numpy path generation"):
        x = r[name]
        rows.append({"what": name, "s": stats([v["s"] for v in x]), "ticks": x[0]["ticks"],
                     "ticks_per_s": stats([v["ticks_per_s"] for v in x]),
                     "events": x[0].get("events", x[0]["ticks"] if name.startswith("ref: trade") else None),
                     "events_per_s": stats([v["events_per_s"] for v in x]) if "events_per_s" in x[0] else None})
    ratios = []
    for num, den, what in (
            ("replay", "ref: trade dict loop", "replay without log: time / the trade-dict loop's (x slower)"),
            ("replay + event log", "ref: trade dict + json.dumps loop",
             "replay with log: time / the trade-dict + json.dumps loop's"),
            ("replay + event log", "replay", "what the event log costs (time with / without)"),
            ("replay", "ref: numpy path generation", "replay time / vectorised path generation time")):
        ratios.append({"num": num, "den": den, "what": what,
                       "ratio": stats([a["s"] / b["s"] for a, b in zip(r[num], r[den])])})
    return rows, ratios


# --------------------------------------------------------------------------- report
def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fr(x: float) -> str:
    return f"{x / 1e6:,.2f} M" if x >= 1e6 else f"{x / 1e3:,.1f} k" if x >= 1e3 else f"{x:,.0f}"


def fs(seconds: float) -> str:
    return f"{seconds:.2f}" if seconds >= 0.1 else f"{seconds:.4f}"


def machine() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for mod in ("ccxt", "uvicorn", "fastapi", "websockets", "aiohttp", "numpy", "uvloop", "httptools"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            versions[mod] = None
    git = {}
    for key, cmd in (("head", ["git", "rev-parse", "--short", "HEAD"]),
                     ("sim_changes", ["git", "status", "--short", "--", "spotgym/sim"])):
        try:
            git[key] = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception:  # noqa: BLE001
            git[key] = None
    return {"cpu": cpu, "nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "versions": versions, "git": git}


def render(report: dict) -> str:
    a = report["args"]
    m = report["machine"]
    L = [f"Run {report['started_utc']} on {m['cpu']} ({m['nproc']} cores), Python {m['python']}, "
         f"ccxt {m['versions']['ccxt']}, uvicorn {m['versions']['uvicorn']} (uvloop "
         f"{'yes' if m['versions']['uvloop'] else 'no'}, httptools {'yes' if m['versions']['httptools'] else 'no'}), "
         f"websockets {m['versions']['websockets']}; spotgym at {m['git']['head']}"
         + (f" with uncommitted changes in spotgym/sim ({m['git']['sim_changes'].replace(chr(10), ', ')})"
            if m["git"].get("sim_changes") else "") + f"; wall {report['wall_s']:.0f} s.", ""]
    if report.get("ws"):
        L += [f"**1. Websocket market data** — ETH/USDT 1m, {a['ticks_per_bar']} ticks per bar, clock from day "
              f"{a['start_index'] / DAY_BARS:g} of the month, streams trade + kline_1m + depth@100ms + bookTicker; "
              f"{a['rounds']} rounds of {a['window']:g} s windows, median (min – max) messages/s received by all "
              "clients together.", "",
              "| clients | sim msgs/s | bare push server msgs/s (reference) | sim / reference | sim per client |",
              "|---|---:|---:|---:|---:|"]
        for r in report["ws_summary"]:
            L.append(f"| {r['clients']} | **{fr(r['sim']['median'])}** ({fr(r['sim']['min'])} – {fr(r['sim']['max'])}) "
                     f"| {fr(r['ref']['median'])} ({fr(r['ref']['min'])} – {fr(r['ref']['max'])}) | "
                     f"{r['ratio']['median']:.2f} ({r['ratio']['min']:.2f} – {r['ratio']['max']:.2f}) | "
                     f"{fr(r['sim_per_client']['median'])} |")
        errs = [f"{r['clients']}: sim {r['errors_sim']}, ref {r['errors_ref']}" for r in report["ws_summary"]
                if r["errors_sim"] or r["errors_ref"]]
        L.append("")
        L.append("Client-side errors and reconnections over all timed windows (a watch_* raising, a socket closed by "
                 "the server and reopened): " + ("; ".join(errs) or "none") + ".")
        L.append("")
        for spec, prof in (report["ws"].get("profiles") or {}).items():
            L += [f"Sim server under `{spec}` (py-spy, {PROFILE_RATE} Hz over one extra untimed window at "
                  f"{fr(prof['msgs_per_s'])} msgs/s; {prof['samples']} samples, the server on CPU in ~{prof['busy']:.0%} "
                  "of it): share of the samples.", "",
                  "| inclusive (sim, websockets, json frames) | share | self time (top) | share |", "|---|---:|---|---:|"]
            inc, own = prof["inclusive"], prof["self"]

            def cell(rows: list, i: int) -> str:
                return f"{rows[i]['function']} | {rows[i]['share']:.0%}" if i < len(rows) else " | "

            for i in range(max(len(inc), len(own))):
                L.append(f"| {cell(inc, i)} | {cell(own, i)} |")
            L.append("")
    if report.get("generation"):
        L += [f"**1b. Event generation in process** (no transport; same four streams, events serialised once; "
              f"{report['generation']['bars']} bars x {a['ticks_per_bar']} ticks per measurement, "
              f"{a['gen_rounds']} rounds).", "",
              "| history before the clock | events/s | µs per tick | / 1 day in (reference) |", "|---|---:|---:|---:|"]
        for r in report["generation_summary"]:
            L.append(f"| {r['position']} ({r['history_bars']:,} bars) | {fr(r['events_per_s']['median'])} "
                     f"({fr(r['events_per_s']['min'])} – {fr(r['events_per_s']['max'])}) | "
                     f"{r['us_per_tick']['median']:.0f} | {r['ratio']['median']:.2f} "
                     f"({r['ratio']['min']:.2f} – {r['ratio']['max']:.2f}) |")
        L.append("")
    if report.get("rest_summary"):
        rows, ratios = report["rest_summary"]
        L += [f"**2. REST round trip** — ccxt sync client, loopback, {a['rest_calls']} calls per round, "
              f"{a['rounds']} rounds, median (min – max) of the per-round p50 / p99; a sim and a reference server "
              "of their own; before each market order an untimed `POST /sim/step?bars=1` (liquidity taken from the "
              "synthetic book comes back at the next tick only), 0.01 ETH, buy and sell alternating.", "",
              "| call | p50 ms | p99 ms |", "|---|---:|---:|"]
        for r in rows:
            L.append(f"| {r['call']} | **{r['p50']['median']:.2f}** ({r['p50']['min']:.2f} – {r['p50']['max']:.2f}) | "
                     f"{r['p99']['median']:.2f} ({r['p99']['min']:.2f} – {r['p99']['max']:.2f}) |")
        L += ["", "| ratio | value | min – max |", "|---|---:|---:|"]
        for r in ratios:
            L.append(f"| {r['num']} / {r['den']}, {r['q']} | {r['ratio']['median']:.2f} | "
                     f"{r['ratio']['min']:.2f} – {r['ratio']['max']:.2f} |")
        L.append("")
    if report.get("replay"):
        rows, ratios = report["replay_summary"]
        rp = report["replay"]
        build = stats([x["s"] for x in rp["runs"]["build"]])
        L += [f"**3. Replay of {rp['bars']:,} 1m bars** (the month tiled), {rp['ticks_per_bar']} ticks per bar, "
              f"no clients, in process; {a['replay_rounds']} rounds; building the `ReplayExchange` (paths for the "
              f"whole series) {build['median']:.2f} s ({build['min']:.2f} – {build['max']:.2f}).", "",
              "| | wall s | ticks/s | events/s |", "|---|---:|---:|---:|"]
        for r in rows:
            ev = (f"{fr(r['events_per_s']['median'])} ({fr(r['events_per_s']['min'])} – {fr(r['events_per_s']['max'])})"
                  if r["events_per_s"] and r["events_per_s"]["median"] else "—")
            L.append(f"| {r['what']} | **{fs(r['s']['median'])}** ({fs(r['s']['min'])} – {fs(r['s']['max'])}) | "
                     f"{fr(r['ticks_per_s']['median'])} ({fr(r['ticks_per_s']['min'])} – {fr(r['ticks_per_s']['max'])}) "
                     f"| {ev} |")
        L += ["", "| ratio | value | min – max |", "|---|---:|---:|"]
        for r in ratios:
            L.append(f"| {r['what']} | {r['ratio']['median']:.2f} | {r['ratio']['min']:.2f} – {r['ratio']['max']:.2f} |")
        L.append("")
    for name, why in (report.get("failed") or {}).items():
        L += [f"**{name} failed:** `{why.splitlines()[-1][:300]}`", ""]
    L += ["Command:", "", "```", report["command"], "```"]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, 1.5 s windows, 100 REST calls, 5%% of the year")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds of the websocket and REST figures")
    p.add_argument("--window", type=float, default=5.0, help="seconds counted per websocket measurement")
    p.add_argument("--ws-clients", default="ccxt:1,ccxt:10,raw:1,raw:10",
                   help="client configurations, KIND:N (ccxt = ccxt.pro, raw = plain websockets)")
    p.add_argument("--lead-steps", type=int, default=3,
                   help="how many clock steps the driver may be ahead of what the clients received")
    p.add_argument("--ticks-per-bar", type=int, default=16, help="ticks per bar for the websocket figure")
    p.add_argument("--ws-start-day", type=float, default=15.0, help="where the servers' clock starts, days into the month")
    p.add_argument("--cycle-bars", type=int, default=240, help="bars of frames the reference server records and cycles")
    p.add_argument("--rest-calls", type=int, default=500, help="calls per REST row per round")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the year of minutes to replay")
    p.add_argument("--replay-rounds", type=int, default=3)
    p.add_argument("--gen-rounds", type=int, default=3)
    p.add_argument("--gen-bars", type=int, default=40, help="bars per in-process generation measurement")
    p.add_argument("--no-ws", dest="ws", action="store_false")
    p.add_argument("--no-rest", dest="rest", action="store_false")
    p.add_argument("--no-generation", dest="generation", action="store_false")
    p.add_argument("--no-replay", dest="replay", action="store_false")
    p.add_argument("--profile", action="store_true",
                   help="after the rounds, sample each sim server with py-spy over one extra window (needs py-spy)")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--out-dir", default=str(HERE / "results"))
    p.add_argument("--serve", choices=["sim", "ref"], help=argparse.SUPPRESS)
    p.add_argument("--start-index", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.start_index is None:
        args.start_index = int(round(args.ws_start_day * DAY_BARS))
    if args.serve:
        return serve_main(args)
    if args.quick:
        args.rounds, args.window, args.rest_calls, args.scale = 1, 1.5, 100, 0.05
        args.replay_rounds = args.gen_rounds = 1
        args.gen_bars = 10
        args.ws_clients = "ccxt:1,ccxt:10"

    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    stamp = started.replace(":", "").replace("-", "")
    out_dir = Path(args.out_dir)
    log_dir = out_dir / "logs" / f"sim_{stamp}"
    log_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report: dict = {"started_utc": started, "command": " ".join(["python"] + [os.path.relpath(sys.argv[0], REPO)]
                                                                 + sys.argv[1:]),
                    "args": vars(args), "machine": machine()}
    month = load_month()
    year = tiled_year(max(DAY_BARS * 3, int(round(YEAR_OF_MINUTES * args.scale)))) if (args.replay or args.generation) else None
    log(f"data: month {len(month):,} bars, year {0 if year is None else len(year):,} bars")
    report["failed"] = {}

    def section(name: str, run, summarize) -> None:
        """Run one figure; a failure is reported (and the others still run) instead of losing the whole run."""
        try:
            report[name] = run()
            report[f"{name}_summary"] = summarize(report[name])
        except Exception as exc:  # noqa: BLE001
            import traceback

            report["failed"][name] = "".join(traceback.format_exception_only(exc)).strip()[:2000]
            report.pop(name, None)
            log(f"{name} FAILED: {report['failed'][name]}")
            traceback.print_exc()

    if args.replay:
        section("replay", lambda: replay_section(args, year), summarize_replay)
    if args.generation:
        section("generation", lambda: generation_section(args, month, year), summarize_generation)
    year = None  # free the tiled year before the servers start
    if args.ws:
        section("ws", lambda: ws_section(args, log_dir), summarize_ws)
    if args.rest:
        section("rest", lambda: rest_section(args, log_dir), summarize_rest)
    report["wall_s"] = time.perf_counter() - t_start
    md = render(report)
    base = out_dir / f"bench_sim_{stamp}"
    base.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    base.with_suffix(".md").write_text(md)
    (out_dir / "bench_sim_latest.json").write_text(base.with_suffix(".json").read_text())
    (out_dir / "bench_sim_latest.md").write_text(md)
    print()
    print(md)
    log(f"wrote {base}.json/.md in {report['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
