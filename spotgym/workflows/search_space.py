"""Search spaces for ``spotgym tune``: per-algorithm defaults and the experiment's ``tune:`` section.

Per-algorithm defaults follow rl-zoo's ``sample_<algo>_params(trial) -> dict`` shape: each returns
constructor keyword arguments for ``agent.params`` (a dotted key such as ``policy_kwargs.net_arch``
sets one entry of a nested mapping). The ranges are for a trading env with a few thousand to a few
million steps; they are a starting point, not a law -- declare ``tune.space`` to search your own.

The ``tune:`` section (validated on parse; an error names the bad key)::

    tune:
      metric: sharpe            # a validation metric of compute_metrics (after fees); default sharpe
      direction: maximize       # default: maximize, minimize for max_drawdown / annual_volatility
      n_trials: 20              # default for `spotgym tune --trials`
      space:                    # absent: sample_<algo>_params of agent.algo
        agent.params.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
        agent.params.n_steps: {type: categorical, choices: [64, 128, 256]}
        env.window: {type: int, low: 16, high: 64, step: 16}
        env.levels: [[0.0, 1.0], [0.0, 0.5, 1.0]]      # a bare list = categorical
      pruner: median            # none | median | percentile | threshold | successive_halving | hyperband,
                                # or {type: median, n_startup_trials: 5, n_warmup_steps: 1}
      sampler: {n_startup_trials: 10, multivariate: true}   # TPESampler options (seeded from `seed`)
      heartbeat_interval: 30    # seconds; a worker silent for grace_period has its trial failed ...
      grace_period: 120
      max_retry: 2              # ... and retried up to max_retry times
      max_failures: 3           # consecutive failed trials before a worker gives up

Only agent hyper-parameters (``agent.params.*``, ``agent.timesteps``, ``agent.n_envs``) and env
parameters that shape the agent's problem (window, reward, action, levels, ...) can be searched. The
data, features, predictors, walk-forward split and the costs (fee, slippage, impact, exchange filters,
initial cash) stay fixed: tuning them would optimise the accounting rather than the agent.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spotgym.envs import EnvConfig
from spotgym.workflows.errors import ExperimentError

__all__ = [
    "DEFAULT_SPACES",
    "FIXED_ENV_KEYS",
    "TUNABLE_METRICS",
    "ParamSpec",
    "TuneConfig",
    "max_window",
    "parse_tune_config",
    "sample_a2c_params",
    "sample_dqn_params",
    "sample_maskable_ppo_params",
    "sample_ppo_params",
    "sample_qrdqn_params",
    "sample_recurrent_ppo_params",
    "sample_sac_params",
    "suggest_values",
]

# Validation metrics a study can optimise, with the natural direction of each.
TUNABLE_METRICS: dict[str, str] = {
    "sharpe": "maximize", "sortino": "maximize", "calmar": "maximize", "total_return": "maximize",
    "cagr": "maximize", "profit_factor": "maximize", "win_rate": "maximize", "final_equity": "maximize",
    "max_drawdown": "minimize", "annual_volatility": "minimize",
}
# Env keys that define the market and the accounting: fixed while tuning.
FIXED_ENV_KEYS = ("fee", "slippage_bps", "impact_bps", "max_participation", "filters", "initial_cash",
                  "start_row", "end_row", "ruin_floor")
AGENT_KEYS = ("timesteps", "n_envs")
PRUNERS = ("none", "median", "percentile", "threshold", "successive_halving", "hyperband")
TUNE_KEYS = ("metric", "direction", "n_trials", "space", "pruner", "sampler", "heartbeat_interval",
             "grace_period", "max_retry", "max_failures")
PARAM_TYPES = ("float", "int", "categorical")
_NET_ARCH = {"tiny": [32], "small": [64, 64], "medium": [128, 128], "large": [256, 256]}


# --------------------------------------------------------------------------------------------------
# Per-algorithm default spaces (rl-zoo style): trial -> constructor params of agent.params
# --------------------------------------------------------------------------------------------------


def _net_arch(trial: Any) -> list[int]:
    return _NET_ARCH[trial.suggest_categorical("net_arch", list(_NET_ARCH))]


def sample_ppo_params(trial: Any) -> dict[str, Any]:
    """PPO: rollout size, minibatch, discount, GAE, clipping, entropy bonus, learning rate, network."""
    return {
        "n_steps": trial.suggest_categorical("n_steps", [64, 128, 256, 512, 1024, 2048]),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256, 512]),
        "n_epochs": trial.suggest_categorical("n_epochs", [3, 5, 10, 20]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.92, 0.95, 0.98, 1.0]),
        "clip_range": trial.suggest_categorical("clip_range", [0.1, 0.2, 0.3]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "vf_coef": trial.suggest_float("vf_coef", 0.2, 1.0),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0]),
        "policy_kwargs.net_arch": _net_arch(trial),
    }


def sample_maskable_ppo_params(trial: Any) -> dict[str, Any]:
    """MaskablePPO: the PPO space."""
    return sample_ppo_params(trial)


def sample_recurrent_ppo_params(trial: Any) -> dict[str, Any]:
    """RecurrentPPO: the PPO space with shorter rollouts and the LSTM size."""
    params = sample_ppo_params(trial)
    params["policy_kwargs.lstm_hidden_size"] = trial.suggest_categorical("lstm_hidden_size", [32, 64, 128, 256])
    return params


def sample_a2c_params(trial: Any) -> dict[str, Any]:
    """A2C: short rollouts, discount, GAE, entropy, RMSprop or Adam, learning rate, network."""
    return {
        "n_steps": trial.suggest_categorical("n_steps", [5, 8, 16, 32, 64, 128]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "gae_lambda": trial.suggest_categorical("gae_lambda", [0.8, 0.9, 0.95, 0.98, 1.0]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.1, log=True),
        "vf_coef": trial.suggest_float("vf_coef", 0.2, 1.0),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-2, log=True),
        "max_grad_norm": trial.suggest_categorical("max_grad_norm", [0.3, 0.5, 1.0, 2.0]),
        "normalize_advantage": trial.suggest_categorical("normalize_advantage", [False, True]),
        "use_rms_prop": trial.suggest_categorical("use_rms_prop", [False, True]),
        "policy_kwargs.net_arch": _net_arch(trial),
    }


def sample_dqn_params(trial: Any) -> dict[str, Any]:
    """DQN: replay, exploration schedule, target updates, learning rate, network."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "buffer_size": trial.suggest_categorical("buffer_size", [10_000, 50_000, 100_000, 500_000]),
        "learning_starts": trial.suggest_categorical("learning_starts", [0, 1_000, 5_000, 10_000]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "exploration_fraction": trial.suggest_float("exploration_fraction", 0.05, 0.5),
        "exploration_final_eps": trial.suggest_float("exploration_final_eps", 0.0, 0.2),
        "target_update_interval": trial.suggest_categorical("target_update_interval", [100, 1_000, 5_000, 10_000]),
        "train_freq": trial.suggest_categorical("train_freq", [1, 4, 8, 16]),
        "policy_kwargs.net_arch": _net_arch(trial),
    }


def sample_qrdqn_params(trial: Any) -> dict[str, Any]:
    """QR-DQN: the DQN space and the number of quantiles."""
    params = sample_dqn_params(trial)
    params["policy_kwargs.n_quantiles"] = trial.suggest_int("n_quantiles", 5, 200)
    return params


def sample_sac_params(trial: Any) -> dict[str, Any]:
    """SAC: replay, soft updates, discount, entropy target (auto), learning rate, network."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256, 512]),
        "buffer_size": trial.suggest_categorical("buffer_size", [10_000, 100_000, 1_000_000]),
        "learning_starts": trial.suggest_categorical("learning_starts", [0, 1_000, 10_000]),
        "train_freq": trial.suggest_categorical("train_freq", [1, 4, 8, 16]),
        "tau": trial.suggest_categorical("tau", [0.001, 0.005, 0.01, 0.02, 0.05]),
        "gamma": trial.suggest_categorical("gamma", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
        "policy_kwargs.net_arch": _net_arch(trial),
    }


DEFAULT_SPACES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "ppo": sample_ppo_params,
    "a2c": sample_a2c_params,
    "dqn": sample_dqn_params,
    "qrdqn": sample_qrdqn_params,
    "sac": sample_sac_params,
    "recurrent_ppo": sample_recurrent_ppo_params,
    "maskable_ppo": sample_maskable_ppo_params,
}


# --------------------------------------------------------------------------------------------------
# The tune: section
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a dotted experiment key and its distribution."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def encoded(self) -> bool:
        """Categorical choices optuna cannot store (lists, mappings) travel as JSON text."""
        return self.type == "categorical" and not all(c is None or isinstance(c, bool | int | float | str)
                                                      for c in self.choices)

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        if self.encoded:
            return json.loads(trial.suggest_categorical(self.key, [json.dumps(c) for c in self.choices]))
        return trial.suggest_categorical(self.key, list(self.choices))

    def largest(self) -> Any:
        """The largest value this parameter can take (numeric ones; used for ``env.window``)."""
        if self.type == "categorical":
            return max(self.choices)
        return self.high


@dataclass(frozen=True)
class TuneConfig:
    """The validated ``tune:`` section; ``space`` empty = the algorithm's default space."""

    metric: str = "sharpe"
    direction: str = "maximize"
    n_trials: int = 20
    space: tuple[ParamSpec, ...] = ()
    pruner: dict[str, Any] = field(default_factory=lambda: {"type": "median"})
    sampler: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: int = 30
    grace_period: int = 120
    max_retry: int = 2
    max_failures: int = 3

    @property
    def select_mode(self) -> str:
        return "max" if self.direction == "maximize" else "min"

    def make_pruner(self):
        """The optuna pruner of ``pruner`` (``none`` = never prune)."""
        import optuna

        kwargs = {k: v for k, v in self.pruner.items() if k != "type"}
        kind = self.pruner["type"]
        classes = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
                   "percentile": optuna.pruners.PercentilePruner, "threshold": optuna.pruners.ThresholdPruner,
                   "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                   "hyperband": optuna.pruners.HyperbandPruner}
        try:
            return classes[kind](**kwargs)
        except (TypeError, ValueError) as exc:
            raise ExperimentError(f"tune.pruner: {kind}: {exc}") from None

    def make_sampler(self, seed: int | None):
        """A TPE sampler with ``sampler`` options, seeded (constant liar on: workers run in parallel)."""
        import optuna

        kwargs = {"constant_liar": True, **self.sampler}
        try:
            return optuna.samplers.TPESampler(seed=seed, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ExperimentError(f"tune.sampler: {exc}") from None


def _number(value: Any, key: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ExperimentError(f"{key}: expected a number, got {value!r}")
    if isinstance(value, str):
        try:  # YAML reads 1e-5 as a string
            value = float(value)
        except ValueError:
            raise ExperimentError(f"{key}: expected a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ExperimentError(f"{key}: expected a finite number, got {value!r}")
    return value


def _check_key(key: str, where: str, algo: str) -> None:
    """Only agent hyper-parameters and the env's problem-shaping parameters may be searched."""
    parts = key.split(".")
    if not all(parts):
        raise ExperimentError(f"{where}: bad key {key!r}")
    env_fields = [f.name for f in dataclasses.fields(EnvConfig)]
    tunable_env = [f for f in env_fields if f not in FIXED_ENV_KEYS]
    if parts[0] == "agent":
        if len(parts) >= 3 and parts[1] == "params":
            return
        if len(parts) == 2 and parts[1] in AGENT_KEYS:
            return
        raise ExperimentError(f"{where}: cannot search {key!r}; searchable agent keys: agent.params.<name>, "
                              + ", ".join(f"agent.{k}" for k in AGENT_KEYS))
    if parts[0] == "env":
        if len(parts) == 2 and parts[1] in FIXED_ENV_KEYS:
            raise ExperimentError(f"{where}: env.{parts[1]} stays fixed while tuning (costs and accounting: "
                                  f"{', '.join(FIXED_ENV_KEYS)})")
        if len(parts) == 2 and parts[1] in tunable_env:
            return
        raise ExperimentError(f"{where}: unknown env key {key!r}; searchable: {', '.join(tunable_env)}")
    raise ExperimentError(f"{where}: cannot search {key!r}; only agent.* and env.* keys are searchable (data, "
                          "features, predictors, evaluation and costs stay fixed)")


def _parse_param(key: str, raw: Any, algo: str) -> ParamSpec:
    where = f"tune.space.{key}"
    _check_key(key, where, algo)
    if isinstance(raw, list | tuple):
        raw = {"type": "categorical", "choices": list(raw)}
    if not isinstance(raw, Mapping):
        raise ExperimentError(f"{where}: expected a mapping such as {{type: float, low: 1e-5, high: 1e-3, log: true}} "
                              f"or a list of choices, got {raw!r}")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise ExperimentError(f"{where}.type: must be one of {PARAM_TYPES}, got {kind!r}")
    if kind == "categorical":
        unknown = sorted(set(raw) - {"type", "choices"})
        if unknown:
            raise ExperimentError(f"{where}.{unknown[0]}: unknown key for a categorical; known: ['choices', 'type']")
        choices = raw.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise ExperimentError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        try:
            texts = [json.dumps(c, sort_keys=True) for c in choices]
        except TypeError:
            raise ExperimentError(f"{where}.choices: choices must be plain YAML values, got {choices!r}") from None
        if len(set(texts)) != len(texts):
            raise ExperimentError(f"{where}.choices: duplicate choices in {choices!r}")
        return ParamSpec(key, kind, choices=tuple(copy.deepcopy(list(choices))))
    unknown = sorted(set(raw) - {"type", "low", "high", "log", "step"})
    if unknown:
        raise ExperimentError(f"{where}.{unknown[0]}: unknown key for {kind}; known: ['high', 'log', 'low', 'step', 'type']")
    for name in ("low", "high"):
        if name not in raw:
            raise ExperimentError(f"{where}.{name}: required for type {kind}")
    low, high = _number(raw["low"], f"{where}.low"), _number(raw["high"], f"{where}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ExperimentError(f"{where}.log: expected true or false, got {log!r}")
    step = raw.get("step")
    if step is not None:
        step = _number(step, f"{where}.step")
        if step <= 0:
            raise ExperimentError(f"{where}.step: must be > 0, got {step!r}")
        if log:
            raise ExperimentError(f"{where}: step and log cannot be combined")
    if kind == "int":
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and float(value) != int(value):
                raise ExperimentError(f"{where}.{name}: expected an integer, got {value!r}")
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    else:
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    if not low < high:
        raise ExperimentError(f"{where}: low must be < high, got low={low} high={high}")
    if log and low <= 0:
        raise ExperimentError(f"{where}.low: must be > 0 with log: true, got {low}")
    return ParamSpec(key, kind, low=low, high=high, log=log, step=step)


def _positive_int(raw: Mapping[str, Any], name: str, default: int, minimum: int = 1) -> int:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < minimum:
        raise ExperimentError(f"tune.{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def parse_tune_config(raw: Mapping[str, Any] | None, algo: str) -> TuneConfig:
    """Validate an experiment's ``tune:`` section for ``agent.algo`` = ``algo``; every error names the key."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise ExperimentError(f"tune: expected a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(TUNE_KEYS))
    if unknown:
        raise ExperimentError(f"tune.{unknown[0]}: unknown key; known: {sorted(TUNE_KEYS)}")
    metric = raw.get("metric", "sharpe")
    if metric not in TUNABLE_METRICS:
        raise ExperimentError(f"tune.metric: must be one of {sorted(TUNABLE_METRICS)}, got {metric!r}")
    direction = raw.get("direction", TUNABLE_METRICS[metric])
    if direction not in ("maximize", "minimize"):
        raise ExperimentError(f"tune.direction: must be maximize or minimize, got {direction!r}")
    algo_name, algo = algo, algo.lower().replace("-", "_")
    space_raw = raw.get("space")
    space: tuple[ParamSpec, ...] = ()
    if space_raw is not None:
        if not isinstance(space_raw, Mapping) or not space_raw:
            raise ExperimentError(f"tune.space: expected a non-empty mapping of dotted keys, got {space_raw!r}")
        space = tuple(_parse_param(str(k), v, algo) for k, v in space_raw.items())
    elif algo not in DEFAULT_SPACES:
        raise ExperimentError(f"tune.space: no default space for agent.algo {algo_name!r}; declare one")
    pruner = raw.get("pruner", "median")
    if isinstance(pruner, str) or pruner is None:
        pruner = {"type": pruner or "none"}
    if not isinstance(pruner, Mapping):
        raise ExperimentError(f"tune.pruner: expected a name or a mapping with 'type', got {pruner!r}")
    pruner = {"type": "median", **pruner}
    if pruner["type"] not in PRUNERS:
        raise ExperimentError(f"tune.pruner.type: must be one of {PRUNERS}, got {pruner['type']!r}")
    sampler = raw.get("sampler") or {}
    if not isinstance(sampler, Mapping):
        raise ExperimentError(f"tune.sampler: expected a mapping of TPESampler options, got {sampler!r}")
    if "seed" in sampler:
        raise ExperimentError("tune.sampler.seed: the sampler is seeded from the experiment's seed")
    config = TuneConfig(
        metric=metric, direction=direction, n_trials=_positive_int(raw, "n_trials", 20), space=space,
        pruner=dict(pruner), sampler=dict(sampler),
        heartbeat_interval=_positive_int(raw, "heartbeat_interval", 30),
        grace_period=_positive_int(raw, "grace_period", 120),
        max_retry=_positive_int(raw, "max_retry", 2, minimum=0),
        max_failures=_positive_int(raw, "max_failures", 3),
    )
    if config.grace_period <= config.heartbeat_interval:
        raise ExperimentError(f"tune.grace_period: must exceed heartbeat_interval ({config.heartbeat_interval} s), "
                              f"got {config.grace_period}")
    config.make_pruner()  # validate the options now, not in a worker
    config.make_sampler(0)
    return config


# --------------------------------------------------------------------------------------------------
# Trial -> experiment
# --------------------------------------------------------------------------------------------------


def suggest_values(trial: Any, config: TuneConfig, algo: str) -> dict[str, Any]:
    """The trial's values as dotted experiment keys (``agent.params.learning_rate`` -> 3e-4)."""
    if config.space:
        return {p.key: p.suggest(trial) for p in config.space}
    sample = DEFAULT_SPACES[algo.lower().replace("-", "_")]
    return {f"agent.params.{k}": v for k, v in sample(trial).items()}


def max_window(window: int, config: TuneConfig | None) -> int:
    """The largest observation window any trial can use, from the experiment's ``window`` and the space (the
    fold boundaries are computed with it, so every trial trains and validates on the very same rows)."""
    for spec in (config.space if config else ()):
        if spec.key == "env.window":
            window = max(window, int(spec.largest()))
    return window
