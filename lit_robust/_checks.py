"""Argument checks with one wording: the argument in backticks, the allowed range, the value received."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["check_int", "check_number", "check_bool", "check_int_sequence", "check_pair", "check_seed",
           "check_torch_seed", "real_scalar", "check_has_values", "check_lr"]

#: the largest seed: Lightning's `seed_everything` and NumPy take [0, 2**32 - 1], torch a wider range, so a seed in
#: [0, SEED_MAX] (and the few seeds after it that a module draws with, seed + 1 ...) is one that every one of them takes
SEED_MAX = 2**32 - 1
TORCH_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator().manual_seed takes
#: the largest learning rate: torch's optimisers scale float32 parameters by it, and a larger one (1.7e308) ended in
#: "value cannot be converted to type float without overflow" from inside `optimizer.step()`, after the first batch
LR_MAX = float(torch.finfo(torch.float32).max)


def _is_int(value: Any) -> bool:  # numpy integers count, booleans do not
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def real_scalar(value: Any) -> Any:
    """A real scalar of any kind as a Python float (a numpy float, a 0-d tensor or array such as
    ``1 - mask.float().mean()``); anything else as given, for the caller's check to reject. A 32- or 16-bit float
    becomes the shortest decimal that reads back as it in its own dtype (``np.float32(0.7)`` is 0.7, not
    0.699999988).

    >>> import numpy as np, torch
    >>> real_scalar(np.float32(0.7)), real_scalar(torch.tensor(0.7)), real_scalar("auto"), real_scalar(True)
    (0.7, 0.7, 'auto', True)
    >>> real_scalar(torch.tensor(0.7, dtype=torch.bfloat16)), real_scalar(np.float16(0.3))
    (0.7, 0.3)
    """
    item = value
    if not _is_real(value) and getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        item = value.item()
    if not _is_real(item):
        return value
    dtype = str(getattr(value, "dtype", "float64"))
    if "float16" in dtype:  # float16 and bfloat16
        # float32's shortest decimal of a 16-bit float is its float32 expansion (bfloat16's 0.7 read 0.69921875 and
        # kept 69 of 100): the shortest decimal that reads back as the same 16-bit value instead
        return _shortest_decimal(item, value)
    if "float64" not in dtype:
        # a 32-bit float: its shortest decimal (np.float32(0.7) is 0.699999988 as a double, which would keep
        # 69 of 100 samples, not 70)
        return float(str(np.float32(item)))
    return float(item)


def check_margin(name: str, value: Any) -> float:
    """``value`` as a float in ``[0, 0.5)`` (a share of samples dropped on top of an estimate: ``auto_margin``,
    ITLM's ``auto_probe``), or the error naming ``name``, the range and the value; numpy and 0-d tensor scalars are
    read as floats, booleans refused.

    >>> check_margin("auto_margin", 0.05)
    0.05
    """
    value = real_scalar(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 0.5:
        raise ValueError(f"`{name}` must be in [0, 0.5), got {value!r}.")
    return float(value)


def _shortest_decimal(item: float, value: Any) -> float:
    """The decimal with the fewest significant digits that ``value``'s 16-bit dtype rounds to ``item``."""
    # a torch dtype, or numpy's float16 (numpy has no bfloat16)
    dtype = value.dtype if isinstance(value.dtype, torch.dtype) else getattr(torch, str(value.dtype))
    for digits in range(1, 17):
        candidate = float(f"{item:.{digits}g}")
        if torch.tensor(candidate, dtype=dtype).item() == item:
            return candidate
    return float(item)  # not reached: 17 significant digits read back as any double


def _kind(value: Any) -> str:
    return "" if _is_real(value) else f" (a {type(value).__name__})"


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None,
              optional: bool = False) -> int | None:
    """``value`` as an int in ``[low, high]`` (``None`` allowed with ``optional``), else a ``ValueError``.

    >>> check_int("batch_size", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be an integer >= 1, got 0.
    """
    if value is None and optional:
        return None
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            rng = f"an integer in [{low}, {high}]"
        elif low is not None:
            rng = f"an integer >= {low}"
        elif high is not None:
            rng = f"an integer <= {high}"
        else:
            rng = "an integer"
        raise ValueError(f"`{name}` must be {rng}{' or None' if optional else ''}, got {value!r}{_kind(value)}.")
    return int(value)


def check_seed(name: str, value: Any) -> int:
    """``value`` as an int in ``[0, 2**32 - 1]``, the seeds that torch, NumPy and Lightning's ``seed_everything`` all
    take: a negative seed passed torch's ``manual_seed`` where ``ITLM(seed=-1)`` and ``--seed_everything -1`` are
    refused, and one above torch's range (``2**64``) ended in its bare "Overflow when unpacking long long", naming no
    argument. The draws a module makes with ``seed + 1``, ``seed + 2``... stay in torch's range.

    >>> check_seed("seed", -1)
    Traceback (most recent call last):
    ...
    ValueError: `seed` must be an integer in [0, 4294967295], got -1.
    """
    return check_int(name, value, 0, SEED_MAX)


def check_torch_seed(name: str, value: Any) -> int:
    """``value`` as an int that ``torch.Generator().manual_seed`` takes: the check of the pure functions (the label
    and target corruptions) that the datamodules call with their own ``seed + 1``, which may be ``2**32``; a module's
    own ``seed`` argument is checked with :func:`check_seed`."""
    return check_int(name, value, *TORCH_SEED_RANGE)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allowed: str | None = None) -> float:
    """``value`` as a finite float in the interval (``low_open``/``high_open``: the bound is excluded); ``allowed``:
    the interval as the error states it, where the bounds' digits would read as noise."""
    ok = _is_real(value) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        if allowed is not None:
            rng = allowed
        elif low is not None and high is not None:
            rng = f"a number in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        elif low is not None:
            rng = f"a number {'>' if low_open else '>='} {low}"
        elif high is not None:
            rng = f"a number {'<' if high_open else '<='} {high}"
        else:
            rng = "a finite number"
        raise ValueError(f"`{name}` must be {rng}, got {value!r}{_kind(value)}.")
    return float(value)


def check_lr(value: Any, name: str = "lr") -> float:
    """``value`` as a learning rate: finite, > 0 and at most :data:`LR_MAX` (what a float32 parameter can take).

    >>> check_lr(0)
    Traceback (most recent call last):
    ...
    ValueError: `lr` must be a number > 0 (at most 3.4e+38, the largest float32), got 0.
    """
    # the range as "(0, 3.4028234663852886e+38]" read as noise to a regression newcomer who passed lr 0
    return check_number(name, value, 0, LR_MAX, low_open=True,
                        allowed=f"a number > 0 (at most {LR_MAX:.2g}, the largest float32)")


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}{_kind(value)}.")
    return value


def check_int_sequence(name: str, value: Any, low: int | None = None, example: str = "[5]") -> list[int]:
    """``value`` as a list of ints ``>= low``; a scalar gets the usual message (a sequence is expected)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"`{name}` must be a sequence of integers{f' >= {low}' if low is not None else ''} "
                         f"(e.g. {example}), got {value!r}{_kind(value) or f' (a single {type(value).__name__})'}.")
    bad = [v for v in value if not _is_int(v) or (low is not None and v < low)]
    if bad:
        raise ValueError(f"`{name}` must be a sequence of integers{f' >= {low}' if low is not None else ''}, got "
                         f"{list(value)!r} (offending: {bad!r}).")
    return [int(v) for v in value]


def check_pair(name: str, value: Any, what: str = "(low, high)") -> tuple[float, float]:
    """``value`` as a pair of finite numbers (order not checked), else a ``ValueError``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2 or not all(
            _is_real(v) and math.isfinite(v) for v in value):
        raise ValueError(f"`{name}` must be a pair of numbers {what}, got {value!r}.")
    return float(value[0]), float(value[1])


def check_has_values(name: str, tensor: torch.Tensor) -> None:
    """A ``ValueError`` naming ``name`` for a tensor on the meta device (a shape without values: the functions that
    read values ended in torch's "Cannot copy out of meta tensor; no data!" or "Tensor.item() cannot be called on
    meta tensors", naming no argument)."""
    if tensor.is_meta:
        raise ValueError(f"`{name}` must hold values, got a tensor on the meta device (shape {tuple(tensor.shape)}, "
                         "no data): build or load it on 'cpu' or an accelerator.")
