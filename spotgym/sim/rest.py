"""The REST routes of the replay exchange: thin functions that parse Binance's query parameters, ask the
``ReplayExchange`` and shape the reply as Binance does."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from spotgym.sim.state import KLINES_DEFAULT_LIMIT, ReplayExchange

__all__ = ["router"]

router = APIRouter()


def _exchange(request: Request) -> ReplayExchange:
    return request.app.state.exchange


@router.get("/api/v3/time")
async def server_time(request: Request) -> dict[str, int]:
    return {"serverTime": _exchange(request).now()}


@router.get("/api/v3/exchangeInfo")
async def exchange_info(request: Request) -> dict[str, Any]:
    return _exchange(request).exchange_info()


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


# What ccxt's binance calls during load_markets with its default options (futures markets, and
# with keys also margin pairs and currencies): empty answers, as for an exchange with spot only.
@router.get("/fapi/v1/exchangeInfo")
@router.get("/dapi/v1/exchangeInfo")
async def futures_exchange_info(request: Request) -> dict[str, Any]:
    return {"timezone": "UTC", "serverTime": _exchange(request).now(), "rateLimits": [],
            "exchangeFilters": [], "assets": [], "symbols": []}


@router.get("/sapi/v1/capital/config/getall")
@router.get("/sapi/v1/margin/allPairs")
@router.get("/sapi/v1/margin/isolated/allPairs")
async def empty_sapi_list() -> list[Any]:
    return []
