"""``VecTradingEnv``: N spot accounts stepped by one kernel call, as a stable-baselines3 ``VecEnv``.

Same kernels, same semantics as ``TradingEnv``: with one account and the same seed it returns
the same numbers step for step. One ``step_accounts_nb`` call steps all N accounts; on a step
where some finished, one ``autoreset_accounts_nb`` call restarts them (SB3's auto-reset): the
returned observation is the new episode's first one, and the step's info holds
``terminal_observation`` and ``TimeLimit.truncated`` (only on those steps).

Buffers: observations and infos are reused. The env alternates between two sets, so what
``step_wait`` returned stays valid until the next-but-one step (what SB3's algorithms need:
they store ``obs`` before stepping again). Pass ``copy_obs=True`` / ``copy_infos=True`` for
fresh arrays / plain dicts every step. Infos are ``StepInfo`` dicts that read the account fields
from the step's info array on access (see ``spotgym.envs.info``). Rewards (float64) and dones
are fresh arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices

from spotgym.core import FeatureFrame
from spotgym.envs import nb
from spotgym.envs.config import EnvConfig, resolve_config
from spotgym.envs.core import AccountEngine
from spotgym.envs.info import StepInfo, info_dict
from spotgym.envs.market import MarketData

__all__ = ["VecTradingEnv"]

DRAW_AHEAD = 32  # episode starts drawn per generator call, per account


class VecTradingEnv(VecEnv):
    """``VecTradingEnv(frame, n_envs, config)``: N independent accounts on one market.

    Account i draws its episode starts from its own generator, seeded ``seed + i`` (``seed``
    argument, ``seed()`` or SB3 ``PPO(..., seed=...)``), exactly as a ``TradingEnv`` reset with
    that seed would; unseeded generators take fresh entropy. The starts are drawn ``DRAW_AHEAD`` at a
    time per account (one generator call: the same values, in the same order, as one call per episode).
    """

    metadata = {"render_modes": []}

    def __init__(self, frame: FeatureFrame, n_envs: int = 1, config: EnvConfig | None = None, *,
                 seed: int | None = None, copy_obs: bool = False, copy_infos: bool = False,
                 **overrides: Any) -> None:
        self.config = config = resolve_config(config, overrides)
        self.market = MarketData(frame, config.window)
        self.engine = eng = AccountEngine(self.market, config, n_envs=int(n_envs))
        self.render_mode = None
        super().__init__(eng.n_envs, eng.observation_space, eng.action_space)
        self.single_observation_space = eng.observation_space
        self.single_action_space = eng.action_space
        self.copy_obs = bool(copy_obs)
        self.copy_infos = bool(copy_infos)
        n = eng.n_envs
        self._obs = np.zeros((2, n, eng.obs_dim), dtype=np.float32)
        self._info = np.zeros((2, n, nb.N_INFO), dtype=np.float64)
        self._rewards = [self._info[s][:, nb.INF_REWARD] for s in range(2)]  # column views, made once
        self._dirty: list[set[int]] = [set(), set()]
        self._infos = [[StepInfo(self._info[s], i, self._dirty[s]) for i in range(n)] for s in range(2)]
        self._slot = 0
        self._next_start = np.zeros(n, dtype=np.int64)
        self._rngs: list[np.random.Generator] | None = None
        # account i's next starts, drawn DRAW_AHEAD at a time from its generator (same values, same
        # order as one draw per episode); _ahead_pos[i] = the next unused one (DRAW_AHEAD: none left)
        self._ahead = np.zeros((n, DRAW_AHEAD), dtype=np.int64)
        self._ahead_pos = np.full(n, DRAW_AHEAD, dtype=np.int64)
        self._pending = False  # _next_start holds drawn, unused starts
        self._actions_set = False
        if seed is not None:
            self.seed(seed)

    # ------------------------------------------------------------------ SB3 VecEnv API
    def reset(self):
        """Reset every account (seeds from ``seed()`` apply once, as in SB3)."""
        eng = self.engine
        if self._rngs is None or any(s is not None for s in self._seeds):
            old = self._rngs
            fresh = [s is not None or old is None for s in self._seeds]
            self._rngs = [seeding.np_random(s)[0] if new else old[i]
                          for i, (s, new) in enumerate(zip(self._seeds, fresh))]
            self._ahead_pos[np.array(fresh, dtype=bool)] = DRAW_AHEAD  # a new generator: its draws are not those
            self._pending = False
        # account i's starts are the successive draws of its generator, as in TradingEnv
        all_idx = eng.all_idx
        starts = self._next_start.copy() if self._pending else self._draw_starts(all_idx)
        self._next_start[:] = self._draw_starts(all_idx)
        self._pending = True
        self._slot ^= 1
        slot = self._slot
        self._clear_slot(slot)
        eng.reset(eng.all_idx, starts, self._obs[slot], self._info[slot])
        self.reset_infos = [info_dict(row) for row in self._info[slot]]
        self._reset_seeds()
        self._reset_options()
        return self._observation(slot)

    def step_async(self, actions: np.ndarray) -> None:
        self.engine.set_actions(actions)
        self._actions_set = True

    def step_wait(self):
        if not self._actions_set:
            raise RuntimeError("step_wait() without step_async(): call step(actions)")
        if self._rngs is None:
            raise RuntimeError("call reset() before step()")
        self._actions_set = False
        eng = self.engine
        self._slot ^= 1
        slot = self._slot
        dirty = self._dirty[slot]
        if dirty:
            self._clear_slot(slot)
        obs, info_arr = self._obs[slot], self._info[slot]
        n_done = eng.step(obs, info_arr)
        infos = self._infos[slot]
        if n_done:
            ist = eng.ist
            dones = ist[:, nb.DONE] != 0
            idx = np.flatnonzero(dones)
            time_limit = ((ist[idx, nb.TRUNC] != 0) & (ist[idx, nb.TERM] == 0)).tolist()
            eng.autoreset(self._next_start, obs)  # clears the flags of the restarted accounts
            # one copy for all: each terminal observation is a row of it (no view of the env's buffers)
            term_obs = eng.term_obs[idx]
            reset_info, reset_infos, split = eng.reset_info, self.reset_infos, eng.split_obs
            done_idx = idx.tolist()
            for k, i in enumerate(done_idx):
                # = info["terminal_observation"] = ...; info["TimeLimit.truncated"] = ... (StepInfo marks
                # the account dirty: done below for all at once)
                dict.update(infos[i], {"terminal_observation": split(term_obs[k]),
                                       "TimeLimit.truncated": time_limit[k]})
                reset_infos[i] = info_dict(reset_info[i])
            self._dirty[slot].update(done_idx)
            self._next_start[idx] = self._draw_starts(idx)
        else:
            dones = np.zeros(self.num_envs, dtype=bool)
        if self.copy_infos:
            infos = [info.copy() for info in infos]
        return self._observation(slot), self._rewards[slot].copy(), dones, infos

    def close(self) -> None:
        pass

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seeds ``seed + i`` for the next ``reset()`` (SB3 semantics)."""
        return super().seed(seed)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """``getattr(self, attr_name)`` once per selected env (the accounts share one object)."""
        value = getattr(self, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        if attr_name in ("config", "engine", "market"):
            raise AttributeError(f"{attr_name} cannot be changed on a running VecTradingEnv; build a new one")
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call ``method_name`` of this env once; per-account results (arrays with N rows, e.g.
        ``action_masks``) are split by account."""
        out = getattr(self, method_name)(*method_args, **method_kwargs)
        idx = list(self._get_indices(indices))
        if isinstance(out, np.ndarray) and out.ndim >= 1 and out.shape[0] == self.num_envs:
            return [out[i] for i in idx]
        return [out for _ in idx]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]

    # ------------------------------------------------------------------ extras
    def action_masks(self) -> np.ndarray:
        """(N, n_actions) valid actions now, for sb3-contrib ``MaskablePPO``."""
        if self.config.action == "continuous":
            raise NotImplementedError("action masks apply to the discrete action spaces ('levels', "
                                      "'buy_sell_hold'), not to 'continuous'")
        return self.engine.action_masks()

    @property
    def equity(self) -> np.ndarray:
        """Equity of every account at its last mark (a copy)."""
        return self.engine.fs[:, nb.EQUITY].copy()

    @property
    def rows(self) -> np.ndarray:
        """Current row of every account (a copy)."""
        return self.engine.ist[:, nb.ROW].copy()

    # ------------------------------------------------------------------ helpers
    def _draw_starts(self, idx: np.ndarray) -> np.ndarray:
        """The next start of each account in ``idx`` (distinct indices): the next draw of its generator,
        taken from the ones drawn ahead (refilled DRAW_AHEAD at a time, ``AccountEngine.draw_starts``)."""
        pos = self._ahead_pos[idx]
        empty = idx[pos >= DRAW_AHEAD]
        if empty.size:
            draw, rngs, ahead = self.engine.draw_starts, self._rngs, self._ahead
            for i in empty.tolist():
                ahead[i] = draw(rngs[i], DRAW_AHEAD)
            self._ahead_pos[empty] = 0
            pos = self._ahead_pos[idx]
        self._ahead_pos[idx] = pos + 1
        return self._ahead[idx, pos]

    def _clear_slot(self, slot: int) -> None:
        dirty = self._dirty[slot]
        infos = self._infos[slot]
        for i in dirty:
            infos[i]._clear_extras()
        dirty.clear()

    def _observation(self, slot: int):
        obs = self._obs[slot]
        if self.copy_obs:
            obs = obs.copy()
        return self.engine.split_obs(obs)
