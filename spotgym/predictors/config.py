"""Predictor configurations: frozen dataclasses that validate on construction and round-trip to plain dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from spotgym.core import checks, stable_hash

DEVICES = ("auto", "cpu", "cuda")
CELLS = ("lstm", "gru")
LSTM_TARGETS = ("return", "direction")
REGIME_TARGETS = ("trend", "vol")
GBM_TARGETS = ("return", "direction")
GBM_LOSSES = ("l2", "huber")
FIT_MODES = ("per_symbol", "pooled")
MAX_ARMA_ORDER = 5


_fail = checks.fail
_names = checks.names


def _check_model_fields(config: Any, owner: str, targets: tuple[str, ...]) -> None:
    """What every model config shares: an identifier-like ``name`` (the columns' prefix), optional ``inputs``,
    ``targets`` among those the model knows."""
    if not isinstance(config.name, str) or not config.name.isidentifier():
        _fail(owner, "name", "must be an identifier-like column prefix", config.name)
    object.__setattr__(config, "inputs", _names(owner, "inputs", config.inputs, allow_none=True))
    object.__setattr__(config, "targets", _names(owner, "targets", config.targets, targets))


def _set_int(obj: Any, owner: str, field: str, low: int, allow_none: bool = False) -> None:
    """Validate an int field (a whole float such as YAML's ``8.0`` becomes ``8``)."""
    object.__setattr__(obj, field, checks.integer(owner, field, getattr(obj, field), low, allow_none=allow_none))


def _check_float(owner: str, field: str, value: Any, low: float, high: float | None = None,
                 low_open: bool = False, allow_none: bool = False) -> None:
    checks.number(owner, field, value, low, high, low_open=low_open, high_open=True, allow_none=allow_none)


class _ConfigMixin:
    """``to_config`` / ``from_config`` / ``hash`` shared by the predictor configs."""

    kind: ClassVar[str]

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        items = {k: v for k, v in config.items() if k != "kind"}
        unknown = sorted(set(items) - known)
        if unknown:
            raise ValueError(f"unknown {cls.kind} predictor key(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in items.items()})

    @property
    def hash(self) -> str:
        """Stable short hash of the configuration (saved with a model, part of cache keys)."""
        return stable_hash(self.to_config())


@dataclass(frozen=True)
class LSTMConfig(_ConfigMixin):
    """A recurrent forecaster over the last ``window`` rows of feature columns.

    Targets (``targets``): ``return`` — the next-``horizon`` log return log(close[t+h] / close[t]),
    regressed in units of its training-set std with a Huber loss (fat tails); ``direction`` —
    down / flat / up classes, flat meaning |return| <= ``flat_threshold`` (``None``: the
    ``flat_quantile`` quantile of |return| over the training rows, so classes stay balanced on any
    timeframe). ``cell``: ``lstm`` or ``gru``. Training: Adam, at most ``epochs`` epochs, each on
    up to ``max_train_windows`` windows drawn from the training rows (``None``: all), early
    stopping on the validation slice after ``patience`` epochs without improvement. ``device``:
    ``auto`` (cuda if available), ``cpu`` or ``cuda``; on CPU a fit is deterministic given
    ``seed`` and ``threads`` (torch threads used while fitting and predicting).
    ``inputs``: feature column names (``None``: every indicator column of the frame).
    """

    kind: ClassVar[str] = "lstm"

    name: str = "lstm"
    inputs: tuple[str, ...] | None = None
    cell: str = "lstm"
    window: int = 32
    horizon: int = 1
    targets: tuple[str, ...] = ("return", "direction")
    flat_threshold: float | None = None
    flat_quantile: float = 0.33
    hidden: int = 32
    layers: int = 1
    dropout: float = 0.0
    epochs: int = 8
    patience: int = 2
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_train_windows: int | None = 16384
    clip_inputs: float = 5.0
    seed: int = 0
    device: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        o = "LSTMConfig"
        _check_model_fields(self, o, LSTM_TARGETS)
        if self.cell not in CELLS:
            _fail(o, "cell", f"must be one of {CELLS}", self.cell)
        if self.device not in DEVICES:
            _fail(o, "device", f"must be one of {DEVICES}", self.device)
        for name, low in (("window", 1), ("horizon", 1), ("hidden", 1), ("layers", 1), ("epochs", 1),
                          ("patience", 1), ("batch_size", 1), ("seed", 0), ("threads", 1)):
            _set_int(self, o, name, low)
        _set_int(self, o, "max_train_windows", 1, allow_none=True)
        _check_float(o, "flat_threshold", self.flat_threshold, 0.0, allow_none=True)
        _check_float(o, "flat_quantile", self.flat_quantile, 0.0, 1.0, low_open=True)
        _check_float(o, "dropout", self.dropout, 0.0, 1.0)
        _check_float(o, "lr", self.lr, 0.0, low_open=True)
        _check_float(o, "weight_decay", self.weight_decay, 0.0)
        _check_float(o, "clip_inputs", self.clip_inputs, 0.0, low_open=True)

    @property
    def output_columns(self) -> tuple[str, ...]:
        out: list[str] = []
        if "return" in self.targets:
            out.append(f"{self.name}_ret_h{self.horizon}")
        if "direction" in self.targets:
            out += [f"{self.name}_p_down", f"{self.name}_p_flat", f"{self.name}_p_up"]
        return tuple(out)


@dataclass(frozen=True)
class RegimeConfig(_ConfigMixin):
    """A gradient-boosting classifier (scikit-learn ``HistGradientBoostingClassifier``) of market state.

    Labels come from the *future* window (t, t + ``horizon``] and are only training targets:
    ``trend`` — up / range / down by whether log(close[t+h] / close[t]) exceeds ±``trend_k`` ·
    sigma_t · sqrt(h), sigma_t the trailing std of one-bar log returns over ``vol_window`` bars;
    ``vol`` — high when the realised volatility over the future window exceeds sigma_t. One model
    per target, on the current row of ``inputs``; outputs are class probabilities. Early stopping
    uses the validation slice when there is one (``n_iter_no_change`` rounds).
    """

    kind: ClassVar[str] = "regime"

    name: str = "regime"
    inputs: tuple[str, ...] | None = None
    horizon: int = 24
    targets: tuple[str, ...] = ("trend", "vol")
    trend_k: float = 0.5
    vol_window: int = 240
    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 40
    l2_regularization: float = 1.0
    n_iter_no_change: int = 10
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        o = "RegimeConfig"
        _check_model_fields(self, o, REGIME_TARGETS)
        for name, low in (("horizon", 1), ("vol_window", 2), ("max_iter", 1), ("max_leaf_nodes", 2),
                          ("min_samples_leaf", 1), ("n_iter_no_change", 1), ("seed", 0), ("threads", 1)):
            _set_int(self, o, name, low)
        _check_float(o, "trend_k", self.trend_k, 0.0)
        _check_float(o, "learning_rate", self.learning_rate, 0.0, low_open=True)
        _check_float(o, "l2_regularization", self.l2_regularization, 0.0)

    @property
    def output_columns(self) -> tuple[str, ...]:
        out: list[str] = []
        if "trend" in self.targets:
            out += [f"{self.name}_p_trend_down", f"{self.name}_p_range", f"{self.name}_p_trend_up"]
        if "vol" in self.targets:
            out.append(f"{self.name}_p_vol_high")
        return tuple(out)


@dataclass(frozen=True)
class GBMConfig(_ConfigMixin):
    """A LightGBM forecaster on the current row of feature columns plus optional lagged rows.

    Targets (``targets``) as the LSTM's: ``return`` — the next-``horizon`` log return
    log(close[t+h] / close[t]), output in **raw log-return units** (fitted on the return divided by
    its training-set std, predictions multiplied back), so the column can feed a Kelly sizing rule
    directly; ``direction`` — down / flat / up probabilities, flat meaning |return| <=
    ``flat_threshold`` (``None``: the ``flat_quantile`` quantile of |return| over the training rows).
    ``loss``: ``l2`` (the conditional mean, what Kelly wants) or ``huber`` (delta = one training std;
    robust to fat tails, shrinks toward the median). ``lags``: extra past rows stacked beside the
    current one (``(1, 24)``: rows t-1 and t-24 too); a row is predictable when the ``max(lags) + 1``
    rows ending at it are all finite. Boosting: at most ``n_estimators`` rounds of ``learning_rate``,
    trees of ``num_leaves`` leaves with ``min_data_in_leaf`` rows each, a ``feature_fraction`` of the
    columns and a ``bagging_fraction`` of the rows per round (1.0: off), L2 penalty ``lambda_l2``;
    early stopping after ``early_stopping_rounds`` rounds without improvement on the validation slice
    (none: all rounds). Deterministic given ``seed`` and ``threads`` (LightGBM threads).
    ``inputs``: feature column names (``None``: every indicator column of the frame).
    """

    kind: ClassVar[str] = "gbm"

    name: str = "gbm"
    inputs: tuple[str, ...] | None = None
    lags: tuple[int, ...] = ()
    horizon: int = 1
    targets: tuple[str, ...] = ("return", "direction")
    loss: str = "l2"
    flat_threshold: float | None = None
    flat_quantile: float = 0.33
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    early_stopping_rounds: int = 20
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        o = "GBMConfig"
        _check_model_fields(self, o, GBM_TARGETS)
        if isinstance(self.lags, str) or not isinstance(self.lags, list | tuple):
            _fail(o, "lags", "must be a list of positive integers (bars back)", self.lags)
        lags = tuple(checks.integer(o, "lags", lag, 1) for lag in self.lags)
        if len(set(lags)) != len(lags):
            _fail(o, "lags", "must not repeat a lag", self.lags)
        object.__setattr__(self, "lags", tuple(sorted(lags)))
        if self.loss not in GBM_LOSSES:
            _fail(o, "loss", f"must be one of {GBM_LOSSES}", self.loss)
        for name, low in (("horizon", 1), ("n_estimators", 1), ("num_leaves", 2), ("min_data_in_leaf", 1),
                          ("early_stopping_rounds", 1), ("seed", 0), ("threads", 1)):
            _set_int(self, o, name, low)
        _check_float(o, "flat_threshold", self.flat_threshold, 0.0, allow_none=True)
        _check_float(o, "flat_quantile", self.flat_quantile, 0.0, 1.0, low_open=True)
        _check_float(o, "learning_rate", self.learning_rate, 0.0, low_open=True)
        checks.number(o, "feature_fraction", self.feature_fraction, 0.0, 1.0, low_open=True)
        checks.number(o, "bagging_fraction", self.bagging_fraction, 0.0, 1.0, low_open=True)
        _check_float(o, "lambda_l2", self.lambda_l2, 0.0)

    @property
    def output_columns(self) -> tuple[str, ...]:
        out: list[str] = []
        if "return" in self.targets:
            out.append(f"{self.name}_ret_h{self.horizon}")
        if "direction" in self.targets:
            out += [f"{self.name}_p_down", f"{self.name}_p_flat", f"{self.name}_p_up"]
        return tuple(out)


PredictorConfig = LSTMConfig | RegimeConfig | GBMConfig
CONFIG_KINDS: dict[str, type] = {"lstm": LSTMConfig, "gru": LSTMConfig, "regime": RegimeConfig, "gbm": GBMConfig}
_CONFIG_TYPES = (LSTMConfig, RegimeConfig, GBMConfig)


@dataclass(frozen=True)
class ArimaConfig:
    """The ARIMA baseline of every return forecaster's fold metrics (``ret_mae_arima``, ``ret_dir_acc_arima``).

    Per fold, an ARMA(p, q) with a constant mean (ARIMA(p, 0, q) on one-bar log returns, i.e.
    ARIMA(p, 1, q) on log prices) is fitted by statsmodels on the fold's training rows — at most the
    ``max_train`` most recent (``None``: all; the cap keeps a fit under about a second) — and then
    run forward with fixed parameters, so the forecast at row t of log(close[t+h] / close[t]) uses
    the returns up to t only. ``orders``: one (p, d, q) or several, the one with the lowest AIC on
    the training rows wins; d must be 0 (the series already is the differenced log price).
    """

    orders: tuple[tuple[int, int, int], ...] = ((1, 0, 1),)
    max_train: int | None = 10_000

    def __post_init__(self) -> None:
        o = "ArimaConfig"
        orders = self.orders
        if isinstance(orders, list | tuple) and len(orders) == 3 and all(isinstance(v, int | float) for v in orders):
            orders = (orders,)  # one order given as [p, d, q]
        if not isinstance(orders, list | tuple) or not orders:
            _fail(o, "orders", "must be a (p, d, q) order or a non-empty list of them", self.orders)
        clean = []
        for order in orders:
            if not isinstance(order, list | tuple) or len(order) != 3:
                _fail(o, "orders", "must hold (p, d, q) triples", self.orders)
            p, d, q = (checks.integer(o, "orders", v, 0) for v in order)
            if d != 0:
                _fail(o, "orders", "must have d = 0: the model runs on log returns, already the differenced "
                      "log price", self.orders)
            if p > MAX_ARMA_ORDER or q > MAX_ARMA_ORDER:
                _fail(o, "orders", f"must keep p and q <= {MAX_ARMA_ORDER} (a baseline, not a model search)",
                      self.orders)
            clean.append((p, d, q))
        if len(set(clean)) != len(clean):
            _fail(o, "orders", "must not repeat an order", self.orders)
        object.__setattr__(self, "orders", tuple(clean))
        object.__setattr__(self, "max_train", checks.integer(o, "max_train", self.max_train, 50, allow_none=True))

    def to_config(self) -> dict[str, Any]:
        return {"orders": [list(order) for order in self.orders], "max_train": self.max_train}

    @classmethod
    def from_config(cls, config: ArimaConfig | Mapping[str, Any] | bool | None) -> ArimaConfig | None:
        """From a mapping (``{orders: [[1, 0, 1]], max_train: 10000}``); ``None`` / ``False``: no ARIMA baseline,
        ``True``: the default one."""
        if config is None or config is False:
            return None
        if config is True:
            return cls()
        if isinstance(config, ArimaConfig):
            return config
        if not isinstance(config, Mapping):
            _fail("StackingSpec", "arima", "must be a mapping (orders, max_train), true/false or null", config)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown arima key(s) {unknown}; known: {sorted(known)}")
        return cls(**config)


def predictor_config(item: PredictorConfig | Mapping[str, Any]) -> PredictorConfig:
    """A predictor config from a mapping with a ``kind`` key (``lstm``, ``gru`` = lstm with cell gru, ``regime``,
    ``gbm``)."""
    if isinstance(item, _CONFIG_TYPES):
        return item
    if not isinstance(item, Mapping) or "kind" not in item:
        raise ValueError(f"a predictor is a mapping with a 'kind' key ({sorted(CONFIG_KINDS)}), got {item!r}")
    kind = item["kind"]
    if kind not in CONFIG_KINDS:
        raise ValueError(f"unknown predictor kind {kind!r}; known: {sorted(CONFIG_KINDS)}")
    config = dict(item)
    if kind == "gru":
        config.setdefault("cell", "gru")
        config.setdefault("name", "gru")
    return CONFIG_KINDS[kind].from_config(config)


@dataclass(frozen=True)
class StackingSpec:
    """Which predictors become feature columns, and the walk-forward refits that keep them out-of-fold.

    Each model is refitted every ``refit_every`` rows; the model that writes a block of rows was
    trained only on rows before it: fold k trains on everything from the first row with finite
    inputs up to its validation slice (``val_size`` rows, early stopping), minus ``purge`` +
    ``embargo`` rows at each boundary (``purge=None``: the longest label horizon, so no training
    label reaches into the block). The first block starts ``min_train`` rows after the first row
    with finite inputs; boundaries never depend on how much data follows (the look-ahead test
    truncates the data). ``max_train_rows``: train on at most that many most recent rows
    (rolling) instead of all earlier rows. ``arima``: the ARIMA baseline added to the fold metrics
    of every return forecaster (``ArimaConfig``; ``None``: none).

    ``fit`` (only meaningful with several symbols, an experiment's ``data.pool``): ``per_symbol`` fits each
    symbol's predictors on that symbol's rows alone; ``pooled`` fits each refit block of a predictor on the
    training rows of every symbol whose bars end before the block (the main symbol's schedule, mapped onto
    each symbol by time) and predicts every symbol's rows of that block with the one model
    (``spotgym.predictors.stacking.pooled_oof_predictions``).
    """

    models: tuple[PredictorConfig, ...]
    refit_every: int = 4380
    min_train: int = 8760
    val_size: int = 720
    purge: int | None = None
    embargo: int = 0
    max_train_rows: int | None = None
    arima: ArimaConfig | None = field(default_factory=ArimaConfig)
    fit: str = "per_symbol"

    def __post_init__(self) -> None:
        o = "StackingSpec"
        object.__setattr__(self, "arima", ArimaConfig.from_config(self.arima))
        if self.fit not in FIT_MODES:
            _fail(o, "fit", f"must be one of {FIT_MODES} (per_symbol: each symbol's predictors on its own rows; "
                  "pooled: one fit per refit block on the rows of every data.pool symbol)", self.fit)
        if isinstance(self.models, _CONFIG_TYPES) or not isinstance(self.models, list | tuple) \
                or not self.models:
            _fail(o, "models", "must be a non-empty list of predictor configs", self.models)
        models = tuple(predictor_config(m) for m in self.models)
        object.__setattr__(self, "models", models)
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            _fail(o, "models", "must give each predictor its own name (column prefix)", names)
        outputs = [c for m in models for c in m.output_columns]
        if len(set(outputs)) != len(outputs):
            _fail(o, "models", "produce duplicate output columns", outputs)
        for name, low in (("refit_every", 1), ("min_train", 1), ("val_size", 0), ("embargo", 0)):
            _set_int(self, o, name, low)
        _set_int(self, o, "purge", 0, allow_none=True)
        _set_int(self, o, "max_train_rows", 1, allow_none=True)
        if self.purge is not None and self.purge < self.horizon:
            _fail(o, "purge", f"must be >= the longest label horizon ({self.horizon} bars) or None, "
                  "else training labels reach into the block they predict", self.purge)

    @property
    def horizon(self) -> int:
        """The longest label horizon among the models (bars)."""
        return max(m.horizon for m in self.models)

    @property
    def effective_purge(self) -> int:
        return self.horizon if self.purge is None else self.purge

    @property
    def output_columns(self) -> tuple[str, ...]:
        return tuple(c for m in self.models for c in m.output_columns)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StackingSpec:
        """From ``{"models": [{"kind": "lstm", ...}, {"kind": "regime"}], "refit_every": 2000, ...}``."""
        if not isinstance(config, Mapping):
            raise ValueError(f"predictors must be a mapping, got {config!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown predictors key(s) {unknown}; known: {sorted(known)}")
        models = config.get("models")
        if not isinstance(models, list | tuple) or not models:
            raise ValueError("predictors.models must be a non-empty list of predictor mappings")
        kwargs = {k: v for k, v in config.items() if k != "models"}
        return cls(tuple(predictor_config(m) for m in models), **kwargs)

    def to_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"models": [m.to_config() for m in self.models]}
        for f in fields(self):
            if f.name == "arima":
                out["arima"] = self.arima.to_config() if self.arima is not None else None
            elif f.name == "fit":
                if self.fit != "per_symbol":  # the default stays out: cache keys and hashes of older specs hold
                    out["fit"] = self.fit
            elif f.name != "models":
                out[f.name] = getattr(self, f.name)
        return out


def tiny_gbm() -> GBMConfig:
    """A GBM forecaster that fits in a fraction of a second on a few thousand rows (tests, benchmarks)."""
    return GBMConfig(lags=(1, 4), n_estimators=60, learning_rate=0.1, num_leaves=7, min_data_in_leaf=20,
                     early_stopping_rounds=10)


def tiny_stacking(gbm: bool = False) -> StackingSpec:
    """A stacking spec that trains in seconds on a CPU (tests, benchmarks, smoke checks): small LSTM + regime model
    (``gbm=True``: plus ``tiny_gbm()``)."""
    return StackingSpec(
        models=(
            LSTMConfig(window=16, hidden=16, epochs=6, patience=2, batch_size=64, lr=1e-2, max_train_windows=1024,
                       device="cpu"),
            RegimeConfig(horizon=12, vol_window=96, max_iter=40, learning_rate=0.1, min_samples_leaf=20),
            *((tiny_gbm(),) if gbm else ()),
        ),
        refit_every=600,
        min_train=800,
        val_size=200,
    )


def default_stacking(gbm: bool = False) -> StackingSpec:
    """The default predictors: an LSTM (32 units, window 32) and the regime classifier, refitted twice a year on 1h bars
    (``gbm=True``: plus a LightGBM forecaster with the ``GBMConfig`` defaults).

    Sized so that out-of-fold columns over ETH/USDT 1h 2017-2024 (64k rows) take minutes on two
    CPU cores; scale ``hidden`` / ``window`` / ``max_train_windows`` up on CUDA.
    """
    return StackingSpec(models=(LSTMConfig(), RegimeConfig(), *((GBMConfig(),) if gbm else ())))
