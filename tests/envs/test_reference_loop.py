"""An independent plain-Python replay of the env's rules on the real ETH/USDT 1h data.

Nothing here imports the kernels: the reference is written from the documented rules (fill at
the next open, slippage and tick against the trader, fee on the notional, filters, dust rule,
mark at the next close) and must match the env's equity at every step to 1e-9 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from spotgym.envs import EnvConfig, TradingEnv, VecTradingEnv

# Binance's ETH/USDT spot rules, written out here (not read from spotgym) so the reference stays independent
ETH_USDT_RULES = {"tick_size": 0.01, "step_size": 0.0001, "min_qty": 0.0001, "min_notional": 5.0}


class ReferenceAccount:
    """Plain-Python spot account following the rules in the EnvConfig / TradingRules docs."""

    def __init__(self, cfg: EnvConfig):
        self.cfg = cfg
        if cfg.filters == "venue":  # the frame is ETH/USDT: the venue's rules are Binance's
            rules = ETH_USDT_RULES
        elif cfg.filters is None:
            rules = dict.fromkeys(ETH_USDT_RULES, 0.0)
        else:
            rules = {k: getattr(cfg.filters, k) for k in ETH_USDT_RULES}
        self.tick, self.step, self.min_qty, self.min_notional = (rules[k] for k in ETH_USDT_RULES)
        self.cash = cfg.initial_cash
        self.units = 0.0
        self.fees = 0.0
        self.equity = cfg.initial_cash

    # -- rounding helpers (tolerance: 1e-9 of a step/tick, as documented)
    def _floor(self, x, step):
        return x if step <= 0 else math.floor(x / step + 1e-9) * step

    def _ceil(self, x, step):
        return x if step <= 0 else math.ceil(x / step - 1e-9) * step

    def _price(self, open_px, slip_bps, buy):
        s = slip_bps / 10_000.0
        return self._ceil(open_px * (1 + s), self.tick) if buy else self._floor(open_px * (1 - s), self.tick)

    def _size(self, target, price, buy):
        """Quote-side sizing: after the trade, value held = target x (equity - fee)."""
        fee = self.cfg.fee
        value = self.units * price
        total = self.cash + value
        if buy:
            spend = (target * total - value) / (1 + target * fee)  # notional bought
            return max(spend / price, 0.0)
        receive = (value - target * total) / (1 - target * fee)  # notional sold
        return max(receive / price, 0.0)

    def target_of(self, action, open_px):
        kind = self.cfg.action
        if kind == "continuous":
            return float(action), False
        if kind == "levels":
            return self.cfg.levels[int(action)], False
        if int(action) == 0:
            return None, True
        total = self.cash + self.units * open_px
        current = self.units * open_px / total
        if int(action) == 1:
            return min(1.0, current + self.cfg.trade_fraction), False
        return max(0.0, current - self.cfg.trade_fraction), False

    def trade(self, action, open_px, volume):
        target, hold = self.target_of(action, open_px)
        if hold:
            return
        target = min(max(target, 0.0), 1.0)
        total = self.cash + self.units * open_px
        current = self.units * open_px / total
        if target == current or abs(target - current) < self.cfg.deadband:
            return
        buy = target > current
        price = self._price(open_px, self.cfg.slippage_bps, buy)
        qty = self._size(target, price, buy)
        if qty <= 0:
            return
        if self.cfg.impact_bps > 0 and volume > 0:
            price = self._price(open_px, self.cfg.slippage_bps + self.cfg.impact_bps * qty / volume, buy)
            qty = self._size(target, price, buy)
        if self.cfg.max_participation:
            qty = min(qty, self.cfg.max_participation * volume)
        fee = self.cfg.fee
        if buy:
            qty = min(qty, self.cash / (price * (1 + fee)))
            if self.step > 0:
                n_steps = math.floor(qty / self.step + 1e-9)
                qty = n_steps * self.step
                if qty * price * (1 + fee) > self.cash * (1 + 1e-12):
                    qty = (n_steps - 1) * self.step
        elif target <= 0 or qty >= self.units:
            qty = self.units
        else:
            qty = min(self._floor(qty, self.step), self.units)
            left = self.units - qty
            if left < self.min_qty or left * price < self.min_notional:
                qty = self.units
        if qty <= 0 or qty < self.min_qty or qty * price < self.min_notional:
            return
        paid = qty * price * fee
        self.fees += paid
        if buy:
            self.cash -= qty * price + paid
            if -1e-9 * (qty * price + paid) < self.cash < 0:
                self.cash = 0.0
            self.units += qty
        else:
            self.cash += qty * price - paid
            self.units -= qty
            if -1e-12 * (self.units + qty) < self.units < 0:
                self.units = 0.0

    def mark(self, close_px):
        new = self.cash + self.units * close_px
        r = math.log(new / self.equity)
        self.equity = new
        return r


CONFIGS = {
    "continuous-binance": EnvConfig(action="continuous", slippage_bps=5.0, fee=0.001, episode_length=600),
    "levels-impact": EnvConfig(action="levels", levels=(0.0, 0.3, 0.7, 1.0), slippage_bps=2.0, impact_bps=50.0,
                               max_participation=0.01, initial_cash=250_000.0, episode_length=600),
    "bsh-fraction": EnvConfig(action="buy_sell_hold", trade_fraction=0.4, fee=0.00075, slippage_bps=1.0,
                              initial_cash=300.0, episode_length=600),
    "continuous-nofilters-deadband": EnvConfig(filters=None, deadband=0.05, slippage_bps=3.0, episode_length=600),
}


def _random_actions(cfg, rng, n):
    if cfg.action == "continuous":
        # mostly extremes and a few small moves, so that rejects and dust both happen
        a = rng.random(n)
        a[rng.random(n) < 0.3] = 0.0
        a[rng.random(n) < 0.3] = 1.0
        small = rng.random(n) < 0.2
        a[small] = rng.random(small.sum()) * 0.002
        return a.astype(np.float32)
    n_actions = len(cfg.levels) if cfg.action == "levels" else 3
    return rng.integers(0, n_actions, size=n)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_env_matches_reference_every_step(eth_1h_frame, name):
    cfg = CONFIGS[name]
    env = TradingEnv(eth_1h_frame, cfg)
    rng = np.random.default_rng(7)
    opens, closes, vols = eth_1h_frame.open, eth_1h_frame.close, eth_1h_frame.volume
    trades = 0
    for episode in range(3):
        _, info = env.reset(seed=100 + episode)
        ref = ReferenceAccount(cfg)
        row = info["row"]
        total = 0.0
        for k, a in enumerate(_random_actions(cfg, rng, cfg.episode_length)):
            _, r, term, trunc, info = env.step(a)
            act = float(a) if cfg.action == "continuous" else int(a)
            ref.trade(act, opens[row + 1], vols[row + 1])
            ref_r = ref.mark(closes[row + 1])
            row += 1
            assert info["row"] == row
            assert info["equity"] == pytest.approx(ref.equity, rel=1e-9), (episode, k)
            assert info["cash"] == pytest.approx(ref.cash, rel=1e-9, abs=1e-9 * ref.equity)
            assert info["position"] == pytest.approx(ref.units, rel=1e-9, abs=1e-12)
            assert info["fees_paid"] == pytest.approx(ref.fees, rel=1e-9, abs=1e-12)
            assert r == pytest.approx(ref_r, rel=1e-9, abs=1e-12)
            assert info["cash"] >= 0.0 and info["position"] >= 0.0
            trades += info["trade"]
            total += r
            if term or trunc:
                break
        assert trunc and k == cfg.episode_length - 1
        # the log-reward invariant: summed rewards = log(final / initial equity)
        assert total == pytest.approx(math.log(info["equity"] / cfg.initial_cash), abs=1e-9)
    assert trades > 50


def test_vec_env_matches_reference_in_every_account(eth_1h_frame):
    cfg = CONFIGS["continuous-binance"].replace(episode_length=200)
    n = 8
    venv = VecTradingEnv(eth_1h_frame, n, cfg, seed=3)
    venv.reset()
    refs = [ReferenceAccount(cfg) for _ in range(n)]
    rows = venv.rows
    rng = np.random.default_rng(1)
    for k in range(cfg.episode_length):
        acts = _random_actions(cfg, rng, n).reshape(n, 1)
        _, rew, dones, infos = venv.step(acts)
        for i, ref in enumerate(refs):
            ref.trade(float(acts[i, 0]), eth_1h_frame.open[rows[i] + 1], eth_1h_frame.volume[rows[i] + 1])
            assert rew[i] == pytest.approx(ref.mark(eth_1h_frame.close[rows[i] + 1]), rel=1e-9, abs=1e-12)
            assert infos[i]["equity"] == pytest.approx(ref.equity, rel=1e-9)
        rows += 1
        assert dones.all() == (k == cfg.episode_length - 1)
