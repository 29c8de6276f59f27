"""The venue: an exchange's trading rules (``TradingRules``, one class for the env, the replay exchange and
live trading) and the ccxt client factory (``make_exchange``) for live, testnet, demo and the replay exchange."""

from spotgym.venue.client import MODES, SPOT_ONLY_OPTIONS, make_exchange, rehost_urls
from spotgym.venue.rules import KERNEL_FIELDS, TradingRules, UnknownSymbol, known_symbols, normalize_symbol, rules_for

__all__ = [
    "KERNEL_FIELDS",
    "MODES",
    "SPOT_ONLY_OPTIONS",
    "TradingRules",
    "UnknownSymbol",
    "known_symbols",
    "make_exchange",
    "normalize_symbol",
    "rehost_urls",
    "rules_for",
]
