"""``ExecutionEnv``: the trading env driven through its ports, a feed and a broker, one bar at a time.

This wrapper lives in ``wrappers/`` (not ``live/``) because it knows nothing of any exchange: it needs
only the env and the ``Feed`` / ``Broker`` ports of ``spotgym.envs.ports``. The live runner plugs a
live feed and a ccxt broker into it; a test plugs the historical frame and the kernel's fill model into
it and gets ``TradingEnv.step``'s numbers bit for bit. It is a stateful wrapper (it owns the feed's
position and the order ids), so it sits apart from stateless observation / action wrappers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from spotgym.envs import TradingEnv
from spotgym.envs.ports import Broker, Feed, Fill, Order

__all__ = ["ExecutionEnv"]

_FILL_KEYS = ("trade", "fill_qty", "fill_price", "fee")


class ExecutionEnv(gym.Wrapper):
    """``ExecutionEnv(TradingEnv(history, config, live=True), feed, broker)``.

    ``step(action)``: plan the order at the last close and hand it to the broker at once (a market order
    fills during the next bar); then, bar by bar as the feed closes them, book each fill into the bar
    whose span holds its time and mark the account at the bar's close, until the account stands on a
    row that can carry the next decision (bars without a defined observation are held through, as the
    kernel does). Returns the summed reward and the last bar's observation and info; the info's fill
    fields describe this step's fills. When the feed ends the episode is truncated.

    ``orders`` and ``fills`` keep everything sent and received, in order.
    """

    def __init__(self, env: TradingEnv, feed: Feed, broker: Broker, *, id_prefix: str = "sg",
                 timeframe_ms: int | None = None, on_bar: Callable[[dict[str, Any]], None] | None = None) -> None:
        if not isinstance(env, TradingEnv) or not env.live:
            raise TypeError("ExecutionEnv wraps a TradingEnv made with live=True (its market grows as bars close)")
        super().__init__(env)
        self.feed, self.broker, self.id_prefix = feed, broker, id_prefix
        times = env.market.timestamps_ms
        if timeframe_ms is None:
            if len(times) < 2:
                raise ValueError("give timeframe_ms: the env's history is too short to infer the bar length")
            timeframe_ms = int(np.diff(times).min())
        self.timeframe_ms = int(timeframe_ms)
        self.orders: list[Order] = []
        self.fills: list[Fill] = []
        self._last: tuple[Any, dict[str, Any]] | None = None
        self.on_bar = on_bar  # called with each bar's info as the account is marked there (a live journal)

    @property
    def trading_env(self) -> TradingEnv:
        return self.env  # type: ignore[return-value]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._last = (obs, info)
        return obs, info

    def make_order(self, action) -> Order:
        """The order ``action`` asks for now, planned at the last close (quantity 0: nothing to send)."""
        env = self.trading_env
        row = env.row
        qty = env.plan_order(action)
        time_ms = int(env.market.timestamps_ms[row])
        side = "buy" if qty > 0 else "sell" if qty < 0 else "none"
        return Order(client_id=f"{self.id_prefix}-{time_ms}-0", symbol=env.market.symbol, side=side,
                     quantity=abs(qty), reference_price=float(env.market.close[row]),
                     action=float(np.asarray(action).reshape(-1)[0]), decision_time_ms=time_ms)

    def step(self, action):
        return self.execute(self.make_order(action))

    def execute(self, order: Order):
        """``step`` for an order already made by ``make_order`` (a live runner journals it first)."""
        env = self.trading_env
        self.orders.append(order)
        pending = sorted(self.broker.execute(order), key=lambda f: f.time_ms)
        self.fills.extend(pending)
        total = 0.0
        booked: dict[str, Any] | None = None
        gate_flags = 0
        bars = 0
        hold_for = env.config.decide_every  # the kernel holds a decision that many bars (fewer at a gap)
        while True:
            if env.row + 1 >= len(env.market):
                rows = self.feed.next_rows()
                if rows is None:  # the feed has ended: truncate where we stand
                    obs, info = self._last if self._last is not None else env.observe()
                    return obs, total, False, True, dict(info)
                env.append_rows(rows)
                on_bars = getattr(self.broker, "on_bars", None)  # a paper broker fills at the new bar's open
                if on_bars is not None:
                    late = on_bars(rows.timestamps_ms, rows.open, rows.volume)
                    self.fills.extend(late)
                    pending = sorted(pending + list(late), key=lambda f: f.time_ms)
            bar_end = int(env.market.timestamps_ms[env.row + 1]) + self.timeframe_ms
            applied = False
            while pending and pending[0].time_ms < bar_end:
                fill = pending.pop(0)
                env.apply_fill(fill.quantity, fill.price, fill.fee)
                applied = True
            obs, reward, terminated, truncated, info = env.advance()
            total += reward
            bars += 1
            gate_flags |= info["risk"]
            if self.on_bar is not None:
                self.on_bar(info)
            if applied:
                booked = {k: info[k] for k in _FILL_KEYS}
            self._last = (obs, info)
            if terminated or truncated or (info["decidable"] and not pending and bars >= hold_for):
                break
        if booked is not None:
            info.update(booked)
        info["risk"] = gate_flags
        return obs, total, terminated, truncated, info
