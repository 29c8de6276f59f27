"""The ensemble decider: K members (trained agents with other seeds or algorithms, and baseline rules) whose
target exposures are combined into one decision, behind the one ``Actor`` interface that backtest and live use.

Every member's action is read as the target exposure it asks for (``action_target``: a level's value, a
continuous target, or for buy / sell / hold the exposure now plus or minus ``trade_fraction``); the targets
are combined (``combine_targets``):

- ``mean``: their average;
- ``vote``: their median (with 0 / 1 members, the majority; an even split goes to the lower, flatter side);
- ``confidence``: their average shrunk by their disagreement, mean x (1 - 2 x std): unanimous members keep the
  mean, members split half flat and half in (std 0.5, the most targets in [0, 1] can disagree) give 0.

and the combined target is turned back into the env's action (``target_action``: the nearest level, the
target itself, or buy / sell / hold towards it). The risk rules still apply after it, in the env.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from spotgym.agents.baselines import buy_and_hold, forecast_column, forecast_rule, macd_rule, rsi_rule
from spotgym.envs import Actor, EnvConfig

__all__ = ["COMBINES", "RULES", "EnsembleActor", "EnsembleConfig", "MemberSpec", "action_target", "cash_action",
           "combine_targets", "rule_actor", "target_action"]

COMBINES = ("mean", "vote", "confidence")
RULES = ("buy_and_hold", "macd_rule", "rsi_rule", "lstm_forecast_rule")
_HOLD, _BUY, _SELL = 0, 1, 2


@dataclass(frozen=True)
class MemberSpec:
    """One member: a trained agent (``algo`` / ``params`` / ``timesteps`` override the experiment's agent
    section, unset ones inherit it; ``seed`` unset = the experiment's seed + the member's position) or a
    baseline ``rule``."""

    name: str
    algo: str | None = None
    seed: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    timesteps: int | None = None
    rule: str | None = None

    @property
    def trained(self) -> bool:
        return self.rule is None


@dataclass(frozen=True)
class EnsembleConfig:
    """``agent.ensemble``: the members, how their targets combine, and how many processes train them."""

    members: tuple[MemberSpec, ...]
    combine: str = "confidence"
    workers: int = 0  # 0: as many as there are cores and trained members

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EnsembleConfig:
        """From the YAML block; errors name the key (``agent.ensemble.members[2].rule: ...``)."""
        where = "agent.ensemble"
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping with members, got {data!r}")
        unknown = sorted(set(data) - {"members", "combine", "workers"})
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown key; known: ['combine', 'members', 'workers']")
        combine = data.get("combine", "confidence")
        if combine not in COMBINES:
            raise ValueError(f"{where}.combine: one of {list(COMBINES)}, got {combine!r}")
        workers = data.get("workers", 0)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"{where}.workers: an integer >= 0 (0 = one per core), got {workers!r}")
        raw = data.get("members")
        if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) < 2:
            raise ValueError(f"{where}.members: a list of at least two members, e.g. [{{seed: 1}}, {{seed: 2}}, "
                             f"{{rule: macd_rule}}], got {raw!r}")
        members, names = [], set()
        for k, item in enumerate(raw):
            at = f"{where}.members[{k}]"
            if not isinstance(item, Mapping):
                raise ValueError(f"{at}: expected a mapping such as {{seed: 1}} or {{rule: macd_rule}}, got {item!r}")
            extra = sorted(set(item) - {"name", "algo", "seed", "params", "timesteps", "rule"})
            if extra:
                raise ValueError(f"{at}.{extra[0]}: unknown key; known: ['algo', 'name', 'params', 'rule', 'seed', "
                                 f"'timesteps']")
            rule = item.get("rule")
            if rule is not None:
                if rule not in RULES:
                    raise ValueError(f"{at}.rule: one of {list(RULES)}, got {rule!r}")
                if set(item) - {"rule", "name"}:
                    raise ValueError(f"{at}: a rule member takes only 'rule' (and 'name')")
            seed = item.get("seed")
            if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                raise ValueError(f"{at}.seed: an integer, got {seed!r}")
            steps = item.get("timesteps")
            if steps is not None and (not isinstance(steps, int) or steps < 1):
                raise ValueError(f"{at}.timesteps: an integer >= 1, got {steps!r}")
            params = item.get("params") or {}
            if not isinstance(params, Mapping):
                raise ValueError(f"{at}.params: a mapping of the algorithm's arguments, got {params!r}")
            algo = item.get("algo") or "agent"
            name = str(item.get("name") or rule or (f"{algo}_s{seed}" if seed is not None else f"{algo}_{k}"))
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"{at}.name: letters, digits, '_' and '-' only (it names a folder), got {name!r}")
            if name in names:
                raise ValueError(f"{at}.name: {name!r} is used twice")
            names.add(name)
            members.append(MemberSpec(name, item.get("algo"), seed, dict(params), steps, rule))
        if not any(m.trained for m in members):
            raise ValueError(f"{where}.members: at least one trained member (rules alone need no ensemble run)")
        return cls(tuple(members), combine, workers)

    def to_dict(self) -> dict[str, Any]:
        return {"combine": self.combine, "workers": self.workers,
                "members": [{k: v for k, v in vars(m).items() if v not in (None, {})} for m in self.members]}


# ---------------------------------------------------------------------- actions <-> targets
def action_target(action: Any, config: EnvConfig, exposure: float) -> float:
    """The target exposure ``action`` asks for when the exposure is ``exposure``."""
    a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
    if config.action == "continuous":
        return min(max(a, 0.0), 1.0)
    if config.action == "levels":
        return float(config.levels[int(a)])
    if int(a) == _BUY:
        return min(exposure + config.trade_fraction, 1.0)
    if int(a) == _SELL:
        return max(exposure - config.trade_fraction, 0.0)
    return exposure


def target_action(target: float, config: EnvConfig, exposure: float) -> Any:
    """The env action that moves towards ``target`` from ``exposure``."""
    if config.action == "continuous":
        return np.array([target], dtype=np.float32)
    if config.action == "levels":
        return int(np.argmin([abs(level - target) for level in config.levels]))
    half = config.trade_fraction / 2.0
    return _BUY if target > exposure + half else _SELL if target < exposure - half else _HOLD


def cash_action(config: EnvConfig) -> Any:
    """The action that goes to and stays in cash."""
    return target_action(0.0, config, 1.0)


def combine_targets(targets: Sequence[float], how: str) -> float:
    t = np.asarray(targets, dtype=np.float64)
    if how == "mean":
        return float(t.mean())
    if how == "vote":
        return float(np.sort(t)[(len(t) - 1) // 2])
    if how == "confidence":
        return float(t.mean() * max(0.0, 1.0 - 2.0 * t.std()))
    raise ValueError(f"combine must be one of {COMBINES}, got {how!r}")


# ---------------------------------------------------------------------- members
def rule_actor(rule: str, config: EnvConfig) -> Actor:
    """A baseline rule as an ``Actor`` of this env: its target for the current row, computed causally from the
    env's own market (recomputed only when the market grows, i.e. live)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {list(RULES)}")
    cache: dict[str, Any] = {"key": None, "targets": None}

    def targets_for(market) -> np.ndarray:
        key = (id(market), len(market))
        if cache["key"] != key:
            bars = pd.DataFrame({"close": market.close})
            if rule == "buy_and_hold":
                out = buy_and_hold(bars)
            elif rule == "macd_rule":
                out = macd_rule(bars)
            elif rule == "rsi_rule":
                out = rsi_rule(bars)
            else:
                col = forecast_column(market)
                if col is None:
                    raise ValueError("lstm_forecast_rule needs a forecast column (lstm_ret_* / gru_ret_*) in the frame")
                out = forecast_rule(market.values[:, market.columns.index(col)])
            cache["key"], cache["targets"] = key, out
        return cache["targets"]

    def act(obs, info, env):
        target = float(targets_for(env.market)[info["row"]])
        return target_action(target, config, info["exposure"])

    return act


class EnsembleActor:
    """``EnsembleActor(members, config, combine)``: ``members`` are (name, actor) pairs deciding on the same env;
    each step the combined decision is returned and ``last`` holds every member's target and the combination."""

    def __init__(self, members: Sequence[tuple[str, Actor]], config: EnvConfig, combine: str = "confidence") -> None:
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        self.members = list(members)
        self.config = config
        self.combine = combine
        self.last: dict[str, float] = {}

    def __call__(self, obs, info, env):
        exposure = float(info["exposure"])
        targets = {name: action_target(actor(obs, info, env), self.config, exposure) for name, actor in self.members}
        combined = combine_targets(list(targets.values()), self.combine)
        self.last = {**targets, "combined": combined}
        return target_action(combined, self.config, exposure)
