"""Pure tensor functions that turn per-sample scores into keep-masks.

Every selection rule in lit_robust (ITLM round trimming, per-batch filters, ...) ends in one of
these functions, so all of them share one ordering rule:

    samples are ranked by ``(score, index)`` ascending, and non-finite scores
    (NaN, +inf, -inf) rank after every finite score, i.e. they are dropped first.

Ranking ties by the sample's dataset index (not by its position in a batch or a shard) makes a
selection deterministic and independent of how the data were split across processes.

Nothing here imports Lightning or ``torch.distributed``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lit_robust._checks import _is_int, _is_real, real_scalar
from lit_robust.selection.radix import key_bits

__all__ = [
    "keep_count",
    "nonfinite_count",
    "ranking_dtype",
    "ranking_scores",
    "rank_order",
    "smallest_k_mask",
    "trim_mask",
    "per_class_trim_mask",
    "scatter_scores",
    "check_drop_ratio",
    "scheduled_drop_ratio",
    "batch_keep_count",
    "masked_mean",
    "starved_classes",
]


def keep_count(n: int, keep_ratio: float) -> int:
    """Number of samples kept out of ``n``: ``floor(keep_ratio * n)``.

    A product just below a whole number counts as that number -- within 5e-10, or 4 units in the last place of the
    product where that is more -- so that ``0.29 * 100`` keeps 29 and not 28 because of binary floating point, at
    any ``n`` (rounding to 9 decimals alone kept 28999999 of 10**8 at 0.29, and ITLM's ``"auto"``, which keeps ``k``
    as ``k / n``, one sample fewer than ``k`` for a few ``n`` above 10**6). The float error of ``keep_ratio * n`` is
    about one unit in the last place; a margin of 1e-12 of the product, used before, kept one sample too many above
    about 10**8 samples (``keep_count(862409756, 0.5041)`` read 434740758 for the exact 434740757.9996).

    >>> keep_count(10, 0.55), keep_count(100, 0.29), keep_count(3, 1.0), keep_count(10**8, 0.29)
    (5, 29, 3, 29000000)
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"`n` must be an integer >= 0, got {n!r}.")
    if not _is_real(keep_ratio) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio!r}.")
    product = keep_ratio * n
    whole = math.floor(product)
    if whole + 1 - product <= max(5e-10, 4 * math.ulp(product)):
        whole += 1
    return min(n, int(whole))


def nonfinite_count(scores: Tensor) -> int:
    """Number of NaN or infinite entries in ``scores``."""
    return int((~torch.isfinite(scores)).sum().item())


def ranking_dtype(dtype: torch.dtype) -> torch.dtype:
    """The float dtype scores of ``dtype`` are ranked in: their own if floating; float64 for ``int32``/``int64``
    (float32 would round integers above ``2**24`` into ties); float32 for narrower integers and booleans."""
    if dtype.is_floating_point:
        return dtype
    return torch.float64 if key_bits(dtype) == 64 else torch.float32


def ranking_scores(scores: Tensor) -> Tensor:
    """Scores as ranked: float (see :func:`ranking_dtype`), with every non-finite value replaced by ``+inf``."""
    s = scores.detach()
    if not s.is_floating_point():
        s = s.to(ranking_dtype(s.dtype))
    return torch.where(torch.isfinite(s), s, torch.full_like(s, math.inf))


def _check_1d(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"`{name}` must be a 1-D torch.Tensor with one entry per sample, got {type(t).__name__}.")
    if t.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D tensor with one entry per sample, got shape {tuple(t.shape)}.")


def rank_order(scores: Tensor, index: Tensor | None = None) -> Tensor:
    """Positions of ``scores`` sorted by ``(score, index)`` ascending; non-finite scores last.

    Args:
        scores: 1-D tensor of per-sample scores (lower is better).
        index: 1-D integer tensor of unique sample ids, same length; defaults to ``arange(n)``.

    Returns:
        A permutation ``order`` such that ``scores[order]`` is the ranking.

    >>> rank_order(torch.tensor([0.5, float("nan"), 0.1, 0.5]), torch.tensor([7, 0, 3, 2])).tolist()
    [2, 3, 0, 1]
    """
    _check_1d("scores", scores)
    key = ranking_scores(scores)
    if index is None:
        return torch.argsort(key, stable=True)
    _check_1d("index", index)
    if index.numel() != scores.numel():
        raise ValueError(
            f"`index` must have one entry per score, {scores.numel()} entries (as `scores`), got {index.numel()}."
        )
    if index.device != scores.device:
        raise ValueError(f"`index` is on {index.device} but `scores` is on {scores.device}; put both on one device.")
    by_index = torch.argsort(index, stable=True)
    by_score = torch.argsort(key.index_select(0, by_index), stable=True)
    return by_index.index_select(0, by_score)


def smallest_k_mask(scores: Tensor, k: int, index: Tensor | None = None) -> Tensor:
    """Boolean mask keeping the ``k`` samples ranked first by ``(score, index)``.

    >>> smallest_k_mask(torch.tensor([3.0, 1.0, 2.0, 1.0]), 2).tolist()
    [False, True, False, True]
    """
    _check_1d("scores", scores)
    n = scores.numel()
    if not _is_int(k) or not 0 <= k <= n:
        raise ValueError(f"`k` must be an integer in [0, {n}] (the number of scores), got {k!r}.")
    order = rank_order(scores, index)
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device)
    mask.index_fill_(0, order[:k], True)
    return mask


def trim_mask(scores: Tensor, keep_ratio: float, index: Tensor | None = None) -> Tensor:
    """Keep the ``floor(keep_ratio * n)`` smallest scores (ITLM's trimmed set, Shen & Sanghavi 2019, Alg. 1).

    .. math:: S = \\arg\\min_{|S| = \\lfloor \\alpha n \\rfloor} \\sum_{i \\in S} f_\\theta(s_i)

    >>> trim_mask(torch.tensor([0.9, 0.1, float("inf"), 0.3]), 0.5).tolist()
    [False, True, False, True]
    """
    _check_1d("scores", scores)
    return smallest_k_mask(scores, keep_count(scores.numel(), keep_ratio), index)


def check_class_labels(labels: Tensor, n: int) -> None:
    """Raise unless ``labels`` is a 1-D tensor of ``n`` class labels: integers >= 0."""
    _check_1d("labels", labels)
    if labels.numel() != n:
        raise ValueError(f"`labels` must have one entry per score, {n} entries (as `scores`), got {labels.numel()}.")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must be integer class labels, got dtype {labels.dtype}.")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"`labels` must be class labels >= 0, got {int(labels.min())}.")


def per_class_trim_mask(scores: Tensor, labels: Tensor, keep_ratio: float, index: Tensor | None = None) -> Tensor:
    """ITLM's trimmed set taken within each class: of the ``n_c`` samples labelled ``c``, keep the
    ``floor(keep_ratio * n_c)`` ranked first by ``(score, index)`` (non-finite scores last), for every class.

    .. math:: S = \\bigcup_c \\arg\\min_{S_c \\subseteq \\{i : y_i = c\\},\\ |S_c| = \\lfloor \\alpha n_c \\rfloor}
              \\sum_{i \\in S_c} f_\\theta(s_i)

    One trim over all samples (:func:`trim_mask`) can empty a class whose samples all score high: under pair-swap
    noise (T-shirt <-> shirt) a newcomer's ITLM dropped 532 of the 599 samples labelled T-shirt, 413 of them correctly
    labelled, and the model retrained on the selection lost 3.3 points to cleanlab's cleaning.

    >>> per_class_trim_mask(torch.tensor([0.9, 0.1, 0.8, 0.7]), torch.tensor([0, 0, 1, 1]), 0.5).tolist()
    [False, True, False, True]
    """
    _check_1d("scores", scores)
    check_class_labels(labels, scores.numel())
    if index is not None:
        _check_1d("index", index)
        if index.numel() != scores.numel():
            raise ValueError(f"`index` must have one entry per score, {scores.numel()} entries (as `scores`), "
                             f"got {index.numel()}.")
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    for c in torch.unique(labels).tolist():
        members = labels == c
        mask[members] = trim_mask(scores[members], keep_ratio, None if index is None else index[members])
    return mask


def scatter_scores(n: int, index: Tensor, scores: Tensor) -> Tensor:
    """Place gathered ``(index, score)`` pairs into a dense vector of length ``n``.

    Duplicated indices (e.g. from a sampler that pads shards) are allowed only if they carry the same
    score; every index in ``[0, n)`` must be present exactly once after de-duplication.
    """
    _check_1d("index", index)
    _check_1d("scores", scores)
    if index.numel() != scores.numel():
        raise ValueError(f"`index` must have one entry per score, {scores.numel()} entries (as `scores`), "
                         f"got {index.numel()}.")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:  # a float index: bare IndexError
        raise ValueError(f"`index` must hold integer sample indices, got dtype {index.dtype}.")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
        raise ValueError(
            f"sample indices must be in [0, {n}), got values in [{int(index.min())}, {int(index.max())}]."
        )
    dense = torch.full((n,), math.nan, dtype=ranking_dtype(scores.dtype), device=scores.device)
    seen = torch.zeros(n, dtype=torch.bool, device=scores.device)
    dense[index] = scores.to(dense.dtype)
    seen[index] = True
    # duplicates must agree (NaN == NaN counts as agreement)
    back = dense[index]
    same = (back == scores.to(dense.dtype)) | (torch.isnan(back) & torch.isnan(scores.to(dense.dtype)))
    if not bool(same.all()):
        bad = index[~same][:5].tolist()
        raise ValueError(f"sample indices {bad} were scored twice with different scores: each training sample needs "
                         "an index of its own (0 .. n - 1, each once); `lit_robust.IndexedDataset` adds them.")
    if not bool(seen.all()):
        missing = torch.nonzero(~seen).flatten()
        raise ValueError(
            f"{missing.numel()} of {n} samples were never scored (first missing indices: {missing[:5].tolist()}); "
            "the scoring loader must visit every training sample."
        )
    return dense


def auto_string_hint(value: object) -> str:
    """What a string given for a number-or-``"auto"`` argument was likely meant to be: "did you mean 'auto'?" for
    ``"auto"`` but for case or spaces, "a str: pass the number itself, 0.7" for one that reads as a number, else
    ``""``. The CLI said "did you mean 'auto'?" to ``Auto``, the Python API only gave the allowed values.

    >>> auto_string_hint("Auto"), auto_string_hint("0.7"), auto_string_hint("half")
    ("did you mean 'auto'?", 'a str: pass the number itself, 0.7', '')
    """
    if not isinstance(value, str) or value == "auto":
        return ""
    if value.strip().lower() == "auto":
        return "did you mean 'auto'?"
    try:
        number = float(value)
    except ValueError:
        return ""
    return f"a str: pass the number itself, {number:g}" if math.isfinite(number) else ""


def percent_hint(name: str, value: object, high: float = 1.0, high_open: bool = False, opt_in: str = "") -> str:
    """" It is a fraction: ..." when ``value`` reads as a percent (2 <= value <= 100; 1.5 reads as a slip), else
    ``""``: a regression user's `--trainer.callbacks.init_args.drop_ratio 25` got the range alone. The fraction is
    offered only where the argument takes it (at most ``high``, below it with ``high_open``), or with ``opt_in``
    (e.g. ``"`allow_large_drop=True`"``) where that makes it allowed below 1: ``drop_ratio=50`` was told to pass
    0.5, which is refused too.

    >>> percent_hint("drop_ratio", 50, 0.5, high_open=True, opt_in="`allow_large_drop=True`")
    ' It is a fraction, not a percent: for 50 % pass drop_ratio=0.5 with `allow_large_drop=True`.'
    >>> percent_hint("contamination", 50, 0.5, high_open=True)
    ' It is a fraction, not a percent, and 50 % is out of its range too (contamination < 0.5).'
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 2.0 <= value <= 100.0:
        return ""
    fraction = value / 100
    if fraction < high or (fraction == high and not high_open):
        return f" It is a fraction, not a percent: for {value:g} % pass {name}={fraction:g}."
    if opt_in and fraction < 1.0:
        return f" It is a fraction, not a percent: for {value:g} % pass {name}={fraction:g} with {opt_in}."
    return (f" It is a fraction, not a percent, and {value:g} % is out of its range too ({name} "
            f"{'<' if high_open else '<='} {high:g}).")


def check_drop_ratio(drop_ratio: float, allow_large_drop: bool = False, name: str = "drop_ratio") -> float:
    """Validate a per-batch drop ratio ε: ``[0, 0.5)`` (the PRL guarantee), or ``[0, 1)`` with the opt-in."""
    drop_ratio = real_scalar(drop_ratio)
    if isinstance(drop_ratio, bool) or not isinstance(drop_ratio, (int, float)):
        # the range the opt-in allows (a null `drop_ratio` beside `allow_large_drop: true` was told [0, 0.5))
        raise ValueError(f"`{name}` must be a number in [0, {1 if allow_large_drop else 0.5}), got {drop_ratio!r}.")
    if allow_large_drop:
        if not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1) with `allow_large_drop=True`, got {drop_ratio!r}."
                             + percent_hint(name, drop_ratio, 1.0, high_open=True))
    elif not 0.0 <= drop_ratio < 0.5:
        hint = " Pass `allow_large_drop=True` to drop more (the guarantee needs ε < 0.5)." \
            if 0.5 <= drop_ratio < 1.0 else ""
        if 0.5 < drop_ratio < 1.0:  # a newcomer's 0.7 meant "keep 70 %"
            hint += f" It is the share dropped: to keep {drop_ratio:.0%}, pass {name}={1 - drop_ratio:.4g}."
        hint += percent_hint(name, drop_ratio, 0.5, high_open=True, opt_in="`allow_large_drop=True`")
        raise ValueError(f"`{name}` must be in [0, 0.5), got {drop_ratio!r}.{hint}")
    return float(drop_ratio)


def scheduled_drop_ratio(epoch: int, drop_ratio: float, warmup_epochs: int) -> float:
    r"""The warm-up of thesis Alg. 5: :math:`\varepsilon_t = \varepsilon \min(t / T_k, 1)` in 0-based epoch ``t``.

    The kept fraction :math:`R(t) = 1 - \varepsilon_t` goes linearly from 1 to :math:`1 - \varepsilon`.

    >>> [round(scheduled_drop_ratio(t, 0.4, 4), 2) for t in range(6)]
    [0.0, 0.1, 0.2, 0.3, 0.4, 0.4]
    """
    if warmup_epochs == 0:
        return float(drop_ratio)
    return float(drop_ratio) * min(epoch / warmup_epochs, 1.0)


def batch_keep_count(n: int, drop_ratio: float) -> tuple[int, bool]:
    """Samples a per-batch filter keeps out of ``n`` at drop ratio ε: ``(floor((1-ε) n), False)``, or
    ``(n, True)`` when that would keep none of a non-empty batch (the batch is then kept whole).

    >>> batch_keep_count(10, 0.3), batch_keep_count(1, 0.3), batch_keep_count(0, 0.3)
    ((7, False), (1, True), (0, False))
    """
    k = keep_count(n, 1.0 - drop_ratio)
    if k == 0 and n > 0:
        return n, True
    return k, False


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` over ``keep`` (``torch.where``, so a dropped NaN cannot leak into the sum);
    an all-dropped input gives ``0`` that still has a graph."""
    return torch.where(keep, values, torch.zeros_like(values)).sum() / keep.sum().clamp(min=1)


#: a class whose samples a selection drops at this many times the overall rate (and at :data:`MIN_CLASS_DROP` or
#: more) counts as starved, however much of it is kept: a newcomer's minority class (15 % of the rows, its labels
#: right) lost 22 % of its rows against 2.4 % overall, every dropped row was one of them, and ITLM said nothing
DROP_FACTOR = 5.0
MIN_CLASS_DROP = 0.1


def starved_classes(labels: Tensor, kept: Tensor, share: float = 0.5, min_count: int = 10,
                    drop_factor: float = DROP_FACTOR) -> list[tuple[int, int, int]]:
    """The classes a selection starved: ``(class, kept, count)`` for every label ``c`` with at least ``min_count``
    samples whose kept share is under ``share`` times the overall kept share, or whose dropped share is at least
    ``drop_factor`` times the overall dropped share and at least :data:`MIN_CLASS_DROP`, in class order (pure). ITLM
    warns of its selections with it, the per-batch filters of their reports' last epoch.

    Args:
        labels: one integer label per sample, ``>= 0``.
        kept: one boolean per sample, the same length.

    >>> starved_classes(torch.tensor([0] * 10 + [1] * 10), torch.tensor([True] * 10 + [True] + [False] * 9))
    [(1, 1, 10)]
    >>> starved_classes(torch.tensor([0] * 90 + [1] * 10), torch.tensor([True] * 90 + [False] * 2 + [True] * 8))
    [(1, 8, 10)]
    """
    if labels.numel() == 0:
        return []
    labels, kept = labels.long().cpu(), kept.bool().cpu()
    counts = torch.bincount(labels)
    kept_counts = torch.bincount(labels[kept], minlength=counts.numel())
    n = labels.numel()
    overall = int(kept.sum()) / n
    dropped = n - int(kept.sum())

    def starved(c: int) -> bool:
        count, k = int(counts[c]), int(kept_counts[c])
        # integers only: `(count - k) / count >= drop_factor * dropped / n`, `(count - k) / count >= MIN_CLASS_DROP`
        often = (count - k) * n >= drop_factor * dropped * count and count - k >= MIN_CLASS_DROP * count
        return count >= min_count and (k < share * overall * count or often)

    return [(c, int(kept_counts[c]), int(counts[c])) for c in range(counts.numel()) if starved(c)]
