"""Order-preserving integer keys for scores, and the histogram steps of a radix select.

A radix (histogram) select finds the ``k``-th smallest of many numbers without sorting them: look
at the top ``w`` bits of every key, count how many keys fall into each of the ``2**w`` bins, find
the bin that holds the ``k``-th key from the running sum of the counts, and repeat on the next ``w``
bits of the keys in that bin only. Counting is a sum, so with data spread over several processes
the counts of every process simply add up; :mod:`lit_robust.selection.sharded` builds the distributed
selection on top of the pure functions here.

The keys follow :mod:`lit_robust.selection.rules`'s ordering rule exactly:

    ``ordered_key(a) < ordered_key(b)``  iff  ``a`` ranks before ``b`` by score, and
    ``ordered_key(a) == ordered_key(b)`` iff  they tie (``-0.0`` ties ``+0.0``; every NaN/±inf
    ties every other non-finite score and ranks after all finite scores).

Float64 scores, and integer scores of 32 or 64 bits (ranked as float64, which holds every integer up to
``2**53`` exactly), get 64-bit keys (``int64``); every other dtype is ranked as float32 (as
:func:`lit_robust.selection.rules.ranking_scores` does) and gets 32-bit keys (``int32``). Keys are
*signed* integers that compare like the scores; the radix digits are taken from the unsigned
pattern ``u = key + 2**(bits - 1)``, so bin ``0`` holds the smallest keys.

Nothing here imports Lightning or ``torch.distributed``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "key_bits",
    "ordered_key",
    "nonfinite_key",
    "radix_digit",
    "digit_histogram",
    "select_bin",
    "pass_schedule",
    "kth_smallest_key",
]

# |bit pattern| of the largest finite float: anything above it is inf or NaN
_MAX_FINITE_MAGNITUDE = {32: 0x7F7FFFFF, 64: 0x7FEFFFFFFFFFFFFF}


def _wide(dtype: torch.dtype) -> bool:
    """Whether scores of ``dtype`` are ranked as float64: float64 itself, and integers too wide for float32's
    24-bit significand (``int32``, ``int64``), which float32 would round into ties."""
    if dtype == torch.float64:
        return True
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool and dtype.itemsize >= 4


def key_bits(dtype: torch.dtype) -> int:
    """Width of the ordered keys of scores of ``dtype``: 64 for ``float64``, ``int32`` and ``int64``, else 32."""
    return 64 if _wide(dtype) else 32


def nonfinite_key(bits: int) -> int:
    """The key of every NaN/±inf score: the largest value of the key type, ``2**(bits-1) - 1``."""
    if bits not in (32, 64):
        raise ValueError(f"`bits` must be 32 or 64, got {bits}.")  # "in [32, 64]" read as if 48 were allowed
    return (1 << (bits - 1)) - 1


def ordered_key(scores: Tensor) -> Tensor:
    """Signed integer keys that sort exactly like ``scores`` under the package's ranking rule.

    With ``b`` the IEEE-754 bit pattern of a score and ``m = b & (2**(bits-1) - 1)`` its magnitude
    bits, the key is

    .. math:: \\operatorname{key}(s) = \\begin{cases} +m & s \\ge 0 \\\\ -m & s < 0 \\\\
              2^{bits-1} - 1 & s \\notin \\mathbb{R} \\text{ (NaN, } \\pm\\infty) \\end{cases}

    IEEE-754 magnitudes are ordered like their bit patterns, so this is monotone; ``-0.0`` and
    ``+0.0`` both map to ``0`` and every non-finite score to the maximum key.

    Args:
        scores: 1-D tensor of scores (any real dtype).

    Returns:
        ``int64`` keys for ``float64``, ``int32`` and ``int64`` scores, ``int32`` keys otherwise; same shape and
        device.

    >>> ordered_key(torch.tensor([-1.0, -0.0, 0.0, 1.0, float("nan"), -float("inf")])).tolist()
    [-1065353216, 0, 0, 1065353216, 2147483647, 2147483647]
    """
    s = scores.detach()
    if _wide(s.dtype):
        s = s.to(torch.float64)
        bits, int_type = 64, torch.int64
    else:
        if s.dtype != torch.float32:
            s = s.to(torch.float32)
        bits, int_type = 32, torch.int32
    pattern = s.contiguous().view(int_type)
    magnitude = pattern & ((1 << (bits - 1)) - 1)
    negative = pattern >> (bits - 1)  # 0 for +, -1 for - (arithmetic shift)
    key = (magnitude ^ negative) - negative  # two's complement negation where negative
    key.masked_fill_(magnitude > _MAX_FINITE_MAGNITUDE[bits], nonfinite_key(bits))
    return key


def radix_digit(keys: Tensor, shift: int, width: int, bits: int) -> Tensor:
    """Bits ``[shift, shift + width)`` of the unsigned pattern ``u = key + 2**(bits-1)`` of each key.

    .. math:: \\operatorname{digit}(key) = \\lfloor u / 2^{shift} \\rfloor \\bmod 2^{width}

    Args:
        keys: signed keys from :func:`ordered_key` (or any ``int32``/``int64`` values).
        shift: lowest bit of the digit, in ``[0, bits - width]``.
        width: number of bits of the digit, in ``[1, 16]``.
        bits: key width, 32 or 64.

    Returns:
        Digits in ``[0, 2**width)``, same dtype as ``keys``.
    """
    if not 1 <= width <= 16:
        raise ValueError(f"`width` must be in [1, 16], got {width}.")
    if not 0 <= shift <= bits - width:
        raise ValueError(f"`shift` must be in [0, {bits - width}] for {bits}-bit keys and width {width}, got {shift}.")
    digit = (keys >> shift) & ((1 << width) - 1)
    if shift + width == bits:  # the digit holds the sign bit, which u has flipped
        digit ^= 1 << (width - 1)
    return digit


def digit_histogram(digits: Tensor, width: int) -> Tensor:
    """Counts of each digit value: ``hist[j] = |{i : digits[i] = j}|``, an ``int64`` tensor of ``2**width``."""
    if digits.numel() == 0:
        return torch.zeros(1 << width, dtype=torch.int64, device=digits.device)
    return torch.bincount(digits, minlength=1 << width).to(torch.int64)


def select_bin(hist: Tensor, k: int) -> tuple[int, int]:
    """The bin that holds the ``k``-th smallest element (1-based) and its rank inside that bin.

    .. math:: j = \\min\\{j : \\textstyle\\sum_{i \\le j} h_i \\ge k\\}, \\qquad
              k' = k - \\textstyle\\sum_{i < j} h_i

    >>> select_bin(torch.tensor([2, 0, 3, 1]), 4)
    (2, 2)
    """
    total = int(hist.sum())
    if not 1 <= k <= total:
        raise ValueError(f"`k` must be in [1, {total}] (the histogram's total count), got {k}.")
    cumulative = torch.cumsum(hist.to(torch.int64), 0)
    j = int(torch.searchsorted(cumulative, torch.tensor([k], dtype=torch.int64, device=cumulative.device)))
    before = int(cumulative[j - 1]) if j > 0 else 0
    return j, k - before


def pass_schedule(bits: int, bits_per_pass: int) -> list[tuple[int, int]]:
    """``(shift, width)`` of each radix pass over ``bits``-bit keys, most significant digit first.

    >>> pass_schedule(32, 11)
    [(21, 11), (10, 11), (0, 10)]
    """
    if not 1 <= bits_per_pass <= 16:
        raise ValueError(f"`bits_per_pass` must be in [1, 16], got {bits_per_pass}.")
    schedule = []
    shift = bits
    while shift > 0:
        width = min(bits_per_pass, shift)
        shift -= width
        schedule.append((shift, width))
    return schedule


def kth_smallest_key(keys: Tensor, k: int, bits: int, bits_per_pass: int = 11) -> int:
    """The ``k``-th smallest (1-based) of signed ``bits``-bit keys, by histogram passes in one process.

    This is the single-process form of the distributed select; it touches every key once and then
    only the keys of the chosen bin.

    >>> kth_smallest_key(torch.tensor([5, -3, 7, 5], dtype=torch.int32), 3, 32)
    5
    """
    n = keys.numel()
    if not 1 <= k <= n:
        raise ValueError(f"`k` must be in [1, {n}] (the number of keys), got {k}.")
    prefix = 0
    candidates = keys
    for shift, width in pass_schedule(bits, bits_per_pass):
        digits = radix_digit(candidates, shift, width, bits)
        j, k = select_bin(digit_histogram(digits, width), k)
        prefix = (prefix << width) | j
        candidates = candidates[digits == j]
    return prefix - (1 << (bits - 1))
