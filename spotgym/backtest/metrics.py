"""Backtest metrics from an equity curve and a fill list: returns, risk, drawdowns, round trips.

Pure functions of pandas/numpy inputs (no env import), so the CLI, the notebooks and the tests
all compute the same numbers. Definitions, chosen once and used everywhere:

- **Returns** are *simple* per-bar returns ``r_t = E_t / E_{t-1} - 1``. Simple returns stay finite
  when equity approaches zero (log returns blow up) and they aggregate across assets.
- **Annualisation** of per-bar statistics (volatility, Sharpe, Sortino) uses ``periods_per_year``
  bars per year; crypto trades 24/7, so a year is 365 days of bars (``1h`` -> 8760, see
  :func:`bars_per_year`). When not given it is inferred from the median spacing of the equity
  index. **Elapsed years** (CAGR, annual turnover) are calendar time, first to last point of the
  curve / 365 days: missing bars (exchange halts) make a span no shorter.
- **Sharpe** = ``mean(r) / std(r, ddof=1) * sqrt(periods_per_year)``, risk-free rate 0.
  **Sortino** = ``mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)`` (target 0, the
  downside deviation taken over all bars). **Calmar** = ``cagr / max_drawdown``.
- **Ratios with a zero denominator** (flat equity, no drawdown, no losing trade) are ``0.0`` when
  the numerator is zero too and ``None`` when they would be unbounded (e.g. profit factor with
  wins but no losses). ``None`` also marks a value that is undefined (win rate without any round
  trip, volatility from fewer than two returns). Every value is therefore JSON-safe.
- **Drawdown** is a positive fraction below the running peak (0.25 = 25 % under the high).
  The drawdown *duration* runs from the peak bar to the first bar back at or above that peak
  (or to the last bar when never recovered), in bars and in days of wall-clock time.
- **Round trips**: spot is long-only, so a round trip is everything from a buy out of a flat
  position until the position is flat again, scale-ins and partial exits included. Prices are
  quantity-weighted averages of the trip's buys and sells (average-cost accounting); the trip's
  PnL is ``sells - buys - fees`` in quote currency, which for a flat-to-flat trip is the same
  under FIFO or average cost. Return = PnL / bought notional. A position still open at the end
  is not a round trip (its value is in the equity curve, not in the trade statistics).
- **Turnover** = total traded notional (buys + sells) / mean equity over the run;
  ``turnover_annual`` divides that by the elapsed years.
- Fees are in quote currency, as the env charges them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spotgym.data.timeframes import timeframe_to_ms

__all__ = [
    "ROUND_TRIP_COLUMNS",
    "TRADE_COLUMNS",
    "bars_per_year",
    "compute_metrics",
    "drawdown",
    "drawdown_series",
    "round_trips",
    "simple_returns",
    "to_jsonable",
    "utc_index",
    "validate_equity",
    "validate_trades",
    "write_metrics_json",
]

_YEAR_MS = 365 * 86_400_000
TRADE_COLUMNS = ("timestamp", "side", "price", "quantity", "notional", "fee")
ROUND_TRIP_COLUMNS = (
    "entry_time", "exit_time", "entry_price", "exit_price", "quantity", "fees", "pnl", "return", "n_fills",
)


def bars_per_year(timeframe: str) -> float:
    """Bars in a 365-day year of 24/7 trading for ``timeframe`` (``"1h"`` -> 8760.0)."""
    return _YEAR_MS / timeframe_to_ms(timeframe)


def utc_index(values: Any, what: str) -> pd.DatetimeIndex:
    """Timestamps as a UTC DatetimeIndex; integers are read as epoch milliseconds (the bar clock)."""
    values = pd.Index(values)
    if pd.api.types.is_integer_dtype(values.dtype):
        return pd.DatetimeIndex(pd.to_datetime(values, unit="ms", utc=True))
    if not (isinstance(values, pd.DatetimeIndex) or pd.api.types.is_object_dtype(values.dtype)):
        raise TypeError(f"{what} must hold timestamps (datetime64 or epoch ms), got dtype {values.dtype}")
    try:
        return pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must hold timestamps (datetime64 or epoch ms): {exc}") from exc


def validate_equity(equity: pd.Series) -> pd.Series:
    """Validated float copy of ``equity`` on a strictly increasing UTC index."""
    if not isinstance(equity, pd.Series):
        raise TypeError(f"equity must be a pandas Series indexed by time, got {type(equity).__name__}")
    if len(equity) < 2:
        raise ValueError(f"equity needs at least 2 points (initial equity + one bar), got {len(equity)}")
    index = utc_index(equity.index, "equity index")
    steps = np.diff(index.asi8)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise ValueError(
            f"equity index is not strictly increasing at position {i}: {index[i - 1]} then {index[i]}"
        )
    values = equity.to_numpy(dtype=np.float64, copy=True)
    if not np.isfinite(values).all():
        i = int(np.argmax(~np.isfinite(values)))
        raise ValueError(f"equity has a non-finite value {values[i]} at {index[i]}")
    if (values < 0).any():
        i = int(np.argmax(values < 0))
        raise ValueError(f"equity is negative ({values[i]}) at {index[i]}; spot equity cannot go below 0")
    if values[0] <= 0:
        raise ValueError(f"initial equity must be positive, got {values[0]}")
    return pd.Series(values, index=index, name=equity.name)


def validate_trades(trades: pd.DataFrame | None) -> pd.DataFrame:
    """Validated fills in :data:`TRADE_COLUMNS` order; ``notional`` is price * quantity when absent."""
    if trades is None:
        trades = pd.DataFrame(columns=list(TRADE_COLUMNS))
    if not isinstance(trades, pd.DataFrame):
        raise TypeError(f"trades must be a pandas DataFrame, got {type(trades).__name__}")
    missing = [c for c in ("timestamp", "side", "price", "quantity", "fee") if c not in trades.columns]
    if missing:
        raise ValueError(f"trades is missing columns {missing}; expected {list(TRADE_COLUMNS)}")
    times = utc_index(trades["timestamp"], "trades['timestamp']")
    fills = pd.DataFrame({"timestamp": times})
    fills["side"] = trades["side"].astype(str).str.lower().to_numpy()
    bad_side = ~fills["side"].isin(["buy", "sell"])
    if bad_side.any():
        raise ValueError(f"trades['side'] must be 'buy' or 'sell', got {fills['side'][bad_side].iloc[0]!r}")
    for column in ("price", "quantity", "fee"):
        fills[column] = pd.to_numeric(trades[column]).to_numpy(dtype=np.float64)
    notional = trades["notional"] if "notional" in trades.columns else fills["price"] * fills["quantity"]
    fills["notional"] = pd.to_numeric(notional).to_numpy(dtype=np.float64)
    fills = fills[list(TRADE_COLUMNS)]
    numbers = fills[["price", "quantity", "notional", "fee"]].to_numpy()
    if not np.isfinite(numbers).all():
        raise ValueError("trades has non-finite price, quantity, notional or fee")
    if (fills["price"] <= 0).any() or (fills["quantity"] <= 0).any():
        raise ValueError("trades must have price > 0 and quantity > 0 (side gives the direction)")
    if (fills["fee"] < 0).any():
        raise ValueError("trades['fee'] must be >= 0 (fees paid, in quote currency)")
    steps = np.diff(times.asi8)
    if (steps < 0).any():
        i = int(np.argmax(steps < 0)) + 1
        raise ValueError(f"trades are not sorted by timestamp at row {i}")
    return fills.reset_index(drop=True)


def drawdown(equity: Any) -> np.ndarray:
    """Fraction below the running peak at each point of an equity array (0 at a new high, 1 at zero equity)."""
    eq = np.asarray(equity, dtype=np.float64)
    return 1.0 - eq / np.maximum.accumulate(eq)


def drawdown_series(equity: pd.Series) -> pd.Series:
    """``drawdown`` of a validated equity curve, on its time index."""
    eq = validate_equity(equity)
    return pd.Series(drawdown(eq.to_numpy()), index=eq.index, name="drawdown")


def simple_returns(equity: Any) -> np.ndarray:
    """Per-bar simple returns ``E_t / E_{t-1} - 1`` of an equity array (0 once equity is 0: a ruined account
    stays at 0)."""
    eq = np.asarray(equity, dtype=np.float64)
    prev = eq[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(prev > 0, eq[1:] / prev - 1.0, 0.0)


def round_trips(trades: pd.DataFrame | None) -> pd.DataFrame:
    """Closed flat-to-flat round trips of a long-only fill list, one row each (:data:`ROUND_TRIP_COLUMNS`).

    A sell larger than the open position raises ValueError (spot cannot go short); a position
    counts as flat when what is left is below 1e-9 of the quantity bought in the trip (float dust).
    """
    fills = validate_trades(trades)
    rows: list[dict[str, Any]] = []
    trip: dict[str, Any] | None = None
    for row, (ts, side, qty, notional, fee) in enumerate(
        fills[["timestamp", "side", "quantity", "notional", "fee"]].itertuples(index=False)
    ):
        if side == "buy":
            if trip is None:
                trip = {"entry_time": ts, "bought": 0.0, "cost": 0.0, "sold": 0.0, "proceeds": 0.0,
                        "fees": 0.0, "n_fills": 0}
            trip["bought"] += qty
            trip["cost"] += notional
        else:
            held = 0.0 if trip is None else trip["bought"] - trip["sold"]
            dust = 0.0 if trip is None else 1e-9 * trip["bought"]
            if trip is None or qty > held + dust:
                raise ValueError(f"sell of {qty} at row {row} ({ts}) exceeds the open position {held}; "
                                 "spot cannot go short")
            trip["sold"] += qty
            trip["proceeds"] += notional
        trip["fees"] += fee
        trip["n_fills"] += 1
        if side == "sell" and trip["bought"] - trip["sold"] <= 1e-9 * trip["bought"]:
            pnl = trip["proceeds"] - trip["cost"] - trip["fees"]
            rows.append({
                "entry_time": trip["entry_time"], "exit_time": ts,
                "entry_price": trip["cost"] / trip["bought"], "exit_price": trip["proceeds"] / trip["sold"],
                "quantity": trip["bought"], "fees": trip["fees"], "pnl": pnl, "return": pnl / trip["cost"],
                "n_fills": trip["n_fills"],
            })
            trip = None
    out = pd.DataFrame(rows, columns=list(ROUND_TRIP_COLUMNS))
    for column in ("entry_time", "exit_time"):
        out[column] = pd.to_datetime(out[column], utc=True)
    return out.astype({"n_fills": "int64"})


def _ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator; 0.0 for 0/0 and None when unbounded (x/0) — see module docstring."""
    if denominator == 0:
        return 0.0 if numerator == 0 else None
    return float(numerator / denominator)


def _drawdown_duration(eq: np.ndarray, times: pd.DatetimeIndex) -> tuple[int, float]:
    """Longest peak-to-recovery spell in bars (to the last bar if unrecovered) and its length in days."""
    at_peak = eq >= np.maximum.accumulate(eq)
    positions = np.arange(len(eq))
    last_peak = np.maximum.accumulate(np.where(at_peak, positions, 0))
    # spells end where the curve is back at a peak after being under it, or at the last bar
    ends = positions[1:][at_peak[1:] & ~at_peak[:-1]]
    if not at_peak[-1]:
        ends = np.append(ends, len(eq) - 1)
    if len(ends) == 0:
        return 0, 0.0
    starts = last_peak[ends - 1]
    longest = int(np.argmax(ends - starts))
    days = (times[ends[longest]] - times[starts[longest]]) / pd.Timedelta(days=1)
    return int(ends[longest] - starts[longest]), float(days)


def compute_metrics(
    equity: pd.Series,
    trades: pd.DataFrame | None = None,
    exposure: pd.Series | np.ndarray | None = None,
    *,
    periods_per_year: float | None = None,
) -> dict[str, Any]:
    """All backtest metrics of one equity curve as a JSON-safe dict (definitions: module docstring).

    ``equity``: equity per bar on a UTC time index, first point = initial equity before the first
    decision. ``trades``: one row per fill (:data:`TRADE_COLUMNS`; None = no fills). ``exposure``:
    fraction of equity held in the asset per bar (len(equity) or len(equity) - 1 values), optional.
    ``periods_per_year``: bars per year (see :func:`bars_per_year`); inferred from the index if None.
    """
    eq_series = validate_equity(equity)
    eq = eq_series.to_numpy()
    times = eq_series.index
    n_bars = len(eq) - 1
    if periods_per_year is None:
        periods_per_year = pd.Timedelta(days=365) / (times[1:] - times[:-1]).median()
    if not (math.isfinite(periods_per_year) and periods_per_year > 0):
        raise ValueError(f"periods_per_year must be a positive number, got {periods_per_year}")
    years = (times[-1] - times[0]) / pd.Timedelta(days=365)  # calendar time: gaps do not shorten it

    returns = simple_returns(eq)
    mean = float(returns.mean())
    std = float(returns.std(ddof=1)) if n_bars > 1 else math.nan
    downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2)))
    scale = math.sqrt(periods_per_year)

    growth = eq[-1] / eq[0]
    if growth == 0:
        cagr: float | None = -1.0
    else:
        with np.errstate(over="ignore"):
            cagr = float(np.expm1(np.log(growth) / years))
        cagr = cagr if math.isfinite(cagr) else None
    max_dd = float(drawdown(eq).max())
    dd_bars, dd_days = _drawdown_duration(eq, times)

    fills = validate_trades(trades)
    trips = round_trips(fills)
    pnl = trips["pnl"].to_numpy()
    wins, losses = trips["return"][pnl > 0], trips["return"][pnl < 0]
    gross_profit, gross_loss = float(pnl[pnl > 0].sum()), float(-pnl[pnl < 0].sum())
    traded = float(fills["notional"].sum())
    turnover = traded / float(eq.mean()) if eq.mean() > 0 else 0.0

    exposure_mean = None
    if exposure is not None:
        exp = np.asarray(exposure, dtype=np.float64)
        if exp.ndim != 1 or len(exp) not in (len(eq), n_bars):
            raise ValueError(f"exposure must be 1-D with {len(eq)} or {n_bars} values, got shape {exp.shape}")
        if not np.isfinite(exp).all():
            raise ValueError("exposure has non-finite values")
        exposure_mean = float(exp.mean())

    metrics = {
        "total_return": float(growth - 1.0),
        "cagr": cagr,
        "annual_volatility": std * scale if math.isfinite(std) else None,
        "sharpe": _ratio(mean * scale, std) if math.isfinite(std) else None,
        "sortino": _ratio(mean * scale, downside),
        "calmar": None if cagr is None else _ratio(cagr, max_dd),
        "max_drawdown": max_dd,
        "max_drawdown_duration": dd_bars,
        "max_drawdown_duration_days": dd_days,
        "profit_factor": _ratio(gross_profit, gross_loss) if len(trips) else None,
        "win_rate": len(wins) / len(trips) if len(trips) else None,
        "avg_win": float(wins.mean()) if len(wins) else None,
        "avg_loss": float(losses.mean()) if len(losses) else None,
        "n_trades": len(fills),
        "n_round_trips": len(trips),
        "exposure": exposure_mean,
        "turnover": turnover,
        "turnover_annual": turnover / years,
        "fees_paid": float(fills["fee"].sum()),
        "final_equity": float(eq[-1]),
        "initial_equity": float(eq[0]),
        "n_bars": n_bars,
        "periods_per_year": float(periods_per_year),
        "start": times[0].isoformat(),
        "end": times[-1].isoformat(),
    }
    return to_jsonable(metrics)


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python ones, NaN/inf into None, times into ISO text.

    Recurses through mappings, lists and tuples so a whole ``metrics.json`` document can be passed.
    """
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [to_jsonable(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
    if value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return None if pd.isna(value) else pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot make {type(value).__name__} JSON-safe: {value!r}")


def write_metrics_json(path: str | Path, agent: Mapping[str, Any], baselines: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{"agent": {...}, "baselines": {name: {...}}}`` as strict JSON (no NaN/Infinity)."""
    path = Path(path)
    document = to_jsonable({"agent": agent, "baselines": baselines})
    path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
    return path
