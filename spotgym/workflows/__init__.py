"""Workflows: the research loop above the library. An experiment file (``load_experiment``) goes through
``prepare`` (bars, frame, folds, trading rules) into ``train``, ``tune``, ``backtest`` or ``evaluate``; each
writes a self-describing directory. Nothing below this package runs a workflow, and the CLI is only a
thin shell over it."""

from spotgym.workflows.backtest import backtest
from spotgym.workflows.errors import ExperimentError, TuneError
from spotgym.workflows.evaluate import evaluate
from spotgym.workflows.experiment import Experiment, apply_values, load_experiment
from spotgym.workflows.prepare import Prepared, prepare
from spotgym.workflows.train import train
from spotgym.workflows.tune import tune

__all__ = ["Experiment", "ExperimentError", "Prepared", "TuneError", "apply_values", "backtest", "evaluate",
           "load_experiment", "prepare", "train", "tune"]
