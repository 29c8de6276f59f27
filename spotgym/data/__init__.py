"""Data: download (ccxt), cache, loading and validation of bars, resampling, walk-forward folds."""

from spotgym.data.cache import cache_path, default_data_dir
from spotgym.data.io import GAP_POLICIES, inspect_bars, load_bars, read_raw
from spotgym.data.resample import resample_bars
from spotgym.data.splits import Fold, WalkForward
from spotgym.data.timeframes import ms_to_timeframe, timeframe_to_ms
from spotgym.data.validate import BarsError, BarsReport, Gap

__all__ = [
    "GAP_POLICIES",
    "BarsError",
    "BarsReport",
    "Fold",
    "Gap",
    "WalkForward",
    "cache_path",
    "default_data_dir",
    "inspect_bars",
    "load_bars",
    "ms_to_timeframe",
    "read_raw",
    "resample_bars",
    "timeframe_to_ms",
]
