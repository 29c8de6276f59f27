"""spotgym tune: the space parser, default spaces, two worker processes on SQLite and on a real PostgreSQL
server, pruning, resume after a killed worker, the report, retrain-best. Tiny budgets on real ETH/USDT 1h."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from spotgym.cli import main
from spotgym.workflows.experiment import ExperimentError, apply_values, load_experiment
from spotgym.workflows.search_space import DEFAULT_SPACES, suggest_values
from spotgym.workflows.tune import TuneError, decode_returns, make_storage, tune, tuning_fingerprint

SPACE = {
    "agent.params.learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "env.window": {"type": "categorical", "choices": [8, 16]},
    "env.levels": [[0.0, 1.0], [0.0, 0.5, 1.0]],
}


def experiment(eth_1h_path, **tune_extra) -> dict:
    return {
        "name": "tune-tiny",
        "seed": 5,
        "data": {"path": str(eth_1h_path), "start": "2021-01-01", "end": "2021-04-30T23:00"},
        "env": {"action": "levels", "window": 8, "episode_length": 128, "fee": 0.001},
        "agent": {"algo": "ppo", "timesteps": 256, "n_envs": 2, "eval_every": 128,
                  "params": {"n_steps": 64, "batch_size": 64}},
        "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
        "tracking": {"wandb": False, "tensorboard": False},
        "tune": {"space": SPACE, "pruner": "none", **tune_extra},
    }


@pytest.fixture(scope="module")
def exp_file(tmp_path_factory, eth_1h_path):
    path = tmp_path_factory.mktemp("tune-exp") / "tiny.yaml"
    path.write_text(yaml.safe_dump(experiment(eth_1h_path)))
    return path


def finished_trials(study) -> list:
    return [t for t in study.get_trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


# --------------------------------------------------------------------------------------------------
# The tune: section
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tune_section", "message"), [
    ({"metrc": "sharpe"}, r"tune\.metrc: unknown key"),
    ({"metric": "alpha"}, r"tune\.metric: must be one of"),
    ({"direction": "up"}, r"tune\.direction"),
    ({"space": {"env.fee": {"type": "float", "low": 0.0, "high": 0.01}}}, r"tune\.space\.env\.fee: env\.fee stays fixed"),
    ({"space": {"features.indicators": [["rsi"]]}}, r"tune\.space\.features\.indicators: cannot search"),
    ({"space": {"agent.algo": ["ppo", "a2c"]}}, r"tune\.space\.agent\.algo: cannot search"),
    ({"space": {"env.windw": [8, 16]}}, r"tune\.space\.env\.windw: unknown env key"),
    ({"space": {"agent.params.gamma": {"type": "gauss"}}}, r"tune\.space\.agent\.params\.gamma\.type"),
    ({"space": {"agent.params.gamma": {"type": "float", "low": 0.99, "high": 0.9}}}, r"low must be < high"),
    ({"space": {"agent.params.gamma": {"type": "float", "low": 0.9}}}, r"gamma\.high: required"),
    ({"space": {"agent.params.lr": {"type": "float", "low": 0, "high": 1, "log": True}}}, r"lr\.low: must be > 0"),
    ({"space": {"agent.params.lr": {"type": "float", "low": 0.1, "high": 1, "lg": True}}}, r"lr\.lg: unknown key"),
    ({"space": {"agent.n_envs": {"type": "int", "low": 1.5, "high": 4}}}, r"agent\.n_envs\.low: expected an integer"),
    ({"space": {"env.window": {"type": "categorical", "choices": []}}}, r"env\.window\.choices: expected a non-empty"),
    ({"space": {"env.window": {"type": "categorical", "choices": [8, 8]}}}, r"duplicate choices"),
    ({"space": {}}, r"tune\.space: expected a non-empty mapping"),
    ({"pruner": "sometimes"}, r"tune\.pruner\.type: must be one of"),
    ({"pruner": {"type": "median", "n_startup": 3}}, r"tune\.pruner: median: .*n_startup"),
    ({"sampler": {"seed": 1}}, r"tune\.sampler\.seed"),
    ({"sampler": {"n_startup": 1}}, r"tune\.sampler: .*n_startup"),
    ({"heartbeat_interval": 10, "grace_period": 5}, r"tune\.grace_period: must exceed heartbeat_interval"),
    ({"max_retry": -1}, r"tune\.max_retry"),
])
def test_space_parser_names_the_bad_key(eth_1h_path, tune_section, message):
    raw = experiment(eth_1h_path)
    raw["tune"] = tune_section
    with pytest.raises(ExperimentError, match=message):
        load_experiment(raw).tune_config()


def test_space_values_reach_the_experiment(eth_1h_path):
    exp = load_experiment(experiment(eth_1h_path))
    config = exp.tune_config()
    assert (config.metric, config.direction, config.select_mode) == ("sharpe", "maximize", "max")
    assert load_experiment({**experiment(eth_1h_path), "tune": {"metric": "max_drawdown"}}).tune_config(
    ).direction == "minimize"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = suggest_values(trial, config, "ppo")
        assert set(values) == set(SPACE)
        assert isinstance(values["env.levels"], list)  # JSON-encoded for optuna, decoded for the experiment
        trial_exp = apply_values(exp, values)
        assert trial_exp.env_config().levels == tuple(values["env.levels"])
        assert trial_exp.agent.params["learning_rate"] == values["agent.params.learning_rate"]
        assert trial_exp.agent.params["n_steps"] == 64  # params not searched are kept
        seen.add(len(values["env.levels"]))
        study.tell(trial, 0.0)
    assert seen == {2, 3}
    # what workers must share: a different seed or space is a different study; the data path is not
    assert tuning_fingerprint(exp) != tuning_fingerprint(apply_values(exp, {"seed": 6}))
    assert tuning_fingerprint(exp) == tuning_fingerprint(apply_values(exp, {"data.path": "/elsewhere/eth.csv.gz",
                                                                            "run.dir": "/x"}))


@pytest.fixture(scope="module")
def small_frame(eth_1h_path):
    from spotgym.workflows.prepare import prepare

    raw = experiment(eth_1h_path)
    raw["data"]["end"] = "2021-02-28"
    return prepare(load_experiment(raw))


@pytest.mark.parametrize("algo", sorted(DEFAULT_SPACES))
def test_default_spaces_build_every_algorithm(eth_1h_path, small_frame, algo):
    from spotgym.agents import ALGOS, make_agent
    from spotgym.envs import VecTradingEnv

    raw = experiment(eth_1h_path)
    raw["tune"] = {}
    raw["agent"] = {"algo": algo, "params": {}}
    raw["env"]["action"] = "continuous" if algo == "sac" else "levels"
    exp = load_experiment(raw)
    config = exp.tune_config()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(2):
        values = suggest_values(study.ask(), config, algo)
        assert all(k.startswith("agent.params.") for k in values)
        if "agent.params.buffer_size" in values:
            values["agent.params.buffer_size"] = 1_000  # the sampled key is what is under test, not the memory
        trial_exp = apply_values(exp, values)
        venv = VecTradingEnv(small_frame.frame, 2,
                             small_frame.env_config(trial_exp, start_row=small_frame.folds[-1].train.start))
        model = make_agent(algo, venv, params=trial_exp.agent.params, device="cpu")
        assert type(model).__name__ == ALGOS[algo].cls


# --------------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_study(tmp_path_factory, exp_file):
    """4 trials by 2 worker processes on SQLite through the CLI, with --retrain-best."""
    study_dir = tmp_path_factory.mktemp("study-sqlite")
    started = time.perf_counter()
    assert main(["tune", str(exp_file), "--trials", "4", "--n-jobs", "2", "--dir", str(study_dir), "--quiet",
                 "--retrain-best", "--study", "tiny-sqlite"]) == 0
    wall = time.perf_counter() - started
    storage = f"sqlite:///{study_dir / 'study.db'}"
    return study_dir, optuna.load_study(study_name="tiny-sqlite", storage=storage), wall


def check_two_workers(study, n: int) -> None:
    done = finished_trials(study)
    assert len(done) == n
    assert all(t.state != TrialState.RUNNING for t in study.get_trials())
    workers = {t.user_attrs["worker"] for t in done}
    assert len(workers) == 2 and os.getpid() not in {int(w.rsplit(":", 1)[1]) for w in workers}
    for t in done:
        run = Path(t.user_attrs["run_dir"])
        assert {"config.yaml", "manifest.json", "model.zip", "metrics.json", "val_equity.csv"} <= {
            p.name for p in run.iterdir()}
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["agent"]["params"]["learning_rate"] == t.user_attrs["values"]["agent.params.learning_rate"]
        assert config["env"]["window"] == t.user_attrs["values"]["env.window"]
        returns = decode_returns(t.user_attrs["val_returns"])
        assert len(returns) == json.loads((run / "metrics.json").read_text())["best"]["val"]["n_bars"]
        if t.state == TrialState.COMPLETE:
            metrics = json.loads((run / "metrics.json").read_text())
            assert t.value == pytest.approx(metrics["best"]["val"]["sharpe"])
    # every trial trained and validated on the same rows, whatever its window
    splits = {json.dumps(json.loads((Path(t.user_attrs["run_dir"]) / "manifest.json").read_text())["split"])
              for t in done}
    assert len(splits) == 1


def test_sqlite_two_workers_reach_exactly_n_trials(sqlite_study):
    study_dir, study, wall = sqlite_study
    check_two_workers(study, 4)
    best = json.loads((study_dir / "best.json").read_text())
    assert best["finished"] == 4 and best["best"]["number"] == study.best_trial.number
    assert best["best"]["values"] == study.best_trial.user_attrs["values"]
    assert best["overfitting"]["dsr"]["n_trials"] == 4
    assert "pbo" in best["overfitting"]


def test_retrain_best_is_a_normal_run_directory(sqlite_study):
    study_dir, study, _ = sqlite_study
    best = json.loads((study_dir / "best.json").read_text())
    run = Path(best["retrained"])
    assert run.parent == study_dir and run.name.startswith(f"best-trial{study.best_trial.number:04d}")
    assert {"config.yaml", "manifest.json", "model.zip", "metrics.json"} <= {p.name for p in run.iterdir()}
    config = yaml.safe_load((run / "config.yaml").read_text())
    for key, value in best["best"]["values"].items():
        node = config
        for part in key.split("."):
            node = node[part]
        assert node == value
    trial_manifest = json.loads((Path(best["best"]["run_dir"]) / "manifest.json").read_text())
    assert json.loads((run / "manifest.json").read_text())["split"] == trial_manifest["split"]


def test_report_is_self_contained_with_the_four_plots(sqlite_study):
    study_dir, study, _ = sqlite_study
    page = (study_dir / "report.html").read_text()
    assert page.count("plotly.js v") == 1  # the library once, inlined in the head ...
    head, bundle_and_body = page.split('<script type="text/javascript">', 1)
    body = bundle_and_body.split("</script>", 1)[1]
    external = re.findall(r"<script[^>]*\bsrc=", head + body)
    assert external == []  # ... and nothing fetched from elsewhere: the page opens offline
    for anchor in ("optimization-history", "param-importances", "parallel-coordinate", "slice"):
        section = page.split(f'id="{anchor}"', 1)[1].split("<h2", 1)[0]
        assert 'class="plotly-graph-div"' in section, anchor
    assert page.count('class="plotly-graph-div"') >= 4
    assert 'id="best"' in page and "agent.params.learning_rate" in page
    assert f"<td>{study.best_trial.number}</td>" in page


def test_a_different_experiment_cannot_join_the_study(sqlite_study, exp_file):
    study_dir, _, _ = sqlite_study
    exp = load_experiment(exp_file, ["seed=99"])
    with pytest.raises(TuneError, match="different fingerprint"):
        tune(exp, 4, study_name="tiny-sqlite", study_dir=study_dir, progress=False)


def test_postgres_two_workers_share_one_study(postgres_url, exp_file, tmp_path):
    assert main(["tune", str(exp_file), "--trials", "4", "--n-jobs", "2", "--storage", postgres_url,
                 "--study", "tiny-pg", "--dir", str(tmp_path / "study"), "--quiet"]) == 0
    study = optuna.load_study(study_name="tiny-pg", storage=postgres_url)
    check_two_workers(study, 4)
    best = json.loads((tmp_path / "study" / "best.json").read_text())
    assert best["storage"].startswith("postgresql+psycopg2://spotgym@127.0.0.1:")
    # a re-run with the study complete trains nothing and keeps N
    assert main(["tune", str(exp_file), "--trials", "4", "--storage", postgres_url, "--study", "tiny-pg",
                 "--dir", str(tmp_path / "study"), "--quiet"]) == 0
    assert len(finished_trials(optuna.load_study(study_name="tiny-pg", storage=postgres_url))) == 4


def test_pruned_trials_stop_training_early(eth_1h_path, tmp_path):
    raw = experiment(eth_1h_path)
    raw["tune"]["pruner"] = {"type": "threshold", "lower": 1e9}  # every first report is below: prune at once
    exp = load_experiment(raw)
    result = tune(exp, 2, study_dir=tmp_path / "pruned", progress=False)
    assert result.summary["states"] == {"PRUNED": 2} and result.summary["best"] is None
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{tmp_path / 'pruned' / 'study.db'}")
    for t in study.get_trials():
        assert list(t.intermediate_values) == [0]
        metrics = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert metrics["stopped_early"] is True and len(metrics["history"]) == 1
        assert metrics["timesteps"] < exp.agent.timesteps
    assert (tmp_path / "pruned" / "report.html").is_file()


def _running_trials(db: Path) -> list[int]:
    """Numbers of the trials that are RUNNING with a run dir, read with sqlite in read-only mode: opening an
    optuna storage here could write (alembic stamps an empty version table) and race the worker creating it."""
    if not db.is_file():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            rows = con.execute("SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                               "WHERE t.state = 'RUNNING' AND a.key = 'run_dir' ORDER BY t.number").fetchall()
    except sqlite3.Error:  # the tables are not created yet, or locked for a moment
        return []
    return [r[0] for r in rows]


def test_interrupted_study_resumes_and_retries_the_killed_trial(eth_1h_path, tmp_path):
    raw = experiment(eth_1h_path, heartbeat_interval=1, grace_period=3)
    # long enough trials (seconds, not a fraction of one) that the poll below reliably sees one running
    raw["agent"].update(timesteps=4096, eval_every=4096)
    path = tmp_path / "resume.yaml"
    path.write_text(yaml.safe_dump(raw))
    study_dir = tmp_path / "study"
    storage = f"sqlite:///{study_dir / 'study.db'}"
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "spotgym.cli", "tune", str(path), "--trials", "2", "--dir",
                                 str(study_dir), "--quiet"], stdout=log, stderr=subprocess.STDOUT)
    killed = None
    try:
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            running = _running_trials(study_dir / "study.db")
            if running:
                proc.send_signal(signal.SIGKILL)  # mid-training: no tell, no cleanup
                killed = running[0]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
    assert killed is not None, (f"the worker never showed a running trial (exit code {proc.returncode}); "
                                f"its output:\n{log_path.read_text()[-3000:]}")
    study = optuna.load_study(study_name="tune-tiny", storage=storage)
    assert study.trials[killed].state == TrialState.RUNNING  # left behind by the killed worker

    config = load_experiment(path).tune_config()
    result = tune(load_experiment(path), 2, study_dir=study_dir, progress=False)
    study = optuna.load_study(study_name="tune-tiny", storage=make_storage(storage, config))
    assert result.summary["finished"] == 2 and len(finished_trials(study)) == 2
    assert study.trials[killed].state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == study.trials[killed].params  # the same configuration, run again
