#!/usr/bin/env python
"""Live latency: closed bar received -> order sized, with the quickstart's features and predictors, at 64k bars.

    python bench/bench_stream.py                 # ~2 min on 2 cores; bench/results/bench_stream_<UTC>.{json,md}
    python bench/bench_stream.py --bars 100 --batch-repeats 2     # a quick look
    python bench/bench_stream.py --run runs/quickstart            # a run's fitted predictors/
    python bench/bench_stream.py --fit                            # fit them here (1 epoch) instead

Predictors: the ``predictors/`` of ``--run`` or of the first run under ``runs/`` whose experiment has the
quickstart's features and predictors (``experiments/ethusdt_1h_ppo.yaml``); without one, the quickstart's
models are fitted here with one epoch on the last 20k bars before the streamed span (latency does not
depend on the weights). The history is the shipped ETH/USDT 1h file (64,524 bars); the last ``--bars``
are streamed one at a time after a ``FrameStream`` over everything before them.

Rows, each p50 / p99 over the streamed bars (ms):
- ``FrameStream.update`` (the new way): the bar's frame row, equal to the batch frame's;
  and its parts: the indicators alone (``FeatureStream.push``) and each predictor's ``predict`` on its tail;
- ``decision``: update + ``TradingEnv.append_rows`` + ``step`` (the previous decision marked at the new close)
  + SB3 PPO ``MlpPolicy`` forward (the quickstart's net_arch, fresh weights) + ``plan_order``: what a live
  runner spends between a closed bar and the order it sends, network excluded;
- references measured in the same run (the old ways, per bar at full history): the batch
  ``apply_fitted_predictors`` over every bar so far (what ``_BatchStream`` does), the indicator rebuild
  ``build_features`` alone, and the predictors' own ``update(bar)`` (each rebuilds the indicators over the
  whole history). ``old/new`` = the reference's p50 / ``FrameStream.update``'s p50.
Every streamed row is checked against the batch frame at the end (max |difference|, expected 0).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # spotgym from this checkout; the shared-data locator
from shared_data import shared_file  # noqa: E402

from spotgym.data import load_bars  # noqa: E402
from spotgym.features import build_features  # noqa: E402
from spotgym.predictors import LSTMConfig, RegimeConfig, apply_fitted_predictors, make_predictor  # noqa: E402
from spotgym.predictors.registry import load_predictor  # noqa: E402
from spotgym.predictors.stream import FrameStream  # noqa: E402
from spotgym.workflows.experiment import load_experiment  # noqa: E402

QUICKSTART = ROOT / "experiments" / "ethusdt_1h_ppo.yaml"


def log(msg: str, t0: float = time.perf_counter()) -> None:
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", flush=True)


def pct(times_s: list[float]) -> dict[str, float]:
    ms = 1000 * np.asarray(times_s)
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
            "n": len(ms)}


def find_run(spec_hash: str) -> Path | None:
    """The first run under runs/ whose experiment has ``spec_hash``'s features and predictors."""
    for cfg in sorted((ROOT / "runs").glob("**/config.yaml")):
        folder = cfg.parent / "predictors"
        if not folder.is_dir():
            continue
        try:
            if load_experiment(cfg).frame_spec().hash == spec_hash:
                return cfg.parent
        except Exception:  # noqa: BLE001 - another project's run, an old schema: not ours
            continue
    return None


def fit_quick(spec, bars, folder: Path) -> None:
    """The spec's models with one epoch / a few boosting rounds, fitted as the stacker does (on the indicators)."""
    frame = build_features(bars, spec.features)
    n = len(frame)
    train, val = range(max(0, n - 20_000), n - 1_000), range(n - 900, n - 100)
    for cfg in spec.predictors.models:
        if isinstance(cfg, LSTMConfig):
            cfg = replace(cfg, epochs=1, max_train_windows=4096, device="cpu")
        elif isinstance(cfg, RegimeConfig):
            cfg = replace(cfg, max_iter=30)
        make_predictor(cfg, feature_spec=spec.features).fit(frame, train, val_rows=val).save(folder / cfg.name)


def make_env(exp, frame):
    from spotgym.envs import TradingEnv

    cfg = exp.env_config().replace(start_row=len(frame) - 1, end_row=None, episode_length=None)
    try:
        env = TradingEnv(frame, cfg, live=True)
    except Exception:  # noqa: BLE001 - the venue's rules need the network: the bench does not
        env = TradingEnv(frame, cfg.replace(filters=None), live=True)
    obs, _ = env.reset()
    return env, obs


def make_policy(exp, env):
    """SB3 PPO's ``MlpPolicy`` with the experiment's net_arch (fresh weights: a forward costs the same)."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    net_arch = exp.agent.params.get("policy_kwargs", {}).get("net_arch", [128, 128])
    torch.manual_seed(0)
    return ActorCriticPolicy(env.observation_space, env.action_space, lambda _: 3e-4, net_arch=net_arch).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a run directory with predictors/ (default: search runs/)")
    p.add_argument("--fit", action="store_true", help="fit the predictors here even when a run has them")
    p.add_argument("--bars", type=int, default=300, help="bars streamed one at a time")
    p.add_argument("--batch-repeats", type=int, default=3, help="bars timed for the batch reference")
    p.add_argument("--update-repeats", type=int, default=5, help="bars timed for the predictors' own update()")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    warnings.filterwarnings("ignore", message=".*saved with other library versions.*")

    exp = load_experiment(QUICKSTART)
    spec = exp.frame_spec()
    bars = load_bars(shared_file("BINANCE_ETHUSDT_1h.csv.gz"), exp.data.gap_policy)
    n = len(bars) - args.bars
    tmp = tempfile.TemporaryDirectory(prefix="spotgym_bench_stream_")
    run = Path(args.run) if args.run else None if args.fit else find_run(spec.hash)
    if run is not None:
        folder = run / "predictors"
        source = str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run)
    else:
        folder = Path(tmp.name) / "predictors"
        log("no quickstart run under runs/: fitting its predictors with one epoch")
        fit_quick(spec, bars.iloc[:n], folder)
        source = "fitted here (1 epoch)"
    log(f"ETH/USDT 1h: {len(bars):,} bars, streaming the last {args.bars}; predictors: {source}; "
        f"spec {spec.hash}")

    t0 = time.perf_counter()
    stream = FrameStream(bars.iloc[:n], spec, folder)
    t_init = time.perf_counter() - t0
    log(f"FrameStream over {n:,} bars: {t_init:.1f} s (batch once + replay); window {stream.window}, "
        f"replay max diff {stream.replay_max_diff}")
    env, obs = make_env(exp, stream.frame)
    policy = make_policy(exp, env)
    action, _ = policy.predict(obs, deterministic=True)

    # the new way, bar by bar, inside a whole decision
    t_update, t_features, t_env, t_policy, t_decision = [], [], [], [], []
    t_predict: dict[str, list[float]] = {m.config.name: [] for m, _, _ in stream.models}
    features, models = stream.features, stream.models
    push, predicts = features.push, [m.predict for m, _, _ in models]

    def timed_push(arrays, _push=push):
        t = time.perf_counter()
        out = _push(arrays)
        t_features.append(time.perf_counter() - t)
        return out

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            t_predict[name].append(time.perf_counter() - t)
            return out
        return run

    features.push = timed_push
    for (m, _, _), fn in zip(models, predicts, strict=True):
        m.predict = timed(m.config.name, fn)
    streamed = []
    for i in range(n, len(bars)):
        bar = bars.iloc[i:i + 1]
        t0 = time.perf_counter()
        rows = stream.update(bar)
        t1 = time.perf_counter()
        env.append_rows(rows)
        obs, _, _, _, _ = env.step(action)
        t2 = time.perf_counter()
        action, _ = policy.predict(obs, deterministic=True)
        env.plan_order(action)
        t3 = time.perf_counter()
        t_update.append(t1 - t0)
        t_env.append(t2 - t1)
        t_policy.append(t3 - t2)
        t_decision.append(t3 - t0)
        streamed.append(rows.values)
    features.push = push
    for (m, _, _), fn in zip(models, predicts, strict=True):
        m.predict = fn
    log(f"streamed {args.bars} bars")

    # references: the old ways at full history
    t_batch = []
    for i in range(len(bars) - args.batch_repeats, len(bars)):
        t0 = time.perf_counter()
        batch = apply_fitted_predictors(bars.iloc[:i + 1], spec, folder)
        t_batch.append(time.perf_counter() - t0)
    diff = np.abs(np.vstack(streamed).astype(np.float64) - batch.values[n:].astype(np.float64))
    same_nan = bool((np.isnan(np.vstack(streamed)) == np.isnan(batch.values[n:])).all())
    max_diff = float(np.nanmax(diff)) if np.isfinite(diff).any() else 0.0
    t_build = []
    for i in range(len(bars) - args.update_repeats, len(bars)):
        t0 = time.perf_counter()
        build_features(bars.iloc[:i + 1], spec.features)
        t_build.append(time.perf_counter() - t0)
    t_old_update = []
    olds = [load_predictor(folder / cfg.name, feature_spec=spec.features) for cfg in spec.predictors.models]
    for m in olds:
        m.begin_stream(bars.iloc[:len(bars) - args.update_repeats])
    for i in range(len(bars) - args.update_repeats, len(bars)):
        t0 = time.perf_counter()
        for m in olds:
            m.update(bars.iloc[i])
        t_old_update.append(time.perf_counter() - t0)
    log("references measured")

    new, new_features = pct(t_update), pct(t_features)
    rows = [("FrameStream.update", new), ("  indicators (FeatureStream.push)", new_features)]
    rows += [(f"  {name}.predict on its tail", pct(ts)) for name, ts in t_predict.items()]
    rows += [("  env append + step", pct(t_env)), ("  policy forward + plan_order", pct(t_policy)),
             ("decision (bar -> order sized)", pct(t_decision))]
    # each old way beside the new path that does the same work
    refs = [("batch apply_fitted_predictors (old)", pct(t_batch), "FrameStream.update", new),
            ("build_features over the history (old)", pct(t_build), "FeatureStream.push", new_features),
            ("predictors' own update(bar), summed (old)", pct(t_old_update), "FrameStream.update", new)]
    report = {
        "started_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count(),
                    "load_avg": os.getloadavg(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "history_bars": n, "streamed_bars": args.bars, "predictors": source, "spec_hash": spec.hash,
        "window": stream.window, "init_s": t_init, "replay_max_diff": stream.replay_max_diff,
        "max_abs_diff_vs_batch": max_diff, "same_nan_as_batch": same_nan,
        "rows": {name.strip(): r for name, r in rows}, "references": {name: r for name, r, _, _ in refs},
        "old_over_new_p50": {f"{name} / {vs}": r["p50"] / v["p50"] for name, r, vs, v in refs},
    }
    md = render(report, rows, refs)
    print()
    print(md)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["started_utc"].replace(":", "").replace("-", "")
    for ext, text in (("json", json.dumps(report, indent=1)), ("md", md)):
        (out_dir / f"bench_stream_{stamp}.{ext}").write_text(text)
        (out_dir / f"bench_stream_latest.{ext}").write_text(text)
    log(f"wrote {out_dir}/bench_stream_{stamp}.json/.md")
    tmp.cleanup()
    return 0


def render(report: dict, rows, refs) -> str:
    m = report["machine"]
    lines = [f"# Live latency at {report['history_bars']:,} bars of history ({report['started_utc']})", "",
             f"{m['cpu']}, {m['nproc']} cores (load {m['load_avg'][0]:.2f}), torch threads {m['torch_threads']}; "
             f"predictors: {report['predictors']}; {report['streamed_bars']} bars streamed one at a time; "
             f"FrameStream init {report['init_s']:.1f} s, window {report['window']}.", "",
             "| per bar | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['p50']:.2f} | {r['p99']:.2f} | {r['max']:.2f} |" for name, r in rows]
    lines += ["", "| reference (old way, per bar) | p50 ms | p99 ms | vs | old/new p50 |", "|---|---:|---:|---|---:|"]
    lines += [f"| {name} | {r['p50']:.1f} | {r['p99']:.1f} | {vs} | {r['p50'] / v['p50']:.0f}x |"
              for name, r, vs, v in refs]
    lines += ["", f"streamed rows vs the batch frame: max |difference| {report['max_abs_diff_vs_batch']:.3g}, "
              f"NaN in the same cells: {report['same_nan_as_batch']}; replay over the history: "
              f"{report['replay_max_diff']:.3g}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
