"""The ensemble decider's arithmetic (targets, combinations, actions back), its config's errors, the rule members,
and the validation callback's choice between checkpoints and cash."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spotgym.agents import EnsembleActor, EnsembleConfig, cash_actor, rule_actor, target_actor
from spotgym.agents.baselines import macd_rule
from spotgym.agents.callbacks import ValidationCallback, beats_cash, validation_line
from spotgym.agents.ensemble import action_target, combine_targets, target_action
from spotgym.backtest import run_policy
from spotgym.envs import EnvConfig

LEVELS = EnvConfig(action="levels", levels=(0.0, 0.5, 1.0))
BSH = EnvConfig(action="buy_sell_hold", trade_fraction=0.5)
CONT = EnvConfig(action="continuous")


def test_combinations_by_hand():
    t = [0.0, 0.5, 1.0, 1.0]
    assert combine_targets(t, "mean") == 0.625
    assert combine_targets(t, "vote") == 0.5  # the lower median of an even count
    assert combine_targets([0, 1, 1], "vote") == 1.0 and combine_targets([0, 0, 1], "vote") == 0.0
    std = float(np.std(t))
    assert combine_targets(t, "confidence") == pytest.approx(0.625 * (1 - 2 * std))
    assert combine_targets([1.0, 1.0, 1.0], "confidence") == 1.0  # unanimous: the mean
    assert combine_targets([0.0, 1.0], "confidence") == 0.0  # half flat, half in: no position
    with pytest.raises(ValueError, match="combine must be one of"):
        combine_targets(t, "median")


def test_actions_and_targets_both_ways():
    assert action_target(2, LEVELS, 0.3) == 1.0 and action_target(np.array([0]), LEVELS, 0.3) == 0.0
    assert action_target(np.array([1.7], np.float32), CONT, 0.0) == 1.0  # clipped to [0, 1]
    assert action_target(1, BSH, 0.3) == 0.8 and action_target(2, BSH, 0.3) == 0.0 and action_target(0, BSH, 0.3) == 0.3
    assert target_action(0.6, LEVELS, 0.0) == 1 and target_action(0.8, LEVELS, 0.0) == 2
    assert target_action(0.2, BSH, 0.5) == 2 and target_action(0.6, BSH, 0.5) == 0 and target_action(0.9, BSH, 0.5) == 1
    np.testing.assert_array_equal(target_action(0.25, CONT, 0.0), np.array([0.25], np.float32))


def test_config_errors_name_the_key():
    good = EnsembleConfig.from_mapping({"members": [{"seed": 1}, {"algo": "a2c"}, {"rule": "macd_rule"}],
                                        "combine": "vote"})
    assert [m.name for m in good.members] == ["agent_s1", "a2c_1", "macd_rule"] and good.combine == "vote"
    for raw, message in [
        ({"members": [{"seed": 1}]}, r"members: a list of at least two members"),
        ({"members": [{"seed": 1}, {"rule": "sma"}]}, r"members\[1\]\.rule: one of"),
        ({"members": [{"seed": 1}, {"sed": 2}]}, r"members\[1\]\.sed: unknown key"),
        ({"members": [{"rule": "macd_rule"}, {"rule": "rsi_rule"}]}, r"at least one trained member"),
        ({"members": [{"seed": 1}, {"seed": 1}]}, r"members\[1\]\.name: 'agent_s1' is used twice"),
        ({"members": [{"seed": 1}, {"seed": 2}], "combine": "avg"}, r"combine: one of"),
        ({"members": [{"seed": 1}, {"rule": "macd_rule", "seed": 2}]}, r"a rule member takes only 'rule'"),
    ]:
        with pytest.raises(ValueError, match=message):
            EnsembleConfig.from_mapping(raw)


def test_rule_member_reads_the_envs_own_market(eth_1h_path):
    from spotgym.data import load_bars
    from spotgym.features import build_features

    bars = load_bars(eth_1h_path, start="2023-01-01", end="2023-03-31")
    frame = build_features(bars)
    rows = range(frame.first_valid_row + 8, len(frame))
    cfg = EnvConfig(action="continuous", window=8)
    # the rule as an ensemble member gives the baseline's fills exactly
    direct = run_policy(frame, cfg, rows, target_actor(macd_rule(bars)))
    member = run_policy(frame, cfg, rows, rule_actor("macd_rule", cfg))
    pd.testing.assert_frame_equal(direct.trades, member.trades)
    # an ensemble of that rule and cash, combined by mean, holds half of the rule's position
    half = run_policy(frame, cfg, rows, EnsembleActor([("macd", rule_actor("macd_rule", cfg)),
                                                       ("cash", cash_actor(cfg))], cfg, "mean"))
    wanted = 0.5 * macd_rule(bars)[list(rows)[:-1]]
    held = half.decisions["exposure"].to_numpy()
    assert len(half.trades) > 10
    assert np.abs(held[wanted == 0.0]).max() == 0.0
    assert np.abs(held[wanted == 0.5] - 0.5).max() < 0.05  # the half drifts with the price between trades


class _Model:
    def __init__(self) -> None:
        self.saved: list[int] = []
        self.logger = type("L", (), {"record": lambda *a, **k: None, "dump": lambda *a, **k: None})()
        self.num_timesteps = 0

    def get_env(self):
        return None

    def save(self, path) -> None:
        self.saved.append(self.num_timesteps)


@pytest.mark.parametrize("returns, kept, found", [
    ([-0.02, 0.01, -0.01, 0.03], [100, 200, 400], True),  # the first, then only winners that beat the kept one
    ([-0.05, -0.01, -0.03], [100, 200], False),  # none beats cash: the best loser is saved, the run holds cash
    ([0.04, 0.01], [100], True),
])
def test_validation_keeps_only_checkpoints_that_beat_cash(tmp_path: Path, returns, kept, found):
    sharpe = {-0.05: -2.0, -0.03: -1.5, -0.02: 0.5, -0.01: -0.1, 0.01: 0.2, 0.03: 0.9, 0.04: 1.0}
    seq = iter(returns)

    def evaluate(model):
        r = next(seq)
        return {"total_return": r, "sharpe": sharpe[r], "turnover_annual": 12.0, "fees_paid": 30.0, "n_trades": 4,
                "max_drawdown": 0.1}

    model = _Model()
    cb = ValidationCallback(evaluate, 100, tmp_path / "model.zip")
    cb.init_callback(model)
    for k in range(len(returns)):
        model.num_timesteps = cb.num_timesteps = 100 * (k + 1)
        cb.run_evaluation()
    assert model.saved == kept and cb.found_beats_cash is found
    assert [h["beats_cash"] for h in cb.history] == [r > 0 for r in returns]


def test_beats_cash_and_the_log_line():
    assert beats_cash({"total_return": 0.001}) and not beats_cash({"total_return": 0.0})
    assert not beats_cash({"total_return": math.nan}) and not beats_cash(None)
    line = validation_line(25_000, {"total_return": -0.034, "sharpe": -0.83, "max_drawdown": 0.12,
                                    "turnover_annual": 460.4, "fees_paid": 5941.2, "n_trades": 310}, False)
    assert line == ("val @ 25,000: return -3.4 %, Sharpe -0.83, max DD 12.0 %, turnover 460x/yr, fees 5,941, "
                    "310 trades (worse than cash)")
