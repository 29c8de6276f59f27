"""Reading bars from CSV / CSV.gz / parquet files and the download cache into one validated shape."""

from __future__ import annotations

import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from spotgym.data.cache import cache_path, parse_cache_spec
from spotgym.data.timeframes import ms_to_timeframe, timeframe_to_ms
from spotgym.data.validate import (
    OHLCV_COLUMNS,
    SPIKE_RATIO,
    BarsError,
    BarsReport,
    find_gaps,
    find_suspicious,
    validate_raw,
)

GapPolicy = Literal["fail", "mark", "fill"]
GAP_POLICIES = ("fail", "mark", "fill")
_TF_IN_NAME = re.compile(r"[_-](\d+[smhdw])(?:\.csv(?:\.gz)?|\.parquet|\.feather)$")
_PAIR_IN_NAME = re.compile(r"^([A-Z0-9]{2,}?)(USDT|USDC|FDUSD|BUSD|TUSD|BTC|ETH|BNB|EUR|TRY)$")
_CACHE_NAME = re.compile(r"^([A-Z0-9]+)_([A-Z0-9]+)-\d+[SMHDW]")


def resolve_source(source: str | os.PathLike) -> Path:
    """A file path, or a cache spec ``exchange:SYMBOL:timeframe`` mapped to its cache file."""
    text = str(source)
    path = Path(text).expanduser()
    if not path.exists() and text.count(":") == 2 and "/" in text.split(":")[1]:
        path = cache_path(*parse_cache_spec(text))
        if not path.exists():
            raise FileNotFoundError(f"{path} not in the cache: run `spotgym data download` for {text!r} first")
    if not path.exists():
        raise FileNotFoundError(f"bar file {path} does not exist")
    return path


def read_raw(path: str | os.PathLike) -> pd.DataFrame:
    """The file's rows as stored: ``timestamp`` (ms) + OHLCV columns, no checks yet.

    A file that cannot be read as bars (a directory, an empty file, a truncated or non-gzip ``.gz``, text
    that is not UTF-8, a CSV that does not parse, a corrupt parquet / feather file, an unsupported
    extension) raises ``BarsError`` naming the file and the problem; a missing file raises
    ``FileNotFoundError``.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        raise BarsError(str(path), "is a directory, not a bar file")
    if name.endswith((".csv", ".csv.gz")):
        kind = "csv"
    elif name.endswith((".parquet", ".feather")):
        kind = name.rsplit(".", 1)[1]
    else:
        raise BarsError(str(path), "unsupported file type: expected .csv, .csv.gz, .parquet or .feather")
    try:
        if path.stat().st_size == 0:
            raise BarsError(str(path), "empty file (0 bytes)")
        if kind == "csv":
            df = pd.read_csv(path)
        elif kind == "parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_feather(path)
    except (BarsError, FileNotFoundError, ImportError, MemoryError):
        raise
    except Exception as exc:
        raise BarsError(str(path), _read_problem(path, kind, exc)) from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "timestamp" not in df.columns and "date" in df.columns:  # freqtrade's layout
        df = df.rename(columns={"date": "timestamp"})
    if "timestamp" in df.columns and pd.api.types.is_datetime64_any_dtype(df["timestamp"]):
        stamps = pd.DatetimeIndex(df["timestamp"])
        stamps = stamps.tz_localize("UTC") if stamps.tz is None else stamps.tz_convert("UTC")
        df["timestamp"] = stamps.as_unit("ms").asi8
    return df


_MAGIC = {b"\x1f\x8b": "gzip-compressed data", b"PAR1": "parquet data", b"ARROW1": "Arrow / feather data"}


def _read_problem(path: Path, kind: str, exc: Exception) -> str:
    """One line saying why ``read_raw`` could not read ``path`` (``kind``: csv, parquet or feather)."""
    detail = " ".join(str(exc).split())
    if len(detail) > 200:
        detail = detail[:197] + "..."
    gz = path.name.lower().endswith(".gz")
    if kind != "csv":
        return f"not a readable {kind} file ({type(exc).__name__}: {detail})"
    if isinstance(exc, EOFError) and gz:
        return "truncated gzip file: the compressed data ends before the end-of-stream marker"
    if isinstance(exc, gzip.BadGzipFile):
        return f"not gzip data although the name ends in .gz ({detail})"
    if isinstance(exc, zlib.error):
        return f"corrupt gzip data ({detail})"
    if isinstance(exc, pd.errors.EmptyDataError):
        return "empty file: no header and no rows" + (" after decompression" if gz else "")
    if isinstance(exc, UnicodeDecodeError):
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError:
            head = b""
        what = next((w for magic, w in _MAGIC.items() if head.startswith(magic) and not gz), None)
        if what:
            return f"not CSV text: the file holds {what} (is the extension wrong?)"
        return f"not UTF-8 text: binary or wrongly encoded data (undecodable byte 0x{exc.object[exc.start]:02x})"
    if isinstance(exc, pd.errors.ParserError):
        return f"cannot parse as CSV ({detail})"
    if isinstance(exc, OSError):
        return f"cannot read the file ({exc.strerror or detail})"
    return f"cannot read as CSV ({type(exc).__name__}: {detail})"


def timeframe_from_name(path: str | os.PathLike) -> str | None:
    """The timeframe encoded in a file name (``BINANCE_ETHUSDT_1h.csv.gz`` -> ``1h``), if any."""
    match = _TF_IN_NAME.search(Path(path).name)
    return match.group(1) if match else None


def symbol_from_name(source: str | os.PathLike) -> str | None:
    """The market a bar file or cache spec names, if it names one: ``binance:ETH/USDT:1h``,
    ``BINANCE_ETHUSDT_1h.csv.gz`` or the cache's ``ETH_USDT-1h.parquet`` -> ``ETH/USDT``."""
    text = str(source)
    if text.count(":") == 2 and "/" in text.split(":")[1]:
        return text.split(":")[1].upper()
    stem = Path(text).name.upper()
    cached = _CACHE_NAME.match(stem)
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}"
    for token in re.split(r"[_\-.]", stem):
        pair = _PAIR_IN_NAME.match(token)
        if pair:
            return f"{pair.group(1)}/{pair.group(2)}"
    return None


def inspect_bars(source: str | os.PathLike, timeframe: str | None = None, *,
                 spike_ratio: float = SPIKE_RATIO) -> BarsReport:
    """Validate a bar file strictly and summarise it.

    Raises ``BarsError`` on the first problem (``FileNotFoundError`` for a missing file). The report also
    lists the suspicious bars: formally valid bars with a price over ``spike_ratio`` times (or under
    1/``spike_ratio`` of) the median close of the bars on both sides (``validate.find_suspicious``).
    """
    path = resolve_source(source)
    df = read_raw(path)
    tf = timeframe or timeframe_from_name(path)
    tf_ms = validate_raw(df, str(path), timeframe_to_ms(tf) if tf else None)
    ts = df["timestamp"].to_numpy(np.int64)
    return BarsReport(
        source=str(path),
        rows=len(df),
        timeframe=ms_to_timeframe(tf_ms),
        first_ms=int(ts[0]),
        last_ms=int(ts[-1]),
        gaps=find_gaps(ts, tf_ms),
        zero_volume_rows=int((df["volume"].to_numpy() == 0).sum()),
        suspicious=find_suspicious(df, spike_ratio),
        spike_ratio=spike_ratio,
    )


def load_bars(
    source: str | os.PathLike | pd.DataFrame,
    gap_policy: GapPolicy = "mark",
    *,
    timeframe: str | None = None,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    symbol: str | None = None,
) -> pd.DataFrame:
    """Validated OHLCV bars indexed by UTC open time.

    ``source``: a CSV / CSV.gz / parquet path (``timestamp`` in ms + ``open, high, low, close,
    volume``), a cache spec ``"binance:ETH/USDT:1h"``, or a DataFrame in the same layout.

    ``gap_policy`` says what happens to missing bars — they are never filled silently:

    - ``"fail"``: raise ``BarsError`` naming the first gap;
    - ``"mark"``: keep the bars as they are; the gaps are listed in ``df.attrs["gaps"]``;
    - ``"fill"``: insert flat bars (open = high = low = close = previous close, volume 0) and add a
      boolean ``synthetic`` column that is True exactly on the inserted bars.

    ``start`` / ``end`` (inclusive, UTC) restrict the span after validation. ``symbol`` (e.g.
    ``"ETH/USDT"``) names the market; by default it is read from a cache spec or a file name such as
    ``BINANCE_ETHUSDT_1h.csv.gz`` (the env looks up the symbol's trading rules with it). ``df.attrs``
    holds ``timeframe``, ``source``, ``symbol`` (None when unknown) and ``gaps`` (the gaps of the
    returned span).
    """
    if gap_policy not in GAP_POLICIES:
        raise ValueError(f"gap_policy must be one of {GAP_POLICIES}, got {gap_policy!r}")
    if isinstance(source, pd.DataFrame):
        raw, name = raw_from_frame(source), "<DataFrame>"
        tf = timeframe or source.attrs.get("timeframe")
        symbol = symbol or source.attrs.get("symbol")
    else:
        path = resolve_source(source)
        raw, name = read_raw(path), str(path)
        tf = timeframe or timeframe_from_name(path)
        symbol = symbol or symbol_from_name(source) or symbol_from_name(path)
    if symbol is not None and (not isinstance(symbol, str) or symbol.count("/") != 1 or not all(symbol.split("/"))):
        raise ValueError(f"symbol must look like 'ETH/USDT', got {symbol!r}")
    tf_ms = validate_raw(raw, name, timeframe_to_ms(tf) if tf else None)

    ts = raw["timestamp"].to_numpy(np.int64)
    keep = np.ones(len(ts), bool)
    if start is not None:
        keep &= ts >= _to_ms(start)
    if end is not None:
        keep &= ts <= _to_ms(end)
    if not keep.any():
        raise BarsError(name, f"no bars between start={start} and end={end}")
    raw = raw.loc[keep]
    ts = ts[keep]

    bars = pd.DataFrame(
        raw[list(OHLCV_COLUMNS)].to_numpy(np.float64),
        index=pd.DatetimeIndex(pd.to_datetime(ts, unit="ms", utc=True), name="time"),
        columns=list(OHLCV_COLUMNS),
    )
    gaps = find_gaps(ts, tf_ms)
    if gaps and gap_policy == "fail":
        raise BarsError(name, f"{len(gaps)} gap(s) in the bars, first: {gaps[0]} (gap_policy='fail'; "
                              "use 'mark' to keep them or 'fill' to insert flat zero-volume bars)")
    if gap_policy == "fill":
        bars = _fill_gaps(bars, tf_ms)
    bars.attrs.update(timeframe=ms_to_timeframe(tf_ms), source=name, symbol=symbol.upper() if symbol else None,
                      gaps=gaps)
    return bars


def _fill_gaps(bars: pd.DataFrame, tf_ms: int) -> pd.DataFrame:
    """Reindex onto the full grid; inserted bars are flat at the previous close with volume 0."""
    grid = pd.date_range(bars.index[0], bars.index[-1], freq=pd.Timedelta(milliseconds=tf_ms), name="time")
    filled = bars.reindex(grid)
    synthetic = filled["close"].isna().to_numpy()
    prev_close = filled["close"].ffill()
    for col in ("open", "high", "low", "close"):
        filled[col] = filled[col].fillna(prev_close)
    filled["volume"] = filled["volume"].fillna(0.0)
    filled["synthetic"] = synthetic
    return filled


def raw_from_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Accept a DataFrame with a ``timestamp`` (ms) column or a DatetimeIndex."""
    out = df.copy()
    out.columns = [str(c).lower() for c in out.columns]
    if "timestamp" not in out.columns and isinstance(out.index, pd.DatetimeIndex):
        idx = out.index if out.index.tz is not None else out.index.tz_localize("UTC")
        out.insert(0, "timestamp", idx.as_unit("ms").asi8)
        out = out.reset_index(drop=True)
    return out


def _to_ms(value: str | pd.Timestamp) -> int:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)
