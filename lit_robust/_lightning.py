"""The few places where lit_robust relies on Lightning internals, kept together.

Lightning has no public hook to swap the training dataloader's sampler between epochs or to force a
reload at an arbitrary epoch; round-based selection needs both. Everything version-sensitive is here.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from lit_robust._backend import pl, rank_zero_info, rank_zero_only, rank_zero_warn

_MISSING = object()


def continues_earlier_fit(trainer: pl.Trainer) -> bool:
    """Whether this ``fit`` goes on from an earlier one on the same Trainer, which keeps its loops' progress (it trains
    on to ``max_epochs``, or trains nothing when the earlier fit reached it), rather than starting one. The callbacks
    then keep their state, as Lightning's own do; a new Trainer, or a resume from a checkpoint (restored after setup),
    starts from the callbacks' fresh state. (A notebook user's second ``trainer.fit`` cell emptied ITLM's ``history``,
    with a warning that the fit had ended after 0 of its rounds.)"""
    return trainer.current_epoch > 0 or trainer.global_step > 0


def _trainer_token(trainer: Any) -> str:
    """A token naming ``trainer`` (kept on it): a holder remembers the token, not the Trainer, so that a fitted module
    or callback still pickles (a weak reference did not: `torch.save` of a fitted `CoTeaching`)."""
    token = getattr(trainer, "_lit_robust_token", None)
    if token is None:
        token = uuid.uuid4().hex
        trainer._lit_robust_token = token
    return token


def begin_fit(holder: Any, trainer: Any, owner: str, earlier_path: str | None = None) -> bool:
    """At a fit's setup: whether ``holder``'s running state starts afresh (a fit of its own, see
    :func:`continues_earlier_fit`), remembering ``trainer`` as the one that state is of. The caller has cleared
    ``holder.report_path`` (a fit that fails has none); it is set back to ``earlier_path`` when the fit trains
    nothing. A fit that goes on from ``trainer``'s earlier fit keeps the state, unless ``holder`` has served another
    Trainer's fit since: what it holds is then that fit's, so it starts afresh and :func:`check_state_owner` refuses
    the fit at train start unless a checkpoint restored the state (:func:`mark_restored`). A notebook user's
    callback went from Trainer A to Trainer B and back to A: A's report was rewritten with B's selection and
    estimate. A fit that trains nothing (the Trainer's earlier fit reached ``max_epochs`` or ``max_steps``) keeps
    any state and writes no report (:func:`writes_no_report`). Another Trainer's state is kept as it is, and so is
    ``report_path``, until a checkpoint restores this Trainer's (:func:`mark_restored`): a refused fit, or one tried
    again, must not lose it or go on from it (a reviewer's second try went on with wiped state)."""
    earlier = getattr(holder, "_state_trainer", None)
    goes_on = continues_earlier_fit(trainer)
    token = _trainer_token(trainer)
    foreign = goes_on and earlier is not None and earlier != token
    holder._foreign_state = None if not foreign else (
        f"{owner}: this fit goes on from this Trainer's earlier fit (at epoch {trainer.current_epoch}), but this "
        f"{owner} has served another Trainer's fit since, so its state (epochs, selections, estimate, report) was that "
        "fit's, not this Trainer's. Fit with a new Trainer (a fit of its own), resume from a checkpoint "
        f"(`ckpt_path=`), or give this Trainer a new {owner}.")
    note = earlier_fit_note(trainer)
    holder._nothing_to_train = note is not None and note[0]
    holder._nothing_note = note[1] if holder._nothing_to_train else None
    # said at train start (`check_state_owner`) unless a checkpoint restores the fit; ITLM said it, the filters and
    # CoTeaching went on from a stop inside an epoch without a word (a reviewer's)
    holder._goes_on_note = None if note is None or note[0] else f"{owner}: {note[1]}"
    holder._restored = False
    holder._fit_token = token
    if not foreign:
        holder._state_trainer = token
    if holder._nothing_to_train or foreign:
        holder.report_path = earlier_path  # this fit writes none (yet): the earlier one stays
    return not goes_on


def mark_restored(holder: Any) -> None:
    """A checkpoint restored ``holder``'s state in this fit (after its setup): the state is this fit's Trainer's."""
    holder._restored = True
    token = getattr(holder, "_fit_token", None)
    if token is not None:
        holder._state_trainer = token


def started_without_its_state(holder: Any, trainer: Any, owner: str,
                              counts: str = "its warm-up, estimate and report count from this epoch") -> bool:
    """At train start: warn, and return ``True``, when this fit resumes a checkpoint past its start that held no state
    of ``holder``'s (its fit ran without this callback): ``holder`` then begins mid-fit as if that epoch were the
    first. A resume newcomer's ITLM added to a filter's checkpoint printed a "round 0" it never trained and blamed
    "something other than `max_epochs`" for its missing rounds; a filter so added said nothing."""
    path = getattr(trainer, "ckpt_path", None)
    if path is None or getattr(holder, "_restored", False) or (trainer.current_epoch == 0 and trainer.global_step == 0):
        return False
    afresh = start_afresh_advice()
    rank_zero_warn(f"{owner}: this fit resumes {path} at epoch {trainer.current_epoch}, but the checkpoint holds no "
                   f"{owner} state (the fit that wrote it ran without this {owner}), so {owner} starts here, with "
                   f"nothing of the epochs before: {counts}. Resume with the callbacks the fit was written with, or "
                   f"{afresh}.")
    return True


def say_resumed_a_finished_fit(holder: Any, trainer: Any, owner: str, reports: bool,
                               more: str = "Raise `max_epochs` to train on") -> None:
    """At fit end: say when this fit resumed, from ``ckpt_path``, a fit that had run to ``max_epochs``, so that it
    trained no batch: Lightning's "`max_epochs` reached" and the round table read as if a fit had just run (a resume
    newcomer's Python script; the CLI skips such a fit and says so)."""
    path = getattr(trainer, "ckpt_path", None)
    max_epochs = getattr(trainer, "max_epochs", None)
    if (path is None or not getattr(holder, "_restored", False) or getattr(holder, "_trained_this_fit", True)
            or not isinstance(max_epochs, int) or max_epochs < 0 or trainer.current_epoch < max_epochs):
        return
    report = " and wrote the report" if reports else ""
    rank_zero_info(f"{owner}: this fit resumed {path}, whose fit had run every epoch to `max_epochs`={max_epochs}, so "
                   f"it trained no batch: it finished that fit's end{report}. {more}.")


def check_state_owner(holder: Any) -> None:
    """At train start: refuse a fit that goes on from an earlier fit of its Trainer while ``holder``'s state was
    another Trainer's fit's (see :func:`begin_fit`), unless a checkpoint restored it; else say that it goes on from
    that fit, which is not one uninterrupted fit (:func:`earlier_fit_note`)."""
    note = getattr(holder, "_foreign_state", None)
    if note is not None and not getattr(holder, "_restored", False):
        raise RuntimeError(note)
    goes_on = getattr(holder, "_goes_on_note", None)
    if goes_on is not None and not getattr(holder, "_restored", False):
        rank_zero_info(goes_on)


def say_trained_nothing(holder: Any, owner: str, reports: bool) -> bool:
    """At fit end: when this fit trained nothing on a finished Trainer and no checkpoint restored ``holder``
    (:func:`writes_no_report`), say so (with the earlier fit's report when ``reports``) and return ``True``: write
    no report. Said at the end, not at setup: a fit resumed with ``ckpt_path`` trains (a reviewer's resume of a
    finished Trainer from an earlier epoch was told it trained nothing, and trained two rounds)."""
    if not writes_no_report(holder):
        return False
    earlier = getattr(holder, "report_path", None) if reports else None
    said = ("" if not reports else " No per-sample report written"
            + (f" (the earlier fit's is {earlier})" if earlier else "") + ".")
    if getattr(rank_zero_only, "rank", 0) == 0:
        # said at every such fit: a notebook newcomer's second re-run of the cell was silent, Python's default filter
        # showing a warning once per place (the message most needed there)
        import sys
        import warnings

        caller = sys._getframe(1)
        warnings.warn_explicit(f"{owner}: {holder._nothing_note}{said}", UserWarning, caller.f_code.co_filename,
                               caller.f_lineno, registry=None)
    return True


def writes_no_report(holder: Any) -> bool:
    """Whether this fit trains nothing on a Trainer whose earlier fit reached its end, and no checkpoint
    restored ``holder``: its report would be the earlier fit's, or a mix with other data (a notebook user's re-run
    cell with re-corrupted labels got the old report rewritten, "replacing the file there")."""
    return bool(getattr(holder, "_nothing_to_train", False)) and not getattr(holder, "_restored", False)


def earlier_fit_note(trainer: pl.Trainer) -> tuple[bool, str] | None:
    """What to tell a user whose ``fit`` goes on from an earlier fit of the same Trainer (see
    :func:`continues_earlier_fit`): ``(True, text)`` when that fit reached ``max_epochs`` and this one trains nothing,
    ``(False, text)`` when this one trains the rest, ``None`` for a fit of its own. A notebook newcomer's re-run cell
    fitted a new model on a finished Trainer (0 epochs, test accuracy 0.104, only "`max_epochs=4` reached"), and one
    after an interrupted fit went on without a word (0.744, against 0.761 uninterrupted)."""
    if not continues_earlier_fit(trainer):
        return None
    # (getattr: a benchmark's stand-in Trainer holds only what the callbacks read in a step)
    epoch, max_epochs = trainer.current_epoch, getattr(trainer, "max_epochs", None)
    if max_epochs is not None and max_epochs >= 0 and epoch >= max_epochs:
        return True, (f"this Trainer's earlier fit already reached `max_epochs`={max_epochs}, so this fit trains "
                      "nothing (a Trainer keeps its progress). Use a new Trainer for a new fit.")
    max_steps = getattr(trainer, "max_steps", -1)
    if max_steps is not None and max_steps >= 0 and getattr(trainer, "global_step", 0) >= max_steps:
        return True, (f"this Trainer's earlier fit already reached `max_steps`={max_steps}, so this fit trains "
                      "nothing (a Trainer keeps its progress). Use a new Trainer for a new fit.")
    return False, (f"this fit goes on from this Trainer's earlier fit at epoch {epoch} (a Trainer keeps its progress), "
                   "which is not the same as one uninterrupted fit; for that, resume from a checkpoint "
                   "(`ckpt_path=`) or start again with a new Trainer.")


def refuse_no_training(trainer: Any, owner: str) -> None:
    """Raise when ``trainer`` is set to train no batch (``limit_train_batches=0``): Lightning then skips the fit loop,
    and ``owner`` has nothing to select from or report (a CLI user's ITLM ended in an ``AssertionError`` traceback
    at fit end; a ``BatchFilter`` exited 0 with no report and no word)."""
    limit = getattr(trainer, "limit_train_batches", None)
    if limit is not None and not isinstance(limit, bool) and limit == 0:
        raise ValueError(f"{owner}: `limit_train_batches` must be > 0 (a number of batches, or a fraction of each "
                         f"epoch's), got {limit!r}: it trains no batch, so {owner} has nothing to select or report. "
                         "Leave it out to train on every batch.")


def no_training_batches(trainer: Any) -> str | None:
    """Why a fit trained nothing, when its training loader yielded no batch (Lightning's "`Trainer.fit` stopped: No
    training batches."), else ``None``: a notebook newcomer's ``DataLoader(1,500 samples, batch_size=4096,
    drop_last=True)`` got ITLM's "something other than `max_epochs` stopped it (EarlyStopping, ...)" and, from a
    ``BatchFilter``, no word at all."""
    if trainer is None or getattr(trainer, "num_training_batches", None) != 0:
        return None
    loader = getattr(trainer, "train_dataloader", None)
    size = batch = None
    try:
        size, batch = len(loader.dataset), loader.batch_size  # type: ignore[union-attr]
    except (AttributeError, TypeError):
        pass
    if getattr(trainer, "limit_train_batches", None) == 0:
        why = "`limit_train_batches=0`"
    elif size is not None and batch is not None and getattr(loader, "drop_last", False) and batch > size:
        why = (f"`drop_last=True` with `batch_size`={batch} larger than the {size} training samples: the only "
               "batch is dropped. Use a smaller batch size or `drop_last=False`")
    elif size == 0:
        why = "the training set is empty"
    else:
        why = "check the training loader (its length is 0)"
    return f"nothing was trained: the training loader yielded no batch ({why})."


def evaluation_batches(trainer: pl.Trainer, loader: Any) -> Iterator[Any]:
    """``loader``'s batches as Lightning's evaluation loop hands them to a step: on the device, through the precision
    plugin's ``convert_input`` (the "true" half precisions cast floating inputs), each yielded inside its
    ``val_step_context`` (autocast for the mixed ones). A scoring pass without it fed float32 inputs to a
    ``bf16-true`` model (a performance newcomer's ITLM crashed after round 0) and scored ``bf16-mixed`` models in
    float32, unlike their training and validation."""
    plugin = trainer.precision_plugin
    for batch in loader:
        batch = plugin.convert_input(trainer.strategy.batch_to_device(batch))
        with plugin.val_step_context():
            yield batch


def train_dataloader_source(trainer: pl.Trainer) -> Any:
    return trainer.fit_loop._data_source


def refuse_several_loaders(loader: Any) -> None:
    """Raise where the training data is several loaders (a dict, a list, a ``CombinedLoader``): lit_robust selects and
    filters the samples of one. A power user's two training loaders crashed with "'CombinedLoader' object is not
    callable"; a ``BatchFilter`` without a report met them at the first batch, its message leading with advice on
    dict samples. By name: the ``CombinedLoader`` of either Lightning package (a script may build it from the other)."""
    if isinstance(loader, (dict, list, tuple)) or type(loader).__name__ == "CombinedLoader":
        raise TypeError(f"lit_robust selects and filters the samples of one training DataLoader, got a "
                        f"{type(loader).__name__} of several: concatenate the data sets into one (e.g. "
                        "`torch.utils.data.ConcatDataset` inside `lit_robust.IndexedDataset`).")


def resolve_loader(original: Any) -> DataLoader:
    """Call the user's train dataloader source (a datamodule/module method) or take the loader as is."""
    loader = original if isinstance(original, DataLoader) or not callable(original) else original()
    refuse_several_loaders(loader)
    if not isinstance(loader, DataLoader):
        # a datamodule that is not of the Trainer's Lightning package arrives here as a "dataloader" (a newcomer's
        # import order; an import sorter puts `import lit_robust` before `import lightning`)
        name = type(loader).__name__
        mixed = f" {_taken_for_a_loader(loader)}" if _is_datamodule(loader) else ""
        raise TypeError(f"lit_robust needs the training dataloader to be a torch DataLoader, got {name}.{mixed}")
    return loader


def _is_datamodule(obj: Any) -> bool:
    """A ``LightningDataModule`` of either package (by name: the Trainer's package may not be lit_robust's)."""
    return any(c.__name__ == "LightningDataModule" for c in type(obj).__mro__)


def _taken_for_a_loader(obj: Any) -> str:
    """Which package the datamodule ``obj`` is of, which the Trainer is of, and the fix for that direction (a release
    checker's own `lightning` datamodule under lit_robust's `pytorch_lightning` Trainer was told to import
    `lightning` first, which changed nothing)."""
    name = type(obj).__name__
    base = next(c for c in type(obj).__mro__ if c.__name__ == "LightningDataModule")
    theirs = base.__module__.split(".")[0]
    trainer = "pytorch_lightning" if theirs == "lightning" else "lightning"
    if type(obj).__module__.split(".")[0] == "lit_robust":  # lit_robust built it on its own package
        fix = (f"make lit_robust build on the Trainer's package: import `{trainer}` before lit_robust (import sorters "
               f"put lit_robust first), or set LIT_ROBUST_LIGHTNING={trainer}")
    else:
        root = "lightning.pytorch" if trainer == "lightning" else trainer
        fix = f"build `{name}` on `{root}.LightningDataModule`, the Trainer's package"
    return (f"`{name}` is a LightningDataModule of `{theirs}` and the Trainer is `{trainer}`'s, whose classes do not "
            f"mix: Lightning took it for a dataloader. To fix it, {fix}.")


def check_datamodule_package(trainer: Any) -> None:
    """Raise when the Trainer took a datamodule of the other Lightning package for a dataloader (``RobustMixin``'s
    ``on_fit_start``: without ITLM, whose loader check said so, a release checker got Lightning's bare "An invalid
    dataloader was passed to Trainer.fit(train_dataloaders=...)")."""
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    instance = getattr(source, "instance", None)
    if source is not None and not source.is_module() and instance is not None and _is_datamodule(instance):
        raise TypeError(f"`trainer.fit` got {type(instance).__name__} as its data. {_taken_for_a_loader(instance)}")


class TrainLoaderPatch:
    """Routes the Trainer's train dataloader requests through ``make_loader(original)``."""

    def __init__(self, trainer: pl.Trainer, make_loader: Callable[[Any], DataLoader]) -> None:
        self.trainer = trainer
        self.make_loader = make_loader
        self.source = train_dataloader_source(trainer)
        self.is_method = bool(self.source.is_module())
        if self.is_method:
            instance, name = self.source.instance, self.source.name
            self.original = getattr(instance, name)
            self.previous = instance.__dict__.get(name, _MISSING)
            # an instance attribute shadows the class method that Lightning looks up by name
            setattr(instance, name, lambda: make_loader(self.original))
        else:
            # a DataLoader passed to `fit(train_dataloaders=...)` is returned as is: swap the object
            self.original = self.source.instance
            self.source.instance = make_loader(self.original)

    def request_reload(self) -> None:
        """Make the fit loop rebuild the train dataloader (and its length) before the next epoch."""
        if not self.is_method:
            self.source.instance = self.make_loader(self.original)
        self.trainer.fit_loop._combined_loader = None

    def undo(self) -> None:
        if self.is_method:
            d = self.source.instance.__dict__
            if self.previous is _MISSING:
                d.pop(self.source.name, None)
            else:
                d[self.source.name] = self.previous
        else:
            self.source.instance = self.original


def count_epoch_started(trainer: pl.Trainer) -> None:
    """Count the fit loop's current epoch as started, as Lightning's ``on_advance_start`` does. After a checkpoint
    written at an epoch's last batch Lightning 2.6 goes on with the next epoch without that count (and without its
    ``on_train_epoch_start``, which ITLM then runs itself): a checkpoint written inside that epoch read as one of an
    epoch not begun, and its resume trained the epoch again from its first batch (a reviewer's 20 steps for 18).
    Counts it once, whichever owners call it."""
    progress = trainer.fit_loop.epoch_progress
    if progress.total.started > progress.total.processed:
        return  # counted already (ITLM and a BatchFilter in one fit each count it: once)
    progress.increment_ready()
    progress.increment_started()


def trains_another_epoch(trainer: pl.Trainer) -> bool:
    """Whether the fit loop goes on to train an epoch after ``on_train_start``: its ``done`` (training batches,
    ``max_steps``, ``max_epochs``), read without the "`Trainer.fit` stopped" line that property logs. Lightning calls
    ``on_train_start`` and ``on_train_end`` of a fit resumed from the checkpoint of its last batch, which trains
    nothing: the owners that start the next epoch themselves there (:func:`count_epoch_started`) must not start one
    that never runs."""
    loop = trainer.fit_loop
    if trainer.num_training_batches == 0:
        return False
    if loop.max_steps not in (None, -1) and loop.epoch_loop.global_step >= loop.max_steps:
        return False
    return loop.max_epochs in (None, -1) or loop.epoch_progress.current.processed < loop.max_epochs


def start_epoch_after_skipped_end(trainer: pl.Trainer, on_train_epoch_start: Callable[[], None]) -> None:
    """After an owner ran the end of the epoch Lightning skipped (a checkpoint written at that epoch's last batch,
    :func:`lit_robust.callbacks._resume.epoch_whose_end_was_skipped`): Lightning 2.6 neither runs the next epoch's
    ``on_train_epoch_start`` nor counts that epoch started, so run the owner's and count it -- where an epoch follows
    (:func:`trains_another_epoch`; none after the fit's last batch, whose start would clear what the report is
    written from). One step for ITLM, BatchFilter, CoTeaching and RCA."""
    if trains_another_epoch(trainer):
        on_train_epoch_start()
        count_epoch_started(trainer)


_DDP_NAMES = {"popen": "ddp", "spawn": "ddp_spawn", "fork": "ddp_fork"}


def ddp_without_unused_parameters(trainer: pl.Trainer) -> tuple[str, str] | None:
    """``(the DDP strategy's registered name, the name with unused parameters found)`` when ``trainer`` runs Lightning's
    DDP strategy without ``find_unused_parameters=True``, else ``None``. A module whose step leaves some parameters
    without a gradient in one of its backward passes (manual optimisation of two networks) needs the latter: DDP's
    default stops at the second step with Lightning's unused-parameters error. Reads the strategy's ``_ddp_kwargs``."""
    strategy = trainer.strategy
    if not isinstance(strategy, pl.strategies.DDPStrategy):
        return None
    if (getattr(strategy, "_ddp_kwargs", None) or {}).get("find_unused_parameters"):
        return None
    name = _DDP_NAMES.get(getattr(strategy, "_start_method", "popen"))
    if name is None:
        return "DDPStrategy", "DDPStrategy(find_unused_parameters=True)"
    return name, f"{name}_find_unused_parameters_true"


def limited_batches(trainer: pl.Trainer, batches: int) -> int:
    """The batches Lightning trains an epoch of a loader of ``batches``, ``limit_train_batches`` applied as it does
    (an integer caps, a fraction floors: ``_parse_num_batches``)."""
    limit = trainer.limit_train_batches
    if isinstance(limit, bool):
        return batches
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit) if isinstance(limit, float) \
        else batches


def epoch_cut(trainer: pl.Trainer) -> tuple[int, int, int] | None:
    """``(epoch, batches trained, batches of an epoch)`` when a stop (``max_steps``, ``max_time``,
    ``trainer.should_stop``) ended the current epoch before its last batch, else ``None``. Read at the epoch's end."""
    batches = trainer.num_training_batches
    trained = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps >= 0 else None
    stopped = trainer.should_stop or (max_steps is not None and trainer.global_step >= max_steps)
    if not stopped or not math.isfinite(batches) or trained >= batches:
        return None
    return trainer.current_epoch, int(trained), int(batches)


class EpochPart(NamedTuple):
    """How much of its training loader an epoch trained, when it was not all of it (:func:`epoch_part`)."""

    trained: int  # batches the epoch trained
    planned: int  # batches an epoch trains (`limit_train_batches` applied)
    loader_batches: int  # batches the loader yields an epoch
    samples: int | None  # samples the loader draws an epoch, every rank's (None: not known)
    stopped_by: str | None  # the stop that cut the epoch (`max_steps=...`, ...), None when it ran its planned batches
    limit: Any  # the Trainer's `limit_train_batches`
    setting: str = "limit_train_batches"  # the Trainer argument that set `limit` (`overfit_batches` sets it too)


def epoch_part(trainer: pl.Trainer) -> EpochPart | None:
    """At an epoch's end: the part of the training loader it trained, when a stop cut it short (:func:`epoch_cut`) or
    ``limit_train_batches`` trains fewer batches than the loader has; ``None`` when it trained every batch, or the
    loader has no length (a stream)."""
    planned = trainer.num_training_batches
    if not math.isfinite(planned):
        return None
    loader = getattr(trainer, "train_dataloader", None)
    if not isinstance(loader, DataLoader):  # several loaders (a list, a dict): their batches counted as Lightning does
        loader, loader_batches = None, int(planned)
    else:
        try:
            loader_batches = len(loader)
        except TypeError:
            return None
    cut = epoch_cut(trainer)
    if cut is None and int(planned) >= loader_batches:
        return None
    stopped_by = None
    if cut is not None:
        max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps >= 0 else None
        stopped_by = (f"`max_steps={max_steps}`" if max_steps is not None and trainer.global_step >= max_steps
                      else "a stop (`max_time`, `trainer.should_stop`, an EarlyStopping checked inside the epoch)")
    return EpochPart(trained=int(planned) if cut is None else cut[1], planned=int(planned),
                     loader_batches=loader_batches, samples=_samples_an_epoch(trainer, loader),
                     stopped_by=stopped_by, limit=trainer.limit_train_batches,
                     # a Lightning user's `overfit_batches=2` was told of the `limit_train_batches` they never set
                     setting="overfit_batches" if getattr(trainer, "overfit_batches", 0) else "limit_train_batches")


def _samples_an_epoch(trainer: pl.Trainer, loader: Any) -> int | None:
    """The samples ``loader`` (this rank's) draws in a whole epoch, times the ranks (Lightning's distributed samplers
    give every rank as many), at most the data set's size (their padding); ``None`` when not known."""
    if loader is None:
        return None
    try:
        per_rank = len(loader.sampler)
        batch = loader.batch_size
    except (AttributeError, TypeError):
        return None
    if batch is None:
        return None
    if getattr(loader, "drop_last", False):
        per_rank = per_rank // batch * batch
    total = per_rank * max(1, int(getattr(trainer, "world_size", 1)))
    try:
        return min(total, len(loader.dataset))
    except TypeError:
        return total


def check_epoch_batches(trainer: pl.Trainer, batches: int, where: str) -> None:
    """Raise, naming the argument, the allowed range and the value, when a fractional ``limit_train_batches`` or an
    integer ``val_check_interval`` does not fit an epoch of ``batches`` training batches (``where`` says whose).

    Lightning checks both against each train loader it loads, with its own words: against a round's loader smaller
    than round 0's only after round 0 had trained (a reviewer's ``val_check_interval=4`` failed at round 1, of 2
    batches). The conditions are Lightning's own (``_FitLoop.setup_data``, ``_parse_num_batches``)."""
    if batches <= 0:
        return  # a loader that yields no batch is named elsewhere (at fit end)
    limit = trainer.limit_train_batches
    if isinstance(limit, float) and limit > 0 and int(batches * limit) == 0:
        raise ValueError(f"`limit_train_batches` as a fraction must be at least 1/{batches} = {1 / batches:.4g} (or an "
                         f"integer number of batches >= 1): {where} has {batches} training batches an epoch, and "
                         f"floor({limit} * {batches}) = 0 would train none of them; got limit_train_batches={limit}.")
    used = limited_batches(trainer, batches)
    interval = trainer.val_check_interval
    if (isinstance(interval, int) and not isinstance(interval, bool)
            and getattr(trainer, "_val_check_time_interval", None) is None
            and trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches > 0 and interval > used):
        raise ValueError(f"`val_check_interval` as an integer must be in [1, {used}], the training batches an epoch of "
                         f"{where}; got val_check_interval={interval}. Use at most {used}, a fraction of each epoch "
                         "(e.g. 0.5), or `check_val_every_n_epoch=None` to count batches across epochs.")


def with_sampler(loader: DataLoader, sampler: Any, drop_last: bool | None = None,
                 generator: torch.Generator | None = None) -> DataLoader:
    """A copy of ``loader`` (same dataset, batch size, workers, collate) iterating ``sampler``; ``generator``: the
    copy's ``DataLoader(generator=)``, from which each iterator draws its workers' base seed (``None``: torch's global
    generator, as the original loader does)."""
    if loader.batch_size is None:
        raise ValueError("lit_robust cannot restrict a DataLoader built with a custom `batch_sampler`; "
                         "use `batch_size=` instead.")
    kwargs: dict[str, Any] = dict(
        batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
        drop_last=loader.drop_last if drop_last is None else drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        persistent_workers=loader.persistent_workers, generator=generator,
    )
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
        kwargs["multiprocessing_context"] = loader.multiprocessing_context
    return DataLoader(loader.dataset, **kwargs)


RUN_ID_VARIABLE = "LIT_ROBUST_COMMAND_ID"  # one ``lit-robust`` command's id, shared by the processes it starts


def is_a(callback: Any, *names: str) -> bool:
    """Whether ``callback`` is an instance of a Lightning class named one of ``names``, of either Lightning package
    (``pytorch_lightning`` or ``lightning.pytorch``): read off its classes' names."""
    return any(k.__name__ in names for k in type(callback).__mro__)


def accumulation_in_epoch(trainer: Any, epoch: int) -> int:
    """The ``accumulate_grad_batches`` that ``epoch`` trains with: a ``GradientAccumulationScheduler``'s for that epoch,
    else the Trainer's. The scheduler sets the Trainer's only in its own ``on_train_epoch_start``, which may run after
    ITLM's round start (callback order), and changes it inside a round: read from the Trainer, a round of 2 epochs
    under ``{2: 2}`` was sized for 10 steps and took 6."""
    for cb in getattr(trainer, "callbacks", None) or []:
        get = getattr(cb, "get_accumulate_grad_batches", None)
        if is_a(cb, "GradientAccumulationScheduler") and callable(get):
            return max(1, int(get(epoch)))
    return max(1, int(trainer.accumulate_grad_batches))


def draws_in_order(loader: Any) -> bool:
    """Whether ``loader`` draws its samples in order (``shuffle=False``, or an unshuffled ``DistributedSampler`` of
    the user's own). A custom ``batch_sampler`` decides the order itself: not said to be in order (a reviewer's
    shuffling one was told to pass ``shuffle=True``, which DataLoader refuses beside it)."""
    from torch.utils.data import BatchSampler, SequentialSampler
    from torch.utils.data.distributed import DistributedSampler

    batches = getattr(loader, "batch_sampler", None)
    if batches is not None and type(batches) is not BatchSampler:
        return False
    s = getattr(loader, "sampler", None)
    return isinstance(s, SequentialSampler) or (isinstance(s, DistributedSampler) and not s.shuffle)


def in_a_lit_robust_command() -> bool:
    """Whether this process runs a ``lit-robust`` command (or one of the processes it started): its own lines then
    say how to go on (``--ckpt_path last``, the exit status), and a callback's advice for a Python script would
    contradict them."""
    return RUN_ID_VARIABLE in os.environ


def start_afresh_advice(module: str | None = None) -> str:
    """The way to a new fit from a checkpoint, in the words of the interface in use (a resume newcomer's `lit-robust`
    command was advised a Python call): ``module``, the checkpoint's LightningModule class where the state is a
    module's own (CoTeaching with its ``model=``), else ``MyModel``."""
    if in_a_lit_robust_command():
        return "leave out `--ckpt_path` for a new fit"
    call = f"{module or 'MyModel'}.load_from_checkpoint(path{', model=MyModel()' if module == 'CoTeaching' else ''})"
    return f"start a new fit (no `ckpt_path`) from the checkpoint's weights, e.g. `{call}`"


_SIGTERM_NOTED = [False]  # whether a handler installed by `sigterm_without_collectives` has run in this process


def sigterm_noted(reset: bool = False) -> bool:
    """Whether this process received SIGTERM through the last Trainer :func:`sigterm_without_collectives` set up
    (``reset=True``: forget it, at the start of a run)."""
    if reset:
        _SIGTERM_NOTED[0] = False
    return _SIGTERM_NOTED[0]


def sigterm_without_collectives(trainer: pl.Trainer) -> None:
    """Make ``trainer``'s SIGTERM handler only note the signal (and forward it to the launched processes), as
    Lightning's did before 2.5.x added a ``torch.distributed.broadcast`` inside the handler (Lightning PR #20825).

    A collective inside a signal handler interrupts whatever collective each process was in: a DDP newcomer's
    ``kill -TERM`` to a two-process fit's group hung it in 6 of 9 runs, one process in the handler's broadcast over a
    ``barrier``, the other over an ``all_reduce``. Lightning's training loop already broadcasts rank 0's flag at every
    step, outside the handler, so nothing is lost. Called by ``lit-robust`` on the Trainers it builds, and at
    ``setup`` by ITLM, BatchFilter and CoTeaching on any Trainer (the same newcomer's own script with ITLM hung for 11
    minutes after one SIGTERM; the handler is registered after the setup hooks); a Trainer without Lightning's
    signal connector (another version) is left as it is."""
    _SIGTERM_NOTED[0] = False  # a new run
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or not hasattr(connector, "_sigterm_notifier_fn"):
        return
    # registered by `register_signal_handlers` when a run starts
    connector._sigterm_notifier_fn = _NoteSigterm(trainer, connector)


class _ForwardSigterm:
    """The SIGTERM handler of the process that started a ``ddp_spawn`` fit's processes and waits for them
    (:func:`forward_sigterm_to_started_processes`)."""

    def __call__(self, signum: Any, frame: Any) -> None:
        import importlib
        import multiprocessing

        _SIGTERM_NOTED[0] = True
        children = multiprocessing.active_children()
        for child in children:
            try:
                os.kill(child.pid, signum)
            except (ProcessLookupError, TypeError):  # ended meanwhile, or not started
                pass
        for child in children:  # each stops at its next step, as under `ddp`
            child.join(timeout=300)
        # Lightning ends each started process's fit with its SIGTERMException, a SystemExit: exit status 0, and this
        # process then waited for ever for their results (a hang, found while fixing the orphans). Raised here, it
        # ends the wait as it ends a `ddp` fit: `lit-robust` says "stopped by SIGTERM", exit status 143
        raise importlib.import_module(f"{pl.__name__}.utilities.exceptions").SIGTERMException(signum)


def forward_sigterm_to_started_processes() -> Callable[[], None]:
    """In the process that starts a ``ddp_spawn`` fit's processes, forward a SIGTERM to them, where it stops the fit
    at its next step as under ``ddp``: the default handler ended this process with exit status 143 and left them
    training to the end as orphans (a DDP newcomer's `kill -TERM` of `lit-robust fit`: the 40-epoch fit's last
    checkpoint written 5 s later, a requeued job would have raced them). Returns the function that puts the earlier
    handler back; does nothing outside the main thread."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _ForwardSigterm())
    return lambda: signal.signal(signal.SIGTERM, previous)


class _NoteSigterm:
    """The SIGTERM handler of :func:`sigterm_without_collectives`: a module-level class, not a closure, because
    ``ddp_spawn`` pickles the Trainer to start its processes (``lit-robust fit --trainer.strategy ddp_spawn`` ended
    in "Can't pickle local object 'sigterm_without_collectives.<locals>.note_sigterm'", a reports newcomer's run)."""

    def __init__(self, trainer: pl.Trainer, connector: Any) -> None:
        self.trainer, self.connector = trainer, connector

    def __call__(self, signum: Any, frame: Any) -> None:
        _SIGTERM_NOTED[0] = True
        if not self.connector.received_sigterm:
            launcher = self.trainer.strategy.launcher
            if launcher is not None:
                launcher.kill(signum)
        self.connector.received_sigterm = True


def early_stopping_checks(trainer: pl.Trainer, cb: Any, epochs: int) -> int:
    """How many times ``cb`` (an EarlyStopping) checks its metric in ``epochs`` epochs: once per training epoch when
    it checks at the epoch's end, else at each validation -- every ``check_val_every_n_epoch``-th epoch, as many
    times in it as ``val_check_interval`` makes (a power user's ``val_check_interval=0.5`` doubled the checks, and
    their patience of 10, advised for "the fit's 10 validation checks", stopped the last round)."""
    if getattr(cb, "_check_on_train_epoch_end", None):
        return epochs
    every = getattr(trainer, "check_val_every_n_epoch", None)
    batches, interval = trainer.num_training_batches, getattr(trainer, "val_check_batch", None)
    if every is None:  # validation every `val_check_interval` batches, across epochs
        if not math.isfinite(batches) or not isinstance(interval, int) or interval < 1:
            return epochs
        return max(1, int(batches) * epochs // interval)
    per_epoch = 1
    if math.isfinite(batches) and isinstance(interval, int) and interval >= 1:
        per_epoch = max(1, int(batches) // interval)
    return max(1, epochs // max(1, every)) * per_epoch
