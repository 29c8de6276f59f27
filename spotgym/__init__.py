"""spotgym: a reinforcement-learning research environment for crypto spot trading."""

__version__ = "0.1.0"
__all__ = ["__version__"]
