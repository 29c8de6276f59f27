"""The websocket side of the replay exchange: Binance's market streams and the WS-API user-data stream.

- Market streams at ``/stream/ws[/<n>]`` (what ccxt.pro opens: ``SUBSCRIBE`` / ``UNSUBSCRIBE`` /
  ``LIST_SUBSCRIPTIONS`` messages, events pushed raw), ``/stream/ws/<stream>`` (one stream from the URL) and
  the combined ``/stream?streams=a/b`` (events wrapped as ``{"stream", "data"}``): ``<sym>@kline_<i>``,
  ``@trade``, ``@aggTrade``, ``@bookTicker``, ``@depth`` / ``@depth@100ms``, ``@ticker``, ``@miniTicker``.
  A kline stream is pushed on subscribe, at every tick the market clock passes and every 2 s of wall time.
- User data over the WS-API at ``/stream/ws-api/v3``: ``userDataStream.subscribe.signature`` (params signed
  sorted by key), then ``{"subscriptionId", "event"}`` frames: ``executionReport``,
  ``outboundAccountPosition``, ``balanceUpdate``; and the legacy ``/stream/ws/<listenKey>``.
- A connection is closed after 24 h of sim time, as Binance does (the events made before the mark are sent
  first; an idle connection is closed within ``IDLE_CHECK_S`` of wall time); faults drop, stall, duplicate and
  reorder frames, and a maintenance window closes every connection and refuses new ones (HTTP 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from spotgym.data.timeframes import timeframe_to_ms
from spotgym.sim.auth import sign
from spotgym.sim.errors import BinanceError
from spotgym.sim.faults import Faults
from spotgym.sim.rest import server_ms
from spotgym.sim.state import ReplayExchange

__all__ = ["StreamHub", "router"]

log = logging.getLogger("spotgym.sim.ws")
router = APIRouter()
KLINE_PUSH_S = 2.0
SIM_DAY_MS = 86_400_000
MAX_QUEUE = 200_000  # frames waiting for a slow client before it is disconnected, as Binance does
IDLE_CHECK_S = 0.25  # how often a connection without traffic checks its limits (24 h, maintenance, drops)


def _dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


class Connection:
    """One websocket client: what it listens to and the frames waiting to be sent."""

    _ids = itertools.count(1)

    def __init__(self, ws: WebSocket, combined: bool, started_ms: int) -> None:
        self.ws = ws
        self.id = next(self._ids)
        self.combined = combined
        self.streams: set[str] = set()
        self.user_keys: dict[str, int] = {}  # api key -> subscription id (WS-API) or -1 (listenKey)
        # (frame, the market time it was made at); None closes the connection
        self.queue: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self.started_ms = started_ms
        self.held: tuple[str, int] | None = None  # a frame held back by an out_of_order_event fault

    @property
    def labels(self) -> set[str]:
        return self.streams | ({"user"} if self.user_keys else set())

    def put(self, frame: str, at_ms: int) -> None:
        """Queue ``frame``, made at market time ``at_ms`` (a frame at or past the 24 h mark closes instead)."""
        if self.queue.qsize() > MAX_QUEUE:
            self.queue.put_nowait(None)  # too slow: close
            return
        self.queue.put_nowait((frame, at_ms))

    def expired(self, now_ms: int) -> bool:
        """Binance closes a connection 24 h after it opened (here: of market time)."""
        return now_ms - self.started_ms >= SIM_DAY_MS


class StreamHub:
    """Fans the exchange's events out to the websocket connections that listen to them."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.connections: dict[int, Connection] = {}
        self._by_stream: dict[str, set[int]] = {}
        self._by_key: dict[str, set[int]] = {}
        self._kline_task: asyncio.Task | None = None

    @property
    def exchange(self) -> ReplayExchange:
        return self.app.state.exchange

    def clock(self) -> int:
        """The market time now, without moving an external clock (events are being made at this instant)."""
        now = getattr(self.exchange, "_now", None)
        return self.exchange.now() if now is None else int(now)

    def attach(self, exchange: ReplayExchange) -> None:
        exchange.listeners.append(self.on_event)

    # ------------------------------------------------------------------ events in
    def on_event(self, kind: str, key: str, payload: dict[str, Any]) -> None:
        if kind == "market":
            ids = self._by_stream.get(key)
            if not ids:
                return
            raw = _dumps(payload)
            wrapped = None
            for cid in ids:
                conn = self.connections.get(cid)
                if conn is None:
                    continue
                if conn.combined:
                    wrapped = wrapped or _dumps({"stream": key, "data": payload})
                    self._send(conn, wrapped, key)
                else:
                    self._send(conn, raw, key)
        else:
            for cid in self._by_key.get(key, ()):
                conn = self.connections.get(cid)
                if conn is None:
                    continue
                sub = conn.user_keys.get(key)
                frame = _dumps(payload if sub == -1 else {"subscriptionId": sub, "event": payload})
                self._send(conn, frame, "user")

    def _send(self, conn: Connection, frame: str, stream: str) -> None:
        faults = self.app.state.faults
        if faults.ws_stalled(conn.labels):
            return  # the socket stays open, the data is lost
        at = self.clock()
        what = faults.event_fault(stream)
        if what == "duplicate":
            conn.put(frame, at)
        elif what == "swap" and conn.held is None:
            conn.held = (frame, at)
            return
        conn.put(frame, at)
        if conn.held is not None:
            conn.put(*conn.held)
            conn.held = None

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self, conn: Connection, streams: Iterable[str]) -> None:
        """Subscribe ``conn`` to ``streams``: all of them, or none when one is not valid (BinanceError)."""
        for stream in [self._check_stream(s) for s in streams]:
            if stream in conn.streams:
                continue
            conn.streams.add(stream)
            self._by_stream.setdefault(stream, set()).add(conn.id)
            self.exchange.watch(stream)
            if "@kline_" in stream:  # Binance pushes the current kline at once
                frame = self._kline_frame(stream)
                if frame is not None:
                    self._send(conn, _dumps({"stream": stream, "data": frame}) if conn.combined else _dumps(frame),
                               stream)

    def unsubscribe(self, conn: Connection, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream in conn.streams:
                conn.streams.discard(stream)
                self._by_stream.get(stream, set()).discard(conn.id)
                self.exchange.unwatch(stream)

    def _check_stream(self, stream: Any) -> str:
        if not isinstance(stream, str):
            raise BinanceError(2, f"Invalid request: a stream name is a string, got {stream!r}")
        name, _, kind = stream.partition("@")
        if name.upper() not in self.exchange.markets or not kind:
            raise BinanceError(-1121, f"Invalid symbol or stream: {stream}")
        if kind.startswith("kline_"):
            try:
                interval_ms = timeframe_to_ms(kind[len("kline_"):])
            except ValueError:
                raise BinanceError(-1120, f"Invalid interval in {stream}") from None
            if interval_ms % self.exchange.markets[name.upper()].interval_ms:
                raise BinanceError(-1120, f"Invalid interval in {stream}: not a multiple of the data's timeframe")
        elif kind not in ("trade", "aggTrade", "bookTicker", "depth", "depth@100ms", "depth@1000ms", "ticker",
                          "miniTicker"):
            raise BinanceError(-1100, f"Unknown stream {stream}")
        return stream.replace("depth@1000ms", "depth")

    def _kline_frame(self, stream: str) -> dict[str, Any] | None:
        name, _, kind = stream.partition("@")
        interval = kind[len("kline_"):]
        ex = self.exchange
        return ex.markets[name.upper()].kline_event(interval, timeframe_to_ms(interval), ex.now(), closed=False)

    def register(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def forget(self, conn: Connection) -> None:
        self.unsubscribe(conn, list(conn.streams))
        for key in conn.user_keys:
            self._by_key.get(key, set()).discard(conn.id)
        self.connections.pop(conn.id, None)

    def add_user(self, conn: Connection, api_key: str, subscription: int) -> None:
        conn.user_keys[api_key] = subscription
        self._by_key.setdefault(api_key, set()).add(conn.id)

    def close_all(self) -> None:
        """Close every connection (the exchange is being replaced) and detach it at once: its subscriptions were
        counted on the old exchange, and its handler may end only after new clients subscribed to the new one."""
        for conn in list(self.connections.values()):
            conn.queue.put_nowait(None)
            for stream in conn.streams:
                self._by_stream.get(stream, set()).discard(conn.id)
            for key in conn.user_keys:
                self._by_key.get(key, set()).discard(conn.id)
            conn.streams.clear()
            conn.user_keys.clear()
            conn.held = None

    # ------------------------------------------------------------------ the 2-second kline push
    async def push_klines(self) -> None:
        while True:
            await asyncio.sleep(KLINE_PUSH_S)
            for stream in [s for s, ids in self._by_stream.items() if ids and "@kline_" in s]:
                frame = self._kline_frame(stream)
                if frame is not None:
                    self.on_event("market", stream, frame)

    def start(self) -> None:
        if self._kline_task is None:
            self._kline_task = asyncio.get_running_loop().create_task(self.push_klines())

    async def stop(self) -> None:
        if self._kline_task is not None:
            self._kline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kline_task
            self._kline_task = None


# ---------------------------------------------------------------------- endpoints
async def _sender(conn: Connection, hub: StreamHub) -> None:
    """Send the queued frames; close the connection when told to (None), in a maintenance window, when a
    ws_drop fault picks it, or at 24 h of market time: a frame made at or past the mark is not sent, and a
    connection without traffic checks every ``IDLE_CHECK_S``."""
    faults = hub.app.state.faults
    ws = conn.ws
    getter: asyncio.Task | None = None
    try:
        while True:
            item: tuple[str, int] | None | bool = False  # False: nothing to send, a check only
            if getter is None:
                try:  # the fast path while frames are queued: no task, no wait per frame
                    item = conn.queue.get_nowait()
                except asyncio.QueueEmpty:
                    getter = asyncio.get_running_loop().create_task(conn.queue.get())
            if getter is not None:
                done, _ = await asyncio.wait({getter}, timeout=IDLE_CHECK_S)
                if done:
                    item, getter = getter.result(), None
            maintenance = item is not None and faults.maintenance()
            if maintenance:
                faults.note("maintenance", ",".join(sorted(conn.labels)) or "ws")
            if item is None or maintenance or conn.expired(item[1] if item else hub.clock()) or \
                    faults.ws_should_drop(conn.labels, timed_only=not item, sim_time=item[1] if item else None):
                await ws.close(code=1001)
                return
            if item:
                await ws.send_text(item[0])
    finally:
        if getter is not None:
            getter.cancel()


async def _serve(ws: WebSocket, combined: bool, initial: Iterable[str] = (), listen_key: str | None = None,
                 api: bool = False) -> None:
    app = ws.app
    hub: StreamHub = app.state.hub
    if app.state.faults.maintenance():  # refused, as Binance does during maintenance: HTTP 503
        app.state.faults.note("maintenance", ws.url.path)
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(Faults.response(503))
        else:
            await ws.close(code=1013)  # try again later
        return
    await ws.accept()
    conn = Connection(ws, combined, hub.clock())
    hub.register(conn)
    sender = asyncio.get_running_loop().create_task(_sender(conn, hub))
    receive = None
    try:
        if listen_key is not None:
            hub.add_user(conn, app.state.listen_keys[listen_key], -1)
        try:
            hub.subscribe(conn, initial)
        except BinanceError as exc:
            conn.put(_dumps({"error": {"code": exc.code, "msg": exc.msg}}), hub.clock())
        receive = asyncio.get_running_loop().create_task(_receiver(conn, hub, api))
        done, _ = await asyncio.wait({sender, receive}, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:  # a client gone mid-send is routine; anything else is a bug worth a traceback
                gone = isinstance(exc, WebSocketDisconnect | OSError | RuntimeError)
                log.log(logging.DEBUG if gone else logging.ERROR, "websocket %s failed: %r", conn.id, exc,
                        exc_info=None if gone else exc)
    finally:
        for task in (sender, receive):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        hub.forget(conn)
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):  # a failure above: close properly, not by dropping the socket
                await ws.close(code=1011)


async def _receiver(conn: Connection, hub: StreamHub, api: bool) -> None:
    while True:
        try:
            text = await conn.ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            return
        try:
            message = json.loads(text)
        except ValueError:
            conn.put(_dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None}), hub.clock())
            continue
        reply = _ws_api(conn, hub, message) if api else _market_control(conn, hub, message)
        if reply is not None:
            conn.put(_dumps(reply), hub.clock())


def _market_control(conn: Connection, hub: StreamHub, message: Any) -> dict[str, Any] | None:
    if not isinstance(message, dict):
        return {"error": {"code": 3, "msg": "Invalid request"}, "id": None}
    method, params, mid = message.get("method"), message.get("params") or [], message.get("id")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE") and not isinstance(params, list):
        return {"error": {"code": 2, "msg": "Invalid request: 'params' must be a list of stream names"}, "id": mid}
    try:
        if method == "SUBSCRIBE":
            hub.subscribe(conn, params)
        elif method == "UNSUBSCRIBE":
            hub.unsubscribe(conn, params)
        elif method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(conn.streams), "id": mid}
        elif method in ("SET_PROPERTY", "GET_PROPERTY"):
            return {"result": False if method == "GET_PROPERTY" else None, "id": mid}
        else:
            return {"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": mid}
    except BinanceError as exc:
        return {"error": {"code": exc.code, "msg": exc.msg}, "id": mid}
    return {"result": None, "id": mid}


def _ws_api(conn: Connection, hub: StreamHub, message: Any) -> dict[str, Any]:
    """The WS-API methods a spot client needs for user data: subscribe with a signature, unsubscribe, ping, time."""
    mid = message.get("id") if isinstance(message, dict) else None
    method = message.get("method") if isinstance(message, dict) else None
    params = message.get("params") or {} if isinstance(message, dict) else {}
    app = conn.ws.app

    def error(status: int, code: int, msg: str) -> dict[str, Any]:
        return {"id": mid, "status": status, "error": {"code": code, "msg": msg}}

    if not isinstance(params, dict):
        return error(400, -1100, "Illegal characters found in parameter 'params': an object is expected.")

    if method == "ping":
        return {"id": mid, "status": 200, "result": {}}
    if method == "time":
        return {"id": mid, "status": 200, "result": {"serverTime": server_ms(conn.ws)}}
    if method == "userDataStream.subscribe.signature":
        key = str(params.get("apiKey", ""))
        account = hub.exchange.account(key)
        if account is None:
            return error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        signed = {k: v for k, v in params.items() if k != "signature"}
        payload = "&".join(f"{k}={signed[k]}" for k in sorted(signed))
        if sign(account.secret, payload) != params.get("signature"):
            return error(400, -1022, "Signature for this request is not valid.")
        try:
            timestamp, window = int(params.get("timestamp")), int(params.get("recvWindow", 5000))
        except (TypeError, ValueError):
            return error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        now = server_ms(conn.ws)
        if timestamp >= now + 1000 or now - timestamp > window:
            return error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        subscription = app.state.next_subscription
        app.state.next_subscription += 1
        hub.add_user(conn, key, subscription)
        return {"id": mid, "status": 200, "result": {"subscriptionId": subscription}}
    if method in ("userDataStream.unsubscribe",):
        for key in list(conn.user_keys):
            hub._by_key.get(key, set()).discard(conn.id)
        conn.user_keys.clear()
        return {"id": mid, "status": 200, "result": {}}
    return error(400, -1100, f"Unknown method {method!r}")


@router.websocket("/stream")
async def combined_streams(ws: WebSocket) -> None:
    names = [s for s in (ws.query_params.get("streams") or "").split("/") if s]
    await _serve(ws, combined=True, initial=names)


@router.websocket("/stream/ws")
@router.websocket("/ws")
async def raw_streams(ws: WebSocket) -> None:
    await _serve(ws, combined=False)


@router.websocket("/stream/ws/{name}")
@router.websocket("/ws/{name}")
async def raw_stream_named(ws: WebSocket, name: str) -> None:
    """``/ws/<n>`` (ccxt.pro's per-subscription socket), ``/ws/<stream>`` or ``/ws/<listenKey>``."""
    if name.isdigit():
        await _serve(ws, combined=False)
    elif name in ws.app.state.listen_keys:
        await _serve(ws, combined=False, listen_key=name)
    else:
        await _serve(ws, combined=False, initial=name.split("/"))


@router.websocket("/stream/ws-api/v3")
@router.websocket("/ws-api/v3")
async def ws_api(ws: WebSocket) -> None:
    await _serve(ws, combined=False, api=True)
