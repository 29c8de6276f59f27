"""spotgym's envs, and a raw numba kernel with the same observation payload, for the peers harness.

The factories follow ``../shared/bench/peers/project_env_template.py`` (the harness calls them
with ``num_envs``, ``window_size``, ``fee``, ``seed``; they ignore the harness's synthetic OHLCV
and run on real Binance ETH/USDT 5m features instead):

    run_peers.py --project bench/peers_adapter.py --project-n 1,64,1024          # VecTradingEnv
    run_peers.py --project bench/peers_adapter.py:raw_kernel_factory --project-n 1,64,1024

``bench/bench_env.py`` runs all of them beside the peers in one run. The feature frame comes
from the ``.npz`` named by ``$SPOTGYM_BENCH_FRAME`` (written by ``bench_env.py``), else it is
built from the shared data with ``spotgym.features.build_features``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

FRAME_ENV = "SPOTGYM_BENCH_FRAME"
DATASET = "BINANCE_ETHUSDT_5m.csv.gz"
RANDOM_EPISODE_LENGTH = 2048

_FRAME = None


# --------------------------------------------------------------------------- the market
def save_frame(frame, path: str) -> None:
    np.savez(path, values=frame.values, columns=np.array(frame.columns), ts=frame.timestamps_ms, open=frame.open,
             high=frame.high, low=frame.low, close=frame.close, volume=frame.volume, valid=frame.valid)


def load_frame():
    """The ETH/USDT 5m FeatureFrame (default features), cached per process."""
    global _FRAME
    if _FRAME is not None:
        return _FRAME
    import pandas as pd

    from spotgym.features.frame import FeatureFrame

    path = os.environ.get(FRAME_ENV)
    if path and os.path.isfile(path):
        with np.load(path) as z:
            _FRAME = FeatureFrame(values=z["values"], columns=tuple(z["columns"].tolist()),
                                  index=pd.to_datetime(z["ts"], unit="ms", utc=True), open=z["open"],
                                  high=z["high"], low=z["low"], close=z["close"], volume=z["volume"],
                                  valid=z["valid"])
    else:
        from spotgym.data import load_bars
        from spotgym.datasets import shared_file
        from spotgym.features import build_features

        _FRAME = build_features(load_bars(shared_file(DATASET)))
    return _FRAME


def bench_config(window: int = 32, fee: float = 0.001, episode_length: int | None = None):
    """The benchmark's env: hold/buy/sell all-in (the harness reference's market), ETH/USDT filters."""
    from spotgym.envs import EnvConfig

    return EnvConfig(action="buy_sell_hold", trade_fraction=1.0, fee=fee, window=window,
                     episode_length=episode_length)


class HarnessVec:
    """A ``VecTradingEnv`` seen through the harness's vector contract (``reset(seed=...)``)."""

    def __init__(self, venv):
        self.venv = venv
        self.num_envs = venv.num_envs
        self.single_action_space = venv.action_space
        self.single_observation_space = venv.observation_space
        self.step = venv.step  # bound method: no extra Python frame per call

    def reset(self, seed=None):
        if seed is not None:
            self.venv.seed(seed)
        return self.venv.reset(), {}


# --------------------------------------------------------------------------- factories
def project_env_factory(num_envs=1, window_size=32, fee=0.001, seed=0):
    """``VecTradingEnv`` with one sequential pass (all accounts walk the rows in step, like the
    harness's reference kernel)."""
    from spotgym.envs import VecTradingEnv

    return HarnessVec(VecTradingEnv(load_frame(), num_envs, bench_config(window_size, fee), seed=seed))


def random_starts_factory(num_envs=1, window_size=32, fee=0.001, seed=0):
    """``VecTradingEnv`` with training episodes: random starts, 2048 steps, auto-reset."""
    from spotgym.envs import VecTradingEnv

    cfg = bench_config(window_size, fee, episode_length=RANDOM_EPISODE_LENGTH)
    return HarnessVec(VecTradingEnv(load_frame(), num_envs, cfg, seed=seed))


def single_env_factory(num_envs=1, window_size=32, fee=0.001, seed=0):
    """The gymnasium ``TradingEnv`` (one account per object)."""
    if num_envs != 1:
        raise ValueError("TradingEnv is one account: use num_envs=1")
    from spotgym.envs import TradingEnv

    return TradingEnv(load_frame(), bench_config(window_size, fee))


# --------------------------------------------------------------------------- raw kernel, our payload
_RAW = {}


def _raw_kernel():
    """The harness's reference ``vec_step`` (fill at close[t], long/flat, log reward, auto-reset,
    lockstep) writing our observation: ``window`` rows x F features + 4 account values."""
    if _RAW:
        return _RAW["step"]
    from numba import njit

    @njit(nogil=True, cache=True)
    def vec_step(actions, int_state, flt_state, close, vflat, n_feat, fee, obs_out, rew_out, done_out):
        n = actions.shape[0]
        last = close.shape[0] - 1
        nf = obs_out.shape[1] - 4
        window = nf // n_feat
        for i in range(n):
            t = int_state[i, 0]
            price = close[t]
            a = actions[i]
            if a == 1 and int_state[i, 1] == 0:
                flt_state[i, 1] = flt_state[i, 0] * (1.0 - fee) / price
                flt_state[i, 0] = 0.0
                int_state[i, 1] = 1
            elif a == 2 and int_state[i, 1] == 1:
                flt_state[i, 0] = flt_state[i, 1] * price * (1.0 - fee)
                flt_state[i, 1] = 0.0
                int_state[i, 1] = 0
            t += 1
            equity = flt_state[i, 0] + flt_state[i, 1] * close[t]
            rew_out[i] = np.log(equity / flt_state[i, 2])
            flt_state[i, 2] = equity
            if t >= last:
                done_out[i] = True
                t = window - 1
                int_state[i, 1] = 0
                flt_state[i, 0] = 1.0
                flt_state[i, 1] = 0.0
                flt_state[i, 2] = 1.0
            else:
                done_out[i] = False
            int_state[i, 0] = t
            base = (t - window + 1) * n_feat
            src = vflat[base:base + nf]  # a slice: plain vector loads (an index may be negative -> gathers)
            for k in range(nf):
                obs_out[i, k] = src[k]
            obs_out[i, nf] = int_state[i, 1]
            obs_out[i, nf + 1] = flt_state[i, 0] / equity
            obs_out[i, nf + 2] = 0.0
            obs_out[i, nf + 3] = 0.0

    _RAW["step"] = vec_step
    return vec_step


class RawPayloadKernel:
    """N reference accounts per numba call, observation = our payload; buffers reused, no infos."""

    def __init__(self, frame, num_envs: int, window: int = 32, fee: float = 0.001):
        from gymnasium import spaces

        self._step = _raw_kernel()
        self.num_envs = int(num_envs)
        self.window = int(window)
        self.fee = float(fee)
        first = max(frame.first_valid_row, 0)
        self.close = np.ascontiguousarray(frame.close[first:])
        values = np.ascontiguousarray(frame.values[first:])
        self.n_feat = values.shape[1]
        self.vflat = values.reshape(-1)
        self.single_action_space = spaces.Discrete(3)
        self.int_state = np.zeros((self.num_envs, 2), dtype=np.int64)
        self.flt_state = np.zeros((self.num_envs, 3), dtype=np.float64)
        self.obs = np.zeros((self.num_envs, self.window * self.n_feat + 4), dtype=np.float32)
        self.rew = np.zeros(self.num_envs, dtype=np.float64)
        self.done = np.zeros(self.num_envs, dtype=np.bool_)
        self._no_term = np.zeros(self.num_envs, dtype=np.bool_)
        self.reset()
        self.step(np.zeros(self.num_envs, dtype=np.int64))
        self.reset()

    def reset(self, seed=None):
        self.int_state[:, 0] = self.window - 1
        self.int_state[:, 1] = 0
        self.flt_state[:, 0] = 1.0
        self.flt_state[:, 1] = 0.0
        self.flt_state[:, 2] = 1.0
        self.obs[:, : self.window * self.n_feat] = self.vflat[: self.window * self.n_feat]
        return self.obs, {}

    def step(self, actions):
        self._step(actions, self.int_state, self.flt_state, self.close, self.vflat, self.n_feat, self.fee,
                   self.obs, self.rew, self.done)
        return self.obs, self.rew, self._no_term, self.done, {}


def raw_kernel_factory(num_envs=1, window_size=32, fee=0.001, seed=0):
    return RawPayloadKernel(load_frame(), num_envs, window=window_size, fee=fee)
