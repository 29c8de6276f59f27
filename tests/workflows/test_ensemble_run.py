"""An ensemble run end to end on real data with a tiny budget: two PPO members trained in parallel processes and a
rule member, saved as one run, validated as one actor, backtested; every ensemble decision is the combination of
what the members, loaded on their own, decide on the same observation."""

from __future__ import annotations

import json

import pytest
import yaml

from spotgym.agents import EnsembleActor, load_model, model_actor, rule_actor
from spotgym.agents.ensemble import action_target, combine_targets, target_action
from spotgym.backtest import run_policy
from spotgym.cli import main
from spotgym.workflows import prepare
from spotgym.workflows.experiment import load_experiment
from spotgym.workflows.prepare import env_rows_config
from spotgym.workflows.train import load_run_actor

TINY = ["agent.timesteps=256", "agent.n_envs=4", "agent.eval_every=128", "agent.params={n_steps: 32, batch_size: 64}",
        "tracking.wandb=false", "tracking.tensorboard=false"]


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory, eth_1h_path):
    root = tmp_path_factory.mktemp("ens")
    path = root / "ens.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ens", "seed": 5,
        "data": {"path": str(eth_1h_path), "start": "2021-01-01", "end": "2021-04-30T23:00"},
        "env": {"action": "levels", "window": 8, "episode_length": 96},
        "agent": {"algo": "ppo", "ensemble": {"members": [{"seed": 1}, {"seed": 2}, {"rule": "macd_rule"}],
                                              "combine": "mean", "workers": 2}},
        "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
    }))
    run = root / "run"
    assert main(["train", str(path), "--quiet", *[f"--set={s}" for s in TINY], f"--set=run.dir={run}"]) == 0
    return run


def test_members_are_saved_in_one_run_and_validated_as_one(ensemble_run):
    run = ensemble_run
    assert (run / "members" / "agent_s1" / "model.zip").is_file() and (run / "members" / "agent_s2" / "model.zip").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["members"]) == {"agent_s1", "agent_s2", "macd_rule"}
    assert metrics["members"]["macd_rule"] == {"rule": "macd_rule"}
    for name, seed in (("agent_s1", 1), ("agent_s2", 2)):
        member = metrics["members"][name]
        assert member["seed"] == seed and member["timesteps"] == 256 and len(member["history"]) == 2
    assert metrics["selected"] in ("ensemble", "cash") and metrics["selected"] == ("ensemble" if metrics["beats_cash"]
                                                                                  else "cash")
    assert metrics["best"]["val"]["n_bars"] > 100
    # the two members differ (different seeds): their validation histories are not the same
    assert metrics["members"]["agent_s1"]["history"] != metrics["members"]["agent_s2"]["history"]


def test_every_ensemble_decision_combines_the_members(ensemble_run):
    run = ensemble_run
    exp = load_experiment(run / "config.yaml")
    prepared = prepare(exp, progress=False)
    rows = prepared.folds[-1].test
    cfg = env_rows_config(exp, prepared, rows, training=False)
    actor = load_run_actor(run, exp, cfg, checkpoint=True)
    assert isinstance(actor, EnsembleActor) and [n for n, _ in actor.members] == ["agent_s1", "agent_s2", "macd_rule"]
    members = [model_actor(load_model(run / "members" / name, "ppo")) for name in ("agent_s1", "agent_s2")]
    members.append(rule_actor("macd_rule", cfg))
    checked = []

    def checking(obs, info, env):
        action = actor(obs, info, env)
        targets = [action_target(m(obs, info, env), cfg, info["exposure"]) for m in members]
        assert action == target_action(combine_targets(targets, "mean"), cfg, info["exposure"])
        checked.append(len(set(targets)) > 1)
        return action

    result = run_policy(prepared.frame, cfg, rows, checking)
    assert len(checked) == len(rows) - 1 and any(checked)  # the members disagree somewhere
    assert len(result.decisions) == len(checked)
