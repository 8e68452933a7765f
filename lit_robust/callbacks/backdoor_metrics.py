"""Clean accuracy, poison accuracy and attack success rate of a classifier under a backdoor trigger."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lit_robust._backend import Callback, pl, rank_zero_warn
from lit_robust._checks import check_int
from lit_robust.data.indexed import unpack_eval_batch
from lit_robust.functional.backdoor import Trigger, as_trigger
from lit_robust.selection import distributed

__all__ = ["BackdoorMetrics", "backdoor_counts"]

# summed per evaluation epoch, in this order
_COUNTS = ("n", "clean_correct", "poison_correct", "attack_n", "attack_hits")


def backdoor_counts(clean_pred: Tensor, trig_pred: Tensor, labels: Tensor, target: int | None,
                    num_classes: int, source: int | None = None) -> Tensor:
    """Counts ``[n, clean correct, poison correct, attackable, attack hits]`` of one batch of predictions.

    *Poison accuracy* compares the predictions on triggered images with the true labels (robust_dnn_thesis
    Table 5.8); the *attack success rate* is the fraction of triggered images predicted as the attacker's label
    — ``(y + 1) mod C`` (multi-target) or ``target`` (single-target, over the images of class ``source`` when
    given, else over those not already of class ``target``).
    """
    labels = labels.to(clean_pred.device)
    if target is None:
        attackable = torch.ones_like(labels, dtype=torch.bool)
        attacker = (labels + 1) % num_classes
    else:
        attackable = labels != target if source is None else labels == source
        attacker = torch.full_like(labels, target)
    return torch.stack([
        torch.tensor(labels.numel(), device=labels.device),
        (clean_pred == labels).sum(),
        (trig_pred == labels).sum(),
        attackable.sum(),
        ((trig_pred == attacker) & attackable).sum(),
    ]).to(torch.int64)


def _has_own_forward(module: torch.nn.Module) -> bool:
    """Whether ``module(x)`` can run: a class below (pytorch_)lightning's ``LightningModule`` defines ``forward``."""
    forward = getattr(type(module), "forward", None)
    return not (forward is None or forward is torch.nn.Module.forward
                or getattr(forward, "__qualname__", "") == "LightningModule.forward"
                and getattr(forward, "__module__", "").split(".")[0] in ("pytorch_lightning", "lightning"))


def _check_logits(logits: Any, n: int, own_predict: bool) -> None:
    """Refuse outputs that are not ``[batch, classes]`` logits in one line (argmax over a tuple was a raw error)."""
    if isinstance(logits, Tensor) and logits.dim() == 2 and logits.shape[0] == n:
        return
    got = (f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, Tensor)
           else f"a {type(logits).__name__}")
    source = "`predict(module, images)`" if own_predict else "the module's `forward(images)`"
    raise ValueError(f"`BackdoorMetrics` needs [batch, classes] logits from {source}, got {got} for a batch of {n} "
                     "images; pass `predict=` returning the logits (e.g. `lambda m, x: m(x)[0]` for a module whose "
                     "forward returns a tuple).")


class BackdoorMetrics(Callback):
    r"""Log how a classifier does on clean and on triggered evaluation images, and how clean its filter's rejects are.

    On every validation and test batch ``(index, image, true label)`` the module predicts the images as they are and
    with the attack's trigger applied. Only clean images count: a batch with ground-truth flags
    (``(index, image, label, is_poisoned)``, e.g. the validation split of
    :class:`~lit_robust.data.BackdoorMNISTDataModule`, poisoned like its training pool) contributes its unflagged
    samples, whose labels are true. With several validation or test dataloaders only the first (``dataloader_idx``
    0) counts: a second one, e.g. the triggered test split of
    :class:`~lit_robust.SemiSupervisedBackdoorMNISTDataModule`, holds no clean images. Per epoch it logs (``<stage>`` is ``val`` or ``test``):

    * ``backdoor/<stage>_clean_acc`` — accuracy on the clean images;
    * ``backdoor/<stage>_poison_acc`` — accuracy on the triggered images against their true labels, over every
      image (for a single-target attack, the target class's own images too: a triggered one predicted as the
      target is correct; the attack's effect on the attacked images alone is the ASR);
    * ``backdoor/<stage>_asr`` — attack success rate: fraction of triggered images predicted as the attacker's
      label (:func:`backdoor_counts`).

    With ground truth in the training batches (``is_corrupted``, e.g. from
    :class:`~lit_robust.data.BackdoorMNISTDataModule`) it also logs, after every training epoch, the precision
    (poisoned fraction of the dropped samples) and recall (dropped fraction of the poisoned samples) of what
    the defence dropped: ``backdoor/dropped_precision`` and ``backdoor/dropped_recall``, read from a
    :class:`~lit_robust.BatchFilter`'s epoch record and an :class:`~lit_robust.ITLM`'s record of the round training in
    that epoch (both together: their drops add up; :func:`dropped_precision_recall`). The figures do not depend on
    where this callback stands in the Trainer's list.
    Counts are summed over DDP ranks. The figures of the last epoch per stage are kept in :attr:`results`.

    Args:
        trigger: the attack's trigger — a :class:`~lit_robust.functional.backdoor.Trigger` or a plain function
            ``images -> images`` (:func:`~lit_robust.functional.backdoor.as_trigger`; left without a ``value_range`` it takes
            the datamodule's); ``None`` takes the datamodule's ``trigger``.
        target: the attacker's label for a single-target attack, ``None`` for multi-target ``a → a+1``;
            ``"datamodule"`` (default) takes the datamodule's ``attack_target`` (and ``attack_source``).
        source: the attacked class of a single-target attack (ASR is measured on its images); ``None`` = every
            class but ``target``. Taken from the datamodule with ``target="datamodule"`` (a ``source`` given then
            is an error: pass the attack's ``target`` with it).
        num_classes: number of classes (default: the datamodule's ``num_classes``, else the width of the module's
            outputs at the first evaluation batch).
        predict: ``predict(module, images) -> logits``; default ``module(images)``.
    """

    def __init__(self, trigger: Trigger | Callable[[Tensor], Any] | None = None, target: int | None | str = "datamodule",
                 source: int | None = None, num_classes: int | None = None,
                 predict: Callable[[pl.LightningModule, Tensor], Any] | None = None) -> None:
        super().__init__()
        if trigger is not None:
            trigger = as_trigger(trigger)  # a non-callable: TypeError naming `trigger`
        if target != "datamodule":
            try:
                check_int("target", target, 0, optional=True)  # the class index of a single-target attack
            except ValueError as err:  # the message left out the default, 'datamodule' (a misspelt 'datamodul')
                raise ValueError(str(err).replace("or None,", "or None or 'datamodule',", 1)) from None
        check_int("source", source, 0, optional=True)
        if source is not None and target == "datamodule":
            # the datamodule's attack_source replaced it without a word (a reviewer's); one attack, from one place
            raise ValueError(f"`source`={source!r} is given, but `target`='datamodule' (the default) takes the attack, "
                             "`attack_source` included, from the datamodule; pass the attack's `target` too (e.g. "
                             f"BackdoorMetrics(target=2, source={source!r})), or leave `source=None`.")
        if source is not None and target is None:
            raise ValueError(f"`source`={source!r} needs a single-target attack, but `target` is None (multi-target "
                             "a -> a+1 attacks every class); pass `target`, or `source=None`.")
        if predict is not None and not callable(predict):
            raise TypeError(f"`predict` must be a callable `predict(module, images) -> logits` or None, got "
                            f"{type(predict).__name__}.")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                        or num_classes < 2):
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        self.trigger, self.target, self.source, self.num_classes = trigger, target, source, num_classes
        self.predict = predict
        self.results: dict[str, dict[str, float]] = {}
        self._counts: Tensor | None = None
        self._resolved: tuple[Trigger, int | None, int, int | None] | None = None

    # -- resolve the attack from the datamodule ------------------------------------------------------------
    def _attack(self, trainer: pl.Trainer) -> tuple[Trigger, int | None, int | None, int | None]:
        if self._resolved is None:
            dm = getattr(trainer, "datamodule", None)
            trigger = self.trigger if self.trigger is not None else getattr(dm, "trigger", None)
            if trigger is not None and getattr(dm, "value_range", None) is not None:
                trigger = as_trigger(trigger, dm.value_range)  # an unset range takes the data's
            if trigger is None:
                raise ValueError("`BackdoorMetrics` needs a `trigger`: pass one, or use a datamodule with a `trigger` "
                                 "attribute (e.g. lit_robust.data.BackdoorMNISTDataModule).")
            from_dm = self.target == "datamodule"
            if from_dm and not hasattr(dm, "attack_target"):
                where = f"`data`: {type(dm).__name__} has" if dm is not None else "there is no datamodule, so"
                raise ValueError(f"`BackdoorMetrics(target='datamodule')` reads the attack from the datamodule, but "
                                 f"{where} no `attack_target`; pass `target=None` (multi-target a -> a+1) or the "
                                 "attacker's class.")
            target = getattr(dm, "attack_target", None) if from_dm else self.target
            source = getattr(dm, "attack_source", None) if from_dm else self.source
            if not from_dm and hasattr(dm, "attack_target"):
                planted = (dm.attack_target, getattr(dm, "attack_source", None))
                if planted != (target, source):
                    # a backdoor newcomer's typo `target=3` for the datamodule's 1 -> 2 attack read an attack success
                    # of 0.003 where it was 1.000, without a word; `target=2` without the source, 0.174 for 0.912
                    def said(t: Any, s: Any) -> str:
                        return "a -> a+1 (target None)" if t is None else (f"{s} -> {t}" if s is not None else
                                                                           f"all -> {t}")
                    rank_zero_warn(f"BackdoorMetrics: measures the attack {said(target, source)} (`target`="
                                   f"{target!r}, `source`={source!r}), but the datamodule planted "
                                   f"{said(*planted)}: its attack success rate is of another attack than the one in "
                                   "the data. Leave `target='datamodule'` (the default) to measure the planted one.")
            # without either, the logits' width at the first batch (`_batch`): a default of 10 read a backdoor newcomer's
            # 3-class a -> a+1 attack, which worked every time, as 67 % successful ((2 + 1) mod 10 is no class)
            num_classes = self.num_classes or getattr(dm, "num_classes", None)
            self._resolved = (trigger, None if target is None else int(target),
                              None if num_classes is None else int(num_classes),
                              None if source is None or target is None else int(source))
            if num_classes is not None:
                self._check_classes(int(num_classes))
        return self._resolved

    def _check_classes(self, num_classes: int) -> None:
        """Fix the number of classes in the resolved attack, and check its target and source against it."""
        trigger, target, _, source = self._resolved
        for name, v in (("target", target), ("source", source)):
            if v is not None and not 0 <= int(v) < num_classes:
                raise ValueError(f"`{name}` must be a class in [0, {num_classes - 1}], got {v!r}.")
        self._resolved = (trigger, target, num_classes, source)

    def _logits(self, module: pl.LightningModule, images: Tensor) -> Tensor:
        return self.predict(module, images) if self.predict is not None else module(images)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage in ("fit", "validate", "test"):
            self._resolved = None
            self._attack(trainer)  # a missing trigger or attack shows now, not after the first training epoch
            if self.predict is None and not _has_own_forward(pl_module):
                # torch's "missing the required forward function" came at the first validation batch, after an
                # epoch of training, and named neither this callback nor `predict` (a backdoor newcomer's)
                raise ValueError(f"`BackdoorMetrics` predicts with `module(images)` by default, but "
                                 f"{type(pl_module).__name__} defines no `forward`; pass `predict=` (a function "
                                 "`predict(module, images) -> logits`, e.g. `lambda m, x: m.net(x)`), or give the "
                                 "module a `forward(images)` that returns the logits.")

    # -- evaluation ------------------------------------------------------------------------------------------
    def _start(self, pl_module: pl.LightningModule) -> None:
        self._counts = torch.zeros(len(_COUNTS), dtype=torch.int64, device=pl_module.device)

    def _batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any) -> None:
        trigger, target, num_classes, source = self._attack(trainer)
        ib = unpack_eval_batch(batch)
        images, labels = ib.input, ib.target
        if ib.corrupted is not None:  # a split poisoned like the training pool: its clean images only
            clean_ones = ~ib.corrupted.to(device=labels.device, dtype=torch.bool)
            images, labels = images[clean_ones.to(images.device)], labels[clean_ones]
        with torch.no_grad():
            clean_logits = self._logits(pl_module, images)
            _check_logits(clean_logits, len(images), self.predict is not None)
            trig = self._logits(pl_module, trigger(images)).argmax(-1)
        if num_classes is None:  # no `num_classes` given, no datamodule's: the module's outputs tell
            self._check_classes(int(clean_logits.shape[-1]))
            num_classes = self._resolved[2]
        step = backdoor_counts(clean_logits.argmax(-1), trig, labels, target, num_classes, source)
        if self._counts is None:
            self._start(pl_module)
        self._counts += step.to(self._counts.device)

    def _end(self, stage: str, pl_module: pl.LightningModule) -> None:
        counts = self._counts if self._counts is not None else torch.zeros(len(_COUNTS), dtype=torch.int64)
        n, clean, poison, attack_n, hits = (int(v) for v in distributed.all_reduce_sum(counts).tolist())
        self._counts = None
        if not n:
            return
        res = {"clean_acc": clean / n, "poison_acc": poison / n, "asr": hits / attack_n if attack_n else float("nan")}
        self.results[stage] = res
        for key, value in res.items():
            pl_module.log(f"backdoor/{stage}_{key}", value, on_step=False, on_epoch=True, sync_dist=True)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking and dataloader_idx == 0:
            self._batch(trainer, pl_module, batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._end("val", pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(pl_module)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:  # the clean split; a second loader (e.g. already triggered images) is not
            self._batch(trainer, pl_module, batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("test", pl_module)

    # -- what the defence dropped ----------------------------------------------------------------------------
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pr = dropped_precision_recall(trainer.callbacks, trainer.current_epoch)
        if pr is None:
            return
        self.results["dropped"] = {"precision": pr[0], "recall": pr[1]}
        for key, value in zip(("precision", "recall"), pr):
            if value == value:  # not NaN
                pl_module.log(f"backdoor/dropped_{key}", value, on_step=False, on_epoch=True, sync_dist=True)


def dropped_precision_recall(callbacks: list[Callback], epoch: int) -> tuple[float, float] | None:
    """``(precision, recall)`` of what the defence kept out of the training of ``epoch`` — the samples the round's
    ITLM selection left out and those a BatchFilter dropped from the batches — when the training batches carry
    ground truth; ``None`` when neither callback is there or knows it.

    Precision is the poisoned fraction of those samples, recall the fraction of the poisoned samples among them.
    With both callbacks (ITLM rounds + a filter on the kept samples) they add up: dropped = ``n - kept`` + the
    filter's drops, poisoned among them = the round's dropped poisoned samples + the filter's, poisoned in all =
    the round's dropped poisoned samples + the poisoned samples the filter saw. The figures come from
    :meth:`ITLM.record_of_epoch` and :meth:`BatchFilter.epoch_record` (the first callback of each kind with ground
    truth), which answer the same before and after those callbacks' own epoch end: the result does not depend on
    the callbacks' order."""
    from lit_robust.callbacks.batch_filter import BatchFilter
    from lit_robust.callbacks.itlm import ITLM

    filt = round_ = None
    for cb in callbacks:
        if filt is None and isinstance(cb, BatchFilter):
            r = cb.epoch_record(epoch)  # a collective: every rank calls it
            if r.corrupted_seen is not None:
                filt = r
        if round_ is None and isinstance(cb, ITLM):
            r = cb.record_of_epoch(epoch)
            if r is not None and r.dropped_corrupted is not None:
                round_ = r
    if filt is None and round_ is None:
        return None
    dropped = poisoned_dropped = 0
    poisoned = 0
    if round_ is not None:
        dropped += round_.n - round_.kept
        poisoned_dropped += round_.dropped_corrupted
        poisoned += round_.dropped_corrupted
        if filt is None:
            precision = poisoned_dropped / dropped if dropped else float("nan")
            recall = round_.corrupted_recall if round_.corrupted_recall is not None else float("nan")
            return precision, recall
    if filt is not None:
        dropped += filt.dropped
        poisoned_dropped += filt.corrupted_dropped
        poisoned += filt.corrupted_seen
    precision = poisoned_dropped / dropped if dropped else float("nan")
    recall = poisoned_dropped / poisoned if poisoned else float("nan")
    return precision, recall
