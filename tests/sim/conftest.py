"""Fixtures for the replay exchange's websocket and fault tests: real bars, a served app on a manual market clock,
ccxt / ccxt.pro clients for it, and a raw websocket client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
import requests
import websockets
from shared_data import shared_file

from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import make_exchange

SIM_ROWS = 1300
START_ROW = 602  # a 4h boundary, hundreds of contiguous 1h bars on either side (the first gap is after row 492); the
# test modules call it S
KEY, SECRET = "spotgym-sim-key", "spotgym-sim-secret"
BALANCES = {"USDT": 10_000.0, "ETH": 1.0, "BTC": 0.1}


@pytest.fixture(scope="session")
def eth_bars(eth_1h_path) -> pd.DataFrame:
    return pd.read_csv(eth_1h_path, nrows=SIM_ROWS)


@pytest.fixture(scope="session")
def btc_bars() -> pd.DataFrame:
    return pd.read_csv(shared_file("BINANCE_BTCUSDT_1h.csv.gz"), nrows=SIM_ROWS)


@dataclass
class Sim:
    """A served replay exchange (manual clock) and the means to drive and watch it from a test."""

    url: str
    app: Any

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1)

    # ------------------------------------------------------------------ control (blocking; from a test body)
    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)

    def get(self, path: str, **params) -> requests.Response:
        return requests.get(self.url + path, params=params, timeout=10)

    def step(self, bars: int = 1) -> int:
        reply = self.post("/sim/step", params={"bars": bars})
        assert reply.status_code == 200, reply.text
        return reply.json()["time"]

    def reset(self) -> int:
        """A fresh exchange (clock at the start, default account only), no fault rules and an empty fault log."""
        self.app.state.faults.clear()
        reply = self.post("/sim/reset")
        assert reply.status_code == 200, reply.text
        return reply.json()["time"]

    def set_faults(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        reply = self.post("/sim/faults", json={"rules": rules})
        assert reply.status_code == 200, reply.text
        return reply.json()

    def fault_log(self) -> list[dict[str, Any]]:
        return self.get("/sim/faults").json()["log"]

    def add_account(self, key: str, secret: str, balances: dict[str, float]) -> dict[str, Any]:
        reply = self.post("/sim/accounts", json={"api_key": key, "api_secret": secret, "balances": balances})
        assert reply.status_code == 200, reply.text
        return reply.json()

    @property
    def exchange(self):
        """The server's ReplayExchange (read it only; the server thread owns it)."""
        return self.app.state.exchange

    def now(self) -> int:
        return self.exchange._now

    def client(self, key: str | None = KEY, secret: str | None = SECRET):
        """A sync ccxt client."""
        return make_exchange(mode="sim", sim_url=self.url, api_key=key, secret=secret)

    # ------------------------------------------------------------------ async side (inside a running loop)
    async def astep(self, bars: int = 1) -> int:
        return await asyncio.to_thread(self.step, bars)

    async def aset_faults(self, rules: list[dict[str, Any]]) -> dict[str, Any]:
        return await asyncio.to_thread(self.set_faults, rules)

    @contextlib.asynccontextmanager
    async def pro(self, key: str | None = KEY, secret: str | None = SECRET, **options) -> AsyncIterator[Any]:
        """A ccxt.pro client with its markets loaded; closed on exit."""
        ex = make_exchange(mode="sim", sim_url=self.url, api_key=key, secret=secret, pro=True, sync=False)
        ex.options.update(options)
        try:
            await ex.load_markets()
            yield ex
        finally:
            await ex.close()

    async def subscribed(self, stream: str, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until ``count`` connections listen to the market ``stream`` (e.g. ``ethusdt@trade``)."""
        await until(lambda: self.exchange.streams.get(stream, 0) >= count, timeout, f"subscribers of {stream}")

    async def user_subscribed(self, key: str = KEY, timeout: float = 5.0) -> None:
        """Wait until a websocket listens to ``key``'s user data."""
        await until(lambda: bool(self.app.state.hub._by_key.get(key)), timeout, f"user stream of {key}")


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


def run(coro: Awaitable[Any], timeout: float = 30.0) -> Any:
    """Run a test scenario in a fresh event loop, with an overall time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


class RawWs:
    """A raw ``websockets`` client: JSON frames in and out."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.next_id = 1

    async def send(self, method: str, params: Any = None) -> int:
        mid = self.next_id
        self.next_id += 1
        message: dict[str, Any] = {"method": method, "id": mid}
        if params is not None:
            message["params"] = params
        await self.conn.send(json.dumps(message))
        return mid

    async def recv(self, timeout: float = 5.0) -> Any:
        return json.loads(await asyncio.wait_for(self.conn.recv(), timeout))

    async def reply(self, mid: int, timeout: float = 5.0) -> tuple[Any, list[Any]]:
        """The reply to request ``mid`` and the other frames that came before it."""
        others = []
        while True:
            frame = await self.recv(timeout)
            if isinstance(frame, dict) and frame.get("id") == mid and ("result" in frame or "error" in frame):
                return frame, others
            others.append(frame)

    async def collect(self, predicate: Callable[[list[Any]], bool], timeout: float = 5.0) -> list[Any]:
        """Frames until ``predicate(frames)`` holds."""
        frames: list[Any] = []
        deadline = time.monotonic() + timeout
        while not predicate(frames):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out with {len(frames)} frames: {frames[-3:]}")
            frames.append(await self.recv(left))
        return frames

    async def quiet(self, seconds: float = 0.3) -> list[Any]:
        """Every frame that arrives within ``seconds``."""
        frames: list[Any] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                frames.append(await self.recv(left))
            except TimeoutError:
                break
        return frames


@contextlib.asynccontextmanager
async def raw_ws(url: str) -> AsyncIterator[RawWs]:
    async with websockets.connect(url, open_timeout=5, close_timeout=2) as conn:
        yield RawWs(conn)


@contextlib.contextmanager
def serve_sim(markets: dict[str, Any], start_ms: int, **kwargs) -> Iterator[Sim]:
    app = create_app(markets, start_ms=start_ms, speed="manual", **kwargs)
    with serve_in_thread(app) as url:
        yield Sim(url, app)


@pytest.fixture(scope="module")
def sim(eth_bars) -> Iterator[Sim]:
    """One ETH/USDT 1h server per module on a manual clock at ``START_ROW``; reset before each test using it."""
    with serve_sim({"ETH/USDT@1h": eth_bars}, int(eth_bars["timestamp"].iat[START_ROW]), balances=BALANCES) as s:
        yield s


@pytest.fixture
def fresh(sim) -> Sim:
    """The module's server, reset: clock at the start, default account, no faults, empty fault log."""
    sim.reset()
    return sim


@pytest.fixture(scope="session")
def arun() -> Callable[..., Any]:
    """``arun(coro, timeout=30)``: run a scenario in a fresh event loop."""
    return run


@pytest.fixture(scope="session")
def wait_until() -> Callable[..., Awaitable[None]]:
    """``await wait_until(predicate, timeout=5, what=...)``."""
    return until


@pytest.fixture(scope="session")
def ws_client() -> Callable[[str], Any]:
    """``async with ws_client(url) as ws``: a raw ``websockets`` client (``RawWs``)."""
    return raw_ws


@pytest.fixture(scope="session")
def sim_server() -> Callable[..., Any]:
    """``with sim_server(markets, start_ms, **create_app_kwargs) as sim``: a served app of its own."""
    return serve_sim
