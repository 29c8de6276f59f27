"""The env's ports: what comes in (``Feed``: closed bars as feature rows), what goes out and comes back
(``Broker``: orders out, fills back) and who decides (``Actor``: observation -> action).

Backtest and training use the env alone: the historical frame is the feed and the step kernel's fill
model is the broker, fused in one numba call (``TradingEnv.step``). Live trading wraps the same env
(``spotgym.wrappers.ExecutionEnv``) around a live feed and an exchange broker. ``HistoricalFeed`` and
``KernelBroker`` put the backtest behind these same ports, so a test holds the two paths equal bit for
bit: nothing lets backtest and live drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from spotgym.core import FeatureFrame
from spotgym.envs import nb

__all__ = ["Actor", "Broker", "Feed", "Fill", "HistoricalFeed", "KernelBroker", "Order"]


@dataclass(frozen=True)
class Order:
    """A market order the env's account wants, made when bar ``decision_time_ms`` closed.

    ``quantity`` (base units, > 0) is planned at ``reference_price`` (the last close) after the exchange
    rules; ``action`` is the actor's action that asked for it (a broker that sizes at the fill price, like
    the kernel, uses it). ``client_id`` is made before the order leaves, so it can be journaled and
    matched against what the exchange reports.
    """

    client_id: str
    symbol: str | None
    side: Literal["buy", "sell", "none"]
    quantity: float
    reference_price: float
    action: float
    decision_time_ms: int


@dataclass(frozen=True)
class Fill:
    """One execution: ``quantity`` base units (> 0 bought, < 0 sold) at ``price``, ``fee`` in the quote
    currency, at ``time_ms`` (the env books it into the bar whose span holds that time)."""

    client_id: str
    time_ms: int
    quantity: float
    price: float
    fee: float


@runtime_checkable
class Feed(Protocol):
    """Closed bars in, as feature rows: ``next_rows()`` blocks until at least one bar after the last one
    delivered has closed and returns its rows (a ``FeatureFrame`` with the env's columns), or ``None``
    when the feed has ended."""

    def next_rows(self) -> FeatureFrame | None: ...


@runtime_checkable
class Broker(Protocol):
    """Orders out, fills back: ``execute(order)`` sends ``order`` and returns its fills (empty when it was
    not sent, rejected or nothing filled)."""

    def execute(self, order: Order) -> list[Fill]: ...


# act(obs, info, env) -> action: an SB3 model behind spotgym.agents.model_actor, a baseline rule, a person
Actor = Callable[[Any, dict[str, Any], Any], Any]


class HistoricalFeed:
    """The rows of ``frame`` from row ``start`` on, one bar per ``next_rows()`` call."""

    def __init__(self, frame: FeatureFrame, start: int) -> None:
        if not 0 <= start <= len(frame):
            raise ValueError(f"start {start} is outside the frame's {len(frame)} rows")
        self.frame = frame
        self.position = int(start)

    def next_rows(self) -> FeatureFrame | None:
        if self.position >= len(self.frame):
            return None
        rows = self.frame.slice(self.position, self.position + 1)
        self.position += 1
        return rows


class KernelBroker:
    """The step kernel's fill model behind the ``Broker`` port: the order fills at the open of the next real
    bar of ``frame`` (the history being replayed), sized and priced exactly as ``TradingEnv.step`` fills it
    for ``env``'s account."""

    def __init__(self, frame: FeatureFrame, env: Any) -> None:
        self.frame = frame
        self.env = env
        self._times = frame.timestamps_ms
        self._fill_rows = nb.hops_nb(np.ones(len(frame), dtype=np.bool_), frame.synthetic)[:, nb.FILL_ROW]

    def execute(self, order: Order) -> list[Fill]:
        row = int(np.searchsorted(self._times, order.decision_time_ms))
        if row >= len(self.frame) or self._times[row] != order.decision_time_ms:
            raise ValueError(f"order {order.client_id}: no bar opening at {order.decision_time_ms} in the replayed frame")
        fill_row = int(self._fill_rows[row])
        if fill_row >= len(self.frame):
            return []  # the history ends before the market reopens
        qty, price, fee = self.env.engine.fill(order.action, self.frame.open[fill_row], self.frame.volume[fill_row])
        if qty == 0.0:
            return []
        return [Fill(order.client_id, int(self._times[fill_row]), qty, price, fee)]
