"""Optuna studies for the dashboard: the studies of each storage (a ``study.db`` found under the runs, or a URL given
with ``--study``), read with Optuna's own API; storages are opened once and kept."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any

from spotgym.dashboard.catalog import StudyRef

__all__ = ["StudyBook", "StudyRow"]


@dataclass
class StudyRow:
    ref: StudyRef
    name: str
    direction: str
    states: dict[str, int]
    best_value: float | None
    best_number: int | None
    best_params: dict[str, Any]
    best_run_dir: str | None
    started: str | None

    @property
    def total(self) -> int:
        return sum(self.states.values())


class StudyBook:
    def __init__(self) -> None:
        self._storages: dict[str, Any] = {}
        self._lock = threading.Lock()

    def storage(self, url: str):
        import optuna

        with self._lock:
            st = self._storages.get(url)
            if st is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    st = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 10}}
                                                    if url.startswith("sqlite") else {})
                self._storages[url] = st
            return st

    def rows(self, ref: StudyRef) -> list[StudyRow]:
        import optuna
        from optuna.trial import TrialState

        storage = self.storage(ref.url)
        out = []
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            trials = study.get_trials(deepcopy=False)
            states: dict[str, int] = {}
            for t in trials:
                states[t.state.name] = states.get(t.state.name, 0) + 1
            best = None
            if any(t.state == TrialState.COMPLETE for t in trials) and len(study.directions) == 1:
                try:
                    best = study.best_trial
                except ValueError:
                    best = None
            out.append(StudyRow(
                ref=ref, name=summary.study_name,
                direction="/".join(d.name.lower() for d in study.directions),
                states=states, best_value=best.value if best else None, best_number=best.number if best else None,
                best_params=dict(best.params) if best else {},
                best_run_dir=best.user_attrs.get("run_dir") if best else None,
                started=summary.datetime_start.strftime("%Y-%m-%d %H:%M") if summary.datetime_start else None))
        return out

    def load(self, ref: StudyRef, name: str):
        import optuna

        return optuna.load_study(study_name=name, storage=self.storage(ref.url))
