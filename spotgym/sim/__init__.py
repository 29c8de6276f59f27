"""The replay exchange: a local Binance-shaped server over historical bars, for ccxt clients."""

from spotgym.sim.server import (
    BINANCE_INTERVALS,
    BarSeries,
    BinanceError,
    Faults,
    RecordedRequest,
    ReplayExchange,
    SymbolRules,
    create_app,
    serve_in_thread,
)

__all__ = [
    "BINANCE_INTERVALS",
    "BarSeries",
    "BinanceError",
    "Faults",
    "RecordedRequest",
    "ReplayExchange",
    "SymbolRules",
    "create_app",
    "serve_in_thread",
]
