"""The workflows' error types: input problems that the CLI prints as one line naming the problem."""

from __future__ import annotations

__all__ = ["ExperimentError", "TuneError"]


class ExperimentError(ValueError):
    """A bad experiment file or override; the message names the key (and for YAML, the file, line and column)."""


class TuneError(RuntimeError):
    """A study that cannot go on: mismatched experiment, workers failing, a worker process that died."""
