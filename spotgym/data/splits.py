"""Chronological walk-forward folds with purge and embargo, shared by training, tuning and stacking."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fold:
    """Row ranges (half-open, in frame rows) of one walk-forward fold; ``val`` may be empty."""

    index: int
    train: range
    val: range
    test: range

    def __str__(self) -> str:
        def fmt(r: range) -> str:
            return f"[{r.start}, {r.stop})" if len(r) else "[]"
        return f"fold {self.index}: train {fmt(self.train)} val {fmt(self.val)} test {fmt(self.test)}"


@dataclass(frozen=True)
class WalkForward:
    """Split rows into ``n_folds`` chronological folds: train -> validation -> test.

    The last part of the span is cut into ``n_folds`` contiguous test blocks of ``test_size``
    rows, so together they cover every out-of-sample row exactly once (``n_folds=None``: as many
    blocks of ``test_size`` rows as fit, anchored at the *start* of the span after ``min_train``
    rows, the last one possibly shorter — the fold boundaries then do not depend on how much data
    follows, which is what a causal periodic refit needs). Each fold learns from the rows before
    its test block: its validation block (``val_size`` rows, may be 0) is the end of that span,
    and its training span is everything before the validation block (``expanding=True``) or the
    last ``train_size`` rows of it (rolling). A later fold's validation block therefore lies
    inside an earlier fold's test block, which is fine: each test block is judged only by the
    model that never saw it. Sizes are row counts (int) or fractions of the span (float in (0,
    1)). ``test_size=None`` shares the rows after ``min_train`` (and the first fold's
    validation) equally.

    Purge and embargo (in bars) keep labels and serial correlation from leaking across a
    boundary: between consecutive segments (train|val, val|test, train|test) the last ``purge``
    rows of the earlier segment and the first ``embargo`` rows of the later one are dropped.
    Use ``purge`` >= the label horizon of any model trained on the earlier segment.
    """

    n_folds: int | None = 4
    test_size: int | float | None = None
    val_size: int | float = 0
    train_size: int | float | None = None
    min_train: int | float = 0.25
    purge: int = 0
    embargo: int = 0
    expanding: bool = True

    def __post_init__(self) -> None:
        if self.n_folds is None:
            if not isinstance(self.test_size, int) or not isinstance(self.min_train, int) or \
                    not isinstance(self.val_size, int):
                raise ValueError("WalkForward with n_folds=None (start-anchored refits) needs test_size, val_size "
                                 "and min_train as row counts (ints)")
        elif not isinstance(self.n_folds, int) or self.n_folds < 1:
            raise ValueError(f"WalkForward.n_folds must be an int >= 1 or None, got {self.n_folds!r}")
        for name in ("purge", "embargo"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"WalkForward.{name} must be an int >= 0 (bars), got {value!r}")
        for name in ("test_size", "val_size", "train_size", "min_train"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or \
                    (isinstance(value, float) and value >= 1):
                raise ValueError(f"WalkForward.{name} must be a row count (int >= 0) or a fraction in (0, 1), "
                                 f"got {value!r}")
        if not self.expanding and self.train_size is None:
            raise ValueError("WalkForward: a rolling window (expanding=False) needs train_size")

    def split(self, rows: int | range) -> list[Fold]:
        """The folds over ``rows`` (a row count, or a ``range`` of frame rows such as an outer fold's train span)."""
        span = range(rows) if isinstance(rows, int) else rows
        if span.step != 1:
            raise ValueError("WalkForward.split needs a contiguous range of rows")
        n = len(span)
        gap = self.purge + self.embargo
        if self.n_folds is None:
            return self._split_anchored(span)
        val = self._rows(self.val_size, n)
        min_train = self._rows(self.min_train, n)
        if self.test_size is None:
            lead = val + gap * (2 if val else 1)  # validation and gaps before the first test block
            test = (n - min_train - lead) // self.n_folds
        else:
            test = self._rows(self.test_size, n)
        if test < 1:
            raise ValueError(f"WalkForward: {n} rows are too few for {self.n_folds} folds "
                             f"(min_train={min_train}, val={val}, purge+embargo={gap})")
        folds = []
        test_stop = span.stop
        for k in reversed(range(self.n_folds)):
            test_r = range(test_stop - test, test_stop)
            if val:
                val_r = range(test_r.start - gap - val, test_r.start - gap)
                train_stop = val_r.start - gap
            else:
                val_r = range(test_r.start - gap, test_r.start - gap)
                train_stop = test_r.start - gap
            train_start = span.start
            if not self.expanding:
                train_start = max(span.start, train_stop - self._rows(self.train_size, n))
            train_r = range(train_start, train_stop)
            if len(train_r) < max(min_train, 1):
                raise ValueError(f"WalkForward: fold {k} would train on {len(train_r)} rows "
                                 f"(< min_train={max(min_train, 1)}); use fewer folds or smaller blocks")
            folds.append(Fold(k, train_r, val_r, test_r))
            test_stop = test_r.start  # the test blocks tile the out-of-sample span
        return folds[::-1]

    def _split_anchored(self, span: range) -> list[Fold]:
        """Start-anchored blocks: fold k tests rows [first + k * test_size, ...), trained on all rows before."""
        gap = self.purge + self.embargo
        val, test = int(self.val_size), int(self.test_size)
        if test < 1:
            raise ValueError("WalkForward.test_size must be >= 1")
        first = span.start + int(self.min_train) + (val + gap if val else 0) + gap
        folds = []
        for k, start in enumerate(range(first, span.stop, test)):
            test_r = range(start, min(start + test, span.stop))
            val_r = range(start - gap - val, start - gap) if val else range(start - gap, start - gap)
            train_stop = (val_r.start if val else test_r.start) - gap
            train_start = span.start if self.expanding else max(span.start, train_stop - self._rows(self.train_size, len(span)))
            folds.append(Fold(k, range(train_start, train_stop), val_r, test_r))
        if not folds:
            raise ValueError(f"WalkForward: {len(span)} rows leave no test block after min_train={self.min_train}")
        return folds

    @staticmethod
    def _rows(size: int | float | None, n: int) -> int:
        if size is None:
            return 0
        return int(size * n) if isinstance(size, float) else int(size)
