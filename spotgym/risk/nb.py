"""The risk layer's numba kernels: the gate between an action's target exposure and its fill.

``risk_gate_nb`` is called by the env's step kernels (``spotgym.envs.nb``) for every decision, after the
action has become a target and before the order is filled, and by the live seam when it plans an order:
training, backtest and live apply the same rules through this one function.

The time contract: the gate of the decision on row t reads only what is known at the close of t: the
account marked at ``close[t]`` (equity, units, average entry price, bars in position), ``close[t]``
itself, the realised volatility of the returns up to t and the forecast column's value at t. The order
it lets through fills at the next bar's open, like every order. A stop therefore triggers on a close and
fills at the next open (no intrabar peeking, in backtest as in live).

Layouts (this module owns them; the env allocates the arrays):

- ``rs`` float64 (N, N_RS + max_orders_per_hour): per-account risk state: the equity peak the drawdown
  rule measures from (equity at decision points), the highest close since entry, whether trading is
  halted and since which row, the current UTC day and its start equity, the last gate's flags, and a
  ring of the decision times of the last orders (for ``max_orders_per_hour``);
- ``rp`` float64 (N_RP,): the rules' parameters (0 = off);
- ``rx`` float64 (T, N_RX) per row: the decision time (the row's close time, ms), prefix sums of the
  one-bar log returns and of their squares (realised volatility over any window in O(1)), and the
  per-bar return forecast for the Kelly rule (NaN where undefined).

Rules, in order (the first three force an exit and override the others; an exit is never held back by
the order-rate or holding-time limits):

1. drawdown halt: equity at or below ``(1 - max_drawdown)`` x its peak -> flatten and stay flat; the halt
   lasts until a manual reset (``reset_halt_nb``) or, with ``halt_cooldown_bars``, that many bars, after
   which the peak restarts from the equity then;
2. stop-loss / take-profit on the average entry price, trailing stop on the highest close since entry
   (closes at decision rows), all judged on ``close[t]``;
3. sizing of the agent's target: volatility targeting (target x vol_target / realised vol, annualised),
   fractional Kelly cap (kelly_fraction x forecast / variance per bar), then the exposure cap;
4. limits on changing the position: no increase after the day's loss passed ``daily_loss_limit``; no
   decrease before ``min_holding_bars`` bars in position; no order past ``max_orders_per_hour`` orders
   in the rolling hour. A vetoed change holds the position (no order).

Every rule that changed the decision sets its bit in the gate's flags (``FLAG_NAMES``), which the env
reports in ``info["risk"]`` and the backtest writes to ``decisions.csv``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from spotgym.risk.config import DEFAULT_VOL_WINDOW, RiskConfig

# --------------------------------------------------------------------------- layouts
# rs columns; the order ring follows at R_RING
R_PEAK, R_HIGH, R_HALTED, R_HALT_ROW, R_DAY, R_DAY_EQ, R_FLAGS, R_RING_POS, R_LAST_ORDER = range(9)
N_RS = 9
R_RING = N_RS
# rp entries
(RP_ON, RP_MAX_EXPOSURE, RP_VOL_TARGET, RP_VOL_WINDOW, RP_KELLY, RP_KELLY_HORIZON, RP_STOP_LOSS,
 RP_TAKE_PROFIT, RP_TRAILING, RP_MAX_DD, RP_COOLDOWN, RP_DAILY, RP_MAX_ORDERS, RP_MIN_HOLD, RP_DEADBAND,
 RP_BARS_PER_YEAR) = range(16)
N_RP = 16
# rx columns
X_TIME, X_CUM_R, X_CUM_R2, X_MU = range(4)
N_RX = 4

# gate flags: what changed a decision
(FLAG_MAX_EXPOSURE, FLAG_VOL_TARGET, FLAG_KELLY, FLAG_STOP_LOSS, FLAG_TAKE_PROFIT, FLAG_TRAILING_STOP,
 FLAG_DRAWDOWN_HALT, FLAG_DAILY_LOSS, FLAG_ORDER_RATE, FLAG_MIN_HOLDING) = (1 << k for k in range(10))
FLAG_NAMES: dict[int, str] = {
    FLAG_MAX_EXPOSURE: "max_exposure", FLAG_VOL_TARGET: "vol_target", FLAG_KELLY: "kelly",
    FLAG_STOP_LOSS: "stop_loss", FLAG_TAKE_PROFIT: "take_profit", FLAG_TRAILING_STOP: "trailing_stop",
    FLAG_DRAWDOWN_HALT: "drawdown_halt", FLAG_DAILY_LOSS: "daily_loss_limit", FLAG_ORDER_RATE: "max_orders_per_hour",
    FLAG_MIN_HOLDING: "min_holding_bars",
}
FORCED_EXIT = FLAG_STOP_LOSS | FLAG_TAKE_PROFIT | FLAG_TRAILING_STOP | FLAG_DRAWDOWN_HALT

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
_EPS = 1e-12


def flag_names(flags: int) -> list[str]:
    """The rules whose bits are set in ``flags``, in rule order."""
    return [name for bit, name in FLAG_NAMES.items() if int(flags) & bit]


# --------------------------------------------------------------------------- series
@njit(cache=True, error_model="numpy")
def fill_series_nb(rx, close, times, bar_ms, start):
    """Fill rows ``start..`` of ``rx``'s time and return-sum columns from ``close`` and the open ``times``
    (row r's decision time is its close: ``times[r] + bar_ms``). Row 0's return is 0."""
    n = close.shape[0]
    for r in range(start, n):
        rx[r, X_TIME] = float(times[r] + bar_ms)
        ret = 0.0
        if r > 0 and close[r - 1] > 0.0 and close[r] > 0.0:
            ret = math.log(close[r] / close[r - 1])
        prev1 = rx[r - 1, X_CUM_R] if r > 0 else 0.0
        prev2 = rx[r - 1, X_CUM_R2] if r > 0 else 0.0
        rx[r, X_CUM_R] = prev1 + ret
        rx[r, X_CUM_R2] = prev2 + ret * ret


@njit(cache=True, error_model="numpy", inline="always")
def bar_variance_nb(rx, row, window):
    """Variance of the one-bar log returns of rows ``row - window + 1 .. row`` (-1 when they do not exist)."""
    if window < 2 or row - window < 0:
        return -1.0
    s1 = rx[row, X_CUM_R] - rx[row - window, X_CUM_R]
    s2 = rx[row, X_CUM_R2] - rx[row - window, X_CUM_R2]
    m = s1 / window
    var = s2 / window - m * m
    return var if var > 0.0 else 0.0


# --------------------------------------------------------------------------- state
@njit(cache=True, error_model="numpy", inline="always")
def reset_risk_nb(rs, i, cash0):
    """Account ``i``'s risk state at the start of an episode: not halted, peak = the starting cash."""
    for k in range(rs.shape[1]):
        rs[i, k] = 0.0
    rs[i, R_PEAK] = cash0
    rs[i, R_HALT_ROW] = -1.0
    rs[i, R_DAY] = -1.0
    rs[i, R_LAST_ORDER] = -1.0


@njit(cache=True, error_model="numpy")
def reset_halt_nb(rs, i, equity):
    """Lift account ``i``'s drawdown halt by hand: entries resume, the peak restarts at ``equity``."""
    rs[i, R_HALTED] = 0.0
    rs[i, R_HALT_ROW] = -1.0
    rs[i, R_PEAK] = equity


@njit(cache=True, error_model="numpy", inline="always")
def record_order_nb(rs, i, rp, decision_ms):
    """Account ``i`` sent an order decided at ``decision_ms`` (once per decision; idempotent)."""
    cap = int(rp[RP_MAX_ORDERS])
    if cap <= 0 or rs[i, R_LAST_ORDER] == decision_ms:
        return
    pos = int(rs[i, R_RING_POS])
    rs[i, R_RING + pos] = decision_ms
    rs[i, R_RING_POS] = (pos + 1) % cap
    rs[i, R_LAST_ORDER] = decision_ms


@njit(cache=True, error_model="numpy", inline="always")
def orders_in_hour_nb(rs, i, cap, decision_ms):
    """Orders account ``i`` sent in the hour before ``decision_ms`` (ring slots hold 0 when unused)."""
    count = 0
    for k in range(cap):
        t = rs[i, R_RING + k]
        if t > 0.0 and t > decision_ms - HOUR_MS:
            count += 1
    return count


# --------------------------------------------------------------------------- the gate
@njit(cache=True, error_model="numpy")
def risk_gate_nb(rs, i, rp, rx, row, close, equity, units, entry, bars, target, hold):
    """The risk rules on account ``i``'s decision at ``row``: returns ``(target, hold, flags)``.

    ``close``, ``equity``, ``units``, ``entry`` and ``bars`` are the account marked at ``close[row]``;
    ``target`` / ``hold`` are what the action asked for. Updates the account's risk state (peak, highest
    close since entry, halt, day); calling it twice for the same row gives the same answer."""
    decision_ms = rx[row, X_TIME]
    flags = 0
    cur = units * close / equity if equity > 0.0 else 0.0
    # state known at the close of row
    high = rs[i, R_HIGH]
    if units > 0.0:
        if close > high:
            high = close
    else:
        high = 0.0
    rs[i, R_HIGH] = high
    peak = rs[i, R_PEAK]
    if equity > peak:
        peak = equity
    day = math.floor(decision_ms / DAY_MS)
    if rs[i, R_DAY] != day:
        rs[i, R_DAY] = day
        rs[i, R_DAY_EQ] = equity
    # 1. drawdown halt
    max_dd = rp[RP_MAX_DD]
    if max_dd > 0.0:
        halted = rs[i, R_HALTED] != 0.0
        cooldown = rp[RP_COOLDOWN]
        if halted and cooldown > 0.0 and row - rs[i, R_HALT_ROW] >= cooldown:
            halted = False
            peak = equity
            rs[i, R_HALTED] = 0.0
            rs[i, R_HALT_ROW] = -1.0
        if not halted and equity <= peak * (1.0 - max_dd):
            halted = True
            rs[i, R_HALTED] = 1.0
            rs[i, R_HALT_ROW] = row
        if halted:
            flags |= FLAG_DRAWDOWN_HALT
    rs[i, R_PEAK] = peak
    # 2. exits on the close
    if units > 0.0 and entry > 0.0:
        if rp[RP_STOP_LOSS] > 0.0 and close <= entry * (1.0 - rp[RP_STOP_LOSS]):
            flags |= FLAG_STOP_LOSS
        if rp[RP_TAKE_PROFIT] > 0.0 and close >= entry * (1.0 + rp[RP_TAKE_PROFIT]):
            flags |= FLAG_TAKE_PROFIT
        if rp[RP_TRAILING] > 0.0 and close <= high * (1.0 - rp[RP_TRAILING]):
            flags |= FLAG_TRAILING_STOP
    if flags & FORCED_EXIT:
        rs[i, R_FLAGS] = flags
        return 0.0, False, flags
    if hold:
        rs[i, R_FLAGS] = flags
        return target, True, flags
    # 3. sizing
    asked = target
    vol_target = rp[RP_VOL_TARGET]
    window = int(rp[RP_VOL_WINDOW])
    if vol_target > 0.0:
        var = bar_variance_nb(rx, row, window)
        if var > 0.0:
            scaled = target * vol_target / math.sqrt(var * rp[RP_BARS_PER_YEAR])
            if scaled > 1.0:
                scaled = 1.0
            if abs(scaled - target) > _EPS:
                flags |= FLAG_VOL_TARGET
            target = scaled
    kelly = rp[RP_KELLY]
    if kelly > 0.0:
        mu = rx[row, X_MU] / rp[RP_KELLY_HORIZON]
        var = bar_variance_nb(rx, row, window)
        cap = 0.0
        if mu == mu and var > 0.0 and mu > 0.0:
            cap = kelly * mu / var
        if target > cap + _EPS:
            target = cap
            flags |= FLAG_KELLY
    max_exposure = rp[RP_MAX_EXPOSURE]
    if max_exposure > 0.0 and target > max_exposure + _EPS:
        target = max_exposure
        flags |= FLAG_MAX_EXPOSURE
    if target < 0.0:
        target = 0.0
    # 4. limits on changing the position
    if rp[RP_DAILY] > 0.0 and target > cur + _EPS and equity <= rs[i, R_DAY_EQ] * (1.0 - rp[RP_DAILY]):
        flags |= FLAG_DAILY_LOSS
        hold = True
    if not hold and rp[RP_MIN_HOLD] > 0.0 and units > 0.0 and bars < rp[RP_MIN_HOLD] and target < cur - _EPS:
        flags |= FLAG_MIN_HOLDING
        hold = True
    cap_orders = int(rp[RP_MAX_ORDERS])
    if not hold and cap_orders > 0 and abs(target - cur) > rp[RP_DEADBAND] and abs(target - cur) > _EPS:
        if orders_in_hour_nb(rs, i, cap_orders, decision_ms) >= cap_orders:
            flags |= FLAG_ORDER_RATE
            hold = True
    if hold:
        target = asked
    rs[i, R_FLAGS] = flags
    return target, hold, flags


def risk_state_width(max_orders_per_hour: int | None) -> int:
    """Columns of ``rs`` for a config: the state, then one ring slot per order allowed per hour."""
    return N_RS + int(max_orders_per_hour or 0)


def empty_series(n_rows: int) -> np.ndarray:
    rx = np.zeros((n_rows, N_RX), dtype=np.float64)
    rx[:, X_MU] = np.nan
    return rx


def make_risk_params(risk: RiskConfig | None, deadband: float, bar_ms: int) -> np.ndarray:
    """``rp`` of a ``RiskConfig`` (``None``: every rule off) for bars of ``bar_ms``; ``deadband`` is the env's
    (a change below it sends no order, so it is not counted against the order rate)."""
    rp = np.zeros(N_RP, dtype=np.float64)
    rp[RP_BARS_PER_YEAR] = 365.25 * DAY_MS / bar_ms
    rp[RP_DEADBAND] = deadband
    rp[RP_KELLY_HORIZON] = 1.0
    if risk is None or not risk.enabled:
        return rp
    rp[RP_ON] = 1.0
    rp[RP_MAX_EXPOSURE] = risk.max_exposure or 0.0
    rp[RP_VOL_TARGET] = risk.vol_target or 0.0
    rp[RP_VOL_WINDOW] = risk.vol_window or DEFAULT_VOL_WINDOW
    rp[RP_KELLY] = risk.kelly_fraction or 0.0
    rp[RP_KELLY_HORIZON] = risk.kelly_horizon
    rp[RP_STOP_LOSS] = risk.stop_loss or 0.0
    rp[RP_TAKE_PROFIT] = risk.take_profit or 0.0
    rp[RP_TRAILING] = risk.trailing_stop or 0.0
    rp[RP_MAX_DD] = risk.max_drawdown or 0.0
    rp[RP_COOLDOWN] = risk.halt_cooldown_bars or 0
    rp[RP_DAILY] = risk.daily_loss_limit or 0.0
    rp[RP_MAX_ORDERS] = risk.max_orders_per_hour or 0
    rp[RP_MIN_HOLD] = risk.min_holding_bars or 0
    return rp
