"""The replay exchange: a local Binance-shaped server over historical bars, for ccxt clients.

``state`` (symbols, rules, bar series, clock), ``faults`` (scripted failures), ``errors`` (Binance's error
replies), ``rest`` (the routes), ``app`` (``create_app``, ``serve_in_thread``).
"""

from spotgym.sim.app import RecordedRequest, create_app, serve, serve_in_thread
from spotgym.sim.errors import BinanceError
from spotgym.sim.faults import Faults
from spotgym.sim.market import Market
from spotgym.sim.state import BINANCE_INTERVALS, ReplayExchange

__all__ = [
    "BINANCE_INTERVALS",
    "BinanceError",
    "Faults",
    "Market",
    "RecordedRequest",
    "ReplayExchange",
    "create_app",
    "serve",
    "serve_in_thread",
]
