"""The recurrent forecaster (LSTM, or GRU by config): next-h log return and down / flat / up classes.

Batch-invariant inference: the model runs in float64 on fixed-size chunks of ``INFER_CHUNK``
windows, each window at the slot given by its absolute row (``row % INFER_CHUNK``). A row's
output therefore never depends on which other rows are predicted with it — predicting a
truncated frame, a single live bar (``update``) or the whole history gives the same bits, which
the look-ahead test (rtol 1e-9) and the streaming test require.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spotgym.core import FeatureFrame
from spotgym.predictors.base import BasePredictor, NotEnoughData, Rows
from spotgym.predictors.config import LSTMConfig
from spotgym.predictors.labels import direction_labels, forward_log_return
from spotgym.predictors.metrics import return_direction_metrics

INFER_CHUNK = 512
MIN_TRAIN_WINDOWS = 32
PAYLOAD = "model.pt"


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("LSTMConfig.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device(device)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch intra-op threads (a fixed count keeps CPU results bit-identical), then restore."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class RecurrentNet(nn.Module):
    """LSTM/GRU over a window -> last hidden state -> linear head: [return (z units)] + [3 class logits]."""

    def __init__(self, n_inputs: int, config: LSTMConfig) -> None:
        super().__init__()
        cell = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = cell(n_inputs, config.hidden, num_layers=config.layers, batch_first=True,
                        dropout=config.dropout if config.layers > 1 else 0.0)
        self.drop = nn.Dropout(config.dropout)
        self.n_ret = 1 if "return" in config.targets else 0
        self.n_cls = 3 if "direction" in config.targets else 0
        self.head = nn.Linear(config.hidden, self.n_ret + self.n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(self.drop(out[:, -1]))


class LSTMPredictor(BasePredictor):
    """Forecasts from the last ``window`` rows of feature columns (see ``LSTMConfig``).

    Outputs: ``<name>_ret_h<h>`` — the forecast of log(close[t+h] / close[t]) in units of its
    training-set std (``target_scale`` converts back); ``<name>_p_down/_p_flat/_p_up`` — class
    probabilities. Inputs are standardised with mean / std of the training rows and clipped.
    """

    kind = "lstm"
    config: LSTMConfig

    def __init__(self, config: LSTMConfig, feature_spec=None) -> None:
        super().__init__(config, feature_spec)
        self.net: RecurrentNet | None = None
        self._infer: RecurrentNet | None = None
        self.scaler_mean: np.ndarray | None = None
        self.scaler_std: np.ndarray | None = None
        self.target_scale: float = 1.0
        self.flat_threshold: float = 0.0

    @property
    def lookback(self) -> int:
        return self.config.window

    def _is_fitted(self) -> bool:
        return self._infer is not None

    # ------------------------------------------------------------------ training
    def _scale(self, x: np.ndarray) -> np.ndarray:
        clip = self.config.clip_inputs
        return np.clip((x - self.scaler_mean) / self.scaler_std, -clip, clip)

    def _fit(self, frame: FeatureFrame, x: np.ndarray, train: np.ndarray, val: np.ndarray) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        fwd = forward_log_return(frame.close, cfg.horizon)
        train, val = train[np.isfinite(fwd[train])], val[np.isfinite(fwd[val])]
        if len(train) < MIN_TRAIN_WINDOWS:
            raise NotEnoughData(f"{cfg.name}: {len(train)} usable training windows (< {MIN_TRAIN_WINDOWS})")
        self.scaler_mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        self.scaler_std = np.where(std > 1e-12, std, 1.0)
        scale = float(np.std(fwd[train]))
        self.target_scale = scale if scale > 0 else 1.0
        self.flat_threshold = float(cfg.flat_threshold) if cfg.flat_threshold is not None else \
            float(np.quantile(np.abs(fwd[train]), cfg.flat_quantile))
        device = resolve_device(cfg.device)
        xs = torch.from_numpy(np.nan_to_num(self._scale(x)).astype(np.float32)).to(device)
        y_ret = torch.from_numpy(np.nan_to_num(fwd / self.target_scale).astype(np.float32)).to(device)
        y_cls = torch.from_numpy(np.nan_to_num(direction_labels(fwd, self.flat_threshold)).astype(np.int64)).to(device)
        offsets = torch.arange(-cfg.window + 1, 1, device=device)
        rng = np.random.default_rng(cfg.seed)
        history: list[float] = []
        with torch_threads(cfg.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = RecurrentNet(x.shape[1], cfg).to(device)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

            def loss_of(ends: np.ndarray) -> torch.Tensor:
                e = torch.from_numpy(ends).to(device)
                out = net(xs[e[:, None] + offsets])
                loss = out.new_zeros(())
                if net.n_ret:
                    loss = loss + nn.functional.huber_loss(out[:, 0], y_ret[e])
                if net.n_cls:
                    loss = loss + nn.functional.cross_entropy(out[:, net.n_ret:], y_cls[e])
                return loss

            best, best_state, best_epoch, stale, epochs = math.inf, None, -1, 0, 0
            for epoch in range(cfg.epochs):
                epochs = epoch + 1
                ids = train
                if cfg.max_train_windows is not None and len(train) > cfg.max_train_windows:
                    ids = rng.choice(train, cfg.max_train_windows, replace=False)
                ids = rng.permutation(ids)
                net.train()
                for start in range(0, len(ids), cfg.batch_size):
                    loss = loss_of(ids[start:start + cfg.batch_size])
                    opt.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                if len(val) == 0:
                    best_state, best_epoch = None, epoch
                    continue
                net.eval()
                with torch.no_grad():
                    v = float(sum(loss_of(val[s:s + 1024]).item() * len(val[s:s + 1024])
                                  for s in range(0, len(val), 1024)) / len(val))
                history.append(v)
                if v < best:
                    best, best_epoch, stale = v, epoch, 0
                    best_state = {k: t.detach().clone() for k, t in net.state_dict().items()}
                else:
                    stale += 1
                    if stale >= cfg.patience:
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
        net.eval()
        self._set_net(net)
        self.fit_info = {"n_train": int(len(train)), "n_val": int(len(val)), "epochs": epochs,
                         "best_epoch": best_epoch + 1, "val_loss": history, "fit_s": time.perf_counter() - t0,
                         "device": str(device)}

    def _set_net(self, net: RecurrentNet) -> None:
        self.net = net
        self._infer = copy.deepcopy(net).double().eval()

    # ------------------------------------------------------------------ inference
    def _predict_rows(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        cfg = self.config
        assert self._infer is not None
        device = next(self._infer.parameters()).device
        xs = self._scale(x)
        offsets = np.arange(-cfg.window + 1, 1)
        out = np.empty((len(rows), self._infer.n_ret + self._infer.n_cls))
        chunk_of = rows // INFER_CHUNK
        bounds = np.flatnonzero(np.diff(chunk_of)) + 1
        with torch_threads(cfg.threads), torch.no_grad():
            for sel in np.split(np.arange(len(rows)), bounds):
                r = rows[sel]
                batch = np.zeros((INFER_CHUNK, cfg.window, x.shape[1]))
                slots = r % INFER_CHUNK
                batch[slots] = xs[r[:, None] + offsets]
                res = self._infer(torch.from_numpy(batch).to(device)).cpu().numpy()
                out[sel] = res[slots]
        n_ret = self._infer.n_ret
        if self._infer.n_cls:
            logits = out[:, n_ret:]
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            out[:, n_ret:] = z / z.sum(axis=1, keepdims=True)
        return out

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, frame: FeatureFrame, rows: Rows, outputs: np.ndarray, train_rows: Rows) -> dict[str, Any]:
        """Return and direction metrics (``return_direction_metrics``); outputs are in target-scale units."""
        cfg = self.config
        return return_direction_metrics(frame.close, self.row_index(rows, len(frame)),
                                        self.row_index(train_rows, len(frame)), outputs, horizon=cfg.horizon,
                                        targets=cfg.targets, flat_threshold=self.flat_threshold,
                                        return_scale=self.target_scale)

    # ------------------------------------------------------------------ persistence
    def _fitted_state(self) -> dict[str, Any]:
        return {"scaler": {"mean": self.scaler_mean.tolist(), "std": self.scaler_std.tolist()},
                "target_scale": self.target_scale, "flat_threshold": self.flat_threshold}

    def _set_fitted_state(self, state: dict[str, Any]) -> None:
        self.scaler_mean = np.asarray(state["scaler"]["mean"], dtype=np.float64)
        self.scaler_std = np.asarray(state["scaler"]["std"], dtype=np.float64)
        self.target_scale = float(state["target_scale"])
        self.flat_threshold = float(state["flat_threshold"])

    def _save_payload(self, folder: Path) -> None:
        assert self.net is not None
        torch.save({k: t.detach().cpu() for k, t in self.net.state_dict().items()}, folder / PAYLOAD)

    def _load_payload(self, folder: Path) -> None:
        assert self.input_columns is not None
        state = torch.load(folder / PAYLOAD, map_location="cpu", weights_only=True)
        net = RecurrentNet(len(self.input_columns), self.config)
        net.load_state_dict(state)
        device = self.config.device
        if device == "cuda" and not torch.cuda.is_available():  # a GPU-trained model still serves live on a CPU
            warnings.warn(f"{self.config.name}: trained with device='cuda', loaded on CPU", stacklevel=3)
            device = "cpu"
        self._set_net(net.to(resolve_device(device)).eval())
