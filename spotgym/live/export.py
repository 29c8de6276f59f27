"""``spotgym live export``: a session's journal as the files a backtest writes, so the two compare line by line.

- ``decisions.csv``: bar open time, observation hash, action, target exposure, risk verdict, the order it made;
- ``orders.csv``: client order id, side, quantity, status, exchange id, filled, average, attempts, status history;
- ``fills.csv``: the columns of a backtest's ``trades.csv`` (one row per order and bar: its trades summed, the
  price volume-weighted, the fee in quote currency; ``timestamp`` = the open time of the bar it filled in);
- ``equity.csv``: the columns of a backtest's ``equity.csv`` (``buy_and_hold``: the starting equity held in the
  base asset from the first close, without fees — the backtest's is a baseline run that pays them);
- ``events.csv``: everything the session logged (alerts, reconciliation, commands, faults it met).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from spotgym.backtest.metrics import TRADE_COLUMNS, drawdown
from spotgym.live.journal import Journal

__all__ = ["export_session", "session_status"]


def _time(ms) -> pd.Series:
    return pd.to_datetime(pd.Series(ms, dtype="int64"), unit="ms", utc=True)


def export_session(journal: Journal, out: str | Path) -> dict[str, Path]:
    row = journal.session_row()
    if row is None:
        raise ValueError(f"no session {journal.session!r} in {journal.url}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tf_ms = _timeframe_ms(journal)
    paths: dict[str, Path] = {}

    d = journal.frame("decisions")
    dec = pd.DataFrame({"timestamp": _time(d["bar_ms"]), "obs_hash": d["obs_hash"], "action": d["action"],
                        "target": d["target"], "risk": d["risk"].fillna(""), "halted": d["halted"],
                        "client_id": d["client_id"], "side": d["side"], "quantity": d["quantity"],
                        "equity": d["equity"], "position": d["position"], "cash": d["cash"]})
    paths["decisions"] = out / "decisions.csv"
    dec.to_csv(paths["decisions"], index=False)

    o = journal.frame("orders")
    orders = o[["client_id", "bar_ms", "side", "quantity", "status", "exchange_id", "filled", "average", "attempts",
                "last_error"]].copy()
    orders.insert(1, "bar", _time(o["bar_ms"]))
    orders["history"] = [" > ".join(f"{h[1]}" + (f" ({h[2]})" if h[2] else "") for h in (hist or []))
                         for hist in o["history"]]
    paths["orders"] = out / "orders.csv"
    orders.drop(columns=["bar_ms"]).to_csv(paths["orders"], index=False)

    f = journal.frame("fills")
    if len(f):
        f = f.assign(bar_ms=(f["time_ms"] // tf_ms) * tf_ms if tf_ms else f["time_ms"],
                     notional=f["quantity"] * f["price"])
        g = f.groupby(["bar_ms", "client_id", "side"], sort=True)
        agg = g.agg(quantity=("quantity", "sum"), notional=("notional", "sum"), fee=("fee_quote", "sum")).reset_index()
        agg["price"] = agg["notional"] / agg["quantity"]
        fills = pd.DataFrame({"timestamp": _time(agg["bar_ms"]), "side": agg["side"], "price": agg["price"],
                              "quantity": agg["quantity"], "notional": agg["notional"], "fee": agg["fee"]})
    else:
        fills = pd.DataFrame(columns=list(TRADE_COLUMNS))
    paths["fills"] = out / "fills.csv"
    fills[list(TRADE_COLUMNS)].to_csv(paths["fills"], index=False)

    e = journal.frame("equity")
    eq = e["equity"].to_numpy(np.float64)
    price = e["price"].to_numpy(np.float64)
    equity = pd.DataFrame({"timestamp": _time(e["bar_ms"]), "equity": eq, "exposure": e["exposure"],
                           "drawdown": drawdown(eq) if len(eq) else eq,
                           "buy_and_hold": eq[0] * price / price[0] if len(eq) else eq})
    paths["equity"] = out / "equity.csv"
    equity.to_csv(paths["equity"], index=False)

    ev = journal.frame("events")
    ev["payload"] = [json.dumps(p) for p in ev["payload"]]
    paths["events"] = out / "events.csv"
    ev.to_csv(paths["events"], index=False)
    return paths


def _timeframe_ms(journal: Journal) -> int | None:
    e = journal.frame("equity")
    if len(e) >= 2:
        return int(np.diff(np.sort(e["bar_ms"].to_numpy(np.int64))).min())
    return None


def session_status(journal: Journal) -> dict:
    """One session's headline: state, last bar, account, counts, unresolved orders."""
    row = journal.session_row()
    if row is None:
        raise ValueError(f"no session {journal.session!r} in {journal.url}")
    e = journal.frame("equity")
    last = e.iloc[-1] if len(e) else None
    return {"session": row["name"], "mode": row["mode"], "symbol": row["symbol"], "state": row["state"],
            "last_bar": None if row["last_bar_ms"] is None else str(pd.Timestamp(row["last_bar_ms"], unit="ms", tz="UTC")),
            "equity": None if last is None else float(last["equity"]),
            "position": None if last is None else float(last["position"]),
            "cash": None if last is None else float(last["cash"]),
            "halted": bool((row.get("risk_state") or {}).get("halted")),
            "unresolved_orders": len(journal.unresolved_orders()), **journal.counts()}
