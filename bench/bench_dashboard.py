#!/usr/bin/env python
"""The dashboard's two performance aims (issue 13), one run:

    python bench/bench_dashboard.py                 # ~1 min on 2 cores; bench/results/bench_dashboard_<UTC>.{json,md}
    python bench/bench_dashboard.py --run RUN_DIR   # copy a real run's metadata instead of a synthetic one

1. **Runs page with 500 runs renders in under 1 s**, beside an empty runs folder. 500 copies of one run's metadata
   (config.yaml, manifest.json, metrics.json, backtest/test/metrics.json; a synthetic run unless ``--run``), each
   in its own folder; the page is asked for over loopback HTTP by one client. Reported: the server's own time (its
   ``Server-Timing`` header) and the client's wall time, cold (first request: every file read) and warm (median of
   the next ``--repeat``), for 500 runs and for none, and their ratio.
2. **Live page refresh under 50 ms of server time per client at 10 clients.** A journal holding a 1,000-bar session
   (decisions, equity marks, orders, fills, events through the ``Journal`` API) while a writer appends one more bar
   every second; 10 clients each poll ``/api/live/<id>`` every second, as the Live page does (``since`` = the points
   they hold, ``v`` = the version they have), for ``--seconds``. The dashboard runs in its own process (uvicorn);
   per request, the server's time is its ``Server-Timing`` header. Reported: p50 / p95 / max server time per poll, and
   the same with the 10 clients polling back to back (saturation: what one poll costs when all arrive at once).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "dashboard"))  # the synthetic run writer of the dashboard tests
sys.path.insert(0, str(REPO))
from dash_synthetic import PASSWORD, USER, write_run  # noqa: E402

METADATA = ("config.yaml", "manifest.json", "metrics.json", "backtest/test/metrics.json")


def server_ms(reply: requests.Response) -> float:
    value = reply.headers.get("server-timing", "")
    return float(value.split("dur=")[1]) if "dur=" in value else float("nan")


def make_runs(root: Path, template: Path, n: int) -> None:
    for i in range(n):
        dest = root / f"sweep-{i // 100:02d}" / f"run-{i:04d}"
        for name in METADATA:
            src = template / name
            if src.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest / name)


def start_server(tmp: Path, runs: list[Path], journals: list[Path], users: Path) -> tuple[subprocess.Popen, str]:
    """The dashboard in its own process on a free loopback port; returns it and its URL."""
    code = ("import sys, socket\n"
            "from spotgym.dashboard.app import create_app, serve\n"
            f"app = create_app(runs={[str(r) for r in runs]!r}, journals={[str(j) for j in journals]!r}, "
            f"users={str(users)!r})\n"
            "serve(app, '127.0.0.1', 0, announce=print)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=str(tmp), env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise RuntimeError("the dashboard process ended before listening")
        if "listening on" in line:
            return proc, line.split("listening on", 1)[1].strip().rstrip("/")
    raise RuntimeError("the dashboard did not start within 120 s")


def session(url: str) -> requests.Session:
    http = requests.Session()
    reply = http.post(url + "/login", data={"username": USER, "password": PASSWORD}, allow_redirects=False, timeout=60)
    assert reply.status_code == 303, reply.text[:300]
    return http


def time_page(http: requests.Session, url: str, repeat: int) -> dict[str, float]:
    first = time.perf_counter()
    reply = http.get(url, timeout=120)
    cold_wall = time.perf_counter() - first
    assert reply.status_code == 200
    cold_server = server_ms(reply) / 1000
    walls, servers = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        reply = http.get(url, timeout=120)
        walls.append(time.perf_counter() - t)
        servers.append(server_ms(reply) / 1000)
    return {"cold_server_s": cold_server, "cold_wall_s": cold_wall, "warm_server_s": statistics.median(servers),
            "warm_wall_s": statistics.median(walls), "bytes": len(reply.content)}


# ---------------------------------------------------------------------------------------------------- journal
def write_session(path: Path, name: str, bars: int) -> tuple[int, float]:
    """A session of ``bars`` bars (a fill every 20 bars); returns the next bar's open (ms) and the position."""
    from spotgym.live.journal import Journal

    j = Journal(path, name)
    j.open_session(mode="sim", symbol="ETH/USDT", run_dir=str(path.parent))
    t0, price, position = 1_717_200_000_000, 3_800.0, 0.0
    for i in range(bars):
        position = append_bar(j, name, t0 + i * 3_600_000, price + i * 0.5, i, position)
    j.close()
    return t0 + bars * 3_600_000, position


def append_bar(j, name: str, bar_ms: int, price: float, i: int, position: float) -> float:
    side = "none"
    if i % 20 == 0:
        side = "sell" if position > 0 else "buy"
    cid = f"{name}-{bar_ms}" if side != "none" else None
    j.record_decision(bar_ms, obs_hash=f"{i:016x}", action=float(i % 3), target=0.5, risk="" if i % 7 else "max_position",
                      halted=0, client_id=cid, side=side, quantity=1.0 if cid else 0.0, equity=10_000.0 + i,
                      position=position, cash=10_000.0 - position * price)
    if cid:
        j.record_intent(cid, bar_ms, side, 1.0, price)
        j.update_order(cid, "sent", attempt=True)
        j.record_fill(trade_id=f"t{bar_ms}", client_id=cid, time_ms=bar_ms + 1000, side=side, quantity=1.0, price=price,
                      fee=price * 0.001, fee_asset="USDT", fee_quote=price * 0.001)
        j.update_order(cid, "filled", filled=1.0, average=price)
        position = 1.0 if side == "buy" else 0.0
    j.record_equity(bar_ms, equity=10_000.0 + i, exposure=position * price / 10_000.0, position=position,
                    cash=10_000.0 - position * price, price=price)
    j.set_session(last_bar_ms=bar_ms)
    return position


def poll_clients(url: str, sid: str, clients: int, seconds: float, pace: float | None) -> list[float]:
    """``clients`` threads polling as the Live page does (every ``pace`` s, or back to back when None); server ms."""
    times: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        http = session(url)
        have, version = 0, ""
        while time.monotonic() < stop:
            t = time.monotonic()
            reply = http.get(f"{url}/api/live/{sid}", params={"since": have, "v": version}, timeout=30)
            data = reply.json()
            if not data.get("unchanged"):
                version = data["version"]
                have = data["equity"]["from"] + len(data["equity"]["t"])
            with lock:
                times.append(server_ms(reply))
            if pace:
                time.sleep(max(0.0, pace - (time.monotonic() - t)))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return times


def quantiles(values: list[float]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "p50_ms": s[len(s) // 2], "p95_ms": s[int(len(s) * 0.95)], "max_ms": s[-1],
            "mean_ms": statistics.fmean(s)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--run", default=None, help="a real run directory whose metadata is copied")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--bars", type=int, default=1000, help="bars in the live session's journal")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()

    from spotgym.dashboard.users import UserStore

    tmp = Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    procs = []
    try:
        users = tmp / "users.json"
        UserStore(users).add(USER, PASSWORD)
        template = Path(args.run) if args.run else write_run(tmp / "template", seed=7)
        full, empty = tmp / "runs500", tmp / "empty"
        empty.mkdir()
        t = time.perf_counter()
        make_runs(full, template, args.runs)
        print(f"{args.runs} run folders written in {time.perf_counter() - t:.1f} s", flush=True)
        journal = tmp / "live" / "journal.sqlite"
        journal.parent.mkdir()
        t = time.perf_counter()
        next_bar, position = write_session(journal, "bench", args.bars)
        print(f"journal of {args.bars} bars written in {time.perf_counter() - t:.1f} s", flush=True)

        proc, url = start_server(tmp, [full, empty], [journal], users)
        procs.append(proc)
        proc_empty, url_empty = start_server(tmp, [empty], [], users)
        procs.append(proc_empty)

        # 1. the runs page
        pages = {}
        for label, base in ((f"{args.runs} runs", url), ("empty runs folder", url_empty)):
            http = session(base)
            pages[label] = time_page(http, base + "/runs", args.repeat)
            api = time_page(http, base + "/api/runs", 3)
            pages[label]["api_warm_server_s"] = api["warm_server_s"]

        # 2. live polling: 10 clients at the page's 1 s pace while a writer appends a bar each second, then back to back
        http = session(url)
        sid = next(s["id"] for s in http.get(url + "/api/live", timeout=60).json() if s["session"] == "bench")
        http.get(f"{url}/live/{sid}", timeout=60)  # the first snapshot (what the page's first load costs)
        from spotgym.live.journal import Journal

        stop = threading.Event()

        def writer() -> None:
            j = Journal(journal, "bench")
            bar, pos, i = next_bar, position, args.bars
            while not stop.wait(1.0):
                pos = append_bar(j, "bench", bar, 3_800.0 + i * 0.5, i, pos)
                bar, i = bar + 3_600_000, i + 1
            j.close()

        w = threading.Thread(target=writer)
        w.start()
        paced = poll_clients(url, sid, args.clients, args.seconds, pace=1.0)
        saturated = poll_clients(url, sid, args.clients, min(args.seconds, 5.0), pace=None)
        stop.set()
        w.join()

        full_page, empty_page = pages[f"{args.runs} runs"], pages["empty runs folder"]
        result = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
            "cpus": os.cpu_count(), "runs": args.runs, "template": str(args.run or "synthetic"),
            "runs_page": pages, "ratio_warm_server": full_page["warm_server_s"] / empty_page["warm_server_s"],
            "live": {"bars": args.bars, "clients": args.clients, "seconds": args.seconds,
                     "paced_1s": quantiles(paced), "back_to_back": quantiles(saturated),
                     "back_to_back_polls_per_s": len(saturated) / min(args.seconds, 5.0)},
        }
        lines = [
            f"Runs page ({args.runs} runs of {result['template']} metadata vs an empty runs folder), one client:",
            "",
            "| runs folder | cold: server / wall | warm (median of "
            f"{args.repeat}): server / wall | page size | /api/runs warm server |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, p in pages.items():
            lines.append(f"| {label} | {p['cold_server_s'] * 1000:,.0f} ms / {p['cold_wall_s'] * 1000:,.0f} ms | "
                         f"{p['warm_server_s'] * 1000:,.1f} ms / {p['warm_wall_s'] * 1000:,.1f} ms | "
                         f"{p['bytes'] / 1024:,.0f} KiB | {p['api_warm_server_s'] * 1000:,.1f} ms |")
        lines += ["", f"ratio 500 runs / empty (warm server time): {result['ratio_warm_server']:.1f}x; aim < 1 s: "
                  f"{'met' if full_page['cold_wall_s'] < 1 and full_page['warm_wall_s'] < 1 else 'NOT met'}", "",
                  f"Live session JSON ({args.bars}-bar journal, a bar appended each second), {args.clients} clients:", "",
                  "| polling | polls | server p50 | p95 | max | mean |", "|---|---:|---:|---:|---:|---:|"]
        for label, q in (("every 1 s (the page's pace)", result["live"]["paced_1s"]),
                         ("back to back (saturation)", result["live"]["back_to_back"])):
            lines.append(f"| {label} | {q['n']:,} | {q['p50_ms']:.1f} ms | {q['p95_ms']:.1f} ms | {q['max_ms']:.1f} ms | "
                         f"{q['mean_ms']:.1f} ms |")
        worst = max(result["live"]["paced_1s"]["p95_ms"], result["live"]["back_to_back"]["p50_ms"])
        lines += ["", f"back to back: {result['live']['back_to_back_polls_per_s']:.0f} polls/s served; aim < 50 ms "
                  f"server time per client poll: {'met' if worst < 50 else 'NOT met'}"]
        text = "\n".join(lines)
        print(text)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        (out / f"bench_dashboard_{stamp}.json").write_text(json.dumps(result, indent=2))
        (out / f"bench_dashboard_{stamp}.md").write_text(text + "\n")
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
