"""Envs: numba kernels (``nb.py``) behind ``TradingEnv`` (gymnasium) and ``VecTradingEnv`` (SB3 VecEnv).

    from spotgym.envs import EnvConfig, TradingEnv, VecTradingEnv
    env = TradingEnv(frame, EnvConfig(action="levels", episode_length=512))
    venv = VecTradingEnv(frame, 64, EnvConfig(episode_length=512), seed=0)
    env = gymnasium.make("spotgym/Trading-v0", frame=frame, fee=0.0)
"""

import gymnasium

from spotgym.envs.config import ACTIONS, OBS_MODES, REWARDS, EnvConfig
from spotgym.envs.filters import ETHUSDT_FILTERS, ExchangeFilters
from spotgym.envs.info import INFO_FIELDS, StepInfo
from spotgym.envs.market import MarketData
from spotgym.envs.trading_env import TradingEnv
from spotgym.envs.vec_env import VecTradingEnv

ENV_ID = "spotgym/Trading-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="spotgym.envs.trading_env:TradingEnv")

__all__ = [
    "ACTIONS",
    "ENV_ID",
    "ETHUSDT_FILTERS",
    "INFO_FIELDS",
    "OBS_MODES",
    "REWARDS",
    "EnvConfig",
    "ExchangeFilters",
    "MarketData",
    "StepInfo",
    "TradingEnv",
    "VecTradingEnv",
]
