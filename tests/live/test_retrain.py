"""Scheduled retraining with promotion: the candidate never sees the evaluation span, both runs are judged over it
through the same backtest, promotion follows the margin, the evidence is written and journaled, and the live
runner trades whatever the champion file names."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from shared_data import shared_file

from spotgym.cli import main
from spotgym.live.journal import Journal
from spotgym.live.retrain import champion_run, retrain
from spotgym.live.runner import LiveRunner, LiveSettings


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    root = tmp_path_factory.mktemp("champ")
    eth = str(shared_file("BINANCE_ETHUSDT_1h.csv.gz"))
    (root / "exp.yaml").write_text(yaml.safe_dump({
        "name": "retraintest", "seed": 3, "data": {"path": eth, "start": "2023-06-01", "end": "2024-03-31T23:00"},
        "env": {"action": "levels", "window": 8, "episode_length": 96, "deadband": 0.05},
        "agent": {"algo": "ppo", "timesteps": 256, "n_envs": 4, "eval_every": 128,
                  "params": {"n_steps": 32, "batch_size": 64}},
        "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
        "tracking": {"wandb": False, "tensorboard": False}}))
    run = root / "champion"
    assert main(["train", str(root / "exp.yaml"), "--quiet", f"--set=run.dir={run}"]) == 0
    return run, eth


@pytest.mark.parametrize("margin, promoted", [(-1e9, True), (1e9, False)])
def test_promotion_follows_the_evidence(champion, tmp_path, margin, promoted):
    run, eth = champion
    journal = tmp_path / "j.sqlite"
    d = retrain(run, data=eth, until="2024-06-30T23:00", eval_bars=240, margin=margin, out=tmp_path / "cand",
                champion_file=tmp_path / "champion.json", journal=str(journal), session="ops", checkpoint=True)
    assert d["promoted"] is promoted
    cand = tmp_path / "cand"
    manifest = json.loads((cand / "manifest.json").read_text())
    # the candidate trained up to the bar before the evaluation span: the span is unseen
    assert pd.Timestamp(manifest["data"]["last"]) < pd.Timestamp(d["eval_span"][0])
    assert d["eval_span"] == ["2024-06-20T23:00:00+00:00", "2024-06-30T23:00:00+00:00"]
    for who in ("champion", "candidate"):
        metrics = json.loads((cand / "retrain" / who / "metrics.json").read_text())["agent"]
        assert metrics["sharpe"] == pytest.approx(d[f"{who}_value"])
        assert d["evidence"][who]["n_trades"] == metrics["n_trades"]
    assert json.loads((cand / "retrain.json").read_text())["promoted"] is promoted
    named = champion_run(tmp_path / "champion.json")
    assert named == (cand.resolve() if promoted else run.resolve())
    runner = LiveRunner(tmp_path / "champion.json", LiveSettings(mode="sim", data=eth, start="2024-07-01",
                                                                  bars=2, journal=str(tmp_path / "l.sqlite")))
    assert runner.run_dir == named  # `spotgym live run champion.json` trades the current champion
    runner.journal.close()
    j = Journal(journal, "ops")
    events = j.frame("events")
    j.close()
    row = events[events["kind"] == "retrain_decision"].iloc[-1]
    assert row["payload"]["promoted"] is promoted and row["payload"]["candidate_value"] == d["candidate_value"]


def test_bad_input_is_one_line(champion, capsys):
    run, eth = champion
    assert main(["retrain", str(run), "--data", eth, "--eval-bars", "3"]) == 2
    assert "--eval-bars must be >= 24" in capsys.readouterr().err


def test_bars_up_to_now_come_through_the_exchange(champion, tmp_path, capsys):
    """`--sim-url`: the bars are downloaded through the replay exchange up to its market clock, then the same
    retrain runs on them."""
    from spotgym.sim import create_app, serve_in_thread

    run, eth = champion
    app = create_app({"ETH/USDT@1h": eth}, start_ms=int(pd.Timestamp("2024-06-30T23:30Z").value // 10**6),
                     speed="manual")
    with serve_in_thread(app) as url:
        assert main(["retrain", str(run), "--sim-url", url, "--data-dir", str(tmp_path / "cache"), "--eval-bars",
                     "240", "--out", str(tmp_path / "cand"), "--champion-file", str(tmp_path / "c.json"),
                     "--checkpoint", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "bars:" in out and "retrain:" in out
    d = json.loads((tmp_path / "cand" / "retrain.json").read_text())
    # the last closed bar at the exchange's clock (23:30) is the 22:00 bar; the span ends there
    assert d["eval_span"][1] == "2024-06-30T22:00:00+00:00"


def test_live_session_retrains_in_the_background(champion, tmp_path):
    """`--retrain-every 24h`: a day of market time into the session, `spotgym retrain` starts in the background on the
    bars up to then; the session trades on, waits for it at its end, and journals the verdict."""
    run, eth = champion
    journal = tmp_path / "j.sqlite"
    settings = LiveSettings(mode="sim", data=eth, start="2024-07-01", bars=30, checkpoint=True, session="rt",
                            journal=str(journal), retrain_every="24h", retrain_eval_bars=24, retrain_wait_s=300)
    lines: list[str] = []
    summary = LiveRunner(run, settings, out=lines.append).run()
    assert summary["decisions"] == 30
    j = Journal(journal, "rt")
    events = j.frame("events")
    j.close()
    kinds = list(events["kind"])
    assert kinds.count("retrain_started") == 1 and "retrain_decision" in kinds
    finished = events[events["kind"] == "retrain_finished"].iloc[0]["payload"]
    started = events[events["kind"] == "retrain_started"].iloc[0]
    assert started["bar_ms"] == pd.Timestamp("2024-07-02T01:00Z").value // 10**6  # 24 h after the first bar marked
    decision = json.loads((run.parent / "retraintest-candidate-rt-1" / "retrain.json").read_text())
    assert finished["promoted"] == decision["promoted"]
    assert decision["eval_span"][1] == "2024-07-02T01:00:00+00:00"  # nothing after the bar it started on
    assert (run.parent / "champion.json").is_file()


def test_a_finished_candidate_trades_in_paper_as_a_challenger(champion, tmp_path):
    """When a background retrain has its candidate, the candidate trades in paper beside the session (its own
    session in the same journal) for the bars the session has left; the session waits for it at its end."""
    run, eth = champion
    journal = tmp_path / "j.sqlite"
    runner = LiveRunner(run, LiveSettings(mode="sim", data=eth, start="2024-07-01", bars=40, checkpoint=True,
                                          session="rt2", journal=str(journal), retrain_every="24h"))
    runner.bars_done, runner.retrains = 28, 1
    runner._current_bar_ms = int(pd.Timestamp("2024-07-02T04:00Z").value // 10**6)
    runner._start_challenger(run, runner._current_bar_ms)
    runner._retrain_finish()
    runner.journal.close()
    j = Journal(journal, "rt2-challenger-1")
    row, decisions = j.session_row(), j.frame("decisions")
    j.close()
    assert row["mode"] == "paper" and len(decisions) == 12
    assert pd.Timestamp(decisions["bar_ms"].iloc[0], unit="ms", tz="UTC") == pd.Timestamp("2024-07-02T04:00Z")
    j = Journal(journal, "rt2")
    assert "challenger_started" in set(j.frame("events")["kind"])
    j.close()
