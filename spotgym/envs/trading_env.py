"""``TradingEnv``: one spot account on one market, the gymnasium API over the kernels of ``nb.py``.

The time contract: ``step(action)`` on the observation of row t fills at ``open[t + 1]``
(slippage, tick, fee, exchange rules), marks the account at ``close[t + 1]`` (the reward) and
returns the observation of row t + 1. A synthetic bar (a filled gap) is held through and the order
fills at the next real bar; rows without a defined observation are held through until the next
decidable row (``nb.hop_step_nb``). Running out of rows truncates; equity below the ruin floor
terminates.

The same env trades live: ``spotgym.wrappers.ExecutionEnv`` drives it through the ports of
``spotgym.envs.ports`` with ``plan_order`` (what to send), ``apply_fill`` (the account update for
any fill), ``append_rows`` (bars as they close) and ``advance`` (mark the next bar); with a
historical feed and the kernel's fill model it reproduces ``step`` bit for bit (tested).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from spotgym.core import FeatureFrame
from spotgym.envs import nb
from spotgym.envs.config import EnvConfig, resolve_config
from spotgym.envs.core import AccountEngine
from spotgym.envs.info import info_dict
from spotgym.envs.market import MarketData
from spotgym.risk import nb as risk_nb

__all__ = ["TradingEnv"]


class TradingEnv(gym.Env):
    """One long/flat spot account: ``TradingEnv(frame, config)`` or ``TradingEnv(frame, fee=0.0)``.

    ``frame``: a ``FeatureFrame`` (e.g. ``spotgym.features.build_features(bars)``); ``config``: an
    ``EnvConfig``; keyword overrides are applied on top of it. ``live=True``: the market grows
    (``append_rows``) and the episode never truncates at the end of the data; stepping needs the
    next row to be there.
    ``info`` (from ``reset`` and ``step``) holds ``row``, ``equity``, ``cash``, ``position``
    (base units), ``exposure``, ``fees_paid`` (this episode), ``trade`` (a fill this step),
    ``fill_price`` (volume-weighted, 0 without a fill), ``fill_qty`` (signed), ``fee`` (this
    step), ``step`` and ``price`` (the close of ``row``).
    """

    metadata = {"render_modes": []}

    def __init__(self, frame: FeatureFrame, config: EnvConfig | None = None, *,
                 live: bool = False, **overrides: Any) -> None:
        self.config = config = resolve_config(config, overrides)
        self.market = MarketData(frame, config.window)
        if live and config.episode_length is not None:
            raise ValueError("a live env runs one sequential pass: use episode_length=None")
        self.live = bool(live)
        self.engine = AccountEngine(self.market, config, n_envs=1, open_ended=self.live)
        self.action_space = self.engine.action_space
        self.observation_space = self.engine.observation_space
        self._obs = np.zeros((1, self.engine.obs_dim), dtype=np.float32)
        self._info = np.zeros((1, nb.N_INFO), dtype=np.float64)
        self._equity_before = np.zeros(1, dtype=np.float64)  # what advance() charges a turnover penalty against
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
        self._equity_before[0] = eng.fs[0, nb.EQUITY]
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
    def plan_order(self, action, price: float | None = None, *, slippage: bool = False) -> float:
        """Signed base quantity (after the exchange rules) that ``action`` asks for at ``price`` (default:
        the close of the current row): what a live runner sends to a broker. ``slippage=True`` sizes it as the
        kernel sizes a fill at that open (the configured slippage priced in, so a buy leaves that much headroom;
        no volume cap or impact: the bar's volume is not known yet)."""
        self._check_running()
        ref = float(self.market.close[self.engine.ist[0, nb.ROW]] if price is None else price)
        qty, _, _ = self.engine.fill(self._scalar(action), ref, np.inf if slippage else 0.0, slippage=slippage)
        return qty

    def simulate_fill(self, action) -> tuple[float, float, float]:
        """``(signed qty, price, fee)`` of ``action`` filled as ``step`` fills it: at the open of the next
        real bar (slippage, tick, rules); qty 0 = no trade. Changes nothing."""
        self._check_running()
        row = self.engine.fill_row(self.row)
        self._check_row(row)
        return self.engine.fill(self._scalar(action), self.market.px[row, 0], self.market.px[row, 2])

    def fill_row(self) -> int:
        """The row at whose open an order decided now fills (the next real bar; may not exist yet live)."""
        return self.engine.fill_row(self.row)

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
        self.engine.record_order(0)

    def advance(self):
        """Mark the account at the next row's close and move there (one bar, no order): with the fills
        applied before it, the bar-by-bar form of ``step``. Returns the step tuple; ``info["decidable"]``
        says whether the new row can carry a decision (else hold and advance again)."""
        self._check_running()
        self._check_row(self.row + 1)
        self.engine.advance(self._obs, self._info, self._equity_before)
        self._equity_before[0] = self.engine.fs[0, nb.EQUITY]
        obs, reward, term, trunc, info = self._result()
        info["decidable"] = bool(self.market.decidable[self.row])
        return obs, reward, term, trunc, info

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

    @property
    def halted(self) -> bool:
        """Whether the risk layer's drawdown halt is on (no entries until ``reset_halt`` or its cool-down)."""
        return bool(self.engine.halted[0])

    def reset_halt(self) -> None:
        """Lift the drawdown halt by hand: entries resume and the peak restarts at the current equity."""
        self.engine.reset_halt(0)

    def sync_account(self, cash: float, units: float, entry_price: float | None = None) -> None:
        """Set the account to what the exchange holds (a live start or restart): ``cash`` quote, ``units`` base,
        marked at the current close. The risk state's peak starts there (``restore_risk`` puts a journaled one
        back)."""
        self._check_running()
        cash, units = float(cash), float(units)
        if not (cash >= 0.0 and units >= 0.0):
            raise ValueError(f"an account holds cash >= 0 and units >= 0, got cash={cash}, units={units}")
        fs, row = self.engine.fs, self.row
        close = float(self.market.close[row])
        fs[0, nb.CASH], fs[0, nb.UNITS] = cash, units
        fs[0, nb.EQUITY] = fs[0, nb.PEAK] = cash + units * close
        fs[0, nb.ENTRY] = (float(entry_price) if entry_price else close) if units > 0.0 else 0.0
        self.engine.rs[0, risk_nb.R_PEAK] = fs[0, nb.EQUITY]
        self.engine.rs[0, risk_nb.R_HIGH] = close if units > 0.0 else 0.0
        self._equity_before[0] = fs[0, nb.EQUITY]

    def risk_state(self) -> dict[str, float]:
        """What of the risk layer's state must survive a live restart (the journal keeps it): the drawdown halt
        and the equity peak it is measured from, the position's high (trailing stop), the day's start equity."""
        rs = self.engine.rs[0]
        return {"halted": float(rs[risk_nb.R_HALTED]), "peak": float(rs[risk_nb.R_PEAK]),
                "high": float(rs[risk_nb.R_HIGH]), "day": float(rs[risk_nb.R_DAY]),
                "day_equity": float(rs[risk_nb.R_DAY_EQ])}

    def restore_risk(self, state: dict[str, float] | None) -> None:
        """Put a journaled ``risk_state()`` back (a restarted runner). A halt stays on; its cool-down (if any)
        restarts at the current bar."""
        if not state:
            return
        rs = self.engine.rs[0]
        rs[risk_nb.R_PEAK] = max(float(state.get("peak", rs[risk_nb.R_PEAK])), float(self.engine.fs[0, nb.EQUITY]))
        rs[risk_nb.R_HIGH] = float(state.get("high", rs[risk_nb.R_HIGH]))
        rs[risk_nb.R_DAY] = float(state.get("day", rs[risk_nb.R_DAY]))
        rs[risk_nb.R_DAY_EQ] = float(state.get("day_equity", rs[risk_nb.R_DAY_EQ]))
        if state.get("halted"):
            rs[risk_nb.R_HALTED] = 1.0
            rs[risk_nb.R_HALT_ROW] = float(self.row)

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

    @staticmethod
    def _scalar(action) -> float:
        return float(np.asarray(action).reshape(-1)[0])
