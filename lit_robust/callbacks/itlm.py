"""ITLM: Iterative Trimmed Loss Minimization as a Lightning callback."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatch
from numbers import Integral
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lit_robust._backend import (
    Callback,
    MisconfigurationException,
    TrainerFn,
    pl,
    rank_zero_info,
    rank_zero_only,
    rank_zero_warn,
    warn_if_mixed_lightning,
)
from lit_robust._checks import SEED_MAX, check_margin, real_scalar
from lit_robust._lightning import (
    TrainLoaderPatch,
    accumulation_in_epoch,
    begin_fit,
    check_epoch_batches,
    check_state_owner,
    draws_in_order,
    early_stopping_checks,
    epoch_cut,
    evaluation_batches,
    is_a,
    limited_batches,
    mark_restored,
    no_training_batches,
    refuse_no_training,
    resolve_loader,
    say_resumed_a_finished_fit,
    say_trained_nothing,
    sigterm_without_collectives,
    start_epoch_after_skipped_end,
    started_without_its_state,
    with_sampler,
    writes_no_report,
)
from lit_robust._modes import enter_eval, restore_modes
from lit_robust.callbacks._report_file import (
    check_report_args,
    checked_folder,
    report_enabled,
    resolve_report_path,
    unwritten_report_note,
    warn_earlier_report,
    written_on_rank_zero,
)
from lit_robust.callbacks._resume import (
    check_resumable,
    check_same_on_every_rank,
    cut_epoch_note,
    random_state,
    restore_random_state,
    skipped_epoch_end_note,
    warn_inexact_resume,
)
from lit_robust.callbacks._resume import epoch_whose_end_was_skipped as _epoch_whose_end_was_skipped
from lit_robust.callbacks._resume import mid_epoch_checkpoint as _mid_epoch_checkpoint
from lit_robust.data.indexed import (
    IndexedDataset,
    check_collate,
    check_one_index_space,
    dataset_targets,
    describe_item,
    dict_samples_hint,
    label_mismatch,
    reads_differ,
    subset_of_indexed_hint,
    unpack_batch,
)
from lit_robust.data.spec import datamodule_spec, reads_squared_errors
from lit_robust.functional.estimation import (
    LABEL_ESTIMATORS,
    CorruptionEstimate,
    estimate_corruption,
    estimate_from_labels,
)
from lit_robust.mixin import (
    RobustMixin,
    check_per_sample_at_first_batch,
    check_per_sample_scores,
    check_reinitializable,
    require_mixin,
    scores_predictions_confidence,
)
from lit_robust.report import (
    DIVERGED_FACTOR,
    NO_LABEL,
    ReportFormat,
    RoundScores,
    class_label,
    datamodule_classes,
    integer_labels,
    label_part,
    often_dropped_note,
    one_class_predicted,
    posterior_note,
    rarely_predicted_classes,
    regression_did_not_learn,
    replaced_note,
    scalar_targets,
    targets_reported,
    top_rows_dropped,
    write_training_report,
)
from lit_robust.reporting import AUTO_RATE_CAP
from lit_robust.selection import distributed
from lit_robust.selection.auto_drop import (
    AUTO_MIN_SAMPLES,
    UNLEARNT_NOTE,
    barely_separated_note,
    cleanlab_hint,
    nothing_found_note,
    only_auto_names,
    quiet_about_too_few,
    report_pointer,
    split_of,
    too_few_for_auto,
    uncorrected,
    uncorrected_note,
)
from lit_robust.selection.rules import (
    auto_string_hint,
    keep_count,
    percent_hint,
    scatter_scores,
    starved_classes,
)
from lit_robust.selection.samplers import SelectionSampler, ShardedSampler

__all__ = ["ITLM", "RoundRecord", "auto_keep_count", "chance_accuracy", "collapse_reasons", "log_scale"]

OnCollapse = Literal["keep", "warn", "raise"]
_ON_COLLAPSE = ("keep", "warn", "raise")
Estimator = Literal["gmm", "bmm", "disagreement", "class_floor", "disagreement_or_interior", "floor_or_interior"]
_ESTIMATORS = ("gmm", "bmm", "disagreement", "class_floor", "disagreement_or_interior", "floor_or_interior")
# since 2026-12-07 (was "disagreement", then "disagreement_or_interior" earlier that day): benchmarks/results/
# corruption_rate.md and estimators_offline.py on 9 seeds (docs/capabilities/corruption-rate.md)
DEFAULT_ESTIMATOR: Estimator = "floor_or_interior"
LOW_CLASS_SHARE = 0.5  # a class kept under this fraction of the overall share is warned about
# not against a single-target backdoor: its poison sits in one class, and a per-class trim keeps that class's share
# of it (attack success 92.1 % in backdoor.md's measurement); a backdoor newcomer was told to turn it on there
# nor where most of a class's labels are wrong: on a long-tailed set uniform noise made 60-67 % of the rare classes'
# given labels flipped samples of common classes; one trim rightly dropped them, `per_class=True` kept half-wrong rare
# labels and cost 3.5 points (0.798 -> 0.763, mean of 3 seeds: an imbalanced-data newcomer, who was told to turn it on)
_PER_CLASS_ADVICE = ("`ITLM(per_class=True)` keeps the same share of every class, wrong labels included: right for a "
                     "hard or confusable class, not where most of the class's labels are wrong (uniform noise on a "
                     "long-tailed set makes most of a rare class's labels flipped samples of common classes) nor "
                     "against a single-target backdoor, whose poison sits in one class.")
_MIN_VALIDATION_SAMPLES = 20  # fewer: a validation accuracy is not judged "at chance" (see `_finish_round`)
_PER_CLASS_SHORT = 0.02  # per_class keeping fewer than keep_ratio * n by more than this share of n is warned about




def _per_class_keeps_none(keep_ratio: float, n: int, counts: Tensor | None = None) -> str:
    sizes = "" if counts is None else f"; its classes hold {sorted({int(c) for c in counts if c}, reverse=True)[:6]}"
    return (f"`per_class=True` keeps floor(keep_ratio * n_c) of each class's n_c samples, and with `keep_ratio`="
            f"{keep_ratio:g} that is 0 in every class: none of the {n} training samples{sizes}. Use a larger "
            "`keep_ratio`, or `per_class=False`.")


def _per_class_keeps_fewer(keep_ratio: float, n: int, kept: int, counts: Tensor) -> str:
    sizes = counts[counts > 0]
    none = sum(1 for c in sizes.tolist() if keep_count(int(c), keep_ratio) == 0)
    return (f"ITLM: `per_class=True` keeps floor(keep_ratio * n_c) of each class's n_c samples, and with "
            f"`keep_ratio`={keep_ratio:g} and {sizes.numel()} classes of median {int(sizes.median())} samples that is "
            f"{kept} of the {n} training samples, not {keep_count(n, keep_ratio)}: every round drops "
            f"{100 * (1 - kept / n):.1f} % instead of {100 * (1 - keep_ratio):.1f} %"
            + (f" ({none} class(es) too small to keep any)" if none else "")
            + ". Use `per_class=False`, or a larger `keep_ratio`, for about the share asked.")


class _ScorePass(NamedTuple):
    """One pass over the training set in eval mode: this rank's samples, in loader order."""

    index: Tensor
    scores: Tensor
    corrupted: Tensor | None
    given: Tensor | None = None  # integer labels
    predicted: Tensor | None = None
    given_target: Tensor | None = None  # a regression's one target per sample
    predicted_target: Tensor | None = None
    confidence: Tensor | None = None  # the predicted class's probability


def _round_epochs_arg(given: Any) -> list[int]:
    """``round_epochs`` as a list of ints, or the error naming it."""
    round_epochs = list(given) if isinstance(given, Iterable) and not isinstance(given, (str, bytes)) else []
    if not round_epochs or not all(isinstance(e, Integral) and not isinstance(e, bool) and e >= 1
                                   for e in round_epochs):
        raise ValueError(f"`round_epochs` must be a non-empty list of integers >= 1, got {given!r}.")
    return [int(e) for e in round_epochs]


@dataclass
class RoundRecord:
    """What one ITLM round trained on and how it ended (``ITLM.history``, one per round).

    Attributes:
        round: the round's number, from 0.
        epochs: the epochs it trained.
        kept: the samples it trained on (its selection); ``n``: the training set's size.
        clean_precision: the share of the kept samples that are clean, ``corrupted_recall`` the share of the corrupted
            samples dropped, ``dropped_corrupted`` their number: known only when the batches carry the ground-truth
            flag (``IndexedDataset(..., corrupted=...)``), else ``None``.
        mean_kept_score: the mean score of the kept samples by the scoring pass the selection came from;
            ``mean_dropped_score`` of the dropped ones; ``nonfinite_scores``: how many scores were NaN or infinite
            (dropped first).
        metrics: the logged metrics at the round's end, e.g. the monitored validation metric; ``metrics_from_epoch``
            the epoch of the validation behind them when it is not the round's last epoch (else ``None``).
        first_epoch_loss: the mean training loss of the round's first epoch (over all ranks); ``last_epoch_loss`` of
            its last.
        first_epoch_log_loss: the mean of :func:`log_scale` of the per-sample losses the module handed to
            ``reduce_loss`` in the round's first epoch (over all ranks); ``last_epoch_log_loss`` in its last; ``None``
            where it handed none (a ``training_step`` of its own that does not call ``reduce_loss``).
        collapsed: the round's model did not learn (see ``ITLM(on_collapse=...)``).
        estimated_corruption: with ``keep_ratio="auto"``, the corrupted fraction estimated from the scores the
            round's selection came from (as estimated, before any clipping); ``None`` with a numeric ``keep_ratio``
            and in round 0.
    """

    round: int
    epochs: int
    kept: int
    n: int
    clean_precision: float | None = None  # fraction of the kept samples that are clean
    corrupted_recall: float | None = None  # fraction of the corrupted samples that were dropped
    dropped_corrupted: int | None = None  # corrupted samples among the dropped ones
    mean_kept_score: float | None = None
    mean_dropped_score: float | None = None
    nonfinite_scores: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. the monitored validation metric at round end
    first_epoch_loss: float | None = None  # mean training loss of the round's first epoch (over all ranks)
    last_epoch_loss: float | None = None  # ... and of its last epoch
    # the mean of `log_scale` of the per-sample losses given to `reduce_loss` in those epochs (None: none given)
    first_epoch_log_loss: float | None = None
    last_epoch_log_loss: float | None = None
    collapsed: bool = False  # the round's model did not learn (see `ITLM(on_collapse=...)`)
    # `keep_ratio="auto"`: the corrupted fraction estimated from the scores this round's selection came from
    # (as estimated, before any clipping; see `auto_keep_count`); None with a numeric keep_ratio and in round 0
    estimated_corruption: float | None = None
    # the epoch of the validation behind `metrics` when it is not the round's last epoch (None: that epoch's, or none)
    metrics_from_epoch: int | None = None


def check_keep_ratio(keep_ratio: Any) -> float | Literal["auto"]:
    """``keep_ratio`` as a float in (0, 1] or ``"auto"``, or a ``ValueError`` naming the range and the value; checked
    again at each fit's start, since a notebook user's ``itlm.keep_ratio = "0.7"`` between fits ended in torch's bare
    "'<' not supported" (pure)."""
    keep_ratio = real_scalar(keep_ratio)
    if isinstance(keep_ratio, str) and keep_ratio == "auto":
        return "auto"
    if isinstance(keep_ratio, str):
        hint = auto_string_hint(keep_ratio)
        raise ValueError(f"`keep_ratio` must be a number in (0, 1] or 'auto', got {keep_ratio!r}"
                         f"{f' ({hint})' if hint else ''}.")
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio!r} (or 'auto' to estimate the "
                         "corrupted fraction from the scores)." + percent_hint("keep_ratio", keep_ratio))
    return float(keep_ratio)


def auto_keep_count(n: int, rate: float, margin: float = 0.0) -> tuple[int, str | None]:
    """How many of ``n`` samples ``ITLM(keep_ratio="auto")`` keeps for an estimated corrupted fraction ``rate``:
    ``floor((1 - rate - margin) * n)`` (as :func:`~lit_robust.selection.rules.keep_count` floors), and a note saying
    why it was clipped, or ``None`` (pure).

    An estimate of ``0.5`` or more breaks ITLM's clean-majority assumption and is clipped to ``0.5``; a count of 0
    becomes 1. The estimators get there through NaN/inf scores (counted as corrupted) or a model that has not
    learned yet (a newcomer's batch as large as the data set, one step per epoch: 72-82 %), which the note says.

    >>> auto_keep_count(240, 0.3), auto_keep_count(240, 0.3, 0.05), auto_keep_count(240, 0.0)
    ((168, None), (156, None), (240, None))
    >>> k, note = auto_keep_count(100, 0.7)
    >>> k, note.startswith("the estimate 0.7 is >= 0.5 (ITLM assumes a clean majority"), note.endswith("clipped to 0.5")
    (50, True, True)
    >>> auto_keep_count(1, 0.2)
    (1, 'floor((1 - 0.2 - 0) * 1) = 0 samples; keeping 1')
    """
    notes = []
    used = rate
    if not rate < AUTO_RATE_CAP:  # NaN included
        used = AUTO_RATE_CAP
        notes.append(f"the estimate {rate:.4g} is >= {AUTO_RATE_CAP} (ITLM assumes a clean majority; {UNLEARNT_NOTE}); "
                     f"clipped to {AUTO_RATE_CAP}")
    k = keep_count(n, 1.0 - used - margin)
    if k == 0 and n > 0:
        notes.append(f"floor((1 - {used:.4g} - {margin:.4g}) * {n}) = 0 samples; keeping 1")
        k = 1
    return k, "; ".join(notes) or None


def schedule_length(scheduler: Any) -> int | None:
    """How many scheduler steps ``scheduler`` needs to reach the end of its schedule, for the schedulers of fixed
    length (``None`` for the others: periodic, exponential, plateau, a scheduler of one's own): OneCycleLR's
    ``total_steps``, CosineAnnealingLR's ``T_max``, LinearLR / ConstantLR / PolynomialLR's ``total_iters``,
    MultiStepLR's last milestone, StepLR's first step.

    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    >>> schedule_length(torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.01, total_iters=948))
    948
    >>> schedule_length(torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)) is None
    True
    """
    lr = torch.optim.lr_scheduler
    if isinstance(scheduler, lr.OneCycleLR):
        return int(scheduler.total_steps)
    if isinstance(scheduler, lr.CosineAnnealingLR):
        return int(scheduler.T_max)
    if isinstance(scheduler, (lr.LinearLR, lr.ConstantLR, lr.PolynomialLR)):
        return int(scheduler.total_iters)
    if isinstance(scheduler, lr.MultiStepLR):
        return max(scheduler.milestones) if scheduler.milestones else None
    if isinstance(scheduler, lr.StepLR):
        return int(scheduler.step_size)
    return None


def swa_start_epoch(callback: Any, max_epochs: int | None) -> int | None:
    """The first (0-based) epoch ``StochasticWeightAveraging`` averages in, by Lightning's rule (an integer
    ``swa_epoch_start`` k: epoch k - 1; a fraction f: ``int(f * max_epochs) - 1``, at least 0); ``None`` for any
    other callback, or a fraction without ``max_epochs``."""
    if not is_a(callback, "StochasticWeightAveraging"):
        return None
    start = getattr(callback, "_swa_epoch_start", None)
    if isinstance(start, float):
        if not max_epochs or max_epochs < 0:
            return None
        start = int(max_epochs * start)
    return max(int(start) - 1, 0) if isinstance(start, int) else None


def chance_accuracy(num_classes: int, margin: float = 0.05) -> float:
    r"""Accuracy at or below which a classifier of ``num_classes`` classes counts as "at chance":
    :math:`1/K + m\,(1 - 1/K)`, i.e. ``margin`` of the way from guessing to perfect.

    A model that predicts one class for everything scores that class's frequency; with ``margin=0.05`` a
    10-class model is at chance up to 0.145, which covers MNIST's most frequent digit (11.3%).

    >>> chance_accuracy(10), chance_accuracy(2)
    (0.145, 0.525)
    """
    return round(1.0 / num_classes + margin * (1.0 - 1.0 / num_classes), 12)


def log_scale(losses: Tensor) -> Tensor:
    """``sign(l) * log(1 + |l|)`` of each loss (pure): monotone, about ``l`` near 0, and a loss of 1e12 weighs only
    about 28. The collapse check averages it over an epoch's per-sample losses, so that a few extreme samples do not
    hide how the others' losses moved.

    >>> [round(v, 4) for v in log_scale(torch.tensor([0.0, 1e-6, -1.0, 1e12], dtype=torch.float64)).tolist()]
    [0.0, 0.0, -0.6931, 27.631]
    """
    return torch.sign(losses) * torch.log1p(losses.abs())


def _moved(first: float, last: float, tolerance: float) -> bool:
    """``last`` differs from ``first`` by more than ``tolerance`` relative to ``|first|``."""
    return abs(last - first) > tolerance * max(abs(first), 1e-12)


def collapse_reasons(first_loss: float | None, last_loss: float | None, loss_must_fall: bool,
                     accuracy: tuple[str, float] | None = None, num_classes: int | None = None,
                     margin: float = 0.05, log_losses: tuple[float | None, float | None] | None = None
                     ) -> list[str]:
    """Why a finished round's model did not learn; an empty list when nothing says so (pure).

    A round collapsed when its mean training loss is not finite; or it trained a fresh model and its loss
    did not move at all, or did not fall and stayed no better than a uniform guess over the classes
    (``ln(num_classes)``, for a cross-entropy-like loss, when the number of classes is known); or its
    validation accuracy is at chance (:func:`chance_accuracy`, when the number of classes is known).

    A loss that merely did not fall is not enough: under label noise a model that has learned the clean
    samples within its first epoch grows confident on the noisy ones and its mean loss rises (the test blobs,
    30% noise: 0.98 → 1.41 with every clean sample right).

    "Did not move" (by more than 0.01 %) holds for the mean loss and, where known, for ``log_losses``, the epochs'
    means of :func:`log_scale` of the per-sample losses: a few extreme samples (4 sentinel targets of 999999 in a
    table of 354) held the mean loss within 0.01 % while the model moved, its log-scale mean by 2.6 to 12 %. Both
    are means over the epoch's samples, whatever their order and batches: a learning rate of 1e-9 leaves both where
    they were, however the batches are shuffled.

    Args:
        first_loss / last_loss: mean training loss of the round's first and last epoch (``None``: unknown).
        loss_must_fall: the round trained a freshly initialised model for two epochs or more (a warm-started
            or one-epoch round is not judged on how its loss moved).
        accuracy: ``(name, value)`` of a validation accuracy measured in the round's last epoch, or ``None``.
        num_classes: number of classes (``None``: unknown; the tests that need it are skipped).
        margin: see :func:`chance_accuracy`.
        log_losses: ``(first, last)`` epoch's mean of :func:`log_scale` of the per-sample losses (``None``, or a
            ``None`` in it: unknown; the mean loss alone is judged).

    >>> collapse_reasons(2.0, 1.0, True)
    []
    >>> collapse_reasons(2.3, 2.6, True)  # rose, but the number of classes is unknown
    []
    >>> collapse_reasons(2.3, 2.6, True, num_classes=10)
    ['training loss did not fall and is no better than a uniform guess (first epoch 2.3, last epoch 2.6; ln(10) = 2.303)']
    >>> collapse_reasons(0.7, 0.7, True)
    ['training loss did not change (first epoch 0.7, last epoch 0.7)']
    >>> collapse_reasons(1.25464e6, 1.25452e6, True, log_losses=(0.6208, 0.6772))  # the mean hid the others
    []
    >>> collapse_reasons(1.0, float("nan"), False)
    ['training loss is not finite (first epoch 1, last epoch nan)']
    >>> collapse_reasons(2.0, 1.0, True, ("val_acc", 0.1), 10)
    ['`val_acc` = 0.1 is at chance (<= 0.145 for 10 classes)']
    """
    reasons = []
    k = num_classes if num_classes is not None and num_classes >= 2 else None
    losses = [v for v in (first_loss, last_loss) if v is not None]
    figures = f"first epoch {first_loss:.4g}, last epoch {last_loss:.4g}" if len(losses) == 2 else (
        f"{'first' if last_loss is None else 'last'} epoch {losses[0]:.4g}" if losses else "")
    if any(not math.isfinite(v) for v in losses):
        reasons.append(f"training loss is not finite ({figures})")
    elif loss_must_fall and first_loss is not None and last_loss is not None:
        # moved by less than 0.01 %: a learning rate of 6e-7 (an lr finder's) took 2.30101 to 2.30100 in 3 epochs.
        # The log-scale mean too: 4 sentinel targets in a lab's table of 354 held its mean loss within 0.01 % while
        # the model moved (the log-scale mean by 2.6-12 % in round 0), and rounds were said to collapse
        logs = _known_pair(log_losses)
        if not _moved(first_loss, last_loss, 1e-4) and not (logs and _moved(*logs, 1e-4)):
            on_log = "" if logs is None else f"; per-sample log(1 + loss) {logs[0]:.4g} -> {logs[1]:.4g}"
            reasons.append(f"training loss did not change ({figures}{on_log})")
        elif k is not None and last_loss >= first_loss and last_loss >= math.log(k):
            reasons.append(f"training loss did not fall and is no better than a uniform guess ({figures}; "
                           f"ln({k}) = {math.log(k):.4g})")
    if accuracy is not None and k is not None and math.isfinite(accuracy[1]):
        limit = chance_accuracy(k, margin)
        if accuracy[1] <= limit:
            reasons.append(f"`{accuracy[0]}` = {accuracy[1]:.4g} is at chance (<= {limit:.4g} for {k} classes)")
    return reasons


def _known_pair(pair: tuple[float | None, float | None] | None) -> tuple[float, float] | None:
    """``pair`` when both its values are known and finite, else ``None``."""
    if pair is None or any(v is None or not math.isfinite(v) for v in pair):
        return None
    return float(pair[0]), float(pair[1])


#: optimizer steps an epoch at or below which a round that did not learn is put down to too few steps
FEW_STEPS = 2


def stall_cause(first_loss: float | None, last_loss: float | None, steps_per_epoch: int | None, epochs: int = 2,
                accumulation: int = 1, log_losses: tuple[float | None, float | None] | None = None,
                optimizers: int = 1, limited: str | None = None) -> str:
    """The likely cause of a round (or fit) whose model did not learn, from its mean training loss in the first and
    last epoch and its optimizer steps per epoch (pure): a non-finite loss points at the data or a learning rate too
    large, a loss that rose at a learning rate too large, and one that barely moved (less than 1 %) at too few steps
    or a learning rate too small. A tuner's `scale_batch_size` chose a batch of 8,192 for 6,000 samples (one step per
    epoch) and the lr finder a learning rate of 6e-7: both were told "a learning rate too large". How the loss moved
    is judged over ``epochs`` >= 2 only (a one-epoch round's first epoch is its last). ``accumulation``: the
    Trainer's ``accumulate_grad_batches``, named among the causes of few steps when above 1. ``log_losses``: the
    epochs' log-scale means (see :func:`collapse_reasons`); a loss whose log-scale mean moved by more than 1 % did
    not barely move. ``optimizers``: how many optimizers step each batch (a manually optimised module's, DCGAN's 2);
    ``steps_per_epoch`` is each one's steps, and the text says so where there are several (a GAN user's message said
    "8 optimizer steps per epoch" where ``global_step``, and ITLM's ``max_steps`` warning, counted 16).
    ``limited``: the Trainer's ``limit_train_batches`` where it shortens the epochs (e.g. ``"1"``), named as the cause
    of few steps (a Lightning user who followed ITLM's own quick-check advice was told to lower a batch of 64 of
    1,200 samples).

    >>> stall_cause(2.303, 2.302, 1)[:72]
    'Its training loss barely moved (2.303 -> 2.302) in 1 optimizer step per '
    >>> stall_cause(2.3, 2.6, 40)
    'A common cause is a learning rate too large for a freshly initialised model.'
    >>> stall_cause(2.303, 2.302, 8, optimizers=2)[:90]
    'Its training loss barely moved (2.303 -> 2.302) in 8 steps of each of its 2 optimizers per'
    >>> stall_cause(2.303, 2.302, 1, limited="1").split("per epoch: ")[1][:56]
    '`limit_train_batches`=1 leaves too few steps to learn: a'
    >>> stall_cause(2.3, 2.6, 2, limited="0.1")[:80]
    'It ran 2 optimizer steps per epoch: `limit_train_batches`=0.1 leaves too few ste'
    """
    known = first_loss is not None and last_loss is not None
    if known and not (math.isfinite(first_loss) and math.isfinite(last_loss)):
        # a newcomer's NaN features got the learning-rate hint only
        # a model's own 0/0 on finite data (mean-pooling an empty sequence) was not among the causes named
        return ("A non-finite loss comes from a learning rate too large, from NaN/inf in some samples' inputs or "
                "targets, or from the model's own arithmetic on some sample (e.g. mean-pooling an empty sequence: "
                "0/0): one such sample makes its whole batch's gradient NaN, even where a selection drops it. "
                "Check `torch.isfinite` of your data, and remove a NaN where `per_sample_loss` makes it (a count "
                "`.clamp(min=1)`; `torch.nan_to_num` of the result leaves the gradient NaN).")
    few = steps_per_epoch is not None and steps_per_epoch <= FEW_STEPS
    plural = "" if steps_per_epoch == 1 else "s"
    steps = ("" if steps_per_epoch is None else
             f" in {steps_per_epoch} optimizer step{plural} per epoch" if optimizers <= 1 else
             f" in {steps_per_epoch} step{plural} of each of its {optimizers} optimizers per epoch")
    # a reviewer's batch of 16 with `accumulate_grad_batches=15` was told to lower the batch size
    batch = ("a batch about as large as the training set (a batch-size finder such as Lightning's `scale_batch_size` "
             "may choose one)" if accumulation <= 1 else
             f"a batch times `accumulate_grad_batches`={accumulation} about as large as the training set")
    lower = "Lower the batch size" + ("" if accumulation <= 1 else " or the accumulation")
    quick = (f"`limit_train_batches`={limited} leaves too few steps to learn: a quick check's few batches an epoch "
             "learn too little to select, as expected there; raise it to train." if limited is not None else None)
    logs = _known_pair(log_losses)
    if (known and epochs >= 2 and abs(last_loss - first_loss) <= 0.01 * abs(first_loss)
            and not (logs and _moved(*logs, 0.01))):
        figures = f"({first_loss:.4g} -> {last_loss:.4g}){steps}"
        if few:
            return (f"Its training loss barely moved {figures}: {quick}" if quick else
                    f"Its training loss barely moved {figures}: {batch} leaves too few steps to learn. {lower}.")
        return (f"Its training loss barely moved {figures}: a learning rate too small (an lr finder's suggestion "
                "can be), or much too large, for a freshly initialised model. Check the learning rate.")
    if few and quick:
        return f"It ran{steps.removeprefix(' in')}: {quick}"
    if few:
        return (f"A common cause is a learning rate too large for a freshly initialised model, or too few steps:"
                f"{steps.removeprefix(' in')} ({batch}? {lower.lower()}).")
    return "A common cause is a learning rate too large for a freshly initialised model."


_PER_CLASS_NEEDS_LABELS = ("`per_class=True` trims each class by its given label, but the training targets are not "
                           "integer class labels (a regression's, a GAN's, one-hot rows or soft labels such as mixup's "
                           "are not: pass `y.argmax(1)`; class labels stored as floats, e.g. 3.0: cast them to "
                           "torch.long; for targets of several parts set the module's `label_key`); use "
                           "per_class=False otherwise.")


class ITLM(Callback):
    r"""Iterative Trimmed Loss Minimization (Shen & Sanghavi, ICML 2019, Algorithms 1–2).

    Training runs in rounds. Before round :math:`t \ge 1` every training sample is scored by the
    model of round :math:`t-1` (eval mode, no grad), and round :math:`t` trains only on

    .. math:: S_t = \arg\min_{|S| = \lfloor \alpha n \rfloor} \sum_{i \in S} f_{\theta_{t-1}}(s_i),

    ranked by ``(score, index)``; NaN/inf scores rank last (dropped first) and are warned about.
    Rounds can be short (early-stopped) and then long, e.g. ``round_epochs=[10, 10, 10, 10, 80]``;
    their sum must equal the Trainer's ``max_epochs``. With ``reinit=True`` the model, optimizers and
    LR schedulers are re-created at every round start (the paper's choice for DNNs, App. B(c)).

    The module must adopt :class:`~lit_robust.RobustMixin` (its ``sample_scores`` is the score) and
    the training set must yield ``(index, input, target[, is_corrupted])``, e.g. through
    :class:`~lit_robust.IndexedDataset`. The scoring pass uses the datamodule's (or module's)
    ``scoring_dataloader()`` when defined — the training set in a fixed order with the evaluation
    transform — and otherwise the training loader's dataset without shuffling.

    Args:
        keep_ratio: :math:`\alpha \in (0, 1]`, the fraction of samples kept each round (below 0.5, warned: ITLM
            assumes a clean majority); or ``"auto"``:
            after each scoring pass (on a classifier until one finds a corrupted share; see ``reestimate``) the corrupted
            fraction :math:`\hat\varepsilon` is estimated from that pass over the whole training set (``estimator``;
            by default from where predicted and given labels disagree) and the round keeps :math:`\lfloor (1 - \hat\varepsilon - m)\, n \rfloor` samples
            (:math:`m` = ``auto_margin``; :func:`auto_keep_count`), ranked as usual. An estimate of 0 keeps
            every sample; one of 0.5 or more is clipped to 0.5, and a count of 0 raised to 1, with a warning.
            The estimate is recorded in ``RoundRecord.estimated_corruption`` and logged as
            ``itlm/estimated_corruption``. ``"auto"`` needs ``initial_round_on_all=True``: the untrained
            model's scores say nothing about which samples are corrupted. Under DDP every rank's scores are
            all-gathered at each scoring pass (O(n) traffic; a histogram-based estimate that avoids it is
            future work) and every rank estimates on the same multiset, so the estimate and the selection
            are the same for any number of processes.
        round_epochs: epochs of each round; ``sum(round_epochs) == Trainer(max_epochs=...)``.
        initial_round_on_all: round 0 trains on every sample (Algorithm 1's optional initialisation);
            if ``False`` round 0 already trains on the selection scored by the untrained model.

            A round trains on fewer batches than the whole set: a fractional ``limit_train_batches`` and an integer
            ``val_check_interval`` must fit its epoch. With a numeric ``keep_ratio`` they are checked against the
            smallest round before round 0 trains; with ``"auto"``, whose round sizes come from the scoring passes,
            at each round's start (a ``ValueError`` naming the argument, its range and the value either way), and
            before round 0 trains against a round at the estimate's cap, 0.5 (a warning: a smaller estimate fits).
        reinit: re-initialise model, optimizers and LR schedulers at the start of rounds ``t >= 1``
            (model re-drawn by :meth:`RobustMixin.reinitialize` with seed ``seed + t``; the paper's protocol).
            Frozen parameters (``requires_grad=False``) keep their values. ``"restore"`` (fine-tuning a pretrained
            network) puts back the weights the model had when the fit started instead of re-drawing them, so each
            round fine-tunes the pretrained network again; the optimizers and LR schedulers are re-created as with
            ``True``. It keeps a CPU copy of the module's state dict, saved in checkpoints too.
            ``False`` trains on from the last round's weights: in rounds of 4 epochs it was ahead with
            ``keep_ratio="auto"`` in 7 of 7 rows and cost nothing on clean data (benchmarks/results/itlm_reinit.md);
            in rounds of 12 it was ahead at the true rate in 1 of 5 rows, −0.6 points on average
            (itlm_reinit_long.md): keep the default for long rounds. Keep it on regression targets with gross
            outliers too: make_friedman1 with 20 % of its targets set to 999 scored a test R² of −1.17 ± 2.39
            trained on, against 0.76 re-initialised (benchmarks/results/itlm_table_config.md). The re-initialisation is announced on the
            module (:attr:`RobustMixin.model_start_epoch`): a :class:`~lit_robust.BatchFilter` on the same Trainer
            restarts its warm-up (and its ``"auto"`` estimation window) at every round start, unless built with
            ``restart_on_reinit=False``.
        seed: seeds the per-epoch shuffling of the selection and the re-initialisations; ``None`` (default): the
            global seed of ``seed_everything`` (``PL_GLOBAL_SEED``, as Lightning's distributed sampler reads it; 0
            without one), read at each fit's start (:attr:`fit_seed`).
        shuffle: shuffle the selection each epoch (every sample in round 0), in an order seeded by ``seed``. It
            replaces the training loader's own ``shuffle``: ITLM iterates its own sampler.
        monitor: metric from ``trainer.callback_metrics`` reported per round (default: every ``val*`` metric).
            A metric that is not there at the end of a round raises ``MisconfigurationException``, as
            ``ModelCheckpoint`` and ``EarlyStopping`` do.
        verbose: print one line after each round and the whole round table at fit end.
        plot: write ``itlm_scores.png`` (score histograms per scoring pass: of clean vs corrupted samples where
            the ground truth is known, else of the samples the pass kept vs dropped) at fit end, into ``plot_dir``
            or else the logger's directory (no logger and no ``plot_dir``: no file).
        plot_dir: folder for the plot (a ``str`` or ``os.PathLike``; created if missing and checked at setup when
            ``plot`` is on).
        check_per_sample: on the first scoring batch of a fit, score the batch's first samples again on
            their own and raise if their scores change (a score that is not per-sample, e.g. a batch mean
            broadcast to every sample); turn off for scores that are random by design. The samples are sliced from the
            collated batch, so a loss that depends on the batch's padding (a mean over the padded length) is not
            caught: average each sample over its own length (README §2).
        on_collapse: what to do when a round's model did not learn (a *collapsed* round, e.g. a learning
            rate too large for a re-initialised model; the rules are :func:`collapse_reasons`): its mean
            training loss is not finite; or it trained a fresh model (round 0, or ``reinit=True``) for two
            epochs or more and its loss did not move, or did not fall and stayed no better than a uniform
            guess; or a validation accuracy (``monitor`` if it names one, else the first ``val*acc*`` metric:
            with several validation loaders the first loader's, e.g. ``val_acc/dataloader_idx_0``)
            measured in the round's last epoch is at chance (judged only over a validation split of 20 samples
            or more, that of its own loader where there are several: a smaller one is warned about and its
            accuracy left out). The training loss is the mean of what
            ``training_step`` returns over the epoch's batches and all ranks; the number of classes comes
            from the module's ``hparams.num_classes`` or ``num_classes``, or the datamodule's (unknown: the
            rules that need it are skipped). ``"keep"`` (default): warn, and the next round trains on the
            collapsed round's selection again (re-initialised as usual) instead of on one scored by a model
            that learned nothing (that model scores nothing: its report column ``score_round_<r>`` is empty, so a
            fit whose rounds all collapsed has only the final pass's scores); ``"warn"``: warn and score as usual;
            ``"raise"``: raise ``RuntimeError``.
            Either way the round's record has ``collapsed=True``.
        estimator: only with ``keep_ratio="auto"``. ``"floor_or_interior"`` (default since 2026-12-07, later that
            day): :func:`~lit_robust.estimate_corruption_from_spread` -- the ``"class_floor"`` estimate below where
            the losses form two groups and the model's disagreements with the labels spread evenly over the classes
            (:func:`~lit_robust.functional.estimation.disagreement_concentration` below 0.35: labels flipped
            uniformly at random, every class at one rate; classes of a median 200 samples or more), else the
            ``"disagreement_or_interior"`` one (clean data, class-pair noise, noise in some classes: one group of
            losses, or disagreements concentrated on a few class pairs). On 9 seeds of the benchmark's 21
            classification rows and two of pair flips in 5 classes, its round-0 estimate was off by a median of
            1.92 / 2.18 / 1.94 points (seeds 10-12, 3-5, 0-2) against 2.81 / 3.54 / 2.98 for
            ``"disagreement_or_interior"``, with as many rows within 5 points or one more
            (``benchmarks/estimators_offline.py``; clean FashionMNIST unchanged at 2.9-3.8 %). Since 2026-12-08 the
            interior is each predicted class's most confident 40 %, not half: 1.54 / 2.10 / 1.96 points, the same rows
            within 5, clean data at most 2.1 / 2.5 / 2.6 %; ITLM auto at most 1 point below ITLM at the true rate in 19
            of 21 rows over 9 seeds (18 at half), 18 of 21 on seeds 0-2 (16)
            (``benchmarks/results/corruption_rate_share04_9seeds.md``, ``corruption_rate.md``).
            ``"disagreement_or_interior"`` (the default before):
            :func:`~lit_robust.estimate_corruption_from_interior` -- the ``"disagreement"`` estimate below, except
            where the losses form one group (where it can subtract no training error): there the disagreement rate
            among each predicted class's most confidently predicted 40 % (half until 2026-12-08, the figures that
            follow), away from the class boundaries where a model's own errors sit (9 seeds: clean FashionMNIST 3.5 %
            instead of 12.9 %, 18 of 21 rows within 5
            points instead of 15; but class-pair flips of 40 % on MNIST and digits read 11-17 points low;
            ``benchmarks/results/corruption_rate_interior_9seeds.md``). It reads the predicted class's probability
            from the ``[B, C]`` outputs of ``per_sample_loss``; a module with its own ``sample_scores`` or
            ``predicted_labels`` gets the ``"disagreement"`` estimate (said once). ``"disagreement"`` (the default
            before): :func:`~lit_robust.estimate_corruption_from_predictions` -- the share of samples whose
            predicted label (:meth:`~lit_robust.RobustMixin.predicted_labels`) differs from the given one,
            corrected for the training error on the gmm's clean component; it sees class-pair (systematic) noise,
            which the loss mixture misses, but where the losses form one group it returns the training error (said
            once). Both cost one more scoring pass per estimate. A module without predicted or integer labels
            (regression, flows, GANs) gets the ``"gmm"`` estimate (logged at info level). ``"class_floor"``:
            :func:`~lit_robust.estimate_corruption_from_class_floor` on the same labels -- a low quantile of the
            per-class disagreement rates, which leaves out the training error of hard classes (clean FashionMNIST:
            about 2 % instead of 13 %) but reads about 0 when only some classes are corrupted: use it only if every
            class is corrupted at one rate. ``"gmm"`` or ``"bmm"``: the mixture
            :func:`~lit_robust.estimate_corruption` fits to the scores only.
        reestimate: ``keep_ratio="auto"`` only. ``False``: rounds are estimated until one finds a corrupted share
            (:math:`\hat\varepsilon > 0`); later rounds keep that estimate and skip the estimation. ``True``: every
            round uses its own scoring pass's estimate. ``None`` (default): ``True`` where the fit reads one
            regression target (:func:`~lit_robust.data.spec.reads_squared_errors`, as the gmm's squared-error
            restart does), ``False`` otherwise. Re-estimating, a round that reads 0 after an earlier round found a
            corrupted share keeps the latest positive estimate (the training set is the same; said once, at info
            level). On a regression, glitches of several sizes are found in layers: round
            0's model reads the largest only, and a model trained without them shows the next (an energy table with
            25 % of its readings glitched to 0, 9999 or +150 kWh: 8.3 % at round 1, then 21.7 / 26.9 % (seed 0),
            test RMSE 1.64 kWh against 13.07 when round 1's estimate was kept; ``benchmarks/newcomer_tables.py``,
            ``benchmarks/newcomer_regression.py`` and ``benchmarks/regression_restart.py`` have the figures). On
            classifiers (label noise on MNIST / FashionMNIST / digits, seeds 100-101, the gmm): a round that
            trained on a trimmed, mostly clean selection scores its clean losses spread over many decades on the
            log scale, and 20 of the 48 later-round estimates on noisy data read 0 while EM started from the halves
            of the scores only; 12 since it also starts from the top scores, none since a 0 keeps the latest positive
            estimate (2026-12-06). Both arms in one run (30 runs, ``benchmarks/results/corruption_rate_reestimate.md``):
            median error of the last round's estimate 1.76 (``True``) vs 1.68 points (``False``), runs within 5
            points 77 % for both, mean test accuracy 89.65 vs 89.59 % (2.86 points, 60 % and 89.09 % for ``True``
            before the starts); a spurious first estimate is kept too. With the default estimator
            (``benchmarks/results/corruption_rate_reestimate_disagreement_or_interior.md``, the same 30 runs): 2.28 (``True``)
            vs 1.88 points, runs within 5 points 93 vs 80 %, mean test accuracy 89.47 vs 89.75 %.
        per_class: trim each class alike: of the ``n_c`` samples whose *given* label is ``c``, keep the
            ``floor(alpha * n_c)`` with the smallest scores (:func:`~lit_robust.selection.rules.per_class_trim_mask`;
            with ``keep_ratio="auto"``, ``alpha`` is ``1 -`` the one global estimate). One trim over all samples can
            empty a rare or confusable class whose samples all score high (a newcomer's rare classes, half moved
            into frequent ones: 0 of their samples kept, test accuracy 0 on them; with ``per_class`` 0.40-0.46); but
            where a class's labels are mostly wrong (uniform flips into a rare class), it keeps mostly wrong labels
            of that class. Needs integer class labels (refused at setup for a datamodule that yields others).
            Each class's count is rounded down (a class of 1 sample at 0.8 keeps none), so many small classes
            keep well under ``alpha * n`` in all (200 classes of about 5 samples at 0.8: 718 of 1000); more
            than 2 % of ``n`` short is warned about at setup.
        auto_margin: :math:`m \in [0, 0.5)`, dropped on top of the estimate (``keep_ratio="auto"`` only).
            Default 0: keep exactly the estimated clean fraction, as ITLM with a known :math:`\varepsilon`
            would; a positive margin trades clean samples for a purer selection when the estimate may be low.
        auto_probe: :math:`p \in [0, 0.5)` (``keep_ratio="auto"`` only; default 0, off): where a round's estimate
            is 0 and no earlier round found a corrupted share, the next round, unless it is the last, trains on the
            :math:`\lfloor(1 - p - m)\,n\rfloor` lowest-scored samples as a probe; its estimate of 0 is recorded as
            such, and the last round keeps every sample unless a later estimate finds a corrupted share. For a
            regression whose round-0 model is pulled so far by large glitches (a target ×10) that the scores do not
            separate: on held-out set-ups (scikit-learn's make_regression with 20 features, a polynomial of 5
            features; 20 % of targets ×10 or ±3 SD, 30 % ×10 or sign-flipped; 3 seeds, rounds [10, 10, 10, 10])
            ``"auto"`` read 0 in every round of 8 of 9 runs, test R² −0.85 to 0.30, and ``auto_probe=0.2`` read
            19.1-28.1 % at the last round and scored 0.82-0.97; the 9 clean runs of those data kept reading 0.
            Its risk: the probe's model scores the samples it did not train on higher, and on one clean Diabetes
            seed (354 rows) of 18 clean development runs the estimate after the probe read 26.3 %. Measured, not
            yet the default (the corruption-rate page's record).
        report: write the per-sample report (:mod:`lit_robust.report`) at the end of training:
            ``<folder>/itlm_report.csv``, one row per training sample, most suspicious first, with the score
            each round's model gave it (``score_round_<r>``; the last round's from one extra scoring pass after
            training, which also gives the predicted labels of :meth:`~lit_robust.RobustMixin.predicted_labels`),
            whether the last round kept it, the round that first dropped it, its clean posterior
            (``estimator``'s on the last scores and predictions, summing to that estimate's count of corrupted
            samples: :mod:`lit_robust.report`), the given label and
            the ground truth when the batches carry it. Written once, by rank 0 (the scores are gathered there;
            one float per sample and round is kept, and checkpointed so that a resumed fit writes the same
            report). ``None`` (default): on when ``report_dir`` is given or under ``lit-robust fit``, else off;
            the path is :attr:`report_path`. A ``fit`` again on a Trainer that reached ``max_epochs`` trains
            nothing and writes none (:attr:`report_path` stays the earlier fit's); one resumed with ``ckpt_path``
            from a finished fit's checkpoint writes the same report again.
        report_dir: the report's folder (created if missing); default: the logger's folder
            (``trainer.log_dir``; the Trainer's ``default_root_dir`` without a logger). It is checked at setup,
            before training: a folder that cannot be written is a ``ValueError``.
        report_format: ``"csv"`` (default; ``pandas.read_csv`` opens it) or ``"parquet"`` (needs pyarrow).

    Examples:
        >>> itlm = ITLM(keep_ratio=0.65, round_epochs=[5, 5, 5, 5, 20])
        >>> itlm.num_rounds
        5
    """

    _title = "ITLM"  # names the round lines and table (a subclass with its own selection rule has its own name)
    _keeps_its_keep_ratio = True  # the selection's size is `keep_ratio`'s (not so for a subclass with its own rule)
    _report_name = "itlm_report"  # the per-sample report's file name, without the format's suffix

    def __init__(
        self,
        keep_ratio: float | Literal["auto"],
        round_epochs: Sequence[int],
        initial_round_on_all: bool = True,
        reinit: bool | Literal["restore"] = True,
        seed: int | None = None,
        shuffle: bool = True,
        monitor: str | None = None,
        verbose: bool = True,
        plot: bool = True,
        plot_dir: str | None = None,
        check_per_sample: bool = True,
        on_collapse: OnCollapse = "keep",
        estimator: Estimator = DEFAULT_ESTIMATOR,
        auto_margin: float = 0.0,
        auto_probe: float = 0.0,
        report: bool | None = None,
        report_dir: str | None = None,
        report_format: ReportFormat = "csv",
        reestimate: bool | None = None,
        per_class: bool = False,
    ) -> None:
        super().__init__()
        keep_ratio = check_keep_ratio(keep_ratio)
        auto = keep_ratio == "auto"
        if not isinstance(estimator, str) or estimator not in _ESTIMATORS:
            raise ValueError(f"`estimator` must be one of {list(_ESTIMATORS)}, got {estimator!r}.{cleanlab_hint(estimator)}")
        auto_margin, auto_probe = check_margin("auto_margin", auto_margin), check_margin("auto_probe", auto_probe)
        if not auto and auto_probe != 0.0:
            raise ValueError(f"`auto_probe` only applies with keep_ratio='auto', got auto_probe={auto_probe!r} with "
                             f"keep_ratio={keep_ratio!r}; remove it or set it to 0.")
        if reestimate is not None and not isinstance(reestimate, bool):
            raise TypeError(f"`reestimate` must be True, False or None (True on one regression target), got "
                            f"{reestimate!r}.")
        if not auto and (estimator != DEFAULT_ESTIMATOR or auto_margin != 0.0 or reestimate):
            given = [(k, v, d) for k, v, d in (("estimator", estimator, DEFAULT_ESTIMATOR),
                                               ("auto_margin", auto_margin, 0.0),
                                               ("reestimate", reestimate, None)) if v != d and v is not False]
            # as the filters say: a config switched from 'auto' to a number on the command line keeps them set
            raise ValueError(f"{only_auto_names(given)} only apply with keep_ratio='auto', got "
                             f"{', '.join(f'{k}={v!r}' for k, v, _ in given)} with keep_ratio={keep_ratio!r}; remove "
                             f"them or set their defaults ({', '.join(f'{k}={d!r}' for k, _, d in given)}).")
        if auto and initial_round_on_all is False:
            raise ValueError("`keep_ratio='auto'` needs `initial_round_on_all=True`: round 0's selection would come "
                             "from the untrained model's scores, which say nothing about the corrupted fraction.")
        round_epochs = _round_epochs_arg(round_epochs)
        if not isinstance(reinit, bool) and reinit != "restore":
            raise ValueError(f"`reinit` must be True, False or 'restore', got {reinit!r}.")
        for name, value in (("initial_round_on_all", initial_round_on_all), ("shuffle", shuffle), ("verbose", verbose),
                            ("plot", plot), ("check_per_sample", check_per_sample), ("per_class", per_class)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False, got {value!r}.")
        if on_collapse not in _ON_COLLAPSE:
            raise ValueError(f"`on_collapse` must be one of {list(_ON_COLLAPSE)}, got {on_collapse!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, Integral)):
            raise TypeError(f"`seed` must be an integer or None (the global seed), got {seed!r}.")
        if seed is not None and not 0 <= seed <= SEED_MAX:
            # 2**64 passed here and failed at fit start inside torch ("Overflow when unpacking long long")
            raise ValueError(f"`seed` must be in [0, {SEED_MAX}] (the range of Lightning's `seed_everything`) or "
                             f"None, got {seed!r}.")
        if monitor is not None and (not isinstance(monitor, str) or not monitor):
            raise TypeError(f"`monitor` must be a metric name (a non-empty string) or None, got {monitor!r}.")
        check_report_args(report, report_dir, report_format)
        if plot_dir is not None and not isinstance(plot_dir, (str, os.PathLike)):
            raise TypeError(f"`plot_dir` must be a folder path (str or os.PathLike) or None, got {plot_dir!r}.")
        self.keep_ratio: float | Literal["auto"] = keep_ratio
        if len(round_epochs) == 1 and initial_round_on_all:
            # a GAN newcomer's `round_epochs: [2]` ran "round 0/0" on every sample, no trim, no word
            rank_zero_warn(f"ITLM: `round_epochs`={round_epochs} is one round, and round 0 trains on every sample: no "
                           "selection is ever used (plain training). Give two rounds or more, e.g. "
                           f"round_epochs=[{round_epochs[0]}, {round_epochs[0]}].")
        if not auto and keep_ratio < 0.5:
            # a newcomer passed keep_ratio=0.3 meaning "drop 30 %": 2 of 5 classes left, 39 % test accuracy, no word
            rank_zero_warn(f"ITLM: `keep_ratio`={keep_ratio!r} keeps {keep_ratio:.0%} of the training samples each "
                           f"round and drops {1 - keep_ratio:.0%}: it is the share kept (to drop {keep_ratio:.0%}, "
                           f"pass keep_ratio={1 - keep_ratio:.4g}). ITLM assumes the clean samples are a majority.")
        self.estimator = estimator
        self.auto_margin = auto_margin
        self.auto_probe = auto_probe
        self.reestimate = reestimate
        self.per_class = per_class
        self.round_epochs = [int(e) for e in round_epochs]
        self.initial_round_on_all = initial_round_on_all
        self.reinit = reinit
        self.seed = None if seed is None else int(seed)
        self.fit_seed = 0 if seed is None else int(seed)  # the seed of the current fit (`seed`, or the global one)
        self.shuffle = shuffle
        self.monitor = monitor
        self.verbose = verbose
        self.plot = plot
        self.plot_dir = plot_dir
        self.plot_path: str | None = None
        self.check_per_sample = check_per_sample
        self.on_collapse = on_collapse
        self.report = report
        self.report_dir = report_dir
        self.report_format = report_format
        self.report_path: str | None = None  # the report written by the last fit
        # (class, times predicted, samples) when the last fit's final model predicts one class for nearly every
        # training sample (read off its report, on the rank that writes it); `lit-robust fit` then exits 1
        self.final_one_class: tuple[int, int, int] | None = None
        # (median residual, median absolute deviation of the targets) when the last fit's final model of one
        # regression target did not learn (`regression_did_not_learn`, read off its report); `lit-robust fit` exits 1
        self.final_diverged: tuple[float, float] | None = None
        self._checked_per_sample = False  # the check runs once per fit (an extra forward of a few samples)
        self._said: set[str] = set()  # the info lines said in this fit (`_say_once`)
        self._scoring_source: str | None = None  # where the scoring pass reads, when the user defines it
        self._low_classes: dict[int, int] = {}  # class -> samples kept when last warned about (`_note_emptied_classes`)
        self._reset_fit_state()
        # fit-time helpers (not state)
        self._report_target: str | None = None  # where this fit's report goes; None: no report
        self._train_ended = False  # `on_train_end` ran in this fit (Lightning skips it for a finished fit resumed)
        self._plot_folder: str | None = None  # where this fit's score plot goes (resolved at setup, on every rank)
        self._patch: TrainLoaderPatch | None = None
        self._sampler: SelectionSampler | None = None
        self._skipped_epoch_end: int | None = None  # see `_close_skipped_epoch`
        self._loader_generator: torch.Generator | None = None
        self._local_sum: Tensor | float = 0.0  # this rank's part since the last addition over the ranks
        self._local_count = 0
        # ... and of `log_scale` of the per-sample losses the module gave `reduce_loss` (see `collapse_reasons`)
        self._local_log_sum: Tensor | float = 0.0
        self._local_log_count = 0
        self._trained_this_fit = False  # a batch was trained in this process's fit (not only restored state)

    def _reset_fit_state(self) -> None:
        """The running state, all of it checkpointed: fresh at every fit's setup (a resumed fit then restores it
        from the checkpoint), so that one instance serves fit after fit as a new one would."""
        self._round = 0
        self._selection: Tensor | None = None  # kept indices of the current round; None = all
        self._selection_made = False  # a selection exists for `_round`
        self._reinit_pending = False
        self._reconfigure_pending = False  # round 0 selected after the optimizers were configured
        self._round_end_step: int | None = None  # `trainer.global_step` when the last round ended
        self._n: int | None = None
        # `reinit="restore"`: the module's state dict when the fit started (CPU copies), put back at each round start
        self._start_weights: dict[str, Tensor] | None = None
        self._current: RoundRecord | None = None
        self.history: list[RoundRecord] = []
        # the current epoch's training loss: sum and count of what `training_step` returned, already added over
        # the ranks (at each validation end and at epoch end, so that a checkpoint written at validation end
        # holds the whole epoch)
        self._loss_sum = 0.0
        self._loss_count = 0
        self._log_sum = 0.0  # the same of `log_scale` of the per-sample losses
        self._log_count = 0
        self._val_epoch: int | None = None  # epoch of the last validation whose metrics `_current` holds
        # (epoch, batches trained, batches of an epoch) of the last epoch when a stop cut it short, else None
        self._short_epoch: tuple[int, int, int] | None = None
        self._planned_batches: int | None = None  # a later round's batches an epoch (numeric keep_ratio), per fit
        # per_class without labels to count by: `_planned_batches` is an upper bound (each class floors its own share)
        self._planned_is_bound = False
        # per scoring pass: round, dense scores, corrupted flags (CPU). Filled only when `plot=True`, because
        # under DDP it needs every score gathered on every rank (O(n) traffic); `history` is always filled.
        self.score_history: list[dict[str, Any]] = []
        # the final model's scores from the report's scoring pass (rank 0; not checkpointed: the pass runs again at
        # the end of a resumed fit): the plot's last panel, so it shows the scores the report ranks by
        self._final_scores: dict[str, Any] | None = None
        # the report's scores and drops (only on the rank that writes it, rank 0; see `report`)
        self._report_state: RoundScores | None = None

    # -- public helpers ------------------------------------------------------------------------
    @property
    def num_rounds(self) -> int:
        return len(self.round_epochs)

    @property
    def _round_starts(self) -> list[int]:
        """The first epoch of each round, and the fit's length last: read off `round_epochs` as it is now (a notebook
        user's `itlm.round_epochs = [3, 3, 3, 6]` on a reused instance trained on the old 5-epoch boundaries)."""
        starts = [0]
        for e in self.round_epochs:
            starts.append(starts[-1] + e)
        return starts

    @property
    def state_key(self) -> str:
        if self.per_class:  # a selection of another kind: a resumed fit must have it too
            return self._generate_state_key(keep_ratio=self.keep_ratio, round_epochs=self.round_epochs, per_class=True)
        return self._generate_state_key(keep_ratio=self.keep_ratio, round_epochs=self.round_epochs)

    def resume_arguments(self) -> dict[str, Any]:
        """The arguments outside :attr:`state_key` that change what a fit does; a checkpoint holds them and a resumed
        fit must have the same (checked at restore). Output-only ones (``verbose``, ``plot``, ``report``, ...) may
        change."""
        return {"initial_round_on_all": self.initial_round_on_all, "reinit": self.reinit, "seed": self.fit_seed,
                "shuffle": self.shuffle, "estimator": self.estimator, "auto_margin": self.auto_margin,
                "auto_probe": self.auto_probe, "reestimate": self.reestimate, "on_collapse": self.on_collapse}

    @property
    def current_round(self) -> int:
        """The round being trained (0-based); read it in ``configure_optimizers`` to size a schedule per round
        (``round_epochs[current_round]`` epochs), since ``reinit=True`` re-creates the optimizers at each round start."""
        return self._round

    def steps_in_round(self, trainer: pl.Trainer) -> int:
        """The optimizer steps this process takes in the current round: its epochs times ⌈batches per epoch /
        ``accumulate_grad_batches``⌉ (each epoch's, under a ``GradientAccumulationScheduler``), the batches of the
        round's selection as split among the processes, with
        ``limit_train_batches`` applied (Lightning's ``trainer.num_training_batches``). Call it in
        ``configure_optimizers`` to size a per-step schedule (OneCycleLR's ``total_steps``): with ``reinit=True``
        ITLM calls ``configure_optimizers`` again at every round start (with ``initial_round_on_all=False`` also once
        round 0's selection is made, before its first step). A power user's README formula,
        ``ceil(len(itlm.selection) / batch_size)``, left out accumulation and the processes and sized a OneCycle for 76
        steps in rounds of 40. With ``reinit=False`` the optimizers are configured once for the whole fit: an error
        (torch's OneCycleLR raised at the first step past round 0).

        The count is each optimizer's (the round's stepping batches, as Lightning's ``estimated_stepping_batches``),
        what a schedule of one optimizer steps through. A manually optimised module with several optimizers, each
        stepping once a batch (DCGAN's generator and discriminator), advances ``trainer.global_step``, and so uses up
        ``max_steps``, by that many times as much: two optimizers over a round of 10 such batches take 10 steps each,
        20 by ``global_step``."""
        if not self.reinit:
            raise ValueError("`steps_in_round`: with `reinit=False` ITLM configures the optimizers once, so a schedule "
                             "sized for one round ends after round 0; size it for the whole fit or keep `reinit=True`. "
                             "The whole fit is round 0's steps on every sample, then the later rounds' on their "
                             "selections: `self.trainer.estimated_stepping_batches` counts every sample in every "
                             "epoch, so a schedule sized to it stops before its end (ITLM says so at the fit's end).")
        trainer.estimated_stepping_batches  # noqa: B018 - Lightning builds the training loader here when it has not
        steps = _optimizer_steps_in_epochs(trainer, self._round_starts[self._round], self.round_epochs[self._round])
        if steps is None:
            raise ValueError("`steps_in_round`: the training loader has no length, so a round's steps cannot be told.")
        return steps

    @property
    def selection(self) -> Tensor | None:
        """Sorted dataset indices the current round trains on (``None`` = all samples)."""
        return self._selection

    def round_of_epoch(self, epoch: int) -> int:
        for r in range(self.num_rounds):
            if epoch < self._round_starts[r + 1]:
                return r
        return self.num_rounds - 1

    def record_of_epoch(self, epoch: int) -> RoundRecord | None:
        """The record of the round that trains in ``epoch`` (its selection, and once the round has ended its
        losses and metrics): from :attr:`history` once the round has ended, else the running round's; ``None``
        when neither holds it (e.g. before the fit). The same answer before and after this callback's own
        ``on_train_epoch_end``, so other callbacks may read it in theirs whatever their order."""
        round_ = self.round_of_epoch(epoch)
        for rec in reversed(self.history):
            if rec.round == round_:
                return rec
        if self._current is not None and self._current.round == round_:
            return self._current
        return None

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_no_training(trainer, type(self).__name__)
        sigterm_without_collectives(trainer)  # Lightning's handler hangs a DDP fit: see the function
        # the report of this fit, once written: a notebook user's re-run cell crashed, and `report_path` still led
        # `load_report` to the run before's file
        earlier_path, self.report_path = self.report_path, None
        # put back by `on_exception` when this fit is refused before it trains (a notebook newcomer's `max_epochs`
        # raised to 8 was refused, and the earlier, intact report's path was lost: `load_report` failed next)
        self._report_before, self._trained_this_fit = earlier_path, False
        self.final_one_class = None
        self.final_diverged = None
        self.keep_ratio = check_keep_ratio(self.keep_ratio)  # it may have been set since the constructor
        others = [type(cb).__name__ for cb in trainer.callbacks if isinstance(cb, ITLM) and cb is not self]
        if others:
            # each replaces the training loader's sampler with its own selection: an auditor's two ITLMs (0.7 and
            # 0.5) both ran and printed a round table each, neither saying which selection was trained on
            raise ValueError(f"{self._title}: the Trainer has another callback that selects the training samples by "
                             f"rounds ({', '.join(others)}); each would replace the training loader's sampler with "
                             "its own selection. Give the Trainer one of them (to compare settings, run one fit "
                             "each).")
        module = require_mixin(self._title, pl_module)
        self._report_deferred = _report_after_weight_averaging(trainer, self)
        if self.reinit is True and self.num_rounds > 1:
            try:
                check_reinitializable(module)
            except TypeError as err:
                raise TypeError(f"{self._title} re-draws the model at each round start (reinit=True): {err}") from None
        self.round_epochs = _round_epochs_arg(self.round_epochs)  # as set now: an attribute changed since is checked
        # attributes set between fits, checked as the constructor checks them (a notebook newcomer's
        # `itlm.reinit = "restor"` ran as True, `itlm.per_class = "yes"` as a per-class trim)
        if not isinstance(self.reinit, bool) and self.reinit != "restore":
            raise ValueError(f"`reinit` must be True, False or 'restore', got {self.reinit!r}.")
        if not isinstance(self.per_class, bool):
            raise TypeError(f"`per_class` must be True or False, got {self.per_class!r}.")
        fresh = begin_fit(self, trainer, self._title, earlier_path)
        # `seed` as given (`fit_seed`, read off the global seed below, is the earlier fit's value until then)
        settings = {"keep_ratio": self.keep_ratio, "per_class": self.per_class,
                    **{k: v for k, v in self.resume_arguments().items() if k != "seed"}, "seed": self.seed}
        before_settings = getattr(self, "_fit_settings", settings)
        changed = [f"`{k}` {before_settings[k]!r} -> {v!r}" for k, v in settings.items()
                   if k in before_settings and before_settings[k] != v]
        if not fresh and changed:
            # docs/checkpoints.md said so; a notebook newcomer's `itlm.auto_margin = 0.2` between two fits of one
            # Trainer applied to the rounds left alone (kept 1500, 1023, 723: two settings in one history), and after
            # a finished fit `itlm.keep_ratio = 0.8` changed nothing while the attribute read 0.8
            raise ValueError(f"{', '.join(changed)} since this Trainer's earlier fit, which this fit goes on from: its "
                             "rounds keep the earlier settings. Set them back, or use a new Trainer for a fit with the "
                             "new ones.")
        self._fit_settings = settings
        before = getattr(self, "_fit_round_epochs", self.round_epochs)
        if not fresh and (len(before) != len(self.round_epochs) or before[:-1] != self.round_epochs[:-1]):
            # a reviewer's [2, 2] stopped after epoch 0, then [1, 3]: a history of 5 epochs in a 4-epoch fit. A
            # longer last round is fine ("train more epochs"; ActivationClustering's follows `max_epochs`)
            raise ValueError(f"`round_epochs` changed from {before} to {self.round_epochs} since this Trainer's "
                             "earlier fit, which this fit goes on from: its rounds are the earlier ones (only the last "
                             "may grow). Set them back, or use a new Trainer for a fit with the new rounds.")
        self._fit_round_epochs = list(self.round_epochs)
        if not fresh and self._current is not None and self._current.round == self.num_rounds - 1:
            self._current.epochs = self.round_epochs[-1]
        if fresh:
            module.model_start_epoch = None  # an earlier fit's announcement does not count
        warn_if_mixed_lightning(trainer)
        spec = datamodule_spec(trainer)
        if self.per_class and spec is not None and spec.target != "class":
            # before round 0 trains (a newcomer's regression was refused only at round 1)
            raise ValueError(f"`per_class=True` trims each class by its given label, but {spec.source} yields "
                             f"{spec.target} targets, not class labels; use per_class=False.")
        if fresh:  # an earlier fit's rounds do not carry over (a resumed fit restores its own); the same Trainer's go on
            self._reset_fit_state()
        elif self._foreign_state is None:  # from the start of the epoch a stopped fit did not finish: its loss goes
            self._loss_sum, self._loss_count = 0.0, 0
            self._log_sum, self._log_count = 0.0, 0
        self._checked_per_sample = False
        self._trained_this_fit = False
        self._said = set()
        attack_target = getattr(getattr(trainer, "datamodule", None), "attack_target", None)
        if self.per_class and isinstance(attack_target, int) and not isinstance(attack_target, bool):
            # backdoor.md said so, the fit did not (a backdoor newcomer's): every poisoned sample carries the target's
            # label, and a per-class trim drops only its share of that one class
            self._say_once("per_class single target", (
                f"{self._title}: `per_class=True` with a single-target backdoor ({type(trainer.datamodule).__name__}'s "
                f"attack_target={attack_target}): every poisoned sample carries that class's label, and a per-class trim "
                "drops only its share of that class (in the benchmark attack success rose from 0.2-9.6 % to 9.2-92.1 %). "
                "Use per_class=False against single-target attacks."), warn=True)
        self._low_classes = {}
        self._local_sum, self._local_count = 0.0, 0
        self._local_log_sum, self._local_log_count = 0.0, 0
        total = sum(self.round_epochs)
        if trainer.fast_dev_run:
            # it sets max_epochs to 1 over the user's (a power user was told to set the max_epochs they had set)
            raise ValueError(f"`fast_dev_run` runs one epoch, but {self._title}'s rounds need sum({self.round_epochs}) = "
                             f"{total} epochs. For a quick check keep `max_epochs={total}` and use `limit_train_batches=1` "
                             "(and `limit_val_batches=1`) instead: it runs every round and scoring pass, but one batch "
                             "an epoch learns too little to select, so rounds may be warned about as collapsed (each "
                             "then keeps the selection before it).")
        if trainer.overfit_batches:
            # Lightning then trains on the first batches of an unshuffled loader instead of ITLM's selection
            raise ValueError("`overfit_batches` makes Lightning train on the first batches of the data set, not on "
                             f"{self._title}'s selection (got overfit_batches={trainer.overfit_batches}): the rounds would "
                             "not train on what they select. Use `limit_train_batches` to shorten the epochs.")
        if trainer.max_epochs != total:
            # `max_steps` alone leaves max_epochs at -1 (a newcomer read "max_epochs = -1" as a bug)
            got = (f"the Trainer has none (max_epochs={trainer.max_epochs}: it runs to `max_steps`, "
                   "which may stop a round halfway)" if trainer.max_epochs in (None, -1)
                   else f"max_epochs = {trainer.max_epochs}")
            raise ValueError(
                f"`round_epochs` must add up to the Trainer's `max_epochs`: sum({self.round_epochs}) = {total}, "
                f"but {got}. Set the Trainer's `max_epochs` to {total} (`--trainer.max_epochs {total}` on a `lit-robust` "
                "or LightningCLI command line) or change `round_epochs`."
            )
        # a multi-seed study's `seed_everything(s)` reaches the shuffling and the re-draws (a researcher's three
        # seeds all re-initialised with seed 0 + round, silently)
        self.fit_seed = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))
        self._sampler = SelectionSampler(0, shuffle=self.shuffle, seed=self.fit_seed,
                                         num_replicas=trainer.world_size, rank=trainer.global_rank)
        # on every rank: under DDP `trainer.log_dir` is a collective, which the rank-0 plot at fit end cannot call
        # `plot_dir` checked here, as `report_dir` is: a file of that name failed the fit at its end, after training
        self._plot_folder = (None if not self.plot else checked_folder(trainer, self.plot_dir, "plot_dir")
                             if self.plot_dir is not None else trainer.log_dir if trainer.logger is not None else None)
        self._report_target = None
        self._train_ended = False
        if report_enabled(self.report, self.report_dir):
            self._report_target = resolve_report_path(trainer, self.report_dir,
                                                      f"{self._report_name}.{self.report_format}")
        # each training iterator draws its workers' base seed from this, not from torch's global generator: Lightning
        # creates the iterator twice in an epoch whose loader was reloaded (a round start) and once in a resumed fit's
        # first epoch, and the dropout etc. that follow must draw what an uninterrupted fit draws (see random_state);
        # the sampler re-seeds it every epoch, so the workers' seeds are the same either way
        self._loader_generator = torch.Generator().manual_seed(self.fit_seed)
        self._sampler.worker_generator = self._loader_generator
        self._patch = TrainLoaderPatch(trainer, lambda original: self._make_train_loader(original, trainer))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._undo_patch()

    def _undo_patch(self) -> None:
        """Give the user's datamodule (or module) its own ``train_dataloader`` back."""
        if self._patch is not None:
            self._patch.undo()
            self._patch = None

    def _make_train_loader(self, original: Any, trainer: pl.Trainer) -> DataLoader:
        loader = resolve_loader(original)
        _check_indexed(loader.dataset, type(self).__name__)  # ActivationClustering runs on this machinery too
        _check_plain_sampler(loader, type(self).__name__)
        if self.shuffle and draws_in_order(loader) and "in order" not in self._said:
            # a Lightning user's `shuffle=False` loader trained bit for bit as a shuffled one, without a word
            self._said.add("in order")
            rank_zero_warn(f"{type(self).__name__}: the training loader is built with `shuffle=False`, and "
                           f"{type(self).__name__} shuffles each round's samples anyway: it draws them through a "
                           "sampler of its own, and its `shuffle` (True by default) decides. Pass "
                           f"`{type(self).__name__}(shuffle=False)` to train on them in order.")
        if trainer.world_size > 1 and not getattr(trainer._accelerator_connector, "use_distributed_sampler", True):
            # a DDP user's `use_distributed_sampler=False` went without a word, and each process trained on its share
            # all the same
            self._say_once("own sampler", f"{type(self).__name__}: `use_distributed_sampler=False` does not reach "
                           f"the training loader: {type(self).__name__} draws each round's samples through a sampler "
                           f"of its own, which gives each of the {trainer.world_size} processes its share of the "
                           "round's selection (the validation and test loaders keep the setting).")
        check_collate(loader, type(self).__name__)
        n = len(loader.dataset)
        if writes_no_report(self) or (self._foreign_state is not None and not self._restored):
            # a fit that trains nothing (a reviewer's no-op fit of a finished Trainer crashed on another Trainer's
            # training-set size), or one about to be refused at train start: the loader as it is
            return loader
        if self._n is not None and n != self._n:
            # a notebook user's new data on a finished Trainer read "changed size between rounds"
            raise ValueError(f"the training set changed size ({self._n} -> {n}) since the rounds began: ITLM selects "
                             "by dataset index, so each round, and each fit a Trainer goes on with, needs the same "
                             "samples. For another data set use a new Trainer.")
        if n == 0:
            raise ValueError("ITLM needs a non-empty training set: the training dataloader's dataset has 0 samples.")
        if self.keep_ratio != "auto" and keep_count(n, self.keep_ratio) == 0:
            raise ValueError(
                f"`keep_ratio` must keep at least one of the {n} training samples: floor({self.keep_ratio} * {n}) = 0. "
                f"Use `keep_ratio` >= 1/{n} = {1 / n:.4g}, got {self.keep_ratio!r}."
            )
        targets = dataset_targets(loader.dataset)
        if self.per_class and isinstance(targets, Tensor) and targets.ndim == 1 and targets.is_floating_point():
            # before round 0 trains (the scoring pass at its end found them a whole round later)
            raise ValueError(f"the training set's targets are {targets.dtype}: {_PER_CLASS_NEEDS_LABELS}")
        if (self.per_class and self.keep_ratio != "auto" and isinstance(targets, Tensor) and targets.ndim == 1
                and targets.numel() == n and not targets.is_floating_point() and n and int(targets.min()) >= 0):
            counts = torch.bincount(targets.long().cpu())
            if not any(keep_count(int(c), self.keep_ratio) for c in counts):  # before round 0 trains, not after it
                raise ValueError(_per_class_keeps_none(self.keep_ratio, n, counts))
            # each class's floor rounds down, up to one sample per class: 200 classes of ~5 samples at 0.8 kept
            # 718 of 1000 without a word (the rule stays: the committed tables were measured with it)
            kept = sum(keep_count(int(c), self.keep_ratio) for c in counts)
            if keep_count(n, self.keep_ratio) - kept > _PER_CLASS_SHORT * n:
                self._say_once("per_class short", _per_class_keeps_fewer(self.keep_ratio, n, kept, counts), warn=True)
        self._n = n
        assert self._sampler is not None
        self._sampler.n = n
        self._sampler.set_selection(self._selection)
        size = n if self._selection is None else int(self._selection.numel())
        self._note_padding(size)
        self._train_loader = loader
        drop_last = None
        full = -(-n // self._sampler.num_replicas)  # each process's share of every sample
        if loader.drop_last and 0 < len(self._sampler) < loader.batch_size <= full:
            # a round of fewer samples than one batch trained no batch, Lightning ended the fit after round 0 and the
            # user got plain training with a note blaming "the training loader" (a reviewer's 168 kept of batch 200).
            # Not where the loader itself yields no batch: that is the user's to fix, and said at fit end
            drop_last = False
            self._say_once(f"drop_last {self._round}", (
                f"ITLM round {self._round}: its {size} training samples"
                + (f" ({len(self._sampler)} per process)" if self._sampler.num_replicas > 1 else "")
                + f" are fewer than one batch (`batch_size` {loader.batch_size}), and the training loader has "
                "`drop_last=True`: this round keeps its one smaller batch (`drop_last=False`) rather than train "
                "nothing."), warn=True)
        self._sampler.batch_size = loader.batch_size or 1
        out = with_sampler(loader, self._sampler, drop_last=drop_last, generator=self._loader_generator)
        # `limit_train_batches` and an integer `val_check_interval` against the smallest round planned, before round 0
        # trains (Lightning checks each loader it loads, so a smaller round failed only after round 0 had trained);
        # and against each round's own loader, before Lightning does (a round of "auto", or ActivationClustering's)
        planned = self._smallest_planned_round(n, targets)
        self._planned_batches = None
        self._planned_is_bound = self.per_class and not _class_labels(targets, n)
        if planned is not None:
            batches = round_batches(planned, n, self._sampler.num_replicas, loader.batch_size, loader.drop_last)
            # a later round's batches an epoch, for the `max_steps` check (see `_check_early_stops`)
            self._planned_batches = limited_batches(trainer, batches)
            check_epoch_batches(trainer, batches, f"{self._title}'s smallest planned round ({planned} of the {n} "
                                f"samples kept, keep_ratio={self.keep_ratio})")
        smallest = self._smallest_auto_round(n, targets) if self._round == 0 else None
        if smallest is not None:
            # "auto" sizes a round at its start; one at the estimate's cap that misfits failed mid-fit, after rounds of
            # training. A warning, not an error: a smaller estimate leaves rounds that fit
            batches = round_batches(smallest, n, self._sampler.num_replicas, loader.batch_size, loader.drop_last)
            try:
                check_epoch_batches(trainer, batches, f"a round at the estimate's cap ({smallest} of the {n} samples "
                                    f"kept, an estimate >= {AUTO_RATE_CAP}, auto_margin={self.auto_margin})")
            except ValueError as err:
                self._say_once("auto smallest round", (
                    f"{self._title}: with keep_ratio='auto' a later round may be too small for this Trainer, and the "
                    f"fit would then stop with an error at that round's start, after the rounds before it trained: "
                    f"{err}"), warn=True)
        check_epoch_batches(trainer, len(out), f"{self._title} round {self._round} ({size} of the {n} samples kept)")
        return out

    def _smallest_auto_round(self, n: int, targets: Any) -> int | None:
        """With ``keep_ratio="auto"``, the fewest samples a round can keep: at the estimate's cap
        (:func:`auto_keep_count` of an estimate >= 0.5, ``auto_margin`` dropped on top); ``None`` otherwise, and where
        every round trains on all samples."""
        if self.keep_ratio != "auto" or (self.num_rounds < 2 and self.initial_round_on_all) or n < 1:
            return None
        k = auto_keep_count(n, AUTO_RATE_CAP, self.auto_margin)[0]
        if self.per_class and _class_labels(targets, n):
            # the selection keeps floor(k / n * n_c) of each class (keep_ratio = k / n, as `_select` passes it)
            return max(1, sum(keep_count(int(c), k / n) for c in torch.bincount(targets.long().cpu())))
        return k

    def _smallest_planned_round(self, n: int, targets: Any) -> int | None:
        """The fewest samples a round keeps, where the arguments fix it: a numeric ``keep_ratio`` with a round that
        trains on a selection; ``None`` with ``"auto"`` (an estimate of each scoring pass), and where every round
        trains on all samples."""
        if self.keep_ratio == "auto" or (self.num_rounds < 2 and self.initial_round_on_all):
            return None
        if self.per_class and _class_labels(targets, n):
            # each class keeps floor(alpha * n_c): together no more, often fewer, than floor(alpha * n)
            return sum(keep_count(int(c), self.keep_ratio) for c in torch.bincount(targets.long().cpu()))
        return keep_count(n, self.keep_ratio)

    # -- round logic -----------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_state_owner(self)
        self._started_mid_fit = started_without_its_state(
            self, trainer, self._title, "its round records, selection, estimate and report hold none of the epochs "
            "before (its rounds still run by the fit's epochs)")
        self._check_same_on_every_rank()
        warn_earlier_report(trainer, self._report_target, self._title)
        warn_inexact_resume(trainer, self._title, mid_epoch=False)
        if self._skipped_epoch_end is None:
            self._warn_mid_epoch_workers(trainer)
        else:
            closed = self._skipped_epoch_end
            self._close_skipped_epoch(trainer, pl_module)
            # ... and the next epoch's start (measured: without it a new round's re-initialisation waited for the epoch
            # after, and a checkpoint written inside that epoch read as one of an epoch not begun)
            start_epoch_after_skipped_end(trainer, lambda: self.on_train_epoch_start(trainer, pl_module))
            rank_zero_warn(skipped_epoch_end_note(self._title, closed, "its rounds", trainer))
        self._check_swa(trainer)
        self._check_scoring_set(trainer, pl_module)
        self._check_fine_tuning(trainer, pl_module)
        self._check_monitored_checkpoints(trainer)
        self._check_early_stops(trainer)
        self._check_batch_filters(trainer)
        epoch_round = self.round_of_epoch(trainer.current_epoch)
        if self._current is None:
            n = self._n or 0
            self._current = RoundRecord(round=self._round, epochs=self.round_epochs[self._round], kept=n, n=n)
            corrupted = getattr(getattr(self, "_train_loader", None), "dataset", None)
            corrupted = getattr(corrupted, "corrupted", None)
            if corrupted is not None and n:
                self._current.clean_precision = 1.0 - float(corrupted.float().mean())
                # the share of the corrupted samples round 0 drops: none of none is no share (a newcomer's clean
                # FashionMNIST read 0.00 % in round 0 and "—" in the later rounds), as the later rounds have it
                self._current.corrupted_recall = 0.0 if bool(corrupted.any()) else None
                self._current.dropped_corrupted = 0
        if epoch_round == 0 and not self.initial_round_on_all and not self._selection_made:
            # Algorithm 1 without the optional initialisation: select with the untrained model
            self._select(trainer, pl_module, round_=0)
            self._patch.request_reload()
            # the optimizers were configured before this selection: again once its loader is in place, so that a
            # schedule sized by `steps_in_round` counts round 0's selection (a release checker's OneCycle: 64
            # planned, 44 trained). No step was taken yet: the optimizer and schedule start as they would have.
            self._reconfigure_pending = True
        elif epoch_round != self._round:
            # resumed from a checkpoint written after round `self._round` ended but before its end-of-round work
            # (Lightning 2.x reruns `on_train_epoch_end` of such an epoch instead; kept for other versions)
            self._end_round(trainer, pl_module, log=False)  # `self.log` is not allowed in `on_train_start`

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.reinit == "restore" and self._start_weights is None:
            self._start_weights = self._snapshot(pl_module)
        if self._reconfigure_pending:
            self._reconfigure_pending = False
            trainer.strategy.setup_optimizers(trainer)
        if self._reinit_pending:
            self._reinitialize(trainer, pl_module)
            self._reinit_pending = False
        if self.reinit and trainer.current_epoch == self._round_starts[self._round]:
            self._check_scheduler_length(trainer)
            if self._round == self.num_rounds - 1 and self.num_rounds > 1:
                # the steps before the last round, known now: an average begun in a middle round (a reviewer's
                # `update_starting_at_step` in round 1 of 3) was missed by the train-start check of round 0's steps
                self._check_weight_averaging(trainer, self._round_starts[-2], steps=trainer.global_step)

    def _warn_mid_epoch_workers(self, trainer: pl.Trainer) -> None:
        """A fit resumed inside an epoch takes up that epoch's order where the checkpoint stopped (``skip_batches``),
        so it is the uninterrupted fit, except for random draws inside the loader's worker processes (augmentation):
        they start that epoch afresh, at the samples left."""
        loop = getattr(trainer, "fit_loop", None)
        workers = getattr(getattr(self, "_train_loader", None), "num_workers", 0)
        if not getattr(loop, "restarted_mid_epoch", False) or not workers:
            return
        done = loop.epoch_loop.batch_progress.current.processed
        rank_zero_warn(f"{self._title}: this fit resumes from a checkpoint written inside epoch "
                       f"{trainer.current_epoch} (after {done} of its batches). ITLM takes that "
                       f"epoch's order up where it stopped, but the loader's {workers} worker processes start afresh: "
                       "random draws inside them (augmentation) differ from the uninterrupted fit's for the rest of "
                       "that epoch. With no randomness in the dataset the fit is the uninterrupted one.")

    def _snapshot(self, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        """``reinit="restore"``'s copy of the module's state dict (CPU), taken at the fit's first epoch start: after
        the strategy's set-up (DDP has broadcast rank 0's weights) and after the module's own ``on_train_start`` (a
        ``LinearProbe`` computes its feature statistics there: a copy taken before it put back zeros and ones at
        every round start), before any step. A resumed fit has the checkpoint's copy instead."""
        state = pl_module.state_dict()
        lazy = [k for k, v in state.items() if isinstance(v, torch.nn.parameter.UninitializedTensorMixin)]
        if lazy:
            raise ValueError(f"{self._title}(reinit='restore') copies the weights the fit starts with, but "
                             f"{', '.join(lazy[:3])}{' ...' if len(lazy) > 3 else ''} are not initialised yet (lazy "
                             "layers): run one forward on an example batch before `fit`, or use `reinit=True`.")
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

    @property
    def _restarts(self) -> str:
        """How a round start treats the model, for the messages: ``"re-draws"`` or ``"restores"``."""
        return "restores" if self.reinit == "restore" else "re-draws"

    @property
    def _restarted(self) -> str:
        """The model a round starts from, for the messages: ``"fresh"`` or ``"restored"``."""
        return "restored" if self.reinit == "restore" else "fresh"

    def _check_swa(self, trainer: pl.Trainer) -> None:
        """Warn when ``StochasticWeightAveraging`` starts before the last round while ITLM re-draws the model at each
        round start: SWA then averages networks of different rounds into the final model, and the optimizer each
        round re-creates drops its SWALR schedule (a newcomer's early SWA: 0.849 test accuracy, against 0.894 with
        SWA inside the last round and 0.891 without SWA)."""
        if not self.reinit or self.num_rounds < 2:
            return
        last_round = self._round_starts[-2]  # the first epoch of the last round
        for cb in trainer.callbacks:
            start = swa_start_epoch(cb, trainer.max_epochs)
            if start is None or start >= last_round:
                continue
            rank_zero_warn(
                # one numbering in one sentence: the advice counts from 1, as `swa_epoch_start` does (a newcomer read
                # "at epoch 1" for `swa_epoch_start=2`)
                f"ITLM: `StochasticWeightAveraging` starts averaging at epoch {start + 1} (counted from 1), in round "
                f"{self.round_of_epoch(start)}, but ITLM {self._restarts} the model and re-creates the optimizer and "
                f"scheduler at each round start (`reinit={self.reinit!r}`): SWA would average the networks of "
                "different rounds into the final model, and its SWALR schedule is dropped. Start it in the last round "
                f"(`swa_epoch_start={last_round + 1}` or "
                "later: the epoch number, counted from 1), or pass `ITLM(reinit=False)`.")
            return
        self._check_weight_averaging(trainer, last_round)

    def _check_scoring_set(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Refuse, before round 0 trains, a ``scoring_dataloader()`` whose items' integer labels are not those of the
        training set's samples of the same index (:func:`~lit_robust.data.indexed.label_mismatch`, up to 256
        items). ITLM only checked that every sample was scored: a data-pipeline newcomer's scoring copy built
        without the noisy ``targets=`` read 4.1 % for 28.9 % (its top rows at chance), and one in another order
        reported 96.2 % clean precision for a selection 70.6 % clean, without a word."""
        owner = _scoring_dataloader_owner(trainer, pl_module)
        train = getattr(getattr(self, "_train_loader", None), "dataset", None)
        if owner is None or train is None:
            return
        scored = getattr(owner.scoring_dataloader(), "dataset", None)
        found = None if scored is None else label_mismatch(train, scored)
        if found is None:
            return
        at, compared, differing, (ti, tl), (si, sl) = found
        where = "datamodule" if owner is trainer.datamodule else "module"
        raise ValueError(
            f"{self._title}: `scoring_dataloader()` of your {where} does not read the training set's samples: its item "
            f"{at} has index {si} and label {sl}, but the training set's sample {ti} has label {tl} ({differing} of "
            f"{compared} items compared differ). {self._title} trims by the scoring pass, so it must give every "
            "training sample under the training set's index, with the label the model trains on (the noisy one: the "
            "same `targets=`); only the transform may differ (the evaluation transform instead of the augmentation).")

    def _check_weight_averaging(self, trainer: pl.Trainer, last_round: int, steps: int | None = None) -> None:
        """Warn (once a fit) when a ``WeightAveraging`` callback other than SWA (Lightning's ``EMAWeightAveraging``)
        updates its average before the last round while ITLM re-draws the model at each round: the average then mixes
        the networks of different rounds (a newcomer's EMA at its defaults: 0.35 test accuracy against 0.85 without
        it, unsaid). Read off its own ``should_update`` at the epochs before the last round and at the optimizer steps
        before it: ``steps`` of them (known at the last round's start), else round 0's (at train start)."""
        if not self.reinit or "weight averaging" in self._said:
            return
        for cb in trainer.callbacks:
            should = getattr(cb, "should_update", None)
            if not _is_weight_averaging(cb) or swa_start_epoch(cb, trainer.max_epochs) is not None or not callable(
                    should):
                continue
            if steps is None:  # round 0's: all before the last round
                steps = _optimizer_steps_in_epochs(trainer, 0, self.round_epochs[0]) or 1
            try:
                epoch = next((e for e in range(last_round) if should(epoch_idx=e)), None)
                step = next((i for i in range(min(steps, 1_000_000)) if should(step_idx=i)), None)
            except Exception:  # a subclass's own rule that takes other arguments: nothing to read
                continue
            if epoch is None and step is None:
                continue
            when = f"optimizer step {step}" if step is not None else f"epoch {epoch + 1} (counted from 1)"
            rank_zero_warn(
                f"ITLM: `{type(cb).__name__}` updates its average from {when}, before the last round, but ITLM "
                f"{self._restarts} the model at each round start (`reinit={self.reinit!r}`): the average mixes the "
                "networks of different rounds into the final model. Start it in the last round (from the last "
                f"round's first optimizer step, `update_starting_at_step`; an `update_starting_at_epoch` alone does "
                "not hold back Lightning's per-step updates), or pass `ITLM(reinit=False)`.")
            self._said.add("weight averaging")
            return

    def _check_fine_tuning(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Warn where the round restarts undo a fine-tuning set-up: a ``BaseFinetuning`` callback (Lightning's
        ``BackboneFinetuning``) adds the unfrozen backbone's param group to the optimizer, which each round re-creates
        without it (a fine-tuner's backbone group at lr 1e-3 was gone, and the callback's lr ramp then drove the head's
        lr too: 0.764 against 0.849), and ``reinit=True`` re-draws the unfrozen backbone; a ``LinearProbe`` that
        fine-tunes its backbone has it re-drawn at random."""
        if not self.reinit or self.num_rounds < 2:
            return
        names = [type(cb).__name__ for cb in trainer.callbacks
                 if any(c.__name__ == "BaseFinetuning" for c in type(cb).__mro__)]
        if names:
            rank_zero_warn(
                f"{self._title}: `{names[0]}` unfreezes the backbone during the fit and adds its param group to the "
                f"optimizer, but {self._title} re-creates the optimizers at each round start (reinit={self.reinit!r}) "
                "from `configure_optimizers`: the backbone's group and learning rate are lost"
                + (", and the unfrozen backbone is re-drawn at random" if self.reinit is True else "")
                + f". Pass `{self._title}(reinit=False)`, or leave the callback out and freeze what you want frozen "
                "(`requires_grad=False`: frozen parameters keep their values across rounds).")
        if (any(c.__name__ == "LinearProbe" for c in type(pl_module).__mro__)
                and getattr(pl_module, "freeze_backbone", True) is False and self.reinit is True):
            rank_zero_warn(
                f"{self._title}: this LinearProbe fine-tunes its backbone (freeze_backbone=False), and "
                f"{self._title}'s round restarts (reinit=True) re-draw it at random: the pretrained weights are lost "
                f"after round 0. Pass `{self._title}(reinit='restore')` to start each round from the weights the fit "
                "started with, or `reinit=False`.")

    def _check_batch_filters(self, trainer: pl.Trainer) -> None:
        """Warn about a per-batch filter beside the rounds that cannot do what it is set to: one whose warm-up, restarted
        at every round start, outlasts a round (it never reaches its drop ratio: a newcomer's 0.1 peaked at 0.087),
        and one that estimates ``"auto"`` beside ``keep_ratio="auto"`` (it estimates again on each round's trimmed
        selection with a fresh network: a newcomer's digits, 30 % flipped, read test accuracy 0.327 with both
        against 0.830 / 0.900 with either alone)."""
        from lit_robust.callbacks.batch_filter import BatchFilter  # here: that module imports this one's helpers

        rounds = self.round_epochs[1:] if self.reinit else []
        for cb in trainer.callbacks:
            if not isinstance(cb, BatchFilter):
                continue
            # the warm-up in use: the default `None` (3 epochs with "auto", 0 with a number) failed `>=` in a TypeError
            warmup = cb._warmup
            said = (f"`warmup_epochs`={cb.warmup_epochs}" if cb.warmup_epochs is not None
                    else f"default warm-up of {warmup} epochs")
            if cb.restart_on_reinit and rounds and cb.drop_ratio != 0.0 and warmup >= min(rounds):
                rank_zero_warn(
                    f"{self._title}: {cb.owner}'s {said} is as long as a round "
                    f"({min(rounds)} epochs): its warm-up restarts at every round start (`restart_on_reinit=True`), "
                    "so it never reaches its drop ratio. Make the warm-up shorter than the rounds "
                    f"(`round_epochs`={self.round_epochs}).")
            if self.keep_ratio == "auto" and cb.drop_ratio == "auto":
                rank_zero_warn(
                    f"{self._title}: `keep_ratio='auto'` beside {cb.owner}(drop_ratio='auto'): the filter estimates "
                    "again on each round's selection, already trimmed by ITLM, from a fresh network, and the two "
                    "shares compound (a newcomer's digits with 30 % flipped labels: test accuracy 0.327 with both, "
                    "0.830 and 0.900 with either alone). Estimate in one of them only: give the filter a number (its "
                    "share of what ITLM keeps), or ITLM one.")
            elif isinstance(cb.drop_ratio, (int, float)) and cb.drop_ratio > 0:
                # a unified-package newcomer's ITLM "auto" beside BatchFilter("prl", 0.3): 0.68-0.76 against 0.94 alone
                left = 1 - cb.drop_ratio
                if not self._keeps_its_keep_ratio:
                    # ActivationClustering keeps what the clustering leaves: "1 × 0.8 = 80 %" read as if it dropped
                    # nothing (a backdoor newcomer's)
                    share = f"(the share {self._title} keeps) × {left:g} of the samples"
                elif self.keep_ratio == "auto":
                    kept = "1 − ε̂" + (f" − {self.auto_margin:g}" if self.auto_margin else "")
                    share = f"({kept}) × {left:g} of the samples"
                else:
                    share = f"{self.keep_ratio:g} × {left:g} = {self.keep_ratio * left:.0%} of the samples"
                rank_zero_warn(
                    f"{self._title}: beside {cb.owner}(drop_ratio={cb.drop_ratio:g}) the two shares compound: the filter "
                    f"drops {cb.drop_ratio:g} of every batch of what {self._title} keeps, so each epoch after the "
                    f"filter's warm-up trains on about {share} (a newcomer's digits with 30 % flipped labels: ITLM "
                    "keep_ratio='auto' with BatchFilter('prl', 0.3) scored 0.68-0.76, either alone 0.94). Set the two "
                    "for the total you mean to leave out, or use one of them.")

    def _check_monitored_checkpoints(self, trainer: pl.Trainer) -> None:
        """Warn when a ``ModelCheckpoint`` monitors a metric while ITLM re-draws the model each round: it ranks
        checkpoints of different rounds, and Lightning writes its ``last.ckpt`` only when the monitored value improves
        (a unified-package newcomer's ``last.ckpt`` held epoch 0 at the end of a fit, and ``--ckpt_path last`` would
        have tested round 0's model). One (or an ``EarlyStopping``) that monitors ITLM's own ``itlm/*`` metrics is
        refused: ITLM logs them in the epoch a round ends, and Lightning stopped the fit at round 0's first validation,
        its message asking whether the module logs the key (an MLOps newcomer)."""
        for cb in [*trainer.checkpoint_callbacks, *trainer.early_stopping_callbacks]:
            monitor = getattr(cb, "monitor", None)
            if isinstance(monitor, str) and monitor.startswith("itlm/"):
                raise ValueError(
                    f"`{type(cb).__name__}(monitor={monitor!r})`: {self._title} logs its `itlm/*` metrics once per "
                    "round, in the epoch the round ends, about the selection the next round trains on, not about the "
                    f"model; {type(cb).__name__} needs the key it monitors at every validation (Lightning stops the "
                    "fit at the first without it). Monitor a validation metric, or none: "
                    "`ModelCheckpoint(save_last=True)` keeps the final model; the per-round figures are in the "
                    "logger's metrics and `ITLM.history`.")
        if not self.reinit or self.num_rounds < 2:
            return
        # a `ModelCheckpoint(save_last=True)` without `monitor` already keeps the final model (a newcomer who had
        # one was still told to add it)
        final_kept = any(getattr(cb, "monitor", None) is None and getattr(cb, "save_last", None)
                         for cb in trainer.checkpoint_callbacks)
        for cb in trainer.checkpoint_callbacks:
            monitor = getattr(cb, "monitor", None)
            if monitor is None:
                continue
            rank_zero_warn(
                f"{self._title}: `ModelCheckpoint(monitor={monitor!r})` ranks the checkpoints of different rounds, each "
                f"trained from a {self._restarted} model (its best may be round "
                "0's, trained on every sample)"
                + (": its best need not be the final model (your unmonitored `ModelCheckpoint(save_last=True)` keeps "
                   "that one)." if final_kept else
                   ", and Lightning writes its `last.ckpt` only when the monitored value improves, so `last.ckpt` need "
                   "not hold the final model either. For the final model add a `ModelCheckpoint(save_last=True)` "
                   "without `monitor`."))
            return

    def _check_early_stops(self, trainer: pl.Trainer) -> None:
        """Warn before training when an ``EarlyStopping`` or a ``max_steps`` may end the fit inside a round: the final
        model is then an unfinished round's, and the warning came after the fit (a power user's ``max_steps=150``
        stopped one epoch into the last round: test accuracy 0.145 against 0.892; EarlyStopping fired inside round 2:
        0.748)."""
        if self.history or self._round > 0 or self.num_rounds < 2:
            return  # from the fit's start (a resumed fit was told then)
        # Lightning does not stop before `min_epochs`: one at the fit's length leaves EarlyStopping nothing to end
        stoppable = (trainer.min_epochs or 0) < sum(self.round_epochs)
        for cb in trainer.early_stopping_callbacks if stoppable else []:
            checks = early_stopping_checks(trainer, cb, sum(self.round_epochs))
            # it stops after `patience` checks without improvement: a patience of the fit's checks or more cannot
            # (a release checker's patience of 100 in a 10-epoch fit was warned about, against the warning's advice)
            if self.reinit and getattr(cb, "patience", 0) < checks:
                rank_zero_warn(
                    f"{self._title}: `EarlyStopping(monitor={getattr(cb, 'monitor', None)!r}, "
                    f"patience={getattr(cb, 'patience', None)})` counts across rounds, and each round restarts from a "
                    f"{self._restarted} model whose metric is worse than earlier "
                    "rounds' best for a while, so it can stop the fit "
                    f"inside a round (rounds of {list(self.round_epochs)} epochs), leaving the final model an "
                    "unfinished round's. `max_epochs` = the sum of the rounds already ends the fit: leave "
                    f"EarlyStopping out, or give it a patience of at least the fit's {checks} validation checks.")
                break
        steps = _optimizer_steps_per_epoch(trainer, 0)
        if trainer.max_steps is None or trainer.max_steps < 0 or steps is None:
            return
        # later rounds train on their selection: `keep_ratio` of the samples, or with "auto" as many as the estimate
        # leaves, up to all of them (counting half, a power user's `max_steps=260` was not warned about and ended
        # inside the last round of 292 steps); each epoch with its own accumulation (GradientAccumulationScheduler)
        share = 1.0 if self.keep_ratio == "auto" else float(self.keep_ratio)
        # `max_steps` counts every optimizer's steps: a manually optimised module with several (DCGAN's generator
        # and discriminator) takes as many a batch; counted as one, 300 images in rounds [1, 3] were said to take
        # "about 17" steps for 34, and a `max_steps` between the two cut the last round without a word before it
        per_batch = _optimizers_stepping_a_batch(trainer)
        per_epoch = [per_batch * (_optimizer_steps_per_epoch(trainer, e) or 1) for e in range(sum(self.round_epochs))]
        # with `initial_round_on_all=False` round 0 trains on a selection too (counted as every sample, a `max_steps`
        # the fit ended in was warned about: 10 steps of 10 "fewer than about 15")
        first = self.round_epochs[0] if self.initial_round_on_all else 0
        batches = self._planned_batches
        if batches is not None and batches > 0:
            # a later round's own batches, then its accumulation: floor(steps * share) rounded before both and
            # undercounted (75 of 100 samples in batches of 10 take 8 steps, not floor(10 * 0.75) = 7: a
            # `max_steps` one short of the fit was not warned about, and cut the last round silently)
            later_steps = [per_batch * max(1, math.ceil(batches / accumulation_in_epoch(trainer, e)))
                           for e in range(first, sum(self.round_epochs))]
        else:
            later_steps = [per_batch * max(1, math.floor(n // per_batch * share)) for n in per_epoch[first:]]
        needed = sum(per_epoch[:first]) + sum(later_steps)
        if trainer.max_steps < needed:
            # each span over its own epochs: a `GradientAccumulationScheduler` changing the accumulation in a later
            # round was said as round 0's range, and later rounds as their first epoch's steps
            def span(counts: list[int], by: str = ", by each epoch's accumulation,") -> str:
                return f"{counts[0]}" if len(set(counts)) == 1 else f"{min(counts)} to {max(counts)}{by}"

            bound = self.keep_ratio == "auto" or self._planned_is_bound
            if self.keep_ratio == "auto":
                about = (f"up to {needed} optimizer steps the rounds {list(self.round_epochs)} take ({span(per_epoch)} "
                         "per epoch; with `keep_ratio='auto'` a later round trains on what the estimate keeps, up to "
                         "every sample)")
            elif first == 0:
                about = (f"about {needed} optimizer steps the rounds {list(self.round_epochs)} take (about "
                         f"{span(later_steps)} per epoch, each round on its selection: `initial_round_on_all=False`)")
            else:
                about = (f"{'up to' if bound else 'about'} {needed} optimizer steps the rounds "
                         f"{list(self.round_epochs)} take ({span(per_epoch[:first])} per epoch in round 0, "
                         f"{'up to' if bound else 'about'} {span(later_steps, '')} in later rounds"
                         + ("; with `per_class=True` each class keeps its own share of a count read without the "
                            "labels, so the rounds may keep fewer)" if self._planned_is_bound else ")"))
            rank_zero_warn(
                f"{self._title}: `max_steps={trainer.max_steps}` is fewer than the {about}, "
                f"so Lightning {'could' if bound else 'would'} stop the fit inside a round and the "
                "final model would be an unfinished round's. "
                "Leave `max_steps` at -1: `max_epochs` = the sum of the rounds ends the fit.")

    def _check_scheduler_length(self, trainer: pl.Trainer) -> None:
        """Warn once per fit when a scheduler of fixed length (:func:`schedule_length`: OneCycleLR, cosine, linear,
        ...) outlasts the round it serves: with ``reinit=True`` each round re-creates it, so one sized for the whole fit
        never anneals (a newcomer's OneCycle runs ended every round near the maximum rate: 0.758 test accuracy,
        against 0.808 with a cosine schedule; another's per-step LinearLR ended each round at 0.034 for 0.0005)."""
        if "scheduler" in self._said:
            return
        epochs = self.round_epochs[self._round]
        round_steps = _optimizer_steps_in_epochs(trainer, self._round_starts[self._round], epochs)
        for cfg in trainer.lr_scheduler_configs:
            sched = cfg.scheduler
            length = schedule_length(sched)
            unit = "step" if cfg.interval == "step" else "epoch"
            span = epochs if unit == "epoch" else round_steps
            if length is None or span is None or length <= span * 1.1:
                continue
            self._said.add("scheduler")
            # a StepLR has no end: its length is its first step, which a shorter round never takes
            step_lr = isinstance(sched, torch.optim.lr_scheduler.StepLR)
            reach = "takes its first step, so the rate never decays" if step_lr else "reaches its end"
            rank_zero_warn(
                f"ITLM: round {self._round} lasts about {span} {unit}s, but its `{type(sched).__name__}` is sized for "
                f"{length}: ITLM {self._restarts} the model and re-creates the optimizer and scheduler at every round "
                f"start (`reinit={self.reinit!r}`), so the schedule never {reach} (a OneCycle run ended each round "
                "near its maximum rate). Size it per "
                "round in `configure_optimizers` (the round's epochs: `itlm.round_epochs[itlm.current_round]`; its "
                "optimizer steps: `itlm.steps_in_round(self.trainer)`), or pass `reinit=False` to train on through "
                "the rounds.")
            return

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._trained_this_fit = True
        given = getattr(pl_module, "_batch_losses", None)
        pl_module._batch_losses = None
        if given:
            # the per-sample losses `reduce_loss` saw this batch, on the log scale (see `collapse_reasons`)
            dtype = torch.float32 if given[0].device.type == "mps" else torch.float64
            scaled = log_scale(torch.cat([part.reshape(-1).to(dtype) for part in given]))
            self._local_log_sum = self._local_log_sum + scaled.sum()
            self._local_log_count += scaled.numel()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, Tensor) and loss.numel() == 1:
            if pl_module.automatic_optimization and trainer.accumulate_grad_batches > 1:
                # Lightning hands the hooks the loss divided by `accumulate_grad_batches` (a power user's round loss
                # read half the true one, under the collapse rule's ln(C))
                loss = loss * trainer.accumulate_grad_batches
            size = _batch_size(batch)
            # summed on the loss's device: no host synchronisation per batch
            dtype = torch.float32 if loss.device.type == "mps" else torch.float64
            self._local_sum = self._local_sum + loss.detach().reshape(()).to(dtype) * size
            self._local_count += size
        elif "no loss" not in self._said and getattr(pl_module, "single_loss", True):
            # a manual-optimisation newcomer's `training_step` returned nothing (as most such code does): the round
            # lines lost their loss and a diverged model (test accuracy 0.118) got no collapse warning
            self._said.add("no loss")
            # said, not warned; and not for a module with no one loss to return (`single_loss = False`: DCGAN's)
            rank_zero_info(f"{self._title}: `training_step` returned no loss, so the round lines show "
                           "none and a round whose training diverged is not warned about. Return "
                           "the loss from `training_step` (with manual optimisation too: `return loss` after "
                           "`self.manual_backward(loss)`); a module that trains several networks on losses of their "
                           "own, such as a GAN, has none to return: set `single_loss = False` on its class.")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING or self._current is None:
            return
        # a checkpoint written at validation end (ModelCheckpoint(save_on_train_epoch_end=False)) comes before
        # `on_train_epoch_end`: record what is known now so that the checkpoint holds it
        self._add_local_loss(pl_module)
        self._current.metrics.update(self._round_metrics(trainer))
        self._current.metrics_from_epoch = None  # fresh, unless the round ends without another validation
        self._val_epoch = trainer.current_epoch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        pl_module._batch_losses = []  # `RobustMixin.reduce_loss` adds the batch's per-sample losses (read at its end)
        pl_module._records_losses = True
        if self.check_per_sample and not self._checked_per_sample:
            # before round 0 trains (the scoring pass at its end would find a batch-mean score one round late: a
            # newcomer lost a round on 60,000 images)
            # named by what the user wrote: a newcomer's mean loss was reported under `sample_scores`, a method they
            # never wrote (the mixin's default reads `per_sample_loss`)
            own_scores = getattr(type(pl_module), "sample_scores", None) is not RobustMixin.sample_scores
            check_per_sample_at_first_batch(type(self).__name__, pl_module, batch,
                                            what="sample_scores" if own_scores else "per_sample_loss")
            self._checked_per_sample = True
            # a wrong `label_key` under a `training_step` of the user's own: named now, not when round 0 ends
            label_part(unpack_batch(batch, owner="ITLM").target, pl_module)
        if (self.per_class and batch_idx == 0 and trainer.current_epoch == 0
                and _scoring_dataloader_owner(trainer, pl_module) is None):
            # soft (mixup) targets were refused only when round 1 began: a soft-label user lost round 0's 4 epochs.
            # (A `scoring_dataloader` may give the labels the trim reads while training reads soft ones.)
            target = label_part(unpack_batch(batch, owner="ITLM").target, pl_module)
            if integer_labels(target) is None:
                what = (f"{target.dtype} of shape {tuple(target.shape)}" if isinstance(target, Tensor)
                        else type(target).__name__)
                raise ValueError(f"the first training batch's targets are {what}: {_PER_CLASS_NEEDS_LABELS}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, trainer.current_epoch)

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, log: bool = True) -> None:
        self._short_epoch = epoch_cut(trainer)
        self._add_local_loss(pl_module)
        rec = self._current
        first = epoch == self._round_starts[self._round]
        if rec is not None and self._loss_count:
            mean = self._loss_sum / self._loss_count
            if first:
                rec.first_epoch_loss = mean
            rec.last_epoch_loss = mean
        if rec is not None:
            log_mean = self._log_sum / self._log_count if self._log_count else None
            if first:
                rec.first_epoch_log_loss = log_mean
            rec.last_epoch_log_loss = log_mean
        self._loss_sum, self._loss_count = 0.0, 0
        self._log_sum, self._log_count = 0.0, 0
        if epoch + 1 != self._round_starts[self._round + 1]:
            return
        self._end_round(trainer, pl_module, log=log)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _stop_recording_losses(pl_module)  # a batch skipped by the module's `on_train_batch_start` left it on
        self._close_skipped_epoch(trainer, pl_module)
        self._train_ended = True
        if self._report_target is not None and not getattr(self, "_report_deferred", False):
            self._write_report(trainer, pl_module)

    def _write_deferred_report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The report, written after the weight-averaging callbacks' ``on_train_end`` (:class:`_ReportAfterAveraging`)."""
        if self._report_target is not None and self._train_ended:
            self._write_report(trainer, pl_module)

    def _close_skipped_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A fit resumed from a checkpoint written at an epoch's last batch (`every_n_train_steps`): Lightning counts
        that epoch done and goes on without its ``on_train_epoch_end``. Run that epoch's end here (at train start; at
        train or fit end where Lightning runs nothing more, the fit's last batch), as the uninterrupted fit did: a
        round that ended there was neither recorded nor followed by its selection (the next round trained on every
        sample, and was called collapsed), and its loss sums ran into the next epoch's (two reviewers')."""
        epoch, self._skipped_epoch_end = self._skipped_epoch_end, None
        if epoch is not None and self._current is not None:
            self._epoch_end(trainer, pl_module, epoch, log=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if say_trained_nothing(self, self._title, reports=self._report_target is not None):
            return  # nor its round table, plot or warnings: the state may be another Trainer's fit's
        self._close_skipped_epoch(trainer, pl_module)
        if self._report_target is not None and not self._train_ended:
            # Lightning skips the whole fit loop, `on_train_end` too, when a fit resumes from a checkpoint of its
            # last epoch (one stopped in the final scoring pass: a reproducibility newcomer's SIGKILL); the resumed
            # fit wrote no report
            self._write_report(trainer, pl_module)
        say_resumed_a_finished_fit(self, trainer, self._title, reports=self.report_path is not None,
                                   more="A longer fit is a new one (no `ckpt_path`): the rounds fix `max_epochs`")
        empty = no_training_batches(trainer)
        if empty is not None:
            rank_zero_warn(f"{self._title}: {empty}")
        elif (len(self.history) < self.num_rounds and not trainer.interrupted
              and not getattr(self, "_started_mid_fit", False)):  # its missing rounds were said at train start
            # e.g. `EarlyStopping` or `max_steps`/`max_time`: the model is one of an unfinished round
            rank_zero_warn(
                f"ITLM: the fit ended after {len(self.history)} of {self.num_rounds} rounds (at epoch "
                f"{trainer.current_epoch} of {sum(self.round_epochs)}){self._cut_round_note()}: something other than "
                "`max_epochs` stopped it (EarlyStopping, `max_steps`, `max_time`, `trainer.should_stop`), so the model "
                "is not the last round's."
            )
        elif not trainer.interrupted:
            self._warn_cut_last_epoch()
            if not self.reinit:
                self._warn_unfinished_schedules(trainer)
        if self.verbose and self.history:
            _print_round_table(trainer, self.history, self.monitor, self._title)
        if self.plot and self.score_history:
            self._save_plot(trainer)

    def _cut_round_note(self) -> str:
        """``", the last of them cut short ..."`` when a stop cut the last counted round inside its last epoch (a round
        closes at that epoch's end like a whole one: a Lightning user's ``max_steps`` stopped round 1 after 8 of its
        last epoch's 14 batches, and was told of "2 of 3 rounds" only), else ``""`` (also where it was said already,
        with the round's stale metrics)."""
        short = self._short_epoch
        if short is None or not self.history or f"cut short {short[0]}" in self._said:
            return ""
        rnd = self.history[-1].round
        if short[0] != sum(self.round_epochs[: rnd + 1]) - 1:
            return ""
        return (f", the last of them, round {rnd}, cut short inside its last epoch ({short[0]}) after {short[1]} of "
                f"{short[2]} batches")

    def _warn_cut_last_epoch(self) -> None:
        """After every round: warn when a stop cut the fit's last epoch short. The last round closes at that epoch's
        end like a whole one, so the note of an unfinished round did not fire, and a `max_steps` short of the fit
        (said before it only as "could" with ``keep_ratio="auto"``) left the final model undertrained silently."""
        short, last = self._short_epoch, sum(self.round_epochs) - 1
        if short is None or short[0] != last or f"cut short {last}" in self._said:
            return  # (a cut said by `_note_stale_metrics` already)
        rank_zero_warn(
            f"{self._title}: the fit stopped inside epoch {last}, the last of round {self.num_rounds - 1}, after "
            f"{short[1]} of its {short[2]} batches (`max_steps`, `max_time` or `trainer.should_stop`), so the final "
            "model trained less than its round planned. Leave `max_steps` at -1: `max_epochs` = the sum of the "
            "rounds ends the fit.")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning calls no `teardown` after a fit that raised (nor after a KeyboardInterrupt or SIGTERM, which also
        # come here): a reviewer's later plain fit on the same datamodule trained on ITLM's old selection, 32 of 64
        self._undo_patch()
        # a step that raised left the batch's record on the module: every `reduce_loss` of a later fit without ITLM
        # (or a validation calling it) added its losses to it, never read (31 tensors after a 5-epoch plain fit)
        _stop_recording_losses(pl_module)
        if self._report_target is not None and self._trained_this_fit and self.report_path is None:
            rank_zero_warn(unwritten_report_note(self._title, exception))
        if not self._trained_this_fit and self.report_path is None:
            self.report_path = getattr(self, "_report_before", None)

    def _check_same_on_every_rank(self) -> None:
        """Under DDP, raise on every rank when the processes' settings or training sets differ: each selects the same
        samples for all, so each must have the same. A DDP newcomer's `round_epochs` differing between two processes
        hung the fit in a collective (SIGTERM ignored, 10 min until `kill -9`), a differing `keep_ratio` trained on
        a selection of neither (960-980 of 1,500 kept for 0.7 and 0.6), training sets of 1,500 and 1,400 hung. One
        collective of a few integers at train start."""
        settings = {"`keep_ratio`": self.keep_ratio, "`round_epochs`": list(self.round_epochs),
                    "`per_class`": self.per_class, "the training set's length": self._n,
                    **{f"`{k}`": v for k, v in self.resume_arguments().items()}}
        check_same_on_every_rank(
            self._title, settings, "one selection of samples serves every process, so each needs the same settings "
            "and the same training set.",
            {"`seed`": "ITLM's `seed` defaults to the global seed (`seed_everything`): a seed per process (e.g. the "
                       "seed plus the rank) needs `ITLM(seed=...)`, the same for all."})

    def _warn_unfinished_schedules(self, trainer: pl.Trainer) -> None:
        """After every round of a ``reinit=False`` fit: warn when a schedule of fixed length stopped well short of
        its end. A power user sized OneCycle by ``estimated_stepping_batches`` (as ``steps_in_round``'s error had
        said): 380 steps for a fit of 300, its learning rate left at 0.0101 instead of 2e-07, without a word."""
        for cfg in trainer.lr_scheduler_configs:
            sched, length = cfg.scheduler, schedule_length(cfg.scheduler)
            taken = getattr(sched, "last_epoch", None)
            if length is None or not isinstance(taken, int) or taken >= 0.9 * length:
                continue
            unit = "step" if cfg.interval == "step" else "epoch"
            rates = ", ".join(f"{lr:.3g}" for lr in sched.get_last_lr()) if hasattr(sched, "get_last_lr") else "?"
            rank_zero_warn(
                f"{self._title}: the fit's `{type(sched).__name__}` is sized for {length} {unit}s but the fit took "
                f"{taken}, so it stopped {100 * taken / length:.0f} % into its schedule (learning rate {rates}). With "
                "`reinit=False` the later rounds train on their selections, fewer batches than round 0 "
                "(`trainer.estimated_stepping_batches` counts every sample in every epoch): size the schedule "
                f"for the {unit}s this fit took, or keep `reinit=True` and size it per round "
                "(`itlm.steps_in_round(self.trainer)`).")

    # -- pieces ------------------------------------------------------------------------------------
    def _end_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule, log: bool = True) -> None:
        """Record the finished round, then prepare the next one (score and select, or keep the selection)."""
        finished = self._round
        collapsed = self._finish_round(trainer, pl_module)
        if finished + 1 >= self.num_rounds:
            return
        if collapsed and self.on_collapse == "keep":
            self._keep_selection(round_=finished + 1)
        else:
            self._select(trainer, pl_module, round_=finished + 1)
        self._reinit_pending = self.reinit
        self._round_end_step = trainer.global_step
        self._patch.request_reload()
        if not log:
            return
        rec = self._current
        for key, value in (("itlm/round", rec.round), ("itlm/kept", rec.kept),
                           ("itlm/clean_precision", rec.clean_precision),
                           ("itlm/corrupted_recall", rec.corrupted_recall),
                           ("itlm/mean_kept_score", rec.mean_kept_score),
                           ("itlm/mean_dropped_score", rec.mean_dropped_score),
                           ("itlm/collapsed", float(collapsed)),
                           ("itlm/estimated_corruption", rec.estimated_corruption)):
            if value is not None:
                # identical on every rank, so averaging over ranks is exact
                pl_module.log(key, float(value), on_epoch=True, on_step=False, sync_dist=True)

    def _round_metrics(self, trainer: pl.Trainer) -> dict[str, float]:
        return {k: float(v) for k, v in trainer.callback_metrics.items()
                if (self.monitor is None and k.startswith("val")) or k == self.monitor}

    def _finish_round(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Append the round's record; returns whether the round collapsed (the same on every rank)."""
        rec = self._current
        assert rec is not None
        # values measured at this round's last validation end stay when a resumed run no longer has them
        rec.metrics.update(self._round_metrics(trainer))
        if self.monitor is not None and self.monitor not in rec.metrics and self._trained_this_fit:
            available = sorted(k for k in trainer.callback_metrics if not k.startswith("itlm/"))
            raise MisconfigurationException(
                f"`ITLM(monitor={self.monitor!r})` could not find {self.monitor!r} in `trainer.callback_metrics` at the "
                f"end of round {rec.round} (epoch {trainer.current_epoch}); available: {available}. Log it by the "
                "end of every round (a validation metric: validate in each round's last epoch) or pass another "
                "`monitor` (None: every `val*` metric)."
            )
        last_epoch = self._round_starts[rec.round + 1] - 1
        if rec.metrics and self._val_epoch is not None and self._val_epoch != last_epoch:
            self._note_stale_metrics(rec, last_epoch, trainer)
        name = self._accuracy_name(rec)
        known = name is not None and self._val_epoch == last_epoch
        few = _validation_samples(trainer, name) if known else None
        if few is not None and few < _MIN_VALIDATION_SAMPLES:
            # an accuracy over a handful of samples says nothing of chance: a 1-sample validation split (a table's
            # `val_size=1`) read 0 and judged every learning round collapsed, so ITLM never trimmed at all
            known = False
            if "few validation samples" not in self._said:
                self._said.add("few validation samples")
                rank_zero_warn(f"ITLM: the validation split holds {few} sample(s), fewer than the "
                               f"{_MIN_VALIDATION_SAMPLES} needed to tell a model at chance from one that learned: "
                               f"`{name}` is not used to judge whether a round collapsed (its training loss still "
                               "is). Give the validation split more samples for that check.")
        # the decision must be the same on every rank (the scoring pass that may follow is collective), so
        # every rank takes rank 0's figure
        dtype = torch.float32 if pl_module.device.type == "mps" else torch.float64
        mine = torch.tensor([float(known), rec.metrics[name] if known else math.nan], dtype=dtype,
                            device=pl_module.device)
        has_acc, value = distributed.broadcast(mine).tolist()
        accuracy = (name or "validation accuracy", value) if has_acc else None
        fresh_model = rec.round == 0 or self.reinit
        log_losses = (rec.first_epoch_log_loss, rec.last_epoch_log_loss)
        reasons = collapse_reasons(rec.first_epoch_loss, rec.last_epoch_loss, fresh_model and rec.epochs >= 2,
                                   accuracy, _num_classes(trainer, pl_module), log_losses=log_losses)
        rec.collapsed = bool(reasons)
        if self.history and self.history[-1].round == rec.round:
            # a fit stopped in the scoring pass that follows, then continued on the same Trainer, ends the round
            # again (a notebook user's history held round 0 twice)
            self.history[-1] = rec
        else:
            self.history.append(rec)
        if self.verbose:
            _print_round_line(trainer, rec, self.num_rounds, self._title)
        if reasons:
            what = f"ITLM round {rec.round} collapsed (its model did not learn): {'; '.join(reasons)}."
            # the round's last epoch's accumulation, not the Trainer's now: a round closed at a resumed fit's start (a
            # checkpoint of its last batch) ran before a GradientAccumulationScheduler set it (8 steps said for 2)
            last = self._round_starts[rec.round + 1] - 1
            cause = stall_cause(rec.first_epoch_loss, rec.last_epoch_loss, _optimizer_steps_per_epoch(trainer, last),
                                rec.epochs, accumulation_in_epoch(trainer, last), log_losses,
                                _optimizers_stepping_a_batch(trainer), limited_train_batches(trainer))
            if self.on_collapse == "raise":
                raise RuntimeError(f"{what} {cause} Or pass `on_collapse='keep'` or 'warn' (`on_collapse='raise'`).")
            if rec.round + 1 >= self.num_rounds:
                then = "It was the last round."
            elif self.on_collapse == "keep":
                then = (f"Round {rec.round + 1} trains on round {rec.round}'s selection ({rec.kept}/{rec.n} samples) "
                        "again instead of one scored by this model (`on_collapse='keep'`).")
            else:
                then = f"Round {rec.round + 1} trains on the selection this model scores (`on_collapse='warn'`)."
            rank_zero_warn(f"{what} {then} {cause}")
        return rec.collapsed

    def _note_stale_metrics(self, rec: RoundRecord, last_epoch: int, trainer: pl.Trainer) -> None:
        """Round ``rec.round`` ended at ``last_epoch`` without a validation: its metrics are the last validation's
        (a newcomer's `check_val_every_n_epoch=2` with 3-epoch rounds showed epoch 1's figures as round 0's)."""
        rec.metrics_from_epoch = self._val_epoch
        if "stale metrics" in self._said:
            return
        self._said.add("stale metrics")
        every = getattr(trainer, "check_val_every_n_epoch", None)
        short = self._short_epoch
        if short is not None and short[0] == last_epoch:
            # a stop (`max_steps`, `should_stop`) cut the epoch before its validation: validating more would not help
            self._said.add(f"cut short {last_epoch}")
            rank_zero_warn(
                f"ITLM: round {rec.round} was cut short: the fit stopped inside epoch {last_epoch}, its last, after "
                f"{short[1]} of {short[2]} batches (`max_steps`, `max_time` or `trainer.should_stop`), before that "
                f"epoch's validation; its round-table metrics are those of epoch {self._val_epoch} (marked so), and "
                "the collapse check does not use them.")
            return
        rank_zero_warn(
            f"ITLM: round {rec.round} ended at epoch {last_epoch} without a validation; its round-table metrics are "
            f"those of epoch {self._val_epoch} (marked so), and the collapse check does not use them. Validate in "
            f"each round's last epoch (round lengths {list(self.round_epochs)}"
            + (f" against `check_val_every_n_epoch={every}`" if every not in (None, 1) else "") + ").")

    def _accuracy_name(self, rec: RoundRecord) -> str | None:
        """The validation accuracy a collapse is judged on: ``monitor`` if it names one, else the first
        ``val*acc*`` metric."""
        names = [self.monitor] if self.monitor is not None else list(rec.metrics)
        for k in names:
            if k in rec.metrics and fnmatch(k.lower(), "val*acc*"):
                return k
        return None

    def _add_local_loss(self, pl_module: pl.LightningModule) -> None:
        """Add this rank's training-loss sum and count since the last call over the ranks (and those of the
        log-scale per-sample losses). Call on every rank."""
        dev = pl_module.device
        dtype = torch.float32 if dev.type == "mps" else torch.float64
        local = torch.stack([torch.as_tensor(v, dtype=dtype, device=dev).reshape(()) for v in (
            self._local_sum, float(self._local_count), self._local_log_sum, float(self._local_log_count))])
        total, count, log_total, log_count = distributed.all_reduce_sum(local).tolist()
        self._loss_sum += total
        self._loss_count += int(count)
        self._log_sum += log_total
        self._log_count += int(log_count)
        self._local_sum, self._local_count = 0.0, 0
        self._local_log_sum, self._local_log_count = 0.0, 0

    def _keep_selection(self, round_: int) -> None:
        """Start round ``round_`` on the current selection again (after a collapsed round): no scoring pass."""
        prev = self._current
        assert prev is not None
        self._current = RoundRecord(round=round_, epochs=self.round_epochs[round_], kept=prev.kept, n=prev.n,
                                    clean_precision=prev.clean_precision, corrupted_recall=prev.corrupted_recall,
                                    dropped_corrupted=prev.dropped_corrupted,
                                    estimated_corruption=prev.estimated_corruption)
        self._round = round_
        self._selection_made = True

    def _select(self, trainer: pl.Trainer, pl_module: pl.LightningModule, round_: int) -> None:
        """Score, select and summarise. Under DDP every rank calls this; each scores its own shard."""
        labels, label_pass = None, None
        if self.per_class:  # the given labels too, from the same forward
            label_pass = self._score_pass(trainer, pl_module, labels=True)
            index, scores, corrupted = label_pass.index, label_pass.scores, label_pass.corrupted
            labels = label_pass.given
            self._check_labels(labels, round_, scores.device)
        elif self._dataset_labels() is None:
            # the dataset holds no labels (an image folder reads each with its file): the pass reads them off the
            # batches for the class-share warning, which a newcomer's image folder never got (one trim kept 15 % of
            # its pullovers against 61 % overall); a label estimator reuses the pass
            label_pass = self._score_pass(trainer, pl_module, labels=True)
            index, scores, corrupted = label_pass.index, label_pass.scores, label_pass.corrupted
        else:
            index, scores, corrupted = self.score_training_set(trainer, pl_module)
        n = self._n
        assert n is not None
        dev = scores.device
        batch_labels = None if self.per_class or label_pass is None else self._gathered_labels(label_pass, n, dev)
        if distributed.world_size() == 1:
            # one process: check that every sample was scored exactly once (any scoring loader)
            scores = scatter_scores(n, index, scores)
            if corrupted is not None:
                dense = torch.zeros(n, dtype=torch.bool, device=dev)
                dense[index] = corrupted.to(dev)
                corrupted = dense
            if labels is not None:
                dense_labels = torch.zeros(n, dtype=torch.long, device=dev)
                dense_labels[index] = labels.to(dev, torch.long)
                labels = dense_labels
            index = torch.arange(n, device=dev)
        else:
            scored = int(distributed.all_reduce_sum(torch.tensor([index.numel()], device=dev)).item())
            if scored != n:
                raise ValueError(f"the scoring pass visited {scored} samples over all ranks, expected {n}.")
        keep_ratio, estimated, auto_note, probe = self.keep_ratio, None, None, 0.0
        if keep_ratio == "auto":
            # every rank estimates on the whole (order-independent) multiset of scores: the same estimate
            # and so the same trimmed set for any world size
            found = self._found_estimate()
            if found is not None and not self._reestimates(trainer):
                estimated = found  # an earlier round found a corrupted share: keep it (the same on every rank)
            else:
                est = self._estimate(trainer, pl_module, scores, round_, label_pass)
                estimated = est.rate
                if est.unlabelled:
                    self._say_once("unlabelled", f"ITLM round {round_}: {est.unlabelled} of {est.n} samples carry a "
                                   "negative label (no label: `ignore_index=-100`, -1): the estimate leaves them out "
                                   f"and reads {est.rate_labelled:.2%} of the {est.n - est.unlabelled} labelled "
                                   f"samples corrupted, {est.rate:.2%} of all, the share the trim drops.")
                if est.barely_separated:
                    # a few hundred clean skewed scores can split like this (up to 49 %): the estimate is kept, since
                    # refusing such fits cost right readings on real scores, and said once per fit
                    self._say_once("barely separated", barely_separated_note(
                        f"ITLM round {round_}: `keep_ratio='auto'`", est.rate, [split_of(est)], "keep_ratio",
                        report_pointer(self._report_target is not None)))
                if uncorrected(est):
                    # a tabular newcomer's clean 5-class table read 27-30 % and trimming cost 18-23 points, unsaid
                    self._say_once("uncorrected", uncorrected_note(
                        f"ITLM round {round_}: `keep_ratio='auto'`", est.rate, "keep_ratio",
                        report_pointer(self._report_target is not None),
                        "class_floor" if est.reason.startswith("class floor") else self.estimator))
                if estimated == 0.0 and found is not None:
                    # the training set did not change: scores of a model trained on a trimmed selection that one
                    # component explains do not make it clean (Friedman1 with 25 % uniform values, seed 0 of
                    # benchmarks/regression_restart.py: 9.4 % at round 1, then 0), so the latest positive estimate
                    # stays in force
                    estimated = self._positive_estimates()[-1]
                    self._say_once("held", f"ITLM round {round_}: `keep_ratio='auto'` estimated 0 ({est.reason}) "
                                   f"after an earlier round found {estimated:.2%} corrupted; the training set is the "
                                   f"same, so that estimate is kept.")
                elif estimated == 0.0 and self._probes(round_):
                    probe = self.auto_probe  # this round trains on a trimmed set: its model shows what round 0's hid
                    self._say_once("probe", f"ITLM round {round_}: `keep_ratio='auto'` estimated 0 ({est.reason}); "
                                   f"with `auto_probe`={self.auto_probe:g} round {round_} trains on the "
                                   f"{1 - self.auto_probe:.0%} lowest-scored samples as a probe, and the next "
                                   "round's estimate comes from its model, less pulled by any glitches (the last "
                                   "round keeps every sample unless an estimate finds a corrupted share).")
                elif estimated == 0.0 and self.auto_margin == 0.0 and "too few for auto" not in self._said:
                    # a clean-wine newcomer was told it "trains on every sample", and round 2 then dropped 6 rows
                    later = (f"round {round_} trains on every sample (round {round_ + 1} estimates again, from this "
                             "round's model)" if round_ + 1 < self.num_rounds else "it trains on every sample")
                    self._say_once("nothing found", nothing_found_note(
                        f"ITLM round {round_}: `keep_ratio='auto'` estimated 0 corrupted samples", est.reason,
                        "keep_ratio", report_pointer(self._report_target is not None), trains=later))
            k, auto_note = auto_keep_count(n, probe or estimated, self.auto_margin)
            keep_ratio = k / n  # keep_count(n, k / n) == k exactly
        # exact global trimmed set: (score, index) order, non-finite last — identical for any world size
        if labels is not None:
            mask = self._per_class_mask(scores, index, labels.to(dev), keep_ratio, n)
        else:
            mask = distributed.global_trim_mask(scores, index, keep_ratio)
        selection = torch.sort(distributed.all_gather_cat(index[mask]).cpu()).values
        finite = torch.isfinite(scores)
        bad = corrupted.to(dev) if corrupted is not None else torch.zeros_like(mask)
        stats = torch.stack([
            (~finite).sum(), (mask & bad).sum(), bad.sum(),
            torch.where(mask & finite, scores, 0).sum(), (mask & finite).sum(),
            torch.where(~mask & finite, scores, 0).sum(), (~mask & finite).sum(),
        ]).double()
        nonfinite, kept_bad, total_bad, s_kept, c_kept, s_drop, c_drop = distributed.all_reduce_sum(stats).tolist()
        if nonfinite:
            rank_zero_warn(f"ITLM round {round_}: {int(nonfinite)} of {n} scores are NaN or infinite; they rank as "
                           "worst and are dropped first.")
        kept = int(selection.numel())
        if not kept and labels is not None:
            # the global trim refuses a count of 0 at setup and "auto" raises it to 1; each class's floor can still
            # make 0 (a round of no batch, which ended the fit as plain training with a note blaming the loader)
            raise ValueError(_per_class_keeps_none(keep_ratio, n))
        if auto_note is not None:
            # said after the trim: per_class rounds each class's quota, so the count kept can differ from k
            rank_zero_warn(f"ITLM round {round_}: `keep_ratio='auto'`: {auto_note}; keeping {kept} of {n} samples.")
        rec = RoundRecord(round=round_, epochs=self.round_epochs[round_], kept=kept, n=n,
                          nonfinite_scores=int(nonfinite), estimated_corruption=estimated,
                          mean_kept_score=s_kept / c_kept if c_kept else None,
                          mean_dropped_score=s_drop / c_drop if c_drop else None)
        has_truth = corrupted is not None
        if distributed.world_size() > 1:
            has_truth = bool(distributed.all_reduce_sum(torch.tensor([int(has_truth)], device=dev)).item()
                             == distributed.world_size())
        if has_truth:
            rec.clean_precision = (kept - kept_bad) / kept if kept else None
            rec.corrupted_recall = (total_bad - kept_bad) / total_bad if total_bad else None
            rec.dropped_corrupted = int(total_bad - kept_bad)
            clean = n - int(total_bad)
            # more than 2 % of the samples over: below that the share is as close as "auto" estimates (a fine-tuner's
            # 29.65 % for 30 % was told it kept 21 too many of 6,000)
            if kept - clean > 0.02 * n and "keeps more than clean" not in self._said:
                # a GAN newcomer raised the pollution to 40 % and left keep_ratio at 0.65: capped at 92 % clean; a
                # GAN user's "auto" read 13.4 % for 20 % and kept 2,598 images for 2,400 clean ones without a word
                from lit_robust.reporting import percent_at_most

                self._said.add("keeps more than clean")
                if self.keep_ratio == "auto":
                    est = rec.estimated_corruption
                    what = "`keep_ratio='auto'`" + ("" if est is None else f" (estimate {100 * est:.2f} %)")
                    # an estimate clipped at ITLM's clean-majority limit is not low (a reviewer's 70.59 % for
                    # 67.7 % was told it was): most labels are wrong, which trimming cannot undo
                    advice = (f"The estimate is low: pass keep_ratio <= {clean / n:.3g} (a little below the clean "
                              "share), or an `auto_margin`." if est is None or est < AUTO_RATE_CAP else
                              f"The estimate was clipped at {AUTO_RATE_CAP:.0%}: ITLM assumes most labels are "
                              "right, and the ground truth says most are wrong here, which no keep_ratio "
                              "mends; clean the labels first (the report ranks the samples).")
                else:
                    what = f"`keep_ratio`={self.keep_ratio:g}"
                    advice = (f"Use keep_ratio <= {clean / n:.3g} (a little below the clean share), or "
                              "keep_ratio='auto'.")
                rank_zero_warn(f"ITLM round {round_}: {what} keeps {kept} of {n} samples, more than the {clean} "
                               f"({clean / n:.1%}) the ground truth flags as clean: the selection is at most "
                               f"{percent_at_most(clean / kept)} clean. {advice}")
        if not self.per_class:
            self._note_emptied_classes(round_, selection, n, datamodule_classes(trainer), batch_labels)
        if self.plot:
            # the histograms need every score: gathered only when a plot is wanted
            all_index = distributed.all_gather_cat(index)
            dense = torch.full((n,), float("nan"))
            dense[all_index.cpu()] = distributed.all_gather_cat(scores.float()).cpu()
            truth = None
            if has_truth:
                truth = torch.zeros(n, dtype=torch.bool)
                truth[all_index.cpu()] = distributed.all_gather_cat(bad.to(torch.uint8)).cpu().bool()
            kept_mask = torch.zeros(n, dtype=torch.bool)
            kept_mask[selection.cpu()] = True  # the plot's kept / dropped where no ground truth is known
            self.score_history.append({"round": round_, "scores": dense, "corrupted": truth, "kept": kept_mask})
        if self._report_target is not None:
            # round 0's selection (initial_round_on_all=False) comes from the untrained model: no score column
            self._record_for_report(round_ - 1 if round_ > 0 else None, index, scores, round_, selection)
        self._adopt_selection(round_, selection, rec)

    def _per_class_mask(self, scores: Tensor, index: Tensor, labels: Tensor, keep_ratio: float, n: int) -> Tensor:
        """``per_class=True``'s trim of this rank's samples (a collective). Samples with a negative label (no label:
        ``ignore_index=-100``, a semi-labelled set's -1) are no class: they are kept (their loss is the module's to
        ignore) and each labelled class is trimmed at ``keep_ratio`` -- with ``"auto"``, at the ratio that drops the
        estimated number of corrupted samples from the labelled ones. They had ended the round in "`labels` must be
        class labels >= 0, got -100"."""
        free = labels < 0
        n_free = int(distributed.all_reduce_sum(free.sum().reshape(1).long()).item())
        if not n_free:
            return distributed.global_per_class_trim_mask(scores, index, labels, keep_ratio)
        mask = torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
        m = n - n_free
        if m:  # the same on every rank: the collectives pair up
            if self.keep_ratio == "auto":
                keep_ratio = min(1.0, max(1.0 - (1.0 - keep_ratio) * n / m, 1.0 / m))
            mask[~free] = distributed.global_per_class_trim_mask(scores[~free], index[~free], labels[~free],
                                                                 keep_ratio)
        return mask

    def _adopt_selection(self, round_: int, selection: Tensor, rec: RoundRecord) -> None:
        """Round ``round_`` trains on ``selection`` (sorted dataset indices) and records into ``rec``."""
        self._selection = selection
        self._selection_made = True
        self._round = round_
        self._current = rec
        if self._sampler is not None:
            self._sampler.set_selection(selection)

    def _note_padding(self, size: int) -> None:
        """Under DDP, say once per fit when this round's training set does not divide among the processes: the
        sampler then repeats a few samples each epoch, so the training (not the selection) differs from a run on
        another number of processes (a DDP newcomer met it with ``"auto"`` and ``per_class``, whose kept counts
        the user cannot choose)."""
        world = self._sampler.num_replicas if self._sampler is not None else 1
        if world > 1 and size % world:
            self._say_once("padding", f"ITLM round {self._round}: its {size} training samples do not divide among "
                           f"{world} processes: each epoch repeats {world - size % world} of them to even the "
                           "shares, so the training differs slightly from a run on another number of processes "
                           "(the selection does not).")

    def _say_once(self, key: str, message: str, warn: bool = False) -> None:
        """An info line (a warning: ``warn``) said once per fit: every round would repeat it (a newcomer's 4-round
        fit said both 3 times)."""
        if key not in self._said:
            (rank_zero_warn if warn else rank_zero_info)(message)
            self._said.add(key)

    def _estimate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, scores: Tensor, round_: int,
                  scored: _ScorePass | None = None) -> CorruptionEstimate:
        """The corrupted fraction from this rank's ``scores`` of the scoring pass, estimated on the gathered
        multiset of every rank's (score[, given, predicted]): the same value on every rank. Call on every rank.
        ``scored``: that pass's labels when it had them (``per_class``), else a label estimator makes its own pass."""
        all_scores = distributed.all_gather_cat(scores.float()).cpu()
        if all_scores.numel() < AUTO_MIN_SAMPLES:
            self._say_once("too few for auto", too_few_for_auto("ITLM", "keep_ratio", all_scores.numel()), warn=True)
        with quiet_about_too_few(all_scores.numel()):
            return self._estimate_from(trainer, pl_module, scores, all_scores, round_, scored)

    def _estimate_from(self, trainer: pl.Trainer, pl_module: pl.LightningModule, scores: Tensor, all_scores: Tensor,
                       round_: int, scored: _ScorePass | None) -> CorruptionEstimate:
        """:meth:`_estimate` once ``all_scores``, every rank's, are gathered."""
        squared = self._squared_errors(trainer)
        if self.estimator not in LABEL_ESTIMATORS:
            return estimate_corruption(all_scores, self.estimator, squared_errors=squared and self.estimator == "gmm")
        # the labels need a pass that returns score, given and predicted label of each sample together (one
        # forward per batch with the default hooks); its scores are those of the pass above, in loader order
        if scored is None:
            scored = self._score_pass(trainer, pl_module, labels=True)
        scores2, given, predicted = scored.scores, scored.given, scored.predicted
        ok = torch.tensor([given is not None and predicted is not None], device=scores.device).long()
        if int(distributed.all_reduce_sum(ok).item()) != distributed.world_size():
            # which of the two is missing (a GAN newcomer's integer placeholder targets were "none")
            lacks = ("the module's targets are placeholders (`report_targets = False`)"
                     if not targets_reported(pl_module) else
                     ("the batches carry no integer class label per sample (it reads targets of shape [batch], not "
                      "one-hot, soft or multi-label rows; for targets of several parts set the module's `label_key`)")
                     if given is None else
                     "the module predicts no labels: its `per_sample_loss` returns no `[batch, classes]` outputs "
                     "beside the losses (the losses alone, or one binary logit; return `(losses, logits)` with a "
                     "column per class). Is this a regression with integer targets? Give them as floats "
                     "(`y.float()`): integer targets are read as class labels, and the notes on classes then speak "
                     "of its values"
                     if type(pl_module).predicted_labels is RobustMixin.predicted_labels else
                     "the module predicts no labels (its `predicted_labels` returns None)")
            spec = datamodule_spec(trainer)
            # float targets in the batches (several of them: one is `squared`) are a regression's too: a docs
            # newcomer's three float targets were told of integer labels and `label_key`
            regression = ((spec is not None and spec.target == "regression") or squared
                          or getattr(self, "_float_targets", False))
            # a regression's fall-back goes unsaid where the estimator is the default: a datamodule's, or one
            # regression target in the training set (a newcomer's own float tensors were told they "carry no integer
            # class label", of an estimator they had not chosen); a label estimator chosen for a regression is told
            # (a CLI newcomer's `estimator disagreement` on the regression table config ran the gmm without a word)
            if regression and self.estimator != DEFAULT_ESTIMATOR:
                self._say_once("no labels", f"ITLM round {round_}: `estimator='{self.estimator}'` reads class labels, "
                               "and these targets are a regression's, so the gmm estimate is used instead (leave "
                               "`estimator` unset, or pass 'gmm' or 'bmm').", warn=True)
            elif not regression:
                self._say_once("no labels", f"ITLM round {round_}: `estimator='{self.estimator}'` needs integer "
                               f"targets and `predicted_labels` of the module; {lacks}, so the gmm estimate is used "
                               "instead.")
            return estimate_corruption(all_scores, "gmm", squared_errors=squared)
        assert given is not None and predicted is not None
        estimator, confidence = self.estimator, None
        if estimator in ("disagreement_or_interior", "floor_or_interior"):
            have = torch.tensor([scored.confidence is not None], device=scores.device).long()
            if int(distributed.all_reduce_sum(have).item()) == distributed.world_size():
                assert scored.confidence is not None
                confidence = distributed.all_gather_cat(scored.confidence.float()).cpu()
            else:
                estimator = "disagreement"
                self._say_once("no confidence", f"ITLM round {round_}: `estimator='{self.estimator}'` needs "
                               "the predicted class's probability, read from the `[batch, classes]` outputs of "
                               "`per_sample_loss`; the module has its own `sample_scores` or `predicted_labels`, so "
                               "the 'disagreement' estimate is used instead.")
        return estimate_from_labels(estimator, distributed.all_gather_cat(scores2.float()).cpu(),
                                    distributed.all_gather_cat(given.long()).cpu(),
                                    distributed.all_gather_cat(predicted.long()).cpu(), confidence)

    def _reestimates(self, trainer: pl.Trainer) -> bool:
        """Whether this round estimates again although an earlier one found a corrupted share: ``reestimate``, or
        where it is None, whether the fit reads one regression target (the same on every rank)."""
        return self.reestimate if self.reestimate is not None else self._squared_errors(trainer)

    @staticmethod
    def _squared_errors(trainer: pl.Trainer) -> bool:
        """Whether the gmm reads this fit's scores as a regression's squared residuals
        (:func:`~lit_robust.data.spec.reads_squared_errors`: one regression target, from the datamodule's spec or the
        training set's targets). The same on every rank: every rank holds the whole training set."""
        return reads_squared_errors(trainer)

    def _dataset_labels(self) -> Tensor | None:
        """The integer labels the training set holds without being read
        (:func:`~lit_robust.data.indexed.dataset_targets`), or None."""
        return integer_labels(dataset_targets(getattr(getattr(self, "_train_loader", None), "dataset", None)))

    def _gathered_labels(self, scored: _ScorePass, n: int, device: torch.device) -> Tensor | None:
        """Every sample's given label from the scoring pass's batches, by dataset index (-1 where none), gathered
        from every rank (a collective); None where a rank's batches carry no integer labels."""
        ok = torch.tensor([scored.given is not None], device=device).long()
        if int(distributed.all_reduce_sum(ok).item()) != distributed.world_size():
            return None
        assert scored.given is not None
        index = distributed.all_gather_cat(scored.index.to(device)).cpu()
        given = distributed.all_gather_cat(scored.given.to(device, torch.long)).cpu()
        dense = torch.full((n,), -1, dtype=torch.long)
        dense[index] = given
        return dense

    def _note_emptied_classes(self, round_: int, selection: Tensor, n: int, names: Sequence[Any] | None = None,
                              labels: Tensor | None = None) -> None:
        """Warn when one trim keeps a class far below the overall share (``labels``, one per sample, or the
        dataset's, where it holds them: ``IndexedDataset(targets=...)`` or a ``TensorDataset``'s second tensor):
        once per class when it first runs low, and once more if a later round keeps none of it (a newcomer's Coat
        class went 31 → 8 → 0 of 603 after the round-1 warning alone)."""
        if not n or not selection.numel():
            return
        if labels is None:
            labels = self._dataset_labels()
        if labels is None or labels.numel() != n or int(labels.min()) < 0:
            return
        labels = labels.cpu()
        mask = torch.zeros(n, dtype=torch.bool)
        mask[selection.cpu()] = True
        overall = selection.numel() / n
        # under half the overall share (a quarter missed a newcomer's FashionMNIST Shirts under random noise: 24 % kept
        # against 65.5 % overall, about 80 % of them correctly labelled; test accuracy on Shirt 27 % against 53 %)
        low = {c: (kept, count) for c, kept, count in starved_classes(labels, mask, LOW_CLASS_SHARE)}
        # said when it first runs low, and again only when it goes from some kept to none
        new = [c for c in low if c not in self._low_classes or low[c][0] == 0 < self._low_classes[c]]
        if not new:
            return
        for c, (kept, _) in low.items():
            self._low_classes[c] = kept

        def often(c: int) -> bool:
            # starved by its drop rate alone (`starved_classes`): "keeps 189 of 225" against 98 % read as no harm,
            # and such drops are right where labels were flipped into the class (`often_dropped_note`)
            return low[c][0] >= LOW_CLASS_SHARE * overall * low[c][1]

        few = [c for c in new if not often(c)]
        many = [(class_label(c, names), low[c][1] - low[c][0], low[c][1]) for c in new if often(c)]
        if few:
            listed = ", ".join(f"{low[c][0]} of {low[c][1]} labelled {class_label(c, names)}" for c in few[:3])
            emptied = all(low[c][0] == 0 for c in few)
            rank_zero_warn(f"ITLM round {round_}: the selection keeps {listed}{' ...' if len(few) > 3 else ''}, "
                           f"against {overall:.0%} overall: one trim can starve or empty a rare, hard or confusable "
                           "class whose samples score high"
                           + (" (the model then never learns it, and the report marks all of it dropped)" if emptied
                              else "")
                           + f". {self._per_class_advice()}")
        if many:
            rank_zero_warn(f"ITLM round {round_}: " + often_dropped_note(
                "the selection drops", many, 1.0 - overall, "`per_class=True` keeps the same share of every class"))

    def _per_class_advice(self) -> str:
        """``per_class``'s advice in full the first time in a fit, then a pointer to it: a newcomer's digits fit
        repeated its 400 characters at every starved class and again at the end."""
        if "per-class advice" in self._said:
            return "`ITLM(per_class=True)`: see the advice said above."
        self._said.add("per-class advice")
        return _PER_CLASS_ADVICE

    def _check_labels(self, labels: Tensor | None, round_: int, device: torch.device) -> None:
        """``per_class=True`` needs integer class labels on every rank (a collective)."""
        ok = torch.tensor([labels is not None], device=device).long()
        if int(distributed.all_reduce_sum(ok).item()) != distributed.world_size():
            raise ValueError(f"ITLM round {round_}: {_PER_CLASS_NEEDS_LABELS}")

    def _positive_estimates(self) -> list[float]:
        """The positive estimates of earlier rounds, oldest first (from the checkpointed history)."""
        return [rec.estimated_corruption for rec in self.history
                if rec.estimated_corruption is not None and rec.estimated_corruption > 0]

    def _probes(self, round_: int) -> bool:
        """Whether an estimate of 0 before ``round_`` makes it a probe (``auto_probe``): any round but the last."""
        return self.auto_probe > 0.0 and round_ < len(self.round_epochs) - 1

    def _found_estimate(self) -> float | None:
        """The first positive estimate of an earlier round, or None."""
        return next(iter(self._positive_estimates()), None)

    def score_training_set(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                           ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Score every training sample once: returns ``(index, score, is_corrupted or None)``.

        Under DDP each rank scores its own contiguous block of the training set (no padding, so no
        sample is scored twice) and returns only that block.
        """
        scored = self._score_pass(trainer, pl_module)
        return scored.index, scored.scores, scored.corrupted

    def _score_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule, labels: bool = False) -> _ScorePass:
        """:meth:`score_training_set`, and with ``labels=True`` the given and predicted labels and a regression's
        given and predicted targets (``None`` where the batches / the module have none)."""
        module = require_mixin(self._title, pl_module)
        loader = self._scoring_loader(trainer, pl_module)
        modes = enter_eval(pl_module)
        idx, scores, flags, given, predicted, targets, values, confidence = [], [], [], [], [], [], [], []
        self._float_targets = False
        try:
            # closing: an error in a batch leaves the precision context now, not when the generator is collected
            with torch.no_grad(), closing(evaluation_batches(trainer, loader)) as batches:
                for batch in batches:
                    try:
                        ib = unpack_batch(batch)
                    except ValueError as err:
                        if self._scoring_source is None:
                            raise
                        # an image-folder newcomer's unwrapped scoring set was blamed on their (wrapped) training set
                        raise ValueError(f"{self._title}: {self._scoring_source}: {str(err).split('. ')[0]}. Its "
                                         "dataset must hold the training samples wrapped in `lit_robust.IndexedDataset` "
                                         "(the training set's indices and labels, with the evaluation transform)."
                                         ) from err
                    if labels:
                        s, p, v, c = scores_predictions_confidence(module, batch)
                        label = label_part(ib.target, module)
                        y, t = integer_labels(label), scalar_targets(ib.target)
                        # float targets: a regression's, however many (see `_estimate_from`)
                        self._float_targets |= isinstance(label, Tensor) and label.is_floating_point()
                        if not targets_reported(module):  # placeholders (a GAN's images' zeros)
                            y = t = p = v = c = None
                        for kept, got in ((given, y), (targets, t), (values, v), (confidence, c)):
                            if got is not None:
                                kept.append(got)
                        if p is not None:
                            if not isinstance(p, Tensor) or p.shape != ib.index.shape or p.is_floating_point():
                                got = f"shape {tuple(p.shape)}, {p.dtype}" if isinstance(p, Tensor) else type(p).__name__
                                raise ValueError(f"`predicted_labels` must return one integer label per sample (shape "
                                                 f"{tuple(ib.index.shape)}) or None, got {got}.")
                            predicted.append(p)
                    else:
                        s = module.sample_scores(batch)
                    if not isinstance(s, Tensor) or s.shape != ib.index.shape:
                        got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
                        raise ValueError(f"`sample_scores` must return one score per sample (shape "
                                         f"{tuple(ib.index.shape)}), got {got}. Use `reduction='none'` and "
                                         "flatten a `[B, 1]` output (e.g. a discriminator's logits).")
                    if self.check_per_sample and not self._checked_per_sample:
                        check_per_sample_scores("ITLM", module.sample_scores, batch, s)
                        self._checked_per_sample = True
                    idx.append(ib.index)
                    scores.append(s.detach().float())
                    if ib.corrupted is not None:
                        flags.append(ib.corrupted.bool())
        finally:
            restore_modes(modes)
        optional = (flags, given, predicted, targets, values, confidence)
        # a collective: with fewer training samples than ranks a rank's ShardedSampler block is empty; it raised
        # alone and the other ranks died waiting. It returns empty tensors instead (the fields the other ranks have,
        # in the dtypes the gathers after the pass convert to), and the pass fails only if no rank scored a batch.
        dev = pl_module.device
        local = [int(bool(idx))] + [int(bool(idx) and len(parts) == len(idx)) for parts in optional]
        busy, *having = distributed.all_reduce_sum(torch.tensor(local, device=dev)).tolist()
        if not busy:
            raise ValueError("the scoring loader yielded no batches.")
        if not idx:
            empty_dtypes = (torch.bool, torch.long, torch.long, torch.float32, torch.float32, torch.float32)
            empty = [torch.empty(0, dtype=dt, device=dev) if h == busy else None for h, dt in zip(having, empty_dtypes)]
            return _ScorePass(torch.empty(0, dtype=torch.long, device=dev), torch.empty(0, device=dev), *empty)

        def every_batch(parts: list[Tensor]) -> Tensor | None:
            return torch.cat(parts) if len(parts) == len(idx) else None

        return _ScorePass(torch.cat(idx), torch.cat(scores), *(every_batch(parts) for parts in optional))

    # -- the per-sample report -----------------------------------------------------------------------------
    def _record_for_report(self, scored_round: int | None, index: Tensor, scores: Tensor, round_: int,
                           selection: Tensor) -> None:
        """Keep round ``scored_round``'s scores (this rank's ``index``/``scores``, gathered to rank 0) and round
        ``round_``'s selection for the report. Call on every rank."""
        gathered = None
        if scored_round is not None:
            gathered = [distributed.gather_uneven(index), distributed.gather_uneven(scores.float())]
        if distributed.rank() != 0:
            return
        if self._report_state is None:
            assert self._n is not None
            self._report_state = RoundScores(self._n, self.num_rounds)
        if gathered is not None:
            self._report_state.set_scores(scored_round, torch.cat(gathered[0]).cpu(), torch.cat(gathered[1]).cpu())
        self._report_state.set_selection(round_, selection)

    def _write_report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Score every sample with the final model, gather to rank 0 and write the report there. Call on every
        rank."""
        scored = self._score_pass(trainer, pl_module, labels=True)
        integer = (scored.corrupted, scored.given, scored.predicted)
        floating = (scored.given_target, scored.predicted_target, scored.confidence)
        present = torch.tensor([t is not None for t in (*integer, *floating)], device=scored.scores.device).long()
        present = (distributed.all_reduce_sum(present) == distributed.world_size()).tolist()

        def gather(t: Tensor | None, ok: bool, dtype: torch.dtype = torch.int64) -> Tensor | None:
            parts = distributed.gather_uneven(t.to(dtype)) if ok and t is not None else None
            return None if parts is None else torch.cat(parts).cpu()

        all_index = gather(scored.index, True)
        all_scores = gather(scored.scores, True, torch.float32)
        fields = [gather(t, ok) for t, ok in zip(integer, present)]
        fields += [gather(t, ok, torch.float32) for t, ok in zip(floating, present[len(integer):])]
        assert self._report_target is not None
        squared = self._squared_errors(trainer)
        self.report_path = written_on_rank_zero(trainer, self._report_target,
                                                lambda: self._write_gathered(trainer, all_index, all_scores, fields,
                                                                             squared), self._title)

    def _final_model_round(self, trainer: pl.Trainer) -> int:
        """The round whose model the fit ends with: the previous one when the fit stopped at a round's end, before the
        next round trained a step (its model not yet re-drawn). A power user's `trainer.should_stop` at round 0's end
        got a report with a `score_round_1` column, round 0's scores again under a round that never trained."""
        untrained = (self._round > 0 and self._round_end_step == trainer.global_step
                     and (self._reinit_pending or not self.reinit))
        return self._round - 1 if untrained else self._round

    def _count_note(self, table: dict[str, list]) -> str | None:
        """The report's count of corrupted samples, beside the estimate the rounds dropped by: an image-folder
        newcomer read "est. corrupted 18.68 %" (187 files) in the round table and 214 from `sum(1 - clean_posterior)`
        in the same run, and was told nowhere which is which."""
        posterior = [v for v in table.get("clean_posterior", []) if v is not None and not math.isnan(v)]
        if not posterior:
            return None
        count = sum(1.0 - v for v in posterior)
        estimates = [r.estimated_corruption for r in self.history if r.estimated_corruption is not None]
        rounds = ("" if not estimates else
                  f"; the rounds dropped by the estimate {100 * estimates[-1]:.2f} %, from an earlier model's scores")
        # "as corrupted" alone read as a count of wrong labels: on clean FashionMNIST it was the model's own errors
        return (f"its `clean_posterior` counts about {count:.0f} of the {len(posterior)} samples as corrupted "
                f"(`sum(1 - clean_posterior)`, by the final model's scores{rounds}; samples the model cannot fit "
                "count too, wrong label or not)")

    def _write_gathered(self, trainer: pl.Trainer, all_index: Tensor | None, all_scores: Tensor | None,
                        fields: list[Tensor | None], squared_errors: bool = False) -> str:
        """Rank 0: the report of the gathered final scoring pass, written; its path."""
        assert all_index is not None and all_scores is not None and self._n is not None
        if self._report_state is None:  # a fit of one round: no selection was made
            self._report_state = RoundScores(self._n, self.num_rounds)
        state = self._report_state
        scored_round = self._final_model_round(trainer)
        state.set_scores(scored_round, all_index, all_scores)

        def dense(values: Tensor | None, fill: float) -> Tensor | None:
            if values is None:
                return None
            out = torch.full((self._n,), fill, dtype=values.dtype)
            out[all_index] = values
            return out

        corrupted_d, given_d, predicted_d, target_d, value_d, confidence_d = (
            dense(fields[0], -1), dense(fields[1], NO_LABEL), dense(fields[2], NO_LABEL),
            dense(fields[3], math.nan), dense(fields[4], math.nan), dense(fields[5], math.nan))
        if self.plot:
            last = self.score_history[-1]["kept"] if self.score_history else None
            self._final_scores = {"round": "final", "title": "final model's scores", "scores": dense(all_scores, math.nan),
                                  "corrupted": None if corrupted_d is None else corrupted_d == 1, "kept": last}
        table = state.table(scored_round, given_d, predicted_d,
                            None if corrupted_d is None else corrupted_d.to(torch.int8),
                            self.estimator, given_target=target_d, predicted_target=value_d,
                            squared_errors=squared_errors, confidence=confidence_d)
        assert self._report_target is not None
        replaced = replaced_note(self._report_target)
        path = write_training_report(table, self._report_target, trainer)
        note = posterior_note(table)
        if note is None:
            note = self._count_note(table)
        rank_zero_info(f"ITLM: per-sample report written to {path}{replaced}" + (f"; {note}" if note else ""))
        if self.reinit and 0 < scored_round >= len(self.history):
            # a Lightning user's `max_steps` stopped one step into round 2's re-drawn model: its report ranked by that
            # model, the top 360 rows 29.7 % corrupted (the data's 30 %; the whole fit's 66.9 %), and said nothing.
            # (Not with `reinit=False`: that round's model goes on from the last one's, and ranked as well, 78.6 %
            # against 78.1 %.)
            rank_zero_warn(
                f"ITLM: the report ranks the samples by the final model's scores (`score_round_{scored_round}`), and "
                f"the fit stopped inside round {scored_round}, whose model (re-drawn at the round's start, trained "
                "only part of the round) may rank them no better than chance, and its `clean_posterior` and the "
                f"count above alike. Rank by `score_round_{scored_round - 1}`, the scores the last selection was made "
                f"by (`load_report(path).sort_values('score_round_{scored_round - 1}', ascending=False)`), or let the "
                "fit end its rounds.")
        self._say_ranking_disagrees(table)
        # a last round already judged collapsed has been warned about (the rarely-predicted note below points at it)
        last_collapsed = bool(self.history) and self.history[-1].collapsed
        one = None if given_d is None or predicted_d is None else one_class_predicted(given_d, predicted_d)
        self.final_one_class = one
        diverged = None if target_d is None or value_d is None else regression_did_not_learn(target_d, value_d)
        self.final_diverged = diverged
        if diverged is not None:
            # a CLI newcomer's regression at `lr 5`: train losses of 1e10-1e13, an estimate of 0, test R² -3.7e11
            last = self.history[-1] if self.history else None
            losses = ("" if last is None or last.last_epoch_loss is None
                      else f" (its last round's training loss {last.last_epoch_loss:.4g})")
            rank_zero_warn(f"ITLM: the final model's predictions miss the training targets by a median of "
                           f"{diverged[0]:.4g}, more than {DIVERGED_FACTOR:g} times their median absolute deviation "
                           f"({diverged[1]:.4g}){losses}: it did not learn, so the report's ranking and "
                           "`predicted_target` mean nothing. A common cause is a learning rate too large for a freshly "
                           "initialised model.")
        if one is not None and last_collapsed:
            # an auditor's collapsed fit was told the classes it never predicted, not the one it predicted for all
            c, p, n = one
            rank_zero_warn(f"ITLM: the final model predicts class {class_label(c, datamodule_classes(trainer))} for "
                           f"{p} of the {n} training samples: its last round collapsed (the warning above), so the "
                           "report's ranking and `predicted_label` mean nothing.")
        elif one is not None:
            c, p, n = one
            last = self.history[-1] if self.history else None
            loss = (None, None, 0) if last is None else (last.first_epoch_loss, last.last_epoch_loss, last.epochs)
            epoch = None if last is None else self._round_starts[last.round + 1] - 1  # that round's (see _finish_round)
            accumulation = trainer.accumulate_grad_batches if epoch is None else accumulation_in_epoch(trainer, epoch)
            logs = None if last is None else (last.first_epoch_log_loss, last.last_epoch_log_loss)
            cause = stall_cause(*loss[:2], _optimizer_steps_per_epoch(trainer, epoch), loss[2], accumulation, logs,
                                _optimizers_stepping_a_batch(trainer), limited_train_batches(trainer))
            rank_zero_warn(f"ITLM: the final model predicts class {class_label(c, datamodule_classes(trainer))} for "
                           f"{p} of the {n} training samples, whose labels spread over several classes: it did not "
                           f"learn, so the report's ranking and `predicted_label` mean nothing. {cause} (A validation "
                           "split has a collapsed round said at once.)")
        elif given_d is not None and predicted_d is not None:
            rare = rarely_predicted_classes(given_d, predicted_d)
            if rare:
                names = datamodule_classes(trainer)
                listed = ", ".join(f"{class_label(c, names)} for {p} sample{'' if p == 1 else 's'} ({g} are labelled "
                                   f"{c})" for c, p, g in rare[:3])
                # with `per_class=True` each class kept its share, so the advice to turn it on was no advice (a CLI
                # newcomer was given it in 4 runs with it on)
                # a tuner user's fit that kept every sample in every round was told its selection had left the
                # class out
                starved = [c for c, _, _ in rare if self._selection_starved(c, given_d)]
                why = ("its last round collapsed (the warning above)" if last_collapsed else
                       "it did not learn that class although `per_class=True` kept its share of it (a last round "
                       "too short? labels of that class mostly wrong?)" if self.per_class else
                       "the selection it trained on left most of that class out" if starved else
                       "it did not learn that class although the last round's selection did not leave it out (a last "
                       "round too short? labels of that class mostly wrong?)")
                rank_zero_warn(f"ITLM: the final model predicts class {listed}{' ...' if len(rare) > 3 else ''}: "
                               f"{why}, so the report's `predicted_label` is no label to relabel those samples with."
                               + ("" if self.per_class or last_collapsed or not starved
                                  else f" {self._per_class_advice()}"))
        return path

    def _say_ranking_disagrees(self, table: dict[str, list]) -> None:
        """Warn when the report's ranking (the final model's scores) holds the samples the last selection dropped
        among its top rows at under 1.5 times a random order's share: the two then disagree, and one of them is wrong.
        A GAN user's DCGAN reports (zeros with 20 % other digits) had 20-24 % of the dropped rows in their top 140
        (chance 20 %) and 0.7-4.3 % other digits there, while the dropped rows were 53 % other digits: the final
        discriminator, trained on the selection, rated the images its generator never made as real. Of 295 reports
        helpers wrote this week, 4 fall under the threshold: those 3, and a notebook user's whose selection was the
        wrong one (its top rows were 92 % mislabelled, its dropped rows 27 %); the next was at 1.54 times chance."""
        agreement = top_rows_dropped(table.get("kept", []))
        if agreement is None:
            return
        k, share, chance = agreement
        if k < 10 or share >= 1.5 * chance:
            return
        columns = [c for c in table if c.startswith("score_round_")]
        earlier = f"`{columns[-2]}` (the scores the last selection was made by)" if len(columns) >= 2 else \
            "an earlier round's scores"
        rank_zero_warn(
            f"ITLM: the report's ranking (the final model's scores) and the last selection disagree: of its top {k} "
            f"rows {share:.0%} are ones the selection dropped, against {chance:.0%} for a random order. One of them "
            "is wrong: a final model trained on the selection can score the samples it never saw as harmless (a "
            "GAN's discriminator rates images its generator never makes as real), and a selection made by an "
            f"earlier, weaker model can miss what the final model finds. Look at the top rows by `rank` and by "
            f"{earlier} before you act on either.")

    def _selection_starved(self, label: int, given: Tensor) -> bool:
        """Whether the last round's selection kept the samples labelled ``label`` under half the overall share, as
        the round lines' starved-class note counts (``given``: the given label of each dataset index,
        :data:`NO_LABEL` where unknown; a reviewer's ``keep_ratio=0.4`` had every class called starved)."""
        members = given == label
        total = int(members.sum())
        if self._selection is None or not total or not given.numel():
            return False
        kept = int(members[self._selection.to(given.device)].sum())
        return kept / total < 0.5 * self._selection.numel() / given.numel()

    def _scoring_loader(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> DataLoader:
        loader, self._scoring_source = None, None
        owner = _scoring_dataloader_owner(trainer, pl_module)
        if owner is not None:
            loader = owner.scoring_dataloader()
            self._scoring_source = f"`scoring_dataloader()` of your {'datamodule' if owner is trainer.datamodule else 'module'}"
        if loader is None:
            loader = getattr(self, "_train_loader", None)
            if loader is None:
                raise RuntimeError("ITLM has not seen the training dataloader yet.")
        if "augmented" not in self._said and reads_differ(getattr(loader, "dataset", None)):
            # random reads in what is scored: a newcomer's training set (91.7 % clean, 95.1 % scored without them);
            # an image-folder newcomer's own scoring loader, which kept the training transform
            self._said.add("augmented")
            what, fix = (("the training set, which the scoring pass reads", "Define `scoring_dataloader()` on your "
                          "datamodule or module: the same training samples, indices and labels in a fixed order, with "
                          "the evaluation transform.") if self._scoring_source is None
                         else (self._scoring_source, "Give its dataset the evaluation transform."))
            rank_zero_warn(f"{self._title}: two reads of sample 0 of {what} gave different inputs (a random "
                           "augmentation?), so each score, and the selection, carries that noise (newcomers' selections: "
                           "91.7 % clean against 95.1 % scored without it; top-631 precision 0.75 against 0.82). " + fix)
        if loader.batch_size is None:
            raise ValueError("the scoring dataloader must use `batch_size=` (not a custom `batch_sampler`).")
        # fixed order; under DDP each rank takes one contiguous, unpadded block
        sampler = ShardedSampler(len(loader.dataset), num_replicas=trainer.world_size, rank=trainer.global_rank)
        return with_sampler(loader, sampler, drop_last=False)

    def _reinitialize(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        module: RobustMixin = pl_module  # type: ignore[assignment]
        if self.reinit == "restore":
            if self._start_weights is None:
                raise RuntimeError(f"{self._title}: `reinit='restore'` found no weights to restore: the fit's start "
                                   "was not seen (a checkpoint written without them?). Resume from the fit's start.")
            module.load_state_dict(self._start_weights)  # type: ignore[attr-defined]
        else:
            try:
                module.reinitialize(self.fit_seed + self._round)
            except TypeError as err:  # a layer frozen at setup (not checked then) and unfrozen since
                raise TypeError(f"{self._title} re-draws the model at each round start (reinit=True): {err}") from None
        # announce it: per-batch schedules (BatchFilter's warm-up, its "auto" window) restart from this epoch
        module.model_start_epoch = trainer.current_epoch
        trainer.strategy.setup_optimizers(trainer)

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "round": self._round,
            "selection": self._selection,
            "selection_made": self._selection_made,
            "reinit_pending": self._reinit_pending,
            "round_end_step": self._round_end_step,
            "n": self._n,
            "start_weights": self._start_weights,
            "current": None if self._current is None else asdict(self._current),
            "history": [asdict(r) for r in self.history],
            "score_history": self.score_history,
            # the epoch's training loss so far: the part added over the ranks, and each rank's own part since (a
            # checkpoint written inside an epoch, `every_n_train_steps`; a collective, as `random_state`). Rank 0's
            # part alone was saved: a 2-rank fit resumed there had its round records' losses 0.06 off
            "loss_sum": self._loss_sum,
            "loss_count": self._loss_count,
            "log_loss_sum": self._log_sum,
            "log_loss_count": self._log_count,
            "local_loss": distributed.all_gather_objects((float(self._local_sum), self._local_count,
                                                          float(self._local_log_sum), self._local_log_count)),
            "val_epoch": self._val_epoch,
            "short_epoch": self._short_epoch,
            "report": None if self._report_state is None else self._report_state.state_dict(),
            "random": random_state(),
            "arguments": self.resume_arguments(),
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        saved = ((checkpoint.get("callbacks") or {}).get(self.state_key) or {}).get("arguments") or {}
        if self.seed is None and trainer.state.fn == TrainerFn.FITTING and isinstance(saved.get("seed"), int):
            # the global seed's part: a resumed fit goes on with the seed it started with, whatever the process's
            # global seed is now (an `ITLM(seed=...)` of yours is checked against it instead)
            now = os.environ.get("PL_GLOBAL_SEED")
            if now is not None and now.lstrip("-").isdigit() and int(now) != saved["seed"]:
                # a preemptible-cluster user's `seed_everything(1)` resumed the seed-0 fit without a word
                rank_zero_warn(f"ITLM: this process's global seed is {int(now)}, but the fit this checkpoint resumes "
                               f"started with seed {saved['seed']}: it goes on with {saved['seed']} (its rounds' "
                               f"order and re-initialisations). For a fit with seed {int(now)} start a new one, "
                               "without `ckpt_path`.")
            self.fit_seed = saved["seed"]
            if self._sampler is not None:
                self._sampler.seed = self.fit_seed
            if self._loader_generator is not None:
                self._loader_generator.manual_seed(self.fit_seed)
        # before Lightning skips a state saved under other arguments; False outside a fit (keep this fit's history)
        self._restore_state = check_resumable(self, trainer, checkpoint)
        if self._restore_state and self._sampler is not None:
            # the epoch Lightning resumes at (it sets it on the sampler only after the first iterator exists, and
            # with workers that iterator draws its indices at once: the resumed epoch took epoch 0's order)
            try:
                epoch = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
            except (KeyError, TypeError):
                epoch = None
            if isinstance(epoch, int):
                self._sampler.set_epoch(epoch)
            # written inside an epoch: Lightning restarts that epoch's loader and trains the steps left, which took the
            # epoch's first batches again and never its last ones (a reviewer's); the order resumes where it stopped
            self._sampler.skip_batches = _batches_done_mid_epoch(checkpoint)
            self._skipped_epoch_end = _epoch_whose_end_was_skipped(checkpoint)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not getattr(self, "_restore_state", True):
            return
        mark_restored(self)
        self._round = state_dict["round"]
        self._selection = state_dict["selection"]
        self._selection_made = state_dict["selection_made"]
        self._reinit_pending = state_dict["reinit_pending"]
        self._round_end_step = state_dict.get("round_end_step")  # absent from checkpoints of 2026-12-04 and before
        self._n = state_dict["n"]
        self._start_weights = state_dict.get("start_weights")  # absent from checkpoints of 2026-12-05 and before
        if self._sampler is not None and self._n is not None:
            # a DataLoader passed to `fit` was wrapped at `setup`, before this state arrived: its sampler must
            # draw from the restored selection (a datamodule's loader is built later, from the same state)
            self._sampler.n = self._n
            self._sampler.set_selection(self._selection)
        self._current = None if state_dict["current"] is None else RoundRecord(**state_dict["current"])
        self.history = [RoundRecord(**r) for r in state_dict["history"]]
        self.score_history = state_dict["score_history"]
        self._loss_sum = state_dict.get("loss_sum", 0.0)
        self._loss_count = state_dict.get("loss_count", 0)
        # the log-scale parts are absent from checkpoints of 2026-12-06 and before: the resumed round's check then
        # compares a part of an epoch's log-scale mean, as the resumed epoch's mean loss was before they were saved
        self._log_sum = state_dict.get("log_loss_sum", 0.0)
        self._log_count = state_dict.get("log_loss_count", 0)
        (self._local_sum, self._local_count, self._local_log_sum,
         self._local_log_count) = _local_loss_of_this_rank(state_dict.get("local_loss"))
        self._val_epoch = state_dict.get("val_epoch")
        self._short_epoch = state_dict.get("short_epoch")
        if self._short_epoch is not None:
            self._warn_short_epoch(*self._short_epoch)
        report = state_dict.get("report")  # absent from checkpoints written before the report existed
        # only the rank that writes the report keeps it
        self._report_state = None if report is None or distributed.rank() != 0 else RoundScores.from_state_dict(report)
        # Lightning runs its sanity check with the random state isolated: the next draw is the next epoch's shuffle
        restore_random_state(state_dict.get("random"))

    def _warn_short_epoch(self, epoch: int, trained: int, batches: int) -> None:
        """A resume from a checkpoint written at the end of an epoch that a stop cut short (a notebook user's
        ``trainer.should_stop`` mid-epoch: the resumed fit went on at the next round, whose selection the short round's
        model had scored, and ended 0.690 against 0.761 uninterrupted, without a word)."""
        round_ = self.round_of_epoch(epoch)
        scored = (" and it scored the next round's selection" if epoch + 1 == self._round_starts[round_ + 1]
                  and round_ + 1 < self.num_rounds else "")
        rank_zero_warn(cut_epoch_note(self._title, (epoch, trained, batches),
                                      f"round {round_}'s model trained less than in an uninterrupted fit{scored}"))

    @rank_zero_only
    def _save_plot(self, trainer: pl.Trainer) -> None:
        from lit_robust.reporting import plot_score_histograms

        folder = self._plot_folder
        if folder is None:
            # `plot` is on by default: a docs reader who never set it read "(`plot=True`, ...)" as their doing
            why = ("there is no logger" if trainer.logger is None
                   else f"the logger ({type(trainer.logger).__name__}) has no folder")
            rank_zero_info(f"ITLM: no score plot written: {why} and no `plot_dir` (pass `plot_dir=...` for "
                           "one, or `plot=False`).")
            return
        final = [] if self._final_scores is None else [self._final_scores]
        self.plot_path = plot_score_histograms(self.score_history + final, folder, "itlm_scores.png")
        if self.plot_path is not None:
            # a team with its own LightningCLI found the plot and looked for the report `lit-robust fit` writes
            off = "" if self._report_target is not None or self.report is False else (
                "; the per-sample report is off (`report=True` writes it)")
            rank_zero_info(f"ITLM: score histograms per round written to {self.plot_path}{off}")


def _stop_recording_losses(pl_module: pl.LightningModule) -> None:
    """Stop `RobustMixin.reduce_loss` keeping the per-sample losses that ``on_train_batch_start`` asked it to keep
    (read and stopped at the batch's end, which a step that raised or a skipped batch never reaches)."""
    if getattr(pl_module, "_batch_losses", None) is not None:
        pl_module._batch_losses = None
    if getattr(pl_module, "_records_losses", False):
        pl_module._records_losses = False


def _local_loss_of_this_rank(saved: list[tuple[float, ...]] | None) -> tuple[float, int, float, int]:
    """This rank's training-loss sum and count since the last addition over the ranks, and those of the log-scale
    per-sample losses, from a checkpoint's ``local_loss`` (every saving rank's, in rank order): its own where the fit
    runs as many processes, else all of them on rank 0 (the epoch's sum over the ranks counts each once); nothing from
    checkpoints written before it was saved (their ``loss_sum`` holds rank 0's part). Parts of two values (written
    before the log-scale ones were) give no log-scale part."""
    if not saved:
        return 0.0, 0, 0.0, 0
    parts = [(float(p[0]), int(p[1]), *((float(p[2]), int(p[3])) if len(p) >= 4 else (0.0, 0))) for p in saved]
    rank, size = distributed.rank(), distributed.world_size()
    if len(parts) == size:
        return parts[rank]
    if rank != 0:
        return 0.0, 0, 0.0, 0
    return (sum(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts), sum(p[3] for p in parts))


def _batches_done_mid_epoch(checkpoint: dict[str, Any]) -> int:
    """Batches of its epoch a checkpoint written inside that epoch had trained: the steps Lightning skips when it
    resumes there; 0 for any other checkpoint, or one written after the epoch's last batch."""
    point = _mid_epoch_checkpoint(checkpoint)
    return point.batches_done if point is not None and not point.last_batch and point.batches_done > 0 else 0


def _class_labels(targets: Any, n: int) -> bool:
    """Whether ``targets`` are ``n`` non-negative integer class labels, which the per-class counts read."""
    return (isinstance(targets, Tensor) and targets.ndim == 1 and targets.numel() == n
            and not targets.is_floating_point() and int(targets.min()) >= 0)


def round_batches(kept: int, n: int, world: int, batch_size: int, drop_last: bool) -> int:
    """Training batches each of ``world`` processes gets an epoch from a round keeping ``kept`` of ``n`` samples, as
    ITLM's loader makes them: :class:`SelectionSampler` gives each process ``ceil(kept / world)`` samples, and a round
    under one batch keeps its smaller batch despite ``drop_last`` (see ``_make_train_loader``) (pure).

    >>> round_batches(32, 64, 1, 16, False), round_batches(33, 64, 1, 16, True), round_batches(8, 64, 1, 16, True)
    (2, 2, 1)
    >>> round_batches(33, 64, 2, 16, False)
    2
    """
    per = kept if world == 1 else -(-kept // world)
    full = -(-n // world)
    if drop_last and not 0 < per < batch_size <= full:
        return per // batch_size
    return -(-per // batch_size)


def _scoring_dataloader_owner(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
    """The datamodule, else the module, that has a ``scoring_dataloader()`` (what ITLM scores), or ``None``."""
    for owner in (trainer.datamodule, pl_module):
        if owner is not None and callable(getattr(owner, "scoring_dataloader", None)):
            return owner
    return None


def _optimizer_steps_per_epoch(trainer: pl.Trainer, epoch: int | None = None) -> int | None:
    """The optimizer steps of one epoch of the current training loader on this process: ⌈its batches (as Lightning
    counts them, `limit_train_batches` applied) / `accumulate_grad_batches`⌉ (that of ``epoch`` when given:
    :func:`~lit_robust._lightning.accumulation_in_epoch`), at least 1; ``None`` without a length."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return None
    accumulate = trainer.accumulate_grad_batches if epoch is None else accumulation_in_epoch(trainer, epoch)
    return max(1, math.ceil(int(batches) / max(1, accumulate)))


def limited_train_batches(trainer: pl.Trainer) -> str | None:
    """The Trainer's ``limit_train_batches`` as text where it leaves out some of the training loader's batches, else
    ``None``."""
    limit = trainer.limit_train_batches
    if isinstance(limit, float) and limit >= 1.0:
        return None
    try:
        full = len(trainer.train_dataloader)
    except TypeError:  # no loader yet, or a stream without a length
        full = None
    batches = trainer.num_training_batches
    if full is not None and math.isfinite(batches) and int(batches) >= full:
        return None
    return f"{limit!r}"


def _optimizers_stepping_a_batch(trainer: pl.Trainer) -> int:
    """The steps ``trainer.global_step`` (and so ``max_steps``) counts a batch, as far as known: one per optimizer of
    a manually optimised module (each taken to step once a batch, as DCGAN's two do), else one."""
    module = trainer.lightning_module
    if module is None or module.automatic_optimization:
        return 1
    return max(1, len(trainer.optimizers))


def _is_weight_averaging(callback: Any) -> bool:
    """Whether ``callback`` is Lightning's ``StochasticWeightAveraging`` or a ``WeightAveraging`` (EMA, ...) of either
    Lightning package: each puts its averaged weights into the module in its ``on_train_end``."""
    return is_a(callback, "StochasticWeightAveraging", "WeightAveraging")


class _ReportAfterAveraging(Callback):
    """ITLM's end-of-training report, run from a place after the Trainer's weight-averaging callbacks in
    ``trainer.callbacks`` (see :func:`_report_after_weight_averaging`); it holds no state."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.owner._write_deferred_report(trainer, pl_module)


def _report_after_weight_averaging(trainer: pl.Trainer, callback: Any) -> bool:
    """Whether ``callback``'s report (its final scoring pass, at train end) must wait for weight-averaging callbacks
    that come after it in ``trainer.callbacks``; if so a :class:`_ReportAfterAveraging` is placed just after the last
    of them. Their ``on_train_end`` puts the averaged weights into the module: an SWA user's report, "by the final
    model's scores", had been scored by the weights SWA then replaced (105 of 1,500 predicted labels differed from
    the model the fit returned). Only the report moves: ITLM's other hooks keep their place, so that SWA's own
    schedule, set at its first epoch, is not re-created away by the round's restart (a reviewer's `swa_lrs` was
    ignored while ITLM itself ran after SWA). A new list, not the same one changed: the hook being called
    (``setup``) runs through the list it read. A helper of an earlier fit of this Trainer is dropped."""
    cbs = [cb for cb in trainer.callbacks if not isinstance(cb, _ReportAfterAveraging)]
    at = next((i for i, cb in enumerate(cbs) if cb is callback), None)
    averaging = [i for i, cb in enumerate(cbs) if _is_weight_averaging(cb)]
    deferred = at is not None and bool(averaging) and averaging[-1] > at
    if deferred:
        cbs.insert(averaging[-1] + 1, _ReportAfterAveraging(callback))
    if deferred or len(cbs) != len(trainer.callbacks):
        trainer.callbacks = cbs
    return deferred


def _optimizer_steps_in_epochs(trainer: pl.Trainer, first: int, count: int) -> int | None:
    """The optimizer steps of epochs ``first`` .. ``first + count - 1`` of the current training loader on this process
    (:func:`_optimizer_steps_per_epoch` of each); ``None`` without a length."""
    steps = [_optimizer_steps_per_epoch(trainer, e) for e in range(first, first + count)]
    return None if any(s is None for s in steps) else sum(steps)


def _check_plain_sampler(loader: DataLoader, owner: str) -> None:
    """Raise unless ``loader`` draws every sample once per epoch (shuffled or not): ITLM replaces its sampler with the
    round's selection, so a sampler of the user's own (a subset, weights) would be dropped without a word (a
    newcomer's ``SubsetRandomSampler`` of 2,000 samples: the later rounds trained on all 4,800)."""
    from torch.utils.data import RandomSampler, SequentialSampler
    from torch.utils.data.distributed import DistributedSampler

    if isinstance(loader.dataset, IterableDataset):
        raise ValueError(f"{owner} selects samples by their index each round, so it needs a map-style training set "
                         f"(with `__len__` and `__getitem__`); the training loader reads an IterableDataset "
                         f"(`{type(loader.dataset).__name__}`). Load the data into a map-style dataset, or filter "
                         "the streamed batches with `BatchFilter`, which needs no index beyond the batch's.")
    if loader.batch_size is None:
        # said by `with_sampler` too, without the owner or what is lost (an NLP newcomer's length bucketing)
        custom = (f"a custom `batch_sampler` (`{type(loader.batch_sampler).__name__}`)"
                  if loader.batch_sampler is not None else "no `batch_size` (a data set that yields whole batches)")
        raise ValueError(f"{owner} draws each round's samples through a sampler of its own, so the training loader, "
                         f"built with {custom}, cannot be kept: build it with `batch_size=` (each round's batches "
                         "are then drawn from its selection, so batching by length, say, is lost), or filter inside "
                         "the batches your loader makes with a per-batch filter (`BatchFilter`, `CoTeaching`), which "
                         "keeps the loader as it is.")
    s = loader.sampler
    plain = (isinstance(s, SequentialSampler)
             or (type(s) is RandomSampler and not s.replacement and getattr(s, "_num_samples", None) is None)
             or (isinstance(s, DistributedSampler) and type(s).__name__ != "DistributedSamplerWrapper"))
    if not plain:
        raise ValueError(f"{owner} draws each round's samples itself (its selection replaces the training loader's "
                         f"sampler), so the loader's `{type(s).__name__}` would be ignored. Build the loader with "
                         "`shuffle=True` or False; to train on a subset, make it the data set (e.g. "
                         "`IndexedDataset(torch.utils.data.Subset(data, ids))`).")


def _check_indexed(dataset: Any, owner: str = "ITLM") -> None:
    check_one_index_space(dataset, owner)
    if isinstance(dataset, IndexedDataset):
        return
    subset = subset_of_indexed_hint(dataset)
    if subset is not None:
        # a data-centric user dropped rows with `Subset(train_set, keep)`: row 0 kept, round 0 trained, then an
        # IndexError at its end (item 0 alone had been checked)
        raise ValueError(f"{owner} needs each sample's index to be its position in the training set (0 .. len - 1): "
                         f"{subset}")
    try:
        sample = dataset[0]
        last = dataset[len(dataset) - 1] if len(dataset) > 1 else sample
    except Exception:  # iterable or exotic datasets: checked on the first batch instead
        return
    shaped = isinstance(sample, (tuple, list)) and len(sample) in (3, 4) and _is_int_like(sample[0])
    for item, at in ((sample, 0), (last, len(dataset) - 1)):
        index = item[0] if shaped and isinstance(item, (tuple, list)) and item else None
        if shaped and _is_int_like(index) and int(index) != at:
            raise ValueError(
                f"{owner} needs each sample's index to be its position in the training set (0 .. len - 1), but item "
                f"{at} of `{type(dataset).__name__}` has index {int(index)}. Wrap the data set without its own ids in "
                "`lit_robust.IndexedDataset`, which adds the positions."
            )
    if not shaped:
        # what item 0 holds, and the advice for it: a dict sample gets the dict advice at once (a newcomer wrapped
        # theirs as told and only then read it); `(x, y, i)`, a plain-PyTorch habit, is told the index comes first
        if isinstance(sample, dict):
            holds = f"a dict (keys {sorted(map(str, sample))[:4]}): {dict_samples_hint(sample)}"
        elif isinstance(sample, (tuple, list)) and len(sample) in (3, 4) and _is_int_like(sample[-1]):
            holds = f"{describe_item(sample)}: the index must come first, `(index, input, target)`."
        else:
            holds = f"{describe_item(sample)}."
        raise ValueError(
            f"{owner} needs a training set whose samples are `(index, input, target[, is_corrupted])`; "
            f"`{type(dataset).__name__}` returns something else for item 0. Wrap it in `lit_robust.IndexedDataset`. "
            f"Its item 0 is {holds}"
        )


def _is_int_like(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, Tensor) and x.ndim == 0 and not x.is_floating_point() and x.dtype != torch.bool


def _batch_size(batch: Any) -> int:
    try:
        return int(unpack_batch(batch).index.shape[0])
    except Exception:  # a batch of another layout: weigh it as one
        return 1


def _validation_samples(trainer: pl.Trainer, name: str | None = None) -> int | None:
    """The samples one validation run reads (every validation loader's, `limit_val_batches` applied, all processes
    together; only loader ``k``'s for a metric ``name`` that Lightning suffixed ``/dataloader_idx_k``), or ``None``
    when a loader has no length or batch size to count them by."""
    loaders = trainer.val_dataloaders
    loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
    batches = list(trainer.num_val_batches)
    if not loaders or len(batches) != len(loaders):
        return None
    suffix = re.fullmatch(r".*/dataloader_idx_(\d+)", name or "")
    if suffix is not None and int(suffix.group(1)) < len(loaders):
        # the accuracy of one loader of several is over that loader's samples alone: a 1-sample first loader beside
        # a 200-sample second was counted 201 and its accuracy of 0 judged every round collapsed
        k = int(suffix.group(1))
        loaders, batches = loaders[k:k + 1], batches[k:k + 1]
    total = 0
    for loader, n_batches in zip(loaders, batches):
        dataset, batch_size = getattr(loader, "dataset", None), getattr(loader, "batch_size", None)
        if not isinstance(batch_size, int) or not math.isfinite(n_batches):
            return None
        try:
            size = len(dataset)  # type: ignore[arg-type]
        except TypeError:  # an iterable dataset
            return None
        total += min(size, int(n_batches) * batch_size * trainer.world_size)
    return total


def _num_classes(trainer: pl.Trainer, pl_module: pl.LightningModule) -> int | None:
    """The number of classes, when the module (``hparams.num_classes`` or ``num_classes``) or datamodule says."""
    hparams = getattr(pl_module, "hparams", None)
    candidates = [hparams.get("num_classes") if hasattr(hparams, "get") else None,
                  getattr(pl_module, "num_classes", None), getattr(trainer.datamodule, "num_classes", None)]
    for k in candidates:
        if isinstance(k, Integral) and not isinstance(k, bool) and k >= 2:
            return int(k)
    return None


@rank_zero_only
def _print_round_line(trainer: pl.Trainer, rec: RoundRecord, num_rounds: int, title: str = "ITLM") -> None:
    from lit_robust.reporting import print_line, round_line

    print_line(round_line(rec, num_rounds, title), getattr(trainer, "progress_bar_callback", None))


@rank_zero_only
def _print_round_table(trainer: pl.Trainer, history: list[RoundRecord], monitor: str | None, title: str = "ITLM"
                       ) -> None:
    from lit_robust.reporting import (
        corrupted_validation_note,
        print_line,
        print_table,
        progress_console,
        round_line,
        round_table,
    )

    bar = getattr(trainer, "progress_bar_callback", None)
    note = corrupted_validation_note(history, getattr(trainer, "val_dataloaders", None))
    try:
        import rich  # noqa: F401
    except ImportError:  # without rich: one plain line per round
        for rec in history:
            print(round_line(rec, title=title))
    else:
        print_table(round_table(history, monitor, title=f"{title} rounds"), progress_console(bar))
    if note is not None:
        print_line(note, bar)
