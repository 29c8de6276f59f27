"""What the dashboard shows, found on disk: run directories, their backtests, Optuna studies and live journals.

A run directory holds ``config.yaml`` and ``manifest.json`` (``spotgym train``), ``metrics.json`` (its model
selection), ``backtest/<split>/{metrics.json, trades.csv, decisions.csv, equity.csv}`` (``spotgym backtest``; a
pooled run adds ``<split>/<SYMBOL>/``), ``live/<session>/journal.sqlite`` (``spotgym live run``) and, for a fold of
``spotgym evaluate``, a ``walkforward.json`` two folders up. Studies are the ``study.db`` files ``spotgym tune``
writes (``tune-<name>/study.db``) or storage URLs given on the command line.

Every ``--runs`` root is walked on each scan (cheap: a run directory is not descended into); what each run's
files say is cached by the files' modification times, so a scan of 500 unchanged runs reads no file.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = ["Catalog", "RunSummary", "Scan", "SplitData", "StudyRef", "redact_url", "short_id"]

SKIP_DIRS = {"tensorboard", "wandb", "predictors", "__pycache__", "node_modules", "checkpoints", "backtest", "live"}
MAX_DEPTH = 8
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def short_id(*parts: str) -> str:
    """A stable 12-hex id of a path or URL (what page URLs carry instead of file system paths)."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:12]


def redact_url(url: str) -> str:
    """A database URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunSummary:
    """One run directory, as the Runs page and ``GET /api/runs`` show it."""

    id: str
    path: Path
    name: str
    experiment: str | None
    created: str | None
    algo: str | None
    symbol: str | None
    timeframe: str | None
    selected: str | None  # the model selection: agent / cash / ensemble
    splits: tuple[str, ...]
    metrics: dict[str, Any] | None  # the test split's metrics.json: {"agent": {...}, "baselines": {...}}
    journals: tuple[Path, ...]
    data_path: str | None
    gap_policy: str
    problem: str | None = None

    def api(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "path": str(self.path), "experiment": self.experiment,
                "created": self.created, "algo": self.algo, "symbol": self.symbol, "timeframe": self.timeframe,
                "selected": self.selected, "splits": list(self.splits), "metrics": self.metrics,
                "live_sessions": len(self.journals)}

    @property
    def agent(self) -> dict[str, Any]:
        return (self.metrics or {}).get("agent") or {}

    @property
    def hold(self) -> dict[str, Any]:
        return ((self.metrics or {}).get("baselines") or {}).get("buy_and_hold") or {}


@dataclass(frozen=True)
class StudyRef:
    """An Optuna storage: a ``study.db`` under a runs root, or a URL given with ``--study``."""

    id: str
    url: str
    where: str  # the folder (a found study.db) or the redacted URL


@dataclass
class Scan:
    runs: list[RunSummary] = field(default_factory=list)
    studies: list[StudyRef] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass
class SplitData:
    """One backtest folder, read: what the Run page draws."""

    name: str
    path: Path
    metrics: dict[str, Any]
    trades: pd.DataFrame
    equity: pd.DataFrame
    decisions: pd.DataFrame | None
    bars: pd.DataFrame | None
    bars_note: str | None


def _splits(run: Path) -> tuple[str, ...]:
    """Backtest folders of a run holding a metrics.json (``test`` and ``val`` first, pooled symbols after each)."""
    root = run / "backtest"
    found: list[str] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return ()
    for entry in entries:
        if not entry.is_dir():
            continue
        if os.path.isfile(os.path.join(entry.path, "metrics.json")):
            found.append(entry.name)
        for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
            if sub.is_dir() and os.path.isfile(os.path.join(sub.path, "metrics.json")):
                found.append(f"{entry.name}/{sub.name}")
    order = {"test": 0, "val": 1}
    return tuple(sorted(found, key=lambda s: (order.get(s.split("/")[0], 2), s)))


class Catalog:
    """``Catalog(roots, studies=())``: ``scan()`` the roots; ``run(id)``, ``split(run, name)``, ``bars(...)``."""

    def __init__(self, roots: list[str | Path], studies: list[str] = ()) -> None:
        self.roots = [Path(r).expanduser() for r in roots]
        self.extra_studies = list(studies)
        self._lock = threading.Lock()
        self._runs: dict[Path, tuple[tuple[int, ...], RunSummary]] = {}
        self._last = Scan()
        self._splits: OrderedDict[tuple[str, str], tuple[tuple[int, ...], SplitData]] = OrderedDict()
        self._bars: OrderedDict[tuple[str, int], pd.DataFrame] = OrderedDict()
        self._configs: dict[Path, tuple[int, dict[str, Any]]] = {}

    # ------------------------------------------------------------------ scanning
    def scan(self) -> Scan:
        scan = Scan()
        seen: set[Path] = set()
        for root in self.roots:
            if not root.is_dir():
                scan.problems.append(f"runs folder {root} does not exist")
                continue
            self._walk(root.resolve(), root.resolve(), 0, scan, seen)
        for url in self.extra_studies:
            scan.studies.append(StudyRef(short_id(url), url, redact_url(url)))
        scan.runs.sort(key=lambda r: (r.created or "", r.name), reverse=True)
        with self._lock:
            self._last = scan
            alive = {r.path for r in scan.runs}
            for path in [p for p in self._runs if p not in alive]:
                del self._runs[path]
        return scan

    @property
    def last(self) -> Scan:
        return self._last

    def _walk(self, root: Path, folder: Path, depth: int, scan: Scan, seen: set[Path]) -> None:
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            scan.problems.append(f"cannot list {folder}: {exc.strerror}")
            return
        names = {e.name for e in entries}
        if "config.yaml" in names and "manifest.json" in names:
            if folder not in seen:
                seen.add(folder)
                scan.runs.append(self._summary(root, folder))
            return
        if "study.db" in names:
            url = f"sqlite:///{folder / 'study.db'}"
            scan.studies.append(StudyRef(short_id(url), url, str(folder)))
        if depth >= MAX_DEPTH:
            return
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or entry.name in SKIP_DIRS:
                continue
            if entry.is_dir(follow_symlinks=False):
                self._walk(root, Path(entry.path), depth + 1, scan, seen)

    def _summary(self, root: Path, run: Path) -> RunSummary:
        files = (run / "manifest.json", run / "metrics.json", run / "config.yaml", run / "backtest",
                 run / "backtest" / "test" / "metrics.json", run / "live")
        stamp = tuple(_stamp(p) for p in files)
        cached = self._runs.get(run)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        manifest = _json(run / "manifest.json") or {}
        selection = _json(run / "metrics.json") or {}
        config = self.config(run)
        metrics = _json(run / "backtest" / "test" / "metrics.json")
        if not isinstance(metrics, dict) or "agent" not in metrics:
            metrics = None
        journals = tuple(sorted((run / "live").glob("*/journal.sqlite"))) if stamp[5] else ()
        data = config.get("data") or {}
        name = run.name if run == root else run.relative_to(root).as_posix()
        summary = RunSummary(
            id=short_id(str(run)), path=run, name=name,
            experiment=manifest.get("experiment") or config.get("name"), created=manifest.get("created"),
            algo=(config.get("agent") or {}).get("algo"),
            symbol=(manifest.get("venue") or {}).get("symbol") or data.get("symbol"),
            timeframe=(manifest.get("data") or {}).get("timeframe") or data.get("timeframe"),
            selected=selection.get("selected", "agent") if selection else None,
            splits=_splits(run) if stamp[3] else (), metrics=metrics, journals=journals,
            data_path=data.get("path"), gap_policy=data.get("gap_policy") or "mark",
            problem=None if manifest else "manifest.json cannot be read")
        self._runs[run] = (stamp, summary)
        return summary

    def config(self, run: Path) -> dict[str, Any]:
        path = run / "config.yaml"
        stamp = _stamp(path)
        cached = self._configs.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
        except (OSError, yaml.YAMLError):
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        self._configs[path] = (stamp, doc)
        return doc

    # ------------------------------------------------------------------ lookups
    def run(self, run_id: str) -> RunSummary | None:
        for scan in (self._last, None):
            scan = scan or self.scan()
            for run in scan.runs:
                if run.id == run_id:
                    return run
        return None

    def run_at(self, path: str | Path | None) -> RunSummary | None:
        """The run found at ``path`` (a study's best trial, a live session's run), if it is under a root."""
        if not path:
            return None
        try:
            target = Path(path).expanduser().resolve()
        except OSError:
            return None
        for run in self._last.runs or self.scan().runs:
            if run.path == target:
                return run
        return None

    def study(self, study_id: str) -> StudyRef | None:
        for scan in (self._last, None):
            scan = scan or self.scan()
            for ref in scan.studies:
                if ref.id == study_id:
                    return ref
        return None

    def walkforward(self, run: RunSummary) -> dict[str, Any] | None:
        """The ``walkforward.json`` of the evaluation this run is a fold of (or of the run folder itself)."""
        for folder in (run.path, run.path.parent, run.path.parent.parent):
            doc = _json(folder / "walkforward.json")
            if isinstance(doc, dict) and doc.get("folds"):
                if folder == run.path or any(str(f.get("run_dir", "")).rstrip("/") == str(run.path)
                                             for f in doc["folds"]):
                    return doc
        return None

    # ------------------------------------------------------------------ one backtest
    def split(self, run: RunSummary, name: str) -> SplitData:
        if name not in run.splits:
            raise KeyError(name)
        folder = run.path / "backtest" / name
        files = [folder / f for f in ("metrics.json", "trades.csv", "equity.csv", "decisions.csv")]
        stamp = tuple(_stamp(p) for p in files)
        key = (str(run.path), name)
        with self._lock:
            cached = self._splits.get(key)
            if cached is not None and cached[0] == stamp:
                self._splits.move_to_end(key)
                return cached[1]
        metrics = _json(files[0]) or {}
        trades = pd.read_csv(files[1]) if stamp[1] else pd.DataFrame(
            columns=["timestamp", "side", "price", "quantity", "notional", "fee"])
        equity = pd.read_csv(files[2]) if stamp[2] else pd.DataFrame(columns=["timestamp", "equity"])
        decisions = pd.read_csv(files[3], keep_default_na=False) if stamp[3] else None
        for frame in (trades, equity, decisions):
            if frame is not None and "timestamp" in frame.columns:
                frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
        bars, note = self._split_bars(run, name, equity)
        data = SplitData(name, folder, metrics, trades, equity, decisions, bars, note)
        with self._lock:
            self._splits[key] = (stamp, data)
            while len(self._splits) > 8:
                self._splits.popitem(last=False)
        return data

    def _split_bars(self, run: RunSummary, name: str, equity: pd.DataFrame) -> tuple[pd.DataFrame | None, str | None]:
        """The price bars over the backtest's span: the run's data file, or (for a ``--data`` backtest) a file beside
        it whose name starts as the backtest folder's does."""
        if len(equity) < 2:
            return None, "the backtest has no equity curve"
        if "/" in name:
            return None, f"price bars of pooled symbol {name.split('/')[1]} are not drawn"
        first = pd.Timestamp(equity["timestamp"].iloc[0])
        last = pd.Timestamp(equity["timestamp"].iloc[-1])
        first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
        last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
        candidates: list[str] = []
        if run.data_path:
            candidates.append(run.data_path)
            parent = Path(run.data_path).expanduser().parent
            stem = name.split("_")[0]
            if name not in ("test", "val") and parent.is_dir():
                candidates += [str(p) for p in sorted(parent.glob(f"{stem}*")) if str(p) != run.data_path]
        if not candidates:
            return None, "the run's config names no data file"
        problem = None
        for source in candidates:
            try:
                bars = self.bars(source, run.symbol, run.gap_policy)
            except Exception as exc:  # a missing or unreadable data file: the page says so
                problem = f"price data {source} cannot be read ({type(exc).__name__}: {str(exc)[:160]})"
                continue
            if len(bars) and bars.index[0] <= first and bars.index[-1] >= last:
                return bars.loc[first:last], None
            problem = f"price data {source} does not cover {first:%Y-%m-%d %H:%M} → {last:%Y-%m-%d %H:%M}"
        return None, problem

    def bars(self, source: str, symbol: str | None, gap_policy: str) -> pd.DataFrame:
        from spotgym.data import load_bars

        path = Path(source).expanduser()
        key = (f"{path}|{symbol}|{gap_policy}", _stamp(path))
        with self._lock:
            if key in self._bars:
                self._bars.move_to_end(key)
                return self._bars[key]
        bars = load_bars(source, gap_policy if gap_policy != "fail" else "mark", symbol=symbol)
        bars = bars[["open", "high", "low", "close"]]
        with self._lock:
            self._bars[key] = bars
            while len(self._bars) > 3:
                self._bars.popitem(last=False)
        return bars
