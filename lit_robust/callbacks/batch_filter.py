"""Per-batch robust filters (PRL(L), SPL, PRL(G)) as one Lightning callback."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust._backend import Callback, TrainerFn, pl, rank_zero_warn, warn_if_mixed_lightning
from lit_robust._checks import check_bool
from lit_robust._lightning import (
    begin_fit,
    check_state_owner,
    draws_in_order,
    early_stopping_checks,
    epoch_cut,
    epoch_part,
    mark_restored,
    no_training_batches,
    refuse_no_training,
    refuse_several_loaders,
    say_resumed_a_finished_fit,
    say_trained_nothing,
    sigterm_without_collectives,
    start_epoch_after_skipped_end,
    started_without_its_state,
)
from lit_robust.callbacks._report_file import (
    EpochReport,
    check_report_args,
    say_starved_classes,
    split_class_counts,
    unwritten_report_note,
)
from lit_robust.callbacks._resume import (
    CUT_EPOCH_CONSEQUENCE,
    as_long_as_every_ranks,
    at_last_batch_under_ddp,
    check_resumable,
    check_same_on_every_rank,
    counts_of_this_rank,
    cut_epoch_note,
    epoch_whose_end_was_skipped,
    loss_argument,
    random_state,
    reduce_counters_to_rank_zero,
    restore_random_state,
    seed_persistent_workers,
    train_set_length,
    warn_inexact_resume,
    with_class_counts,
)
from lit_robust.data.indexed import check_collate, unpack_batch
from lit_robust.functional.scores import GradNormRecorder, fit_loss_layer, loss_layer_scores
from lit_robust.mixin import RobustMixin, check_per_sample_at_first_batch, require_mixin
from lit_robust.report import (
    ReportFormat,
    batch_class_labels,
    given_and_predicted,
    report_fields,
)
from lit_robust.selection import distributed
from lit_robust.selection.auto_drop import (
    AUTO_WARMUP_EPOCHS,
    DEFAULT_FILTER_ESTIMATOR,
    FILTER_ESTIMATORS,
    REPORT_RANKS,
    AutoDropRatio,
    FilterEstimator,
    auto_for,
    check_auto_args,
    check_warmup_epochs,
    kept_on_a_fit_that_goes_on,
    resolved_warmup,
    say_reestimated,
)
from lit_robust.selection.rules import batch_keep_count, scheduled_drop_ratio, smallest_k_mask
from lit_robust.selection.sharded import RatioK

_BACKENDS = ("auto", "bookkeeping", "two_pass")

__all__ = ["BatchFilter", "FilterEpochRecord", "select_and_count"]

Rule = Literal["prl", "spl", "prl_g"]
PrlGBackend = Literal["auto", "bookkeeping", "two_pass"]

# running counters of one epoch, in this order (kept as one device tensor: no host sync per step)
_COUNTERS = ("seen", "dropped", "corrupted_seen", "corrupted_dropped", "batches", "batches_with_truth")


def check_filter_args(warmup_epochs: Any, scope: Any, loss: Any) -> None:
    """Validate the arguments every per-batch filter shares (besides the drop ratio)."""
    check_warmup_epochs(warmup_epochs)
    if scope not in ("local", "global"):
        raise ValueError(f"`scope` must be 'local' or 'global', got {scope!r}.")
    if loss is not None and not callable(loss) and loss not in ("ce", "mse"):
        raise ValueError(f"`loss` must be 'ce', 'mse', a callable `loss(outputs, targets) -> [B]` or None, "
                         f"got {loss!r}.")


def warn_unused_loss(owner: str, rule: str, loss: Any) -> None:
    """Warn where ``loss`` is given to a rule that does not read it (only ``"prl"``'s loss layer does): it was accepted
    without a word, while ``prl_g_backend`` beside another rule is refused. A warning, not a refusal: a config written
    for PRL(L) (``loss: ce``) switched to SPL on the command line is a fair run."""
    if loss is not None and rule != "prl":
        what = {"spl": "ranks the losses `per_sample_loss` returns",
                "prl_g": "ranks the gradient norms of the losses `per_sample_loss` returns"}.get(rule, "does not read it")
        shown = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)
        rank_zero_warn(f"{owner}: `loss` ({shown!r}) is the loss layer of rule='prl' only; rule={rule!r} {what}, so "
                       "it is unused. Leave it out, or pass rule='prl'.")


def small_batch_message(owner: str, n: int, eps: float) -> str:
    return (f"{owner}: a batch of {n} sample(s) is too small to drop a fraction {eps:.3g} of it "
            f"(floor((1 - {eps:.3g}) * {n}) = 0 would drop all); such batches are kept whole. "
            "Use `drop_last=True` or a larger batch size. (Warned once.)")


def planned_epochs(trainer: Any) -> int | None:
    """The epochs the fit is set to train, for :func:`warmup_outlasts_fit`: ``max_epochs``, or ``None`` (not judged)
    under ``fast_dev_run``, a smoke run of a few batches whose ``max_epochs`` of 1 the user never set (a tuner user was
    told to train longer than the ``max_epochs=1`` they had not written)."""
    if getattr(trainer, "fast_dev_run", False):
        return None
    return getattr(trainer, "max_epochs", None)


def _global_seed() -> int | None:
    """The global seed of ``seed_everything`` (``PL_GLOBAL_SEED``), ``None`` where none is set."""
    now = os.environ.get("PL_GLOBAL_SEED")
    return int(now) if now is not None and now.lstrip("-").isdigit() else None


def warmup_outlasts_fit(drop_ratio: float | str, warmup_epochs: int | None, max_epochs: int | None) -> str | None:
    """Why a fit of ``max_epochs`` ends before the filter drops its full ``drop_ratio`` (the warm-up ramps it
    up from 0 in epoch 0; ``"auto"`` estimates in epoch 0 and drops from epoch 1), or ``None`` when it does not.
    ``warmup_epochs=None`` is the owners' default (:func:`~lit_robust.selection.auto_drop.resolved_warmup`).

    >>> warmup_outlasts_fit(0.3, 10, 40) is None
    True
    >>> warmup_outlasts_fit(0.3, 10, 1).startswith("the Trainer's `max_epochs`=1 ends")
    True
    >>> "with the default warm-up of 3 epochs (the drop" in warmup_outlasts_fit("auto", None, 3)
    True
    """
    if max_epochs is None or max_epochs < 1 or drop_ratio == 0:
        return None
    auto = drop_ratio == "auto"
    # a user who left the warm-up out is told the default's value, not a `warmup_epochs` they never wrote (only
    # "auto" gets here then: a numeric ratio's default warm-up is 0)
    said = (f"`warmup_epochs`={warmup_epochs}" if warmup_epochs is not None
            else f"the default warm-up of {AUTO_WARMUP_EPOCHS} epochs")
    warmup_epochs = resolved_warmup(warmup_epochs, drop_ratio)
    full_from = max(warmup_epochs, 1) if auto else warmup_epochs  # the first 0-based epoch at the full ratio
    if max_epochs > full_from:
        return None
    if auto:
        reached = "drops nothing (epoch 0 only estimates the corrupted fraction)" if max_epochs == 1 else (
            f"drops only {(max_epochs - 1) / max(warmup_epochs, 1):.0%} of its estimate in the last epoch")
    else:
        last = scheduled_drop_ratio(max_epochs - 1, float(drop_ratio), warmup_epochs)
        reached = ("drops nothing: this fit is plain training" if last == 0 else
                   f"drops at most {last:.3g} of each batch (in the last epoch)")
    advice = (f"Train longer (e.g. `max_epochs`={2 * max(warmup_epochs, 1) + 1}) rather than shortening the warm-up: "
              "'auto' estimates from the warm-up's scores, and a model that has not yet learnt the clean samples "
              "often gives 0, i.e. plain training" if auto else
              f"Set `warmup_epochs` below `max_epochs` (e.g. {max(max_epochs // 3, 0)}) or train longer")
    # a regression newcomer followed "e.g. 0" with "auto": estimated 0 after epoch 0, MSE equal to plain training
    return (f"the Trainer's `max_epochs`={max_epochs} ends the fit before the filter reaches `drop_ratio`="
            f"{drop_ratio!r}: with {said} (the drop ratio ramps up from 0 in epoch 0) it "
            f"{reached}. {advice}.")


def sparse_metrics(trainer: Any, dropped: tuple[str, ...], estimate: str, drop_ratio: Any,
                   flag: str = "corrupted") -> dict[str, str]:
    """The metrics a filter logs only in some epochs, each with when it is logged: ``dropped`` (the share of the
    dropped samples that were flagged) only in epochs that drop samples, on data with the ``flag``; ``estimate`` only
    with ``drop_ratio="auto"``, from epoch 0's end on (a monitor on it works then, but not with a validation inside
    epoch 0, ``val_check_interval`` other than 1.0: measured with BatchFilter, EarlyStopping and ModelCheckpoint)."""
    when = f"only in epochs that drop samples (none in the warm-up's first) and only on data with the {flag} flag"
    out = {key: when for key in dropped}
    interval = getattr(trainer, "val_check_interval", 1.0)
    if drop_ratio != "auto":
        out[estimate] = f"only with `drop_ratio='auto'` (this fit's: {drop_ratio!r})"
    elif not (isinstance(interval, float) and interval == 1.0):
        out[estimate] = (f"from epoch 0's end on, not at the validation inside epoch 0 that the Trainer's "
                         f"`val_check_interval`={interval!r} runs")
    return out


def refuse_sparse_monitors(trainer: Any, owner: str, sparse: dict[str, str],
                           history: str | None = "its `history`") -> None:
    """Refuse an ``EarlyStopping`` or ``ModelCheckpoint`` that monitors a metric ``owner`` logs only in some epochs
    (``sparse``: each key and when it is logged, :func:`sparse_metrics`): Lightning stopped the fit at the first check
    without the key, its hint asking whether the module logs it (a power user's ``filter/dropped_corrupted_frac``;
    ITLM refuses its own ``itlm/*``)."""
    for cb in [*getattr(trainer, "checkpoint_callbacks", ()), *getattr(trainer, "early_stopping_callbacks", ())]:
        monitor = getattr(cb, "monitor", None)
        if monitor in sparse:
            raise ValueError(f"`{type(cb).__name__}(monitor={monitor!r})`: {owner} logs `{monitor}` {sparse[monitor]}, "
                             f"and {type(cb).__name__} needs the key at every check (Lightning stops the fit at the "
                             "first without it). It is a figure about the data, not the model: monitor a validation "
                             f"metric, and read the figures in {f'{history} or ' if history else ''}the logger's "
                             "metrics.")


def warn_early_stopping_in_warmup(owner: str, trainer: Any, warmup: int, auto: bool,
                                  drop_ratio: float | str) -> None:
    """Warn before training (at train start, epoch 0) when one of the Trainer's ``EarlyStopping`` callbacks may end the
    fit inside the warm-up of a per-batch filter (``BatchFilter``, ``CoTeaching``), before it drops at full strength:
    a tuner user's ``EarlyStopping(monitor="val_loss", patience=2)`` on a noisy validation split stopped the fit after
    epoch 2 of 8, and was told only then. ``warmup`` is the warm-up in use; ``auto``: ``drop_ratio="auto"``."""
    ramp = max(warmup, 1 if auto else 0)  # "auto": epoch 0 drops nothing
    if trainer.current_epoch > 0 or ramp < 1 or (not auto and drop_ratio == 0):
        return
    if (trainer.min_epochs or 0) >= ramp:  # Lightning does not stop before `min_epochs` (a reviewer's 4 of 3)
        return
    for cb in trainer.early_stopping_callbacks:
        checks = early_stopping_checks(trainer, cb, ramp)
        if getattr(cb, "patience", 0) < checks:
            # the loss advice only for a monitor that is not an accuracy already (a vision newcomer's `val_acc`,
            # mode "max", was told to monitor a validation accuracy)
            monitor = str(getattr(cb, "monitor", None))
            accuracy = getattr(cb, "mode", "min") == "max" or "acc" in monitor.lower()
            loss = ("" if accuracy else " On a validation split with corrupted labels the loss often rises while the "
                    "model still improves on the clean samples.")
            rank_zero_warn(
                f"{owner}: `EarlyStopping(monitor={getattr(cb, 'monitor', None)!r}, patience="
                f"{getattr(cb, 'patience', None)})` can stop the fit before the filter drops at full strength: it "
                f"ramps up over the first {ramp} epoch{'' if ramp == 1 else 's'} ({checks} validation "
                f"check{'' if checks == 1 else 's'}), dropping nothing in epoch 0.{loss} Give it a patience of at "
                f"least {checks}{'' if accuracy else ', or monitor a validation accuracy'}.")
            break


def warn_ended_in_warmup(owner: str, trainer: Any, last: tuple[int, float] | None, warmup: int, auto: bool,
                         start: int = 0) -> None:
    """At train end: warn when something other than ``max_epochs`` (EarlyStopping, ``max_steps``, ``max_time``) ended
    a per-batch filter's fit inside its warm-up, so it never dropped its full share (a newcomer's EarlyStopping ended a
    PRL fit at epoch 5 of a 5-epoch warm-up, silently). ``last``: the last epoch recorded and its drop ratio;
    ``start``: the epoch the warm-up counts from."""
    # "auto" drops its estimate from epoch max(warmup_epochs, 1): warm-ups of 0 and 1 are one schedule (a reviewer's
    # warmup_epochs=0 fit stopped in epoch 0 by `max_steps` was not warned; 1 was)
    ramp = max(warmup, 1) if auto else warmup
    if last is None or ramp <= 0 or trainer.interrupted:
        return
    epoch, drop_ratio = last
    ends = start + ramp  # the first epoch at the full drop ratio
    unlimited = trainer.max_epochs in (None, -1)  # `max_steps` alone (a release check's fit was not warned)
    if (unlimited or epoch + 1 < trainer.max_epochs) and epoch < ends:
        of = "" if unlimited else f" of {trainer.max_epochs}"
        rank_zero_warn(f"{owner}: the fit ended after epoch {epoch}{of}, inside the warm-up (full drop ratio from "
                       f"epoch {ends} on): something other than `max_epochs` stopped it (EarlyStopping, `max_steps`, "
                       f"`max_time`), so the filter never dropped its full share (epoch {epoch}: {drop_ratio:.3g}).")


def select_and_count(scores: Tensor, index: Tensor, drop_ratio: float,
                     scope: Literal["local", "global"] = "local",
                     on_too_small: Callable[[int, float], None] | None = None) -> tuple[Tensor, Tensor | None]:
    """Keep-mask of one training batch, the ``floor((1-ε) B)`` smallest ``(score, index)`` over this rank's batch
    (``"local"``) or over the batches of all ranks (``"global"``,
    :func:`lit_robust.selection.distributed.global_selection`), and which entries count as samples: ``None`` (all of
    them), or under ``"global"`` the first occurrences of each index over the ranks. A batch that would keep nothing
    is kept whole and reported to ``on_too_small(n, ε)``. Under ``"global"`` a repeat that ``DistributedSampler``
    pads a rank with *in the same step* as its first occurrence is left out of the selection, so it must be left out
    of the counts and the report too: it was counted seen and dropped, and marked its sample dropped in the report
    while the rank that held it first kept it. A repeat in another step (or under ``"local"``) is ranked, trained on
    if kept, and counted, as any sample of its batch."""

    def k_of(n: int) -> int:
        k, too_small = batch_keep_count(n, drop_ratio)
        if too_small and on_too_small is not None:
            on_too_small(n, drop_ratio)
        return k

    if scope == "global":
        mask, info = distributed.global_selection(scores, index, RatioK(k_of, drop_ratio), algorithm="gather")
        first = info.first[0] if info.first else None
        return mask, None if first is None or bool(first.all()) else first
    return smallest_k_mask(scores, k_of(scores.numel()), index), None


def only_counted(counted: Tensor | None, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """``tensors`` (``[B]`` or ``None``) at the ``counted`` entries of :func:`select_and_count` (all if ``None``)."""
    if counted is None:
        return tensors
    return tuple(None if t is None else t[counted.to(t.device)] for t in tensors)


def only_counted_fields(counted: Tensor | None, fields: dict[str, Tensor | None]) -> dict[str, Tensor | None]:
    """:func:`only_counted` of the report's per-sample keyword arguments."""
    return dict(zip(fields, only_counted(counted, *fields.values())))


@dataclass
class FilterEpochRecord:
    """What a :class:`BatchFilter` dropped during one training epoch (summed over every rank; ``history``, one per
    epoch).

    Attributes:
        epoch: the epoch, from 0.
        drop_ratio: the scheduled drop ratio of the epoch.
        seen: the batch entries that went through the filter (one per sample in one process); ``dropped``: those
            it dropped. Under DDP ``DistributedSampler`` pads the ranks to equal length with up to world size − 1
            repeated samples, each ranked and counted again (``seen`` 94 of 93 samples on 2 processes) unless
            ``scope="global"`` finds it in the same step as its first occurrence.
        corrupted_seen: with the ground-truth flag (the batch's 4th element) only, else ``None``: the corrupted
            samples seen, ``corrupted_dropped`` those dropped, ``dropped_corrupted_frac`` = corrupted_dropped /
            dropped (how clean the rejects are), ``corrupted_frac`` = corrupted_seen / seen (what dropping at random
            would reach).
        estimated_corruption: with ``drop_ratio="auto"``, the estimated corrupted fraction in force at the end of
            the epoch (made from its scores if it was an estimating epoch; before margin and clipping); it sets the
            next epochs' drop ratio.
        seen_by_class: for a classifier's batches (integer labels beside ``[B, C]`` outputs, read at the module's
            ``label_key``), the entries seen per given label ``0 .. C - 1``; ``kept_by_class`` those kept. A class the last epoch kept far less of than the rest is warned of at the
            fit's end, with or without a report. ``None`` otherwise.
    """

    epoch: int
    drop_ratio: float  # the scheduled drop ratio of the epoch
    seen: int  # batch entries that went through the filter (a DistributedSampler's padding repeat counts again)
    dropped: int
    corrupted_seen: int | None = None  # with ground truth (the batch's 4th element) only
    corrupted_dropped: int | None = None
    dropped_corrupted_frac: float | None = None  # corrupted_dropped / dropped: how clean the filter's rejects are
    corrupted_frac: float | None = None  # corrupted_seen / seen: what dropping at random would reach
    # `drop_ratio="auto"`: the estimated corrupted fraction in force at the end of this epoch (made from this
    # epoch's scores if it was a collecting epoch; before margin and clipping); it sets the next epochs' drop ratio
    estimated_corruption: float | None = None
    # by given label 0 .. C - 1 of a classifier's batches (see `lit_robust.report.batch_class_labels`): the entries
    # seen, and those kept, in this epoch (summed over the ranks); None otherwise
    seen_by_class: list[int] | None = None
    kept_by_class: list[int] | None = None


class BatchFilter(Callback):
    r"""Drop the least trustworthy samples of every training batch before averaging the loss.

    Inside each training batch of size :math:`B` the samples are ranked by a per-sample score and the
    :math:`\lfloor (1-\varepsilon_t) B \rfloor` ranked first (``(score, dataset index)`` ascending, NaN/inf
    last; :func:`lit_robust.selection.rules.smallest_k_mask`) are kept; the module's
    :meth:`~lit_robust.RobustMixin.reduce_loss` averages over them. The rules
    (:mod:`lit_robust.functional.scores`):

    * ``"prl"`` — PRL(L), Liu et al. (prl_paper Alg. 3; thesis Alg. 4): the loss-layer gradient norm
      :math:`\|\partial \ell_i / \partial f_i\|_2`, e.g. :math:`\|\operatorname{softmax}(f_i) -
      \operatorname{onehot}(y_i)\|_2` for cross-entropy. Needs ``per_sample_loss`` to return
      ``(losses, outputs)``; costs no extra backward.
    * ``"spl"`` — self-paced learning: the loss :math:`\ell_i`.
    * ``"prl_g"`` — PRL(G) (prl_paper Alg. 2; thesis Alg. 3): the exact per-sample gradient norm
      :math:`\|\nabla_\theta \ell_i\|_2` (:class:`~lit_robust.functional.scores.GradNormRecorder`). No BatchNorm that
      normalises with the batch's statistics: in training mode (use GroupNorm or freeze it with ``.eval()``) or built
      with ``track_running_stats=False`` (use GroupNorm). ``prl_g_backend="bookkeeping"`` takes the
      norms, the selection and the kept samples' gradient from the step's **one** backward (Bu et al. 2023's
      book-keeping; :meth:`~lit_robust.functional.scores.GradNormRecorder.filtered_mean`): the loss the mixin returns
      then has the value of the whole batch's mean (the selection is made during the backward), and the
      gradient written into ``.grad`` is the kept samples' mean (eager, torch >= 2.4: that backward stops at
      the layers' outputs and autograd computes no weight gradient; the kept samples' gradient is formed from
      the same activations and output gradients as the norms; on a module compiled by ``torch.compile`` the
      backward runs through the network and ``.grad`` is corrected afterwards). ``"two_pass"`` is the earlier
      way: one extra backward to the activations for the norms, then the filtered loss's own backward (the
      loss's value is the kept mean). ``"auto"`` (default) is book-keeping in one process and two-pass under DDP (the
      book-keeping correction of ``.grad`` comes after DDP's gradient all-reduce, so it is not used there).

    Warm-up (the :math:`R(T)` of thesis Alg. 5): in epoch :math:`t` (0-based) the drop ratio is

    .. math:: \varepsilon_t = \varepsilon \cdot \min(t / T_k, 1), \qquad \text{kept fraction } R(t) = 1 - \varepsilon_t,

    so the kept fraction goes linearly from 1 (epoch 0) to :math:`1-\varepsilon` (epoch :math:`T_k` on);
    ``warmup_epochs=0`` (the default with a numeric ``drop_ratio``) drops :math:`\varepsilon` from the start.

    Composition with a round-based callback (``restart_on_reinit``): when :class:`~lit_robust.ITLM` with
    ``reinit=True`` re-draws the model at a round start (announced through
    :attr:`~lit_robust.RobustMixin.model_start_epoch`), :math:`t` counts from that epoch again, so a freshly drawn
    network is warmed up as the first one was, and ``drop_ratio="auto"`` collects and estimates anew
    (:meth:`lit_robust.selection.auto_drop.AutoDropRatio.restart`). The filter reads the announcement during the step, so the
    order of the callbacks in the Trainer does not matter; the epoch it counts from is checkpointed. Measured
    (issue 16; MLP 784-256×2-10 on 6,000 MNIST images with a 25 % patch backdoor, ITLM(α = 0.70) + PRL, seeds
    0-2): clean accuracy 71-74 % without the restart, 87-88 % with it. A batch so small that
    :math:`\lfloor (1-\varepsilon_t) B \rfloor = 0` (e.g. a last batch of one sample) would lose every
    sample; it is kept whole, with one warning.

    ``scope="global"`` ranks the concatenated batches of all DDP ranks (each rank keeps its part of the
    global selection, :func:`lit_robust.selection.distributed.global_selection`, with :math:`B` the number of distinct
    dataset indices over the ranks: an index repeated within the step, e.g. by a padding sampler, is kept at most
    once; a padding repeat in another step is ranked again there, see :class:`FilterEpochRecord`);
    ``"local"`` trims each rank's own batch, as the papers did per GPU. In one process, with distinct
    indices, both are the same. Outside training (validation, test) the filter keeps everything.

    When the batches carry ground truth (``(index, input, target, is_corrupted)``) each epoch records
    the fraction of corrupted samples among the dropped ones, logged as ``filter/dropped_corrupted_frac``
    and kept in :attr:`history` (with ``filter/drop_ratio`` and the corrupted fraction of all samples
    seen, which is what dropping at random would reach).

    ``drop_ratio="auto"`` (:mod:`lit_robust.selection.auto_drop`): :math:`\varepsilon` is estimated from the rule's own
    scores. Epoch 0 drops nothing and collects every sample's score (its mean over the epoch, by dataset
    index); at the end of each warm-up epoch :math:`t < \max(T_k, 1)` the scores of all ranks are gathered and
    ``estimator`` estimates from them (by default from the predicted labels of the same training forwards, see
    ``estimator`` below); :math:`\hat\varepsilon` is the
    median of these per-epoch estimates after epoch 0 (epoch 0's alone until there is another). The ramp above
    uses :math:`\min(\hat\varepsilon + m, 0.49)` (:math:`m` = ``auto_margin``; 0.99 with ``allow_large_drop``;
    a clipped estimate is warned about), and from :math:`T_k` on :math:`\hat\varepsilon` stays fixed
    (``reestimate=True``, the default for ``"spl"`` on one regression target: re-made at every epoch end, the latest
    positive estimate in force while more than half of the epochs' estimates are positive, else 0 --
    :func:`~lit_robust.selection.auto_drop.combined_estimate`). With ``"auto"`` the default
    ``warmup_epochs=None`` is :math:`T_k = 3`: epochs 1 and 2 estimate, the median of the two is fixed after epoch 2,
    and the ramp reaches it in epoch 3. An explicit ``warmup_epochs=0`` means one estimation epoch without dropping,
    then :math:`\hat\varepsilon` from epoch 1 (the same as ``warmup_epochs=1``), from a model trained one epoch,
    which tends to over-count (warned at construction). The estimate is the same on every rank, with either
    ``scope`` (the scores are gathered before estimating); another world size deals other batches and so trains
    another model, whose estimate can differ (a newcomer's 47.1 % on one process, 47.4 % on two); it is logged as
    ``filter/estimated_corruption``, kept in ``FilterEpochRecord.estimated_corruption`` and checkpointed. With
    :class:`~lit_robust.AdversarialTrigger` the scores are those of the filtered (outer) step, or of the inner step
    with ``filter_in="inner"``.

    Args:
        rule: ``"prl"``, ``"spl"`` or ``"prl_g"``.
        drop_ratio: :math:`\varepsilon \in [0, 0.5)`, the fraction of every batch dropped after warm-up
            (the guarantee needs :math:`\varepsilon < 0.5`), or ``"auto"``: epoch 0 drops nothing, each warm-up
            epoch estimates :math:`\varepsilon` from its scores (``estimator``), and the drop ratio then ramps to the
            median of those estimates (after a warm-up of 3 epochs by default, so that the model has learnt the clean
            samples before the estimate is fixed).
        warmup_epochs: :math:`T_k \ge 0`, epochs over which the drop ratio ramps up from 0; ``None`` (default):
            0 with a numeric ``drop_ratio``, 3 with ``"auto"``
            (:data:`~lit_robust.selection.auto_drop.AUTO_WARMUP_EPOCHS`).
        scope: ``"local"`` or ``"global"``.
        loss: the loss layer for ``rule="prl"``: ``"ce"`` (logits, class-index or probability targets),
            ``"mse"`` (:math:`\frac1q\sum_j(\hat y_{ij}-y_{ij})^2`), a callable ``loss(outputs, targets) -> [B]``,
            or ``None`` to infer it from the targets (integer labels or ``[B, C]`` class probabilities such as
            one-hot or mixup targets → ``"ce"``, other floating point → ``"mse"``:
            :func:`~lit_robust.functional.scores.infer_loss_layer`).
            The other rules do not read it (a warning says so).
        allow_large_drop: allow :math:`\varepsilon \in [0.5, 1)` (no guarantee).
        prl_g_backend: ``"auto"``, ``"bookkeeping"`` or ``"two_pass"`` (``rule="prl_g"`` only; see above).
        estimator: ``drop_ratio="auto"`` only. ``"disagreement"`` (default):
            :func:`~lit_robust.estimate_corruption_from_predictions`, the share of samples whose predicted label (the
            argmax of the ``[B, C]`` outputs ``per_sample_loss`` returned in the training step: no extra forward;
            per sample its latest step of the epoch) differs from the given integer label, corrected for the training
            error on the clean component of the score mixture; a module without integer targets or ``[B, C]``
            outputs gets ``"gmm"`` (one info line). ``"gmm"`` / ``"bmm"``: the Gaussian / Beta mixture of
            :func:`~lit_robust.estimate_corruption` on the scores alone (``"gmm"`` was the default before).
            Measured (``benchmarks/results/corruption_rate_prl_auto.md``, PRL(L), 21 classification rows, 3 seeds):
            PRL auto at most 1 point below PRL at the true rate in 71 % of rows with ``"disagreement"``, 57 % with
            ``"gmm"``, mean difference −0.5 vs −3.9 points (``"gmm"`` estimated 0 under 40 % systematic noise and lost
            17-27 points there); median estimate error 4.2 vs 2.6 points, and on clean data ``"disagreement"``
            estimates about the training error (2.7-17.5 %, −0.5 to −1.9 points of accuracy; ``"gmm"``: 0). Over 9
            seeds (``corruption_rate_prl_9seeds.md``): ``"disagreement"`` 76 %, ``"class_floor"`` 81 % of rows.
            ``"class_floor"``: :func:`~lit_robust.estimate_corruption_from_class_floor` on the same labels -- a low
            quantile of the per-class disagreement rates; only when every class is corrupted at one rate (it reads
            about 0 when only some classes are).
        auto_margin: :math:`m \in [0, 0.5)` dropped on top of the estimate (``"auto"`` only; default 0).
        reestimate: re-estimate at the end of every epoch, not only in warm-up (``"auto"`` only). ``None``
            (default): ``True`` where the scores are one regression target's losses (``"spl"`` on a fit that reads one
            regression target, as the gmm's squared-error restart does), ``False`` otherwise. On such targets glitches
            of several sizes show in layers, and an estimate fixed after warm-up kept the first
            (``benchmarks/regression_restart.py``, 30 noisy runs: median error 2.74 points re-estimated against 7.36
            fixed, mean test R² 0.708 against 0.632; clean runs 0.0 % either way). Re-estimating, one epoch's reading
            does not swing the drop ratio: the latest positive estimate is in force while more than half of the epochs'
            estimates are positive, else 0 (clean Diabetes had dropped 47-49 % of its rows for 11 epochs of 30 on
            one seed when the latest epoch's estimate was in force).
        report: write the per-sample report (:mod:`lit_robust.report`) at the end of training:
            ``<folder>/filter_<rule>_report.csv``, one row per training sample, most suspicious first, with the
            mean of the rule's score over the sample's batches in the last epoch (``score_last_epoch``, training
            mode, as the filter saw it), whether the last epoch kept it, the epoch that first dropped it, its clean
            posterior (the filter's ``estimator`` on those scores and predictions: :mod:`lit_robust.report`), the
            given label, the prediction
            of the last epoch's training forward (argmax of the ``[B, C]`` outputs ``per_sample_loss`` returned,
            for integer class targets) and the ground truth when the batches carry it. The per-sample sums stay
            on the training device during the epoch (no host synchronisation per step) and are added over the
            ranks at each validation end and epoch end; rank 0 writes the file, one row per sample. In epochs
            that drop nothing (warm-up) the ``"prl"``/``"spl"`` scores are computed for the report anyway (they
            cost no backward); ``"prl_g"``'s extra backward is then run in the Trainer's last epoch only.
            ``None`` (default): on when ``report_dir`` is given or under ``lit-robust fit``, else off; the path
            is :attr:`report_path`. A ``fit`` again on a Trainer that reached ``max_epochs`` trains nothing and
            writes none (:attr:`report_path` stays the earlier fit's); one resumed with ``ckpt_path`` from a
            finished fit's checkpoint writes the same report again.
        report_dir: the report's folder (created if missing); default: the logger's folder
            (``trainer.log_dir``; the Trainer's ``default_root_dir`` without a logger). Checked at setup, before
            training: a folder that cannot be written is a ``ValueError``.
        report_format: ``"csv"`` (default; ``pandas.read_csv`` opens it) or ``"parquet"`` (needs pyarrow).
        restart_on_reinit: restart the warm-up (and the ``"auto"`` estimation window) at the epoch a round-based
            callback re-initialises the model (default ``True``); ``False`` counts epochs from the start of the fit.
        check_per_sample: at the fit's first training batch, check (in eval mode, without gradients) that
            ``per_sample_loss`` gives one loss per sample, each independent of the rest of the batch: a batch mean
            broadcast to every sample would make every kept subset the same mean, a filter that filters nothing.
            ``False`` skips it (e.g. a loss drawn at random per call).

    Examples:
        >>> f = BatchFilter("prl", drop_ratio=0.3, warmup_epochs=10)
        >>> [round(f.keep_ratio_at(t), 2) for t in (0, 5, 10, 20)]
        [1.0, 0.85, 0.7, 0.7]
    """

    needs_batch = True  # its scores read the batch's indices and targets (`RobustMixin.reduce_loss`)

    def __init__(
        self,
        rule: Rule,
        drop_ratio: float | Literal["auto"],
        warmup_epochs: int | None = None,
        scope: Literal["local", "global"] = "local",
        loss: Literal["ce", "mse"] | Callable[[Tensor, Tensor], Any] | None = None,
        allow_large_drop: bool = False,
        prl_g_backend: PrlGBackend = "auto",
        estimator: FilterEstimator = DEFAULT_FILTER_ESTIMATOR,
        auto_margin: float = 0.0,
        reestimate: bool | None = None,
        report: bool | None = None,
        report_dir: str | None = None,
        report_format: ReportFormat = "csv",
        restart_on_reinit: bool = True,
        check_per_sample: bool = True,
    ) -> None:
        super().__init__()
        if rule not in ("prl", "spl", "prl_g"):
            # as "Auto" gets "did you mean 'auto'?" (a vision newcomer's "PRL" got the list alone)
            hint = (f" (did you mean {rule.strip().lower()!r}?)"
                    if isinstance(rule, str) and rule.strip().lower() in ("prl", "spl", "prl_g") else "")
            raise ValueError(f"`rule` must be one of 'prl', 'spl', 'prl_g', got {rule!r}{hint}.")
        if prl_g_backend not in _BACKENDS:
            raise ValueError(f"`prl_g_backend` must be one of 'auto', 'bookkeeping', 'two_pass', got {prl_g_backend!r}.")
        if rule != "prl_g" and prl_g_backend != "auto":  # refused as the "auto"-only arguments beside a number are
            raise ValueError(f"`prl_g_backend` applies to rule='prl_g' only, got prl_g_backend={prl_g_backend!r} with "
                             f"rule={rule!r}: remove it, or pass rule='prl_g'.")
        warn_unused_loss("BatchFilter", rule, loss)
        self.restart_on_reinit = check_bool("restart_on_reinit", restart_on_reinit)
        self.rule = rule
        self.drop_ratio: float | Literal["auto"] = drop_ratio
        self.estimator, self.auto_margin, self.reestimate = estimator, auto_margin, reestimate
        self.warmup_epochs = warmup_epochs
        self.scope = scope
        self.loss = loss
        self.allow_large_drop = allow_large_drop
        self._auto: AutoDropRatio | None = None
        self._apply_arguments()
        check_report_args(report, report_dir, report_format)
        self.prl_g_backend = prl_g_backend
        self.report = report
        self.report_dir = report_dir
        self.report_format = report_format
        self.report_path: str | None = None  # the report written by the last fit
        self.check_per_sample = check_bool("check_per_sample", check_per_sample)
        self._checked_per_sample = False  # once per fit, at its first training batch
        self._scored_once = False  # whether this fit scored a training batch (`_mask` scores the first one)
        self.owner = "BatchFilter"  # the name its notes speak for (a module that brings the filter sets its own)
        # whether the epoch's training batches went through the filter (said once when none did)
        self._consulted, self._batches_run, self._told_unconsulted = True, 0, False
        self._records_this_batch, self._told_twice = 0, False  # `keep_mask` calls in this training batch
        self._unrecorded_preview: Callable[[], None] | None = None  # see `on_before_backward`
        self._report = EpochReport("BatchFilter", f"filter_{self.rule}_report")  # the per-sample report's sums
        self._reset_fit_state()
        # fit-time helpers (not state)
        self._report_scores_now = False  # this step's scores are computed although nothing is dropped
        self._trainer: pl.Trainer | None = None
        self._module: RobustMixin | None = None
        self._recorder: GradNormRecorder | None = None
        self._backend: Literal["bookkeeping", "two_pass"] | None = None  # the one in use during a fit

    # -- schedule -------------------------------------------------------------------------------------------
    def drop_ratio_at(self, epoch: int) -> float:
        r""":math:`\varepsilon_t = \varepsilon \min(t / T_k, 1)` for the 0-based epoch ``t`` (with ``"auto"``: from
        the current estimate, 0 before the first one), ``t`` counted from :attr:`schedule_start`."""
        if self._auto is not None:
            return self._auto.drop_ratio_at(epoch)
        return scheduled_drop_ratio(max(epoch - self._schedule_start, 0), self.drop_ratio, self._warmup)

    @property
    def _warmup(self) -> int:
        """``warmup_epochs`` as the schedule uses it (``None``: 3 with ``"auto"``, else 0), read afresh at every use: a
        notebook user may set ``drop_ratio`` or ``warmup_epochs`` between fits."""
        return resolved_warmup(self.warmup_epochs, self.drop_ratio)

    @property
    def schedule_start(self) -> int:
        """The epoch the warm-up counts from: 0, or the latest epoch at which a round-based callback re-initialised
        the model (with ``restart_on_reinit``)."""
        return self._schedule_start

    def _follow_restart(self) -> None:
        """Restart the schedule if the module announces a re-initialisation newer than the one it counts from
        (read at every use during the step: independent of the callbacks' order)."""
        if not self.restart_on_reinit or self._module is None:
            return
        start = self._module.model_start_epoch
        if start is not None and start > self._schedule_start:
            self._schedule_start = start
            if self._auto is not None:
                self._auto.restart(start)

    @property
    def estimated_corruption(self) -> float | None:
        """``drop_ratio="auto"``: the estimate of the corrupted fraction in force (``None`` before the first one,
        and with a numeric ``drop_ratio``): the median of the warm-up epochs' estimates, or re-estimating the vote of
        :func:`~lit_robust.selection.auto_drop.combined_estimate`."""
        return None if self._auto is None else self._auto.estimate

    def _collects(self, epoch: int) -> bool:
        return self._auto is not None and self._auto.collects(epoch)

    def keep_ratio_at(self, epoch: int) -> float:
        """The kept fraction :math:`R(t) = 1 - \\varepsilon_t` (thesis Alg. 5)."""
        return 1.0 - self.drop_ratio_at(epoch)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(rule=self.rule, drop_ratio=self.drop_ratio, scope=self.scope)

    def resume_arguments(self) -> dict[str, Any]:
        """The arguments outside :attr:`state_key` that change what a fit does; a checkpoint holds them and a resumed
        fit must have the same (checked at restore). Output-only ones (``report``, ...) may change."""
        # the warm-up in use, not the argument: a checkpoint of a numeric ratio's default 0 resumes with `None`
        return {"warmup_epochs": self._warmup, "loss": loss_argument(self.loss),
                "allow_large_drop": self.allow_large_drop,
                "estimator": self.estimator, "auto_margin": self.auto_margin, "reestimate": self.reestimate,
                "restart_on_reinit": self.restart_on_reinit}

    # -- setup ----------------------------------------------------------------------------------------------
    def _reset_fit_state(self) -> None:
        """The running state (checkpointed): fresh at every fit's setup (a resumed fit then restores it from the
        checkpoint), so that one instance serves fit after fit as a new one would."""
        self._short_epoch: tuple[int, int, int] | None = None  # an epoch a stop cut short, at its end
        self.history: list[FilterEpochRecord] = []
        self._schedule_start = 0  # the epoch the warm-up counts from (a re-initialisation's; see restart_on_reinit)
        self._counters: Tensor | None = None  # this epoch's running counts, see _COUNTERS, then by class
        self._counters_epoch: int | None = None
        self._warned_small = False
        self._told_repeats = self._told_unsharded = False
        self._nonfinite: Tensor | None = None  # this epoch's count of NaN/inf training losses, on the device
        self._told_nonfinite = False
        # "auto": a preview's (index, scores, given, predicted), kept if no keep_mask follows
        self._pending: tuple[Tensor, Tensor, Tensor | None, Tensor | None] | None = None
        self._collected_step = False
        if self._auto is not None:
            self._auto.reset()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_no_training(trainer, self.owner)
        # a module that brings its filter (RobustRealNVP) has no `history` of its own (a reviewer's)
        refuse_sparse_monitors(trainer, self.owner, sparse_metrics(trainer,
            ("filter/dropped_corrupted_frac",), "filter/estimated_corruption", self.drop_ratio),
            "its `history`" if self.owner == "BatchFilter" else "`model.batch_filter.history`")
        sigterm_without_collectives(trainer)  # Lightning's handler hangs a DDP fit: see the function
        earlier_path, self.report_path = self.report_path, None  # this fit's, once written (not a failed fit's)
        self._report_before, self._trained_this_fit = earlier_path, False  # put back if this fit is refused
        module = require_mixin("BatchFilter", pl_module)
        warn_if_mixed_lightning(trainer)
        fresh = begin_fit(self, trainer, self.owner, earlier_path)
        self._apply_arguments(goes_on=not fresh)
        self._trained_this_fit = False
        self._resumed_epoch: int | None = None  # the epoch a checkpoint written inside it resumes
        self._skipped_end: int | None = None  # see `_close_skipped_epoch`
        if fresh:  # an earlier fit's epochs do not carry over
            self._reset_fit_state()
            # nor its re-initialisation, announced on the module (a reviewer's ITLM fit left epoch 1 there, and this
            # filter's warm-up on the reused module restarted at epoch 1 of a fit without ITLM); a resumed fit's
            # filter restores the epoch it counts from with its own state
            module.model_start_epoch = None
        elif self._foreign_state is None:  # the same Trainer's go on
            self._drop_partial_epoch(trainer.current_epoch)
        self._checked_per_sample = False
        self._scored_once = False
        self._told_twice = False  # once per fit (a reviewer's second fit double-counted again without a word)
        self._inferred_loss = None  # `loss=None`: PRL's loss layer, decided at this fit's first batch
        self._trainer, self._module = trainer, module
        seed_persistent_workers(trainer)  # a resumed fit draws what the uninterrupted one draws
        short = warmup_outlasts_fit(self.drop_ratio, self.warmup_epochs, planned_epochs(trainer))
        if short is not None:
            rank_zero_warn(f"{self.owner}: {short}")
        if self.rule == "prl_g":
            self._backend = self._resolve_backend(trainer.world_size)
            self._recorder = GradNormRecorder(pl_module)
            # hooks from the start, paused: a module compiled during the warm-up keeps in its graph the hooks it was
            # traced with (TorchDynamo does not guard on module hooks), and hooks first added at the end of the
            # warm-up went unseen (a newcomer's compiled fit failed at its first filtering step)
            self._recorder.attach()
            self._recorder.pause()
        self._report.setup(trainer, self.report, self.report_dir, self.report_format, self._auto, fresh=fresh)
        if self._auto is not None:
            self._auto.setup_fit(trainer)
        module.add_batch_selector(self)

    def _say_unsharded(self, epoch: int, seen: int) -> None:
        """Warn once per fit when the processes of a DDP fit together saw the training set half as often again as its
        length or more in ``epoch``: a DDP newcomer's `use_distributed_sampler=False` with a plain loader had each
        process train on the whole set (`seen` 3,000 of 1,500 every epoch), without a word."""
        n, world = getattr(self, "_train_length", None), distributed.world_size()
        if world < 2 or not n or 2 * seen < 3 * n or getattr(self, "_told_unsharded", False):
            return
        self._told_unsharded = True
        rank_zero_warn(f"{self.owner}: epoch {epoch}'s batches held {seen} samples of a training set of {n}, over "
                       f"{world} processes: each process trained on the whole set, or a sampler drew samples more "
                       "than once. Under DDP each process needs its own share (Lightning's DistributedSampler, off "
                       "with `use_distributed_sampler=False`: give such a loader a `DistributedSampler` of its own).")

    def _say_repeated_indices(self, epoch: int) -> None:
        """Warn once per fit when a stream (IterableDataset) yielded an index more than once in ``epoch``: a streaming
        user's shard-local indices and unsplit workers read ε̂ 27.33 % for 20 % and a report whose rows mixed
        several samples each, told only that some rows had no score."""
        # a stream resumed inside an epoch starts again from its first sample: that epoch's repeats are the resume's
        if not getattr(self, "_stream", False) or self._told_repeats or epoch == getattr(self, "_resumed_epoch", None):
            return
        repeated = 0 if self._auto is None or not self._auto.collects(epoch) else self._auto.repeated
        if self._report.active:
            state = self._report.state
            repeated = max(repeated, int((state.sums[1, : state.n] > 1).sum()))
        if repeated:
            self._told_repeats = True
            rank_zero_warn(f"{self.owner}: epoch {epoch} saw {repeated} dataset indices more than once from the stream "
                           "(IterableDataset): each sample must carry an index of its own, unique in the data set. "
                           "With DataLoader workers each worker must yield its own share (split the shards by "
                           "`torch.utils.data.get_worker_info()`). A repeated index merges different samples in the "
                           "report and the `\"auto\"` estimate.")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # only after a batch of this fit trained (a reviewer's fit refused at train start was told to fit on)
        if self._report.active and not self._report.written and getattr(self, "_trained_this_fit", False):
            rank_zero_warn(unwritten_report_note(self.owner, exception))
        if not getattr(self, "_trained_this_fit", False) and self.report_path is None:
            # a fit refused before it trained leaves the earlier fit's report, and its path (a notebook newcomer's)
            self.report_path = getattr(self, "_report_before", None)
        # Lightning calls no `teardown` after a fit that raised: the filter stayed among the module's selectors and
        # PRL(G)'s hooks kept recording every later forward of the module (with its autograd graph) into a list
        # nothing cleared; a fit that goes on sets both up again
        self._release(pl_module)

    def _apply_arguments(self, goes_on: bool = False) -> None:
        """Check the schedule's arguments as they are now and build the ``"auto"`` estimator for them (at construction
        and at each fit's setup: a notebook user's `prl.warmup_epochs = 3` and `drop_ratio = 0.25` on a reused
        ``"auto"`` filter were ignored); on a fit that goes on, changed ``"auto"`` arguments are refused."""
        self.drop_ratio = check_auto_args(self.drop_ratio, self.estimator, self.auto_margin, self.reestimate,
                                          self.allow_large_drop, estimators=FILTER_ESTIMATORS,
                                          default_estimator=DEFAULT_FILTER_ESTIMATOR)
        check_filter_args(self.warmup_epochs, self.scope, self.loss)
        self.auto_margin = float(self.auto_margin)
        # its notes speak for the filter's owner: RealNVP's `drop_ratio = "auto"` set on a filter built for a number
        # builds the estimator here, and it said "BatchFilter: ..." for a filter the user never configured
        new = auto_for(self._auto, getattr(self, "owner", "BatchFilter"), self.drop_ratio, self.estimator,
                       self.auto_margin, self.reestimate, self._warmup,
                       high=1.0 if self.allow_large_drop else 0.5, ranked_by=REPORT_RANKS)
        self._auto = kept_on_a_fit_that_goes_on(self._auto, new, getattr(self, "owner", "BatchFilter"), goes_on)

    def _drop_partial_epoch(self, epoch: int) -> None:
        """A fit going on from an earlier fit of the same Trainer that stopped inside ``epoch`` (an exception, a
        KeyboardInterrupt) trains that epoch again from its first batch: what the stopped fit counted of it goes (a
        notebook user's epoch read `seen=2012` of 1,500 samples)."""
        if self._counters_epoch == epoch:
            self._counters, self._counters_epoch = None, None
        self._report.drop_partial_epoch(epoch)
        if self._auto is not None:
            self._auto.drop_partial_epoch()

    def _resolve_backend(self, world_size: int) -> Literal["bookkeeping", "two_pass"]:
        if self.prl_g_backend == "two_pass" or (self.prl_g_backend == "auto" and world_size > 1):
            return "two_pass"
        if world_size > 1:
            raise ValueError(f"`prl_g_backend='bookkeeping'` runs in one process only (got world size {world_size}): "
                             "its correction of `.grad` would come after DDP's gradient all-reduce. Use "
                             "`prl_g_backend='auto'` or 'two_pass'.")
        return "bookkeeping"

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._release(pl_module)

    def _release(self, pl_module: pl.LightningModule) -> None:
        """Leave the module as it was before this fit's setup (at teardown, and at an exception, after which
        Lightning calls no teardown)."""
        if isinstance(pl_module, RobustMixin):
            pl_module.remove_batch_selector(self)
        if self._recorder is not None:
            self._recorder.detach()
            self._recorder = None
        self._backend = None
        self._trainer = self._module = None
        self._unrecorded_preview = None  # holds the batch (and a closure: no pickling) of a fit stopped in a step

    # -- training hooks -------------------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_state_owner(self)
        started_without_its_state(self, trainer, self.owner)
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        self._stream = isinstance(dataset, torch.utils.data.IterableDataset)
        self._report.start(trainer, pl_module.device)  # with a report, its own refusal of several loaders comes first
        refuse_several_loaders(trainer.train_dataloader)  # at the start, not in the first batch's layout check
        self._train_length = length = train_set_length(trainer)
        # a DDP newcomer's training sets of 1,500 and 1,400 samples hung the fit in the filter's epoch-end collective
        # (ITLM had named them), and a `drop_ratio` of 0.3 and 0.2 trained on a mix of both without a word
        check_same_on_every_rank(
            self.owner, {"`rule`": self.rule, "`drop_ratio`": self.drop_ratio, "`scope`": self.scope,
                         "the training set's length": length,
                         **{f"`{k}`": v for k, v in self.resume_arguments().items()}},
            "the processes filter their batches in step, their counts summed at each epoch's end (with "
            "`scope='global'` one cut serves them all), so each needs the same settings and the same training set.")
        warn_inexact_resume(trainer, self.owner, skipped_end=getattr(self, "_skipped_end", None))
        if self._close_skipped_epoch(trainer, pl_module):
            start_epoch_after_skipped_end(trainer, lambda: self.on_train_epoch_start(trainer, pl_module))
        check_collate(trainer.train_dataloader, self.owner)  # before the first batch, which the collate builds
        if (self._auto is not None or self.drop_ratio) and draws_in_order(trainer.train_dataloader):
            # a data-pipeline newcomer's class-sorted digits under `shuffle=False`: "auto" read 99.4 %, and the clip
            # warning's advice (a longer warm-up) read 98.6 %; ITLM says so of its own loader
            rank_zero_warn(f"{self.owner}: the training loader draws its samples in order (`shuffle=False`), and the "
                           "filter ranks each batch's samples against each other: where the data set is sorted (by "
                           "class, as an image folder or a sorted table lists it) each batch holds one part of it, "
                           "and the filter drops that part's hardest samples, not the data set's (class-sorted digits: "
                           "`\"auto\"` read 99.4 % for 28.9 %). Build the training loader with `shuffle=True`.")
        self._check_early_stopping(trainer)
        if self._auto is not None:  # SPL's scores are the losses; PRL(L)'s are gradient norms
            self._auto.read_data(trainer, scores_are_losses=self.rule == "spl",
                                 scores_are_residual_norms=self.rule == "prl" and self.loss in (None, "mse"))

    def _check_early_stopping(self, trainer: pl.Trainer) -> None:
        """Warn before training when an ``EarlyStopping`` may end the fit inside the warm-up (ITLM warns of its rounds
        alike; :func:`warn_early_stopping_in_warmup`)."""
        warn_early_stopping_in_warmup(self.owner, trainer, self._warmup, self._auto is not None, self.drop_ratio)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._counters is None or self._counters_epoch != trainer.current_epoch:
            self._counters = torch.zeros(len(_COUNTERS), dtype=torch.int64, device=pl_module.device)
            self._counters_epoch = trainer.current_epoch
        self._report.start_epoch(trainer.current_epoch)
        self._consulted, self._batches_run = False, 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == 0:  # runs before the module's training step: a batch without indices gets the hint first
            try:
                unpack_batch(batch, owner=getattr(self, "owner", "BatchFilter"))
            except ValueError as err:
                if not getattr(self, "_stream", False) or "IndexedDataset" not in str(err):
                    raise
                # a stream of `(x, y)` was told to wrap it in IndexedDataset, which refuses streams (a data-pipeline
                # newcomer did, and only then read the stream's advice)
                raise ValueError(f"`{self.owner}`: the training set is a stream (IterableDataset), whose batches must "
                                 "carry each sample's index: make it yield `(index, input, target[, is_corrupted])` "
                                 "itself, the index unique within the data set (for `report=True` the indices 0 .. "
                                 "n - 1 and a `__len__` returning n); `IndexedDataset` cannot index a stream. Got: "
                                 f"{str(err).split('`: ', 1)[-1].split('. ', 1)[0]}.") from None
            if self.check_per_sample and not self._checked_per_sample:
                # a batch mean broadcast to every sample would make every trim the same mean: silently no filter
                check_per_sample_at_first_batch("BatchFilter", pl_module, batch, what="per_sample_loss")
                self._checked_per_sample = True
        self._records_this_batch = 0
        self._follow_restart()
        epoch = trainer.current_epoch
        filtering = self.drop_ratio_at(epoch) > 0
        # the report's scores of an epoch that drops nothing: free for prl/spl, an extra backward for prl_g (then
        # only in the last epoch, the one the report shows)
        self._report_scores_now = self._report.target is not None and not filtering and (
            self.rule != "prl_g" or epoch + 1 == trainer.max_epochs)
        if self._recorder is not None and (filtering or self._collects(epoch) or self._report_scores_now):
            self._recorder.attach()  # record this step's forward (hooks registered once)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._batches_run += 1
        self._trained_this_fit = True
        if self._recorder is not None:
            self._recorder.pause()
        if self._auto is not None and self._pending is not None and not self._collected_step:
            self._auto.add(*self._pending)  # only a preview ranked this step (AdversarialTrigger, filter_in="inner")
        self._pending, self._collected_step = None, False
        self._unrecorded_preview = None  # (a step that skipped its backward records nothing)
        if at_last_batch_under_ddp(trainer):  # before a checkpoint of this batch saves rank 0's state
            self._gather_epoch_to_rank_zero(trainer.current_epoch, pl_module.device)

    def _gather_epoch_to_rank_zero(self, epoch: int, device: torch.device) -> None:
        """Every rank's counts, report sums and ``"auto"`` scores of ``epoch`` onto rank 0 (a collective; see
        :func:`~lit_robust.callbacks._resume.at_last_batch_under_ddp`): the epoch's end reads the same totals."""
        self._counters = reduce_counters_to_rank_zero(self._counters)
        self._report.flush()
        if self._auto is not None:
            self._auto.gather_to_rank_zero(epoch, device)

    def epoch_record(self, epoch: int) -> FilterEpochRecord:
        """The record of ``epoch``: from :attr:`history` once the epoch has ended, else from the running counts
        (summed over ranks: a collective, so every rank must call it)."""
        for rec in reversed(self.history):
            if rec.epoch == epoch:
                return rec
        return self._record_from_counts(epoch)

    def _record_from_counts(self, epoch: int) -> FilterEpochRecord:
        counts = self._counters if self._counters is not None else torch.zeros(len(_COUNTERS), dtype=torch.int64)
        values = [int(v) for v in distributed.all_reduce_sum(as_long_as_every_ranks(counts)).tolist()]
        seen, dropped, c_seen, c_dropped, batches, truth = values[:len(_COUNTERS)]
        rec = FilterEpochRecord(epoch=epoch, drop_ratio=self.drop_ratio_at(epoch), seen=seen, dropped=dropped)
        rec.seen_by_class, rec.kept_by_class = split_class_counts(values[len(_COUNTERS):])
        if batches and truth == batches:
            rec.corrupted_seen, rec.corrupted_dropped = c_seen, c_dropped
            rec.dropped_corrupted_frac = c_dropped / dropped if dropped else None
            rec.corrupted_frac = c_seen / seen if seen else None
        return rec

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a checkpoint written at validation end comes before `on_train_epoch_end`: add the ranks' sums first
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self._report.flush()

    def _close_skipped_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """A fit resumed from a checkpoint written at an epoch's last batch (``every_n_train_steps``): Lightning counts
        that epoch done and goes on without its ``on_train_epoch_end``
        (:func:`~lit_robust.callbacks._resume.epoch_whose_end_was_skipped`). Run that epoch's end here (at train start;
        at train or fit end where Lightning trains nothing more), without logging, which Lightning allows in epoch
        hooks only: its counts and ``"auto"`` scores ran into the next epoch's record and estimate (epoch 0 got no
        estimate, epoch 1 read ``seen=320`` of 160 and estimated from both epochs' scores). Returns whether it ran
        (a collective then: every rank loaded the same checkpoint)."""
        epoch, self._skipped_end = getattr(self, "_skipped_end", None), None
        if epoch is None:
            return False
        self._epoch_end(trainer, pl_module, epoch, log=False)
        return True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_skipped_epoch(trainer, pl_module)
        last = self.history[-1] if self.history else None
        warn_ended_in_warmup(self.owner, trainer, None if last is None else (last.epoch, last.drop_ratio),
                             self._warmup, self._auto is not None, start=self._schedule_start)
        say_reestimated(self._auto)
        # the posterior of the filter's estimator (its "auto" estimate's), so that it agrees with that estimate
        path = self._report.write(trainer, getattr(self, "estimator", "gmm"))
        if path is not None:
            self.report_path = path
        if self._report.target is None:  # (the report says it of its rows)
            say_starved_classes(self.owner, self.history, self._short_epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        empty = no_training_batches(trainer)
        if empty is not None:
            rank_zero_warn(f"{self.owner}: {empty}")
        if say_trained_nothing(self, self.owner, reports=self._report.target is not None):
            return
        # resumed from the fit's last batch, Lightning skips the whole fit loop, `on_train_end` too
        self._close_skipped_epoch(trainer, pl_module)
        path = self._report.write_if_skipped(trainer, getattr(self, "estimator", "gmm"))
        if path is not None:
            self.report_path = path
        say_resumed_a_finished_fit(self, trainer, self.owner, reports=path is not None)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, trainer.current_epoch)

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, log: bool = True) -> None:
        # a collective: every rank reaches this once per epoch
        self._follow_restart()
        if self._batches_run and not self._consulted and not self._told_unconsulted:
            # a manual-optimisation newcomer's `training_step` took `losses.mean()`: 24 epochs of `seen: 0`, test
            # accuracy that of plain training, and "per-sample report written" for a report without a score
            self._told_unconsulted = True
            rank_zero_warn(f"{self.owner}: none of the {self._batches_run} training batches of epoch "
                           f"{epoch} went through the filter, so it filters nothing: the module's "
                           "training step never called `reduce_loss`. Compute the loss as "
                           "`self.reduce_loss(losses, batch, outputs)` (what `per_sample_loss` returns), once per "
                           "batch (a `training_step` of your own, manual optimisation included).")
        self._say_nonfinite(epoch, pl_module)
        self._report.end_epoch(epoch, trainer if log else None)
        self._short_epoch = epoch_cut(trainer) if log else None  # (an epoch closed at train start was whole)
        rec = self._record_from_counts(epoch)  # the drop ratio of this epoch, before a new estimate
        if self._auto is not None:
            # (an epoch closed at train start, skipped by Lightning, was whole: nothing to say of it)
            self._auto.end_epoch(epoch, pl_module.device, epoch_part(trainer) if log else None)  # a collective too
            rec.estimated_corruption = self._auto.estimate
        self.history.append(rec)
        self._counters = None
        self._say_repeated_indices(epoch)
        self._say_unsharded(epoch, rec.seen)
        if not log:
            return
        for key, value in (("filter/drop_ratio", rec.drop_ratio),
                           ("filter/dropped_corrupted_frac", rec.dropped_corrupted_frac),
                           ("filter/estimated_corruption", rec.estimated_corruption)):
            if value is not None:
                # identical on every rank, so averaging over ranks is exact
                pl_module.log(key, float(value), on_step=False, on_epoch=True, sync_dist=True)

    # -- BatchSelector ----------------------------------------------------------------------------------------
    def keep_mask(self, losses: Tensor, batch: Any, outputs: Any, module: Any) -> Tensor:
        """Keep-mask of one training batch (called by :meth:`RobustMixin.reduce_loss`), counted in :attr:`history`."""
        return self._mask(losses, batch, outputs, module, record=True)

    def preview_mask(self, losses: Tensor, batch: Any, outputs: Any, module: Any) -> Tensor:
        """The same mask as :meth:`keep_mask`, without counting it (e.g. for an inner maximisation step). A training
        step whose loss then averages every sample with the selectors paused (``AdversarialTrigger(filter_in=
        "inner")``) is counted from this preview, every sample kept."""
        return self._mask(losses, batch, outputs, module, record=False)

    def reduce_in_backward(self, losses: Tensor, batch: Any, outputs: Any, module: Any,
                           prior_keep: Tensor | None = None) -> Tensor | None:
        """The book-keeping PRL(G) loss of one training batch (called by :meth:`RobustMixin.reduce_loss`), or
        ``None`` when this filter ranks before the backward (another rule or backend, warm-up, not training).

        The returned scalar's backward computes the scores, keeps ``(selection & prior_keep)`` and writes the
        kept samples' mean gradient into ``.grad``, counted in :attr:`history`
        (:meth:`~lit_robust.functional.scores.GradNormRecorder.filtered_mean`)."""
        trainer = self._trainer
        if not self._filters_now(trainer):
            return None
        self._consulted = True
        if self._backend != "bookkeeping" or self._recorder is None:
            return None
        self._follow_restart()
        epoch = trainer.current_epoch
        eps, collect = self.drop_ratio_at(epoch), self._collects(epoch)
        report = self._report.active
        if eps == 0.0 and not collect and not (report and self._report_scores_now):
            return None
        ib = unpack_batch(batch)
        index = ib.index.to(losses.device)
        k_guess, _ = batch_keep_count(losses.shape[0], eps)
        counted: list[Tensor | None] = [None]  # the selection's first occurrences, for the counts and the report

        def select(scores: Tensor) -> Tensor:
            if eps == 0.0:  # "auto" before its estimate, or the report's scores: score (below) and keep all
                return torch.ones_like(scores, dtype=torch.bool)
            mask, counted[0] = self._select(scores, index, eps)
            return mask

        def on_selected(scores: Tensor, mask: Tensor) -> None:
            self._say_counted_twice()
            self._count(mask, ib.corrupted, counted[0], batch_class_labels(outputs, ib.target, module))
            if collect:  # "auto": the scores of this backward feed the estimate, as keep_mask's do
                self._auto.add(index, scores.detach(), *self._auto_labels(outputs, ib.target, module))
                self._collected_step = True
            if report:
                self._report.add(*only_counted(counted[0], index, scores.detach(), ~mask),
                                 **only_counted_fields(counted[0], report_fields(outputs, ib, module)))

        return self._recorder.filtered_mean(losses, select, k_guess, prior_keep, on_selected)

    def _filters_now(self, trainer: Any) -> bool:
        """Whether a training step of ``trainer`` is this filter's to rank: not outside training, and not in a loop
        run without this callback (Lightning's `Tuner.lr_find` runs the fit loop with its own callback alone: the
        module's `reduce_loss` still asked the filter, whose batch hooks never ran, and a tuner user was warned that
        each batch went through the filter twice)."""
        if trainer is None or not trainer.training:
            return False
        callbacks = getattr(trainer, "callbacks", None)  # (None: a stand-in that is no Lightning Trainer)
        return callbacks is None or any(c is self for c in callbacks)

    def _mask(self, losses: Tensor, batch: Any, outputs: Any, module: Any, record: bool) -> Tensor:
        trainer = self._trainer
        keep_all = torch.ones_like(losses, dtype=torch.bool)
        if not self._filters_now(trainer):
            return keep_all
        self._consulted = True
        self._follow_restart()
        epoch = trainer.current_epoch
        eps = self.drop_ratio_at(epoch)
        ib = unpack_batch(batch)
        index = ib.index.to(losses.device)
        collect = self._collects(epoch)
        scores = None
        counted = None  # all entries count, unless the global selection left repeats out
        # a preview scores for the report whenever there is one: it may be all the filter sees of the batch (see
        # `on_before_backward`), and `_report_scores_now` may not be set yet (the callbacks' order)
        report_scores = self._report_scores_now if record else self._report.active
        if eps == 0.0:
            mask = keep_all
            if collect or report_scores or (
                    record and not self._scored_once and self.rule == "prl" and self.drop_ratio != 0):
                # the first batch is scored whatever the schedule: a `reduce_loss(losses, batch)` without the outputs
                # PRL needs failed only when the warm-up ended (a researcher lost its 2 epochs)
                scores = self.scores(losses, batch, outputs, module)
        else:
            scores = self.scores(losses, batch, outputs, module)
            mask, counted = self._select(scores, index, eps)
        if record:
            self._record(mask, index, scores, losses, ib, outputs, module, counted)
        else:
            # recorded, as keeping every sample, if the step's loss then averages the whole batch
            seen = (index, scores, losses.detach(), ib, outputs, module)
            self._unrecorded_preview = lambda: self._record(keep_all, *seen)
        if collect:
            labels = self._auto_labels(outputs, ib.target, module)
            if record:
                self._auto.add(index, scores, *labels)
                self._collected_step = True
            else:
                self._pending = (index, scores, *labels)
        return mask

    def _record(self, mask: Tensor, index: Tensor, scores: Tensor | None, losses: Tensor, ib: Any, outputs: Any,
                module: Any, counted: Tensor | None = None) -> None:
        """Count one training batch's ``mask`` in this epoch's record, the report and the non-finite losses (the
        entries in ``counted`` only, see :func:`select_and_count`)."""
        self._scored_once = True
        self._say_counted_twice()
        self._count(mask, ib.corrupted, counted, batch_class_labels(outputs, ib.target, module))
        bad = (~torch.isfinite(losses.detach())).sum()  # summed on the device: no host sync per step
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite + bad.to(self._nonfinite.device)
        if self._report.active:
            self._report.add(*only_counted(counted, index, scores, ~mask),
                             **only_counted_fields(counted, report_fields(outputs, ib, module)))

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        # `AdversarialTrigger(filter_in="inner")`: the filter only previewed the batch (to pick the inner step's
        # samples) and the training step's loss averaged every sample, with the selectors paused; a reviewer's
        # `history` then read seen=0 and the report had no score. Such a step is recorded from its preview, every
        # sample kept (nothing was dropped from the loss). Here, inside the step: the trigger resumes the selectors at
        # batch end, whichever callback's hook runs first.
        preview, self._unrecorded_preview = self._unrecorded_preview, None
        if preview is not None and self._records_this_batch == 0 and getattr(pl_module, "selectors_paused", False):
            preview()

    def _say_counted_twice(self) -> None:
        """Warn once per fit when one training batch is counted a second time: a researcher's two-optimizer step
        called ``reduce_loss`` once per optimizer and read ``seen=2800`` for 1,400 samples without a word."""
        self._records_this_batch += 1
        if self._records_this_batch == 2 and not self._told_twice:
            self._told_twice = True
            rank_zero_warn(
                f"{self.owner}: one training batch went through the filter twice (`reduce_loss` or `keep_mask` "
                "called twice in one `training_step`, e.g. once per optimizer): it is counted twice in `history`, "
                "the report and the `\"auto\"` estimate. Ask once per batch and reuse the mask for the second loss "
                "(`keep = self.batch_keep_mask(losses, batch, outputs)`, then `losses[keep].mean()`), or ask the "
                "second time with `record=False`.")

    def _say_nonfinite(self, epoch: int, pl_module: pl.LightningModule) -> None:
        """Warn once per fit when an epoch's per-sample training losses were NaN or infinite (collective). A
        regression analyst's 2 NaN targets of 1,500 ended the fit with NaN weights and no word but the estimator's,
        which they had not asked for; ITLM says so through its collapse check."""
        local = torch.zeros((), dtype=torch.int64, device=pl_module.device) if self._nonfinite is None else \
            self._nonfinite.to(pl_module.device, torch.int64)
        self._nonfinite = None
        if self._told_nonfinite:
            return
        bad = int(distributed.all_reduce_sum(local.reshape(1)).item())
        if bad:
            self._told_nonfinite = True
            rank_zero_warn(
                f"{self.owner}: {bad} per-sample training loss{'' if bad == 1 else 'es'} of epoch "
                f"{epoch} {'was' if bad == 1 else 'were'} NaN or infinite. They come from NaN/inf in "
                "some samples' inputs or targets, from the model's own arithmetic on some sample (e.g. mean-pooling "
                "an empty sequence: 0/0), or from a learning rate too large; such a sample can make its "
                "batch's gradient, and then every weight, NaN, whether the filter drops it or not. Check "
                "`torch.isfinite` of your data, and remove a NaN where `per_sample_loss` makes it (a count "
                "`.clamp(min=1)`; `torch.nan_to_num` of the result leaves the gradient NaN).")

    def _auto_labels(self, outputs: Any, target: Any, module: Any) -> tuple[Tensor | None, Tensor | None]:
        """``(given, predicted)`` integer labels of this batch for ``estimator="disagreement"`` (the argmax of the
        training forward's ``[B, C]`` outputs; ``None`` where the module has none; the module's ``label_key`` part
        of targets and outputs of several parts), else ``(None, None)``."""
        if self._auto is None or not self._auto.uses_labels:
            return None, None
        return given_and_predicted(outputs, target, module)

    def scores(self, losses: Tensor, batch: Any, outputs: Any, module: Any) -> Tensor:
        """This rule's per-sample scores of one batch (lower = more trusted), detached, shape ``[B]``."""
        if self.rule in ("prl", "spl"):
            target = unpack_batch(batch).target
            return loss_layer_scores(self.rule, losses, outputs, target,
                                     fit_loss_layer(self, self.rule, self.loss, outputs, target))
        if self._recorder is None:  # called outside a fit: record nothing, so compute the norms directly
            raise RuntimeError("`rule='prl_g'` computes its scores during `trainer.fit` only (the forward of the "
                               "training step is recorded); outside a fit use `lit_robust.functional.scores.prl_g_scores`.")
        try:
            return self._recorder.compute(losses)
        except RuntimeError as err:
            if "donated buffers" not in str(err):
                raise
            raise ValueError("`prl_g_backend='two_pass'` cannot rank a batch of a `torch.compile`d module: its extra "
                             "backward needs the compiled graph twice, which this graph's backward does not allow (it "
                             "was compiled for one backward, e.g. by an earlier fit of the module in this process). "
                             "Use `prl_g_backend='bookkeeping'` (one backward; the default in one process).") from err

    def _select(self, scores: Tensor, index: Tensor, eps: float) -> tuple[Tensor, Tensor | None]:
        return select_and_count(scores, index, eps, self.scope, self._warn_small)

    def _warn_small(self, n: int, eps: float) -> None:
        if not self._warned_small:
            self._warned_small = True
            rank_zero_warn(small_batch_message("BatchFilter", n, eps))

    def _count(self, mask: Tensor, corrupted: Tensor | None, counted: Tensor | None = None,
               classes: tuple[Tensor | None, int] = (None, 0)) -> None:
        dev = mask.device
        labels, slots = classes  # (`batch_class_labels`)
        if labels is not None and labels.numel() != mask.numel():
            labels = None  # (not one per entry: nothing to count by class)
        if counted is not None:  # a padding repeat is neither seen nor dropped (see `select_and_count`)
            counted = counted.to(dev)
            mask = mask[counted]
            corrupted = None if corrupted is None else corrupted.to(dev).reshape(-1)[counted]
            labels = None if labels is None else labels.to(dev).reshape(-1)[counted]
        if self._counters is None:
            self._counters = torch.zeros(len(_COUNTERS), dtype=torch.int64, device=dev)
            self._counters_epoch = self._trainer.current_epoch if self._trainer is not None else 0
        if self._counters.device != dev:
            self._counters = self._counters.to(dev)
        dropped = ~mask
        one = torch.ones((), dtype=torch.int64, device=dev)
        zero = torch.zeros((), dtype=torch.int64, device=dev)
        seen = torch.full((), mask.numel(), dtype=torch.int64, device=dev)
        if corrupted is not None:
            bad = corrupted.to(device=dev, dtype=torch.bool).reshape(-1)
            step = torch.stack([seen, dropped.sum(), bad.sum(), (bad & dropped).sum(), one, one])
        else:
            step = torch.stack([seen, dropped.sum(), zero, zero, one, zero])
        self._counters[:len(_COUNTERS)] += step  # on the device: no host sync per step
        self._counters = with_class_counts(self._counters, len(_COUNTERS), (labels, slots), mask)

    # -- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        counters = None if self._counters is None else self._counters.cpu().tolist()
        return {
            "history": [asdict(r) for r in self.history],
            "counters": counters,
            # the other ranks' counts of the epoch, not yet summed over the ranks: a checkpoint written inside it
            # (`every_n_train_steps`) held rank 0's alone, and a 2-rank fit resumed there read `seen=48` of 64
            "other_ranks_counters": distributed.other_ranks_parts(counters),
            "counters_epoch": self._counters_epoch,
            # the epoch ended by a stop before its last batch, when this is written at that epoch's end (a resume
            # from it skips the rest of the epoch: said at the resume)
            "short_epoch": self._short_epoch,
            "warned_small": self._warned_small,
            "schedule_start": self._schedule_start,
            "auto": None if self._auto is None else self._auto.state_dict(),
            "report": self._report.state_dict(),
            "random": random_state(),
            "arguments": self.resume_arguments(),
            # Lightning's DistributedSampler shuffles with it: a DDP resume under another seed trains other batches
            "global_seed": _global_seed(),
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
                           ) -> None:
        # before Lightning skips a state saved under other arguments; False outside a fit (keep this fit's history)
        self._restore_state = check_resumable(self, trainer, checkpoint)
        saved = ((checkpoint.get("callbacks") or {}).get(self.state_key) or {}).get("global_seed")
        now = _global_seed()
        if self._restore_state and getattr(trainer, "world_size", 1) > 1 and None not in (saved, now) and saved != now:
            # the seed is Lightning's to use (its sampler is built after this), not ours to change: say it
            rank_zero_warn(f"{type(self).__name__}: this process's global seed is {now}, but the fit this checkpoint "
                           f"resumes started with seed {saved}: under DDP Lightning's DistributedSampler shuffles with "
                           "the global seed, so the resumed fit trains other batches than the uninterrupted one. "
                           f"Resume with `seed_everything({saved})` (`--seed_everything {saved}`).")
        # written at an epoch's last batch: that epoch's end is this filter's to run (`_close_skipped_epoch`)
        self._skipped_end = epoch_whose_end_was_skipped(checkpoint) if self._restore_state else None

    def load_outcome(self, state_dict: dict[str, Any]) -> None:
        """What a fit found, from this filter's checkpointed state: ``history``, the ``"auto"`` estimate and the
        report's running sums, without the counters and random state a resume also restores. For a module that owns
        its filter (the flows), loaded with ``load_from_checkpoint``, where Lightning restores no callback (an anomaly newcomer's
        reloaded ``RobustRealNVP`` read ``estimated_corruption`` ``None``; RCA's kept it)."""
        self.history = [FilterEpochRecord(**r) for r in state_dict["history"]]
        if self._auto is not None and state_dict.get("auto") is not None:  # absent from older checkpoints
            self._auto.load_state_dict(state_dict["auto"])
        self._report.load_state_dict(state_dict.get("report"))  # absent from checkpoints before the report existed

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not getattr(self, "_restore_state", True):
            return
        mark_restored(self)
        self.load_outcome(state_dict)
        counters = counts_of_this_rank(state_dict["counters"], state_dict.get("other_ranks_counters"))
        self._counters = None if counters is None else torch.tensor(counters, dtype=torch.int64)
        self._counters_epoch = state_dict["counters_epoch"]
        self._resumed_epoch = None if counters is None else self._counters_epoch
        self._warned_small = state_dict["warned_small"]
        self._schedule_start = int(state_dict.get("schedule_start", 0))  # absent from older checkpoints
        if state_dict.get("short_epoch") is not None:
            rank_zero_warn(cut_epoch_note(self.owner, state_dict["short_epoch"], CUT_EPOCH_CONSEQUENCE))
        # Lightning runs its sanity check with the random state isolated: the next draw is the next epoch's shuffle
        restore_random_state(state_dict.get("random"))

