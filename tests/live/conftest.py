"""Shared fixtures of the live tests.

- ``tiny_run`` (session scope): a trained run directory, built once per test session (~10 s): real ETH/USDT 1h bars
  2023-01 .. 2024-05, a tiny PPO (256 steps), no predictors. Its model selection holds cash, so trade it with
  ``checkpoint=True`` (``--checkpoint``); from 2024-06-03 it trades every few bars.
- ``sim_server`` (session scope): ``with sim_server(start, *, api_key=..., api_secret=..., balances=...,
  fee_asset="received", **create_app_kwargs) as sim``: the real replay exchange over the 1h ETH/USDT file, served on
  loopback with a manual market clock starting at ``start`` (ISO text or ms; a bar open: the bar before it is the
  last closed one), yielding a ``LiveSim`` (URL, stepping, faults, a ccxt client, and read-only views of the
  account's orders, trades, balances and of every request the server saw).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
import yaml

from spotgym.sim import create_app, serve_in_thread
from spotgym.sim.state import DEFAULT_API_KEY, DEFAULT_API_SECRET
from spotgym.venue import make_exchange

SYMBOL = "ETH/USDT"
TF_MS = 3_600_000
HISTORY_BARS = 1_200  # bars served before the start: the runner's warm-up (1000 bars) fits


def to_ms(when: str | int | pd.Timestamp) -> int:
    if isinstance(when, int):
        return when
    t = pd.Timestamp(when)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.value // 1_000_000)


@dataclass
class LiveSim:
    """A served replay exchange (manual clock) of one account, driven and watched from a test."""

    url: str
    app: Any
    api_key: str
    api_secret: str

    # ------------------------------------------------------------------ control
    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=10, **kwargs)

    def step(self, bars: int = 1) -> int:
        reply = self.post("/sim/step", params={"bars": bars})
        assert reply.status_code == 200, reply.text
        return reply.json()["time"]

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        reply = self.post("/sim/faults", json={"rules": rules})
        assert reply.status_code == 200, reply.text

    def clear_faults(self) -> None:
        self.set_faults([])

    def reset(self) -> int:
        """A fresh exchange (clock at the start, fresh accounts), no fault rules, the fault count at 0; the request
        log is kept (take a ``mark()``)."""
        self.app.state.faults.clear()
        reply = self.post("/sim/reset")
        assert reply.status_code == 200, reply.text
        return reply.json()["time"]

    @property
    def injected(self) -> int:
        """Faults injected so far (the server's count)."""
        return self.app.state.faults.injected

    def client(self, timeout_ms: int | None = None):
        """A sync ccxt client of the account, markets loaded."""
        ex = make_exchange(mode="sim", sim_url=self.url, api_key=self.api_key, secret=self.api_secret)
        if timeout_ms is not None:
            ex.timeout = timeout_ms
        ex.load_markets()
        return ex

    # ------------------------------------------------------------------ read-only views (the server thread owns them)
    @property
    def exchange(self):
        return self.app.state.exchange

    def now(self) -> int:
        return self.exchange.now()

    @property
    def account(self):
        return self.exchange.accounts[self.api_key]

    def orders(self, client_id: str | None = None) -> list[Any]:
        """The account's orders at the exchange (every status), optionally those of one client order id."""
        return sorted((o for o in self.account.orders.values() if client_id is None or o.client_id == client_id),
                      key=lambda o: o.order_id)

    def trades(self, order_id: int | None = None) -> list[Any]:
        return [t for t in self.account.trades if order_id is None or t.order_id == order_id]

    def balance(self, asset: str) -> float:
        """Free + locked."""
        free, locked = self.account.balances.get(asset, [0.0, 0.0])
        return free + locked

    def requests(self, method: str | None = None, path: str | None = None, since: int = 0) -> list[Any]:
        """The requests the server saw (``RecordedRequest``: method, path, query params), from index ``since``."""
        return [r for r in self.app.state.requests[since:]
                if (method is None or r.method == method) and (path is None or r.path == path)]

    def mark(self) -> int:
        """An index into the request log (pass it as ``since``)."""
        return len(self.app.state.requests)


@pytest.fixture(scope="session")
def eth_1h_bars(eth_1h_path) -> pd.DataFrame:
    """The whole 1h ETH/USDT file (2017-08 .. 2024-12), as read."""
    return pd.read_csv(eth_1h_path)


@pytest.fixture(scope="session")
def sim_server(eth_1h_bars) -> Callable[..., Any]:
    """``with sim_server(start, *, api_key=..., api_secret=..., balances=None, fee_asset="received", bars_after=600,
    **create_app_kwargs) as sim``: a ``LiveSim`` (see the module doc). ``balances`` default to the server's
    (USDT 10,000); the account is the server's default one unless ``api_key`` / ``api_secret`` are given."""

    @contextlib.contextmanager
    def serve(start: str | int, *, api_key: str = DEFAULT_API_KEY, api_secret: str = DEFAULT_API_SECRET,
              balances: dict[str, float] | None = None, fee_asset: str = "received", bars_after: int = 600,
              **kwargs: Any) -> Iterator[LiveSim]:
        start_ms = to_ms(start)
        if start_ms % TF_MS:
            raise ValueError(f"start {start!r} is not a bar open")
        ts = eth_1h_bars["timestamp"]
        bars = eth_1h_bars[(ts >= start_ms - HISTORY_BARS * TF_MS) & (ts < start_ms + bars_after * TF_MS)]
        app = create_app({f"{SYMBOL}@1h": bars.reset_index(drop=True)}, start_ms=start_ms, speed="manual",
                         balances=balances, api_key=api_key, api_secret=api_secret, fee_asset=fee_asset, **kwargs)
        with serve_in_thread(app) as url:
            yield LiveSim(url, app, api_key, api_secret)

    return serve


TINY_EXPERIMENT = {
    "name": "tinylive", "seed": 3,
    "data": {"start": "2023-01-01", "end": "2024-05-31T23:00"},
    "env": {"action": "levels", "window": 8, "episode_length": 96, "levels": [0.0, 0.5, 1.0], "deadband": 0.05},
    "agent": {"algo": "ppo", "timesteps": 256, "n_envs": 4, "eval_every": 128, "params": {"n_steps": 32, "batch_size": 64}},
    "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
    "tracking": {"wandb": False, "tensorboard": False},
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, eth_1h_path) -> Path:
    """A trained run directory (see the module doc); trade it with ``checkpoint=True``. Read it, do not write
    into it (a live session's default journal goes under it: pass ``journal=`` or copy the run)."""
    from spotgym.cli import main

    root = tmp_path_factory.mktemp("tiny_run")
    exp = dict(TINY_EXPERIMENT, data={**TINY_EXPERIMENT["data"], "path": str(eth_1h_path)})
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(exp))
    run = root / "run"
    assert main(["train", str(path), "--quiet", f"--set=run.dir={run}"]) == 0
    assert (run / "model.zip").is_file()
    return run
