"""``AccountEngine``: the arrays of N accounts and the kernel calls both env classes share.

``TradingEnv`` (N = 1, the gymnasium API) and ``VecTradingEnv`` (N accounts, the SB3 VecEnv
API) are thin shells over this class; every number they return comes from ``nb.py``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces

from spotgym.envs import nb
from spotgym.envs.config import EnvConfig
from spotgym.envs.market import MarketData
from spotgym.risk import nb as risk_nb
from spotgym.venue import TradingRules

__all__ = ["AccountEngine", "make_params"]

OPEN_END = np.iinfo(np.int64).max // 2  # the last row of a live (open-ended) episode
_ACTION_KIND = {"continuous": nb.ACT_CONTINUOUS, "levels": nb.ACT_LEVELS, "buy_sell_hold": nb.ACT_BUY_SELL_HOLD}
_REWARD_KIND = {"log": nb.REW_LOG, "dsr": nb.REW_DSR, "drawdown": nb.REW_DRAWDOWN}
_SCALARS = (int, float, np.number)  # a tuple: ``int | float | np.number`` builds a new Union on every step


def make_params(config: EnvConfig, rules: TradingRules) -> np.ndarray:
    """The float parameter vector ``p`` of the kernels (``P_*``, then the target levels)."""
    flt = rules
    p = np.zeros(nb.N_P + len(config.levels), dtype=np.float64)
    p[nb.P_FEE] = config.fee
    p[nb.P_SLIP_BPS] = config.slippage_bps
    p[nb.P_IMPACT_BPS] = config.impact_bps
    p[nb.P_MAX_PART] = config.max_participation or 0.0
    p[nb.P_TICK] = flt.tick_size
    p[nb.P_STEP] = flt.step_size
    p[nb.P_MIN_QTY] = flt.min_qty
    p[nb.P_MIN_NOTIONAL] = flt.min_notional
    p[nb.P_CASH0] = config.initial_cash
    p[nb.P_RUIN] = config.ruin_floor * config.initial_cash
    p[nb.P_DD_PENALTY] = config.dd_penalty
    p[nb.P_DSR_ETA] = config.dsr_eta
    p[nb.P_TRADE_FRACTION] = config.trade_fraction
    p[nb.P_DEADBAND] = config.deadband
    p[nb.P_TURNOVER] = config.turnover_penalty
    p[nb.N_P:] = config.levels
    return p


class AccountEngine:
    """N accounts trading one market: state arrays, parameters, episode bounds, kernel calls."""

    def __init__(self, market: MarketData, config: EnvConfig, n_envs: int, open_ended: bool = False) -> None:
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        self.market = market
        self.config = config
        self.n_envs = int(n_envs)
        self.open_ended = bool(open_ended)  # live: the sequential pass never ends at the data's end
        self.window = config.window
        self.n_features = market.n_features
        self.feat_dim = self.window * self.n_features
        self.obs_dim = self.feat_dim + nb.N_ACCOUNT_OBS
        self.feature_shape = (self.window, self.n_features)  # the feature block, row-major (oldest row first)
        self.fs = np.zeros((self.n_envs, nb.N_FS), dtype=np.float64)
        self.ist = np.zeros((self.n_envs, nb.N_IS), dtype=np.int64)
        self.rules = config.trading_rules(market.symbol)
        self.p = make_params(config, self.rules)
        self.ip = np.zeros(nb.N_IP, dtype=np.int64)
        self.ip[nb.I_ACTION] = _ACTION_KIND[config.action]
        self.ip[nb.I_REWARD] = _REWARD_KIND[config.reward]
        self.ip[nb.I_WINDOW] = self.window
        self.ip[nb.I_NFEAT] = self.n_features
        self.ip[nb.I_EP_LEN] = config.episode_length or 0
        self.ip[nb.I_DECIDE_EVERY] = config.decide_every
        self.levels = self.p[nb.N_P:]
        # the risk layer (spotgym.risk.nb): state per account, parameters, per-row series
        risk = config.risk
        self.ip[nb.I_RISK] = int(risk is not None)
        self.rs = np.zeros((self.n_envs, risk_nb.risk_state_width(risk.max_orders_per_hour if risk else None)),
                           dtype=np.float64)
        for i in range(self.n_envs):
            risk_nb.reset_risk_nb(self.rs, i, config.initial_cash)
        self.rp = risk_nb.make_risk_params(risk, config.deadband, market.bar_ms)
        self._kelly_col = None
        if risk is not None and risk.kelly_column is not None:
            if risk.kelly_column not in market.columns:
                raise ValueError(f"risk.kelly_column {risk.kelly_column!r} is not a column of the frame; its columns: "
                                 f"{list(market.columns)}")
            self._kelly_col = market.columns.index(risk.kelly_column)
        self.rx = risk_nb.empty_series(0 if risk is None else len(market))
        self._rx_rows = 0
        self._gate_flags = np.zeros(self.n_envs, dtype=np.float64)  # the live seam's last gate, per account
        self.actions = np.zeros(self.n_envs, dtype=np.float64)  # actions as the kernels take them
        self.term_obs = np.zeros((self.n_envs, self.obs_dim), dtype=np.float32)
        self.reset_info = np.zeros((self.n_envs, nb.N_INFO), dtype=np.float64)
        self.all_idx = np.arange(self.n_envs, dtype=np.int64)
        self.compute_bounds()
        self.action_space = self._action_space()
        self.observation_space = self._observation_space()

    # ------------------------------------------------------------------ episode bounds
    def compute_bounds(self) -> None:
        """Candidate start rows (random episodes) or the one sequential pass, from the config's row range
        and the rows that can carry a decision (``MarketData.decidable``).

        A random episode starts on a decidable row and every row of it is decidable (training never
        meets a masked row). The sequential pass runs from the first decidable row of the range to its
        last decidable row, through any masked rows between them (held, see ``nb.hop_step_nb``)."""
        cfg, m = self.config, self.market
        n = len(m)
        self._refresh_risk_series()
        last = n - 1 if cfg.end_row is None else min(cfg.end_row, n) - 1  # last row that can be filled at
        ok = m.decidable
        rows = np.arange(cfg.start_row, max(cfg.start_row, last), dtype=np.int64)  # decision rows
        span = f"rows [{cfg.start_row}, {last + 1}) of a {n}-row frame with window {cfg.window}"
        if cfg.episode_length is not None:
            run_end = nb.run_end_nb(ok)
            reach = np.minimum(run_end[rows], last) if rows.size else rows
            starts = rows[ok[rows] & (rows + cfg.episode_length <= reach)] if rows.size else rows
            if starts.size == 0:
                raise ValueError(f"no episode of episode_length={cfg.episode_length} fits in {span} "
                                 f"(every row of an episode must be decidable: a full valid window on a real bar; "
                                 f"first decidable row {int(ok.argmax()) if ok.any() else None})")
            self.starts = starts
            self.seq_start = int(starts[0])
            self.ip[nb.I_SEQ_END] = -1
        else:
            good = np.flatnonzero(ok[cfg.start_row:last + 1]) + cfg.start_row if last >= cfg.start_row else rows
            if good.size < 2 and not self.open_ended:
                raise ValueError(f"no two decidable rows (a full valid observation window on a real bar) in {span}")
            if good.size == 0:
                raise ValueError(f"no decidable row (a full valid observation window on a real bar) in {span}")
            self.seq_start = int(good[0])
            self.starts = np.array([self.seq_start], dtype=np.int64)
            self.ip[nb.I_SEQ_END] = OPEN_END if self.open_ended else int(good[-1])

    def _refresh_risk_series(self) -> None:
        """The risk layer's per-row series, extended to the market's rows (live: as bars are appended)."""
        if not self.ip[nb.I_RISK]:
            return
        m, n, start = self.market, len(self.market), self._rx_rows
        if n == start:
            return
        if n > self.rx.shape[0]:
            grown = risk_nb.empty_series(max(n, 2 * self.rx.shape[0]))
            grown[:start] = self.rx[:start]
            self.rx = grown
        risk_nb.fill_series_nb(self.rx[:n], m.close, m.timestamps_ms, m.bar_ms, start)
        if self._kelly_col is not None:
            self.rx[start:n, risk_nb.X_MU] = m.values[start:n, self._kelly_col]
        self._rx_rows = n

    @property
    def seq_end(self) -> int:
        return int(self.ip[nb.I_SEQ_END])

    def draw_start(self, rng: np.random.Generator) -> int:
        """A start row: random among the candidates (training) or the sequential start."""
        if self.config.episode_length is None:
            return self.seq_start
        return int(self.starts[rng.integers(self.starts.size)])

    def draw_starts(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` successive ``draw_start(rng)`` values from one generator call: numpy's
        ``Generator.integers`` draws a batch as exactly the values (and leaves the generator in
        the state) of the same number of single draws."""
        if self.config.episode_length is None:
            return np.full(size, self.seq_start, dtype=np.int64)
        return self.starts[rng.integers(self.starts.size, size=size)]

    # ------------------------------------------------------------------ spaces
    def _action_space(self) -> spaces.Space:
        kind = self.config.action
        if kind == "continuous":
            return spaces.Box(0.0, 1.0, shape=(1,), dtype=np.float32)
        if kind == "levels":
            return spaces.Discrete(len(self.config.levels))
        return spaces.Discrete(3)

    def _observation_space(self) -> spaces.Space:
        if self.config.obs_mode == "dict":
            return spaces.Dict({
                "features": spaces.Box(-np.inf, np.inf, shape=(self.feat_dim,), dtype=np.float32),
                "account": spaces.Box(-np.inf, np.inf, shape=(nb.N_ACCOUNT_OBS,), dtype=np.float32),
            })
        return spaces.Box(-np.inf, np.inf, shape=(self.obs_dim,), dtype=np.float32)

    @property
    def n_mask(self) -> int:
        kind = self.config.action
        return len(self.config.levels) if kind == "levels" else 3 if kind == "buy_sell_hold" else 1

    # ------------------------------------------------------------------ kernel calls
    def set_actions(self, actions) -> np.ndarray:
        """Copy ``actions`` (any shape with N elements) into the float64 action buffer."""
        if self.n_envs == 1 and isinstance(actions, _SCALARS):
            self.actions[0] = actions
            return self.actions
        a = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        if a.size != self.n_envs:
            raise ValueError(f"expected {self.n_envs} action(s), got an array of shape {a.shape}")
        np.copyto(self.actions, a.reshape(self.n_envs), casting="unsafe")
        return self.actions

    def fill(self, action: float, open_px: float, volume: float, *, slippage: bool = True,
             i: int = 0) -> tuple[float, float, float]:
        """``(signed qty, price, fee)`` of account ``i`` meeting ``action`` at ``open_px`` as the step kernel
        fills it, risk gate included (``slippage=False``: no slippage, impact, volume cap or tick rounding:
        the order a live runner plans at the last close). qty 0 = no trade. Changes no account; the risk
        state takes what the close of the current row says (as the step would; the same row twice changes
        nothing more)."""
        fs, p = self.fs, self.p
        cash, units = fs[i, nb.CASH], fs[i, nb.UNITS]
        target, hold, flags = nb.gate_account_nb(fs, self.ist, i, p, self.ip, self.market.px, self.rs, self.rp,
                                                 self._rx(), float(action), float(open_px))
        self._gate_flags[i] = flags
        if hold:
            return 0.0, 0.0, 0.0
        slip, impact, cap, tick = ((p[nb.P_SLIP_BPS], p[nb.P_IMPACT_BPS], p[nb.P_MAX_PART], p[nb.P_TICK])
                                   if slippage else (0.0, 0.0, 0.0, 0.0))
        qty, price, fee = nb.sim_fill_nb(target, cash, units, float(open_px), float(volume), p[nb.P_FEE], slip, impact,
                                         cap, tick, p[nb.P_STEP], p[nb.P_MIN_QTY], p[nb.P_MIN_NOTIONAL],
                                         p[nb.P_DEADBAND])
        return float(qty), float(price), float(fee)

    def fill_row(self, row: int) -> int:
        """The row at whose open an order decided on ``row`` fills: the next real bar (len(market) if none yet)."""
        return int(self.market.hops[row, nb.FILL_ROW])

    def _rx(self) -> np.ndarray:
        return self.rx[: self._rx_rows] if self.ip[nb.I_RISK] else self.rx

    def step(self, obs: np.ndarray, info: np.ndarray) -> int:
        """Step every account with ``self.actions``; returns how many finished (``ist[:, DONE]``)."""
        m = self.market
        return nb.step_accounts_nb(self.actions, self.fs, self.ist, self.p, self.ip, m.vflat, m.px, m.hops, self.rs,
                                   self.rp, self._rx(), obs, info)

    def autoreset(self, next_start: np.ndarray, obs: np.ndarray) -> None:
        """Restart the finished accounts at ``next_start`` (their last observation and the reset
        info land in ``term_obs`` / ``reset_info``)."""
        m = self.market
        nb.autoreset_accounts_nb(self.fs, self.ist, self.p, self.ip, m.vflat, m.px, self.rs, next_start, obs,
                                 self.term_obs, self.reset_info)

    def reset(self, idx: np.ndarray, starts: np.ndarray, obs: np.ndarray, info: np.ndarray) -> None:
        m = self.market
        nb.reset_accounts_nb(self.fs, self.ist, self.p, self.ip, m.vflat, m.px, self.rs, idx, starts, obs, info)
        self._gate_flags[idx] = 0.0

    def observe(self, obs: np.ndarray, info: np.ndarray) -> None:
        m = self.market
        nb.observe_accounts_nb(self.fs, self.ist, self.ip, m.vflat, m.px, self.rs, obs, info)

    def advance(self, obs: np.ndarray, info: np.ndarray, equity_before: np.ndarray) -> None:
        """Mark every account at the next row (``nb.advance_accounts_nb``); the gate flags of the live seam's
        last decision go to the info once, then clear."""
        m = self.market
        nb.advance_accounts_nb(self.fs, self.ist, self.p, self.ip, m.vflat, m.px, self.rs, equity_before,
                               self._gate_flags, obs, info)
        self._gate_flags[:] = 0.0

    def record_order(self, i: int = 0) -> None:
        """Account ``i`` sent an order for its decision at the current row (the order-rate rule counts it)."""
        if self.ip[nb.I_RISK]:
            risk_nb.record_order_nb(self.rs, i, self.rp, self.rx[int(self.ist[i, nb.ROW]), risk_nb.X_TIME])

    def reset_halt(self, i: int = 0) -> None:
        """Lift account ``i``'s drawdown halt by hand (entries resume; the peak restarts at its equity)."""
        risk_nb.reset_halt_nb(self.rs, i, float(self.fs[i, nb.EQUITY]))

    @property
    def halted(self) -> np.ndarray:
        """Per account: whether the drawdown halt is on."""
        return self.rs[:, risk_nb.R_HALTED] != 0.0

    def action_masks(self) -> np.ndarray:
        out = np.zeros((self.n_envs, self.n_mask), dtype=np.bool_)
        nb.action_masks_nb(self.fs, self.ist, self.p, self.ip, self.market.px, out)
        return out

    # ------------------------------------------------------------------ observation views
    def split_obs(self, flat: np.ndarray):
        """Flat (..., obs_dim) observations as the configured observation type (views)."""
        if self.config.obs_mode == "box":
            return flat
        return {"features": flat[..., : self.feat_dim], "account": flat[..., self.feat_dim:]}
