"""Envs: numba kernels (``nb.py``) behind ``TradingEnv`` (gymnasium) and ``VecTradingEnv`` (SB3 VecEnv), with
``PooledVecEnv`` (one SB3 VecEnv whose accounts trade several symbols), and the ports (``Feed``, ``Broker``,
``Actor``) through which the same env trades live.

    from spotgym.envs import EnvConfig, PooledVecEnv, TradingEnv, VecTradingEnv
    env = TradingEnv(frame, EnvConfig(action="levels", episode_length=512))
    venv = VecTradingEnv(frame, 64, EnvConfig(episode_length=512), seed=0)
    pool = PooledVecEnv([(eth, eth_cfg), (btc, btc_cfg)], 64, seed=0)  # several symbols, one VecEnv
    env = gymnasium.make("spotgym/Trading-v0", frame=frame, fee=0.0)
"""

import gymnasium

from spotgym.envs.config import ACTIONS, FROM_VENUE, OBS_MODES, REWARDS, EnvConfig
from spotgym.envs.info import INFO_FIELDS, StepInfo
from spotgym.envs.market import MarketData, decision_rows
from spotgym.envs.pooled import PooledVecEnv
from spotgym.envs.ports import Actor, Broker, Feed, Fill, HistoricalFeed, KernelBroker, Order
from spotgym.envs.trading_env import TradingEnv
from spotgym.envs.vec_env import VecTradingEnv

ENV_ID = "spotgym/Trading-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="spotgym.envs.trading_env:TradingEnv")

__all__ = [
    "ACTIONS",
    "ENV_ID",
    "FROM_VENUE",
    "INFO_FIELDS",
    "OBS_MODES",
    "REWARDS",
    "Actor",
    "Broker",
    "EnvConfig",
    "Feed",
    "Fill",
    "HistoricalFeed",
    "KernelBroker",
    "MarketData",
    "Order",
    "PooledVecEnv",
    "StepInfo",
    "TradingEnv",
    "VecTradingEnv",
    "decision_rows",
]
