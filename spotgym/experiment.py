"""Experiments: one YAML file naming data, features, predictors, env, agent, evaluation, tracking.

``load_experiment(path, overrides)`` reads the file, applies ``--set key=value`` overrides
(dotted keys, YAML values), and validates everything on load: an unknown key or a bad value is
an error naming the key (``agent.timestep: unknown key; known: ...``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ExperimentError(ValueError):
    """A bad experiment file or override; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    """Where the bars come from: a file (``path``) or the download cache (downloaded when missing)."""

    exchange: str = "binance"
    symbol: str = "ETH/USDT"
    timeframe: str = "1h"
    path: str | None = None
    start: str | None = None
    end: str | None = None
    gap_policy: str = "mark"

    def __post_init__(self) -> None:
        from spotgym.data import GAP_POLICIES, timeframe_to_ms

        if self.gap_policy not in GAP_POLICIES:
            raise ExperimentError(f"data.gap_policy: must be one of {GAP_POLICIES}, got {self.gap_policy!r}")
        try:
            timeframe_to_ms(self.timeframe)
        except ValueError as exc:
            raise ExperimentError(f"data.timeframe: {exc}") from None


@dataclass(frozen=True)
class AgentConfig:
    """The SB3 / sb3-contrib algorithm and its hyper-parameters (``params`` go to the constructor)."""

    algo: str = "ppo"
    policy: str | None = None
    timesteps: int = 100_000
    n_envs: int = 8
    device: str = "auto"
    params: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 10_000

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
    """Walk-forward split of the frame rows: ``folds`` train/val/test folds (``train`` uses the last)."""

    folds: int = 1
    val_size: float | int = 0.1
    test_size: float | int = 0.15
    purge: int = 24
    embargo: int = 0

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ExperimentError(f"evaluation.folds: must be >= 1, got {self.folds}")
        for name in ("val_size", "test_size"):
            value = getattr(self, name)
            if value <= 0 or (isinstance(value, float) and value >= 1):
                raise ExperimentError(f"evaluation.{name}: a fraction in (0, 1) or a row count >= 1, got {value!r}")
        if self.purge < 0 or self.embargo < 0:
            raise ExperimentError("evaluation.purge / evaluation.embargo: must be >= 0 bars")


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
    """A whole experiment; ``features``, ``predictors``, ``env`` and ``tune`` stay mappings here and are
    validated by the objects that consume them (``FeatureSpec``, ``EnvConfig``, the tuner) on load."""

    name: str
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    features: dict[str, Any] = field(default_factory=dict)
    predictors: dict[str, Any] | None = None
    env: dict[str, Any] = field(default_factory=dict)
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
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def feature_spec(self):
        """The ``FeatureSpec`` of ``features`` (+ ``predictors``); ``default_spec()`` when empty."""
        from spotgym.features import FeatureSpec, default_spec

        config = dict(self.features) if self.features else default_spec().to_config()
        if self.predictors:
            config["predictors"] = self.predictors
        try:
            return FeatureSpec.from_config(config)
        except ValueError as exc:
            raise ExperimentError(f"features: {exc}") from None

    def env_config(self, **overrides: Any):
        """The ``EnvConfig`` of ``env`` (keyword overrides for e.g. the evaluation row range)."""
        from spotgym.envs import EnvConfig

        try:
            return EnvConfig.from_mapping({**self.env, **overrides})
        except ValueError as exc:
            raise ExperimentError(f"env: {exc}") from None


def load_experiment(source: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Experiment:
    """Read and validate an experiment file (or mapping), applying ``key=value`` overrides first."""
    if isinstance(source, Mapping):
        raw, name = copy.deepcopy(dict(source)), str(source.get("name", "experiment"))
    else:
        path = Path(source)
        if not path.is_file():
            raise ExperimentError(f"experiment file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ExperimentError(f"{path}: the experiment must be a YAML mapping")
        name = raw.get("name") or path.stem
    for item in overrides:
        apply_override(raw, item)
    raw.setdefault("name", name)
    experiment = _build(Experiment, raw, "")
    experiment.feature_spec()  # validate now, not halfway through a run
    if experiment.env:
        experiment.env_config()
    return experiment


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
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None


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
