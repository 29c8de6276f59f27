"""PooledVecEnv on real ETH, BTC and SOL 1h features: its accounts are exactly those of separate per-symbol
VecTradingEnvs (seeded seed + offset), each only ever sees its own symbol's rows, mismatched parts are a clear
error, the SB3 VecEnv API routes to the right part, and PPO / MaskablePPO train on it."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from sb3_contrib import MaskablePPO
from shared_data import shared_file
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.utils import check_for_correct_spaces
from stable_baselines3.common.vec_env import VecMonitor

from spotgym.data import load_bars
from spotgym.envs import INFO_FIELDS, EnvConfig, PooledVecEnv, StepInfo, VecTradingEnv
from spotgym.envs.pooled import split_accounts
from spotgym.features import build_features

SPANS = {  # a few months each (the feature warm-up is ~700 rows), different lengths
    "ETH/USDT": ("BINANCE_ETHUSDT_1h.csv.gz", "2023-01-01", "2023-04-15"),
    "BTC/USDT": ("BINANCE_BTCUSDT_1h.csv.gz", "2023-02-01", "2023-06-01"),
    "SOL/USDT": ("BINANCE_SOLUSDT_1h.csv", "2022-10-01", "2023-01-10"),
}


@pytest.fixture(scope="module")
def frames():
    return {sym: build_features(load_bars(shared_file(name), start=start, end=end))
            for sym, (name, start, end) in SPANS.items()}


def _parts(frames, cfg):
    """Each symbol with its own row range (start_row / end_row differ per symbol)."""
    eth, btc, sol = frames["ETH/USDT"], frames["BTC/USDT"], frames["SOL/USDT"]
    return [(eth, cfg.replace(start_row=eth.first_valid_row + 40, end_row=len(eth) - 100)),
            (btc, cfg.replace(start_row=btc.first_valid_row + 200)),
            (sol, cfg.replace(start_row=sol.first_valid_row, end_row=sol.first_valid_row + 900))]


def _plain(info):
    out = info.copy()
    out.pop("symbol", None)
    return out


def _same_obs(a, b):
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    else:
        np.testing.assert_array_equal(a, b)


def _rows(obs, sl):
    return {k: v[sl] for k, v in obs.items()} if isinstance(obs, dict) else obs[sl]


def _random_actions(space, n, rng):
    if isinstance(space, gymnasium.spaces.Discrete):
        return rng.integers(space.n, size=n)
    return rng.random((n, 1)).astype(np.float32)


@pytest.mark.parametrize("cfg", [
    EnvConfig(window=8, episode_length=12, reward="dsr", ruin_floor=0.5),
    EnvConfig(window=4, episode_length=9, action="levels", obs_mode="dict", levels=(0.0, 0.3, 1.0)),
], ids=["continuous-box", "levels-dict"])
def test_accounts_equal_separate_vec_envs_bit_for_bit(frames, cfg):
    parts = _parts(frames, cfg)
    seed = 17
    pool = PooledVecEnv(parts, 7, seed=seed)
    assert sum(pool.counts) == pool.num_envs == 7 and min(pool.counts) >= 1
    refs = [VecTradingEnv(f, n, c, seed=seed + off) for (f, c), n, off in zip(parts, pool.counts, pool.offsets)]
    obs = pool.reset()
    for ref, sl, sym in zip(refs, pool.slices, SPANS):
        _same_obs(_rows(obs, sl), ref.reset())
        assert [_plain(d) for d in pool.reset_infos[sl]] == ref.reset_infos
        assert {d["symbol"] for d in pool.reset_infos[sl]} == {sym}
    rng = np.random.default_rng(3)
    finished = np.zeros(pool.num_envs, dtype=int)
    for _ in range(40):
        actions = _random_actions(pool.action_space, pool.num_envs, rng)
        obs, rew, dones, infos = pool.step(actions)
        assert rew.dtype == np.float64 and dones.dtype == bool and len(infos) == pool.num_envs
        for ref, sl, sym in zip(refs, pool.slices, SPANS):
            robs, rrew, rdones, rinfos = ref.step(actions[sl])
            _same_obs(_rows(obs, sl), robs)
            np.testing.assert_array_equal(rew[sl], rrew)
            np.testing.assert_array_equal(dones[sl], rdones)
            for info, rinfo in zip(infos[sl], rinfos):
                assert info["symbol"] == sym and isinstance(info, StepInfo)
                mine, theirs = _plain(info), rinfo.copy()
                if "terminal_observation" in theirs:
                    _same_obs(mine.pop("terminal_observation"), theirs.pop("terminal_observation"))
                assert mine == theirs
            assert [_plain(d) for d in pool.reset_infos[sl]] == ref.reset_infos
        finished += dones
    assert finished.min() >= 3  # several auto-resets per account
    np.testing.assert_array_equal(pool.equity, np.concatenate([r.equity for r in refs]))


def test_seeded_like_one_vec_env_of_the_whole_pool(frames):
    """Account i of the pool draws the episodes of account i of one VecTradingEnv of all the pool's accounts."""
    cfg = EnvConfig(window=8, episode_length=10)
    eth = frames["ETH/USDT"]
    pool = PooledVecEnv([(eth, cfg), (eth, cfg), (eth, cfg)], [2, 1, 3], seed=40)
    whole = VecTradingEnv(eth, 6, cfg, seed=40)
    np.testing.assert_array_equal(pool.reset(), whole.reset())
    for _ in range(25):
        a = np.full((6, 1), 0.5, np.float32)
        o, r, d, _ = pool.step(a)
        wo, wr, wd, _ = whole.step(a)
        np.testing.assert_array_equal(o, wo)
        np.testing.assert_array_equal(r, wr)
        np.testing.assert_array_equal(d, wd)
    pool.seed(40)  # SB3's seed(): applies at the next reset
    whole.seed(40)
    np.testing.assert_array_equal(pool.reset(), whole.reset())
    assert pool.seed(None) is not None  # a drawn base seed, like SB3's
    pool.reset()


def test_accounts_only_see_their_own_symbols_rows(frames):
    cfg = EnvConfig(window=6, episode_length=15, action="buy_sell_hold")
    parts = _parts(frames, cfg)
    pool = PooledVecEnv(parts, 9, seed=1)
    w, nf = cfg.window, frames["ETH/USDT"].n_features
    obs = pool.reset()
    rng = np.random.default_rng(0)
    for _ in range(35):
        rows = pool.rows
        for i in range(pool.num_envs):
            frame, c = parts[pool.part_index[i]]
            row = int(rows[i])
            assert c.start_row <= row < (c.end_row or len(frame))
            np.testing.assert_array_equal(obs[i, : w * nf], frame.values[row - w + 1: row + 1].ravel())
        obs, _, dones, infos = pool.step(rng.integers(3, size=pool.num_envs))
        for i, info in enumerate(infos):
            frame, _ = parts[pool.part_index[i]]
            assert info["symbol"] == pool.symbols[i] == frame.symbol
            assert info["price"] == frame.close[info["row"]]
            if info["fill_qty"] != 0.0:  # filled at the open of the marked row (slippage, tick rounding)
                tick = pool.parts[pool.part_index[i]].engine.rules.tick_size
                assert abs(info["fill_price"] - frame.open[info["row"]]) <= 1e-4 * frame.open[info["row"]] + tick
    assert set(pool.symbols) == set(SPANS)


def _with_columns_reordered(frame):
    perm = np.r_[1, 0, 2:frame.n_features]
    return dataclasses.replace(frame, values=np.ascontiguousarray(frame.values[:, perm]),
                               columns=tuple(frame.columns[j] for j in perm))


def test_mismatched_parts_are_a_clear_error(frames):
    eth, btc = frames["ETH/USDT"], frames["BTC/USDT"]
    cfg = EnvConfig(window=8, episode_length=20, action="levels")
    extra = btc.with_columns(["extra"], np.zeros((len(btc), 1), np.float32))
    with pytest.raises(ValueError, match=r"part 1 \(BTC/USDT\).*columns.*extra \['extra'\]"):
        PooledVecEnv([(eth, cfg), (extra, cfg)], 4)
    with pytest.raises(ValueError, match=r"part 1 \(BTC/USDT\).*another order \(position 0"):
        PooledVecEnv([(eth, cfg), (_with_columns_reordered(btc), cfg)], 4)
    with pytest.raises(ValueError, match=r"part 2 \(SOL/USDT\).*window 16 where part 0 has 8"):
        PooledVecEnv([(eth, cfg), (btc, cfg), (frames["SOL/USDT"], cfg.replace(window=16))], 4)
    with pytest.raises(ValueError, match=r"part 1 \(BTC/USDT\).*action 'buy_sell_hold' where part 0 has 'levels'"):
        PooledVecEnv([(eth, cfg), (btc, cfg.replace(action="buy_sell_hold"))], 4)
    with pytest.raises(ValueError, match=r"levels \(0\.0, 1\.0\) where"):
        PooledVecEnv([(eth, cfg), (btc, cfg.replace(levels=(0.0, 1.0)))], 4)
    with pytest.raises(ValueError, match=r"obs_mode 'dict'"):
        PooledVecEnv([(eth, cfg), (btc, cfg.replace(obs_mode="dict"))], 4)
    with pytest.raises(ValueError, match=r"part 1 \(BTC/USDT\): no episode of episode_length"):
        PooledVecEnv([(eth, cfg), (btc, cfg.replace(start_row=len(btc) - 15))], 4)
    with pytest.raises(ValueError, match="fewer than the 2 parts"):
        PooledVecEnv([(eth, cfg), (btc, cfg)], 1)
    with pytest.raises(ValueError, match="one count >= 1 per part"):
        PooledVecEnv([(eth, cfg), (btc, cfg)], [3])
    with pytest.raises(ValueError, match="non-empty"):
        PooledVecEnv([], 4)
    # other knobs may differ per symbol (fees, rules, rewards): the spaces are what must agree
    PooledVecEnv([(eth, cfg), (btc, cfg.replace(fee=0.0, filters=None, reward="dsr"))], 2)


def test_account_split():
    assert split_accounts([3, 3, 2], 64) == [24, 24, 16]
    assert split_accounts([1000, 10, 1], 8) == [6, 1, 1]  # at least one each, taken from the largest
    assert split_accounts([1, 1, 1], 4) == [2, 1, 1]  # ties to the earlier part
    assert split_accounts([5, 7], 2) == [1, 1]
    assert split_accounts([2, 5, 9], 10) == split_accounts([2, 5, 9], 10) and sum(split_accounts([2, 5, 9], 10)) == 10
    for n in range(3, 40):
        counts = split_accounts([1801, 2209, 853], n)
        assert sum(counts) == n and min(counts) >= 1
        quota = np.array([1801, 2209, 853]) * n / (1801 + 2209 + 853)
        assert np.all(np.abs(np.array(counts) - quota) < 1 + 1e-9)
    with pytest.raises(ValueError):
        split_accounts([1, 0], 4)


def test_default_split_follows_the_candidate_starts(frames):
    cfg = EnvConfig(window=8, episode_length=20)
    pool = PooledVecEnv(_parts(frames, cfg), 12)
    starts = [p.engine.starts.size for p in pool.parts]
    assert list(pool.counts) == split_accounts(starts, 12)
    assert PooledVecEnv(_parts(frames, cfg), [1, 5, 2]).counts == (1, 5, 2)


def test_vec_env_api_routes_to_the_right_part(frames):
    cfg = EnvConfig(window=8, episode_length=20, action="levels")
    parts = _parts(frames, cfg)
    pool = PooledVecEnv(parts, [2, 3, 2], seed=0)
    pool.reset()
    assert pool.get_attr("symbol") == list(pool.symbols)
    assert pool.get_attr("symbol", [6, 0, 3, -1]) == ["SOL/USDT", "ETH/USDT", "BTC/USDT", "SOL/USDT"]
    assert pool.get_attr("config", 4) == [parts[1][1]] and pool.has_attr("action_masks")
    assert pool.env_is_wrapped(gymnasium.Wrapper) == [False] * 7
    pool.set_attr("tag", "x", [2])  # a part's accounts share one object: sets it on BTC's part
    assert pool.get_attr("tag", [2, 3, 4]) == ["x"] * 3 and not hasattr(pool.parts[0], "tag")
    with pytest.raises(AttributeError):
        pool.set_attr("config", cfg, 0)
    with pytest.raises(IndexError):
        pool.get_attr("symbol", 7)
    masks = np.stack(pool.env_method("action_masks"))
    np.testing.assert_array_equal(masks, pool.action_masks())
    assert masks.shape == (7, 3) and masks.all()
    np.testing.assert_array_equal(np.stack(pool.env_method("action_masks", indices=[5, 1])), masks[[5, 1]])
    assert pool.render_mode is None
    check_for_correct_spaces(pool, pool.parts[2].observation_space, pool.parts[2].action_space)
    with pytest.raises(ValueError, match="expected 7 action"):
        pool.step(np.zeros(6, np.int64))
    with pytest.raises(RuntimeError, match="reset"):
        PooledVecEnv(parts, 3).step(np.zeros(3, np.int64))
    pool.parts[1].reset()
    with pytest.raises(RuntimeError, match="out of step"):
        pool.step(np.zeros(7, np.int64))
    pool.close()


def test_symbol_in_infos_survives_buffer_reuse_and_wrappers(frames):
    cfg = EnvConfig(window=8, episode_length=5)
    pool = PooledVecEnv(_parts(frames, cfg), 3, seed=0)
    venv = VecMonitor(pool, info_keywords=("symbol",))
    venv.reset()
    a = np.full((3, 1), 0.5, np.float32)
    seen = []
    for _ in range(12):
        _, _, dones, infos = venv.step(a)
        assert [info["symbol"] for info in infos] == list(pool.symbols)
        assert all(set(INFO_FIELDS) | {"symbol"} <= set(info) for info in infos)
        seen += [info["episode"]["symbol"] for info, d in zip(infos, dones) if d]
        infos[0]["extra"] = 1  # marks the info for clearing at its reuse: "symbol" comes back
    assert sorted(seen) == sorted(list(pool.symbols) * 2)
    info = infos[1]
    assert info.pop("symbol") == "BTC/USDT" and info["symbol"] == "BTC/USDT"
    with pytest.raises(KeyError):
        del info["symbol"]
    assert info.copy()["symbol"] == "BTC/USDT" and type(info.copy()) is dict
    plain = PooledVecEnv(_parts(frames, cfg), 3, seed=0, copy_obs=True, copy_infos=True)
    o1 = plain.reset()
    o2, _, _, i2 = plain.step(a)
    o3, _, _, _ = plain.step(a)
    assert type(i2[2]) is dict and i2[2]["symbol"] == "SOL/USDT"
    assert not np.shares_memory(o1, o3) and not np.shares_memory(o2, o3)


class _OneAccountOfPool(gymnasium.Env):
    """Account ``k`` of a pool behind the gymnasium API (the checkers take only gymnasium envs); the other
    accounts hold."""

    def __init__(self, parts, k):
        self.pool, self.k = PooledVecEnv(parts, [1] * len(parts)), k
        self.observation_space, self.action_space = self.pool.observation_space, self.pool.action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.pool.seed(seed)
        return self.pool.reset()[self.k].copy(), self.pool.reset_infos[self.k]

    def step(self, action):
        actions = np.zeros((self.pool.num_envs,) + np.shape(action), dtype=np.asarray(action).dtype)
        actions[self.k] = action
        obs, rew, dones, infos = self.pool.step(actions)
        info = infos[self.k].copy()
        if dones[self.k]:
            truncated = info.pop("TimeLimit.truncated")
            return info.pop("terminal_observation"), float(rew[self.k]), not truncated, truncated, info
        return obs[self.k].copy(), float(rew[self.k]), False, False, info


def test_check_env_on_one_pooled_account(frames):
    parts = _parts(frames, EnvConfig(window=4, episode_length=16))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized Box|render).*")
        gym_check_env(_OneAccountOfPool(parts, 2))
        sb3_check_env(_OneAccountOfPool(parts, 1))


@pytest.fixture
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.usefixtures("_one_thread")
@pytest.mark.parametrize("algo", [PPO, MaskablePPO], ids=["PPO", "MaskablePPO"])
def test_sb3_trains_on_the_pool(frames, algo):
    action = "continuous" if algo is PPO else "levels"
    pool = PooledVecEnv(_parts(frames, EnvConfig(window=8, episode_length=32, action=action)), 6)
    venv = VecMonitor(pool, info_keywords=("symbol",))
    model = algo("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu",
                 policy_kwargs={"net_arch": [16]})
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(total_timesteps=384)
    assert any(not torch.equal(v, model.policy.state_dict()[k]) for k, v in before.items())
    assert len(model.ep_info_buffer) >= 6 and all(e["l"] == 32 for e in model.ep_info_buffer)
    assert {e["symbol"] for e in model.ep_info_buffer} == set(SPANS)
    obs = venv.reset()
    kwargs = {"action_masks": np.stack(venv.env_method("action_masks"))} if algo is MaskablePPO else {}
    action_out, _ = model.predict(obs, deterministic=True, **kwargs)
    assert all(venv.action_space.contains(np.asarray(a)) for a in action_out)
