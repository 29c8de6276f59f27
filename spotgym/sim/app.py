"""The replay exchange app: ``create_app`` wires the state, the market clock's driver, the fault injector, request
weights and the REST and websocket routes together; ``serve_in_thread`` runs it on a loopback port for tests,
``serve`` for ``spotgym sim serve``.

The market clock is driven in one of four ways: ``speed=X`` (X times real time), ``speed="max"`` (bar by
bar as fast as possible, pausing ``bar_pause_ms`` of wall time at each bar open so that a client reacting to
a closed bar is filled at the next bar's open), ``speed="manual"`` (only ``POST /sim/step``), or an external
``now_ms`` clock (tests; without ``start_ms`` the market clock is the wall clock and all bars are history).

ccxt pointed at this server (``spotgym.venue.make_exchange(mode="sim", sim_url=...)``) loads markets,
pages klines and trades exactly as it does against api.binance.com.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from spotgym.sim.auth import WEIGHT_LIMIT, RateLimiter, request_weight
from spotgym.sim.errors import BinanceError, validation_error
from spotgym.sim.faults import Faults
from spotgym.sim.rest import router as rest_router
from spotgym.sim.state import BarsSource, Clock, ReplayExchange
from spotgym.sim.ws import StreamHub
from spotgym.sim.ws import router as ws_router
from spotgym.venue import TradingRules

__all__ = ["DEFAULT_BAR_PAUSE_MS", "RecordedRequest", "create_app", "serve", "serve_in_thread"]

log = logging.getLogger("spotgym.sim")
DEFAULT_BAR_PAUSE_MS = 250


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (tests assert on these)."""

    method: str
    path: str
    params: dict[str, str]


def create_app(
    markets: Mapping[str, BarsSource],
    *,
    now_ms: int | Clock | None = None,
    start_ms: int | None = None,
    speed: float | str = "manual",
    bar_pause_ms: int = DEFAULT_BAR_PAUSE_MS,
    faults: Faults | None = None,
    rules: Mapping[str, TradingRules] | None = None,
    fee: float = 0.001,
    ticks_per_bar: int | None = None,
    balances: Mapping[str, float] | None = None,
    api_key: str | None = None,
    api_secret: str | None = None,
    seed: int = 0,
    event_log: str | Path | bool | None = None,
    weight_limit: int = WEIGHT_LIMIT,
    captures: Mapping[str, str | Path] | None = None,
    spread_bps: float | None = None,
    fee_asset: str = "received",
) -> FastAPI:
    """The replay server app over ``markets`` (see ``ReplayExchange`` for the market arguments).

    ``app.state.exchange`` is the ``ReplayExchange``, ``app.state.faults`` the ``Faults`` (given or new),
    ``app.state.requests`` the last requests (``RecordedRequest``) in arrival order. ``event_log``: True keeps
    every event in memory (``GET /sim/events``), a path also appends them to that file.
    """
    if not (speed in ("manual", "max") or (isinstance(speed, int | float) and speed > 0)):
        raise ValueError(f"speed must be a positive number, 'max' or 'manual', got {speed!r}")
    if start_ms is None and speed != "manual":
        raise ValueError("a driven clock (speed) needs start_ms: where the replay starts")

    def build() -> ReplayExchange:
        kwargs: dict[str, Any] = {} if ticks_per_bar is None else {"ticks_per_bar": ticks_per_bar}
        if api_key is not None:
            kwargs.update(api_key=api_key, api_secret=api_secret)
        ex = ReplayExchange(markets, now_ms=now_ms, start_ms=start_ms, rules=rules, fee=fee, balances=balances,
                            seed=seed, captures=captures, spread_bps=spread_bps, fee_asset=fee_asset, **kwargs)
        if event_log:
            ex.record()
        return ex

    app_faults = faults if faults is not None else Faults()
    driver: dict[str, asyncio.Task | None] = {"task": None, "flush": None}

    async def drive() -> None:
        """Move the market clock: ``speed`` times real time, or bar by bar (``max``) with a pause at each open."""
        ex = app.state.exchange
        end = max(m.end_ms for m in ex.markets.values())
        if speed == "max":
            while ex.now() < end:
                ex.step_bars(1)
                await asyncio.sleep(bar_pause_ms / 1000.0)
            return
        wall0, t0 = time.monotonic(), ex.now()
        while ex.now() < end:
            await asyncio.sleep(0.02)
            ex.advance_to(min(t0 + int((time.monotonic() - wall0) * 1000 * float(speed)), end))

    def append_log(written: int) -> int:
        lines = app.state.exchange.log or []
        if len(lines) > written:
            with open(event_log, "a", encoding="utf-8") as fh:  # type: ignore[arg-type]
                fh.write("\n".join(lines[written:]) + "\n")
        return len(lines)

    async def flush_log() -> None:
        """Append the new events to the ``event_log`` file every second (and once more when stopped)."""
        written = 0
        try:
            while True:
                await asyncio.sleep(1.0)
                written = append_log(written)
        finally:
            append_log(written)

    def start_tasks() -> None:
        loop = asyncio.get_running_loop()
        app.state.hub.start()
        if speed != "manual":
            driver["task"] = loop.create_task(drive())
        if isinstance(event_log, str | Path):
            driver["flush"] = loop.create_task(flush_log())

    async def stop_tasks() -> None:
        for name in ("task", "flush"):
            task = driver[name]
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                driver[name] = None
        await app.state.hub.stop()

    async def reset() -> None:
        """A fresh exchange: the same data and settings, the clock back at the start, new accounts."""
        await stop_tasks()
        app.state.hub.close_all()
        app.state.exchange = build()
        app.state.hub.attach(app.state.exchange)
        app_faults.sim_clock = app.state.exchange.now
        app.state.listen_keys.clear()
        start_tasks()

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        start_tasks()
        try:
            yield
        finally:
            await stop_tasks()

    app = FastAPI(title="spotgym replay exchange", lifespan=lifespan)
    app.state.exchange = build()
    app.state.faults = app_faults
    app_faults.sim_clock = app.state.exchange.now
    app.state.requests = []  # the last requests (the oldest half dropped past 100,000)
    app.state.limiter = RateLimiter(limit=weight_limit)
    app.state.listen_keys = {}
    app.state.next_subscription = 0
    app.state.clock_mode = ("external" if start_ms is None else
                            "manual" if speed == "manual" else "max" if speed == "max" else f"x{speed:g}")
    app.state.hub = StreamHub(app)
    app.state.hub.attach(app.state.exchange)
    app.state.reset = reset

    @app.middleware("http")
    async def gatekeeper(request: Request, call_next):
        path = request.url.path
        params = dict(request.query_params)
        requests = app.state.requests
        requests.append(RecordedRequest(request.method, path, params))
        if len(requests) > 100_000:
            del requests[:50_000]
        exchange_api = path.startswith(("/api/", "/sapi/", "/fapi/", "/dapi/"))
        if not exchange_api:
            return await call_next(request)
        failure = app_faults.http(path)
        if failure is not None:
            return Faults.response(*failure)
        client = request.client.host if request.client else "?"
        used, status, retry = app.state.limiter.charge(client, request_weight(request.method, path, params))
        if status is not None:
            response = Faults.response(status, retry)
        else:
            delay = app_faults.latency_ms(path)
            if delay:
                await asyncio.sleep(delay / 1000.0)
            response = await call_next(request)
            lost = (app_faults.lost_reply(path)
                    if request.method in ("POST", "PUT", "DELETE") and response.status_code < 400 else None)
            if lost is not None:  # executed, but the client never learns it
                if lost.options.get("mode") == "timeout":
                    await asyncio.sleep(lost.options.get("ms", 30_000) / 1000.0)
                response = Faults.response(int(lost.options.get("status", 504)))
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        response.headers["X-Sim-Time"] = str(app.state.exchange.now())
        return response

    app.add_exception_handler(BinanceError, lambda _request, exc: exc.response())
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(rest_router)
    app.include_router(ws_router)
    return app


class _Server(uvicorn.Server):
    """uvicorn, printing ``sim: listening on URL`` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, url: str, announce: bool) -> None:
        super().__init__(config)
        self.url, self.announce = url, announce

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.announce and self.started:
            print(f"sim: listening on {self.url}", flush=True)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def serve(app: FastAPI, host: str = "127.0.0.1", port: int = 8765, log_level: str = "info",
          ws_compression: bool = False) -> None:
    """Run ``app`` in this thread until interrupted (``spotgym sim serve``). ``ws_compression``: accept
    permessage-deflate on websockets as Binance does (off by default: on loopback it only costs CPU)."""
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = _Server(uvicorn.Config(app, log_level=log_level, access_log=False, ws_ping_interval=20,
                                    ws_per_message_deflate=ws_compression, timeout_graceful_shutdown=2), url,
                     announce=True)
    server.run(sockets=[sock])


@contextmanager
def serve_in_thread(app: FastAPI, *, host: str = "127.0.0.1", startup_timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a daemon thread; yields its base URL.

    The socket is bound here (port 0) before the thread starts, so there is no port race, and the
    server is shut down and joined on exit.
    """
    sock = _bind(host, 0)
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, ws_per_message_deflate=False,
                                    timeout_graceful_shutdown=2), f"http://{host}:{port}", announce=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"spotgym-sim:{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"replay server on {host}:{port} did not start within {startup_timeout} s")
            time.sleep(0.005)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()
