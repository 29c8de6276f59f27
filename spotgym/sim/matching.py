"""Order matching of the replay exchange: validation under the symbol's trading rules, MARKET orders that walk
the synthetic book, LIMIT orders (GTC / IOC / FOK, LIMIT_MAKER) that take what crosses the book on arrival
and otherwise rest until a trade of the tick path reaches their price, fees per fill, locked balances, and
the user-data events (``executionReport``, ``outboundAccountPosition``) of every change.

Fees follow Binance's default: the commission is taken from what the account receives (the base asset on a
buy, the quote asset on a sell), at the configured rate for makers and takers alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spotgym.sim.accounts import Account, Fill, Order, Trade
from spotgym.sim.errors import BinanceError
from spotgym.sim.market import Market, Tick, fmt

__all__ = ["MatchingEngine", "OrderRequest"]

SIDES = ("BUY", "SELL")
# who pays the commission: "received" (Binance's default: the asset the fill brings in) or "quote" (always the
# quote asset, as for an account that pays fees in BNB valued in quote: the traded balances are the env's own
# accounting, where cash pays the fee)
FEE_ASSETS = ("received", "quote")
TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER")
TIFS = ("GTC", "IOC", "FOK")
_EPS = 1e-9


@dataclass
class OrderRequest:
    """A new order as the REST layer parsed it (strings not yet checked against the rules)."""

    symbol: str
    side: str
    type: str
    quantity: float | None = None
    quote_qty: float | None = None
    price: float | None = None
    time_in_force: str | None = None
    client_id: str | None = None
    response_type: str | None = None


def _on_step(value: float, step: float) -> bool:
    if step <= 0:
        return True
    ratio = value / step
    return abs(ratio - round(ratio)) < 1e-6


def _floor(value: float, step: float) -> float:
    if step <= 0:
        return round(value, 8)
    return round(math.floor(value / step + _EPS) * step, 8)


class MatchingEngine:
    """Orders of every account on every symbol; ``publish(account, event)`` receives the user-data events."""

    def __init__(self, markets: dict[str, Market], fee: float, publish: Callable[[Account, dict[str, Any]], None],
                 fee_asset: str = "received") -> None:
        if fee_asset not in FEE_ASSETS:
            raise ValueError(f"fee_asset must be one of {FEE_ASSETS}, got {fee_asset!r}")
        self.markets = markets
        self.fee = float(fee)
        self.fee_asset = fee_asset
        self.publish = publish
        self.next_order_id = dict.fromkeys(markets, 1)
        self.next_trade_id = dict.fromkeys(markets, 1)
        self.resting: dict[str, list[tuple[Account, Order]]] = {s: [] for s in markets}
        self._taken: dict[tuple[str, str], dict[float, float]] = {}  # liquidity taken from the book this tick
        self.forced_fraction: float | None = None  # a partial_fill fault: fill only this share of the next order

    # ------------------------------------------------------------------ ids, book
    def trade_id(self, symbol: str) -> int:
        tid = self.next_trade_id[symbol]
        self.next_trade_id[symbol] = tid + 1
        return tid

    def new_tick(self, symbol: str) -> None:
        """The book is the ladder of the new tick again: liquidity taken earlier is replenished."""
        self._taken.pop((symbol, "BUY"), None)
        self._taken.pop((symbol, "SELL"), None)

    def _levels(self, market: Market, side: str, now: int) -> list[list[float]]:
        """Price levels a taker on ``side`` meets (asks for a buy, bids for a sell), less what was taken."""
        bids, asks = market.book(now)
        levels = asks if side == "BUY" else bids
        taken = self._taken.get((market.market_id, side), {})
        return [[p, round(q - taken.get(p, 0.0), 8)] for p, q in levels if q - taken.get(p, 0.0) > _EPS]

    def _take(self, symbol: str, side: str, price: float, qty: float) -> None:
        taken = self._taken.setdefault((symbol, side), {})
        taken[price] = round(taken.get(price, 0.0) + qty, 8)

    # ------------------------------------------------------------------ validation
    def _market(self, symbol: str) -> Market:
        market = self.markets.get(symbol)
        if market is None:
            raise BinanceError(-1121, "Invalid symbol.")
        return market

    def _check_qty(self, market: Market, qty: float) -> None:
        r = market.rules
        if qty <= 0 or qty < r.min_qty - _EPS or (r.max_qty and qty > r.max_qty + _EPS) or not _on_step(qty, r.step_size):
            raise BinanceError(-1013, "Filter failure: LOT_SIZE")

    def _check_price(self, market: Market, price: float) -> None:
        r = market.rules
        if price <= 0 or price < r.min_price - _EPS or (r.max_price and price > r.max_price + _EPS) or \
                not _on_step(price, r.tick_size):
            raise BinanceError(-1013, "Filter failure: PRICE_FILTER")

    def _check_notional(self, market: Market, notional: float) -> None:
        r = market.rules
        if notional < r.min_notional - _EPS or (r.max_notional and notional > r.max_notional + _EPS):
            raise BinanceError(-1013, "Filter failure: NOTIONAL")

    # ------------------------------------------------------------------ placing
    def place(self, account: Account, req: OrderRequest, now: int) -> Order:
        """Validate and execute a new order; BinanceError on a rejection (nothing changed then)."""
        market = self._market(req.symbol)
        side, kind = req.side, req.type
        if side not in SIDES:
            raise BinanceError(-1117, "Invalid side.")
        if kind not in TYPES:
            raise BinanceError(-1116, "Invalid orderType.")
        if req.client_id and any(o.client_id == req.client_id for o in account.open_orders()):
            raise BinanceError(-2010, "Duplicate order sent.")
        if kind == "MARKET":
            if (req.quantity is None) == (req.quote_qty is None):
                raise BinanceError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!"
                                   if req.quantity is None else
                                   "Mandatory parameter 'quantity' and 'quoteOrderQty' cannot be sent together.")
            tif = "GTC"
        else:
            for name, value in (("quantity", req.quantity), ("price", req.price)):
                if value is None:
                    raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
            tif = req.time_in_force or ("GTC" if kind == "LIMIT_MAKER" else None)
            if tif is None:
                raise BinanceError(-1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
            if tif not in TIFS:
                raise BinanceError(-1115, "Invalid timeInForce.")
            self._check_price(market, req.price)
        if req.quantity is not None:
            self._check_qty(market, req.quantity)
        order_id = self.next_order_id[req.symbol]
        order = Order(symbol=req.symbol, order_id=order_id, client_id=req.client_id or f"sim-{req.symbol}-{order_id}",
                      side=side, type=kind, time_in_force=tif, price=req.price or 0.0,
                      orig_qty=req.quantity or 0.0, orig_quote_qty=req.quote_qty or 0.0, time_ms=now,
                      api_key=account.api_key, update_ms=now)
        if kind == "MARKET":
            self._execute_market(account, market, order, now)
        else:
            self._execute_limit(account, market, order, now)
        self.next_order_id[req.symbol] = order_id + 1
        account.orders[(req.symbol, order_id)] = order
        account.update_ms = now
        self.forced_fraction = None
        return order

    def _fraction(self) -> float:
        return 1.0 if self.forced_fraction is None else self.forced_fraction

    def _walk(self, market: Market, side: str, now: int, qty: float | None, quote: float | None,
              limit: float | None) -> list[tuple[float, float]]:
        """(price, qty) pieces a taker gets walking the book, up to ``qty`` base or ``quote`` quote, within
        ``limit`` (a LIMIT order's price)."""
        step = market.rules.step_size
        pieces = []
        for price, available in self._levels(market, side, now):
            if limit is not None and ((side == "BUY" and price > limit + _EPS) or (side == "SELL" and price < limit - _EPS)):
                break
            if qty is not None:
                take = min(available, qty)
                qty = round(qty - take, 8)
            else:
                take = min(available, _floor(quote / price, step))
                quote = round(quote - take * price, 8)
            if take > _EPS:
                pieces.append((price, round(take, 8)))
            if (qty is not None and qty <= _EPS) or (quote is not None and _floor(quote / price, step) <= _EPS):
                break
        return pieces

    def _execute_market(self, account: Account, market: Market, order: Order, now: int) -> None:
        if market.price(now) is None:
            raise BinanceError(-1013, "Market is closed.")
        pieces = self._walk(market, order.side, now, order.orig_qty or None, order.orig_quote_qty or None, None)
        total = round(sum(q for _, q in pieces), 8)
        cost = sum(p * q for p, q in pieces)
        last = market.price(now) or 0.0
        if order.orig_qty:
            self._check_notional(market, order.orig_qty * last)
        else:
            self._check_notional(market, order.orig_quote_qty)
            if total <= _EPS:
                raise BinanceError(-1013, "Filter failure: LOT_SIZE")
            order.orig_qty = total
        # a buy must be payable as a whole: at least its quantity at the best ask, even past the book's depth
        needed = max(cost, (order.orig_qty * pieces[0][0]) if pieces and order.orig_qty else 0.0)
        if self.fee_asset == "quote":
            needed *= 1.0 + self.fee  # the commission leaves the quote balance too
        if order.side == "BUY" and needed > account.free(market.quote) + _EPS:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        if order.side == "SELL" and (order.orig_qty or total) > account.free(market.base) + _EPS:
            raise BinanceError(-2010, "Account has insufficient balance for requested action.")
        pieces = self._scaled(pieces, market)
        self._report(account, market, order, now, "NEW")
        for price, qty in pieces:
            self._fill(account, market, order, price, qty, now, maker=False, locked=False)
        if order.remaining > _EPS:
            order.status = "EXPIRED"
            self._report(account, market, order, now, "EXPIRED")
        self._position(account, market, now)

    def _scaled(self, pieces: list[tuple[float, float]], market: Market) -> list[tuple[float, float]]:
        """The pieces cut to the forced fraction of a partial_fill fault (whole lot steps)."""
        fraction = self._fraction()
        if fraction >= 1.0:
            return pieces
        budget = _floor(sum(q for _, q in pieces) * fraction, market.rules.step_size)
        out = []
        for price, qty in pieces:
            take = min(qty, budget)
            if take > _EPS:
                out.append((price, take))
            budget = round(budget - take, 8)
        return out

    def _execute_limit(self, account: Account, market: Market, order: Order, now: int) -> None:
        self._check_notional(market, order.price * order.orig_qty)
        pieces = self._walk(market, order.side, now, order.orig_qty, None, order.price)
        fillable = round(sum(q for _, q in pieces), 8)
        if order.type == "LIMIT_MAKER" and pieces:
            raise BinanceError(-2010, "Order would immediately match and take.")
        if order.side == "BUY":
            asset, amount = market.quote, round(order.price * order.orig_qty, 8)
        else:
            asset, amount = market.base, order.orig_qty
        account.lock(asset, amount)  # raises -2010 when the balance is short
        order.locked = amount
        self._report(account, market, order, now, "NEW")
        if order.time_in_force == "FOK" and fillable < order.orig_qty - _EPS:
            self._close(account, market, order, now, "EXPIRED")
            return
        for price, qty in self._scaled(pieces, market):
            self._fill(account, market, order, price, qty, now, maker=False, locked=True)
        if order.remaining <= _EPS:
            self._position(account, market, now)
            return
        if order.time_in_force in ("IOC", "FOK"):
            self._close(account, market, order, now, "EXPIRED")
            return
        self.resting[order.symbol].append((account, order))
        self._position(account, market, now)

    # ------------------------------------------------------------------ fills
    def _fill(self, account: Account, market: Market, order: Order, price: float, qty: float, now: int, *,
              maker: bool, locked: bool) -> None:
        quote = round(price * qty, 8)
        quote_fee = self.fee_asset == "quote"
        if order.side == "BUY":
            commission, asset = ((round(quote * self.fee, 8), market.quote) if quote_fee
                                 else (round(qty * self.fee, 8), market.base))
            if locked:
                locked_part = round(order.price * qty, 8)  # locked at the limit price, paid at the fill price
                account.spend_locked(market.quote, locked_part)
                account.add(market.quote, round(locked_part - quote, 8))
                order.locked = round(order.locked - locked_part, 8)
            else:
                account.add(market.quote, -quote)
            if quote_fee:
                account.add(market.quote, -commission)
                account.add(market.base, qty)
            else:
                account.add(market.base, round(qty - commission, 8))
        else:
            commission, asset = round(quote * self.fee, 8), market.quote
            if locked:
                account.spend_locked(market.base, qty)
                order.locked = round(order.locked - qty, 8)
            else:
                account.add(market.base, -qty)
            account.add(market.quote, round(quote - commission, 8))
        if not maker:
            self._take(market.market_id, order.side, price, qty)
        trade_id = self.trade_id(market.market_id)
        order.executed_qty = round(order.executed_qty + qty, 8)
        order.cum_quote = round(order.cum_quote + quote, 8)
        order.status = "FILLED" if order.remaining <= _EPS else "PARTIALLY_FILLED"
        order.update_ms = now
        fill = Fill(trade_id, price, qty, commission, asset, now, maker)
        order.fills.append(fill)
        account.trades.append(Trade(order.symbol, trade_id, order.order_id, price, qty, commission, asset, now,
                                    order.side == "BUY", maker))
        self._report(account, market, order, now, "TRADE", fill)

    def _close(self, account: Account, market: Market, order: Order, now: int, status: str) -> None:
        """Cancel or expire ``order``: unlock what it still holds; report and push the balances."""
        if order.locked > 0:
            account.unlock(market.quote if order.side == "BUY" else market.base, order.locked)
            order.locked = 0.0
        order.status = status
        order.update_ms = now
        self.resting[order.symbol] = [(a, o) for a, o in self.resting[order.symbol] if o is not order]
        self._report(account, market, order, now, "CANCELED" if status == "CANCELED" else status)
        self._position(account, market, now)

    def cancel(self, account: Account, symbol: str, order_id: int | None, client_id: str | None, now: int) -> Order:
        market = self._market(symbol)
        order = account.find(symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise BinanceError(-2011, "Unknown order sent.")
        self._close(account, market, order, now, "CANCELED")
        return order

    def on_tick(self, market: Market, tick: Tick) -> None:
        """Resting orders that the tick's trade reaches fill at their own price (as makers), oldest first,
        sharing the tick's volume."""
        book = self.resting[market.market_id]
        if not book:
            return
        volume = tick.qty
        for account, order in sorted(book, key=lambda ao: ao[1].order_id):
            if volume <= _EPS:
                break
            crossed = tick.price <= order.price if order.side == "BUY" else tick.price >= order.price
            if not crossed or not order.is_open:
                continue
            qty = min(order.remaining, _floor(volume, market.rules.step_size))
            if qty <= _EPS:
                continue
            self._fill(account, market, order, order.price, qty, tick.time_ms, maker=True, locked=True)
            volume = round(volume - qty, 8)
            if not order.is_open and order.locked > 0:  # rounding left-overs of the lock
                account.unlock(market.quote if order.side == "BUY" else market.base, order.locked)
                order.locked = 0.0
            self._position(account, market, tick.time_ms)
        self.resting[market.market_id] = [(a, o) for a, o in book if o.is_open]

    # ------------------------------------------------------------------ events
    def _report(self, account: Account, market: Market, order: Order, now: int, execution: str,
                fill: Fill | None = None) -> None:
        self.publish(account, {
            "e": "executionReport", "E": now, "s": order.symbol, "c": order.client_id, "S": order.side,
            "o": order.type, "f": order.time_in_force, "q": fmt(order.orig_qty), "p": fmt(order.price),
            "P": "0.00000000", "F": "0.00000000", "g": -1, "C": order.client_id if execution == "CANCELED" else "",
            "x": execution, "X": order.status if execution != "NEW" else "NEW", "r": "NONE", "i": order.order_id,
            "l": fmt(fill.qty if fill else 0.0), "z": fmt(order.executed_qty), "L": fmt(fill.price if fill else 0.0),
            "n": fmt(fill.commission if fill else 0.0), "N": fill.commission_asset if fill else None,
            "T": now, "t": fill.trade_id if fill else -1, "I": 0, "w": order.is_open, "m": bool(fill and fill.is_maker),
            "M": False, "O": order.time_ms, "Z": fmt(order.cum_quote),
            "Y": fmt(fill.price * fill.qty if fill else 0.0), "Q": fmt(order.orig_quote_qty), "W": order.time_ms,
            "V": "EXPIRE_MAKER"})

    def _position(self, account: Account, market: Market, now: int) -> None:
        account.update_ms = now
        self.publish(account, account.position_event(now, [market.base, market.quote]))
