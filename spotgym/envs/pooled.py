"""``PooledVecEnv``: one SB3 ``VecEnv`` whose accounts trade several symbols (pooled multi-asset training).

More data per parameter: one policy trains on several markets at once (say ETH, BTC and SOL 1h). Each
part is a ``(frame, EnvConfig)`` pair, one symbol's ``FeatureFrame`` (features normalised per symbol, as
``build_features`` does) with that symbol's row range and rules (``filters="venue"`` resolves each frame's
own symbol). The pool holds one ``VecTradingEnv`` per part and hands SB3 their accounts side by side,
part 0's accounts first::

    pool = PooledVecEnv([(eth, cfg.for_rows(eth_rows)), (btc, cfg.for_rows(btc_rows))], 64, seed=0)
    PPO("MlpPolicy", VecMonitor(pool, info_keywords=("symbol",)), ...)

Backtests stay per symbol: run the trained actor through each part's frame and rows
(``spotgym.backtest.run_policy(frame, config, rows, actor)``); ``pool.frames`` / ``pool.configs`` hold them.

Accounts per part (``n_envs``): an int is split in proportion to each part's number of candidate episode
starts (``AccountEngine.starts``; a sequential config has one), at least one account each, by largest
remainders (exact integer arithmetic, ties to the earlier part); a list gives the counts explicitly.

Seeding: account i of the pool draws its episodes exactly as account i of one ``VecTradingEnv`` of the
whole pool would, from a generator seeded ``seed + i``: part k, whose accounts start at ``offsets[k]``, is
seeded ``seed + offsets[k]`` (``VecTradingEnv`` seeds its account j ``seed + j``). So the accounts of part
k equal those of ``VecTradingEnv(frame_k, counts[k], config_k, seed=seed + offsets[k])``, step for step.

Speed: the parts' kernels write straight into the pool's observation and info buffers (each part's are
row blocks of the pool's, bound once at construction), so a step is the parts' kernel calls plus a few
Python calls per part: no copy of the observations, no loop over accounts (only over the accounts that
finished, as in ``VecTradingEnv``). Buffers alternate between two sets as in ``VecTradingEnv``: what a
step returns stays valid until the next-but-one step (``copy_obs`` / ``copy_infos`` as there).

Symbol per account: ``info["symbol"]`` on every step and reset info (``None`` for a frame without a
symbol), and ``pool.symbols`` (one per account) / ``get_attr("symbol")``. The step infos are the parts'
lazy ``StepInfo`` dicts; the pool's kind keeps ``"symbol"`` as an ordinary key that is written once and
written again whenever the dict's extra keys are cleared for reuse, so reading it is a plain dict hit
and a step writes it only for the accounts whose infos were cleared (those that finished two steps
ago or had keys added). Like the account fields it is read-only: ``pop`` reads it, ``del`` refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from spotgym.core import FeatureFrame
from spotgym.envs import nb
from spotgym.envs.config import EnvConfig
from spotgym.envs.core import AccountEngine
from spotgym.envs.info import StepInfo
from spotgym.envs.market import MarketData
from spotgym.envs.vec_env import VecTradingEnv

__all__ = ["PooledVecEnv", "split_accounts"]

SYMBOL_KEY = "symbol"


class _SymbolStepInfo(StepInfo):
    """A ``StepInfo`` that also holds its account's symbol under ``"symbol"`` (an ordinary key, so reads are
    dict hits), restored whenever the env clears the dict's extra keys for reuse."""

    __slots__ = ("_symbol",)

    def __init__(self, src: np.ndarray, i: int, dirty: set[int], symbol: str | None) -> None:
        super().__init__(src, i, dirty)
        self._symbol = symbol
        dict.__setitem__(self, SYMBOL_KEY, symbol)

    def _clear_extras(self) -> None:
        dict.clear(self)
        dict.__setitem__(self, SYMBOL_KEY, self._symbol)

    def pop(self, key: Any, *default: Any) -> Any:
        if key == SYMBOL_KEY:
            return self[SYMBOL_KEY]  # read-only, like the account fields: popping it just reads it
        return super().pop(key, *default)

    def __delitem__(self, key: Any) -> None:
        if key == SYMBOL_KEY:
            raise KeyError(f"{SYMBOL_KEY!r} is a read-only field of a pooled env's info")
        super().__delitem__(key)


class _Part(VecTradingEnv):
    """One part of a pool: a ``VecTradingEnv`` whose buffers are row blocks of the pool's."""

    def __init__(self, frame: FeatureFrame, n_envs: int, config: EnvConfig, *, copy_infos: bool) -> None:
        super().__init__(frame, n_envs, config, copy_obs=False, copy_infos=copy_infos)
        self.symbol: str | None = self.market.symbol

    def _bind(self, obs: np.ndarray, info: np.ndarray) -> None:
        """Write into ``obs`` (2, n, obs_dim) and ``info`` (2, n, N_INFO) (views of the pool's buffers) from now
        on: the buffers ``VecTradingEnv.__init__`` made, and what it built over them, are rebuilt here."""
        for name, new in (("_obs", obs), ("_info", info)):
            old = getattr(self, name, None)
            if not isinstance(old, np.ndarray) or old.shape != new.shape or old.dtype != new.dtype:
                raise RuntimeError(f"VecTradingEnv.{name} is not the (2, n, ...) buffer PooledVecEnv expects: "
                                   "update spotgym.envs.pooled._Part._bind to VecTradingEnv's buffers")
            if not (new[0].flags.c_contiguous and new[1].flags.c_contiguous):
                raise RuntimeError(f"{name}: each slot must be C-contiguous (the kernels' compiled layout)")
        if not (isinstance(self._dirty, list) and len(self._dirty) == 2 and len(self._infos) == 2):
            raise RuntimeError("VecTradingEnv's info lists changed: update spotgym.envs.pooled._Part._bind")
        n = self.num_envs
        self._obs = obs
        self._info = info
        self._rewards = [info[s][:, nb.INF_REWARD] for s in range(2)]
        self._infos = [[_SymbolStepInfo(info[s], i, self._dirty[s], self.symbol) for i in range(n)]
                       for s in range(2)]


def split_accounts(weights: Sequence[int], n_envs: int) -> list[int]:
    """``n_envs`` accounts split in proportion to ``weights`` (positive ints), at least one each.

    Largest remainders (Hamilton) on exact integers: each part gets the floor of its quota
    ``n_envs * w / sum(w)`` (at least 1), then the accounts left over (or taken back, when the minimum of one
    pushed the sum over) go one at a time to the largest remainder (from the smallest), ties to the earlier
    part. Deterministic; equal to plain proportions whenever those are integers."""
    w = [int(x) for x in weights]
    k, n = len(w), int(n_envs)
    if k == 0:
        raise ValueError("split_accounts needs at least one weight")
    if any(x < 1 for x in w):
        raise ValueError(f"weights must be positive, got {w}")
    if n < k:
        raise ValueError(f"n_envs={n} is fewer than the {k} parts: each part needs at least one account")
    total = sum(w)
    counts = [max(1, n * x // total) for x in w]
    rem = [n * x - c * total for x, c in zip(w, counts)]  # quota - count, times total (exact)
    while sum(counts) < n:
        j = max(range(k), key=lambda i: (rem[i], -i))
        counts[j] += 1
        rem[j] -= total
    while sum(counts) > n:
        j = min((i for i in range(k) if counts[i] > 1), key=lambda i: (rem[i], i))
        counts[j] -= 1
        rem[j] += total
    return counts


def _label(k: int, symbol: str | None) -> str:
    return f"part {k} ({symbol})" if symbol else f"part {k}"


def _columns_diff(cols: tuple[str, ...], ref: tuple[str, ...]) -> str:
    if set(cols) == set(ref) and len(cols) == len(ref):
        j = next(i for i, (a, b) in enumerate(zip(cols, ref)) if a != b)
        return f"the same columns in another order (position {j}: {cols[j]!r} where part 0 has {ref[j]!r})"
    missing = [c for c in ref if c not in cols]
    extra = [c for c in cols if c not in ref]
    return (f"{len(cols)} columns where part 0 has {len(ref)}"
            + (f"; missing {missing}" if missing else "") + (f"; extra {extra}" if extra else ""))


def _check_compatible(engines: Sequence[AccountEngine]) -> None:
    """Every part must give the observation and action spaces of part 0, else a ValueError naming what differs."""
    ref = engines[0]
    rc, rm = ref.config, ref.market
    for k, eng in enumerate(engines[1:], start=1):
        c, m = eng.config, eng.market
        who = _label(k, m.symbol)
        diffs = []
        if m.columns != rm.columns:
            diffs.append(f"feature columns differ: {_columns_diff(m.columns, rm.columns)}")
        if c.window != rc.window:
            diffs.append(f"window {c.window} where part 0 has {rc.window}")
        if c.obs_mode != rc.obs_mode:
            diffs.append(f"obs_mode {c.obs_mode!r} where part 0 has {rc.obs_mode!r}")
        if c.action != rc.action:
            diffs.append(f"action {c.action!r} where part 0 has {rc.action!r}")
        elif c.action == "levels" and c.levels != rc.levels:
            diffs.append(f"levels {c.levels} where part 0 has {rc.levels}")
        if not diffs and (eng.observation_space != ref.observation_space or eng.action_space != ref.action_space):
            diffs.append(f"spaces {eng.observation_space} / {eng.action_space} where part 0 has "
                         f"{ref.observation_space} / {ref.action_space}")
        if diffs:
            raise ValueError(f"PooledVecEnv: {who} does not give part 0's ({rm.symbol}) observation and action "
                             f"spaces: " + "; ".join(diffs) + ". Every part needs the same feature columns in the "
                             "same order, window, obs_mode and action (and levels)")


class PooledVecEnv(VecEnv):
    """``PooledVecEnv(parts, n_envs)``: the accounts of one ``VecTradingEnv`` per ``(frame, EnvConfig)`` part.

    ``n_envs``: the total number of accounts, split by ``split_accounts`` in proportion to each part's
    candidate episode starts, or one count per part. Account i is seeded ``seed + i`` (part k: ``seed +
    offsets[k]``). Observations, rewards, dones and infos are the parts' in account order; every info
    holds ``"symbol"``. ``get_attr`` / ``set_attr`` / ``env_method`` go to the part holding each selected
    account (a part's accounts share one object: ``set_attr`` for one of them sets it for the part).
    Don't step or reset ``pool.parts`` directly: they write into the pool's buffers.
    """

    metadata = {"render_modes": []}

    def __init__(self, parts: Sequence[tuple[FeatureFrame, EnvConfig | None]], n_envs: int | Sequence[int], *,
                 seed: int | None = None, copy_obs: bool = False, copy_infos: bool = False) -> None:
        specs = self._specs(parts)
        self.frames: tuple[FeatureFrame, ...] = tuple(f for f, _ in specs)
        self.configs: tuple[EnvConfig, ...] = tuple(c for _, c in specs)
        probes = []
        for k, (frame, cfg) in enumerate(specs):  # one-account engines: spaces and start counts, before any buffer
            try:
                probes.append(AccountEngine(MarketData(frame, cfg.window), cfg, n_envs=1))
            except ValueError as exc:
                raise ValueError(f"PooledVecEnv: {_label(k, getattr(frame, 'symbol', None))}: {exc}") from None
        _check_compatible(probes)
        self.counts: tuple[int, ...] = tuple(self._counts(n_envs, [int(p.starts.size) for p in probes]))
        offsets = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.offsets: tuple[int, ...] = tuple(int(o) for o in offsets[:-1])
        self.slices: tuple[slice, ...] = tuple(slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:]))
        n = int(offsets[-1])
        self.copy_obs = bool(copy_obs)
        self.copy_infos = bool(copy_infos)
        self._parts = tuple(_Part(f, c, cfg, copy_infos=self.copy_infos)
                            for (f, cfg), c in zip(specs, self.counts))
        first = self._parts[0]
        eng = first.engine
        self._obs = np.zeros((2, n, eng.obs_dim), dtype=np.float32)
        self._info = np.zeros((2, n, nb.N_INFO), dtype=np.float64)
        for part, sl in zip(self._parts, self.slices):
            part._bind(self._obs[:, sl], self._info[:, sl])
        self._rewards = [self._info[s][:, nb.INF_REWARD] for s in range(2)]
        self._split = eng.split_obs  # the same for every part (same obs_mode and feature width, checked)
        self.part_index = np.repeat(np.arange(len(self._parts), dtype=np.int64), self.counts)  # part of account i
        self._local = np.arange(n, dtype=np.int64) - offsets[self.part_index]  # account i's index in its part
        self.symbols: tuple[str | None, ...] = tuple(self._parts[k].symbol for k in self.part_index.tolist())
        self._slot = 0
        self._was_reset = False
        self._actions_set = False
        self.render_mode = None
        super().__init__(n, first.observation_space, first.action_space)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        if seed is not None:
            self.seed(seed)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _specs(parts: Sequence[tuple[FeatureFrame, EnvConfig | None]]) -> list[tuple[FeatureFrame, EnvConfig]]:
        if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or len(parts) == 0:
            raise ValueError("PooledVecEnv needs a non-empty sequence of (frame, EnvConfig) parts")
        out = []
        for k, item in enumerate(parts):
            if not isinstance(item, Sequence) or len(item) != 2:
                raise ValueError(f"PooledVecEnv: part {k} must be a (frame, EnvConfig) pair, got {type(item).__name__}")
            frame, cfg = item
            cfg = EnvConfig() if cfg is None else cfg
            if not isinstance(cfg, EnvConfig):
                raise TypeError(f"PooledVecEnv: part {k}'s config must be an EnvConfig, got {type(cfg).__name__}")
            out.append((frame, cfg))
        return out

    @staticmethod
    def _counts(n_envs: int | Sequence[int], weights: list[int]) -> list[int]:
        if isinstance(n_envs, (int, np.integer)):
            return split_accounts(weights, int(n_envs))
        counts = [int(c) for c in n_envs]
        if len(counts) != len(weights) or any(c < 1 for c in counts):
            raise ValueError(f"n_envs as a list must hold one count >= 1 per part ({len(weights)} parts), got {counts}")
        return counts

    # ------------------------------------------------------------------ SB3 VecEnv API
    def reset(self):
        """Reset every account (seeds from ``seed()`` apply once, as in SB3)."""
        self._slot ^= 1
        reset_infos: list[dict[str, Any]] = []
        for part in self._parts:
            part.reset()
            for d in part.reset_infos:
                d[SYMBOL_KEY] = part.symbol
            reset_infos += part.reset_infos
        self._check_lockstep()
        self.reset_infos = reset_infos
        self._was_reset = True
        self._reset_seeds()
        self._reset_options()
        return self._observation(self._slot)

    def step_async(self, actions: np.ndarray) -> None:
        a = actions if isinstance(actions, np.ndarray) else np.asarray(actions)
        if a.size != self.num_envs:
            raise ValueError(f"expected {self.num_envs} action(s), got an array of shape {a.shape}")
        flat = a.reshape(self.num_envs)
        for part, sl in zip(self._parts, self.slices):
            part.step_async(flat[sl])
        self._actions_set = True

    def step_wait(self):
        if not self._actions_set:
            raise RuntimeError("step_wait() without step_async(): call step(actions)")
        if not self._was_reset:
            raise RuntimeError("call reset() before step()")
        self._actions_set = False
        self._slot ^= 1
        slot = self._slot
        part_dones, infos = [], []
        for part in self._parts:
            _, _, d, inf = part.step_wait()  # obs and rewards landed in the pool's buffers
            if part._slot != slot:
                self._out_of_step()
            part_dones.append(d)
            infos += inf
        dones = np.concatenate(part_dones)
        if dones.any():  # the parts replaced the reset infos of their finished accounts
            reset_infos, parts, local = self.reset_infos, self._parts, self._local
            for i, k in zip(np.flatnonzero(dones).tolist(), self.part_index[dones].tolist()):
                part = parts[k]
                r = part.reset_infos[local[i]]
                r[SYMBOL_KEY] = part.symbol
                reset_infos[i] = r
        return self._observation(slot), self._rewards[slot].copy(), dones, infos

    def close(self) -> None:
        for part in self._parts:
            part.close()

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds ``seed + i`` for account i at the next ``reset()`` (SB3 semantics: ``None`` draws a base seed):
        part k gets ``seed + offsets[k]``."""
        seeds = super().seed(seed)
        for part, off in zip(self._parts, self.offsets):
            part.seed(seeds[off])
        return seeds

    def set_options(self, options: list[dict] | dict | None = None) -> None:
        super().set_options(options)
        for part, sl in zip(self._parts, self.slices):
            part.set_options(self._options[sl])

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``attr_name`` of the part holding each selected account (e.g. ``"config"``, ``"symbol"``)."""
        return self._route("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``attr_name`` on every part holding a selected account (for all of that part's accounts)."""
        self._route("set_attr", indices, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call ``method_name`` on the parts holding the selected accounts; per-account results (e.g.
        ``action_masks``, which sb3-contrib's ``MaskablePPO`` calls here) in account order."""
        return self._route("env_method", indices, method_name, *method_args, **method_kwargs)

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return self._route("env_is_wrapped", indices, wrapper_class)

    # ------------------------------------------------------------------ extras
    @property
    def parts(self) -> tuple[VecTradingEnv, ...]:
        """The per-symbol ``VecTradingEnv``s (read them; stepping one directly desynchronises the pool)."""
        return self._parts

    def action_masks(self) -> np.ndarray:
        """(N, n_actions) valid actions now, for sb3-contrib ``MaskablePPO`` (the parts' masks stacked)."""
        return np.concatenate([part.action_masks() for part in self._parts])

    @property
    def equity(self) -> np.ndarray:
        """Equity of every account at its last mark (a copy)."""
        return np.concatenate([part.equity for part in self._parts])

    @property
    def rows(self) -> np.ndarray:
        """Current row of every account in its own part's frame (a copy)."""
        return np.concatenate([part.rows for part in self._parts])

    # ------------------------------------------------------------------ helpers
    def _observation(self, slot: int):
        obs = self._obs[slot]
        if self.copy_obs:
            obs = obs.copy()
        return self._split(obs)

    def _check_lockstep(self) -> None:
        if any(part._slot != self._slot for part in self._parts):
            self._out_of_step()

    def _out_of_step(self) -> None:
        raise RuntimeError("a part of the PooledVecEnv was reset or stepped on its own, so the parts' buffers are "
                           "out of step; reset() the pool (and step the pool, not pool.parts)")

    def _route(self, method: str, indices: VecEnvIndices, *args: Any, **kwargs: Any) -> list[Any]:
        """Call ``part.<method>(*args, indices=local, **kwargs)`` on the parts holding the selected accounts;
        results in the order of ``indices``."""
        if indices is None:
            out: list[Any] = []
            for part in self._parts:
                res = getattr(part, method)(*args, indices=None, **kwargs)
                if res is not None:
                    out += res
            return out
        n = self.num_envs
        idx = []
        for i in self._get_indices(indices):
            i = int(i)
            if not -n <= i < n:
                raise IndexError(f"account index {i} out of range for {n} accounts")
            idx.append(i % n)
        groups: dict[int, tuple[list[int], list[int]]] = {}
        for pos, i in enumerate(idx):
            where, local = groups.setdefault(int(self.part_index[i]), ([], []))
            where.append(pos)
            local.append(int(self._local[i]))
        out = [None] * len(idx)
        for k, (where, local) in groups.items():
            res = getattr(self._parts[k], method)(*args, indices=local, **kwargs)
            if res is not None:
                for pos, r in zip(where, res):
                    out[pos] = r
        return out
