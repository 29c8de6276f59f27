"""Accounts of the replay exchange: one per API key, with balances (free and locked), orders and trades, and
their shapes on the wire (Binance's order, trade and account JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotgym.sim.errors import BinanceError
from spotgym.sim.market import fmt

__all__ = ["OPEN_STATUSES", "Account", "Fill", "Order", "Trade"]

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
_DUST = 1e-9


@dataclass
class Fill:
    """One execution of an order: ``qty`` at ``price``, ``commission`` in ``commission_asset``."""

    trade_id: int
    price: float
    qty: float
    commission: float
    commission_asset: str
    time_ms: int
    is_maker: bool

    def to_binance(self) -> dict[str, Any]:
        return {"price": fmt(self.price), "qty": fmt(self.qty), "commission": fmt(self.commission),
                "commissionAsset": self.commission_asset, "tradeId": self.trade_id}


@dataclass
class Order:
    """An order as the exchange keeps it; ``to_binance`` gives the REST shape."""

    symbol: str  # the market id, e.g. ETHUSDT
    order_id: int
    client_id: str
    side: str  # BUY / SELL
    type: str  # MARKET / LIMIT / LIMIT_MAKER
    time_in_force: str  # GTC / IOC / FOK
    price: float
    orig_qty: float
    orig_quote_qty: float
    time_ms: int
    api_key: str
    executed_qty: float = 0.0
    cum_quote: float = 0.0
    status: str = "NEW"
    update_ms: int = 0
    locked: float = 0.0  # what the order still holds locked (quote for a buy, base for a sell)
    fills: list[Fill] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> float:
        return max(round(self.orig_qty - self.executed_qty, 8), 0.0)

    def to_binance(self, response_type: str = "RESULT") -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1, "clientOrderId": self.client_id,
            "price": fmt(self.price), "origQty": fmt(self.orig_qty), "executedQty": fmt(self.executed_qty),
            "cummulativeQuoteQty": fmt(self.cum_quote), "status": self.status, "timeInForce": self.time_in_force,
            "type": self.type, "side": self.side, "workingTime": self.time_ms,
            "origQuoteOrderQty": fmt(self.orig_quote_qty), "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        if response_type == "ACK":
            return {"symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
                    "clientOrderId": self.client_id, "transactTime": self.time_ms}
        if response_type in ("RESULT", "FULL"):
            body["transactTime"] = self.time_ms
            if response_type == "FULL":
                body["fills"] = [f.to_binance() for f in self.fills]
            return body
        # GET /api/v3/order, openOrders, allOrders
        body.update(stopPrice="0.00000000", icebergQty="0.00000000", time=self.time_ms,
                    updateTime=self.update_ms or self.time_ms, isWorking=True)
        return body


@dataclass
class Trade:
    """An account's side of one fill (``myTrades``)."""

    symbol: str
    trade_id: int
    order_id: int
    price: float
    qty: float
    commission: float
    commission_asset: str
    time_ms: int
    is_buyer: bool
    is_maker: bool

    def to_binance(self) -> dict[str, Any]:
        return {"symbol": self.symbol, "id": self.trade_id, "orderId": self.order_id, "orderListId": -1,
                "price": fmt(self.price), "qty": fmt(self.qty), "quoteQty": fmt(self.price * self.qty),
                "commission": fmt(self.commission), "commissionAsset": self.commission_asset, "time": self.time_ms,
                "isBuyer": self.is_buyer, "isMaker": self.is_maker, "isBestMatch": True}


class Account:
    """One API key's account: balances ``{asset: [free, locked]}``, its orders and trades."""

    def __init__(self, api_key: str, secret: str, balances: dict[str, float], *, can_withdraw: bool = False) -> None:
        self.api_key = api_key
        self.secret = secret
        self.can_withdraw = can_withdraw
        self.balances: dict[str, list[float]] = {a: [round(float(v), 8), 0.0] for a, v in balances.items()}
        self.orders: dict[tuple[str, int], Order] = {}
        self.trades: list[Trade] = []
        self.update_ms = 0

    def free(self, asset: str) -> float:
        return self.balances.get(asset, [0.0, 0.0])[0]

    def _entry(self, asset: str) -> list[float]:
        return self.balances.setdefault(asset, [0.0, 0.0])

    def lock(self, asset: str, amount: float) -> None:
        entry = self._entry(asset)
        if amount > entry[0] + _DUST:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        entry[0] = round(max(entry[0] - amount, 0.0), 8)
        entry[1] = round(entry[1] + amount, 8)

    def unlock(self, asset: str, amount: float) -> None:
        entry = self._entry(asset)
        amount = min(amount, entry[1])
        entry[1] = round(entry[1] - amount, 8)
        entry[0] = round(entry[0] + amount, 8)

    def spend_locked(self, asset: str, amount: float) -> None:
        entry = self._entry(asset)
        entry[1] = round(max(entry[1] - amount, 0.0), 8)

    def add(self, asset: str, amount: float) -> None:
        entry = self._entry(asset)
        if entry[0] + amount < -_DUST:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        entry[0] = round(max(entry[0] + amount, 0.0), 8)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def find(self, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        if order_id is not None:
            return self.orders.get((symbol, order_id))
        for order in self.orders.values():
            if order.symbol == symbol and order.client_id == client_id:
                return order
        return None

    def balance_rows(self) -> list[dict[str, str]]:
        return [{"asset": a, "free": fmt(f), "locked": fmt(locked)} for a, (f, locked) in sorted(self.balances.items())]

    def position_event(self, now: int, assets: list[str]) -> dict[str, Any]:
        """``outboundAccountPosition`` for ``assets``."""
        rows = [{"a": a, "f": fmt(self._entry(a)[0]), "l": fmt(self._entry(a)[1])} for a in assets]
        return {"e": "outboundAccountPosition", "E": now, "u": now, "B": rows}

    def to_binance(self, now: int, fee: float) -> dict[str, Any]:
        bps = int(round(fee * 10_000))
        return {"makerCommission": bps, "takerCommission": bps, "buyerCommission": 0, "sellerCommission": 0,
                "commissionRates": {"maker": fmt(fee), "taker": fmt(fee), "buyer": "0.00000000",
                                    "seller": "0.00000000"},
                "canTrade": True, "canWithdraw": self.can_withdraw, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.update_ms or now,
                "accountType": "SPOT", "balances": self.balance_rows(), "permissions": ["SPOT"], "uid": 0}
