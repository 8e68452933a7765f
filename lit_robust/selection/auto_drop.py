r"""``drop_ratio="auto"``: the per-batch drop ratio from the corrupted fraction estimated during warm-up.

Shared by :class:`~lit_robust.BatchFilter` (hence :class:`~lit_robust.AdversarialTrigger`'s filter and
:class:`~lit_robust.RealNVP`'s trimming), :class:`~lit_robust.CoTeaching` and :class:`~lit_robust.RCA`.

The schedule (``T`` = ``warmup_epochs``, epochs 0-based; the owners' default ``warmup_epochs=None`` is
:data:`AUTO_WARMUP_EPOCHS` = 3 with ``"auto"`` and 0 with a numeric drop ratio, :func:`resolved_warmup`)::

    collecting epochs:  t < W = max(T, 1), and every epoch with reestimate=True
    at the end of a collecting epoch t:  e_t = estimate_corruption(mean score of each sample in epoch t)
    eps_hat after epoch t:  median of e_1 .. e_min(t, W-1)  (e_0 while it is the only one);
                            with reestimate=True once t >= W: the latest positive one of e_1 .. e_t while more
                            than half of them are positive, else 0
    drop ratio of epoch t:  eps_t = 0 while no estimate exists (epoch 0), else  min(eps_hat + m, cap) * min(t / T, 1)

so epoch 0 always trains on every sample and only collects scores (with ``T = 0`` it is an extra estimation epoch:
``T = 0`` and ``T = 1`` give the same schedule), and without ``reestimate`` (``None``, BatchFilter's and CoTeaching's default, is
``True`` where the scores are one regression target's losses: :meth:`AutoDropRatio.read_data`) the estimate stays fixed from the
end of warm-up on. Epochs ``t`` count from the schedule's start: 0 at the start of the fit, or the epoch at which a
round-based callback last re-initialised the model (:meth:`AutoDropRatio.restart`, e.g. ``ITLM(reinit=True)``
with a ``BatchFilter(restart_on_reinit=True)``): a freshly drawn model then collects and estimates anew, and the
estimates of earlier windows no longer count. ``m`` is ``auto_margin``; ``cap`` is the module's largest allowed drop ratio less 0.01 (0.49,
or 0.99 with ``allow_large_drop``): an estimate above it is clipped with a warning.

Why these choices (measured on scikit-learn's digits, MLP, 30 % random or systematic label noise, PRL(L) and SPL,
``T = 10``, 3 seeds each; the per-epoch estimates from scores collected during the epoch and from an eval-mode
scoring pass of the whole training set at the epoch end): epoch 0's in-epoch scores, half of them from a barely
trained model, gave ``e_0 = 0`` in all 12 runs (a scoring pass: 7-30 points off), hence ``e_0`` only sets the
first ramp step; in epochs 1-8 the two were equally close (random noise: 0-3 points mean error for both), so the
scores are collected during training at no extra cost; from epoch 9 on, as the network starts to fit the noisy
labels, both drift down (PRL(L), random noise: last warm-up epoch 0.19-0.27 for a true 0.30), while the median
of epochs 1-9 gave 0.27-0.28 (PRL(L)) and 0.29-0.30 (SPL) for random noise and 0.26-0.29 (PRL(L)) for
systematic noise; SPL under systematic noise stayed unreliable either way (0.00-0.31).

Scores are kept per dataset index (their mean over the epoch, so a sample seen twice — a padding sampler, a
sampler with replacement — counts once) and, under DDP, all-gathered before the estimate, whatever the filter's
``scope``: every rank estimates on the same multiset of ``(index, mean score)``, so the estimate, and the drop
ratio, are the same on every rank, and the same scores give the same estimate at any world size (another world size
deals other batches and so trains another model: its scores, and its estimate, can differ).

``estimator="disagreement"`` (the default of :class:`~lit_robust.BatchFilter` and :class:`~lit_robust.CoTeaching`;
:func:`~lit_robust.functional.estimation.estimate_corruption_from_predictions`):
each collected batch also brings the given integer label and the module's predicted label from the same training
forward (the argmax of the ``[B, C]`` outputs ``per_sample_loss`` returned:
:func:`~lit_robust.report.labels_from_outputs`; no extra forward). Per dataset index the estimate uses the mean
score (as above) and the labels of the sample's *latest* step in the epoch (:func:`per_index_labels`: the largest
step number; a tie -- the same sample on two ranks in one step, e.g. a padding sampler -- goes to the smallest
predicted label, then the smallest given label), so it too depends only on the gathered multiset of
``(index, score, step, given, predicted)``, not on the ranks' order. A module without integer targets or ``[B, C]``
outputs (in any batch of the epoch, on any rank) is estimated with ``"gmm"`` instead, with one info line.

The pure functions (:func:`per_index_mean`, :func:`per_index_labels`, :func:`auto_drop_ratio`, :func:`auto_scheduled_drop_ratio`) use
neither Lightning nor ``torch.distributed``; :class:`AutoDropRatio` holds the state and calls them (and
:mod:`lit_robust.selection.distributed` for the gather).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust._backend import rank_zero_info, rank_zero_warn
from lit_robust._checks import _is_int, _kind, check_bool, check_margin, real_scalar
from lit_robust.functional.estimation import (
    LABEL_ESTIMATORS,
    UNCORRECTED_REASON,
    CorruptionEstimate,
    estimate_corruption,
    estimate_from_labels,
)
from lit_robust.selection import distributed
from lit_robust.selection.rules import auto_string_hint, check_drop_ratio, percent_hint, scheduled_drop_ratio

__all__ = ["AUTO_WARMUP_EPOCHS", "AutoDropRatio", "Estimator", "FilterEstimator", "auto_drop_ratio",
           "auto_scheduled_drop_ratio", "REPORT_OFF", "REPORT_RANKS", "check_auto_args", "combined_estimate",
           "estimate_from_labels", "mixture_of",
           "nothing_found_note", "uncorrected", "uncorrected_note", "cleanlab_hint", "partial_epoch_note",
           "cut_epoch_resume_note",
           "per_index_labels", "per_index_mean",
           "report_pointer", "say_reestimated",
           "check_warmup_epochs", "resolved_warmup"]

Estimator = Literal["gmm", "bmm"]  # the score mixtures (every owner; the only choices of RealNVP/RCA: no labels)
FilterEstimator = Literal["gmm", "bmm", "disagreement", "class_floor"]  # the classification filters
_ESTIMATORS = ("gmm", "bmm")
#: warm-up estimates (the fixed one is their median) further apart than this are said to be unsteady
UNSTEADY_SPREAD = 0.15
FILTER_ESTIMATORS = ("gmm", "bmm", "disagreement", "class_floor")
DEFAULT_FILTER_ESTIMATOR: FilterEstimator = "disagreement"  # measured: benchmarks/results/corruption_rate_prl_auto.md
# why an estimate reaches the cap, said in the clipping warnings (a newcomer's one-step epochs read 72-82 % noise)
#: the estimators' default ``min_samples``: with fewer samples no mixture is fitted and nothing is counted
AUTO_MIN_SAMPLES = 20


def too_few_for_auto(owner: str, argument: str, n: int, part: Any = None) -> str:
    """The one warning an ``"auto"`` owner gives for a training set of ``n < AUTO_MIN_SAMPLES`` samples, in place of
    the estimator's own, which names its internal ``min_samples`` (a newcomer's 12-row table got three messages, one a
    RuntimeWarning of an internal function, none naming ``keep_ratio``, the minimum or the rows received). ``part``:
    the epoch's :class:`~lit_robust._lightning.EpochPart` when it scored part of the set (a reviewer's
    ``limit_train_batches=2`` of 240 samples was told the training set held 16)."""
    number = f"`{argument}={0.8 if argument == 'keep_ratio' else 0.2}`"
    if part is not None:
        why = part.stopped_by or f"`{part.setting}={part.limit!r}`"
        return (f"{owner}: `{argument}='auto'` needs the scores of at least {AUTO_MIN_SAMPLES} training samples, and "
                f"the epoch scored {n} ({why} trained {part.trained} of its {part.loader_batches} batches): it "
                f"estimates 0 and drops nothing. Let the epochs see more of the set, or pass a number, e.g. {number}.")
    return (f"{owner}: `{argument}='auto'` needs at least {AUTO_MIN_SAMPLES} training samples to estimate the "
            f"corrupted share from, got {n}: it estimates 0 and drops nothing. Pass a number instead, e.g. {number}.")


@contextlib.contextmanager
def quiet_about_too_few(n: int) -> Iterator[None]:
    """Where ``n`` (the samples estimated from) is under :data:`AUTO_MIN_SAMPLES`, silence the estimators' "only m
    finite scores, fewer than the 20 ..." warning: the owner says :func:`too_few_for_auto` instead."""
    if n >= AUTO_MIN_SAMPLES:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*only \d+ finite (scores|rows), fewer than the \d+",
                                category=RuntimeWarning)
        yield


UNLEARNT_NOTE = ("an estimate this high usually means the model had not learned yet when it was made: too few steps, "
                 "e.g. a batch as large as the data set, or a short warm-up")
# a per-batch filter reads the training step's predictions: a soft-label user's mixup read 0.61 for 30 % noise
MIXED_INPUTS_NOTE = "or inputs mixed in the training step (mixup, cutmix), whose predictions the filter reads"
_CAP_BELOW = 0.01  # the clip value is this far below the module's (open) upper bound on the drop ratio
#: the warm-up ``warmup_epochs=None`` (the owners' default) gives ``drop_ratio="auto"``: a default of 0 fixed the
#: estimate from epoch 0's scores (digits, 30 % flipped: 0.588, clipped to 0.49) and warned against itself; 3 is
#: the warning's own figure (a text classifier: 18.5 % for 20.8 %, against 40.1 % after epoch 0)
AUTO_WARMUP_EPOCHS = 3
_WARMUP_ALLOWED = (f"an integer >= 0 or None (the default: {AUTO_WARMUP_EPOCHS} epochs with drop_ratio='auto', "
                   "0 with a number)")


def check_warmup_epochs(warmup_epochs: Any) -> int | None:
    """``warmup_epochs`` as an int ``>= 0``, or ``None`` (the owners' default, :func:`resolved_warmup`), else a
    ``ValueError`` naming the allowed values.

    >>> check_warmup_epochs(-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `warmup_epochs` must be an integer >= 0 or None (the default: 3 epochs with ...), got -1.
    """
    if warmup_epochs is None:
        return None
    if not _is_int(warmup_epochs) or warmup_epochs < 0:
        raise ValueError(f"`warmup_epochs` must be {_WARMUP_ALLOWED}, got {warmup_epochs!r}{_kind(warmup_epochs)}.")
    return int(warmup_epochs)


def resolved_warmup(warmup_epochs: int | None, drop_ratio: Any) -> int:
    """The warm-up the schedule uses (pure): ``warmup_epochs`` itself, or for ``None`` :data:`AUTO_WARMUP_EPOCHS`
    with ``drop_ratio="auto"`` and 0 with a numeric drop ratio (the default before, unchanged).

    >>> resolved_warmup(None, "auto"), resolved_warmup(None, 0.3), resolved_warmup(0, "auto")
    (3, 0, 0)
    """
    if warmup_epochs is not None:
        return int(warmup_epochs)
    return AUTO_WARMUP_EPOCHS if isinstance(drop_ratio, str) and drop_ratio == "auto" else 0


def per_index_mean(index: Tensor, scores: Tensor) -> tuple[Tensor, Tensor]:
    """``(unique indices ascending, mean score of each)`` in float64 (pure). A NaN among a sample's scores makes
    its mean NaN; an index seen once keeps its score exactly.

    >>> i, s = per_index_mean(torch.tensor([4, 1, 4]), torch.tensor([1.0, 2.0, 3.0]))
    >>> i.tolist(), s.tolist()
    ([1, 4], [2.0, 2.0])
    """
    if index.ndim != 1 or scores.ndim != 1 or index.numel() != scores.numel():
        raise ValueError(f"`index` and `scores` must be 1-D of one length, got shapes {tuple(index.shape)} and "
                         f"{tuple(scores.shape)}.")
    index = index.detach().to(device="cpu", dtype=torch.int64)
    scores = scores.detach().to(device="cpu", dtype=torch.float64)
    uniq, inverse = torch.unique(index, sorted=True, return_inverse=True)
    sums = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, scores)
    counts = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(scores))
    return uniq, sums / counts


def per_index_labels(index: Tensor, step: Tensor, given: Tensor, predicted: Tensor
                     ) -> tuple[Tensor, Tensor, Tensor]:
    """``(unique indices ascending, given label, predicted label)``: for each index, the labels of its entry with the
    largest ``step``; among entries of one index and one step, the smallest ``predicted``, then the smallest
    ``given`` (pure; int64 on the CPU). The result depends only on the multiset of rows, not their order.

    >>> i, g, p = per_index_labels(torch.tensor([4, 1, 4, 4]), torch.tensor([0, 0, 2, 2]),
    ...                            torch.tensor([7, 3, 7, 7]), torch.tensor([5, 3, 9, 2]))
    >>> i.tolist(), g.tolist(), p.tolist()
    ([1, 4], [3, 7], [3, 2])
    """
    n = index.numel()
    if any(t.ndim != 1 or t.numel() != n for t in (index, step, given, predicted)):
        raise ValueError("`index`, `step`, `given` and `predicted` must be 1-D of one length, got shapes "
                         f"{[tuple(t.shape) for t in (index, step, given, predicted)]}.")
    index, step, given, predicted = (t.detach().to(device="cpu", dtype=torch.int64)
                                     for t in (index, step, given, predicted))
    # one lexicographic order (index asc, step desc, predicted asc, given asc) by stable sorts, last key first
    order = torch.argsort(given, stable=True)
    for key in (predicted, -step, index):
        order = order[torch.argsort(key[order], stable=True)]
    uniq, counts = torch.unique_consecutive(index[order], return_counts=True)
    first = order[torch.cumsum(counts, 0) - counts]  # the first row of each index's run
    return uniq, given[first], predicted[first]


def combined_estimate(estimates: dict[int, float], warmup_epochs: int, reestimate: bool = False) -> float | None:
    """``eps_hat`` from the per-epoch estimates ``{epoch: e_t}`` made so far (see the module docstring; pure):
    the median of the warm-up epochs' estimates after epoch 0 (``e_0`` while it is the only one); with
    ``reestimate``, once warm-up is over, a vote among the estimates after epoch 0: the latest positive one while more
    than half of them are positive, else 0. ``None`` without any estimate.

    Why the vote (the per-epoch estimates of ``benchmarks/regression_restart.py``'s SPL runs, 30 epochs, 2026-12-06):
    the latest estimate alone followed every epoch's spurious reading. On 354 clean Diabetes rows the squared
    residuals' gmm split about 50/50 in 11 of 30 epochs (D about 3.1; the majority rule refused the other epochs' by a
    hair), and the filter dropped 47-49 % of the clean rows in 11 of the epochs 18-29; on Friedman1 with 25 % uniform
    targets single epochs read 0 or 48.5 % between readings of 12-18 %. A median over the last 3-7 epochs still ended
    at 48 % on those clean rows; the median of every epoch lagged the noisy runs' rising estimates. The vote kept every
    clean run at 0 in every epoch; over the 30 noisy runs the estimate at the end was off by 2.74 points (median, 22
    within 5) either way, and the mean test R² was 0.707 (0.7075 against 0.7071). Holding the latest positive estimate
    through a 0 without the vote, as ITLM does over its few rounds, had kept 48.5 and 49.3 % on 2 of 12 clean Diabetes
    seeds: the vote lets a run go back to 0.

    >>> combined_estimate({0: 0.0, 1: 0.28, 2: 0.3, 3: 0.19}, 4)
    0.28
    >>> combined_estimate({0: 0.0, 1: 0.28, 2: 0.3, 3: 0.19, 4: 0.0}, 4, reestimate=True)
    0.19
    >>> combined_estimate({0: 0.0, 1: 0.0, 2: 0.0, 3: 0.49, 4: 0.48}, 3, reestimate=True)
    0.0
    """
    if not estimates:
        return None
    w = max(warmup_epochs, 1)
    last = max(estimates)
    if reestimate and last >= w:
        later = [v for e, v in sorted(estimates.items()) if e >= 1]
        positive = [v for v in later if v > 0]
        return float(positive[-1]) if 2 * len(positive) > len(later) else 0.0
    warm = [(e, v) for e, v in sorted(estimates.items()) if e < w]
    after_first = [v for e, v in warm if e >= 1]
    values = sorted(after_first if after_first else [v for _, v in warm])
    mid = len(values) // 2
    return float(values[mid]) if len(values) % 2 else float((values[mid - 1] + values[mid]) / 2)


def auto_drop_ratio(rate: float, margin: float = 0.0, cap: float = 0.49) -> tuple[float, str | None]:
    """The drop ratio ``min(rate + margin, cap)`` for an estimated corrupted fraction ``rate``, and a note saying
    why it was clipped, or ``None`` (pure).

    >>> auto_drop_ratio(0.3), auto_drop_ratio(0.3, 0.05)[0]
    ((0.3, None), 0.35)
    >>> ratio, note = auto_drop_ratio(0.7)
    >>> ratio, note.startswith("the estimate 0.7 (+ auto_margin 0) is >= 0.49"), note.endswith("clipped to 0.49")
    (0.49, True, True)
    """
    target = rate + margin
    if not target <= cap:  # NaN included
        return cap, (f"the estimate {rate:.4g} (+ auto_margin {margin:.4g}) is >= {cap:.4g}, the largest drop "
                     f"ratio allowed here ({UNLEARNT_NOTE}, {MIXED_INPUTS_NOTE}); clipped to {cap:.4g}")
    return float(target), None


def auto_scheduled_drop_ratio(epoch: int, target: float | None, warmup_epochs: int) -> float:
    r"""``eps_t`` of the module docstring: 0 while no estimate exists (``target is None``), else
    :math:`\varepsilon_t = \text{target} \cdot \min(t / T, 1)` (pure).

    >>> [auto_scheduled_drop_ratio(t, None if t == 0 else 0.3, 0) for t in range(3)]
    [0.0, 0.3, 0.3]
    >>> [round(auto_scheduled_drop_ratio(t, 0.4, 4), 2) for t in range(1, 6)]
    [0.1, 0.2, 0.3, 0.4, 0.4]
    """
    if target is None:
        return 0.0
    return scheduled_drop_ratio(epoch, target, warmup_epochs)


def mixture_of(estimator: str) -> str:
    """The score mixture behind ``estimator`` (its clean posterior, its fallback without labels): ``"gmm"`` for the
    label estimators, else the estimator itself (pure)."""
    return "gmm" if estimator in LABEL_ESTIMATORS else estimator


#: where the callbacks with a per-sample report send a user for the highest scores (:func:`nothing_found_note`)
REPORT_RANKS = "the per-sample report ranks them"
#: the same pointer for a fit that writes no report (a newcomer followed the first one to a report never written)
REPORT_OFF = "`report=True` writes the per-sample report that ranks them"


def report_pointer(writes_report: bool) -> str:
    """Where a callback with a per-sample report sends a user for the highest scores: :data:`REPORT_RANKS` when
    this fit writes the report, else :data:`REPORT_OFF`."""
    return REPORT_RANKS if writes_report else REPORT_OFF


def split_of(est: CorruptionEstimate) -> tuple[int, float, float]:
    """``(scores fitted, Ashman's D, the bar it is below)`` of a barely separated fit, for :func:`barely_separated_note`
    (pure)."""
    assert est.ashman_d is not None
    return est.n_fitted, float(est.ashman_d), est.barely_separated_below


def barely_separated_note(what: str, rate: float, splits: list[tuple[int, float, float]], arg: str,
                          ranked_by: str | None = REPORT_RANKS) -> str:
    """The line a callback prints when the ``"auto"`` estimate ``rate`` in force rests on gmm fits that are
    :attr:`~lit_robust.functional.estimation.CorruptionEstimate.barely_separated` (pure): ``what`` estimated it,
    ``splits`` are those fits' (:func:`split_of`), ``arg`` the argument a user passes instead, ``ranked_by`` where
    the highest scores are listed (``None``: nowhere). The estimate is kept: refusing such fits cost right readings on
    real scores.

    >>> from lit_robust.functional.estimation import estimate_corruption
    >>> g = torch.Generator().manual_seed(2)
    >>> fit = estimate_corruption(0.2 * torch.randn(500, dtype=torch.float64, generator=g).abs())
    >>> barely_separated_note("ITLM round 1: `keep_ratio='auto'`", fit.rate, [split_of(fit)], "keep_ratio")
    ... # doctest: +NORMALIZE_WHITESPACE
    "ITLM round 1: `keep_ratio='auto'`: the estimate 39.8 % rests on a barely separated split of 500 scores (Ashman's D
    2.06, below 2.36 for that many). Clean skewed scores of a few hundred samples split like this (500 clean
    half-normal scores read 37-49 % on 8 of 40 draws): look at the highest scores (the per-sample report ranks
    them); if they are not the corrupted samples, pass `keep_ratio` instead."
    """
    each = [f"{m} scores (Ashman's D {d:.2f}, below {bar:.2f} for that many)" for m, d, bar in splits]
    # several: the filters' estimate is a median over warm-up epochs (a newcomer read "a barely separated split of
    # 269 scores (...); 269 scores (...)")
    split = (f"a barely separated split of {each[0]}" if len(each) == 1 else
             f"barely separated splits, one per epoch estimated: {'; '.join(each)}")
    where = "" if ranked_by is None else f" ({ranked_by})"
    return (f"{what}: the estimate {100 * rate:.1f} % rests on {split}. Clean skewed "
            "scores of a few hundred samples split like this (500 clean half-normal scores read 37-49 % on 8 of 40 "
            f"draws): look at the highest scores{where}; if they are not the corrupted samples, pass `{arg}` instead.")


def nothing_found_note(what: str, reason: str, arg: str, ranked_by: str | None = REPORT_RANKS,
                       train_longer: str | None = None, trains: str = "it trains on every sample") -> str:
    """The info line a callback prints when ``"auto"`` estimated no corrupted samples (pure): ``what`` happened,
    the estimate's ``reason`` (:attr:`~lit_robust.functional.estimation.CorruptionEstimate.reason`) and the argument
    ``arg`` a user who knows better passes instead; ``ranked_by``: where the user finds the highest scores (``None``:
    the owner offers no ranking); ``train_longer``: the argument that trains longer before the estimate, named as a
    cure (an anomaly newcomer's well-separated blobs read 0 after a warm-up of 2 epochs, 15 % after 4); ``trains``:
    what follows from it (ITLM's round trains on every sample, and its next round estimates again).

    >>> nothing_found_note("BatchFilter: `drop_ratio='auto'` estimated 0 after epoch 4", "one component (BIC)",
    ...                    "drop_ratio")  # doctest: +NORMALIZE_WHITESPACE
    "BatchFilter: `drop_ratio='auto'` estimated 0 after epoch 4 (the estimate's reason: one component (BIC)), so it
    trains on every sample. If you know the data is corrupted, the estimate did not see it in these scores: the
    corrupted samples score like the clean ones, are too few to form a group of their own, or spread over several
    (glitches of different sizes). The highest scores tell which (the per-sample report ranks them): if they are the
    corrupted samples, pass `drop_ratio` instead."
    """
    # "spread over several": a regression analyst's ×10, sign-flip, shifted and copied targets read 0 although the
    # report's top 50 were 96 % glitched
    return (f"{what} (the estimate's reason: {reason}), so {trains}. If you know the data is "
            "corrupted, the estimate did not see it in these scores: the corrupted samples score like the clean "
            "ones, are too few to form a group of their own, or spread over several (glitches of different sizes)"
            + ("" if train_longer is None else f", or the model had not yet learnt to tell them apart ({train_longer} "
               "trains longer before the estimate)")
            + ". The highest scores tell which"
            f"{'' if ranked_by is None else f' ({ranked_by})'}: if they are the corrupted samples, pass `{arg}` instead.")


def uncorrected(est: CorruptionEstimate) -> bool:
    """Whether ``est`` is a positive label estimate (``"disagreement"``, ``"class_floor"``) made where the losses
    formed one component (pure): the model's own errors and wrong labels could not be told apart, so
    ``"disagreement"`` subtracted none of the model's own errors and ``"class_floor"`` reads its easiest classes' own
    errors as wrong labels (:func:`uncorrected_note`).

    >>> labels = torch.arange(400) % 4
    >>> predicted = labels.clone()
    >>> wrong = torch.arange(400) % 40 < 4           # 10 % of every class disagree
    >>> predicted[wrong] = (labels[wrong] + 1) % 4
    >>> g = torch.Generator().manual_seed(0)
    >>> scores = torch.empty(400, dtype=torch.float64).exponential_(1.0, generator=g)  # one group of losses
    >>> from lit_robust.functional.estimation import (estimate_corruption_from_class_floor,
    ...                                               estimate_corruption_from_predictions)
    >>> est = estimate_corruption_from_predictions(scores, labels, predicted)
    >>> est.reason, round(est.rate, 2), uncorrected(est)
    ('disagreement (one component: no correction)', 0.1, True)
    >>> floor = estimate_corruption_from_class_floor(scores, labels, predicted)
    >>> floor.two_components, round(floor.rate, 2), uncorrected(floor)
    (False, 0.1, True)
    """
    if est.rate <= 0:
        return False
    # a newcomer's clean 5-class table read 23.3 % with "class_floor", the README's remedy, and nothing was said
    return est.reason == UNCORRECTED_REASON or (est.reason.startswith("class floor (quantile")
                                                and not est.two_components)


def uncorrected_note(what: str, rate: float, arg: str, ranked_by: str | None = REPORT_RANKS,
                     estimator: str = "disagreement") -> str:
    """The info line a callback prints when the estimate ``rate`` in force, by the label ``estimator``, is
    :func:`uncorrected` (pure): ``what`` estimated it, ``arg`` is the argument a user passes instead, ``ranked_by``
    where the most suspicious samples are listed (``None``: nowhere). The estimate is kept: class-pair noise (MNIST's
    a -> a+1 flips at 30-40 %) also forms one component, and there the disagreement was right.

    >>> uncorrected_note("ITLM round 1: `keep_ratio='auto'`", 0.294, "keep_ratio")  # doctest: +NORMALIZE_WHITESPACE
    "ITLM round 1: `keep_ratio='auto'`: the estimate 29.4 % is the share of labels the model disagrees with, with
    none of its own errors subtracted: the losses form one group, so its own errors cannot be told from wrong labels.
    On clean labels of a hard task this reads the training error (13 % on clean FashionMNIST; 27-45 % on a clean
    5-class make_classification table, where trimming cost 18-23 points of test accuracy), and the most suspicious
    samples are then the model's own errors as much as wrong labels: look at them (the per-sample report ranks them)
    before you relabel any. If you believe fewer labels wrong, pass `keep_ratio` instead, or try
    `estimator='disagreement_or_interior'`: it counts the disagreements away from the class boundaries (clean
    FashionMNIST 3.5 %, not 12.9 %), but reads class-pair flips low."
    >>> uncorrected_note("BatchFilter: `drop_ratio='auto'` after epoch 2", 0.233, "drop_ratio", None, "class_floor")
    ... # doctest: +NORMALIZE_WHITESPACE
    "BatchFilter: `drop_ratio='auto'` after epoch 2: the estimate 23.3 % is the share of labels the model disagrees
    with in its least-disagreeing classes: the losses form one group, so its own errors cannot be told from wrong
    labels. On clean labels of a hard task this reads the easiest classes' training error (2-3 % on clean
    FashionMNIST; 21-27 % on a clean 5-class make_classification table), and the most suspicious samples are then the
    model's own errors as much as wrong labels: look at them before you relabel any. If you believe fewer labels
    wrong, pass `drop_ratio` instead."
    >>> uncorrected_note("BatchFilter: `drop_ratio='auto'` after epoch 2", 0.47, "drop_ratio", None).endswith(
    ...     "(`estimator='class_floor'` read 30-34 %, where every class is corrupted alike; the true rate scored "
    ...     "1.4-2.9 points above plain training).")
    True
    """
    # figures: benchmarks/results/corruption_rate.md (clean FashionMNIST: disagreement 13.1 %, class_floor 1.9-2.5 %
    # in corruption_rate_class_floor.md) and newcomer_tables.md (make_classification, clean: the "auto" estimates
    # 27.4-45.3 %, 18.1-22.7 points below plain training; class_floor 20.8-27.1 %)
    where = "" if ranked_by is None else f" ({ranked_by})"
    if estimator == "class_floor":
        reads = ("the share of labels the model disagrees with in its least-disagreeing classes: the losses form one "
                 "group, so its own errors cannot be told from wrong labels. On clean labels of a hard task this reads "
                 "the easiest classes' training error (2-3 % on clean FashionMNIST; 21-27 % on a clean 5-class "
                 "make_classification table)")
    else:
        reads = ("the share of labels the model disagrees with, with none of its own errors subtracted: the losses "
                 "form one group, so its own errors cannot be told from wrong labels. On clean labels of a hard task "
                 "this reads the training error (13 % on clean FashionMNIST; 27-45 % on a clean 5-class "
                 "make_classification table, where trimming cost 18-23 points of test accuracy)")
    # ITLM's scoring pass reads the probabilities `disagreement_or_interior` needs; the filters do not
    # (benchmarks/results/corruption_rate_interior_9seeds.md: clean FashionMNIST 3.5 % against 12.9 %, 9 seeds)
    interior = (", or try `estimator='disagreement_or_interior'`: it counts the disagreements away from the class "
                "boundaries (clean FashionMNIST 3.5 %, not 12.9 %), but reads class-pair flips low"
                if arg == "keep_ratio" and estimator != "disagreement_or_interior" else "")
    # the filters estimate during warm-up, from a model still learning (benchmarks/results/filter_auto_cnn.md)
    warmup = (" A filter's warm-up estimate holds the errors of a model still learning too: a user's small CNN on "
              "FashionMNIST with 25 % of its labels flipped read 45-49 % and scored 5-8 points below plain training "
              "(`estimator='class_floor'` read 30-34 %, where every class is corrupted alike; the true rate scored "
              "1.4-2.9 points above plain training)." if arg == "drop_ratio" and estimator == "disagreement" else "")
    return (f"{what}: the estimate {100 * rate:.1f} % is {reads}, and the most suspicious samples are then the model's "
            f"own errors as much as wrong labels: look at them{where} before you relabel any. If you believe fewer "
            f"labels wrong, pass `{arg}` instead{interior}.{warmup}")


def cleanlab_hint(estimator: object) -> str:
    """What to do instead, when the ``estimator`` asked for is confident learning (cleanlab), else ``""`` (a cleanlab
    user tried ``estimator="cleanlab"``: the docs name confident learning among the estimators).

    >>> cleanlab_hint("cleanlab")[:44]
    ' Confident learning (cleanlab) needs out-of-'
    """
    if not isinstance(estimator, str) or not any(k in estimator.lower() for k in ("cleanlab", "confident")):
        return ""
    return (" Confident learning (cleanlab) needs out-of-sample probabilities, which one fit does not have: compute "
            "them by k-fold cross-validation, take `lit_robust.estimate_corruption_from_probs(probs, labels).rate` "
            "and pass it as the ratio (`keep_ratio=1 - rate` for ITLM, `drop_ratio=rate` for the filters).")


def partial_epoch_note(owner: str, epoch: int, rate: float, in_force: float, scored: int, part: Any) -> str:
    """The warning of an ``"auto"`` estimate made from part of an epoch (pure): ``part`` is the epoch's
    :class:`~lit_robust._lightning.EpochPart` (a stop cut the epoch, or ``limit_train_batches`` leaves batches out),
    ``scored`` the samples the estimate scored (every rank's), ``rate`` that epoch's estimate and ``in_force`` the
    estimate the owner uses from now on.

    >>> from lit_robust._lightning import EpochPart
    >>> note = partial_epoch_note("BatchFilter", 2, 0.44, 0.48, 320, EpochPart(5, 24, 24, 1500, "`max_steps=53`", 1.0))
    >>> note[:112]
    "BatchFilter: `drop_ratio='auto'`: epoch 2's estimate (44.0 %) scored 320 of the epoch's 1500 samples: `max_steps"
    """
    of = f"of the epoch's {part.samples} samples" if part.samples is not None else "samples"
    head = f"{owner}: `drop_ratio='auto'`: epoch {epoch}'s estimate ({100 * rate:.1f} %) scored {scored} {of}"
    if part.stopped_by is not None:
        fix = ("leave `max_steps` at -1 and set `max_epochs`" if part.stopped_by.startswith("`max_steps")
               else "by `max_epochs` (an EarlyStopping: validate at epochs' ends, `val_check_interval=1.0`)")
        # measured (digits, 30 % flipped, PRL(L)): 44.1 % from the first 5 of 24 batches against 35.1 % from all
        return (f"{head}: {part.stopped_by} stopped the fit after {part.trained} of the epoch's {part.planned} "
                "batches, so they were scored by the model of its first steps only, which has learnt less than the "
                f"whole epoch's. The estimate in force, {100 * in_force:.2f} %, is logged, and a fit that goes on on "
                "this Trainer (at the next epoch) drops by it. For an "
                f"estimate of whole epochs end the fit at an epoch's end: {fix}.")
    return (f"{head}, those of the {part.planned} of the loader's {part.loader_batches} batches that "
            f"`{part.setting}={part.limit}` trains an epoch (each epoch's estimate is made from them alone). "
            f"Leave `{part.setting}` at {1.0 if part.setting == 'limit_train_batches' else 0} for an estimate of the "
            "whole training set.")


def cut_epoch_resume_note(owner: str, cut: dict[int, tuple[int, int, str]], estimates: dict[int, float]
                          ) -> str | None:
    """The warning of a resume whose ``"auto"`` estimate counts an epoch a stop cut (pure): ``cut`` maps such epochs
    to ``(batches trained, batches planned, what stopped it)``; ``None`` where there is none. The stopped process said
    so; the resumed one did not, and a resume newcomer's fit dropped by 57.5 % where the uninterrupted one's estimate
    was 43.4 %.

    >>> cut_epoch_resume_note("BatchFilter", {1: (7, 24, "`trainer.should_stop`")}, {0: 0.7, 1: 0.632})[:96]
    "BatchFilter: `drop_ratio='auto'`: this checkpoint's estimate counts epoch 1's (63.2 %), which `t"
    """
    if not cut:
        return None
    said = "; ".join(f"epoch {e}'s ({100 * estimates.get(e, math.nan):.1f} %), which {how} stopped after {t} of its "
                     f"{n} batches" for e, (t, n, how) in sorted(cut.items()))
    return (f"{owner}: `drop_ratio='auto'`: this checkpoint's estimate counts {said}, scored by the model of that "
            "epoch's first steps. Lightning resumes at the next epoch without training the rest of it, so the resumed "
            "fit drops by another estimate than an uninterrupted fit would. For the uninterrupted fit's result resume "
            "from a checkpoint written at the end of a whole epoch (e.g. the one before; "
            "`ModelCheckpoint(save_top_k=-1)` keeps every epoch's).")


def say_reestimated(auto: AutoDropRatio | None) -> None:
    """At train end, an owner's info line of its re-estimated ``"auto"`` estimate
    (:meth:`AutoDropRatio.reestimated_note`), if it has one: BatchFilter, CoTeaching and RCA call it."""
    note = None if auto is None else auto.reestimated_note()
    if note is not None:
        rank_zero_info(note)


def auto_for(current: AutoDropRatio | None, owner: str, drop_ratio: float | str, estimator: str, auto_margin: float,
             reestimate: bool | None, warmup_epochs: int, high: float = 0.5, ranked_by: str | None = None
             ) -> AutoDropRatio | None:
    """An owner's :class:`AutoDropRatio` for its arguments as they are now: ``None`` for a numeric ``drop_ratio``,
    ``current`` when it was built with these, else a new one (a notebook user's ``drop_ratio`` and ``warmup_epochs``
    changed on a reused filter or module between fits were ignored)."""
    if drop_ratio != "auto":
        return None
    if current is not None and current.built_for(estimator, auto_margin, reestimate, warmup_epochs, high):
        return current
    return AutoDropRatio(owner, estimator, auto_margin, reestimate, warmup_epochs, high=high, ranked_by=ranked_by)


def kept_on_a_fit_that_goes_on(current: AutoDropRatio | None, new: AutoDropRatio | None, owner: str,
                                goes_on: bool) -> AutoDropRatio | None:
    """``new`` (from :func:`auto_for`), unless the fit goes on from an earlier fit of its Trainer and the ``"auto"``
    arguments changed since: then refused, because the estimate that fit made is the schedule's (a reviewer's
    `auto_margin` set between two fits of one Trainer built a new estimator after the warm-up, which never estimated:
    two epochs dropped nothing, without a word)."""
    if goes_on and new is not current:
        raise ValueError(f"{owner}: its `drop_ratio` or `\"auto\"` arguments (`estimator`, `auto_margin`, "
                         "`reestimate`, `warmup_epochs`) changed since this Trainer's earlier fit, which this fit goes "
                         "on from with the estimate and schedule that fit made. Set them back, or use a new Trainer "
                         "for a fit with the new ones.")
    return new


def only_auto_names(given: list[tuple[str, Any, Any]]) -> str:
    """"`estimator`, `auto_margin` and `reestimate`" with the ones ``given`` (``(name, value, default)``) first: the
    CLI names the first backticked argument of a message as the one at fault, and named `estimator` for a user's
    `--model.init_args.reestimate true` beside a numeric ratio."""
    first = [k for k, _, _ in given]
    names = [f"`{k}`" for k in first + [k for k in ("estimator", "auto_margin", "reestimate") if k not in first]]
    return f"{names[0]}, {names[1]} and {names[2]}"


def check_auto_args(drop_ratio: Any, estimator: Any, auto_margin: Any, reestimate: Any, allow_large_drop: Any,
                    name: str = "drop_ratio", high: float | None = None,
                    estimators: tuple[str, ...] = _ESTIMATORS, default_estimator: str = "gmm"
                    ) -> float | Literal["auto"]:
    """Validate ``drop_ratio`` (a number, or ``"auto"``) with the arguments that only apply to ``"auto"``;
    return the drop ratio as a float, or ``"auto"``. ``high`` replaces the usual range ``[0, 0.5)`` / ``[0, 1)``
    (the modules whose range does not depend on ``allow_large_drop``); ``estimators`` are the owner's allowed
    ``estimator`` values and ``default_estimator`` its default (:data:`FILTER_ESTIMATORS` for the classification
    filters)."""
    allow_large_drop = check_bool("allow_large_drop", allow_large_drop)
    drop_ratio = real_scalar(drop_ratio)
    top = high if high is not None else (1.0 if allow_large_drop else 0.5)
    auto = isinstance(drop_ratio, str) and drop_ratio == "auto"
    if isinstance(drop_ratio, str) and not auto:
        hint = auto_string_hint(drop_ratio)
        # 'Auto': "(did you mean 'auto'?)"; '0.2': "(a str: ...; or 'auto' to ...)"; 'x': "(or 'auto' to ...)"
        meant = [hint] if hint else []
        if "'auto'" not in hint:
            meant.append("or 'auto' to estimate it from the training scores")
        raise ValueError(f"`{name}` must be a number in [0, {top:g}), got {drop_ratio!r} ({'; '.join(meant)}).")
    if not isinstance(estimator, str) or estimator not in estimators:
        # ITLM's scoring pass reads the predicted class's probability; a filter sees losses batch by batch
        only_itlm = (f" {estimator!r} is ITLM's only (`ITLM(keep_ratio='auto', estimator={estimator!r})`)."
                     if estimator in ("disagreement_or_interior", "floor_or_interior") else "")
        raise ValueError(f"`estimator` must be one of {list(estimators)}, got {estimator!r}.{only_itlm}"
                         f"{cleanlab_hint(estimator)}")
    auto_margin = check_margin("auto_margin", auto_margin)
    if reestimate is not None:  # None: True where the scores are one regression target's losses (`read_data`)
        check_bool("reestimate", reestimate)
    if auto:
        return "auto"
    defaults = (("estimator", estimator, default_estimator), ("auto_margin", auto_margin, 0.0),
                ("reestimate", reestimate, None))
    # `reestimate=False` with a number is what it does anyway: accepted (a config switched from "auto" keeps it)
    given = [(k, v, d) for k, v, d in defaults if v != d and not (k == "reestimate" and v is False)]
    # switching a config from 'auto' to a number on the command line leaves them set: say how to reset them
    reset = ", ".join(f"{k}={d!r}" for k, _, d in given)
    only_auto = (f"{only_auto_names(given)} only apply with {name}='auto', got "
                 f"{', '.join(f'{k}={v!r}' for k, v, _ in given)} with {name}={drop_ratio!r}; remove them or "
                 f"set their defaults ({reset}).")
    # the range first, with the leftover "auto" arguments in the same message: a regression newcomer's drop_ratio 0.7
    # beside a leftover `estimator` was told only about the estimator, and a filters newcomer's only about the range,
    # each error coming once the other was mended
    also = f" Also: {only_auto}" if given else ""
    if high is not None:
        if isinstance(drop_ratio, bool) or not isinstance(drop_ratio, (int, float)) or not 0 <= drop_ratio < high:
            raise ValueError(f"`{name}` must be a number in [0, {high:g}), got {drop_ratio!r} (or 'auto' to "
                             "estimate it from the training scores)."
                             + percent_hint(name, drop_ratio, high, high_open=True) + also)
        ratio = float(drop_ratio)
    else:
        try:
            ratio = check_drop_ratio(drop_ratio, allow_large_drop, name=name)
        except ValueError as exc:  # the owners take "auto" too: say so, as for keep_ratio
            raise ValueError(f"{exc} Or pass {name}='auto' to estimate it from the training scores.{also}") from None
    if given:
        raise ValueError(only_auto)
    return ratio


class AutoDropRatio:
    """The state of ``drop_ratio="auto"`` (see the module docstring): scores collected this epoch, the estimate
    and the drop-ratio schedule. The owner (a callback or module) calls :meth:`add` with every training batch's
    scores (and, for ``estimator="disagreement"``, its given and predicted labels) in a collecting epoch and
    :meth:`end_epoch` on every rank at every epoch end.

    Args:
        owner: the class name used in warnings.
        estimator, auto_margin, reestimate: as the owner received them; ``reestimate=None`` is resolved by
            :attr:`reestimate` (``True`` where the scores are one regression target's losses, as :meth:`read_data`
            finds at train start; ``False`` until then and otherwise).
        warmup_epochs: the owner's warm-up as the schedule uses it (:func:`resolved_warmup`: never ``None``).
        high: the owner's (open) upper bound on the drop ratio; the clip value is ``high - 0.01``.
        ranked_by: where the owner's user finds the highest scores, for the "estimated 0" note
            (:func:`nothing_found_note`); ``None``: nowhere.
    """

    def __init__(self, owner: str, estimator: FilterEstimator, auto_margin: float, reestimate: bool | None,
                 warmup_epochs: int, high: float = 0.5, ranked_by: str | None = None) -> None:
        self.owner = owner
        self.ranked_by = ranked_by
        self.estimator = estimator
        self.auto_margin = float(auto_margin)
        self.reestimate_arg = reestimate  # as given; None follows `squared_errors` (see `reestimate`)
        self.warmup_epochs = warmup_epochs
        self.cap = round(high - _CAP_BELOW, 9)
        self.reset()
        if warmup_epochs <= 1 and reestimate is not True:
            # an explicit warm-up of 0 or 1 (the default, None, is 3 with "auto"): the estimate is fixed from epoch 0's
            # scores, of a model one epoch old (an NLP newcomer's BatchFilter read 40.1 % for 20.8 %, and 18.5 % with
            # `warmup_epochs=3`), said only as an info line among the fit's
            unless = (" (on one regression target's losses it re-estimates at every epoch end: `reestimate=None`)"
                      if reestimate is None else "")
            rank_zero_warn(f"{owner}: `drop_ratio='auto'` with `warmup_epochs={warmup_epochs}` fixes its estimate "
                           f"after epoch 0{unless}, from the scores of a model trained one epoch, which tend to over-count "
                           "(a text classifier with 20.8 % wrong labels read 40.1 %; with `warmup_epochs=3`, 18.5 %). "
                           "Give it a warm-up of a few epochs (leave `warmup_epochs` out for "
                           f"{AUTO_WARMUP_EPOCHS}), so that the model has learnt the clean samples first.")

    def reset(self) -> None:
        """The running state (checkpointed) as before a fit: no estimates, nothing collected."""
        self.estimates: dict[int, float] = {}  # epoch -> the estimate made from its scores at its end
        # epoch -> (scores fitted, Ashman's D, bar) of its estimate where the gmm's split was barely separated
        self.barely_separated: dict[int, tuple[int, float, float]] = {}
        # the epochs whose label estimate came from one group of losses (`uncorrected`)
        self.uncorrected_epochs: set[int] = set()
        # epoch -> (batches trained, batches planned, what stopped it) of an estimate made from an epoch a stop cut
        self.cut_epochs: dict[int, tuple[int, int, str]] = {}
        self.start = 0  # the epoch the schedule counts from (see `restart`)
        self._index: list[Tensor] = []
        self._scores: list[Tensor] = []
        # "disagreement": per collected batch its step number in the epoch, given and predicted labels
        self._steps = 0  # batches added this epoch
        self._step: list[Tensor] = []
        self._given: list[Tensor] = []
        self._predicted: list[Tensor] = []
        self._missing = False  # a batch of this epoch came without labels: this epoch falls back to gmm
        self._told_fallback = False  # the fallback's info line was printed (once per fit)
        self._told_too_few = False  # `too_few_for_auto` was warned (once per fit)
        self._told_limited = False  # the note of `limit_train_batches` was printed (once per fit)
        self._told_vote = False  # the note that the re-estimates' vote overrode an epoch's estimate (once per fit)
        self._accumulation: tuple[int, int] | None = None  # (accumulate_grad_batches, optimizer steps an epoch), > 1
        self.repeated = 0  # indices the last estimating epoch saw more than once (their scores were averaged)
        self._smoke = False  # a `fast_dev_run` fit (set by `setup_fit`): nothing is collected
        # the scores are the losses of one regression target (set by `read_data` at train start): the gmm restarts
        self.squared_errors = False
        # the scores are PRL(L)'s norms |y_hat - y| of an MSE loss layer on one regression target: estimated as their
        # squares, the squared errors (set by `read_data`)
        self.squares_scores = False

    def setup_fit(self, trainer: Any) -> None:
        """At fit setup, after :meth:`reset`. When ``trainer``'s datamodule says it yields regression targets, the
        fall-back of a label estimator to the gmm goes unsaid: a regression user's
        ``TableDataModule(task="regression")`` fit said in every run that the default estimator needs integer
        targets. Under ``fast_dev_run`` (a few batches) nothing is collected or estimated: a tuner user's smoke run
        estimated 0.89 from one batch and was told to lengthen the warm-up."""
        from lit_robust.data.spec import datamodule_spec

        self._smoke = bool(getattr(trainer, "fast_dev_run", False))
        spec = datamodule_spec(trainer)
        if spec is not None and spec.target == "regression":
            self._told_fallback = True

    def read_data(self, trainer: Any, scores_are_losses: bool, scores_are_residual_norms: bool = False) -> None:
        """At train start (the training loader set up): whether the gmm reads the scores as a regression's squared
        errors (``estimate_corruption``'s ``squared_errors``), as ITLM does -- when they are losses
        (``scores_are_losses``: SPL's, Co-teaching's; not PRL(L)'s gradient norms of a classifier, where that restart
        read a clean classifier's data as 15 % corrupted) and the fit has one regression target per sample
        (:func:`~lit_robust.data.spec.reads_squared_errors`). ``scores_are_residual_norms``: PRL(L)'s norms of an MSE
        loss layer, ``2 |y_hat - y|`` on one target, whose squares are the squared errors: estimated so (a regression
        newcomer's PRL(L) ``"auto"`` on 20.4 % bad targets read the 6.5 % of 999 sentinels alone, test R² -8.5, where
        SPL's read 23.4 %). Every rank reads the same data: the same answer."""
        from lit_robust._lightning import accumulation_in_epoch
        from lit_robust.data.indexed import check_one_index_space
        from lit_robust.data.spec import reads_squared_errors

        # the estimate keeps a mean score per index, as the report does: a data-pipeline newcomer's two parts numbered
        # from 0 each read 34.4 % where the one-numbered set read 26.5 %, unsaid (`report=True` refused it)
        check_one_index_space(getattr(getattr(trainer, "train_dataloader", None), "dataset", None),
                              f"{self.owner}(drop_ratio='auto')")
        one_target = reads_squared_errors(trainer)
        self.squares_scores = bool(scores_are_residual_norms) and not scores_are_losses and one_target
        self.squared_errors = (bool(scores_are_losses) or self.squares_scores) and one_target
        if one_target:  # a regression read from the training set's targets: its fall-back goes unsaid, as ITLM's
            self._told_fallback = True
        # a Trainer-flags newcomer's `accumulate_grad_batches=4` read 72.6 % for 25 % (18 optimizer steps an epoch),
        # and the clip warning named the warm-up and mixup, never the accumulation
        accumulate = accumulation_in_epoch(trainer, 0)  # a GradientAccumulationScheduler's too
        batches = getattr(trainer, "num_training_batches", math.inf)
        self._accumulation = ((accumulate, max(1, math.ceil(int(batches) / accumulate)))
                              if accumulate > 1 and isinstance(batches, (int, float)) and math.isfinite(batches)
                              else None)

    @property
    def reestimate(self) -> bool:
        """Whether every epoch estimates again: the owner's ``reestimate``, or where it is None whether the scores are
        one regression target's losses (:attr:`squared_errors`, set by :meth:`read_data`; False before). There
        glitches of several sizes show in layers, and an estimate fixed after warm-up kept the first layer's
        (benchmarks/regression_restart.py: SPL's median error 7.36 points fixed, 2.74 re-estimated; mean test R² 0.632
        against 0.708 over 30 noisy runs)."""
        return self.reestimate_arg if self.reestimate_arg is not None else self.squared_errors

    def reestimated_note(self) -> str | None:
        """At train end, the line a re-estimating owner prints: the estimate in force and the range the epochs after
        warm-up read (``None`` without re-estimation or before any such epoch). A regression newcomer's SPL, which
        re-estimates by default on one target, said nothing of its estimate on the console (with it fixed after
        warm-up, the fixing epoch says it)."""
        w = max(self.warmup_epochs, 1)
        later = {e: v for e, v in self.estimates.items() if e - self.start >= w}
        if not self.reestimate or not later or self.estimate is None:
            return None
        low, high = min(later.values()), max(later.values())
        why = " (the default on one regression target's losses)" if self.reestimate_arg is None else ""
        return (f"{self.owner}: `drop_ratio='auto'` re-estimated at every epoch end{why}: the estimate in force at "
                f"the end is {100 * float(self.estimate):.2f} % (epochs {min(later)}-{max(later)} read "
                f"{100 * low:.1f}-{100 * high:.1f} %; the latest positive estimate is in force while more than half of "
                "the epochs' estimates are positive, else 0).")

    def _clear(self) -> None:
        self._index, self._scores = [], []
        self._steps, self._step, self._given, self._predicted, self._missing = 0, [], [], [], False

    def built_for(self, estimator: str, auto_margin: float, reestimate: bool | None, warmup_epochs: int,
                  high: float) -> bool:
        """Whether this object was built with these arguments (an owner's attributes changed since: it was not)."""
        return (self.estimator, self.auto_margin, self.reestimate_arg, self.warmup_epochs, self.cap) == (
            estimator, float(auto_margin), reestimate, warmup_epochs, round(high - _CAP_BELOW, 9))

    def drop_partial_epoch(self) -> None:
        """Forget what was collected of an epoch a stopped fit did not finish (a fit going on from it on the same
        Trainer trains that epoch again from its first batch)."""
        self._clear()

    def restart(self, epoch: int) -> None:
        """Count the schedule from ``epoch`` on (the model was re-initialised at its start): epoch ``epoch`` drops
        nothing and collects, and only the estimates of epochs ``>= epoch`` count. Scores collected before are
        discarded; :attr:`estimates` keeps every epoch's estimate (keyed by the absolute epoch) for the record."""
        self.start = int(epoch)
        self._clear()

    @property
    def uses_labels(self) -> bool:
        """Whether :meth:`add` wants the batches' given and predicted labels (``estimator="disagreement"``)."""
        return self.estimator in LABEL_ESTIMATORS

    @property
    def estimate(self) -> float | None:
        """``eps_hat`` in force (:func:`combined_estimate`; before margin and clipping), ``None`` before the first."""
        window = {e - self.start: v for e, v in self.estimates.items() if e >= self.start}
        return combined_estimate(window, self.warmup_epochs, self.reestimate)

    @property
    def target(self) -> float | None:
        """The drop ratio after warm-up: ``min(estimate + auto_margin, cap)``, or ``None`` before the first estimate."""
        return None if self.estimate is None else auto_drop_ratio(self.estimate, self.auto_margin, self.cap)[0]

    def drop_ratio_at(self, epoch: int) -> float:
        """The drop ratio of the absolute 0-based ``epoch`` (counted from :attr:`start`)."""
        return auto_scheduled_drop_ratio(max(epoch - self.start, 0), self.target, self.warmup_epochs)

    def collects(self, epoch: int) -> bool:
        """Whether the scores of ``epoch`` are collected (and estimated from at its end)."""
        if self._smoke:
            return False
        return self.reestimate or epoch - self.start < max(self.warmup_epochs, 1)

    def add(self, index: Tensor, scores: Tensor, given: Tensor | None = None,
            predicted: Tensor | None = None) -> None:
        """Keep one batch's ``(dataset index, score)`` pairs (on their device: no host sync per step), and with
        ``estimator="disagreement"`` its given and predicted integer labels (``None``: the module has none; the
        epoch is then estimated with ``"gmm"``)."""
        index = index.detach().reshape(-1)
        self._index.append(index)
        self._scores.append(scores.detach().reshape(-1).to(torch.float64))
        if self.uses_labels:
            if given is None or predicted is None:
                self._missing = True
            else:
                given, predicted = given.detach().reshape(-1), predicted.detach().reshape(-1)
                if given.numel() != index.numel() or predicted.numel() != index.numel():
                    raise ValueError(f"{self.owner}: `given` and `predicted` must hold one label per sample of the "
                                     f"batch ({index.numel()}), got {given.numel()} and {predicted.numel()}.")
                self._step.append(torch.full_like(index, self._steps, dtype=torch.int64))
                self._given.append(given.to(index.device, torch.int64))
                self._predicted.append(predicted.to(index.device, torch.int64))
        self._steps += 1

    def _local(self, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        dev = device if device is not None else (self._scores[0].device if self._scores else torch.device("cpu"))
        if not self._scores:
            return torch.zeros(0, dtype=torch.int64, device=dev), torch.zeros(0, dtype=torch.float64, device=dev)
        return (torch.cat([i.to(dev, torch.int64) for i in self._index]),
                torch.cat([s.to(dev) for s in self._scores]))

    def _local_labels(self, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """This rank's ``(step, given, predicted)`` rows, aligned with :meth:`_local` when no batch lacked labels."""
        if not self._step:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            return empty, empty, empty
        return tuple(torch.cat([t.to(device, torch.int64) for t in part])  # type: ignore[return-value]
                     for part in (self._step, self._given, self._predicted))

    def _labels_everywhere(self, device: torch.device) -> bool:
        """Whether every rank had labels for every batch it collected this epoch (a collective)."""
        missing = torch.tensor([int(self._missing)], dtype=torch.int64, device=device)
        return int(distributed.all_reduce_max(missing).item()) == 0

    def end_epoch(self, epoch: int, device: torch.device | None = None, part: Any = None) -> float | None:
        """At the end of ``epoch`` (call on every rank): if it was a collecting epoch, gather every rank's scores
        (and labels), estimate, and return that epoch's estimate; else ``None``. A clipped target is warned about,
        and so is an estimate made from part of the epoch: ``part``, the epoch's
        :class:`~lit_robust._lightning.EpochPart` (:func:`~lit_robust._lightning.epoch_part`), when a stop cut it
        or ``limit_train_batches`` left batches out (a Lightning user's ``max_steps`` stopped warm-up's last epoch
        after 5 of its 24 batches: 48.0 % was logged and kept, the whole epoch's 43.6 %, without a word)."""
        if not self.collects(epoch):
            self._clear()
            return None
        index, scores = self._local(device)
        use_labels = self.uses_labels and self._labels_everywhere(index.device)
        if use_labels:
            step, given, predicted = self._local_labels(index.device)
        missing = self.uses_labels and not use_labels
        self._clear()
        # gathered on every rank whatever the owner's scope: every rank estimates on the same multiset
        index = distributed.all_gather_cat(index)
        scores = distributed.all_gather_cat(scores)
        if use_labels:
            step, given, predicted = (distributed.all_gather_cat(t) for t in (step, given, predicted))
        if index.numel() == 0:
            return None  # no training batch this epoch: keep the estimate there is
        _, means = per_index_mean(index, scores)
        if index.numel() != means.numel():  # indices seen more than once (a replacement sampler, or a faulty stream)
            self.repeated = int((torch.unique(index, return_counts=True)[1] > 1).sum())
        else:
            self.repeated = 0
        if means.numel() < AUTO_MIN_SAMPLES and not self._told_too_few:
            self._told_too_few = True
            rank_zero_warn(too_few_for_auto(self.owner, "drop_ratio", means.numel(), part))
        if use_labels:
            _, given_i, predicted_i = per_index_labels(index, step, given, predicted)
            with quiet_about_too_few(means.numel()):
                est = estimate_from_labels(self.estimator, means, given_i, predicted_i)
        else:
            if missing and not self._told_fallback:
                self._told_fallback = True
                # a soft-label user's [B, C] outputs were said to be missing: their targets were the reason
                rank_zero_info(f"{self.owner}: `estimator='{self.estimator}'` needs integer class labels as targets "
                               "(not one-hot rows, soft labels such as mixup's, or regression targets) and [batch, "
                               "classes] outputs from `per_sample_loss` (for targets of several parts set the "
                               "module's `label_key`); without both the gmm estimate is used instead.")
            method = mixture_of(self.estimator)
            fitted = means.square() if self.squares_scores else means  # PRL(L)'s |y_hat - y|: the squared errors
            with quiet_about_too_few(means.numel()):
                est = estimate_corruption(fitted, method, squared_errors=self.squared_errors and method == "gmm")
        rate = float(est.rate)
        self.estimates[int(epoch)] = rate
        if est.barely_separated:
            self.barely_separated[int(epoch)] = split_of(est)
        else:
            self.barely_separated.pop(int(epoch), None)
        if uncorrected(est):
            self.uncorrected_epochs.add(int(epoch))
        else:
            self.uncorrected_epochs.discard(int(epoch))
        if part is not None and part.stopped_by is not None:
            self.cut_epochs[int(epoch)] = (int(part.trained), int(part.planned), str(part.stopped_by))
        else:
            self.cut_epochs.pop(int(epoch), None)
        if part is not None and (part.stopped_by is not None or not self._told_limited):
            self._told_limited = self._told_limited or part.stopped_by is None
            rank_zero_warn(partial_epoch_note(self.owner, epoch, rate, float(self.estimate), means.numel(), part))
        _, note = auto_drop_ratio(self.estimate, self.auto_margin, self.cap)
        if note is not None:
            fixed = self.start + max(self.warmup_epochs, 1) - 1  # the epoch whose end fixes the estimate
            provisional = epoch < fixed
            when = (f" (provisional: it sets the next epoch's step of the ramp; the estimate is fixed at the end of "
                    f"warm-up, after epoch {fixed})" if provisional else "")
            if not provisional and not self.reestimate and self.warmup_epochs < 5:
                # a docs reader's `BatchFilter("prl", drop_ratio="auto")` on getting started's digits: epoch 0 alone
                # read 0.678 for 30 % (clipped to 0.49, test 0.660 against plain 0.717); `warmup_epochs=5`: 0.326
                when = (f". Pass a longer `warmup_epochs` (it is {self.warmup_epochs}; e.g. 5), so that the model has "
                        "learnt the clean samples before the estimate is fixed")
            if not provisional and self._accumulation is not None:
                accumulate, steps = self._accumulation
                span = (f"{steps * self.warmup_epochs} in the {self.warmup_epochs}-epoch warm-up" if self.warmup_epochs
                        else "in epoch 0, whose scores the estimate reads")
                when += (f". `accumulate_grad_batches`={accumulate} leaves {steps} optimizer step"
                         f"{'' if steps == 1 else 's'} an epoch ({span}): a model "
                         "learns by its steps, not its epochs, so accumulating fewer batches (or a longer warm-up) "
                         "lets it learn the clean samples before the estimate")
            # a provisional clip is the ordinary start of a warm-up (an observant newcomer's every run warned after
            # epoch 0, then estimated right): said, not warned; the estimate the filter keeps is warned about
            (rank_zero_info if provisional else rank_zero_warn)(
                f"{self.owner}: `drop_ratio='auto'` after epoch {epoch}: {note}{when}.")
        if (self.reestimate and not self._told_vote and epoch - self.start >= max(self.warmup_epochs, 1)
                and float(self.estimate) != rate):
            self._told_vote = True
            later = [v for e, v in self.estimates.items() if e >= self.start + 1]
            rank_zero_info(f"{self.owner}: `drop_ratio='auto'` after epoch {epoch}: this epoch's estimate is "
                           f"{100 * rate:.1f} %, the one in force {100 * float(self.estimate):.1f} %. Re-estimating, the "
                           "filter keeps the latest positive estimate while more than half of the epochs' estimates "
                           f"since epoch {self.start + 1} are positive ({sum(v > 0 for v in later)} of {len(later)} are), "
                           "and 0 otherwise, so that one epoch's reading does not swing the drop ratio. Said once.")
        fixed_now = not self.reestimate and epoch - self.start == max(self.warmup_epochs, 1) - 1
        # the epochs whose estimates the fixed estimate is the median of (epoch 0's alone in a one-epoch warm-up)
        counted = [e for e in sorted(self.estimates)
                   if self.start + 1 <= e < self.start + max(self.warmup_epochs, 1)] or [epoch]
        if fixed_now and note is None and self.estimate:
            # a DDP newcomer found the filter's estimate in metrics.csv only (ITLM prints its own in the round lines)
            each = ", ".join(f"{e} ({100 * self.estimates[e]:.1f} %)" for e in counted)
            margin = f" plus `auto_margin` {self.auto_margin:g}" if self.auto_margin else ""
            values = [self.estimates[e] for e in counted]
            spread = max(values) - min(values)
            # a newcomer's SPL warm-up read 55.1 % and 9.3 %, and "the median" of the two, 32.2 %, was said as calmly
            # as two agreeing epochs would have been
            unsteady = (f" The epochs' estimates differ by {100 * spread:.1f} points: the model was still learning, "
                        f"and a longer `warmup_epochs` (it is {self.warmup_epochs}) gives a steadier estimate."
                        if len(values) > 1 and spread > UNSTEADY_SPREAD else "")
            rank_zero_info(f"{self.owner}: `drop_ratio='auto'` estimated {100 * self.estimate:.2f} % corrupted "
                           f"after epoch {epoch} (the median of the estimates after epoch{'s' if len(counted) > 1 else ''}"
                           f" {each}); the drop ratio ramps to it{margin}.{unsteady}")
        if fixed_now and self.estimate:
            # the estimate is the median over epochs: said when an epoch it is read from (the middle one, or either of
            # the middle two) split its scores barely (a few hundred clean skewed scores can: up to 49 %)
            ranked = sorted(counted, key=lambda e: (self.estimates[e], e))
            mid = len(ranked) // 2
            middle = ranked[mid:mid + 1] if len(ranked) % 2 else ranked[mid - 1:mid + 1]
            splits = [self.barely_separated[e] for e in middle if e in self.barely_separated]
            if splits:
                rank_zero_info(barely_separated_note(f"{self.owner}: `drop_ratio='auto'` after epoch {epoch}",
                                                     float(self.estimate), splits, "drop_ratio", self.ranked_by))
            if any(e in self.uncorrected_epochs for e in middle):
                rank_zero_info(uncorrected_note(f"{self.owner}: `drop_ratio='auto'` after epoch {epoch}",
                                                float(self.estimate), "drop_ratio", self.ranked_by, self.estimator))
        if fixed_now and self.estimate == 0.0 and self.auto_margin == 0.0 and not self._told_too_few:
            # the estimate is the median over epochs: this epoch's reason alone may say "two components" (a newcomer)
            reason = est.reason
            if any(self.estimates[e] for e in counted):
                reason = "the median of the estimates after epochs " + ", ".join(
                    f"{e} ({100 * self.estimates[e]:.1f} %)" for e in counted)
            rank_zero_info(nothing_found_note(f"{self.owner}: `drop_ratio='auto'` estimated 0 corrupted samples "
                                              f"after epoch {epoch}", reason, "drop_ratio", self.ranked_by,
                                              "a longer `warmup_epochs`"))
        return rate

    def gather_to_rank_zero(self, epoch: int, device: torch.device | None = None) -> None:
        """At the last training batch of ``epoch`` under DDP (a collective: call on every rank): move every rank's
        scores (and labels) of this collecting epoch onto rank 0, in rank order, and leave the other ranks none.

        A checkpoint written at that batch (``every_n_train_steps``) holds rank 0's state only: without this, a fit
        resumed from it estimated that epoch from rank 0's samples alone (a 2-rank BatchFilter's epoch 1 read 0.300
        for the uninterrupted fit's 0.307). :meth:`end_epoch` gathers the same rows in the same order either way, so
        the uninterrupted fit's estimates do not change."""
        if distributed.world_size() <= 1 or not self.collects(epoch):
            return
        index, scores = self._local(device)
        step, given, predicted = self._local_labels(index.device)
        missing = self.uses_labels and not self._labels_everywhere(index.device)
        rows = [distributed.all_gather_cat(t) for t in (index, scores, step, given, predicted)]
        steps = self._steps
        self._clear()
        self._steps, self._missing = steps, missing
        if distributed.rank() != 0 or rows[0].numel() == 0:
            return
        self._index, self._scores = [rows[0]], [rows[1]]
        if rows[2].numel():
            self._step, self._given, self._predicted = [rows[2]], [rows[3]], [rows[4]]

    def _part(self) -> dict[str, Any]:
        """This rank's scores (and labels) of a collecting epoch so far, on the CPU."""
        index, scores = self._local(torch.device("cpu"))
        step, given, predicted = self._local_labels(torch.device("cpu"))
        return {"index": index, "scores": scores, "steps": self._steps, "step": step, "given": given,
                "predicted": predicted, "missing": self._missing}

    def state_dict(self) -> dict[str, Any]:
        """The estimates and, for a checkpoint written inside a collecting epoch (or at validation end), every rank's
        scores of it so far: rank 0's in the state's own fields, the other ranks' in ``other_ranks`` (a gather: call
        on every rank). Rank 0's alone were saved: a 2-rank fit resumed inside its epoch 1 estimated 0.307 for the
        uninterrupted fit's 0.295 (at an epoch's last batch rank 0 holds every rank's: :meth:`gather_to_rank_zero`)."""
        part = self._part()
        return {"estimates": dict(self.estimates), "barely_separated": dict(self.barely_separated),
                "uncorrected": sorted(self.uncorrected_epochs), "start": self.start,
                "cut": {e: list(v) for e, v in self.cut_epochs.items()}, **part,
                "other_ranks": distributed.other_ranks_parts(part)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: each rank its own scores; under another world size all of them on rank 0, in
        rank order (what :meth:`end_epoch` gathers); from an older checkpoint rank 0's on rank 0 alone."""
        self.estimates = {int(k): float(v) for k, v in state["estimates"].items()}
        # absent from checkpoints written before it was recorded
        self.barely_separated = {int(k): (int(v[0]), float(v[1]), float(v[2]))
                                 for k, v in state.get("barely_separated", {}).items()}
        self.uncorrected_epochs = {int(e) for e in state.get("uncorrected", ())}
        self.start = int(state.get("start", 0))  # absent from checkpoints written before restarts existed
        self.cut_epochs = {int(e): (int(v[0]), int(v[1]), str(v[2])) for e, v in state.get("cut", {}).items()}
        note = cut_epoch_resume_note(self.owner, {e: v for e, v in self.cut_epochs.items() if e >= self.start},
                                     self.estimates)
        if note is not None:  # said where the fit resumes, not only in the process that stopped
            rank_zero_warn(note)
        self._clear()
        # every rank loads the file rank 0 wrote: a part restored on every rank was counted once per rank (0.225 for
        # 0.200, a reviewer's)
        parts = distributed.parts_to_restore(state, state.get("other_ranks"))
        self._index = [p["index"] for p in parts if p["index"].numel()]
        self._scores = [p["scores"] for p in parts if p["scores"].numel()]
        # absent from checkpoints written before estimator="disagreement" existed
        self._steps = max((int(p.get("steps", 1 if p["index"].numel() else 0)) for p in parts),
                          default=int(state.get("steps", 0)))  # a rank restoring none counts on from rank 0's
        self._missing = any(bool(p.get("missing", False)) for p in parts)
        steps = [p.get("step") for p in parts if p["index"].numel()]
        if steps and all(step is not None and step.numel() for step in steps):
            self._step = steps
            self._given = [p["given"] for p in parts if p["index"].numel()]
            self._predicted = [p["predicted"] for p in parts if p["index"].numel()]
        elif self.uses_labels and self._index:
            self._missing = True  # scores collected without labels: this epoch cannot use them
