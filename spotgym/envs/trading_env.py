"""``TradingEnv``: one spot account on one market, the gymnasium API over the kernels of ``nb.py``.

The time contract: ``step(action)`` on the observation of row t fills at ``open[t + 1]``
(slippage, tick, fee, exchange filters), marks the account at ``close[t + 1]`` (the reward) and
returns the observation of row t + 1. Running out of rows truncates; equity below the ruin
floor terminates.

The seam for live trading (the runner comes later): ``step`` is exactly

    qty, price, fee = env.simulate_fill(action)   # or: a broker executes env.plan_order(action)
    env.apply_fill(qty, price, fee)               # the account update, for any fill
    env.advance()                                 # mark at the next close, next observation

and ``append_rows`` grows the market as bars close, so a runner wraps this same env around a
live feed and a real broker by replacing only the first line.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from spotgym.envs import nb
from spotgym.envs.config import EnvConfig, resolve_config
from spotgym.envs.core import AccountEngine
from spotgym.envs.info import info_dict
from spotgym.envs.market import MarketData
from spotgym.features.frame import FeatureFrame

__all__ = ["TradingEnv", "default_frame"]


def default_frame() -> FeatureFrame:
    """The default market: Binance ETH/USDT 1h from the shared data, default features."""
    from spotgym.data import load_bars
    from spotgym.datasets import shared_file
    from spotgym.features import build_features

    return build_features(load_bars(shared_file("BINANCE_ETHUSDT_1h.csv.gz")))


class TradingEnv(gym.Env):
    """One long/flat spot account: ``TradingEnv(frame, config)`` or ``TradingEnv(frame, fee=0.0)``.

    ``frame``: a ``FeatureFrame`` (``None`` = ETH/USDT 1h with the default features);
    ``config``: an ``EnvConfig``; keyword overrides are applied on top of it. ``live=True``: the
    market grows (``append_rows``) and the episode never truncates at the end of the data;
    stepping needs the next row to be there.
    ``info`` (from ``reset`` and ``step``) holds ``row``, ``equity``, ``cash``, ``position``
    (base units), ``exposure``, ``fees_paid`` (this episode), ``trade`` (a fill this step),
    ``fill_price`` (volume-weighted, 0 without a fill), ``fill_qty`` (signed), ``fee`` (this
    step), ``step`` and ``price`` (the close of ``row``).
    """

    metadata = {"render_modes": []}

    def __init__(self, frame: FeatureFrame | None = None, config: EnvConfig | None = None, *,
                 live: bool = False, **overrides: Any) -> None:
        self.config = config = resolve_config(config, overrides)
        self.market = MarketData(default_frame() if frame is None else frame, config.window)
        if live and config.episode_length is not None:
            raise ValueError("a live env runs one sequential pass: use episode_length=None")
        self.live = bool(live)
        self.engine = AccountEngine(self.market, config, n_envs=1, open_ended=self.live)
        self.action_space = self.engine.action_space
        self.observation_space = self.engine.observation_space
        self._obs = np.zeros((1, self.engine.obs_dim), dtype=np.float32)
        self._info = np.zeros((1, nb.N_INFO), dtype=np.float64)
        self._needs_reset = True

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode: a random start row (seeded) or the sequential pass's first row.
        ``options={"start_row": r}`` starts at row r (it must be a candidate start)."""
        super().reset(seed=seed)
        eng = self.engine
        start = None if options is None else options.get("start_row")
        if start is None:
            start = eng.draw_start(self.np_random)
        elif int(start) not in set(eng.starts.tolist()):
            raise ValueError(f"start_row {start} is not a valid episode start "
                             f"(valid: {eng.starts[:5].tolist()}... {eng.starts.size} rows)")
        eng.reset(eng.all_idx, np.array([int(start)], dtype=np.int64), self._obs, self._info)
        self._needs_reset = False
        return self._observation(), info_dict(self._info[0])

    def step(self, action):
        self._check_running()
        eng = self.engine
        if self.live:
            self._check_row(int(eng.ist[0, nb.ROW]) + 1)
        eng.set_actions(action)
        eng.step(self._obs, self._info)
        return self._result()

    def action_masks(self) -> np.ndarray:
        """Valid actions now (sb3-contrib ``MaskablePPO``); see ``nb.action_masks_nb``."""
        if self.config.action == "continuous":
            raise NotImplementedError("action masks apply to the discrete action spaces ('levels', "
                                      "'buy_sell_hold'), not to 'continuous'")
        return self.engine.action_masks()[0]

    # ------------------------------------------------------------------ the live seam
    def plan_order(self, action, price: float | None = None) -> float:
        """Signed base quantity (after filters) that ``action`` asks for at ``price`` (default:
        the close of the current row), with no slippage: what a live runner sends to a broker."""
        self._check_running()
        fs, p = self.engine.fs, self.engine.p
        ref = float(self.market.close[self.engine.ist[0, nb.ROW]] if price is None else price)
        target, hold = nb.action_target_nb(float(np.asarray(action).reshape(-1)[0]), self.engine.ip[nb.I_ACTION],
                                           self.engine.levels, p[nb.P_TRADE_FRACTION], fs[0, nb.CASH],
                                           fs[0, nb.UNITS], ref)
        if hold:
            return 0.0
        qty, _, _ = nb.sim_fill_nb(target, fs[0, nb.CASH], fs[0, nb.UNITS], ref, 0.0, p[nb.P_FEE], 0.0, 0.0, 0.0,
                                   0.0, p[nb.P_STEP], p[nb.P_MIN_QTY], p[nb.P_MIN_NOTIONAL], p[nb.P_DEADBAND])
        return float(qty)

    def simulate_fill(self, action) -> tuple[float, float, float]:
        """``(signed qty, price, fee)`` of ``action`` filled at the next row's open, as ``step``
        fills it (slippage, tick, filters); qty 0 = no trade. Changes nothing."""
        self._check_running()
        eng = self.engine
        fs, p, row_next = eng.fs, eng.p, int(eng.ist[0, nb.ROW]) + 1
        self._check_row(row_next)
        open_px, volume = self.market.px[row_next, 0], self.market.px[row_next, 2]
        target, hold = nb.action_target_nb(float(np.asarray(action).reshape(-1)[0]), eng.ip[nb.I_ACTION], eng.levels,
                                           p[nb.P_TRADE_FRACTION], fs[0, nb.CASH], fs[0, nb.UNITS], open_px)
        if hold:
            return 0.0, 0.0, 0.0
        qty, price, fee = nb.sim_fill_nb(target, fs[0, nb.CASH], fs[0, nb.UNITS], open_px, volume, p[nb.P_FEE],
                                         p[nb.P_SLIP_BPS], p[nb.P_IMPACT_BPS], p[nb.P_MAX_PART], p[nb.P_TICK],
                                         p[nb.P_STEP], p[nb.P_MIN_QTY], p[nb.P_MIN_NOTIONAL], p[nb.P_DEADBAND])
        return float(qty), float(price), float(fee)

    def apply_fill(self, qty: float, price: float, fee: float) -> None:
        """The account takes a fill: ``qty`` base units (> 0 bought, < 0 sold) at ``price``,
        paying ``fee`` in quote currency (convert a fee charged in the base asset or BNB first).
        Several fills per step are fine; ``info`` reports their sum and volume-weighted price.
        Spot rules hold: no short position, no negative cash."""
        self._check_running()
        qty, price, fee = float(qty), float(price), float(fee)
        fs = self.engine.fs
        if not (price > 0.0) or not (fee >= 0.0) or not np.isfinite(qty):
            raise ValueError(f"bad fill: qty={qty}, price={price}, fee={fee}")
        if qty < 0.0 and -qty > fs[0, nb.UNITS] * (1.0 + 1e-12):
            raise ValueError(f"fill sells {-qty} but the account holds {fs[0, nb.UNITS]} (spot: no shorting)")
        if qty > 0.0 and qty * price + fee > fs[0, nb.CASH] * (1.0 + 1e-9):
            raise ValueError(f"fill costs {qty * price + fee} but the account has {fs[0, nb.CASH]} cash")
        nb.apply_fill_nb(fs, self.engine.ist, 0, qty, price, fee)

    def advance(self):
        """Mark the account at the next row's close and move there: the second half of ``step``
        (``step`` = ``simulate_fill`` + ``apply_fill`` + ``advance``). Returns the step tuple."""
        self._check_running()
        self._check_row(int(self.engine.ist[0, nb.ROW]) + 1)
        self.engine.advance(self._obs, self._info)
        return self._result()

    def observe(self):
        """``(observation, info)`` at the current row, without changing anything."""
        self.engine.observe(self._obs, self._info)
        return self._observation(), info_dict(self._info[0])

    def append_rows(self, rows: FeatureFrame) -> None:
        """Append closed bars to the market (a live feed, with ``live=True``)."""
        self.market.append(rows)
        self.engine.compute_bounds()

    # ------------------------------------------------------------------ account state
    @property
    def row(self) -> int:
        """The row whose close the current observation ends at."""
        return int(self.engine.ist[0, nb.ROW])

    @property
    def equity(self) -> float:
        return float(self.engine.fs[0, nb.EQUITY])

    @property
    def cash(self) -> float:
        return float(self.engine.fs[0, nb.CASH])

    @property
    def position(self) -> float:
        return float(self.engine.fs[0, nb.UNITS])

    # ------------------------------------------------------------------ helpers
    def _observation(self):
        return self.engine.split_obs(self._obs[0].copy())

    def _result(self):
        eng = self.engine
        term, trunc, done = eng.ist[0, nb.TERM:].tolist()
        self._needs_reset = done != 0
        return (self._observation(), self._info.item(0, nb.INF_REWARD), term != 0, trunc != 0,
                info_dict(self._info[0]))

    def _check_running(self) -> None:
        if self._needs_reset:
            raise RuntimeError("the episode is over (or never started): call reset() first")

    def _check_row(self, row: int) -> None:
        if row >= len(self.market):
            raise RuntimeError(f"row {row} is not in the market yet ({len(self.market)} rows): append_rows first")
        if not self.market.window_ok[row]:
            raise RuntimeError(f"the observation window ending at row {row} holds invalid (NaN) feature rows")
