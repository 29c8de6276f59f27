"""The replay exchange app: ``create_app`` wires the state, the fault injector and the REST routes together;
``serve_in_thread`` runs it on a loopback port.

ccxt pointed at this server (``spotgym.venue.make_exchange(mode="sim", sim_url=...)``) loads markets and
pages klines exactly as it does against api.binance.com.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from spotgym.sim.errors import BinanceError, validation_error
from spotgym.sim.faults import Faults
from spotgym.sim.rest import router
from spotgym.sim.state import BarsSource, Clock, ReplayExchange
from spotgym.venue import TradingRules

__all__ = ["RecordedRequest", "create_app", "serve_in_thread"]


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
    faults: Faults | None = None,
    rules: Mapping[str, TradingRules] | None = None,
) -> FastAPI:
    """The replay server app over ``markets`` (see ``ReplayExchange`` for the arguments).

    ``app.state.exchange`` is the ``ReplayExchange``, ``app.state.faults`` the ``Faults`` (given or
    new) and ``app.state.requests`` the list of ``RecordedRequest`` in arrival order.
    """
    app = FastAPI(title="spotgym replay exchange")
    app.state.exchange = ReplayExchange(markets, now_ms=now_ms, rules=rules)
    app.state.faults = faults if faults is not None else Faults()
    app.state.requests = []

    @app.middleware("http")
    async def record_and_inject_faults(request: Request, call_next):
        app.state.requests.append(RecordedRequest(request.method, request.url.path, dict(request.query_params)))
        status = app.state.faults.check(request.url.path)
        if status is not None:
            return Faults.response(status)
        return await call_next(request)

    app.add_exception_handler(BinanceError, lambda _request, exc: exc.response())
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(router)
    return app


@contextmanager
def serve_in_thread(app: FastAPI, *, host: str = "127.0.0.1", startup_timeout: float = 10.0) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a daemon thread; yields its base URL.

    The socket is bound here (port 0) before the thread starts, so there is no port race, and the
    server is shut down and joined on exit.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
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
