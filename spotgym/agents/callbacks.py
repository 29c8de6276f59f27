"""SB3 callbacks: a progress bar, trading scalars for TensorBoard / W&B, and periodic validation
with best-model keeping (a checkpoint is kept only if it beats staying in cash on validation)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

# Metrics logged for every evaluation (TensorBoard tag: trading/<split>_<key>)
LOGGED_METRICS = ("total_return", "sharpe", "sortino", "max_drawdown", "turnover", "turnover_annual", "fees_paid",
                  "n_trades", "exposure", "win_rate")


class ProgressBar(BaseCallback):
    """A tqdm bar over timesteps (SB3's own needs ``rich``); shows the last validation Sharpe."""

    def __init__(self, total: int, disable: bool = False) -> None:
        super().__init__()
        self.total, self.disable = total, disable
        self.bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self.bar = tqdm(total=self.total, unit="step", desc="train", disable=self.disable, dynamic_ncols=True)

    def _on_step(self) -> bool:
        assert self.bar is not None
        self.bar.update(self.training_env.num_envs)
        return True

    def set_postfix(self, **values: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(values, refresh=False)

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TradingScalars(BaseCallback):
    """Per finished training episode: return of net equity and fees paid, as TensorBoard scalars."""

    def __init__(self, initial_cash: float) -> None:
        super().__init__()
        self.initial_cash = initial_cash
        self.returns: list[float] = []
        self.fees: list[float] = []

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        if dones is None or not np.any(dones):
            return True
        infos = self.locals["infos"]
        for i in np.flatnonzero(dones):
            self.returns.append(infos[i]["equity"] / self.initial_cash - 1.0)
            self.fees.append(infos[i]["fees_paid"])
        return True

    def _on_rollout_end(self) -> None:
        if self.returns:
            self.logger.record("trading/train_episode_return", float(np.mean(self.returns)))
            self.logger.record("trading/train_episode_fees", float(np.mean(self.fees)))
            self.returns.clear()
            self.fees.clear()


def beats_cash(metrics: dict[str, Any] | None) -> bool:
    """Whether a validation result is better than staying in cash: a positive total return after fees (cash
    earns 0 and pays nothing)."""
    value = (metrics or {}).get("total_return")
    return value is not None and math.isfinite(value) and value > 0.0


def validation_line(timestep: int, metrics: dict[str, Any], kept: bool) -> str:
    """One line per evaluation: return, Sharpe, drawdown, what trading cost (turnover, fees) and the verdict."""
    def pct(key: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else f"{100 * value:+.1f} %"

    def num(key: str, fmt: str) -> str:
        value = metrics.get(key)
        return "n/a" if value is None else format(value, fmt)

    verdict = "kept" if kept else ("beats cash" if beats_cash(metrics) else "worse than cash")
    return (f"val @ {timestep:,}: return {pct('total_return')}, Sharpe {num('sharpe', '.2f')}, max DD "
            f"{100 * (metrics.get('max_drawdown') or 0):.1f} %, turnover {num('turnover_annual', '.0f')}x/yr, fees "
            f"{num('fees_paid', ',.0f')}, {num('n_trades', 'd')} trades ({verdict})")


class ValidationCallback(BaseCallback):
    """Every ``every`` timesteps: run the deterministic policy over the validation split, log the
    trading metrics (and one line with return, Sharpe, drawdown, turnover and fees), and save the model
    when ``select_metric`` improves (``best_path``) among the checkpoints that beat cash (``beats_cash``).
    Until one does, the best checkpoint so far is saved too (to inspect), but ``beats_cash`` stays False and
    the run then holds cash (``selected``).

    ``select_mode`` is ``"max"`` (higher is better) or ``"min"`` (e.g. ``max_drawdown``).
    ``on_evaluation(index, metrics)``, when given, is called after every evaluation (index 0, 1, ...);
    returning ``False`` stops training (the tuner's pruning hook: ``trial.report`` +
    ``trial.should_prune``); ``stopped_early`` then says so.
    """

    def __init__(self, evaluate: Callable[[Any], dict[str, Any]], every: int, best_path: Path,
                 select_metric: str = "sharpe", progress: ProgressBar | None = None, *,
                 select_mode: str = "max",
                 on_evaluation: Callable[[int, dict[str, Any]], bool | None] | None = None) -> None:
        super().__init__()
        if select_mode not in ("max", "min"):
            raise ValueError(f"select_mode must be 'max' or 'min', got {select_mode!r}")
        self.evaluate, self.every, self.best_path = evaluate, every, Path(best_path)
        self.select_metric, self.select_mode = select_metric, select_mode
        self.progress = progress
        self.on_evaluation = on_evaluation
        self.best_score = -math.inf
        self.best_metrics: dict[str, Any] | None = None
        self.best_timestep = 0
        self.history: list[dict[str, Any]] = []
        self.stopped_early = False
        self.found_beats_cash = False
        self._next = every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.run_evaluation()
        return not self.stopped_early

    def run_evaluation(self) -> dict[str, Any]:
        metrics = self.evaluate(self.model)
        for key in LOGGED_METRICS:
            value = metrics.get(key)
            if value is not None:
                self.logger.record(f"trading/val_{key}", float(value))
        self.logger.dump(self.num_timesteps)
        score = metrics.get(self.select_metric)
        score = -math.inf if score is None else float(score) if self.select_mode == "max" else -float(score)
        eligible = beats_cash(metrics)
        self.history.append({"timestep": self.num_timesteps, **{k: metrics.get(k) for k in LOGGED_METRICS},
                             "beats_cash": eligible})
        keep = (eligible and (not self.found_beats_cash or score > self.best_score)) or \
            (not self.found_beats_cash and not eligible and (score > self.best_score or self.best_metrics is None))
        if keep:
            self.best_score, self.best_metrics, self.best_timestep = score, metrics, self.num_timesteps
            self.found_beats_cash = self.found_beats_cash or eligible
            self.model.save(self.best_path)
        line = validation_line(self.num_timesteps, metrics, keep and eligible)
        if self.progress is not None and not self.progress.disable:
            tqdm.write(line)
        else:
            log.info(line)
        if self.on_evaluation is not None and self.on_evaluation(len(self.history) - 1, metrics) is False:
            self.stopped_early = True
        if self.progress is not None:
            self.progress.set_postfix(val_sharpe=f"{metrics.get('sharpe') or 0:.2f}",
                                      turnover=f"{metrics.get('turnover_annual') or 0:.0f}x/yr",
                                      fees=f"{metrics.get('fees_paid') or 0:,.0f}",
                                      best=f"{(self.best_metrics or {}).get(self.select_metric) or 0:.2f}"
                                      if self.found_beats_cash else "cash")
        return metrics
