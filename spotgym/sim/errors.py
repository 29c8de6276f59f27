"""Error replies in Binance's shape: HTTP status + ``{"code": -1121, "msg": "Invalid symbol."}``."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = ["BinanceError", "validation_error"]


class BinanceError(Exception):
    """An error reply in Binance's shape: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.status = code, msg, status

    def response(self) -> JSONResponse:
        return JSONResponse({"code": self.code, "msg": self.msg}, status_code=self.status)


def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 for a missing / malformed parameter, in Binance's shape (-1102 / -1100)."""
    error = exc.errors()[0]
    name = error["loc"][-1]
    if error["type"] == "missing":
        return BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.").response()
    return BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.").response()
