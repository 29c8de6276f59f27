"""Every numba kernel of the trading env: pure functions over arrays, named ``*_nb``.

Layouts (the column constants below are the contract between the kernels and ``core.py``):

- ``fs``: float64 (N, N_FS) account state per env: cash, units held, equity marked at the last
  close, cumulated fees, average entry price, peak equity, the two DSR moments, and the fills
  since the last mark (net signed quantity, absolute quantity, notional, fees);
- ``ist``: int64 (N, N_IS): current row (the row whose close the observation ends at), the
  episode's last row, bars in position, steps taken, whether a fill happened since the last
  mark, and the last step's flags (terminated, truncated, done);
- ``p`` float64: the parameters ``P_*`` followed by the target levels; ``ip`` int64: ``I_*``;
- ``vflat``: the float32 feature matrix flattened row-major (T * F,), ``px``: float64 (T, 3) =
  open, close, volume; ``hops``: int64 (T, 3) per decision row t: whether a step from t leaves the
  plain path (``HOP``), the row whose open fills its order (``FILL_ROW``: the next real bar) and
  whether row t can be decided on at all (``DECIDABLE``: full valid window, not a synthetic bar);
- outputs: ``obs`` float32 (N, W * F + 4); ``info`` float64 (N, N_INFO): the fields of
  ``INFO_KEYS`` and the step's reward (``INF_REWARD``);
- the risk layer's arrays (layouts in ``spotgym.risk.nb``): ``rs`` (N, ...) risk state per account,
  ``rp`` the rules' parameters, ``rx`` (T, ...) per-row series; read only when ``ip[I_RISK]`` is set.

Between the action's target and the fill sits the risk gate (``risk_gate_nb``) when risk rules are
configured: it may cap or scale the target, hold the position, or force an exit, and its flags go to
``info["risk"]``. Cost options: ``P_TURNOVER`` charges the reward ``turnover_penalty`` x the step's
traded notional / the equity before the step (so the log rewards then sum to less than
log(final / initial)); ``I_DECIDE_EVERY`` = k holds each decision k bars (the step marks them all).

Few, packed arguments are deliberate: a numba call costs ~0.2 us per array argument, which is
most of a step at small N.

The time contract: an action taken on row t fills at ``open[t + 1]`` (``sim_fill_nb``), the
account takes the fill (``apply_fill_nb``, the same update a live broker's fill goes through),
and the account is marked at ``close[t + 1]`` (``mark_nb``), which gives the reward and the next
observation (rows t + 2 - W .. t + 1).

Rows that cannot carry a decision are masked, never dropped (``hop_step_nb``): a synthetic bar
(inserted for a gap: no market existed) is held through and the order fills at the open of the
next real bar; a row whose observation window holds undefined cells (a long exchange halt, a stretch
without predictions) is held through, marked at its close, until the next decidable row. So one
step may mark several bars; its reward is the sum of their rewards and the observation always comes
from a decidable row. Random training episodes never contain such rows (``AccountEngine``).

``step_accounts_nb`` prefetches the rows the next accounts will read (``prefetch_nb``, a cache hint
that changes no result): with training's random starts every account reads its own rows, and their
cache misses, not the arithmetic, are what a step costs beyond the observation copy.

All kernels use ``error_model="numpy"`` (no zero-division checks: every division is guarded by
the logic itself) and the per-account helpers are ``inline="always"``: both measurably speed up
the N-account loop, whose cost beyond copying the observation is what the benchmark watches.
Check the hot loop's assembly for ``NRT_incref`` / ``NRT_decref`` calls after changing it
(``step_accounts_nb.inspect_asm(step_accounts_nb.signatures[0])``): an inlined helper taking
arrays can leave a pair per array per account, which costs more than the account's arithmetic.
"""

from __future__ import annotations

import math

import llvmlite.binding as _llvm
import numpy as np
from llvmlite import ir as _ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from spotgym.risk.nb import R_FLAGS, R_HALTED, X_TIME, record_order_nb, reset_risk_nb, risk_gate_nb

# --------------------------------------------------------------------------- layouts
# fs columns
CASH, UNITS, EQUITY, FEES, ENTRY, PEAK, DSR_A, DSR_B, FILL_QTY, FILL_ABS, FILL_NOTIONAL, FILL_FEE = range(12)
N_FS = 12
# ist columns
ROW, END, BARS, STEPS, TRADED, TERM, TRUNC, DONE = range(8)
N_IS = 8
# p (float params)
(P_FEE, P_SLIP_BPS, P_IMPACT_BPS, P_MAX_PART, P_TICK, P_STEP, P_MIN_QTY, P_MIN_NOTIONAL, P_CASH0, P_RUIN,
 P_DD_PENALTY, P_DSR_ETA, P_TRADE_FRACTION, P_DEADBAND, P_TURNOVER) = range(15)
N_P = 15  # p[N_P:] holds the target levels
# ip (int params)
I_ACTION, I_REWARD, I_WINDOW, I_NFEAT, I_EP_LEN, I_SEQ_END, I_RISK, I_DECIDE_EVERY = range(8)
N_IP = 8
# hops columns (per row)
HOP, FILL_ROW, DECIDABLE = range(3)
ACT_CONTINUOUS, ACT_LEVELS, ACT_BUY_SELL_HOLD = 0, 1, 2
REW_LOG, REW_DSR, REW_DRAWDOWN = 0, 1, 2
HOLD, BUY, SELL = 0, 1, 2
# info columns
(INF_ROW, INF_EQUITY, INF_CASH, INF_POSITION, INF_EXPOSURE, INF_FEES_PAID, INF_TRADE, INF_FILL_PRICE,
 INF_FILL_QTY, INF_FEE, INF_STEP, INF_PRICE, INF_RISK, INF_HALTED, INF_REWARD) = range(15)
N_INFO = 15
INFO_KEYS = ("row", "equity", "cash", "position", "exposure", "fees_paid", "trade", "fill_price",
             "fill_qty", "fee", "step", "price", "risk", "halted")  # the info dict's keys: columns 0 .. 13
N_ACCOUNT_OBS = 4

_EPS_ROUND = 1e-9  # tolerance (in steps / ticks) for rounding quantities and prices


PREFETCH_AHEAD = 8  # step_accounts_nb asks for the rows of account i + PREFETCH_AHEAD while it steps account i

# --------------------------------------------------------------------------- cache hint
# ``llvm.prefetch`` takes an opaque pointer from LLVM 15 on (llvmlite >= 0.44), an i8* before
_PREFETCH = "llvm.prefetch.p0" if _llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def prefetch_nb(typingctx, arr, idx):
    """``prefetch_nb(arr, k)``: ask the CPU to bring the cache line of ``arr``'s k-th element (flat,
    row-major: ``arr`` C-contiguous) into cache. A hint only: it never faults (even out of bounds),
    reads or changes nothing the program sees, so results do not depend on it."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = _ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        fnty = _ir.FunctionType(_ir.VoidType(), [i8p, _ir.IntType(32), _ir.IntType(32), _ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, _PREFETCH)
        i32 = _ir.IntType(32)
        builder.call(fn, [ptr, _ir.Constant(i32, 0), _ir.Constant(i32, 3), _ir.Constant(i32, 1)])  # read, keep, data
        return context.get_dummy_value()

    return sig, codegen


# --------------------------------------------------------------------------- exchange rules
@njit(cache=True, error_model="numpy", inline="always")
def floor_to_nb(x, step):
    """``x`` floored to a multiple of ``step`` (``step`` <= 0: unchanged)."""
    if step <= 0.0:
        return x
    return math.floor(x / step + _EPS_ROUND) * step


@njit(cache=True, error_model="numpy", inline="always")
def ceil_to_nb(x, step):
    """``x`` rounded up to a multiple of ``step`` (``step`` <= 0: unchanged)."""
    if step <= 0.0:
        return x
    return math.ceil(x / step - _EPS_ROUND) * step


@njit(cache=True, error_model="numpy", inline="always")
def fill_price_nb(open_px, slip, buy, tick):
    """Open price worsened by the fractional slippage ``slip``, rounded to the tick against us."""
    if buy:
        return ceil_to_nb(open_px * (1.0 + slip), tick)
    return floor_to_nb(open_px * (1.0 - slip), tick)


@njit(cache=True, error_model="numpy", inline="always")
def target_qty_nb(target, cash, units, price, fee, buy):
    """Quantity to trade at ``price`` so that, after the fill and its fee, units x price equals
    ``target`` x equity valued at ``price``. Buys: q = (x E - u p) / (p (1 + x f)); sells:
    q = (u p - x E) / (p (1 - x f)), with E = cash + u p. Returns a non-negative quantity
    (0 when the order would go the other way)."""
    equity = cash + units * price
    if buy:
        q = (target * equity - units * price) / (price * (1.0 + target * fee))
    else:
        q = (units * price - target * equity) / (price * (1.0 - target * fee))
    return q if q > 0.0 else 0.0


@njit(cache=True, error_model="numpy", inline="always")
def sim_fill_nb(target, cash, units, open_px, volume, fee, slip_bps, impact_bps, max_part, tick, step,
                min_qty, min_notional, deadband):
    """Simulated market order meeting ``target`` exposure at the bar open.

    Returns ``(signed quantity, fill price, fee)``; quantity 0 means no trade (and no fee).
    Side: from the exposure at the unslipped open. Price: open x (1 +/- slippage) rounded to the
    tick against us, where slippage = ``slip_bps`` + ``impact_bps`` x participation (order
    quantity / the bar's volume, one fixed-point iteration). ``max_part`` (> 0) caps the
    quantity at that share of the bar's volume. Buys never spend more cash than there is, fee
    included; quantities are floored to the lot step; a sell leaving less than ``min_qty`` or
    ``min_notional`` sells the whole position; a full exit (target 0) sells the whole balance;
    an order below ``min_qty`` or ``min_notional`` is rejected.
    """
    if target != target:  # NaN: no order
        return 0.0, 0.0, 0.0
    if target < 0.0:
        target = 0.0
    elif target > 1.0:
        target = 1.0
    equity = cash + units * open_px
    if not (equity > 0.0) or not (open_px > 0.0):
        return 0.0, 0.0, 0.0
    gap = target - units * open_px / equity
    if gap == 0.0 or abs(gap) < deadband:
        return 0.0, 0.0, 0.0
    buy = gap > 0.0
    price = fill_price_nb(open_px, slip_bps * 1e-4, buy, tick)
    if not (price > 0.0):
        return 0.0, 0.0, 0.0
    q = target_qty_nb(target, cash, units, price, fee, buy)
    if q <= 0.0:
        return 0.0, 0.0, 0.0
    if impact_bps > 0.0 and volume > 0.0:
        price = fill_price_nb(open_px, (slip_bps + impact_bps * q / volume) * 1e-4, buy, tick)
        if not (price > 0.0):
            return 0.0, 0.0, 0.0
        q = target_qty_nb(target, cash, units, price, fee, buy)
    if max_part > 0.0 and q > max_part * volume:
        q = max_part * volume
    if buy:
        q_cash = cash / (price * (1.0 + fee))
        if q > q_cash:
            q = q_cash
        if step > 0.0:
            k = math.floor(q / step + _EPS_ROUND)
            q = k * step
            if q * price * (1.0 + fee) > cash * (1.0 + 1e-12):
                q = (k - 1.0) * step
    else:
        full = target <= 0.0 or q >= units
        if full:
            q = units
        else:
            q = floor_to_nb(q, step)
            if q > units:
                q = units
            rest = units - q
            if rest < min_qty or rest * price < min_notional:
                q = units  # dust rule: do not leave an unsellable remainder
    if q <= 0.0 or q < min_qty or q * price < min_notional:
        return 0.0, 0.0, 0.0
    paid = q * price * fee
    return (q if buy else -q), price, paid


# --------------------------------------------------------------------------- account updates
@njit(cache=True, error_model="numpy", inline="always")
def apply_fill_nb(fs, ist, i, qty, price, fee):
    """Account ``i`` takes a fill: ``qty`` base units (> 0 bought, < 0 sold) at ``price``, paying
    ``fee`` in quote. Simulated fills and a live broker's fills both go through here."""
    cash = fs[i, CASH]
    units = fs[i, UNITS]
    notional = abs(qty) * price
    if qty > 0.0:
        new_units = units + qty
        fs[i, ENTRY] = (units * fs[i, ENTRY] + qty * price) / new_units if units > 0.0 else price
        cash = cash - notional - fee
        if cash < 0.0 and cash > -1e-9 * (notional + fee):  # float dust of the all-in buy
            cash = 0.0
    else:
        new_units = units + qty
        if abs(new_units) <= 1e-12 * units:  # float dust of a full exit (a live account sums its fills)
            new_units = 0.0
        cash = cash + notional - fee
        if new_units <= 0.0:
            fs[i, ENTRY] = 0.0
    fs[i, CASH] = cash
    fs[i, UNITS] = new_units
    fs[i, FEES] += fee
    fs[i, FILL_QTY] += qty
    fs[i, FILL_ABS] += abs(qty)
    fs[i, FILL_NOTIONAL] += notional
    fs[i, FILL_FEE] += fee
    ist[i, TRADED] = 1


@njit(cache=True, error_model="numpy", inline="always")
def mark_nb(fs, ist, i, row, close, reward_kind, dsr_eta, dd_penalty):
    """Move account ``i`` to ``row`` and mark it at that row's close; returns the reward."""
    equity = fs[i, CASH] + fs[i, UNITS] * close
    prev = fs[i, EQUITY]
    r = math.log(equity / prev)
    peak = fs[i, PEAK]
    if reward_kind == REW_LOG:
        reward = r
    elif reward_kind == REW_DSR:
        a = fs[i, DSR_A]
        b = fs[i, DSR_B]
        da = r - a
        db = r * r - b
        var = b - a * a
        reward = (b * da - 0.5 * a * db) / var ** 1.5 if var > 1e-18 else 0.0
        fs[i, DSR_A] = a + dsr_eta * da
        fs[i, DSR_B] = b + dsr_eta * db
    else:
        new_peak = peak if peak >= equity else equity
        rise = math.log(new_peak / equity) - math.log(peak / prev)
        reward = r - dd_penalty * rise if rise > 0.0 else r
    if equity > peak:
        fs[i, PEAK] = equity
    fs[i, EQUITY] = equity
    ist[i, ROW] = row
    ist[i, STEPS] += 1
    if fs[i, UNITS] > 0.0:
        ist[i, BARS] += 1
    else:
        ist[i, BARS] = 0
    return reward


@njit(cache=True, error_model="numpy", inline="always")
def clear_fills_nb(fs, ist, i):
    fs[i, FILL_QTY] = 0.0
    fs[i, FILL_ABS] = 0.0
    fs[i, FILL_NOTIONAL] = 0.0
    fs[i, FILL_FEE] = 0.0
    ist[i, TRADED] = 0


@njit(cache=True, error_model="numpy", inline="always")
def reset_account_nb(fs, ist, i, start, end, cash0):
    """Account ``i`` flat with ``cash0`` at the close of row ``start``; the episode ends at ``end``."""
    fs[i, CASH] = cash0
    fs[i, UNITS] = 0.0
    fs[i, EQUITY] = cash0
    fs[i, FEES] = 0.0
    fs[i, ENTRY] = 0.0
    fs[i, PEAK] = cash0
    fs[i, DSR_A] = 0.0
    fs[i, DSR_B] = 0.0
    ist[i, ROW] = start
    ist[i, END] = end
    ist[i, BARS] = 0
    ist[i, STEPS] = 0
    ist[i, TERM] = 0
    ist[i, TRUNC] = 0
    ist[i, DONE] = 0
    clear_fills_nb(fs, ist, i)


# --------------------------------------------------------------------------- observation, info
@njit(cache=True, error_model="numpy", inline="always")
def write_obs_nb(obs, i, vflat, row, window, n_feat, fs, ist, close):
    """Row ``i`` of ``obs``: feature rows ``row - window + 1 .. row`` (row-major) + account state."""
    n = window * n_feat
    base = (row - window + 1) * n_feat
    # copy from a slice: indexing ``vflat[base + k]`` makes numba wrap a possibly negative index,
    # which LLVM vectorises as a gather (~2x slower at N = 1024); ``src[k]`` (k >= 0) is a plain load
    src = vflat[base:base + n]
    for k in range(n):
        obs[i, k] = src[k]
    equity = fs[i, EQUITY]
    units = fs[i, UNITS]
    entry = fs[i, ENTRY]
    if equity > 0.0:
        obs[i, n] = units * close / equity
        obs[i, n + 3] = fs[i, CASH] / equity
    else:
        obs[i, n] = 0.0
        obs[i, n + 3] = 0.0
    obs[i, n + 1] = close / entry - 1.0 if units > 0.0 and entry > 0.0 else 0.0
    obs[i, n + 2] = math.log1p(ist[i, BARS])


@njit(cache=True, error_model="numpy", inline="always")
def write_info_nb(info, i, fs, ist, close):
    equity = fs[i, EQUITY]
    info[i, INF_ROW] = ist[i, ROW]
    info[i, INF_EQUITY] = equity
    info[i, INF_CASH] = fs[i, CASH]
    info[i, INF_POSITION] = fs[i, UNITS]
    info[i, INF_EXPOSURE] = fs[i, UNITS] * close / equity if equity > 0.0 else 0.0
    info[i, INF_FEES_PAID] = fs[i, FEES]
    info[i, INF_TRADE] = ist[i, TRADED]
    info[i, INF_FILL_PRICE] = fs[i, FILL_NOTIONAL] / fs[i, FILL_ABS] if fs[i, FILL_ABS] > 0.0 else 0.0
    info[i, INF_FILL_QTY] = fs[i, FILL_QTY]
    info[i, INF_FEE] = fs[i, FILL_FEE]
    info[i, INF_STEP] = ist[i, STEPS]
    info[i, INF_PRICE] = close


# --------------------------------------------------------------------------- actions
@njit(cache=True, error_model="numpy", inline="always")
def action_target_nb(action, kind, levels, trade_fraction, cash, units, price):
    """``(target exposure, hold)`` of one action; raises on an invalid discrete action."""
    if kind == ACT_CONTINUOUS:
        return action, False
    a = int(action)
    if a != action:
        raise ValueError("discrete action is not an integer")
    if kind == ACT_LEVELS:
        if a < 0 or a >= levels.shape[0]:
            raise ValueError("levels action out of range")
        return levels[a], False
    if a == HOLD:
        return 0.0, True
    if a != BUY and a != SELL:
        raise ValueError("buy_sell_hold action must be 0 (hold), 1 (buy) or 2 (sell)")
    equity = cash + units * price
    cur = units * price / equity if equity > 0.0 else 0.0
    if a == BUY:
        t = cur + trade_fraction
        return (t if t < 1.0 else 1.0), False
    t = cur - trade_fraction
    return (t if t > 0.0 else 0.0), False


@njit(cache=True, error_model="numpy", inline="always")
def episode_end_nb(start, ip):
    """Last row of an episode starting at ``start``."""
    ep_len = ip[I_EP_LEN]
    return start + ep_len if ep_len > 0 else ip[I_SEQ_END]


# --------------------------------------------------------------------------- fused N-account kernels
@njit(cache=True, error_model="numpy", inline="always")
def mark_step_nb(fs, ist, i, row_next, close, reward_kind, dsr_eta, dd_penalty, ruin, info):
    """Mark account ``i`` at ``close`` of ``row_next``: reward, flags, info; clears the fills."""
    info[i, INF_REWARD] = mark_nb(fs, ist, i, row_next, close, reward_kind, dsr_eta, dd_penalty)
    term = ruin > 0.0 and fs[i, EQUITY] < ruin
    trunc = row_next >= ist[i, END]
    ist[i, TERM] = term
    ist[i, TRUNC] = trunc
    ist[i, DONE] = term or trunc
    write_info_nb(info, i, fs, ist, close)
    clear_fills_nb(fs, ist, i)


@njit(cache=True, error_model="numpy")
def hop_step_nb(action, fs, ist, i, p, ip, px, hops, rs, rp, rx):
    """The step of account ``i`` from a row whose next bar is synthetic or not decidable (see the module
    doc); returns ``(reward, landing row, risk flags)``. Bars without a market are held and marked first,
    the order fills at the open of the next real bar, then undecidable rows are held and marked until a
    decidable row, the episode's end or ruin."""
    reward_kind = ip[I_REWARD]
    dsr_eta = p[P_DSR_ETA]
    dd_penalty = p[P_DD_PENALTY]
    ruin = p[P_RUIN]
    row = ist[i, ROW]
    end = ist[i, END]
    last = px.shape[0] - 1
    if end > last:
        end = last
    fill_row = hops[row, FILL_ROW]
    reward = 0.0
    flags = 0
    # the gate judges the account as it stood at the decision (the close of row), before any held bar
    cash = fs[i, CASH]
    units = fs[i, UNITS]
    equity_at_decision = fs[i, EQUITY]
    entry = fs[i, ENTRY]
    bars = ist[i, BARS]
    r = row
    while r + 1 < fill_row and r < end:  # synthetic bars: no market, nothing fills, the position is held
        r += 1
        reward += mark_nb(fs, ist, i, r, px[r, 1], reward_kind, dsr_eta, dd_penalty)
        if ruin > 0.0 and fs[i, EQUITY] < ruin:
            return reward, r, flags
    if fill_row <= end:
        open_px = px[fill_row, 0]
        target, hold = action_target_nb(action, ip[I_ACTION], p[N_P:], p[P_TRADE_FRACTION], cash, units, open_px)
        if ip[I_RISK]:
            target, hold, flags = risk_gate_nb(rs, i, rp, rx, row, px[row, 1], equity_at_decision, units, entry,
                                               bars, target, hold)
        if not hold:
            qty, price, fee = sim_fill_nb(target, cash, units, open_px, px[fill_row, 2], p[P_FEE], p[P_SLIP_BPS],
                                          p[P_IMPACT_BPS], p[P_MAX_PART], p[P_TICK], p[P_STEP], p[P_MIN_QTY],
                                          p[P_MIN_NOTIONAL], p[P_DEADBAND])
            if qty != 0.0:
                apply_fill_nb(fs, ist, i, qty, price, fee)
                if ip[I_RISK]:
                    record_order_nb(rs, i, rp, rx[row, X_TIME])
        r = fill_row
        reward += mark_nb(fs, ist, i, r, px[r, 1], reward_kind, dsr_eta, dd_penalty)
    while r < end and hops[r, DECIDABLE] == 0 and not (ruin > 0.0 and fs[i, EQUITY] < ruin):
        r += 1
        reward += mark_nb(fs, ist, i, r, px[r, 1], reward_kind, dsr_eta, dd_penalty)
    return reward, r, flags


@njit(cache=True, error_model="numpy")
def step_accounts_nb(actions, fs, ist, p, ip, vflat, px, hops, rs, rp, rx, obs, info):
    """One step of every account, in one call; returns how many accounts finished.

    For each account: the action's target through the risk gate (when rules are set), filled at the next
    open (``sim_fill_nb``, ``apply_fill_nb``), marked at the next close (reward, flags, info, as
    ``mark_step_nb``; with ``decide_every`` k, held and marked k bars), the observation of the new row
    written. A finished account's observation is its last one; ``autoreset_accounts_nb`` restarts it. A
    row whose next bar is synthetic or undecidable takes ``hop_step_nb`` instead (never on training
    episodes).
    """
    window = ip[I_WINDOW]
    n_feat = ip[I_NFEAT]
    reward_kind = ip[I_REWARD]
    action_kind = ip[I_ACTION]
    dsr_eta = p[P_DSR_ETA]
    dd_penalty = p[P_DD_PENALTY]
    ruin = p[P_RUIN]
    trade_fraction = p[P_TRADE_FRACTION]
    fee_rate = p[P_FEE]
    slip_bps = p[P_SLIP_BPS]
    impact_bps = p[P_IMPACT_BPS]
    max_part = p[P_MAX_PART]
    tick = p[P_TICK]
    step = p[P_STEP]
    min_qty = p[P_MIN_QTY]
    min_notional = p[P_MIN_NOTIONAL]
    deadband = p[P_DEADBAND]
    turnover_penalty = p[P_TURNOVER]
    risk_on = ip[I_RISK] != 0
    decide_every = ip[I_DECIDE_EVERY]
    levels = p[N_P:]
    n = actions.shape[0]
    px_w = px.shape[1]
    hops_w = hops.shape[1]
    n_done = 0
    for i in range(n):
        # Training's random starts put every account on its own rows: the price, hop and feature rows
        # an account reads are then cache misses (~L3 latency each), and the branches of the fill
        # (random actions) keep the CPU from running ahead to the next accounts' loads. Prefetching
        # them PREFETCH_AHEAD accounts early hides that latency (~25 % of a random-start step at
        # N = 1024); on a lockstep pass the lines are already cached and the hints cost a few cycles.
        j = i + PREFETCH_AHEAD
        if j < n:
            rj = ist[j, ROW]
            prefetch_nb(px, (rj + 1) * px_w)  # px[rj + 1]: open, close, volume (may straddle two lines)
            prefetch_nb(px, (rj + 2) * px_w - 1)
            prefetch_nb(hops, rj * hops_w)  # hops[rj, HOP]
            prefetch_nb(vflat, (rj + 2 - window) * n_feat)  # the head of the next observation window
            prefetch_nb(vflat, (rj + 1) * n_feat)  # its new row
            prefetch_nb(vflat, (rj + 2) * n_feat - 1)
        row = ist[i, ROW]
        equity_before = fs[i, EQUITY]
        flags = 0
        if hops[row, HOP]:
            reward, row_next, flags = hop_step_nb(actions[i], fs, ist, i, p, ip, px, hops, rs, rp, rx)
            info[i, INF_REWARD] = reward
            close = px[row_next, 1]
        else:
            row_next = row + 1
            # the order, filled at open[row_next]: written out on scalars, because an inlined helper
            # that takes the arrays (fs, ist, p, px) and has several return paths keeps numba's
            # reference counting on them (an NRT incref/decref call pair per array per account:
            # ~80 ns of the ~130 ns an account cost beyond its observation copy, numba 0.68)
            cash = fs[i, CASH]
            units = fs[i, UNITS]
            open_px = px[row_next, 0]
            target, hold = action_target_nb(actions[i], action_kind, levels, trade_fraction, cash, units, open_px)
            if risk_on:
                target, hold, flags = risk_gate_nb(rs, i, rp, rx, row, px[row, 1], equity_before, units,
                                                   fs[i, ENTRY], ist[i, BARS], target, hold)
            if not hold:
                qty, price, fee = sim_fill_nb(target, cash, units, open_px, px[row_next, 2], fee_rate, slip_bps,
                                              impact_bps, max_part, tick, step, min_qty, min_notional, deadband)
                if qty != 0.0:
                    apply_fill_nb(fs, ist, i, qty, price, fee)
                    if risk_on:
                        record_order_nb(rs, i, rp, rx[row, X_TIME])
            close = px[row_next, 1]
            # = mark_step_nb(...), written out: called through one more level of inlined helper,
            # this loop ran ~1.2-1.5x slower (numba 0.68)
            info[i, INF_REWARD] = mark_nb(fs, ist, i, row_next, close, reward_kind, dsr_eta, dd_penalty)
            if decide_every > 1:  # hold the decision: mark the following bars while they are plain ones
                held = 1
                while held < decide_every and row_next < ist[i, END] and hops[row_next, HOP] == 0 and \
                        not (ruin > 0.0 and fs[i, EQUITY] < ruin):
                    row_next += 1
                    close = px[row_next, 1]
                    info[i, INF_REWARD] += mark_nb(fs, ist, i, row_next, close, reward_kind, dsr_eta, dd_penalty)
                    held += 1
        if turnover_penalty > 0.0 and equity_before > 0.0:
            info[i, INF_REWARD] -= turnover_penalty * fs[i, FILL_NOTIONAL] / equity_before
        term = ruin > 0.0 and fs[i, EQUITY] < ruin
        trunc = row_next >= ist[i, END]
        ist[i, TERM] = term
        ist[i, TRUNC] = trunc
        ist[i, DONE] = term or trunc
        write_info_nb(info, i, fs, ist, close)
        info[i, INF_RISK] = flags
        info[i, INF_HALTED] = rs[i, R_HALTED] if risk_on else 0.0
        clear_fills_nb(fs, ist, i)
        n_done += ist[i, DONE]
        write_obs_nb(obs, i, vflat, row_next, window, n_feat, fs, ist, close)
    return n_done


@njit(cache=True, error_model="numpy")
def autoreset_accounts_nb(fs, ist, p, ip, vflat, px, rs, next_start, obs, term_obs, reset_info):
    """Restart every finished account (SB3's auto-reset): its last observation goes to
    ``term_obs``, it restarts at ``next_start[i]`` (drawn by the caller), the reset info goes to
    ``reset_info`` and its first observation to ``obs``."""
    window = ip[I_WINDOW]
    n_feat = ip[I_NFEAT]
    cash0 = p[P_CASH0]
    for i in range(fs.shape[0]):
        if ist[i, DONE]:
            for k in range(obs.shape[1]):
                term_obs[i, k] = obs[i, k]
            start = next_start[i]
            reset_account_nb(fs, ist, i, start, episode_end_nb(start, ip), cash0)
            reset_risk_nb(rs, i, cash0)
            close = px[start, 1]
            write_info_nb(reset_info, i, fs, ist, close)
            reset_info[i, INF_RISK] = 0.0
            reset_info[i, INF_HALTED] = 0.0
            write_obs_nb(obs, i, vflat, start, window, n_feat, fs, ist, close)


@njit(cache=True, error_model="numpy")
def reset_accounts_nb(fs, ist, p, ip, vflat, px, rs, idx, starts, obs, info):
    """Reset accounts ``idx`` to start at ``starts`` (same length); write their obs and info."""
    window = ip[I_WINDOW]
    n_feat = ip[I_NFEAT]
    for j in range(idx.shape[0]):
        i = idx[j]
        start = starts[j]
        reset_account_nb(fs, ist, i, start, episode_end_nb(start, ip), p[P_CASH0])
        reset_risk_nb(rs, i, p[P_CASH0])
        close = px[start, 1]
        write_info_nb(info, i, fs, ist, close)
        info[i, INF_RISK] = 0.0
        info[i, INF_HALTED] = 0.0
        write_obs_nb(obs, i, vflat, start, window, n_feat, fs, ist, close)


@njit(cache=True, error_model="numpy")
def advance_accounts_nb(fs, ist, p, ip, vflat, px, rs, equity_before, flags, obs, info):
    """Mark every account at the next row's close and write its observation, without filling
    any order: the second half of a step, for fills that came from a broker (``apply_fill_nb``).
    ``equity_before`` (the equity the step's turnover is charged against) and ``flags`` (the risk gate's,
    0 on a bar without a decision) are per account."""
    window = ip[I_WINDOW]
    n_feat = ip[I_NFEAT]
    for i in range(fs.shape[0]):
        row_next = ist[i, ROW] + 1
        close = px[row_next, 1]
        notional = fs[i, FILL_NOTIONAL]
        mark_step_nb(fs, ist, i, row_next, close, ip[I_REWARD], p[P_DSR_ETA], p[P_DD_PENALTY], p[P_RUIN], info)
        if p[P_TURNOVER] > 0.0 and equity_before[i] > 0.0:
            info[i, INF_REWARD] -= p[P_TURNOVER] * notional / equity_before[i]
        info[i, INF_RISK] = flags[i]
        info[i, INF_HALTED] = rs[i, R_HALTED] if ip[I_RISK] else 0.0
        write_obs_nb(obs, i, vflat, row_next, window, n_feat, fs, ist, close)


@njit(cache=True, error_model="numpy")
def observe_accounts_nb(fs, ist, ip, vflat, px, rs, obs, info):
    """Observation and info of every account at its current row (no state change)."""
    window = ip[I_WINDOW]
    n_feat = ip[I_NFEAT]
    for i in range(fs.shape[0]):
        row = ist[i, ROW]
        close = px[row, 1]
        write_obs_nb(obs, i, vflat, row, window, n_feat, fs, ist, close)
        write_info_nb(info, i, fs, ist, close)
        info[i, INF_RISK] = rs[i, R_FLAGS] if ip[I_RISK] else 0.0
        info[i, INF_HALTED] = rs[i, R_HALTED] if ip[I_RISK] else 0.0


@njit(cache=True, error_model="numpy")
def action_masks_nb(fs, ist, p, ip, px, out):
    """Valid actions of every account, judged at the close of its current row (the last price
    the agent knows). buy_sell_hold: hold always; buy when the cash buys at least the minimum
    order; sell when the position can be sold. levels: a level is valid when reaching it is an
    order of at least ``min_notional``, and the level nearest to the current exposure (a hold)
    is always valid. Continuous: all True (one column)."""
    kind = ip[I_ACTION]
    levels = p[N_P:]
    fee = p[P_FEE]
    min_qty = p[P_MIN_QTY]
    min_notional = p[P_MIN_NOTIONAL]
    for i in range(fs.shape[0]):
        price = px[ist[i, ROW], 1]
        cash = fs[i, CASH]
        units = fs[i, UNITS]
        equity = cash + units * price
        cur = units * price / equity if equity > 0.0 else 0.0
        if kind == ACT_BUY_SELL_HOLD:
            q_buy = floor_to_nb(cash / (price * (1.0 + fee)), p[P_STEP])
            out[i, HOLD] = True
            out[i, BUY] = q_buy > 0.0 and q_buy >= min_qty and q_buy * price >= min_notional
            out[i, SELL] = units > 0.0 and units >= min_qty and units * price >= min_notional
        elif kind == ACT_LEVELS:
            nearest = 0
            for j in range(levels.shape[0]):
                if abs(levels[j] - cur) < abs(levels[nearest] - cur):
                    nearest = j
            for j in range(levels.shape[0]):
                out[i, j] = j == nearest or abs(levels[j] - cur) * equity >= min_notional
        else:
            for j in range(out.shape[1]):
                out[i, j] = True


@njit(cache=True, error_model="numpy")
def gate_account_nb(fs, ist, i, p, ip, px, rs, rp, rx, action, open_px):
    """``(target, hold, flags)`` of account ``i``'s ``action`` at its current row, through the risk gate when
    rules are set: what the step kernel decides before its fill, for the live seam (``AccountEngine.fill``).
    ``open_px`` is the price the target is met at (buy_sell_hold steps from the exposure there)."""
    cash = fs[i, CASH]
    units = fs[i, UNITS]
    target, hold = action_target_nb(action, ip[I_ACTION], p[N_P:], p[P_TRADE_FRACTION], cash, units, open_px)
    flags = 0
    if ip[I_RISK]:
        row = ist[i, ROW]
        target, hold, flags = risk_gate_nb(rs, i, rp, rx, row, px[row, 1], fs[i, EQUITY], units, fs[i, ENTRY],
                                           ist[i, BARS], target, hold)
    return target, hold, flags


# --------------------------------------------------------------------------- episode bounds
@njit(cache=True, error_model="numpy")
def window_ok_nb(valid, window):
    """``ok[t]``: rows ``t - window + 1 .. t`` exist and are all valid."""
    n = valid.shape[0]
    ok = np.zeros(n, dtype=np.bool_)
    run = 0
    for t in range(n):
        run = run + 1 if valid[t] else 0
        ok[t] = run >= window
    return ok


@njit(cache=True, error_model="numpy")
def hops_nb(window_ok, synthetic):
    """The (T, 3) ``hops`` table: per row t, ``DECIDABLE`` = a full valid window on a real bar,
    ``FILL_ROW`` = the first real (non-synthetic) row after t (T when none is there yet) and ``HOP`` =
    1 unless a step from t is the plain one (fill at open[t + 1], land on a decidable t + 1)."""
    n = window_ok.shape[0]
    out = np.zeros((n, 3), dtype=np.int64)
    nxt = n
    for t in range(n - 1, -1, -1):
        out[t, FILL_ROW] = nxt
        if not synthetic[t]:
            nxt = t
        out[t, DECIDABLE] = 1 if (window_ok[t] and not synthetic[t]) else 0
    for t in range(n):
        plain = t + 1 < n and out[t, FILL_ROW] == t + 1 and out[t + 1, DECIDABLE] == 1
        out[t, HOP] = 0 if plain else 1
    return out


@njit(cache=True, error_model="numpy")
def run_end_nb(ok):
    """``end[t]``: the last row r >= t with ``ok`` on all of t..r (-1 where ``ok[t]`` is False)."""
    n = ok.shape[0]
    end = np.full(n, -1, dtype=np.int64)
    last = -1
    for t in range(n - 1, -1, -1):
        if ok[t]:
            if last < 0:
                last = t
            end[t] = last
        else:
            last = -1
    return end
