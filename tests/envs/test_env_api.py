"""The gymnasium / SB3 contracts of TradingEnv and VecTradingEnv, and the time contract."""

from __future__ import annotations

import copy
import json
import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor, VecNormalize

from spotgym.envs import ENV_ID, INFO_FIELDS, EnvConfig, StepInfo, TradingEnv, VecTradingEnv
from spotgym.features import assert_no_lookahead, build_features

REQUIRED_INFO = {"row", "equity", "cash", "position", "exposure", "fees_paid", "trade"}


def _actions(space, rng, n):
    space.seed(int(rng.integers(2**31)))
    return [space.sample() for _ in range(n)]


@pytest.mark.parametrize("cfg", [
    EnvConfig(episode_length=64),
    EnvConfig(action="levels", obs_mode="dict", episode_length=64, reward="dsr"),
    EnvConfig(action="buy_sell_hold", reward="drawdown"),
], ids=["continuous-box", "levels-dict", "bsh-sequential"])
def test_gymnasium_and_sb3_check_env(eth_small_frame, cfg):
    env = gymnasium.make(ENV_ID, frame=eth_small_frame, config=cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized Box).*")
        gym_check_env(env.unwrapped)
        sb3_check_env(TradingEnv(eth_small_frame, cfg))


class _OneAccountOfVec(gymnasium.Env):
    """One account of a VecTradingEnv behind the gymnasium API, so the checkers can run on the
    vec env's kernels and seeding (SB3's check_env takes only gymnasium envs)."""

    def __init__(self, frame, cfg):
        self.venv = VecTradingEnv(frame, 1, cfg)
        self.observation_space, self.action_space = self.venv.observation_space, self.venv.action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.venv.seed(seed)
        obs = self.venv.reset()
        return self._first(obs), self.venv.reset_infos[0]

    def step(self, action):
        obs, rew, dones, infos = self.venv.step(np.array([action]))
        info = infos[0].copy()
        if dones[0]:
            truncated = info.pop("TimeLimit.truncated")
            return info.pop("terminal_observation"), float(rew[0]), not truncated, truncated, info
        return self._first(obs), float(rew[0]), False, False, info

    @staticmethod
    def _first(obs):
        return {k: v[0].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[0].copy()


@pytest.mark.parametrize("cfg", [EnvConfig(episode_length=16),
                                 EnvConfig(action="buy_sell_hold", obs_mode="dict", episode_length=16)],
                         ids=["continuous-box", "bsh-dict"])
def test_check_env_on_one_vec_account(eth_small_frame, cfg):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(infinity|symmetric and normalized Box|render).*")
        gym_check_env(_OneAccountOfVec(eth_small_frame, cfg))
        sb3_check_env(_OneAccountOfVec(eth_small_frame, cfg))


def test_make_with_keyword_overrides(eth_small_frame):
    env = gymnasium.make(ENV_ID, frame=eth_small_frame, fee=0.0, filters=None, window=8)
    cfg = env.unwrapped.config
    assert cfg.fee == 0.0 and cfg.filters is None and cfg.window == 8
    obs, info = env.reset(seed=1)
    assert obs.shape == (8 * eth_small_frame.n_features + 4,) and obs.dtype == np.float32
    assert REQUIRED_INFO <= set(info)


def test_observation_layout_box_and_dict(eth_small_frame):
    frame = eth_small_frame
    w, f = 16, frame.n_features
    env = TradingEnv(frame, EnvConfig(window=w, episode_length=50, filters=None))
    denv = TradingEnv(frame, EnvConfig(window=w, episode_length=50, filters=None, obs_mode="dict"))
    obs, info = env.reset(seed=4)
    dobs, _ = denv.reset(seed=4)
    rng = np.random.default_rng(0)
    for a in _actions(env.action_space, rng, 30):
        row = info["row"]
        np.testing.assert_array_equal(obs[: w * f], frame.values[row - w + 1: row + 1].ravel())
        exposure, unreal, bars, cash_frac = obs[w * f:]
        assert exposure == pytest.approx(info["exposure"], rel=1e-6, abs=1e-7)
        assert cash_frac == pytest.approx(info["cash"] / info["equity"], rel=1e-6, abs=1e-7)
        assert bars >= 0.0 and (unreal == 0.0) == (info["position"] == 0.0)
        np.testing.assert_array_equal(dobs["features"], obs[: w * f])
        np.testing.assert_array_equal(dobs["account"], obs[w * f:])
        assert denv.observation_space.contains(dobs) and env.observation_space.contains(obs)
        obs, _, _, _, info = env.step(a)
        dobs, *_ = denv.step(a)
    assert env.engine.feature_shape == (w, f)


def test_info_from_reset_and_step(eth_small_frame):
    env = TradingEnv(eth_small_frame, EnvConfig(episode_length=20))
    _, info = env.reset(seed=0)
    assert set(info) == set(INFO_FIELDS) and REQUIRED_INFO <= set(info)
    assert info["equity"] == info["cash"] == 10_000.0 and info["step"] == 0
    _, _, _, _, info = env.step(np.array([1.0], np.float32))
    assert set(info) == set(INFO_FIELDS) and info["trade"] is True and info["step"] == 1
    assert info["price"] == eth_small_frame.close[info["row"]]
    assert all(type(info[k]) is t for k, (_, t) in INFO_FIELDS.items())


def test_reset_option_start_row(eth_small_frame):
    env = TradingEnv(eth_small_frame, EnvConfig(episode_length=20))
    row = int(env.engine.starts[7])
    assert env.reset(options={"start_row": row})[1]["row"] == row
    with pytest.raises(ValueError, match="start_row"):
        env.reset(options={"start_row": 0})  # inside the first window: not a valid start


def test_episodes_start_on_valid_windows_and_stay_in_the_fold(eth_1h_frame):
    frame = eth_1h_frame
    cfg = EnvConfig(window=32, episode_length=100, start_row=10_000, end_row=12_000)
    env = TradingEnv(frame, cfg)
    starts = env.engine.starts
    assert starts.min() >= 10_000 and starts.max() + 100 <= 11_999
    for s in starts[:: 97]:
        assert frame.valid[s - 31: s + 101].all()
    # a frame whose first rows are warm-up: episodes never start inside it
    env = TradingEnv(frame.slice(0, 3000), EnvConfig(window=32, episode_length=100))
    assert env.engine.starts.min() == frame.first_valid_row + 31
    for seed in range(5):
        assert env.reset(seed=seed)[1]["row"] in set(env.engine.starts.tolist())


def test_invalid_rows_split_training_episodes_but_not_the_sequential_pass(make_frame):
    valid = np.ones(40, bool)
    valid[20] = False
    frame = make_frame(np.full(40, 100.0), np.full(40, 100.0), valid=valid)
    env = TradingEnv(frame, EnvConfig(window=4, episode_length=5))
    for s in env.engine.starts:  # no window of any step includes row 20
        assert not (s - 3 <= 20 <= s + 5)
    seq = TradingEnv(frame, EnvConfig(window=4))
    _, info = seq.reset()
    # the pass runs to the end of the data, through the masked rows (see test_masked_rows.py)
    assert info["row"] == 3 and seq.engine.seq_end == 39
    with pytest.raises(ValueError, match="episode_length"):
        TradingEnv(frame, EnvConfig(window=4, episode_length=30))


def test_sequential_pass_covers_the_fold_then_truncates(eth_small_frame):
    n = len(eth_small_frame)
    env = TradingEnv(eth_small_frame, EnvConfig(window=8, end_row=n - 100))
    _, info = env.reset()
    rows = [info["row"]]
    while True:
        _, _, term, trunc, info = env.step(np.array([0.5], np.float32))
        rows.append(info["row"])
        if term or trunc:
            break
    assert trunc and not term and rows == list(range(7, n - 100))


def test_seeded_reruns_are_identical(eth_small_frame):
    cfg = EnvConfig(episode_length=30, action="levels")

    def run_single(seed):
        env = TradingEnv(eth_small_frame, cfg)
        obs, _ = env.reset(seed=seed)
        out, rng = [obs], np.random.default_rng(9)
        for _ in range(100):
            obs, r, term, trunc, _ = env.step(int(rng.integers(3)))
            out.append(np.append(obs, r))
            if term or trunc:
                out.append(env.reset()[0])
        return np.concatenate(out)

    def run_vec(seed):
        venv = VecTradingEnv(eth_small_frame, 5, cfg, seed=seed)
        out, rng = [venv.reset().copy()], np.random.default_rng(9)
        for _ in range(100):
            obs, r, d, _ = venv.step(rng.integers(3, size=5))
            out += [obs.copy(), r, d]
        return np.concatenate([np.ravel(x) for x in out])

    np.testing.assert_array_equal(run_single(3), run_single(3))
    assert not np.array_equal(run_single(3), run_single(4))
    np.testing.assert_array_equal(run_vec(3), run_vec(3))
    assert not np.array_equal(run_vec(3), run_vec(4))


@pytest.mark.parametrize("action", ["continuous", "buy_sell_hold"])
def test_vec_n1_equals_trading_env_step_for_step(eth_small_frame, action):
    cfg = EnvConfig(action=action, episode_length=25, reward="dsr", ruin_floor=0.5)
    env = TradingEnv(eth_small_frame, cfg)
    venv = VecTradingEnv(eth_small_frame, 1, cfg, seed=11)
    obs, info = env.reset(seed=11)
    vobs = venv.reset()
    np.testing.assert_array_equal(vobs[0], obs)
    assert venv.reset_infos[0] == info
    rng = np.random.default_rng(5)
    episodes = 0
    for a in _actions(env.action_space, rng, 120):
        obs, r, term, trunc, info = env.step(a)
        vobs, vr, vd, vinfos = venv.step(np.array([a]))
        assert vr[0] == r and vd[0] == (term or trunc)
        assert vinfos[0].copy() == info | ({"terminal_observation": vinfos[0]["terminal_observation"],
                                            "TimeLimit.truncated": trunc and not term} if vd[0] else {})
        if term or trunc:
            episodes += 1
            np.testing.assert_array_equal(vinfos[0]["terminal_observation"], obs)
            obs, info = env.reset()
            assert venv.reset_infos[0] == info
        np.testing.assert_array_equal(vobs[0], obs)
    assert episodes >= 4


def test_vec_auto_reset_and_terminal_observation(eth_small_frame):
    venv = VecTradingEnv(eth_small_frame, 4, EnvConfig(episode_length=10, obs_mode="dict"), seed=0)
    obs = venv.reset()
    assert obs["features"].shape == (4, 32 * eth_small_frame.n_features) and obs["account"].shape == (4, 4)
    for k in range(25):
        obs, rew, dones, infos = venv.step(np.full((4, 1), 0.7, np.float32))
        assert isinstance(infos, list) and len(infos) == 4 and dones.dtype == bool
        for i, info in enumerate(infos):
            assert isinstance(info, dict) and REQUIRED_INFO <= set(info)
            assert ("terminal_observation" in info) == dones[i] == ((k + 1) % 10 == 0)
            if dones[i]:
                assert info["TimeLimit.truncated"] is True and info["step"] == 10
                assert set(info["terminal_observation"]) == {"features", "account"}
                assert venv.reset_infos[i]["step"] == 0 and obs["account"][i][0] == 0.0  # fresh, flat
            else:
                assert "TimeLimit.truncated" not in info


def test_vec_ruin_is_termination(make_frame):
    frame = make_frame(np.full(30, 100.0), np.r_[np.full(5, 100.0), np.full(25, 50.0)])
    venv = VecTradingEnv(frame, 2, EnvConfig(window=2, ruin_floor=0.8, filters=None), seed=0)
    venv.reset()
    for _ in range(4):
        _, _, dones, infos = venv.step(np.ones((2, 1), np.float32))
    assert dones.all() and all(info["TimeLimit.truncated"] is False for info in infos)


def test_step_info_behaves_like_a_dict(eth_small_frame):
    venv = VecTradingEnv(eth_small_frame, 3, EnvConfig(episode_length=50), seed=0)
    venv.reset()
    _, _, _, infos = venv.step(np.ones((3, 1), np.float32))
    info = infos[1]
    assert isinstance(info, StepInfo) and isinstance(info, dict)
    snap = info.copy()
    assert type(snap) is dict and set(snap) == set(INFO_FIELDS) and snap == info
    assert dict(info) == snap and {**info} == snap and json.loads(json.dumps(info.copy())) == snap
    assert pickle.loads(pickle.dumps(info)) == snap and copy.deepcopy(info) == snap
    assert info.get("equity") == snap["equity"] and info.get("nope", 3) == 3 and "row" in info
    info["extra"] = 1
    assert info["extra"] == 1 and info.copy()["extra"] == 1
    _, _, _, infos2 = venv.step(np.ones((3, 1), np.float32))
    assert infos2 is not infos and infos[1]["row"] == snap["row"]  # valid until the next-but-one step
    _, _, _, infos3 = venv.step(np.ones((3, 1), np.float32))
    assert infos3 is infos and "extra" not in infos3[1]  # the buffer set is reused, extras cleared
    plain = VecTradingEnv(eth_small_frame, 3, EnvConfig(episode_length=50), seed=0, copy_infos=True, copy_obs=True)
    plain.reset()
    o1, _, _, i1 = plain.step(np.ones((3, 1), np.float32))
    o2, _, _, _ = plain.step(np.ones((3, 1), np.float32))
    o3, _, _, _ = plain.step(np.ones((3, 1), np.float32))
    assert type(i1[0]) is dict and o1 is not o3 and not np.shares_memory(o1, o3)


def test_sb3_vec_wrappers(eth_small_frame):
    venv = VecTradingEnv(eth_small_frame, 4, EnvConfig(episode_length=8), seed=0)
    wrapped = VecNormalize(VecMonitor(VecCheckNan(venv, raise_exception=True), info_keywords=("equity",)))
    wrapped.reset()
    episodes = []
    for _ in range(20):
        _, _, dones, infos = wrapped.step(np.random.default_rng(0).random((4, 1)).astype(np.float32))
        episodes += [info["episode"] for info, d in zip(infos, dones) if d]
    assert len(episodes) == 8 and all(ep["l"] == 8 and ep["equity"] > 0 for ep in episodes)
    assert venv.env_is_wrapped(gymnasium.Wrapper) == [False] * 4
    assert venv.get_attr("config", [0, 2]) == [venv.config, venv.config]


def test_action_masks(make_frame, eth_small_frame):
    frame = make_frame(np.full(10, 100.0), np.full(10, 100.0))
    env = TradingEnv(frame, EnvConfig(window=2, action="buy_sell_hold", initial_cash=1000.0, slippage_bps=0.0))
    env.reset()
    assert env.action_masks().tolist() == [True, True, False]  # nothing to sell
    env.step(1)
    assert env.action_masks().tolist() == [True, False, True]  # no cash left to buy with
    tiny = TradingEnv(frame, EnvConfig(window=2, action="buy_sell_hold", initial_cash=4.0))
    tiny.reset()
    assert tiny.action_masks().tolist() == [True, False, False]  # 4 USDT < min notional
    lv = TradingEnv(frame, EnvConfig(window=2, action="levels", levels=(0.0, 0.0004, 1.0), initial_cash=10_000.0))
    lv.reset()
    assert lv.action_masks().tolist() == [True, False, True]  # 0.0004 * 10k = 4 USDT order
    venv = VecTradingEnv(eth_small_frame, 3, EnvConfig(action="levels", episode_length=20), seed=0)
    venv.reset()
    masks = np.stack(venv.env_method("action_masks"))
    assert masks.shape == (3, 3) and masks.all()
    with pytest.raises(NotImplementedError):
        TradingEnv(frame, EnvConfig(window=2)).action_masks()


def test_live_seam_fill_then_advance_equals_step(eth_small_frame):
    cfg = EnvConfig(action="continuous", episode_length=200, slippage_bps=3.0, impact_bps=20.0)
    sim, seam = TradingEnv(eth_small_frame, cfg), TradingEnv(eth_small_frame, cfg)
    sim.reset(seed=2)
    seam.reset(seed=2)
    rng = np.random.default_rng(3)
    for a in rng.random((200, 1)).astype(np.float32):
        o1, r1, te1, tr1, i1 = sim.step(a)
        qty, price, fee = seam.simulate_fill(a)  # a live runner asks its broker instead
        if qty:
            seam.apply_fill(qty, price, fee)
        o2, r2, te2, tr2, i2 = seam.advance()
        np.testing.assert_array_equal(o1, o2)
        assert i2.pop("decidable") is True  # every row of this real slice can carry a decision
        assert (r1, te1, tr1, i1) == (r2, te2, tr2, i2)
    assert tr1


def test_live_seam_broker_fills_and_validation(make_frame):
    frame = make_frame(np.full(10, 100.0), np.full(10, 100.0))
    env = TradingEnv(frame, EnvConfig(window=2, initial_cash=1000.0, fee=0.001))
    env.reset()
    qty = env.plan_order(np.array([0.5]))  # sized at the last close, filters applied, no slippage
    assert qty == pytest.approx(np.floor(500.0 / (100.0 * 1.0005) / 1e-4) * 1e-4)
    env.apply_fill(2.0, 100.5, 0.2)  # two partial fills reported by a broker
    env.apply_fill(2.9, 100.0, 0.29)
    _, r, _, _, info = env.advance()
    assert info["trade"] and info["fill_qty"] == pytest.approx(4.9)
    assert info["fill_price"] == pytest.approx((2.0 * 100.5 + 2.9 * 100.0) / 4.9)
    assert info["cash"] == pytest.approx(1000.0 - 201.0 - 290.0 - 0.49) and info["fee"] == pytest.approx(0.49)
    with pytest.raises(ValueError, match="shorting"):
        env.apply_fill(-5.0, 100.0, 0.0)
    with pytest.raises(ValueError, match="cash"):
        env.apply_fill(10.0, 100.0, 0.0)
    equity = info["cash"] + 4.9 * 100.0
    want = np.floor((0.5 * equity - 490.0) / (100.0 * 1.0005) / 1e-4 + 1e-9) * 1e-4
    assert env.plan_order(np.array([0.5])) == pytest.approx(want, abs=1e-12)
    assert env.plan_order(np.array([0.495])) == 0.0  # a 0.4 USDT order: below min notional


def test_growing_frame_matches_the_full_frame(eth_small_frame):
    frame = eth_small_frame
    cfg = EnvConfig(window=8, action="buy_sell_hold")
    full = TradingEnv(frame, cfg)
    live = TradingEnv(frame.slice(0, 20), cfg, live=True)
    o_full, _ = full.reset()
    o_live, _ = live.reset()
    np.testing.assert_array_equal(o_full, o_live)
    rng = np.random.default_rng(0)
    for _ in range(300):
        if live.row + 1 >= len(live.market):  # the next bar closes: the feed appends it
            live.append_rows(frame.slice(live.row + 1, live.row + 2))
        a = int(rng.integers(3))
        out_full, out_live = full.step(a), live.step(a)
        np.testing.assert_array_equal(out_full[0], out_live[0])
        assert out_full[1:] == out_live[1:]
    assert len(live.market) == live.row + 1 < len(frame)
    with pytest.raises(RuntimeError, match="append_rows"):
        live.step(0)
    with pytest.raises(ValueError, match="after the last row"):
        live.append_rows(frame.slice(0, 1))


def test_observations_have_no_lookahead(eth_1h_bars):
    bars = eth_1h_bars.iloc[:1400]
    rng = np.random.default_rng(0)
    script = rng.random(len(bars)).astype(np.float32)  # the action on row t is a fixed function of t

    def observations(b):
        frame = build_features(b)
        env = TradingEnv(frame, EnvConfig(window=16, slippage_bps=2.0, impact_bps=10.0))
        out = np.full((len(b), env.engine.obs_dim), np.nan)
        obs, info = env.reset()
        out[info["row"]] = obs
        while True:
            obs, _, term, trunc, info = env.step(script[info["row"]: info["row"] + 1])
            out[info["row"]] = obs
            if term or trunc:
                return out

    cuts = assert_no_lookahead(observations, bars, n_cuts=3, seed=1)
    assert len(cuts) == 3
