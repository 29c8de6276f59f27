"""Experiments fail fast and clearly: every section is validated on load, before any data is read or any model
trained; a malformed file names its line and column; the trading rules follow the experiment's symbol."""

from __future__ import annotations

import importlib

import pytest
import yaml

from spotgym.cli import main
from spotgym.risk import RiskConfig
from spotgym.workflows.experiment import ExperimentError, load_experiment

prepare_module = importlib.import_module("spotgym.workflows.prepare")  # the package exports the function


@pytest.fixture
def base(eth_1h_path):
    return {"name": "x", "data": {"path": str(eth_1h_path), "start": "2021-01-01", "end": "2021-03-31"},
            "env": {"action": "levels", "window": 8, "episode_length": 64},
            "agent": {"algo": "ppo", "timesteps": 64, "n_envs": 2, "params": {"n_steps": 32, "batch_size": 64}},
            "tracking": {"wandb": False, "tensorboard": False}}


@pytest.fixture
def no_data(monkeypatch):
    """Any attempt to read bars fails the test: validation must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("bars were loaded before the experiment was validated")
    monkeypatch.setattr(prepare_module, "load_bars", refuse)
    monkeypatch.setattr(prepare_module, "build_frame_with_report", refuse)


def test_malformed_yaml_names_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nagent:\n  algo: ppo\n  params: {n_steps: 64, batch_size\n")
    with pytest.raises(ExperimentError, match=rf"{path}:5:1: invalid YAML: expected ',' or '}}'"):
        load_experiment(path)
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}:5:1: invalid YAML") and "Traceback" not in err
    tabs = tmp_path / "tabs.yaml"
    tabs.write_text("name: t\nagent:\n\talgo: ppo\n")
    with pytest.raises(ExperimentError, match=rf"{tabs}:3:1: invalid YAML: found character '\\t'"):
        load_experiment(tabs)
    with pytest.raises(ExperimentError, match="the value is not valid YAML"):
        load_experiment({"name": "y"}, ["agent.params={n_steps: 1"])


@pytest.mark.parametrize("override, message", [
    ("agent.algo=ppoo", r"agent.algo: unknown algorithm 'ppoo'; known: \[.*'ppo'"),
    ("agent.algo=dqn", None),  # a discrete action space: fine
    ("agent.algo=sac", r"agent.algo: sac needs a Box action space"),
    ("env.action=continuous", None),
    ("predictors={models: [{kind: transformer}]}", r"predictors: unknown predictor kind 'transformer'"),
    ("predictors={models: [{kind: lstm, hiden: 3}]}", r"predictors: unknown lstm predictor key"),
    ("features={indicators: [rsi, nope]}", r"features: unknown indicator 'nope'"),
    ("risk.max_drawdwn=0.1", r"risk: unknown risk rule\(s\) \['max_drawdwn'\]"),
    ("risk.max_drawdown=1.5", r"risk: RiskConfig.max_drawdown must be a finite number in \(0.0, 1.0\]"),
    ("evaluation.criteria={max_drawdown: 2}", r"evaluation.criteria: Criteria.max_drawdown"),
    ("tune.metric=alpha", r"tune.metric: must be one of"),
    ("data.symbol=ETHUSDT", r"data.symbol: symbol 'ETHUSDT' is not of the form BASE/QUOTE"),
    ("data.symbol=PEPE/USDT", r"env.filters: no trading rules known for binance 'PEPE/USDT' offline"),
    ("env.filters={tick_size: 0.1}", None),
])
def test_every_section_is_checked_on_load_before_any_data(base, no_data, override, message):
    if message is None:
        load_experiment(base, [override])
        return
    with pytest.raises(ExperimentError, match=message):
        load_experiment(base, [override])


def test_cli_reports_a_bad_algorithm_in_one_line_before_loading_data(base, no_data, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({**base, "agent": {**base["agent"], "algo": "ppo2"}}))
    for command in (["train", str(path)], ["tune", str(path), "--trials", "1"], ["evaluate", str(path), "--folds", "2"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: agent.algo: unknown algorithm 'ppo2'") and err.count("\n") == 1


def test_risk_rules_reach_the_env_config(base, tmp_path):
    exp = load_experiment(base, ["risk.max_drawdown=0.1", "risk.stop_loss=0.05", f"run.dir={tmp_path / 'r'}"])
    assert exp.risk_config().enabled == ("stop_loss", "max_drawdown")
    assert exp.env_config().risk == RiskConfig(max_drawdown=0.1, stop_loss=0.05)
    assert load_experiment(base).env_config().risk is None


def test_the_trading_rules_follow_the_experiments_symbol(base, eth_1h_path, tmp_path):
    from shared_data import shared_file

    eth = prepare_module.prepare(load_experiment(base))
    assert (eth.rules.symbol, eth.rules.step_size, eth.rules_source) == ("ETH/USDT", 0.0001, "snapshot")
    assert eth.env_config(load_experiment(base)).filters == eth.rules
    sol_file = shared_file("BINANCE_SOLUSDT_1h.csv")
    sol = prepare_module.prepare(load_experiment(base, ["data.symbol=SOL/USDT", f"data.path={sol_file}"]))
    assert (sol.rules.symbol, sol.rules.step_size, sol.rules.min_qty) == ("SOL/USDT", 0.01, 0.01)
    assert sol.frame.symbol == "SOL/USDT"
    with pytest.raises(ExperimentError, match="data.symbol is ETH/USDT but .*BINANCE_SOLUSDT_1h.csv looks like SOL/USDT"):
        prepare_module.prepare(load_experiment(base, [f"data.path={sol_file}"]))
    own = prepare_module.prepare(load_experiment(base, ["env.filters={step_size: 0.5, min_notional: 1}"]))
    assert (own.rules.step_size, own.rules_source) == (0.5, "env.filters")
