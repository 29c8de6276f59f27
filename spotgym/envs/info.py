"""``StepInfo``: the per-account ``info`` dict of ``VecTradingEnv``, read lazily from arrays.

Building N fresh dicts of a dozen floats every step costs more than the whole kernel step at
N = 1024. ``VecTradingEnv`` therefore hands out, per step, a list of ``StepInfo`` objects
that it made once: each is a real ``dict`` (``isinstance(info, dict)`` holds) whose account
fields (``row``, ``equity``, ``cash``, ``position``, ...) are read on access from the float64
info array that the step kernel wrote, and whose ordinary dict storage holds everything else
(``terminal_observation``, ``TimeLimit.truncated``, keys added by wrappers).

Lifetime: the env alternates between two sets of buffers (observations, info arrays, the
``StepInfo`` lists), so what ``step`` returned stays valid until the next-but-one ``step``.
SB3's algorithms and wrappers only look at infos within a step; to keep one longer, take
``info.copy()`` (a plain ``dict`` snapshot), or build the env with ``copy_infos=True``.
Keys written into a ``StepInfo`` are cleared when its buffer set is reused. ``dict(info)``,
``{**info}``, ``f(**info)``, pickle and deepcopy see every field; C code that reads a dict's
internal table directly does not (``json.dumps(info)`` gives ``{}``, pandas
``DataFrame(list_of_infos)`` misses the account fields): pass ``info.copy()`` there.
"""

from __future__ import annotations

import copy as _copy
from typing import Any

import numpy as np

from spotgym.envs import nb

__all__ = ["INFO_FIELDS", "StepInfo", "info_dict"]

# key -> (column of the info array, Python type)
INFO_FIELDS: dict[str, tuple[int, type]] = {
    "row": (nb.INF_ROW, int),
    "equity": (nb.INF_EQUITY, float),
    "cash": (nb.INF_CASH, float),
    "position": (nb.INF_POSITION, float),
    "exposure": (nb.INF_EXPOSURE, float),
    "fees_paid": (nb.INF_FEES_PAID, float),
    "trade": (nb.INF_TRADE, bool),
    "fill_price": (nb.INF_FILL_PRICE, float),
    "fill_qty": (nb.INF_FILL_QTY, float),
    "fee": (nb.INF_FEE, float),
    "step": (nb.INF_STEP, int),
    "price": (nb.INF_PRICE, float),
    "risk": (nb.INF_RISK, int),
    "halted": (nb.INF_HALTED, bool),
}
_MISSING = object()
assert [col for col, _ in INFO_FIELDS.values()] == list(range(len(nb.INFO_KEYS)))
assert tuple(INFO_FIELDS) == nb.INFO_KEYS


def info_dict(row_values: np.ndarray) -> dict[str, Any]:
    """A plain dict of the account fields from one row of an info array."""
    out = dict(zip(nb.INFO_KEYS, row_values.tolist()))
    out["row"] = int(out["row"])
    out["step"] = int(out["step"])
    out["trade"] = out["trade"] != 0.0
    out["risk"] = int(out["risk"])
    out["halted"] = out["halted"] != 0.0
    return out


class StepInfo(dict):
    """Info dict of account ``i`` for one step: account fields read from ``src[i]`` on access."""

    __slots__ = ("_src", "_i", "_dirty")

    def __init__(self, src: np.ndarray, i: int, dirty: set[int]) -> None:
        super().__init__()
        self._src = src
        self._i = i
        self._dirty = dirty

    # ------------------------------------------------------------------ reads
    def _field(self, key: str) -> Any:
        col, typ = INFO_FIELDS[key]
        return typ(self._src[self._i, col])

    def __getitem__(self, key: Any) -> Any:
        val = dict.get(self, key, _MISSING)
        if val is not _MISSING:
            return val
        if key in INFO_FIELDS:
            return self._field(key)
        raise KeyError(key)

    def get(self, key: Any, default: Any = None) -> Any:
        val = dict.get(self, key, _MISSING)
        if val is not _MISSING:
            return val
        if key in INFO_FIELDS:
            return self._field(key)
        return default

    def __contains__(self, key: object) -> bool:
        return key in INFO_FIELDS or dict.__contains__(self, key)

    def copy(self) -> dict[str, Any]:  # type: ignore[override]
        """A plain ``dict`` snapshot (account fields and every other key)."""
        out = info_dict(self._src[self._i])
        out.update(dict.items(self))
        return out

    def __iter__(self):
        return iter(self.copy())

    def __len__(self) -> int:
        return len(INFO_FIELDS) + sum(1 for k in dict.keys(self) if k not in INFO_FIELDS)

    def keys(self):  # type: ignore[override]
        return self.copy().keys()

    def values(self):  # type: ignore[override]
        return self.copy().values()

    def items(self):  # type: ignore[override]
        return self.copy().items()

    def __repr__(self) -> str:
        return repr(self.copy())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StepInfo):
            other = other.copy()
        return self.copy() == other

    __hash__ = None  # type: ignore[assignment]

    def __or__(self, other: Any) -> dict[str, Any]:
        return self.copy() | dict(other)

    def __ror__(self, other: Any) -> dict[str, Any]:
        return dict(other) | self.copy()

    def __reduce__(self):
        return (dict, (self.copy(),))

    def __copy__(self) -> dict[str, Any]:
        return self.copy()

    def __deepcopy__(self, memo: dict) -> dict[str, Any]:
        return _copy.deepcopy(self.copy(), memo)

    # ------------------------------------------------------------------ writes (ordinary storage)
    def __setitem__(self, key: Any, value: Any) -> None:
        self._dirty.add(self._i)
        dict.__setitem__(self, key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> StepInfo:  # type: ignore[override,misc]
        self.update(other)
        return self

    def pop(self, key: Any, *default: Any) -> Any:  # type: ignore[override]
        if dict.__contains__(self, key):
            return dict.pop(self, key)
        if key in INFO_FIELDS:
            return self._field(key)  # account fields are read-only: popping one just reads it
        if default:
            return default[0]
        raise KeyError(key)

    def __delitem__(self, key: Any) -> None:
        if key in INFO_FIELDS and not dict.__contains__(self, key):
            raise KeyError(f"{key!r} is a read-only account field of StepInfo")
        dict.__delitem__(self, key)

    def _clear_extras(self) -> None:
        dict.clear(self)
