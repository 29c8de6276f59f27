"""spotgym's envs, and a raw numba kernel with the same observation payload, for the peers harness.

The factories follow ``../shared/bench/peers/project_env_template.py`` (the harness calls them
with ``num_envs``, ``window_size``, ``fee``, ``seed``; they ignore the harness's synthetic OHLCV
and run on real Binance ETH/USDT 5m features instead):

    run_peers.py --project bench/peers_adapter.py --project-n 1,64,1024          # VecTradingEnv
    run_peers.py --project bench/peers_adapter.py:raw_kernel_factory --project-n 1,64,1024
    run_peers.py --project bench/peers_adapter.py:random_starts_factory --project-n 1024   # training's episodes
    run_peers.py --project bench/peers_adapter.py:raw_random_starts_factory --project-n 1024

Two access patterns: ``project_env_factory`` / ``raw_kernel_factory`` walk one sequential pass with
every account on the same row (lockstep); ``random_starts_factory`` / ``raw_random_starts_factory``
run 2048-step episodes from a random row per account with auto-reset (what training runs).

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
def shared_file(name: str) -> str:
    """A file of the shared data folder: ``$SPOTGYM_DATA``, else ``<repo>/../shared/data``."""
    env = os.environ.get("SPOTGYM_DATA")
    folders = ([os.path.expanduser(env)] if env else []) + [os.path.join(os.path.dirname(REPO), "shared", "data")]
    for folder in folders:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{name} not found in {folders} (set SPOTGYM_DATA to the shared data folder)")


def build_frame():
    """The ETH/USDT 5m FeatureFrame with the default features, from the shared data."""
    from spotgym.data import load_bars
    from spotgym.features import build_features

    return build_features(load_bars(shared_file(DATASET)))


def save_frame(frame, path: str) -> None:
    np.savez(path, values=frame.values, columns=np.array(frame.columns), ts=frame.timestamps_ms, open=frame.open,
             high=frame.high, low=frame.low, close=frame.close, volume=frame.volume, valid=frame.valid,
             synthetic=frame.synthetic, symbol=np.array(frame.symbol or ""))


def load_frame():
    """The ETH/USDT 5m FeatureFrame (default features), cached per process."""
    global _FRAME
    if _FRAME is not None:
        return _FRAME
    import pandas as pd

    from spotgym.core import FeatureFrame

    path = os.environ.get(FRAME_ENV)
    if path and os.path.isfile(path):
        with np.load(path) as z:
            _FRAME = FeatureFrame(values=z["values"], columns=tuple(z["columns"].tolist()),
                                  index=pd.to_datetime(z["ts"], unit="ms", utc=True), open=z["open"],
                                  high=z["high"], low=z["low"], close=z["close"], volume=z["volume"],
                                  synthetic=z["synthetic"], valid=z["valid"], symbol=str(z["symbol"]) or None)
    else:
        _FRAME = build_frame()
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
    venv = VecTradingEnv(load_frame(), num_envs, cfg, seed=seed)
    venv.reset()
    hold = np.zeros(num_envs, dtype=np.int64)
    for _ in range(RANDOM_EPISODE_LENGTH):  # one whole episode: the auto-reset path is loaded before any timing
        venv.step(hold)
    return HarnessVec(venv)


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
    if "step" in _RAW:
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


def _raw_random_kernel():
    """The same reference step with training's access pattern: each account on its own row, episodes of
    ``ep_len`` steps from a random start, auto-reset to a new random start drawn in the kernel (numba's generator, seeded at reset)."""
    if "random" in _RAW:
        return _RAW["random"]
    from numba import njit

    @njit(nogil=True, cache=True)
    def vec_step_random(actions, int_state, flt_state, close, vflat, n_feat, fee, lo, hi, ep_len, obs_out, rew_out,
                        done_out):
        n = actions.shape[0]
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
            if t >= int_state[i, 2]:
                done_out[i] = True
                t = np.random.randint(lo, hi)
                int_state[i, 2] = t + ep_len
                int_state[i, 1] = 0
                flt_state[i, 0] = 1.0
                flt_state[i, 1] = 0.0
                flt_state[i, 2] = 1.0
            else:
                done_out[i] = False
            int_state[i, 0] = t
            base = (t - window + 1) * n_feat
            src = vflat[base:base + nf]
            for k in range(nf):
                obs_out[i, k] = src[k]
            obs_out[i, nf] = int_state[i, 1]
            obs_out[i, nf + 1] = flt_state[i, 0] / equity
            obs_out[i, nf + 2] = 0.0
            obs_out[i, nf + 3] = 0.0

    @njit(cache=True)
    def seed(s):
        np.random.seed(s)

    _RAW["random"] = vec_step_random, seed
    return _RAW["random"]


class RawPayloadKernel:
    """N reference accounts per numba call, observation = our payload; buffers reused, no infos.

    ``episode_length=None``: lockstep, all accounts on the same row (one pass over the data, the
    harness's access pattern); else random starts: account i starts on its own random row, runs
    ``episode_length`` steps and auto-resets to a new random start (training's access pattern)."""

    def __init__(self, frame, num_envs: int, window: int = 32, fee: float = 0.001, episode_length: int | None = None,
                 seed: int = 0):
        from gymnasium import spaces

        self.episode_length = episode_length
        if episode_length is None:
            self._step = _raw_kernel()
        else:
            self._step_random, self._seed = _raw_random_kernel()
        self.num_envs = int(num_envs)
        self.window = int(window)
        self.fee = float(fee)
        first = max(frame.first_valid_row, 0)
        self.close = np.ascontiguousarray(frame.close[first:])
        values = np.ascontiguousarray(frame.values[first:])
        self.n_feat = values.shape[1]
        self.vflat = values.reshape(-1)
        # random starts: rows window - 1 .. last - episode_length (the whole episode fits)
        self.lo = self.window - 1
        self.hi = self.close.shape[0] - (episode_length or 0)
        self.single_action_space = spaces.Discrete(3)
        self.int_state = np.zeros((self.num_envs, 3), dtype=np.int64)
        self.flt_state = np.zeros((self.num_envs, 3), dtype=np.float64)
        self.obs = np.zeros((self.num_envs, self.window * self.n_feat + 4), dtype=np.float32)
        self.rew = np.zeros(self.num_envs, dtype=np.float64)
        self.done = np.zeros(self.num_envs, dtype=np.bool_)
        self._no_term = np.zeros(self.num_envs, dtype=np.bool_)
        self.reset(seed)
        self.step(np.zeros(self.num_envs, dtype=np.int64))
        self.reset(seed)

    def reset(self, seed=None):
        nf = self.window * self.n_feat
        if self.episode_length is None:
            starts = np.full(self.num_envs, self.window - 1, dtype=np.int64)
        else:
            rng = np.random.default_rng(seed)
            starts = rng.integers(self.lo, self.hi, size=self.num_envs)
            self._seed(int(rng.integers(2**31)))
            self.int_state[:, 2] = starts + self.episode_length
        self.int_state[:, 0] = starts
        self.int_state[:, 1] = 0
        self.flt_state[:, 0] = 1.0
        self.flt_state[:, 1] = 0.0
        self.flt_state[:, 2] = 1.0
        for i, t in enumerate(starts.tolist()):
            self.obs[i, :nf] = self.vflat[(t - self.window + 1) * self.n_feat:(t + 1) * self.n_feat]
        self.obs[:, nf] = 0.0
        self.obs[:, nf + 1] = 1.0
        self.obs[:, nf + 2:] = 0.0
        return self.obs, {}

    def step(self, actions):
        if self.episode_length is None:
            self._step(actions, self.int_state, self.flt_state, self.close, self.vflat, self.n_feat, self.fee,
                       self.obs, self.rew, self.done)
        else:
            self._step_random(actions, self.int_state, self.flt_state, self.close, self.vflat, self.n_feat, self.fee,
                              self.lo, self.hi, self.episode_length, self.obs, self.rew, self.done)
        return self.obs, self.rew, self._no_term, self.done, {}


def raw_kernel_factory(num_envs=1, window_size=32, fee=0.001, seed=0):
    """The raw kernel, lockstep (one pass, every account on the same row)."""
    return RawPayloadKernel(load_frame(), num_envs, window=window_size, fee=fee, seed=seed)


def raw_random_starts_factory(num_envs=1, window_size=32, fee=0.001, seed=0):
    """The raw kernel with ``random_starts_factory``'s episodes: random starts, 2048 steps, auto-reset."""
    return RawPayloadKernel(load_frame(), num_envs, window=window_size, fee=fee,
                            episode_length=RANDOM_EPISODE_LENGTH, seed=seed)
