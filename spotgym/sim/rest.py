"""The REST routes of the replay exchange: Binance spot's public and signed endpoints, the stubs ccxt's default
options call, and the ``/sim/*`` control routes. Thin functions: they parse Binance's parameters, ask the
``ReplayExchange`` and shape the reply as Binance does."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from spotgym.sim.accounts import Account
from spotgym.sim.auth import check_signed
from spotgym.sim.errors import BinanceError
from spotgym.sim.market import fmt
from spotgym.sim.matching import OrderRequest
from spotgym.sim.state import KLINES_DEFAULT_LIMIT, ReplayExchange

__all__ = ["router", "server_ms"]

router = APIRouter()


def _exchange(request: Request) -> ReplayExchange:
    return request.app.state.exchange


def server_ms(request: Request) -> int:
    """The server's wall clock in ms (what signatures are checked against; ``request`` may be a websocket),
    skewed by a clock_skew fault."""
    return time.time_ns() // 1_000_000 + request.app.state.faults.clock_offset_ms()


async def _raw_params(request: Request) -> str:
    if request.method == "POST":
        body = (await request.body()).decode()
        return f"{request.url.query}&{body}" if request.url.query and body else body or request.url.query
    return request.url.query


async def _signed(request: Request) -> tuple[Account, dict[str, str]]:
    """The account and parameters of a signed request (Binance's errors otherwise)."""
    ex = _exchange(request)

    def secret(key: str) -> str | None:
        account = ex.account(key)
        return None if account is None else account.secret

    params = check_signed(await _raw_params(request), request.headers.get("X-MBX-APIKEY"), secret, server_ms(request))
    return ex.accounts[request.headers["X-MBX-APIKEY"]], params


def _number(params: dict[str, str], name: str, required: bool = False) -> float | None:
    text = params.get(name)
    if text is None or text == "":
        if required:
            raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return None
    try:
        value = float(text)
    except ValueError:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from None
    if not value >= 0:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _int(params: dict[str, str], name: str) -> int | None:
    text = params.get(name)
    if text in (None, ""):
        return None
    try:
        return int(text)
    except ValueError:
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  "'^[0-9]{1,20}$'.") from None


def _symbol(params: dict[str, str], ex: ReplayExchange, required: bool = True) -> str | None:
    symbol = params.get("symbol")
    if not symbol:
        if required:
            raise BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        return None
    ex.market(symbol)
    return symbol


# ---------------------------------------------------------------------- public market data
@router.get("/api/v3/ping")
async def ping() -> dict[str, Any]:
    return {}


@router.get("/api/v3/time")
async def server_time(request: Request) -> dict[str, int]:
    return {"serverTime": server_ms(request)}


@router.get("/api/v3/exchangeInfo")
async def exchange_info(request: Request) -> dict[str, Any]:
    return _exchange(request).exchange_info(server_ms(request))


@router.get("/api/v3/klines")
async def klines(
    request: Request,
    symbol: str,
    interval: str,
    start_time: Annotated[int | None, Query(alias="startTime")] = None,
    end_time: Annotated[int | None, Query(alias="endTime")] = None,
    limit: int = KLINES_DEFAULT_LIMIT,
) -> list[list[Any]]:
    return _exchange(request).klines(symbol, interval, start_time, end_time, limit)


@router.get("/api/v3/depth")
async def depth(request: Request, symbol: str, limit: int = 100) -> dict[str, Any]:
    return _exchange(request).depth(symbol, limit)


def _ticker_24h(ex: ReplayExchange, sid: str) -> dict[str, Any]:
    market = ex.market(sid)
    now = ex.now()
    t = market.ticker_24h(now)
    bids, asks = market.book(now, 1)
    if t is None:
        raise BinanceError(-1121, "Invalid symbol.")
    return {"symbol": sid, "priceChange": fmt(t["change"]), "priceChangePercent": f"{t['change_pct']:.3f}",
            "weightedAvgPrice": fmt(t["weighted"]), "prevClosePrice": fmt(t["open"]), "lastPrice": fmt(t["last"]),
            "lastQty": "0.00000000", "bidPrice": fmt(bids[0][0]), "bidQty": fmt(bids[0][1]),
            "askPrice": fmt(asks[0][0]), "askQty": fmt(asks[0][1]), "openPrice": fmt(t["open"]),
            "highPrice": fmt(t["high"]), "lowPrice": fmt(t["low"]), "volume": fmt(t["volume"]),
            "quoteVolume": fmt(t["quote_volume"]), "openTime": int(t["open_time"]), "closeTime": now,
            "firstId": -1, "lastId": -1, "count": int(t["count"])}


def _many(ex: ReplayExchange, symbol: str | None, one) -> Any:
    if symbol is not None:
        return one(symbol)
    return [one(sid) for sid, m in ex.markets.items() if m.price(ex.now()) is not None]


@router.get("/api/v3/ticker/24hr")
async def ticker_24h(request: Request, symbol: str | None = None) -> Any:
    ex = _exchange(request)
    return _many(ex, symbol, lambda s: _ticker_24h(ex, s))


@router.get("/api/v3/ticker/price")
async def ticker_price(request: Request, symbol: str | None = None) -> Any:
    ex = _exchange(request)

    def one(sid: str) -> dict[str, str]:
        price = ex.market(sid).price(ex.now())
        if price is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return {"symbol": sid, "price": fmt(price)}

    return _many(ex, symbol, one)


@router.get("/api/v3/ticker/bookTicker")
async def book_ticker(request: Request, symbol: str | None = None) -> Any:
    ex = _exchange(request)

    def one(sid: str) -> dict[str, str]:
        bids, asks = ex.market(sid).book(ex.now(), 1)
        if not bids:
            raise BinanceError(-1121, "Invalid symbol.")
        return {"symbol": sid, "bidPrice": fmt(bids[0][0]), "bidQty": fmt(bids[0][1]), "askPrice": fmt(asks[0][0]),
                "askQty": fmt(asks[0][1])}

    return _many(ex, symbol, one)


# ---------------------------------------------------------------------- account and orders (signed)
@router.get("/api/v3/account")
async def account(request: Request) -> dict[str, Any]:
    acc, _ = await _signed(request)
    ex = _exchange(request)
    return acc.to_binance(ex.now(), ex.fee)


@router.post("/api/v3/order")
async def new_order(request: Request) -> Any:
    acc, params = await _signed(request)
    return await _place(request, acc, params, test=False)


@router.post("/api/v3/order/test")
async def test_order(request: Request) -> Any:
    acc, params = await _signed(request)
    return await _place(request, acc, params, test=True)


async def _place(request: Request, acc: Account, params: dict[str, str], test: bool) -> Any:
    ex = _exchange(request)
    faults = request.app.state.faults
    symbol = _symbol(params, ex)
    for name in ("side", "type"):
        if not params.get(name):
            raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    req = OrderRequest(symbol=symbol, side=params["side"].upper(), type=params["type"].upper(),
                       quantity=_number(params, "quantity"), quote_qty=_number(params, "quoteOrderQty"),
                       price=_number(params, "price"), time_in_force=params.get("timeInForce") or None,
                       client_id=params.get("newClientOrderId") or None,
                       response_type=(params.get("newOrderRespType") or "FULL").upper())
    if req.response_type not in ("ACK", "RESULT", "FULL"):
        raise BinanceError(-1100, "Illegal characters found in parameter 'newOrderRespType'.")
    if test:
        return {}
    rejected = faults.order_reject()
    if rejected is not None:
        raise BinanceError(*rejected)
    ex.engine.forced_fraction = faults.partial_fill(peek=True)
    try:
        order = ex.place_order(acc, req)
    finally:
        ex.engine.forced_fraction = None
    faults.partial_fill()  # the order was accepted: a partial_fill rule is used up now
    return order.to_binance(req.response_type)


def _order_ref(params: dict[str, str]) -> tuple[int | None, str | None]:
    order_id, client_id = _int(params, "orderId"), params.get("origClientOrderId") or None
    if order_id is None and client_id is None:
        raise BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    return order_id, client_id


@router.get("/api/v3/order")
async def query_order(request: Request) -> Any:
    acc, params = await _signed(request)
    symbol = _symbol(params, _exchange(request))
    order = acc.find(symbol, *_order_ref(params))
    if order is None:
        raise BinanceError(-2013, "Order does not exist.")
    return order.to_binance("QUERY")


@router.delete("/api/v3/order")
async def cancel_order(request: Request) -> Any:
    acc, params = await _signed(request)
    ex = _exchange(request)
    symbol = _symbol(params, ex)
    order = ex.cancel_order(acc, symbol, *_order_ref(params))
    body = order.to_binance("RESULT")
    body["origClientOrderId"] = order.client_id
    return body


@router.get("/api/v3/openOrders")
async def open_orders(request: Request) -> Any:
    acc, params = await _signed(request)
    symbol = _symbol(params, _exchange(request), required=False)
    return [o.to_binance("QUERY") for o in acc.open_orders(symbol)]


@router.delete("/api/v3/openOrders")
async def cancel_open_orders(request: Request) -> Any:
    acc, params = await _signed(request)
    ex = _exchange(request)
    symbol = _symbol(params, ex)
    return [ex.cancel_order(acc, symbol, o.order_id, None).to_binance("RESULT") for o in acc.open_orders(symbol)]


@router.get("/api/v3/allOrders")
async def all_orders(request: Request) -> Any:
    acc, params = await _signed(request)
    symbol = _symbol(params, _exchange(request))
    orders = sorted((o for o in acc.orders.values() if o.symbol == symbol), key=lambda o: o.order_id)
    limit = min(_int(params, "limit") or 500, 1000)
    return [o.to_binance("QUERY") for o in orders][-limit:]


@router.get("/api/v3/myTrades")
async def my_trades(request: Request) -> Any:
    acc, params = await _signed(request)
    symbol = _symbol(params, _exchange(request))
    order_id, from_id = _int(params, "orderId"), _int(params, "fromId")
    start, end = _int(params, "startTime"), _int(params, "endTime")
    trades = [t for t in acc.trades if t.symbol == symbol and (order_id is None or t.order_id == order_id)
              and (from_id is None or t.trade_id >= from_id) and (start is None or t.time_ms >= start)
              and (end is None or t.time_ms <= end)]
    limit = min(_int(params, "limit") or 500, 1000)
    return [t.to_binance() for t in (trades[:limit] if from_id is not None or start is not None else trades[-limit:])]


@router.get("/sapi/v1/account/apiRestrictions")
async def api_restrictions(request: Request) -> dict[str, Any]:
    acc, _ = await _signed(request)
    return {"ipRestrict": False, "createTime": 0, "enableWithdrawals": acc.can_withdraw,
            "enableInternalTransfer": False, "permitsUniversalTransfer": False, "enableVanillaOptions": False,
            "enableReading": True, "enableFutures": False, "enableMargin": False, "enableSpotAndMarginTrading": True,
            "tradingAuthorityExpirationTime": 0}


# the legacy user-data stream: a listenKey for /ws/<listenKey> (API-key header only, no signature)
@router.post("/api/v3/userDataStream")
async def new_listen_key(request: Request) -> dict[str, str]:
    acc = _key_only(request)
    key = secrets.token_hex(32)
    request.app.state.listen_keys[key] = acc.api_key
    return {"listenKey": key}


@router.put("/api/v3/userDataStream")
@router.delete("/api/v3/userDataStream")
async def keep_listen_key(request: Request) -> dict[str, Any]:
    _key_only(request)
    key = dict(parse_qsl(await _raw_params(request))).get("listenKey")
    if key not in request.app.state.listen_keys:
        raise BinanceError(-1125, "This listenKey does not exist.")
    if request.method == "DELETE":
        request.app.state.listen_keys.pop(key, None)
    return {}


def _key_only(request: Request) -> Account:
    key = request.headers.get("X-MBX-APIKEY")
    if not key:
        raise BinanceError(-2014, "API-key format invalid.", 401)
    acc = _exchange(request).account(key)
    if acc is None:
        raise BinanceError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
    return acc


# What ccxt's binance calls during load_markets with its default options (futures markets, and
# with keys also margin pairs and currencies): empty answers, as for an exchange with spot only.
@router.get("/fapi/v1/exchangeInfo")
@router.get("/dapi/v1/exchangeInfo")
async def futures_exchange_info(request: Request) -> dict[str, Any]:
    return {"timezone": "UTC", "serverTime": server_ms(request), "rateLimits": [],
            "exchangeFilters": [], "assets": [], "symbols": []}


@router.get("/sapi/v1/capital/config/getall")
@router.get("/sapi/v1/margin/allPairs")
@router.get("/sapi/v1/margin/isolated/allPairs")
async def empty_sapi_list() -> list[Any]:
    return []


# ---------------------------------------------------------------------- /sim/* control
@router.get("/sim/state")
async def sim_state(request: Request) -> dict[str, Any]:
    state = _exchange(request).state()
    state["faults"] = request.app.state.faults.describe()
    state["clock"] = request.app.state.clock_mode
    return state


@router.post("/sim/step")
async def sim_step(request: Request, bars: int = 1) -> dict[str, Any]:
    if request.app.state.clock_mode != "manual":
        raise BinanceError(-1000, f"the market clock is driven ({request.app.state.clock_mode}); start the server "
                                  "with --step manual to step it")
    if bars < 1:
        raise BinanceError(-1100, "Illegal characters found in parameter 'bars'; legal range is '>= 1'.")
    ex = _exchange(request)
    now = ex.step_bars(bars)
    await asyncio.sleep(0)  # let the websocket senders run
    return {"time": now, "time_iso": ex.state()["time_iso"]}


@router.get("/sim/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    return request.app.state.faults.describe()


@router.post("/sim/faults")
async def set_faults(request: Request) -> Any:
    try:
        spec = await request.json()
        request.app.state.faults.set(spec)
    except ValueError as exc:
        return JSONResponse({"code": -1100, "msg": str(exc)}, status_code=400)
    return request.app.state.faults.describe()


@router.post("/sim/reset")
async def sim_reset(request: Request) -> dict[str, Any]:
    await request.app.state.reset()
    return {"time": _exchange(request).now()}


@router.post("/sim/accounts")
async def sim_add_account(request: Request) -> Any:
    body = await request.json()
    if not isinstance(body, dict) or not body.get("api_key") or not body.get("api_secret"):
        return JSONResponse({"code": -1102, "msg": "send {'api_key': ..., 'api_secret': ..., 'balances': {...}}"},
                            status_code=400)
    try:
        acc = _exchange(request).add_account(str(body["api_key"]), str(body["api_secret"]), body.get("balances"),
                                             can_withdraw=bool(body.get("can_withdraw", False)))
    except ValueError as exc:
        return JSONResponse({"code": -1100, "msg": str(exc)}, status_code=400)
    return {"api_key": acc.api_key, "balances": acc.balance_rows()}


@router.get("/sim/events")
async def sim_events(request: Request, since: int = 0) -> dict[str, Any]:
    log = _exchange(request).log
    if log is None:
        raise BinanceError(-1000, "the event log is off: start the server with --event-log FILE")
    return {"next": len(log), "events": log[since:]}
