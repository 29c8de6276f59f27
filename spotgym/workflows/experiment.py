"""Experiments: one YAML file naming data, features, predictors, env, risk, agent, evaluation, tracking, tune.

``load_experiment(path, overrides)`` reads the file, applies ``--set key=value`` overrides
(dotted keys, YAML values), and validates every section on load, before any data is read or any
model trained: an unknown key or a bad value is an error naming the key (``agent.timestep: unknown
key; known: ...``), a malformed file an error naming the file, line and column.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from gymnasium import spaces

from spotgym.agents import EnsembleConfig, algo_spec
from spotgym.backtest import Criteria
from spotgym.core import stable_hash
from spotgym.data import GAP_POLICIES, timeframe_to_ms
from spotgym.envs import FROM_VENUE, EnvConfig
from spotgym.predictors.config import StackingSpec
from spotgym.predictors.pipeline import FrameSpec
from spotgym.risk import RiskConfig
from spotgym.venue import UnknownSymbol, normalize_symbol, rules_for
from spotgym.workflows.errors import ExperimentError
from spotgym.workflows.search_space import TuneConfig, parse_tune_config

__all__ = ["AgentConfig", "DataConfig", "EvaluationConfig", "Experiment", "ExperimentError", "RunConfig",
           "TrackingConfig", "apply_override", "apply_values", "load_experiment"]


POOL_KEYS = ("symbol", "path", "start", "end")


@dataclass(frozen=True)
class DataConfig:
    """Where the bars come from: a file (``path``) or the download cache (downloaded when missing).

    ``pool``: more symbols the agent trains on beside ``symbol`` (pooled training: more data per parameter),
    each ``{symbol, path, start, end}`` (no path: the download cache), same timeframe; each gets its own
    frame (features normalised per symbol; predictors fitted per symbol, or with ``predictors.fit: pooled``
    each refit block fitted once on every symbol's earlier rows) and trains over the same dates as the
    main symbol's training split. Validation and model selection stay on ``symbol``; the backtest reports
    every symbol."""

    exchange: str = "binance"
    symbol: str = "ETH/USDT"
    timeframe: str = "1h"
    path: str | None = None
    start: str | None = None
    end: str | None = None
    gap_policy: str = "mark"
    pool: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "symbol", normalize_symbol(self.symbol))
        except UnknownSymbol as exc:
            raise ExperimentError(f"data.symbol: {exc}") from None
        pool, seen = [], {self.symbol}
        for k, item in enumerate(self.pool or []):
            where = f"data.pool[{k}]"
            if isinstance(item, str):
                item = {"symbol": item}
            if not isinstance(item, Mapping) or "symbol" not in item:
                raise ExperimentError(f"{where}: expected {{symbol: BTC/USDT, path: FILE}}, got {item!r}")
            extra = sorted(set(item) - set(POOL_KEYS))
            if extra:
                raise ExperimentError(f"{where}.{extra[0]}: unknown key; known: {list(POOL_KEYS)}")
            try:
                symbol = normalize_symbol(item["symbol"])
            except UnknownSymbol as exc:
                raise ExperimentError(f"{where}.symbol: {exc}") from None
            if symbol in seen:
                raise ExperimentError(f"{where}.symbol: {symbol} is already in the data (main symbol or pool)")
            seen.add(symbol)
            pool.append({"symbol": symbol, **{key: (str(item[key]) if item.get(key) is not None else None)
                                              for key in POOL_KEYS[1:]}})
        object.__setattr__(self, "pool", pool or None)
        if self.gap_policy not in GAP_POLICIES:
            raise ExperimentError(f"data.gap_policy: must be one of {GAP_POLICIES}, got {self.gap_policy!r}")
        try:
            timeframe_to_ms(self.timeframe)
        except ValueError as exc:
            raise ExperimentError(f"data.timeframe: {exc}") from None


@dataclass(frozen=True)
class AgentConfig:
    """The SB3 / sb3-contrib algorithm and its hyper-parameters (``params`` go to the constructor). ``ensemble``:
    members trained like this agent with other seeds / algorithms / parameters, or baseline rules, combined
    into one decision (``spotgym.agents.EnsembleConfig``)."""

    algo: str = "ppo"
    policy: str | None = None
    timesteps: int = 100_000
    n_envs: int = 8
    device: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 10_000
    ensemble: dict[str, Any] | None = None

    def ensemble_config(self) -> EnsembleConfig | None:
        if not self.ensemble:
            return None
        try:
            return EnsembleConfig.from_mapping(self.ensemble)
        except ValueError as exc:
            raise ExperimentError(str(exc)) from None

    def __post_init__(self) -> None:
        if self.timesteps < 1:
            raise ExperimentError(f"agent.timesteps: must be >= 1, got {self.timesteps}")
        if self.n_envs < 1:
            raise ExperimentError(f"agent.n_envs: must be >= 1, got {self.n_envs}")
        if self.eval_every < 1:
            raise ExperimentError(f"agent.eval_every: must be >= 1, got {self.eval_every}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ExperimentError(f"agent.device: must be auto, cpu or cuda[:N], got {self.device!r}")


@dataclass(frozen=True)
class EvaluationConfig:
    """Walk-forward split of the frame rows: ``folds`` train/val/test folds (``train`` uses the last), and the
    success ``criteria`` a walk-forward result is measured against (``min_annual_return``, ``max_drawdown``,
    ``beat_buy_and_hold``; default: the project's target, >= 300 %/yr with a drawdown < 15 %)."""

    folds: int = 1
    val_size: float | int = 0.1
    test_size: float | int = 0.15
    purge: int = 24
    embargo: int = 0
    criteria: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ExperimentError(f"evaluation.folds: must be >= 1, got {self.folds}")
        for name in ("val_size", "test_size"):
            value = getattr(self, name)
            if value <= 0 or (isinstance(value, float) and value >= 1):
                raise ExperimentError(f"evaluation.{name}: a fraction in (0, 1) or a row count >= 1, got {value!r}")
        if self.purge < 0 or self.embargo < 0:
            raise ExperimentError("evaluation.purge / evaluation.embargo: must be >= 0 bars")
        try:
            Criteria.from_mapping(self.criteria)
        except ValueError as exc:
            raise ExperimentError(f"evaluation.criteria: {exc}") from None

    def success_criteria(self) -> Criteria:
        return Criteria.from_mapping(self.criteria)


@dataclass(frozen=True)
class TrackingConfig:
    """TensorBoard and Weights & Biases. ``wandb_mode: auto`` is online when a W&B key is configured
    (``WANDB_API_KEY``), offline otherwise (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads later)."""

    tensorboard: bool = True
    wandb: bool = True
    wandb_project: str = "spotgym"
    wandb_mode: str = "auto"

    def __post_init__(self) -> None:
        modes = ("auto", "offline", "online", "disabled")
        if self.wandb_mode not in modes:
            raise ExperimentError(f"tracking.wandb_mode: must be one of {modes}, got {self.wandb_mode!r}")


@dataclass(frozen=True)
class RunConfig:
    """Where the run directory goes: ``dir`` exactly, else ``<root>/<experiment name>-<UTC time>``."""

    dir: str | None = None
    root: str = "runs"


@dataclass(frozen=True)
class Experiment:
    """A whole experiment; ``features``, ``predictors``, ``env``, ``risk`` and ``tune`` stay mappings here and are
    validated on load by the objects that consume them (``FrameSpec``, ``EnvConfig``, ``RiskConfig``, the tuner)."""

    name: str
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    features: dict[str, Any] = field(default_factory=dict)
    predictors: dict[str, Any] | None = None
    env: dict[str, Any] = field(default_factory=dict)
    risk: dict[str, Any] = field(default_factory=dict)
    agent: AgentConfig = field(default_factory=AgentConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tune: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @property
    def hash(self) -> str:
        return stable_hash(self.to_dict())

    def frame_spec(self) -> FrameSpec:
        """The ``FrameSpec`` of ``features`` (``default_spec()`` when empty) and ``predictors``."""
        try:
            features = FrameSpec.from_config(self.features).features
        except ValueError as exc:
            raise ExperimentError(f"features: {exc}") from None
        try:
            predictors = StackingSpec.from_config(self.predictors) if self.predictors else None
        except ValueError as exc:
            raise ExperimentError(f"predictors: {exc}") from None
        return FrameSpec(features, predictors)

    def env_config(self, **overrides: Any) -> EnvConfig:
        """The ``EnvConfig`` of ``env`` with the ``risk`` section's rules (keyword overrides for e.g. the
        evaluation row range)."""
        if "risk" in self.env:
            raise ExperimentError("env.risk: the risk rules are a section of their own: move them to a top-level "
                                  "'risk:' block")
        risk = self.risk_config()
        try:
            return EnvConfig.from_mapping({**self.env, "risk": risk if risk.enabled else None, **overrides})
        except ValueError as exc:
            raise ExperimentError(f"env: {exc}") from None

    def risk_config(self) -> RiskConfig:
        try:
            return RiskConfig.from_mapping(self.risk)
        except ValueError as exc:
            raise ExperimentError(f"risk: {exc}") from None

    def tune_config(self) -> TuneConfig:
        """The validated ``tune:`` section (defaults when absent)."""
        return parse_tune_config(self.tune, self.agent.algo)

    def validate(self) -> None:
        """Every section, checked together, before any data is loaded or anything trained."""
        stacking = self.frame_spec().predictors
        if stacking is not None and stacking.fit == "pooled" and not self.data.pool:
            raise ExperimentError("predictors.fit: 'pooled' fits each predictor on the rows of every data.pool "
                                  "symbol, but data.pool is empty; add symbols to data.pool or set predictors.fit "
                                  "to per_symbol")
        env = self.env_config()
        self.risk_config()
        ensemble = self.agent.ensemble_config()
        algos = [("agent.algo", self.agent.algo)]
        if ensemble is not None:
            algos += [(f"agent.ensemble member {m.name}: algo", m.algo) for m in ensemble.members if m.algo]
        for where, algo in algos:
            try:
                spec = algo_spec(algo)
            except ValueError as exc:
                raise ExperimentError(f"{where}: {exc}".replace("agent.algo: agent.algo:", "agent.algo:")) from None
            wanted = spaces.Box if env.action == "continuous" else spaces.Discrete
            if wanted not in spec.action_spaces:
                kinds = " or ".join(s.__name__ for s in spec.action_spaces)
                fix = "continuous" if spaces.Box in spec.action_spaces else "levels or buy_sell_hold"
                raise ExperimentError(f"{where}: {algo} needs a {kinds} action space but env.action "
                                      f"{env.action!r} gives a {wanted.__name__} one; set env.action to {fix}")
        if self.data.pool and env.filters != FROM_VENUE:
            raise ExperimentError("env.filters: with data.pool every symbol trades under its own exchange rules; "
                                  "leave env.filters at 'venue'")
        if env.filters == FROM_VENUE and self.data.path is not None:
            for symbol in [self.data.symbol, *(p["symbol"] for p in self.data.pool or [] if p.get("path"))]:
                try:  # offline (a data file): the rules must be in the shipped snapshot
                    rules_for(symbol, self.data.exchange)
                except UnknownSymbol as exc:
                    raise ExperimentError(f"env.filters: {exc}") from None
        if self.tune:
            self.tune_config()


def load_experiment(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Experiment:
    """Read and validate an experiment file (or mapping), applying ``key=value`` overrides first."""
    if isinstance(source, Mapping):
        raw, name = copy.deepcopy(dict(source)), str(source.get("name", "experiment"))
    else:
        path = Path(source)
        if not path.is_file():
            raise ExperimentError(f"experiment file {path} does not exist")
        raw = _read_yaml(path) or {}
        if not isinstance(raw, dict):
            raise ExperimentError(f"{path}: the experiment must be a YAML mapping, got {type(raw).__name__}")
        name = raw.get("name") or path.stem
    for item in overrides:
        apply_override(raw, item)
    raw.setdefault("name", name)
    experiment = _build(Experiment, raw, "")
    experiment.validate()
    return experiment


def _read_yaml(path: Path) -> Any:
    """The YAML document of ``path``; a syntax error names the file, line and column."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        raise ExperimentError(f"{where}: invalid YAML: {problem}" + (f" ({context})" if context else "")) from None
    except UnicodeDecodeError as exc:
        raise ExperimentError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def apply_values(exp: Experiment, values: Mapping[str, Any]) -> Experiment:
    """A copy of ``exp`` with dotted keys set (nested mappings created as needed), validated again."""
    raw = exp.to_dict()
    for key, value in values.items():
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ExperimentError(f"{key}: {part!r} is not a mapping")
            node = child
        node[parts[-1]] = copy.deepcopy(value)
    return load_experiment(raw)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """``agent.timesteps=5000`` → raw["agent"]["timesteps"] = 5000 (the value is parsed as YAML)."""
    if "=" not in item:
        raise ExperimentError(f"override {item!r}: expected key=value, e.g. agent.timesteps=5000")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ExperimentError(f"override {item!r}: bad key {key!r}")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ExperimentError(f"override {item!r}: {part!r} is not a section")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ExperimentError(f"override {item!r}: the value is not valid YAML "
                              f"({getattr(exc, 'problem', None) or exc})") from None


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from a mapping, checking keys and value types."""
    where = prefix.rstrip(".") or "experiment"
    if not isinstance(data, Mapping):
        raise ExperimentError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ExperimentError(f"{prefix}{unknown[0]}: unknown key; known: {sorted(fields)}")
    kwargs = {}
    for key, value in data.items():
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ExperimentError(f"{where}: {exc}") from None


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(option, value, key)
            except ExperimentError as exc:
                errors.append(str(exc))
        raise ExperimentError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {hint}")
    base = origin or hint
    if base is Any:
        return value
    if base in (int, float) and isinstance(value, str):
        try:  # YAML reads 1e5 as a string
            value = float(value.replace("_", ""))
        except ValueError:
            raise ExperimentError(f"{key}: expected {base.__name__}, got {value!r}") from None
    if base is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
        return int(value)
    if base is str and isinstance(value, datetime.date):  # YAML reads 2020-06-01 as a date
        return value.isoformat()
    if base in (str, bool) and isinstance(value, base):
        return value
    if base is dict and isinstance(value, Mapping):
        return dict(value)
    if base is list and isinstance(value, list | tuple):
        return list(value)
    raise ExperimentError(f"{key}: expected {getattr(base, '__name__', base)}, got {value!r}")
