"""The live runner end to end: a trained run (indicators + a fitted regime predictor, PPO) trades a replay of real
ETH/USDT bars through the real replay exchange and a real ccxt client, and its journal's export equals the
backtest of the same span decision for decision and fill for fill; paper mode equals it too; commands, status and
export work from the CLI; testnet / demo / live build the same requests against Binance's real URLs."""

from __future__ import annotations

import json

import ccxt
import numpy as np
import pandas as pd
import pytest
import yaml
from shared_data import shared_file

from spotgym.cli import main
from spotgym.envs.ports import Order
from spotgym.live.broker import CcxtBroker, client_order_id
from spotgym.live.export import export_session
from spotgym.live.journal import Journal
from spotgym.live.runner import LiveSettings, run_live
from spotgym.sim import create_app, serve_in_thread
from spotgym.venue import make_exchange
from spotgym.workflows.backtest import backtest

START, BARS = "2024-06-01", 150
END = str(pd.Timestamp(START) + pd.Timedelta(hours=BARS))


@pytest.fixture(scope="module")
def eth_file():
    return str(shared_file("BINANCE_ETHUSDT_1h.csv.gz"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, eth_file):
    root = tmp_path_factory.mktemp("liverun")
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "livetest", "seed": 3,
        "data": {"path": eth_file, "start": "2022-06-01", "end": "2024-05-31T23:00"},
        "predictors": {"refit_every": 4000, "min_train": 4000, "val_size": 300,
                       "models": [{"kind": "regime", "name": "regime", "horizon": 24}]},
        "env": {"action": "levels", "window": 8, "episode_length": 96, "levels": [0.0, 0.5, 1.0], "deadband": 0.05},
        "agent": {"algo": "ppo", "timesteps": 256, "n_envs": 4, "eval_every": 128,
                  "params": {"n_steps": 32, "batch_size": 64}},
        "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
        "tracking": {"wandb": False, "tensorboard": False},
    }))
    run = root / "run"
    assert main(["train", str(path), "--quiet", f"--set=run.dir={run}"]) == 0
    return run


@pytest.fixture(scope="module")
def backtested(run_dir, eth_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bt")
    backtest(run_dir, data=eth_file, start=START, end=END, checkpoint=True, out=out)
    return out


def _replay(run_dir, eth_file, tmp_path, mode="sim", session="s", **kw):
    journal = tmp_path / "journal.sqlite"
    settings = LiveSettings(mode=mode, data=eth_file, start=START, bars=BARS, checkpoint=True, session=session,
                            journal=str(journal), **kw)
    summary = run_live(run_dir, settings, out=lambda *_: None)
    j = Journal(journal, session)
    paths = export_session(j, tmp_path / "export")
    j.close()
    return summary, paths


def _assert_same_as_backtest(paths, bt):
    live_dec, bt_dec = pd.read_csv(paths["decisions"]), pd.read_csv(bt / "decisions.csv")
    assert len(live_dec) == len(bt_dec) == BARS
    assert (pd.to_datetime(live_dec["timestamp"]) == pd.to_datetime(bt_dec["timestamp"])).all()
    np.testing.assert_array_equal(live_dec["action"].to_numpy(), bt_dec["action"].to_numpy())
    live_fills, bt_fills = pd.read_csv(paths["fills"]), pd.read_csv(bt / "trades.csv")
    assert list(live_fills.columns) == list(bt_fills.columns)
    assert len(bt_fills) >= 2 and len(live_fills) == len(bt_fills)
    assert (live_fills["timestamp"] == bt_fills["timestamp"]).all() and (live_fills["side"] == bt_fills["side"]).all()
    np.testing.assert_allclose(live_fills["quantity"], bt_fills["quantity"], rtol=1e-12)  # k x step, either way
    np.testing.assert_allclose(live_fills["price"], bt_fills["price"], rtol=1e-12)
    np.testing.assert_allclose(live_fills["fee"], bt_fills["fee"], rtol=1e-6)
    live_eq, bt_eq = pd.read_csv(paths["equity"]), pd.read_csv(bt / "equity.csv")
    assert list(live_eq.columns) == list(bt_eq.columns)
    assert (live_eq["timestamp"] == bt_eq["timestamp"]).all()
    np.testing.assert_allclose(live_eq["equity"], bt_eq["equity"], rtol=1e-9)
    # buy_and_hold: the backtest's is its baseline run (bought at the next open, fees paid); live has none
    np.testing.assert_allclose(live_eq["buy_and_hold"], bt_eq["buy_and_hold"], rtol=5e-3)


def test_sim_replay_equals_the_backtest_of_the_span(run_dir, eth_file, backtested, tmp_path):
    summary, paths = _replay(run_dir, eth_file, tmp_path)
    assert summary["bars"] == summary["decisions"] == BARS
    _assert_same_as_backtest(paths, backtested)
    orders = pd.read_csv(paths["orders"])
    assert (orders["status"] == "filled").all() and (orders["attempts"] == 1).all()
    # every order went out under its deterministic id, once: intent -> sent -> filled
    assert all(h.startswith("intent > sent > filled") for h in orders["history"])
    decisions = pd.read_csv(paths["decisions"])
    assert decisions["obs_hash"].str.len().eq(16).all() and decisions["obs_hash"].nunique() == BARS
    ids = decisions["client_id"].dropna()
    assert set(ids) == set(orders["client_id"])
    ms = pd.to_datetime(decisions.loc[ids.index, "timestamp"]).dt.as_unit("ms").astype("int64").tolist()
    assert list(ids) == [client_order_id("s", t) for t in ms]


def test_paper_mode_fills_by_the_env_and_equals_the_backtest(run_dir, eth_file, backtested, tmp_path):
    summary, paths = _replay(run_dir, eth_file, tmp_path, mode="paper", session="p")
    assert summary["order_posts"] == 0  # paper never sends an order
    _assert_same_as_backtest(paths, backtested)


def test_flatten_command_goes_to_cash_and_pauses(run_dir, eth_file, tmp_path):
    journal = tmp_path / "j.sqlite"
    j = Journal(journal, "f")
    j.open_session(mode="sim", symbol="ETH/USDT", run_dir=str(run_dir))
    j.set_session(state="stopped")
    j.request("flatten")
    j.close()
    settings = LiveSettings(mode="sim", data=eth_file, start=START, bars=30, checkpoint=True, session="f",
                            journal=str(journal))
    summary = run_live(run_dir, settings, out=lambda *_: None)
    assert summary["orders"] == 0 and summary["position"] == 0.0
    j = Journal(journal, "f")
    d = j.frame("decisions")
    assert len(d) == 30 and (d["risk"] == "paused").all()
    assert "command_applied" in set(j.frame("events")["kind"])
    j.close()


def test_cli_run_status_stop_and_export(run_dir, eth_file, tmp_path, capsys):
    journal = tmp_path / "c.sqlite"
    assert main(["live", "run", str(run_dir), "--mode", "sim", "--data", eth_file, "--from", START, "--bars", "12",
                 "--session", "cli", "--journal", str(journal), "--checkpoint"]) == 0
    out = capsys.readouterr().out
    assert "12 bars, 12 decisions" in out
    assert main(["live", "status", "--journal", str(journal)]) == 0
    assert "cli: sim ETH/USDT stopped" in capsys.readouterr().out
    assert main(["live", "stop", "--session", "cli", "--journal", str(journal)]) == 0
    assert main(["live", "export", "--session", "cli", "--journal", str(journal), "--out", str(tmp_path / "x")]) == 0
    for name in ("decisions", "orders", "fills", "equity", "events"):
        assert (tmp_path / "x" / f"{name}.csv").is_file()
    assert main(["live", "stop", "--session", "nope", "--journal", str(journal)]) == 2
    assert "no session 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--mode", "sim"], "--mode sim needs --data"),
    (["--mode", "testnet", "--data", "x.csv", "--from", START], "--data replays history"),
    (["--mode", "sim", "--data", "x.csv"], "--data needs --from"),
    (["--mode", "sim", "--data", "{eth}", "--from", "yesterday-ish"], "is not a date"),
    (["--mode", "live"], "--i-understand-this-trades-real-money"),
])
def test_bad_input_is_one_clear_line(run_dir, eth_file, argv, message, capsys, monkeypatch):
    monkeypatch.setenv("SPOTGYM_LIVE_API_KEY", "k" * 64)
    monkeypatch.setenv("SPOTGYM_LIVE_API_SECRET", "s" * 64)
    argv = [a.replace("{eth}", eth_file) for a in argv]
    assert main(["live", "run", str(run_dir), *argv, "--journal", "/tmp/never-used.sqlite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_backtest_from_to_flags(run_dir, eth_file, capsys):
    assert main(["backtest", str(run_dir), "--from", START, "--to", END]) == 2
    assert "--from / --to go with --data" in capsys.readouterr().err
    assert main(["backtest", str(run_dir), "--data", eth_file, "--from", END, "--to", START]) == 2
    assert "is not after" in capsys.readouterr().err


@pytest.fixture(scope="module")
def binance_markets(eth_file):
    """Binance-shaped markets (the replay exchange's exchangeInfo) for clients that must not reach the network."""
    app = create_app({"ETH/USDT@1h": eth_file}, start_ms=1_717_200_000_000, speed="manual")
    with serve_in_thread(app) as url:
        client = make_exchange("binance", mode="sim", sim_url=url)
        client.load_markets()
        return client.markets


@pytest.mark.parametrize("mode, host", [("testnet", "https://testnet.binance.vision/api/v3/order"),
                                        ("demo", "https://demo-api.binance.com/api/v3/order"),
                                        ("live", "https://api.binance.com/api/v3/order")])
def test_real_modes_send_the_same_order_to_binance_urls(mode, host, binance_markets, tmp_path, monkeypatch):
    """testnet / demo / live go through the same broker and ccxt client as the replay: up to the order request they
    would send (captured, never sent), then the broker's ambiguous-failure path asks by client id before anything."""
    key, secret = "K" * 64, "S" * 64
    client = make_exchange("binance", mode=mode, api_key=key, secret=secret)
    client.set_markets(binance_markets.values())
    sent: list[tuple[str, str, str, dict]] = []

    def fake_fetch(url, method="GET", headers=None, body=None):
        sent.append((method, url, body or "", dict(headers or {})))
        raise ccxt.RequestTimeout("captured, not sent")

    monkeypatch.setattr(client, "fetch", fake_fetch)
    journal = Journal(tmp_path / "j.sqlite", "real")
    journal.open_session(mode=mode, symbol="ETH/USDT", run_dir="x")
    broker = CcxtBroker(client, journal, "ETH/USDT", price_source="close", sleep=lambda s: None,
                        resolve_timeout_s=0.0)
    cid = client_order_id("real", 1_717_200_000_000)
    fills = broker.execute(Order(cid, "ETH/USDT", "buy", 0.05, 3800.0, 1.0, 1_717_200_000_000))
    assert fills == []
    method, url, body, headers = sent[0]
    assert (method, url) == ("POST", host)
    assert f"newClientOrderId={cid}" in body and "type=MARKET" in body and "quantity=0.05" in body
    assert "signature=" in body and headers.get("X-MBX-APIKEY") == key
    # the reply never came: the next request asks for the order by its client id (no blind resend)
    assert sent[1][0] == "GET" and f"origClientOrderId={cid}" in sent[1][1]
    assert sum(1 for m, u, *_ in sent if m == "POST") == 1
    row = journal.order(cid)
    assert row["status"] == "unknown" and "RequestTimeout" in row["last_error"]
    assert key not in json.dumps(row, default=str) and secret not in json.dumps(row, default=str)
    journal.close()


def test_session_alerts_metrics_and_json_log(run_dir, eth_file, tmp_path, capsys):
    """A replayed session with a webhook notifier and metrics on: the receiver gets the session's start, its fills
    and its stop; the Prometheus metrics hold the session's equity and orders; the JSON log lies beside the journal
    and `spotgym live logs --errors` reads it."""
    import http.server
    import threading

    from spotgym.live.runner import LiveRunner

    got: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    journal = tmp_path / "m.sqlite"
    settings = LiveSettings(mode="sim", data=eth_file, start=START, bars=BARS, checkpoint=True, session="ops",
                            journal=str(journal), extra={"notify": [{"kind": "webhook",
                                                                     "url": f"http://127.0.0.1:{server.server_port}/"}],
                                                         "metrics": {"port": 0}})
    runner = LiveRunner(run_dir, settings, out=print)
    summary = runner.run()
    server.shutdown()
    kinds = [m.get("kind") or m.get("event") for m in got]
    assert "session_ready" in kinds and "session_stop" in kinds and kinds.count("fill") == summary["fills"] >= 2
    out = capsys.readouterr().out
    assert "metrics: http://127.0.0.1:" in out
    registry = runner.metrics.registry
    equity = registry.get_sample_value("spotgym_live_equity", {"session": "ops"})
    assert equity == pytest.approx(summary["equity"])
    assert (journal.parent / "log.jsonl").is_file()
    assert main(["live", "logs", "--session", "ops", "--journal", str(journal), "--errors"]) == 0


def test_ab_sessions_on_one_feed_and_compare(run_dir, eth_file, backtested, tmp_path, capsys):
    """Two runs on one replay exchange and one clock (A/B), an account each: each session trades exactly as it
    would alone (session A equals the backtest of the span fill for fill), the exchange's accounts hold what each
    journal says, and `spotgym live compare` gives both sessions' figures and the paired bootstrap."""
    second = tmp_path / "second"
    spec = yaml.safe_load((run_dir / "config.yaml").read_text())
    spec["seed"] = 11
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(spec))
    assert main(["train", str(tmp_path / "b.yaml"), "--quiet", f"--set=run.dir={second}"]) == 0, capsys.readouterr().err
    journal = tmp_path / "ab.sqlite"
    capsys.readouterr()
    assert main(["live", "run", str(run_dir), str(second), "--mode", "sim", "--data", eth_file, "--from", START,
                 "--bars", str(BARS), "--session", "ab", "--journal", str(journal), "--checkpoint"]) == 0
    names = sorted(r["name"] for r in Journal.session_names(journal))
    assert names == ["ab-0-run", "ab-1-second"]
    j = Journal(journal, "ab-0-run")
    paths = export_session(j, tmp_path / "a")
    j.close()
    _assert_same_as_backtest(paths, backtested)
    for name in names:
        j = Journal(journal, name)
        assert len(j.frame("decisions")) == BARS and j.frame("orders")["client_id"].nunique() == len(j.frame("orders"))
        j.close()
    capsys.readouterr()
    assert main(["live", "compare", "--journal", str(journal), "--out", str(tmp_path / "cmp.json")]) == 0
    out = capsys.readouterr().out
    assert f"({BARS + 1} bars)" in out and "ab-0-run" in out and "ab-1-second" in out and "p = " in out
    doc = json.loads((tmp_path / "cmp.json").read_text())
    assert [s["session"] for s in doc["sessions"]] == names and 0.0 <= doc["pairs"][0]["p_value"] <= 1.0


def test_ab_on_testnet_needs_a_key_per_session(run_dir, tmp_path, monkeypatch, capsys):
    """A/B on testnet / demo: one keystore key (one exchange account) per session, each runner with its own."""
    from spotgym.live import runner as live_runner

    argv = ["live", "run", str(run_dir), str(run_dir), "--mode", "testnet", "--journal", str(tmp_path / "t.sqlite"),
            "--session", "tn"]
    assert main([*argv, "--key", "a"]) == 2
    assert "needs one key per session" in capsys.readouterr().err
    assert main(["live", "run", str(run_dir), str(run_dir), "--mode", "live", "--i-understand-this-trades-real-money",
                 "--key", "a", "--key", "b"]) == 2
    assert "not with real money" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(live_runner.LiveRunner, "run", lambda self: seen.setdefault(self.session, self.s.key) and
                        {"session": self.session, "journal": self.journal.url})
    assert main([*argv, "--key", "a", "--key", "b"]) == 0
    assert seen == {"tn-0-run": "a", "tn-1-run": "b"}
