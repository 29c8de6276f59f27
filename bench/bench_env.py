#!/usr/bin/env python
"""Env steps/s of spotgym beside the peer envs and a payload-matched raw numba kernel, one run.

    python bench/bench_env.py                      # ~4 min on 2 cores; bench/results/bench_env_<UTC>.{json,md}
    python bench/bench_env.py --rounds 3 --scale 0.3 --no-ppo    # a quick look
    python bench/bench_env.py --no-peers           # spotgym and the raw kernels only

It drives the workers of ``../shared/bench/peers/run_peers.py`` with the harness's protocol: each
env lives in its own worker process; after an untimed warm-up round, every round visits every
worker once in a shuffled order; a worker times a fixed number of ``step`` calls with actions
drawn up front; ratios are taken within a round and the median over rounds is reported. Peers
run in the harness's venvs on its 100k synthetic rows; spotgym and the raw kernel run under
this interpreter on the real ETH/USDT 5m features (278,820 rows x 18 columns), observation =
32 rows x 18 features + 4 account values (2,320 bytes per env-step).

Rows (two access patterns, each beside the raw kernel run the same way):
- sequential / lockstep: ``spotgym VecTradingEnv N=...`` makes one sequential pass, all accounts on
  the same rows (the harness's access pattern), beside ``raw kernel (our payload) N=... lockstep``;
- random starts (what training runs): ``spotgym VecTradingEnv N=1024 random starts`` = 2048-step
  episodes from random rows with auto-reset (each account its own rows), beside ``raw kernel (our
  payload) N=1024 random starts``, the same kernel with the same episodes (own random start per
  account, same length, auto-reset to a new random start). Both time exactly one episode per
  round (2048 calls, not scaled by ``--scale``): 2047 plain steps and the step on which every
  account finishes and auto-resets, the rate at which training meets episode ends;
- ``spotgym TradingEnv``: the gymnasium env; the raw kernel is the harness's reference kernel
  writing our observation payload, the least work for the same bytes (``bench/peers_adapter.py``);
- the harness's own ``numba-kernel`` rows (32 x 1 window) and the peers.

Then SB3 PPO (MlpPolicy, CPU, 8 envs, n_steps 256, the harness's settings) with
``VecTradingEnv(8)`` and with ``DummyVecEnv`` of 8 ``TradingEnv``, and the share of learn() time
spent inside the vec env; the harness's PPO rows for its naive env and gym-trading-env are run
in the same session for reference.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
ADAPTER = os.path.join(HERE, "peers_adapter.py")
DEFAULT_HARNESS = os.path.join(os.path.dirname(REPO), "shared", "bench", "peers")
PEERS_ROOT = os.environ.get("PEERS_ROOT", os.path.expanduser("~/.cache/spotgym-peers"))

SEQ = "spotgym VecTradingEnv N=1024 sequential"
RAND = "spotgym VecTradingEnv N=1024 random starts"
RAW_SEQ = "raw kernel (our payload) N=1024 lockstep"
RAW_RAND = "raw kernel (our payload) N=1024 random starts"
GTE = "gym-trading-env TradingEnv"
EPISODE = 2048  # = peers_adapter.RANDOM_EPISODE_LENGTH: the random-start rows time one whole episode per round

# (label, factory in peers_adapter.py, num_envs, timed calls per round; EPISODE: one episode, never scaled)
OURS = [
    ("spotgym VecTradingEnv N=1", "project_env_factory", 1, 100_000),
    ("spotgym VecTradingEnv N=64", "project_env_factory", 64, 6_000),
    (SEQ, "project_env_factory", 1024, 1_000),
    (RAND, "random_starts_factory", 1024, EPISODE),
    ("spotgym TradingEnv (gymnasium)", "single_env_factory", 1, 100_000),
    ("raw kernel (our payload) N=1", "raw_kernel_factory", 1, 200_000),
    ("raw kernel (our payload) N=64", "raw_kernel_factory", 64, 10_000),
    (RAW_SEQ, "raw_kernel_factory", 1024, 1_500),
    (RAW_RAND, "raw_random_starts_factory", 1024, EPISODE),
]
PEERS = ["numba-kernel N=1", "numba-kernel N=1024", "naive numpy gymnasium.Env", "gym-anytrading StocksEnv",
         GTE, "tensortrade default.create"]
RATIOS = [  # (numerator, denominator, what it shows)
    (SEQ, RAW_SEQ, "sequential: share of the raw kernel run the same way (lockstep), N=1024 (aim >= 0.5)"),
    (RAND, RAW_RAND, "random starts: share of the raw kernel run the same way (random starts), N=1024 (aim >= 0.5)"),
    (SEQ, GTE, "sequential vs Gym-Trading-Env, N=1024 (aim >= 100)"),
    (RAND, GTE, "random starts vs Gym-Trading-Env, N=1024 (aim >= 100)"),
    (RAND, SEQ, "what random starts cost spotgym (random / sequential)"),
    (RAW_RAND, RAW_SEQ, "what random starts cost the raw kernel (random / lockstep)"),
    ("spotgym VecTradingEnv N=64", "raw kernel (our payload) N=64", "share of the raw kernel, N=64 (lockstep)"),
    ("spotgym VecTradingEnv N=1", "raw kernel (our payload) N=1", "share of the raw kernel, N=1 (lockstep)"),
    (SEQ, "gym-anytrading StocksEnv", "vs gym-anytrading, N=1024"),
    (SEQ, "tensortrade default.create", "vs TensorTrade, N=1024"),
    ("spotgym TradingEnv (gymnasium)", GTE, "single env vs Gym-Trading-Env"),
    ("spotgym TradingEnv (gymnasium)", "naive numpy gymnasium.Env", "single env vs the harness's naive env"),
    (RAW_SEQ, "numba-kernel N=1024", "our payload vs the harness's 32x1 payload (raw, lockstep)"),
]

def log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)


def build_frame_npz(tmp: str) -> tuple[str, dict]:
    from peers_adapter import DATASET, build_frame, save_frame

    frame = build_frame()
    path = os.path.join(tmp, "eth_5m_frame.npz")
    save_frame(frame, path)
    return path, {"dataset": DATASET, "rows": len(frame), "features": frame.n_features, "symbol": frame.symbol,
                  "columns": list(frame.columns)}


def throughput(args, rp, pa, tmp: str) -> tuple[dict, dict]:
    from peers_adapter import RANDOM_EPISODE_LENGTH

    assert EPISODE == RANDOM_EPISODE_LENGTH, "the random-start rows must time one whole episode"
    data = pa.make_ohlcv(args.rows, args.seed)
    data_path = os.path.join(tmp, "ohlcv.npz")
    np.savez(data_path, **data)
    digest = pa.data_digest(data)
    reg = pa.registry()
    entries = []  # (label, python, init message, calls)
    if args.peers:
        for name in PEERS:
            spec = reg[name]
            python = args.tt_python if spec.venv == "tensortrade" else args.peers_python
            entries.append((name, python, {"name": name}, spec.calls))
    for label, func, n, calls in OURS:
        entries.append((label, sys.executable, {"name": label, "project": f"{ADAPTER}:{func}", "num_envs": n,
                                                 "project_cwd": REPO}, calls))
    log_dir = os.path.join(args.out_dir, "logs", args.stamp)
    os.makedirs(log_dir, exist_ok=True)
    workers, results, skipped = {}, {}, {}
    for label, python, msg, calls in entries:
        if not (os.path.isfile(python) and os.access(python, os.X_OK)):
            skipped[label] = f"interpreter {python} not found"
            log(f"skip {label}: {skipped[label]}")
            continue
        safe = "".join(c if c.isalnum() else "_" for c in label)
        w = rp.WorkerProc(label, python, os.path.join(log_dir, f"{safe}.log"))
        rep = w.call({"cmd": "init", "data": data_path, "window": args.window, "fee": args.fee, "seed": args.seed,
                      **msg}, args.timeout)
        if not rep.get("ok"):
            skipped[label] = rep.get("error", "?")
            log(f"skip {label}: {skipped[label]}")
            w.kill()
            w.close()
            continue
        if rep["data_digest"] != digest:
            skipped[label] = "data digest mismatch"
            w.close()
            continue
        workers[label] = (w, calls if label in (RAND, RAW_RAND) else max(1, int(round(calls * args.scale))))
        results[label] = {"init": rep, "rounds": []}
        log(f"ready {label} (build {rep['build_s']:.2f}s, api {rep['api']})")
    rng = random.Random(args.seed)
    for rnd in range(args.rounds + 1):
        order = list(workers)
        rng.shuffle(order)
        for label in order:
            if label not in workers:
                continue
            w, calls = workers[label]
            rep = w.call({"cmd": "run", "calls": max(1, calls // 10) if rnd == 0 else calls, "seed": args.seed + rnd},
                         args.timeout)
            if not rep.get("ok"):
                skipped[label] = f"failed in round {rnd}: {rep.get('error')}"
                log(f"drop {label}: {skipped[label]}")
                w.kill()
                w.close()
                del workers[label]
                results[label]["rounds"] = []
                continue
            if rnd:
                results[label]["rounds"].append(rep)
        if rnd:
            log(f"round {rnd}: " + ", ".join(f"{k}={rp._fmt_rate(results[k]['rounds'][-1]['steps_per_s'])}"
                                             for k in workers))
    for w, _ in workers.values():
        w.close()
    for label in list(results):
        if len(results[label]["rounds"]) != args.rounds:
            results[label]["rounds"] = []
    return {"results": results, "skipped": skipped, "digest": digest}


def summarize(tp: dict) -> tuple[list, list]:
    rows = []
    for label, r in tp["results"].items():
        rates = [x["steps_per_s"] for x in r["rounds"]]
        if not rates:
            continue
        rows.append({"env": label, "median": statistics.median(rates), "min": min(rates), "max": max(rates),
                     "us_per_call": statistics.median(x["step_s"] / x["calls"] * 1e6 for x in r["rounds"]),
                     "num_envs": r["init"]["num_envs"], "rss_mb": r["rounds"][-1]["rss_mb"]})
    rows.sort(key=lambda x: -x["median"])
    ratios = []
    res = tp["results"]
    for num, den, what in RATIOS:
        a, b = res.get(num, {}).get("rounds"), res.get(den, {}).get("rounds")
        if a and b:
            per_round = [x["steps_per_s"] / y["steps_per_s"] for x, y in zip(a, b)]
            ratios.append({"ratio": statistics.median(per_round), "min": min(per_round), "max": max(per_round),
                           "num": num, "den": den, "what": what})
    return rows, ratios


# --------------------------------------------------------------------------- PPO
def ppo_spotgym(kind: str, frame, n_envs: int, n_steps: int, timesteps: int, seed: int, window: int,
                fee: float) -> dict:
    """PPO fps on VecTradingEnv or DummyVecEnv(TradingEnv); env time = inside the vec env."""
    import torch
    from peers_adapter import bench_config
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

    from spotgym.envs import TradingEnv, VecTradingEnv

    class TimedVec(VecEnvWrapper):
        def __init__(self, venv):
            super().__init__(venv)
            self.step_s = self.reset_s = 0.0

        def reset(self):
            t = time.perf_counter()
            out = self.venv.reset()
            self.reset_s += time.perf_counter() - t
            return out

        def step_wait(self):
            t = time.perf_counter()
            out = self.venv.step_wait()
            self.step_s += time.perf_counter() - t
            return out

        def step_async(self, actions):
            t = time.perf_counter()
            self.venv.step_async(actions)
            self.step_s += time.perf_counter() - t

    class PhaseTimer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.rollout_s = 0.0
            self._t = 0.0

        def _on_rollout_start(self):
            self._t = time.perf_counter()

        def _on_rollout_end(self):
            self.rollout_s += time.perf_counter() - self._t

        def _on_step(self):
            return True

    cfg = bench_config(window, fee, episode_length=2048)
    if kind == "VecTradingEnv":
        base = VecTradingEnv(frame, n_envs, cfg)
    else:
        base = DummyVecEnv([lambda: TradingEnv(frame, cfg) for _ in range(n_envs)])
    venv = TimedVec(base)
    model = PPO("MlpPolicy", venv, n_steps=n_steps, seed=seed, device="cpu", verbose=0)
    cb = PhaseTimer()
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps, callback=cb, progress_bar=False)
    wall = time.perf_counter() - t0
    env_s = venv.step_s + venv.reset_s
    return {"env": f"spotgym {kind}", "fps": model.num_timesteps / wall, "wall_s": wall, "env_s": env_s,
            "env_share": env_s / wall, "env_us_per_step": venv.step_s / model.num_timesteps * 1e6,
            "rollout_share": cb.rollout_s / wall, "update_share": 1 - cb.rollout_s / wall,
            "num_timesteps": int(model.num_timesteps), "obs_dim": int(np.prod(venv.observation_space.shape)),
            "torch_threads": torch.get_num_threads()}


def ppo_section(args, rp, data_path_frame: str, tmp: str) -> dict:
    from peers_adapter import load_frame

    os.environ["SPOTGYM_BENCH_FRAME"] = data_path_frame
    frame = load_frame()
    runs: dict[str, list] = {}
    peer_workers = {}
    if args.peers:
        data_path = os.path.join(tmp, "ohlcv.npz")
        for env in ("naive", "gym-trading-env"):
            w = rp.WorkerProc(f"ppo:{env}", args.peers_python, os.path.join(args.out_dir, "logs", args.stamp,
                                                                            f"ppo_{env}.log"))
            rep = w.call({"cmd": "ppo_init", "env": env, "data": data_path, "window": args.window, "fee": args.fee,
                          "seed": args.seed, "timesteps": args.ppo_timesteps, "n_envs": 8,
                          "n_steps": args.ppo_n_steps}, args.timeout)
            if rep.get("ok"):
                peer_workers[env] = w
            else:
                log(f"PPO skip {env}: {rep.get('error')}")
                w.kill()
                w.close()
    # warm-up (torch / SB3 lazy init, numba compile) outside the timing
    for kind in ("VecTradingEnv", "DummyVecEnv"):
        ppo_spotgym(kind, frame, 8, 64, 8 * 64, args.seed, args.window, args.fee)
    rng = random.Random(args.seed)
    for rep_i in range(args.ppo_repeats):
        jobs = ["VecTradingEnv", "DummyVecEnv"] + list(peer_workers)
        rng.shuffle(jobs)
        for job in jobs:
            if job in peer_workers:
                out = peer_workers[job].call({"cmd": "ppo", "seed": args.seed + rep_i}, args.timeout)
                if not out.get("ok"):
                    log(f"PPO {job} failed: {out.get('error')}")
                    continue
                out = {"env": f"harness {job}", "fps": out["fps"], "wall_s": out["wall_s"],
                       "env_share": out["env_share"], "env_us_per_step": out["env_step_s"] / out["num_timesteps"] * 1e6,
                       "rollout_share": out["rollout_s"] / out["wall_s"], "update_share": out["train_s"] / out["wall_s"],
                       "num_timesteps": out["num_timesteps"], "obs_dim": int(np.prod(out["obs_shape"])),
                       "torch_threads": out["torch_threads"]}
            else:
                out = ppo_spotgym(job, frame, 8, args.ppo_n_steps, args.ppo_timesteps, args.seed + rep_i,
                                  args.window, args.fee)
            runs.setdefault(out["env"], []).append(out)
            log(f"PPO {out['env']} repeat {rep_i}: {out['fps']:,.0f} fps, env share {out['env_share']:.1%}")
    for w in peer_workers.values():
        w.close()
    summary = []
    for env, rs in runs.items():
        summary.append({"env": env, "fps": statistics.median(r["fps"] for r in rs),
                        "env_share": statistics.median(r["env_share"] for r in rs),
                        "env_us_per_step": statistics.median(r["env_us_per_step"] for r in rs),
                        "rollout_share": statistics.median(r["rollout_share"] for r in rs),
                        "update_share": statistics.median(r["update_share"] for r in rs),
                        "obs_dim": rs[0]["obs_dim"], "torch_threads": rs[0]["torch_threads"], "n": len(rs)})
    return {"runs": runs, "summary": summary}


# --------------------------------------------------------------------------- report
def fmt_rate(x: float) -> str:
    return f"{x / 1e6:,.2f} M" if x >= 1e6 else f"{x / 1e3:,.1f} k" if x >= 1e3 else f"{x:,.0f}"


def render(report: dict) -> str:
    a = report["args"]
    lines = [f"Run {report['started_utc']} on {report['machine']['cpu']} ({report['machine']['nproc']} cores), "
             f"{a['rounds']} timed rounds after one warm-up round; spotgym on {report['frame']['dataset']} "
             f"({report['frame']['rows']:,} rows x {report['frame']['features']} features), window {a['window']}, "
             f"fee {a['fee']:.2%}, buy/sell/hold all-in with Binance ETH/USDT filters; peers on the harness's "
             f"{a['rows']:,} synthetic rows.", "",
             "| env | env-steps/s (median) | min – max | µs per call |", "|---|---:|---:|---:|"]
    for r in report["summary"]:
        lines.append(f"| {r['env']} | {fmt_rate(r['median'])} | {fmt_rate(r['min'])} – {fmt_rate(r['max'])} | "
                     f"{r['us_per_call']:.2f} |")
    lines += ["", "Ratios (median of per-round ratios):", "", "| ratio | value | min – max | what |",
              "|---|---:|---:|---|"]
    for r in report["ratios"]:
        lines.append(f"| {r['num']} / {r['den']} | {r['ratio']:.3g} | {r['min']:.3g} – {r['max']:.3g} | {r['what']} |")
    for name, why in report["skipped"].items():
        lines.append(f"- skipped **{name}**: {why}")
    if report.get("ppo"):
        lines += ["", f"SB3 PPO, MlpPolicy, CPU, 8 envs, n_steps={a['ppo_n_steps']}, {a['ppo_timesteps']:,} "
                  f"timesteps per learn(), {a['ppo_repeats']} repeats interleaved (medians). 'env share' = time "
                  "inside the vec env's step/reset over learn() wall time.", "",
                  "| setup | obs dim | fps | env share | env µs per env-step | rollout share | update share |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in report["ppo"]["summary"]:
            lines.append(f"| {r['env']} | {r['obs_dim']} | {r['fps']:,.0f} | {r['env_share']:.1%} | "
                         f"{r['env_us_per_step']:.2f} | {r['rollout_share']:.1%} | {r['update_share']:.1%} |")
    lines += ["", "Command:", "", "```", report["command"], "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--harness", default=DEFAULT_HARNESS, help="the peers harness directory")
    p.add_argument("--peers-python", default=os.path.join(PEERS_ROOT, "venv", "bin", "python"))
    p.add_argument("--tt-python", default=os.path.join(PEERS_ROOT, "venv-tt", "bin", "python"))
    p.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every env's calls per round (the random-start rows keep one episode)")
    p.add_argument("--rows", type=int, default=100_000, help="synthetic rows for the peers")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--fee", type=float, default=0.001)
    p.add_argument("--timeout", type=float, default=1200.0)
    p.add_argument("--no-ppo", dest="ppo", action="store_false")
    p.add_argument("--no-throughput", dest="throughput", action="store_false", help="PPO section only")
    p.add_argument("--ppo-repeats", type=int, default=3)
    p.add_argument("--ppo-timesteps", type=int, default=20_480)
    p.add_argument("--ppo-n-steps", type=int, default=256)
    p.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.harness, "run_peers.py")):
        p.error(f"no peers harness at {args.harness} (--harness)")
    if args.harness not in sys.path:
        sys.path.insert(0, args.harness)
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    import peer_adapters as pa
    import run_peers as rp

    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    args.stamp = started.replace(":", "").replace("-", "")
    os.makedirs(os.path.join(args.out_dir, "logs", args.stamp), exist_ok=True)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="spotgym_bench_") as tmp:
        frame_npz, frame_meta = build_frame_npz(tmp)
        os.environ["SPOTGYM_BENCH_FRAME"] = frame_npz  # inherited by the workers
        log(f"frame: {frame_meta['rows']:,} rows x {frame_meta['features']} features")
        if args.throughput:
            tp = throughput(args, rp, pa, tmp)
        else:
            np.savez(os.path.join(tmp, "ohlcv.npz"), **pa.make_ohlcv(args.rows, args.seed))
            tp = {"results": {}, "skipped": {}}
        summary, ratios = summarize(tp)
        ppo = ppo_section(args, rp, frame_npz, tmp) if args.ppo else None
    report = {"started_utc": started, "command": " ".join([sys.executable] + sys.argv),
              "args": {k: v for k, v in vars(args).items()}, "frame": frame_meta,
              "machine": {"cpu": rp._cpu_name(), "nproc": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "throughput": tp["results"], "skipped": tp["skipped"], "summary": summary, "ratios": ratios,
              "ppo": ppo, "wall_s": time.perf_counter() - t_start}
    md = render(report)
    base = os.path.join(args.out_dir, f"bench_env_{args.stamp}")
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1, default=rp._json_default)
    with open(base + ".md", "w") as f:
        f.write(md)
    for ext in ("json", "md"):
        with open(base + "." + ext) as src, open(os.path.join(args.out_dir, f"bench_env_latest.{ext}"), "w") as dst:
            dst.write(src.read())
    print()
    print(md)
    log(f"wrote {base}.json/.md in {report['wall_s']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
