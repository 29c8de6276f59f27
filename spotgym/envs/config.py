"""``EnvConfig``: every knob of the trading env, validated on construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spotgym.core import checks
from spotgym.risk import RiskConfig
from spotgym.venue import TradingRules, rules_for

__all__ = ["ACTIONS", "FROM_VENUE", "OBS_MODES", "REWARDS", "EnvConfig", "resolve_config"]

ACTIONS: tuple[str, ...] = ("continuous", "levels", "buy_sell_hold")
REWARDS: tuple[str, ...] = ("log", "dsr", "drawdown")
OBS_MODES: tuple[str, ...] = ("box", "dict")
FROM_VENUE = "venue"  # EnvConfig.filters default: the venue's rules for the frame's symbol


def _finite(name: str, value: Any, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False, hi_open: bool = False) -> float:
    return checks.number("EnvConfig", name, value, lo, hi, low_open=lo_open, high_open=hi_open)


def _int(name: str, value: Any, lo: int) -> int:
    return checks.integer("EnvConfig", name, value, lo)


@dataclass(frozen=True)
class EnvConfig:
    """Configuration of ``TradingEnv`` / ``VecTradingEnv``; keyword overrides just work.

    ``EnvConfig(fee=0.0, filters=None)``; ``cfg.replace(window=64)``. A bad value raises
    ``ValueError`` naming the field.

    Actions (``action``):
      ``"continuous"``: ``Box(0, 1, (1,))`` target exposure (fraction of equity held in the asset,
      met at the fill price after fees and filter rounding); ``"levels"``: ``Discrete(len(levels))``
      target exposures; ``"buy_sell_hold"``: ``Discrete(3)`` = hold, buy, sell, where buy raises
      the exposure by ``trade_fraction`` (capped at 1) and sell lowers it by ``trade_fraction``
      (floored at 0). Target actions rebalance every step unless the change of exposure is
      below ``deadband``; hold never trades.

    Costs: ``fee`` on the traded notional (quote currency); fills at the next bar's open worsened
    by ``slippage_bps`` plus ``impact_bps`` x participation (order quantity / the fill bar's
    volume); ``max_participation`` caps an order at that fraction of the fill bar's volume
    (``None`` = no cap). ``filters`` are the exchange's trading rules: ``"venue"`` (default) = the
    venue's rules for the frame's symbol (``spotgym.venue.rules_for``; a frame without a symbol, or a
    symbol with no known rules, is an error naming it), a ``TradingRules`` (or a mapping of its
    fields), or ``None`` = no rules.

    Rewards (``reward``): ``"log"`` = log(E_t+1 / E_t) of net equity (fees included; summed over
    an episode it is log(final / initial equity)); ``"dsr"`` = Moody & Saffell's differential
    Sharpe ratio of the log returns with moment decay ``dsr_eta``; ``"drawdown"`` = log return
    minus ``dd_penalty`` x the increase of the log drawdown log(peak / equity) this step.

    Episodes: decisions happen on rows in ``[start_row, end_row)`` (``end_row`` ``None`` = the end
    of the frame); the observation window may reach back before ``start_row``. A row is
    decidable when its whole window is valid and it is a real bar (not a filled gap). With
    ``episode_length`` set, each reset picks a random start row (seeded) whose whole episode is
    decidable; ``None`` = one sequential pass from the first to the last decidable row, holding
    through undecidable rows in between (one step may then mark several bars). Equity below
    ``ruin_floor`` x ``initial_cash`` terminates the episode (0 = never).

    Risk (``risk``): a ``RiskConfig`` (or a mapping of its rules; ``None`` = no rules) applied between
    the action's target and the fill in the step kernel (``spotgym.risk.nb``); ``info["risk"]`` holds the
    bits of the rules that changed the step's decision and ``info["halted"]`` the drawdown halt.

    Cost awareness: ``turnover_penalty`` charges the reward that multiple of the step's traded notional
    over the equity before it (0 = off; the fee is already in the equity); ``decide_every`` = k makes
    each action hold for k bars (a step marks them all; the reward is their sum).

    Observation (``obs_mode``): ``"box"`` = one float32 vector, the ``window`` x n_features
    feature rows (oldest first, row-major) followed by the account state [exposure, unrealised
    return, log1p(bars in position), cash fraction]; ``"dict"`` = the same two parts as a flat
    ``{"features": (window * n_features,), "account": (4,)}`` for ``MultiInputPolicy``.
    """

    action: Literal["continuous", "levels", "buy_sell_hold"] = "continuous"
    levels: tuple[float, ...] = (0.0, 0.5, 1.0)
    trade_fraction: float = 1.0
    deadband: float = 0.0
    fee: float = 0.001
    slippage_bps: float = 1.0
    impact_bps: float = 0.0
    max_participation: float | None = None
    filters: TradingRules | str | None = FROM_VENUE
    window: int = 32
    episode_length: int | None = None
    start_row: int = 0
    end_row: int | None = None
    reward: Literal["log", "dsr", "drawdown"] = "log"
    dsr_eta: float = 0.01
    dd_penalty: float = 0.5
    initial_cash: float = 10_000.0
    ruin_floor: float = 0.0
    obs_mode: Literal["box", "dict"] = "box"
    risk: RiskConfig | None = None
    turnover_penalty: float = 0.0
    decide_every: int = 1

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.action not in ACTIONS:
            raise ValueError(f"EnvConfig.action must be one of {ACTIONS}, got {self.action!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"EnvConfig.reward must be one of {REWARDS}, got {self.reward!r}")
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"EnvConfig.obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        try:
            levels = tuple(float(x) for x in self.levels)
        except (TypeError, ValueError):
            raise ValueError(f"EnvConfig.levels must be a sequence of numbers in [0, 1], got {self.levels!r}") from None
        if not levels or any(not (0.0 <= x <= 1.0) for x in levels) or len(set(levels)) != len(levels):
            raise ValueError(f"EnvConfig.levels must be distinct numbers in [0, 1] (at least one), got {self.levels!r}")
        set_(self, "levels", levels)
        set_(self, "trade_fraction", _finite("trade_fraction", self.trade_fraction, 0.0, 1.0, lo_open=True))
        set_(self, "deadband", _finite("deadband", self.deadband, 0.0, 1.0, hi_open=True))
        set_(self, "fee", _finite("fee", self.fee, 0.0, 1.0, hi_open=True))
        set_(self, "slippage_bps", _finite("slippage_bps", self.slippage_bps, 0.0, 10_000.0, hi_open=True))
        set_(self, "impact_bps", _finite("impact_bps", self.impact_bps, 0.0, 10_000.0, hi_open=True))
        if self.max_participation is not None:
            set_(self, "max_participation",
                 _finite("max_participation", self.max_participation, 0.0, 1.0, lo_open=True))
        filters = self.filters
        if isinstance(filters, Mapping):
            filters = TradingRules.from_mapping(filters)
        if filters is not None and filters != FROM_VENUE and not isinstance(filters, TradingRules):
            raise ValueError(f"EnvConfig.filters must be 'venue', a TradingRules, a mapping of its fields or None, "
                             f"got {filters!r}")
        set_(self, "filters", filters)
        set_(self, "window", _int("window", self.window, 1))
        if self.episode_length is not None:
            set_(self, "episode_length", _int("episode_length", self.episode_length, 1))
        set_(self, "start_row", _int("start_row", self.start_row, 0))
        if self.end_row is not None:
            set_(self, "end_row", _int("end_row", self.end_row, 0))
            if self.end_row < self.start_row + 2:
                raise ValueError(f"EnvConfig.end_row ({self.end_row}) must be at least start_row + 2 "
                                 f"({self.start_row + 2}): a step needs the decision row and the fill row")
        set_(self, "dsr_eta", _finite("dsr_eta", self.dsr_eta, 0.0, 1.0, lo_open=True, hi_open=True))
        set_(self, "dd_penalty", _finite("dd_penalty", self.dd_penalty, 0.0))
        set_(self, "initial_cash", _finite("initial_cash", self.initial_cash, 0.0, lo_open=True))
        set_(self, "ruin_floor", _finite("ruin_floor", self.ruin_floor, 0.0, 1.0, hi_open=True))
        risk = self.risk
        if isinstance(risk, Mapping):
            try:
                risk = RiskConfig.from_mapping(risk)
            except ValueError as exc:
                raise ValueError(f"EnvConfig.risk: {exc}") from None
        if risk is not None and not isinstance(risk, RiskConfig):
            raise ValueError(f"EnvConfig.risk must be a RiskConfig, a mapping of its rules or None, got {risk!r}")
        set_(self, "risk", risk if risk is not None and risk.enabled else None)
        set_(self, "turnover_penalty", _finite("turnover_penalty", self.turnover_penalty, 0.0))
        set_(self, "decide_every", _int("decide_every", self.decide_every, 1))

    def replace(self, **changes: Any) -> EnvConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def for_rows(self, rows: range) -> EnvConfig:
        """A copy trading the rows of ``rows`` (e.g. ``fold.train`` of ``spotgym.data.WalkForward``)."""
        if rows.step != 1 or len(rows) < 2:
            raise ValueError(f"EnvConfig.for_rows needs a contiguous range of at least 2 rows, got {rows!r}")
        return self.replace(start_row=rows.start, end_row=rows.stop)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EnvConfig:
        """From a plain mapping (a YAML block); unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown EnvConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["levels"] = list(self.levels)
        out["risk"] = self.risk.to_dict() if self.risk is not None else None
        return out

    def trading_rules(self, symbol: str | None) -> TradingRules:
        """The rules the env applies to a market of ``symbol`` (``filters=None``: every rule off)."""
        if self.filters is None:
            return TradingRules.off(symbol or "")
        if isinstance(self.filters, TradingRules):
            return self.filters
        if symbol is None:
            raise ValueError("the frame does not say which symbol it holds, so the env cannot look up its trading "
                             "rules: load the bars with load_bars(..., symbol='ETH/USDT') (or from a file named like "
                             "BINANCE_ETHUSDT_1h.csv), or pass EnvConfig(filters=TradingRules(...)), or filters=None")
        return rules_for(symbol)

    @property
    def n_account(self) -> int:
        """Number of account-state values appended to the observation."""
        return 4


def resolve_config(config: EnvConfig | None, overrides: Mapping[str, Any]) -> EnvConfig:
    """``config`` (default ``EnvConfig()``) with keyword ``overrides`` applied: what both env classes accept."""
    config = config if config is not None else EnvConfig()
    if not isinstance(config, EnvConfig):
        raise TypeError(f"config must be an EnvConfig, got {type(config).__name__}")
    return config.replace(**overrides) if overrides else config
