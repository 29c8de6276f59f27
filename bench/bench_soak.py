#!/usr/bin/env python
"""Soak: one day of 1m bars, 3 live sessions (ETH/USDT twice as an A/B pair, BTC/USDT), replayed at high speed
through the replay exchange (`spotgym sim serve --speed max`, a subprocess) with a fault mix on, each runner a
`spotgym live run` subprocess with its own exchange account. Reports memory growth per runner, decision latency
p50 / p99 (closed bar in -> order made, from the journals), faults injected, and orders lost / doubled (each
journal's orders against the exchange's orders for the session's client ids).

    python bench/bench_soak.py                 # a day: ~10 minutes on 2 cores
    python bench/bench_soak.py --bars 240      # a shorter soak
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FILES = {"ETH/USDT": DATA / "BINANCE_ETHUSDT_1m.csv.gz", "BTC/USDT": DATA / "BINANCE_BTCUSDT_1m.csv.gz"}
FAULTS = {"rules": [
    {"kind": "http_error", "status": 503, "path": "/api/v3/order", "count": 4},
    {"kind": "lost_reply", "path": "/api/v3/order", "count": 3},
    {"kind": "http_error", "status": 429, "retry_after": 1, "path": "/api/v3/klines", "count": 3},
    {"kind": "latency", "ms": 300, "count": 30},
    {"kind": "http_error", "status": 500, "path": "/api/v3/myTrades", "count": 2},
]}


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spotgym.cli", *args], cwd=REPO, check=True, capture_output=True,
                          text=True, **kw)


def train(root: Path, symbol: str, seed: int) -> Path:
    spec = {"name": f"soak-{symbol.split('/')[0].lower()}-{seed}", "seed": seed,
            "data": {"path": str(FILES[symbol]), "symbol": symbol, "timeframe": "1m"},
            "env": {"action": "levels", "window": 16, "episode_length": 240, "deadband": 0.05},
            "agent": {"algo": "ppo", "timesteps": 2048, "n_envs": 4, "eval_every": 1024,
                      "params": {"n_steps": 64, "batch_size": 128}},
            "evaluation": {"val_size": 0.15, "test_size": 0.2, "purge": 4},
            "tracking": {"wandb": False, "tensorboard": False}}
    path = root / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = root / spec["name"]
    sh("train", str(path), "--quiet", f"--set=run.dir={run}")
    return run


def rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(m.group(1)) / 1024 if m else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bars", type=int, default=1440)
    ap.add_argument("--start", default="2024-08-05T00:00")
    ap.add_argument("--bar-pause-ms", type=int, default=150)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="spotgym-soak-"))
    t0 = time.time()
    runs = {"eth-a": ("ETH/USDT", train(root, "ETH/USDT", 1)), "eth-b": ("ETH/USDT", train(root, "ETH/USDT", 2)),
            "btc": ("BTC/USDT", train(root, "BTC/USDT", 1))}
    print(f"trained 3 runs in {time.time() - t0:.0f} s", flush=True)
    (root / "faults.yaml").write_text(yaml.safe_dump(FAULTS))
    sim = subprocess.Popen([sys.executable, "-m", "spotgym.cli", "sim", "serve", "--data", f"ETH/USDT={FILES['ETH/USDT']}",
                            "--data", f"BTC/USDT={FILES['BTC/USDT']}", "--start", args.start, "--speed", "max",
                            "--bar-pause-ms", str(args.bar_pause_ms), "--port", "0", "--faults", str(root / "faults.yaml"),
                            "--balance", "USDT=10000", "--log-level", "warning"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    while url is None:
        line = sim.stdout.readline()
        if not line:
            raise SystemExit("the replay exchange did not start")
        m = re.search(r"sim: listening on (http://\S+)", line)
        url = m.group(1) if m else None
    journal = root / "soak.sqlite"
    procs = {}
    for name, (_, run) in runs.items():
        key, secret = f"soak-{name}", f"soak-secret-{name}"
        requests.post(url + "/sim/accounts", json={"api_key": key, "api_secret": secret,
                                                   "balances": {"USDT": 10000.0}}, timeout=10).raise_for_status()
        cfg = root / f"{name}.live.yaml"
        cfg.write_text(yaml.safe_dump({"sim_api_key": key, "sim_api_secret": secret, "poll_seconds": 0.25,
                                       "price_source": "close"}))
        procs[name] = subprocess.Popen([sys.executable, "-m", "spotgym.cli", "live", "run", str(run), "--mode", "sim",
                                        "--sim-url", url, "--bars", str(args.bars), "--session", name, "--journal",
                                        str(journal), "--config", str(cfg), "--checkpoint"],
                                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples: dict[str, list[float]] = {n: [] for n in procs}
    warm: dict[str, float] = {}  # RSS once a session has made 10 % of its decisions (start-up over)
    started = time.time()
    while any(p.poll() is None for p in procs.values()):
        for n, p in procs.items():
            r = rss_mb(p.pid)
            if r is None:
                continue
            samples[n].append(r)
            if n not in warm and journal.exists():
                import sqlite3

                with contextlib.suppress(sqlite3.Error), sqlite3.connect(journal, timeout=1) as db:
                    done = db.execute("select count(*) from decisions where session = ?", (n,)).fetchone()[0]
                    if done >= args.bars // 10:
                        warm[n] = r
        time.sleep(2.0)
    wall = time.time() - started
    outputs = {n: p.stdout.read() for n, p in procs.items()}
    faults = requests.get(url + "/sim/faults", timeout=10).json()
    sys.path.insert(0, str(REPO))
    import ccxt  # noqa: F401

    from spotgym.live.journal import Journal
    from spotgym.venue import make_exchange

    rows = []
    for name, (symbol, _) in runs.items():
        j = Journal(journal, name)
        orders, decisions = j.frame("orders"), j.frame("decisions")
        j.close()
        client = make_exchange("binance", mode="sim", sim_url=url, api_key=f"soak-{name}", secret=f"soak-secret-{name}")
        client.load_markets()
        ex = client.fetch_orders(symbol, limit=1000)
        ex_ids = pd.Series([o["clientOrderId"] for o in ex])
        journal_sent = orders[orders["status"].isin(["filled", "expired", "canceled", "open"])]["client_id"]
        lost = int((~journal_sent.isin(set(ex_ids))).sum()) + int((~ex_ids.isin(set(orders["client_id"]))).sum())
        doubled = int((ex_ids.value_counts() > 1).sum())
        lat = decisions["latency_ms"].dropna()
        mem = samples[name]
        rows.append({"session": name, "symbol": symbol, "decisions": len(decisions), "orders": len(orders),
                     "exchange orders": len(ex), "lost": lost, "doubled": doubled,
                     "latency p50 ms": float(lat.quantile(0.5)) if len(lat) else float("nan"),
                     "latency p99 ms": float(lat.quantile(0.99)) if len(lat) else float("nan"),
                     "RSS at 10 % MB": warm.get(name, float("nan")), "RSS end MB": mem[-1] if mem else float("nan"),
                     "exit": procs[name].returncode})
    sim.terminate()
    table = pd.DataFrame(rows)
    print(f"\nsoak: {args.bars} bars of 1m x 3 sessions in {wall:.0f} s wall (bar pause {args.bar_pause_ms} ms)")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print("\nfaults configured:", json.dumps(FAULTS["rules"]))
    print("faults left unfired:", json.dumps(faults.get("rules", faults))[:400])
    for n, text in outputs.items():
        tail = text.strip().splitlines()[-2:] if text.strip() else []
        print(f"{n}: {' | '.join(tail)}")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (out / f"bench_soak_{stamp}.json").write_text(json.dumps({"rows": rows, "wall_s": wall, "faults": FAULTS},
                                                             indent=1, default=str))
    return 0 if all(r["lost"] == 0 and r["doubled"] == 0 and r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
