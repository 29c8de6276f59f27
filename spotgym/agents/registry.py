"""The algorithm registry over stable-baselines3 and sb3-contrib, with per-algorithm defaults, and the
loading of a trained run's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gymnasium import spaces

__all__ = ["ALGOS", "AlgoSpec", "algo_spec", "load_model", "make_agent", "resolve_device"]


@dataclass(frozen=True)
class AlgoSpec:
    """How to build one algorithm: its class path, default policy and the action spaces it supports."""

    module: str
    cls: str
    box_policy: str
    dict_policy: str
    action_spaces: tuple[type[spaces.Space], ...]
    defaults: tuple[tuple[str, Any], ...] = ()

    def load_class(self) -> type:
        import importlib

        return getattr(importlib.import_module(self.module), self.cls)


_DISCRETE = (spaces.Discrete,)
_CONTINUOUS = (spaces.Box,)
_ANY = (spaces.Discrete, spaces.Box)

ALGOS: dict[str, AlgoSpec] = {
    "ppo": AlgoSpec("stable_baselines3", "PPO", "MlpPolicy", "MultiInputPolicy", _ANY,
                    (("n_steps", 256), ("batch_size", 256), ("n_epochs", 5), ("ent_coef", 0.01))),
    "a2c": AlgoSpec("stable_baselines3", "A2C", "MlpPolicy", "MultiInputPolicy", _ANY),
    "dqn": AlgoSpec("stable_baselines3", "DQN", "MlpPolicy", "MultiInputPolicy", _DISCRETE,
                    (("learning_starts", 1000), ("buffer_size", 100_000))),
    "qrdqn": AlgoSpec("sb3_contrib", "QRDQN", "MlpPolicy", "MultiInputPolicy", _DISCRETE,
                      (("learning_starts", 1000), ("buffer_size", 100_000))),
    "sac": AlgoSpec("stable_baselines3", "SAC", "MlpPolicy", "MultiInputPolicy", _CONTINUOUS,
                    (("learning_starts", 1000), ("buffer_size", 100_000))),
    "recurrent_ppo": AlgoSpec("sb3_contrib", "RecurrentPPO", "MlpLstmPolicy", "MultiInputLstmPolicy", _ANY,
                              (("n_steps", 128), ("batch_size", 256), ("n_epochs", 5))),
    "maskable_ppo": AlgoSpec("sb3_contrib", "MaskablePPO", "MlpPolicy", "MultiInputPolicy", _DISCRETE,
                             (("n_steps", 256), ("batch_size", 256), ("n_epochs", 5), ("ent_coef", 0.01))),
}


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def algo_spec(algo: str) -> AlgoSpec:
    """The registry entry of ``algo`` (case and ``-``/``_`` insensitive); an unknown name is an error listing the known."""
    key = str(algo).lower().replace("-", "_")
    if key not in ALGOS:
        raise ValueError(f"agent.algo: unknown algorithm {algo!r}; known: {sorted(ALGOS)}")
    return ALGOS[key]


def load_model(run_dir: str | Path, algo: str, device: str = "cpu") -> Any:
    """A run's kept model (``RUN_DIR/model.zip``) loaded with its algorithm's class."""
    path = Path(run_dir) / "model.zip"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {run_dir} a finished `spotgym train` run?")
    return algo_spec(algo).load_class().load(path, device=device)


def make_agent(algo: str, env: Any, *, params: dict[str, Any] | None = None, policy: str | None = None,
               seed: int = 0, device: str = "auto", tensorboard_log: str | None = None) -> Any:
    """Build algorithm ``algo`` on ``env`` (a VecEnv); ``params`` override the defaults above."""
    spec = algo_spec(algo)
    if not isinstance(env.action_space, spec.action_spaces):
        kinds = " or ".join(s.__name__ for s in spec.action_spaces)
        raise ValueError(f"agent.algo: {algo} needs a {kinds} action space but the env has "
                         f"{type(env.action_space).__name__}; set env.action to "
                         f"{'levels or buy_sell_hold' if spec.action_spaces == _DISCRETE else 'continuous'}")
    if policy is None:
        policy = spec.dict_policy if isinstance(env.observation_space, spaces.Dict) else spec.box_policy
    kwargs = {**dict(spec.defaults), **(params or {})}
    if "n_steps" in kwargs and "batch_size" in kwargs:
        # PPO-style: keep batch_size a divisor of the rollout size, as SB3 warns otherwise
        rollout = kwargs["n_steps"] * env.num_envs
        kwargs["batch_size"] = min(kwargs["batch_size"], rollout)
    cls = spec.load_class()
    try:
        return cls(policy, env, seed=seed, device=resolve_device(device), tensorboard_log=tensorboard_log,
                   verbose=0, **kwargs)
    except TypeError as exc:
        raise ValueError(f"agent.params: {exc}") from None
