"""The small core every layer may use: the ``FeatureFrame``, config validation helpers, stable hashes and
number formatting. It imports nothing else from spotgym."""

from spotgym.core.fmt import num, pct
from spotgym.core.frame import FeatureFrame
from spotgym.core.hashing import array_digest, stable_hash

__all__ = ["FeatureFrame", "array_digest", "num", "pct", "stable_hash"]
