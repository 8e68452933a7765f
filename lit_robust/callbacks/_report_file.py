"""Where a callback's per-sample report goes: resolved and checked at setup, on every rank, before training; and
:class:`EpochReport`, the report of an owner that drops samples batch by batch (``BatchFilter``, ``RCA``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from lit_robust._backend import Callback, TrainerFn, rank_zero_info, rank_zero_warn
from lit_robust._lightning import (
    begin_fit,
    check_state_owner,
    continues_earlier_fit,
    epoch_cut,
    in_a_lit_robust_command,
    no_training_batches,
    refuse_several_loaders,
    say_trained_nothing,
    start_epoch_after_skipped_end,
)
from lit_robust.callbacks._resume import (
    at_last_batch_under_ddp,
    epoch_whose_end_was_skipped,
    seed_persistent_workers,
    warn_inexact_resume,
)
from lit_robust.data.indexed import check_one_index_space
from lit_robust.report import (
    REPORT_FORMATS,
    EpochScores,
    counted_classes_note,
    folder_error,
    posterior_note,
    replaced_note,
    starved_classes_note,
    unseen_note,
    write_training_report,
)
from lit_robust.selection import distributed

__all__ = ["check_report_args", "report_enabled", "written_on_rank_zero", "resolve_report_path", "checked_folder",
           "training_set_size", "EpochReport",
           "ModuleReport"]


def check_report_args(report: Any, report_dir: Any, report_format: Any) -> None:
    """The checks every callback with a report shares (constructor arguments)."""
    if report is not None and not isinstance(report, bool):
        raise ValueError(f"`report` must be True, False or None (None: on when `report_dir` is given or under "
                         f"`lit-robust fit`, else off), got {report!r}.")
    if report_dir is not None and (not isinstance(report_dir, (str, os.PathLike)) or not os.fspath(report_dir)):
        raise ValueError(f"`report_dir` must be a folder path (a non-empty str or os.PathLike) or None, got "
                         f"{report_dir!r}.")
    if report_format not in REPORT_FORMATS:
        raise ValueError(f"`report_format` must be one of {list(REPORT_FORMATS)}, got {report_format!r}.")
    if report is False and report_dir is not None:
        raise ValueError(f"`report_dir` only applies with a report: got report_dir={os.fspath(report_dir)!r} with "
                         "report=False; pass report=True (or leave it None), or drop `report_dir`.")
    if report_format == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError as err:
            raise ValueError("`report_format` 'parquet' needs pyarrow, which is not installed: `pip install pyarrow` "
                             "(or `pip install \"lit-robust[report]\"`), or use report_format='csv'.") from err


def unwritten_report_note(owner: str, exception: BaseException) -> str:
    """What a fit stopped by ``exception`` after it began training says of its report: a notebook user's interrupted
    fit left none, and they found out cells later, from ``report_path`` being ``None``. Under ``lit-robust`` the
    command's own line says how to go on: the Python advice (exit status 0, ``ModelCheckpoint(dirpath=...)``)
    contradicted it, above it in the log (a pre-empted newcomer's exit status was 143)."""
    if in_a_lit_robust_command():
        mended = "" if isinstance(exception, (KeyboardInterrupt, SystemExit)) else ", once the error's cause is mended,"
        return (f"{owner}: the fit stopped ({type(exception).__name__}) before its end, so no per-sample report was "
                f"written; the fit resumed{mended} with the same command and `--ckpt_path last` writes it at its end.")
    if isinstance(exception, SystemExit):
        # Lightning's SIGTERMException: the process exits next (with status 0 unless caught), so "fit on with this
        # Trainer" could not be followed (a preemptible-cluster user's script)
        return (f"{owner}: the fit stopped ({type(exception).__name__}) before its end, so no per-sample report was "
                "written. The process exits now (Lightning raises `SystemExit`, status 0 unless you catch it): in "
                "the next process resume from the last checkpoint: pass its file as `ckpt_path`, or "
                "`ckpt_path=\"last\"` with a `ModelCheckpoint(dirpath=<a fixed folder>, save_last=True)` (without a "
                "`dirpath`, \"last\" looks in the new run's own logger folder, finds nothing and trains from scratch), "
                "and the report is written at the fit's end.")
    if distributed.world_size() > 1:
        # under DDP a process that raised ends the others too: "`trainer.fit` again" could not be followed (a DDP
        # newcomer's)
        mended = "" if isinstance(exception, KeyboardInterrupt) else ", once the error's cause is mended,"
        return (f"{owner}: the fit stopped ({type(exception).__name__}) before its end, so no per-sample report was "
                f"written (`report_path` is None). Under DDP the processes end with it: resume{mended} in a new run "
                "from the last checkpoint (`ckpt_path=...`), and the report is written at the fit's end.")
    # an error (not an interrupt) raises again on a fit that goes on unchanged: a Lightning user's refused
    # `val_check_interval` was told to call `trainer.fit` again as it was
    first = "" if isinstance(exception, KeyboardInterrupt) else "Once the error's cause is mended, f"
    return (f"{owner}: the fit stopped ({type(exception).__name__}) before its end, so no per-sample report was "
            f"written (`report_path` is None). {first or 'F'}it on with this Trainer (`trainer.fit` again: it trains "
            "the rest) or resume from a checkpoint (`ckpt_path=...`), and the report is written at the fit's end.")


def report_enabled(report: bool | None, report_dir: Any) -> bool:
    """``report=True``, or ``None`` with a ``report_dir`` (``lit-robust fit`` sets ``None`` to ``True``)."""
    return report is True or (report is None and report_dir is not None)


def written_on_rank_zero(trainer: Any, target: str, write: Callable[[], str], owner: str) -> str | None:
    """Run ``write`` (which writes the report and returns its path) on rank 0, then return the path on every rank once
    it is written (a barrier; under DDP the README's ``load_report(finder.report_path)`` failed on rank 1, whose
    ``report_path`` was ``None``: a DDP newcomer). An error in ``write`` is raised after the barrier, so that the
    other ranks do not wait for a rank 0 that has stopped.

    An ``OSError`` (the report's file blocked by a folder of its name, a full disk) is a warning of ``owner``'s and
    ``None`` on every rank: the fit has run to its end, and a raw ``IsADirectoryError`` out of ``os.replace`` ended
    it, followed by advice for a fit stopped early (``trainer.fit`` again, which trains nothing: a report
    newcomer's run). A resume from its last checkpoint writes the report."""
    path, error, unwritable = target, None, None
    if trainer.global_rank == 0:
        try:
            path = write()
        except OSError as exc:
            unwritable = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001 - raised below, after the barrier
            error = exc
    trainer.strategy.barrier("lit_robust report written")
    unwritable = trainer.strategy.broadcast(unwritable)  # every rank, before rank 0 raises: none waits for it
    if error is not None:
        raise error
    if unwritable is None:
        return path
    # on the command line the checkpoint's file, not `last`: with a `report_dir` of the user's the CLI cannot tell that
    # the report there is missing, and `--ckpt_path last` ran nothing as a finished fit (a newcomer's check)
    how = ("run the same command with `--ckpt_path` set to the fit's checkpoint file (the fitted model it names "
           "below)" if in_a_lit_robust_command() else
           "resume from the fit's last checkpoint with a new Trainer (`ckpt_path=...`)")
    rank_zero_warn(f"{owner}: the per-sample report could not be written to {target} ({unwritable}). The fit itself "
                   f"ran to its end. To write the report, free that path (or pass another `report_dir`) and {how}: it "
                   "trains nothing more and writes the report.")
    return None


def resolve_report_path(trainer: Any, report_dir: Any, filename: str) -> str:
    """The report's path: ``report_dir`` or the logger's folder (``trainer.log_dir``; the Trainer's
    ``default_root_dir`` without a logger, or with one that has no folder), checked to be writable on rank 0. Call on
    every rank (both ``trainer.log_dir`` and the outcome are broadcast); every rank raises the same ``ValueError``
    when the folder cannot be written."""
    # `~` is the home folder, as in Lightning's `default_root_dir` and `ModelCheckpoint(dirpath)`: a config's
    # `report_dir: ~/reports` wrote into a folder named `~` under the current one
    folder = os.path.expanduser(os.fspath(report_dir)) if report_dir is not None else trainer.log_dir
    if folder is None:
        # a logger with no folder of its own (`save_dir` None: a team's logger writing to a database) crashed the fit
        # at setup in `os.makedirs(None)`
        folder = trainer.default_root_dir
    path = os.path.join(folder, filename)
    problem = None
    if trainer.global_rank == 0:
        problem = folder_error(folder)
        if problem is None and os.path.isdir(path) and not os.path.islink(path):
            # a report newcomer's folder named `itlm_report.csv` was warned of as "a report from an earlier fit", and
            # the report, written over it at the fit's end, was lost (a file, or a link, is replaced)
            problem = f"the report's own file {path!r} is a folder there"
    problem = trainer.strategy.broadcast(problem)
    if problem is not None:
        if report_dir is not None:
            raise ValueError(f"`report_dir` must be a folder the report can be written into, got {folder!r} "
                             f"({problem}).")
        raise ValueError(f"the report goes into the logger's folder (`trainer.log_dir`) when `report_dir` is not "
                         f"given, and {folder!r} cannot be written ({problem}); pass `report_dir`, or report=False.")
    return path


def warn_earlier_report(trainer: Any, target: str | None, owner: str) -> None:
    """At train start: warn where this fit's report will replace a file an earlier fit left at ``target``, as
    Lightning warns of a checkpoint folder that is not empty (the note at the end came after the fit's minutes). Not
    for a resumed fit or one going on from an earlier fit of ``trainer``: the file is then its own earlier part's."""
    if target is None or getattr(trainer, "ckpt_path", None) or continues_earlier_fit(trainer):
        return
    if trainer.is_global_zero and os.path.isfile(target):
        rank_zero_warn(f"{owner}: {target} holds a per-sample report from an earlier fit, which this fit's report "
                       "replaces at its end; give each fit a `report_dir` of its own to keep both.")


def split_class_counts(values: list[int]) -> tuple[list[int] | None, list[int] | None]:
    """An epoch's counts by class (``seen`` of each label, then ``kept``), as two lists; ``(None, None)`` without any
    (pure)."""
    if not values:
        return None, None
    half = len(values) // 2
    return values[:half], values[half:]


def say_starved_classes(owner: str, history: list[Any], short_epoch: Any = None) -> None:
    """At fit end, without a report: warn of the classes the last whole epoch (``history``'s records, with ``seen``,
    ``seen_by_class`` and ``kept_by_class``, and ``dropped`` where they have it; the record before where
    ``short_epoch`` says a stop cut the last one short) kept far less of than the rest, as the report's note says it
    of its rows (:func:`~lit_robust.report.counted_classes_note`)."""
    records = list(history)
    if short_epoch is not None and len(records) > 1 and records[-1].epoch == short_epoch[0]:
        records = records[:-1]
    if not records or getattr(records[-1], "seen_by_class", None) is None:
        return
    last = records[-1]
    labelled = sum(last.seen_by_class)
    # CoTeaching's records count each network's drops, not the samples either dropped: its labelled rows alone
    seen, dropped = ((last.seen, last.dropped) if hasattr(last, "dropped") else
                     (labelled, labelled - sum(last.kept_by_class)))
    note = counted_classes_note(last.seen_by_class, last.kept_by_class, seen, dropped)
    if note is not None:
        rank_zero_warn(f"{owner}: {note} (`report=True` lists the samples.)")


def checked_folder(trainer: Any, folder: Any, argument: str) -> str:
    """``folder`` (a user's folder argument, ``argument``; ``~`` expanded), checked to be writable on rank 0 (created
    if missing). Call on every rank: the outcome is broadcast and every rank raises the same ``ValueError``."""
    folder = os.path.expanduser(os.fspath(folder))
    problem = folder_error(folder) if trainer.global_rank == 0 else None
    problem = trainer.strategy.broadcast(problem)
    if problem is not None:
        raise ValueError(f"`{argument}` must be a folder a file can be written into, got {folder!r} ({problem}).")
    return folder


def training_set_size(trainer: Any, owner: str) -> int:
    """Length of the (one) training dataloader's dataset: the number of rows of ``owner``'s report."""
    loader = trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    check_one_index_space(dataset, f"{owner}(report=True)")
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:
        pass
    if dataset is None and isinstance(loader, (dict, list, tuple)) or hasattr(loader, "iterables"):
        # a streaming user's dict of two loaders read "got dict over NoneType"
        raise ValueError(f"`{owner}(report=True)` needs one training dataloader, got several ({type(loader).__name__})"
                         ": the report has one row per sample of one data set. Join the data sets into one "
                         "(`torch.utils.data.ConcatDataset`) and train on one loader.")
    if isinstance(dataset, torch.utils.data.IterableDataset):
        # a streaming user was told by IndexedDataset's message that a stream yielding its own indices works with the
        # per-batch filters, then this; a `__len__` was the way, found by guessing
        raise ValueError(f"`{owner}(report=True)` needs the number of training samples, and the stream "
                         f"{type(dataset).__name__} (an IterableDataset) has no `__len__`: give it one returning n, "
                         "with each sample's index in 0 .. n - 1 and unique, or pass report=False.")
    raise ValueError(f"`{owner}(report=True)` needs one training dataloader over a sized (map-style) dataset, got "
                     f"{type(loader).__name__} over {type(dataset).__name__}.")


class EpochReport:
    """The per-sample report of an owner that scores and drops samples batch by batch: where this fit's report goes
    (``None``: no report) and its sums (:class:`~lit_robust.report.EpochScores`, carried by checkpoints). The owner
    calls :meth:`setup` at setup, :meth:`start` at train start, :meth:`start_epoch`, :meth:`add` per batch,
    :meth:`flush` wherever a checkpoint may follow, :meth:`end_epoch` and :meth:`write` at train end."""

    def __init__(self, owner: str, filename: str) -> None:
        self.owner, self.filename = owner, filename  # e.g. "BatchFilter", "filter_spl_report"
        self.target: str | None = None
        self.state: EpochScores | None = None

    @property
    def active(self) -> bool:
        """This fit writes a report and its sums exist (from :meth:`start` on)."""
        return self.target is not None and self.state is not None

    def setup(self, trainer: Any, report: bool | None, report_dir: Any, report_format: str, auto: Any = None,
              fresh: bool | None = None) -> None:
        """Resolve (and check) this fit's report path; on every rank. ``auto``, the owner's
        :class:`~lit_robust.selection.auto_drop.AutoDropRatio` if any, learns whether its "estimated 0" note may point
        to the report this fit writes. ``fresh``: the owner's fit starts its state afresh
        (:func:`~lit_robust._lightning.begin_fit`; ``None``: unless it goes on from an earlier fit of ``trainer``)."""
        from lit_robust.selection.auto_drop import report_pointer

        self.target = None
        self.written = False  # whether `write` ran in this fit (see `write_if_skipped`)
        if fresh if fresh is not None else not continues_earlier_fit(trainer):
            self.state = None  # an earlier fit's sums do not carry over (a resumed fit restores its own after setup)
        if report_enabled(report, report_dir):
            smoke = getattr(trainer, "fast_dev_run", False)
            if smoke:
                # a smoke run of a few batches: a tuner user's fast_dev_run left a report of 6,000 rows, 5,872
                # unscored, beside the real run's (Lightning writes no logs or checkpoints in it either)
                batches = 1 if smoke is True else int(smoke)
                rank_zero_info(f"{self.owner}: `fast_dev_run` trains {batches} batch{'' if batches == 1 else 'es'}, "
                               "so no per-sample report is written.")
            else:
                self.target = resolve_report_path(trainer, report_dir, f"{self.filename}.{report_format}")
        if auto is not None:
            auto.ranked_by = report_pointer(self.target is not None)

    def start(self, trainer: Any, device: torch.device) -> None:
        """Training starts: the sums of every training sample, restored from a checkpoint or new, on ``device``."""
        if self.target is None:
            return
        warn_earlier_report(trainer, self.target, self.owner)
        n = training_set_size(trainer, self.owner)
        if self.state is not None and self.state.n != n:
            raise ValueError(f"the training set changed size since the checkpoint ({self.state.n} -> {n}); the "
                             "report needs the same samples.")
        if self.state is None:
            self.state = EpochScores(n, device)
        self.state.to(device)

    def drop_partial_epoch(self, epoch: int) -> None:
        """Forget the sums of ``epoch`` when a stopped fit did not finish it: a fit going on from it on the same
        Trainer trains it again from its first batch."""
        if self.state is not None and self.state.epoch == epoch:
            self.state.epoch = None  # `start_epoch` then starts its sums from zero

    def start_epoch(self, epoch: int) -> None:
        if self.active:
            self.state.start_epoch(epoch)

    def add(self, *args: Any, **kwargs: Any) -> None:
        """One batch (:meth:`EpochScores.add`); nothing without a report."""
        if self.active:
            self.state.add(*args, **kwargs)

    def flush(self) -> bool:
        """Add every rank's sums into the shared part (a collective). Returns whether there is a report."""
        if not self.active:
            return False
        self.state.flush(distributed.all_reduce_sum, distributed.all_reduce_max)
        return True

    def end_epoch(self, epoch: int, trainer: Any = None) -> None:
        """The end of ``epoch`` (a collective): flush, then mark the samples first dropped in it. ``trainer``: the one
        whose loop is at this epoch's end, read for a stop that cut the epoch short (:func:`epoch_cut`; ``None``: an
        epoch Lightning skipped the end of, which ended at its last batch)."""
        if self.flush():
            cut = None if trainer is None else epoch_cut(trainer)
            self.state.end_epoch(epoch, None if cut is None else cut[1:])

    def write(self, trainer: Any, estimator: str) -> str | None:
        """Write the last flushed epoch's report on rank 0 (``clean_posterior`` by ``estimator``) and return its path
        on every rank once it is written (a collective), or ``None`` when there is nothing to write (no report, or a
        fit that trained nothing)."""
        self.written = True
        if not self.active or self.state.epoch is None:
            return None

        state = self.state

        def write() -> str:
            table = state.table(estimator)
            replaced = replaced_note(self.target)
            path = write_training_report(table, self.target, trainer)
            note = posterior_note(table)
            rank_zero_info(f"{self.owner}: per-sample report written to {path}{replaced}"
                           + (f"; {note}" if note else ""))
            if state.shows_last_whole:
                trained, batches = state.cut
                rank_zero_info(f"{self.owner}: a stop ended epoch {state.epoch} after {trained} of its {batches} "
                               f"batches, so the report shows epoch {state.last_whole_epoch}, the last whole one "
                               "(its scores, kept and predictions; `first_dropped_epoch` up to it).")
            unseen = unseen_note(table)
            if unseen is not None:
                rank_zero_warn(f"{self.owner}: the per-sample report {path}: {unseen}")
            starved = starved_classes_note(table)
            if starved is not None:
                rank_zero_warn(f"{self.owner}: {starved}")
            return path

        return written_on_rank_zero(trainer, self.target, write, self.owner)

    def write_if_skipped(self, trainer: Any, estimator: str) -> str | None:
        """At fit end: :meth:`write` unless it ran at train end. Lightning skips the whole fit loop, its
        ``on_train_end`` too, when a fit resumes from a checkpoint of its last epoch (one stopped while its report
        was written: a reproducibility newcomer's SIGKILL), and the resumed fit wrote no report."""
        return None if self.written else self.write(trainer, estimator)

    def state_dict(self) -> dict[str, Any] | None:
        """The sums, with every rank's not yet flushed (a checkpoint written inside an epoch, `every_n_train_steps`):
        rank 0's in the state's own tables, the other ranks' in ``other_ranks`` (a gather: call on every rank, which
        has a state wherever one has). Rank 0's alone were saved: a 2-rank fit resumed there lost the other ranks'."""
        if self.state is None:
            return None
        return {**self.state.state_dict(), "other_ranks": distributed.other_ranks_parts(self.state.local_part())}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict`: the flushed sums on every rank, and each rank its own unflushed ones (under
        another world size all of them on rank 0; from an older checkpoint rank 0's on rank 0 alone), so the next
        flush adds each once (restored on every rank, W times)."""
        self.state = None if state is None else EpochScores.from_state_dict(state)
        if self.state is not None:
            self.state.set_local_parts(distributed.parts_to_restore(self.state.local_part(), state.get("other_ranks")))


class _UnwrittenReportNote(Callback):
    """The exception hook a module lacks: Lightning calls ``on_exception`` of callbacks only, so a module that writes
    a report (:class:`ModuleReport`) brings this one (``configure_callbacks``) to say that a stopped fit wrote none,
    as ``ITLM`` and ``BatchFilter`` say."""

    def __init__(self, module: Any) -> None:
        self.module, self.trained = module, False

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.trained = False

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        self.trained = True
        # a module's own `on_train_batch_end` runs after the callbacks, ModelCheckpoint's save included: too late
        if at_last_batch_under_ddp(trainer):
            self.module._gather_epoch_to_rank_zero(trainer.current_epoch)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        report = self.module._report
        if self.trained and report.active and not report.written:  # only after a batch of this fit trained
            rank_zero_warn(unwritten_report_note(type(self.module).__name__, exception))


class ModuleReport:
    """The hooks of a LightningModule that writes its own per-sample report (``RCA``, ``CoTeaching``): an
    :class:`EpochReport` in ``self._report``, its arguments in ``self.report``, ``report_dir``, ``report_format`` and
    ``hparams.estimator``. :meth:`setup_report` resolves the path at fit setup; the sums start with training, are
    flushed before a checkpoint written at validation end, and the file is written at train end
    (:attr:`report_path`). The module adds its batches (``self._report.add``) and ends its epochs
    (``self._report.end_epoch``) itself, in ``_epoch_end(epoch, log)``, which its ``on_train_epoch_end`` calls; its
    ``on_load_checkpoint`` calls :meth:`_note_skipped_epoch_end`."""

    report_path: str | None

    def _epoch_end(self, epoch: int, log: bool = True) -> None:
        """The module's end of ``epoch`` (a collective); ``log=False`` where Lightning allows no ``self.log``."""
        raise NotImplementedError

    def _note_skipped_epoch_end(self, checkpoint: dict[str, Any]) -> None:
        """From ``on_load_checkpoint``, in a resumed fit: the epoch whose end Lightning will skip (a checkpoint written
        at its last batch, :func:`~lit_robust.callbacks._resume.epoch_whose_end_was_skipped`), for
        :meth:`_close_skipped_epoch`."""
        trainer = getattr(self, "_trainer", None)
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        self._skipped_end = epoch_whose_end_was_skipped(checkpoint) if fitting else None

    def _close_skipped_epoch(self) -> bool:
        """Run the end of the epoch Lightning skipped (see :meth:`_note_skipped_epoch_end`; at train start, or at
        train or fit end where Lightning trains nothing more), without logging: its counts and ``"auto"`` scores ran
        into the next epoch's (CoTeaching's epoch 1 read ``seen=320`` of 160 and epoch 0 had no estimate), and
        CoTeaching's epoch-interval schedulers stepped one epoch late. Returns whether it ran."""
        epoch, self._skipped_end = getattr(self, "_skipped_end", None), None
        if epoch is None:
            return False
        self._epoch_end(epoch, log=False)
        return True

    def _reset_fit_state(self) -> None:
        """The running state as before a fit (the module's estimate; a module with more state extends this)."""
        self._short_epoch: tuple[int, int, int] | None = None  # an epoch a stop cut short, at its end
        auto = getattr(self, "_auto", None)
        if auto is not None:
            auto.reset()

    def _gather_epoch_to_rank_zero(self, epoch: int) -> None:
        """At the last training batch of ``epoch`` under DDP (a collective; this module's report callback calls it
        before a ModelCheckpoint saves, :func:`~lit_robust.callbacks._resume.at_last_batch_under_ddp`): every rank's
        report sums and ``"auto"`` scores of the epoch onto rank 0, whose state a checkpoint holds (a module with more
        running state extends this)."""
        self._report.flush()
        auto = getattr(self, "_auto", None)
        if auto is not None:
            auto.gather_to_rank_zero(epoch, self.device)  # type: ignore[attr-defined]

    def _drop_partial_epoch(self, epoch: int) -> None:
        """What a stopped fit counted of ``epoch``, which it did not finish, goes: a fit going on from it on the same
        Trainer trains that epoch again from its first batch."""
        self._report.drop_partial_epoch(epoch)
        auto = getattr(self, "_auto", None)
        if auto is not None:
            auto.drop_partial_epoch()

    def setup_report(self) -> None:
        """At ``setup("fit")``: this fit's state (fresh, or going on), arguments (``_apply_arguments`` where the module
        has one) and report path (checked on every rank; the module's ``_auto`` as in :meth:`EpochReport.setup`)."""
        earlier_path, self.report_path = self.report_path, None  # this fit's, once written (not a failed fit's)
        fresh = begin_fit(self, self._trainer, type(self).__name__, earlier_path)
        self._skipped_end: int | None = None  # a resumed fit's checkpoint sets it (`_note_skipped_epoch_end`)
        apply = getattr(self, "_apply_arguments", None)
        if apply is not None:  # the module's schedule arguments as they are now
            apply(goes_on=not fresh)
        auto = getattr(self, "_auto", None)
        if fresh:
            self._reset_fit_state()  # a new Trainer's fit: an earlier fit's epochs and estimates do not carry over
        elif self._foreign_state is None:  # the same Trainer's fit goes on: its unfinished epoch trains again
            self._drop_partial_epoch(self._trainer.current_epoch)
        self._report.setup(self._trainer, self.report, self.report_dir, self.report_format, auto, fresh=fresh)
        if auto is not None:
            auto.setup_fit(self._trainer)
        seed_persistent_workers(self._trainer)  # a resumed fit draws what the uninterrupted one draws

    def configure_callbacks(self) -> Any:
        # a module gets no `on_exception`: its own callback says that a stopped fit wrote no report (a subclass that
        # brings callbacks adds them to this list)
        theirs = super().configure_callbacks()  # type: ignore[misc]
        theirs = [] if theirs is None else list(theirs) if isinstance(theirs, (list, tuple)) else [theirs]
        note = self.__dict__.get("_unwritten_report_note")
        if note is None:  # one per module: asked again (the CLI asks), it is the same callback
            note = self._unwritten_report_note = _UnwrittenReportNote(self)
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and any(cb is note for cb in trainer.callbacks):
            # attached by an earlier stage of this Trainer (fit before test, as the docs' snippets do): returned again,
            # Lightning logged "will override existing callbacks passed to Trainer: _UnwrittenReportNote", a private
            # name the user never passed (RealNVP's `configure_callbacks` skips its own filter alike)
            return theirs
        return [*theirs, note]

    def on_train_start(self) -> None:
        check_state_owner(self)
        # CoTeaching's and RCA's own batch check met several loaders at the first batch, with dict-sample advice
        refuse_several_loaders(self.trainer.train_dataloader)
        auto = getattr(self, "_auto", None)
        if auto is not None:  # losses (Co-teaching's, RCA's reconstruction errors), not Co-PRL(L)'s gradient norms
            rule = getattr(self, "rule", None)
            auto.read_data(self.trainer, scores_are_losses=rule != "prl",
                           scores_are_residual_norms=rule == "prl" and getattr(self, "loss", None) in (None, "mse"))
        self._report.start(self.trainer, self.device)
        warn_inexact_resume(self.trainer, type(self).__name__, skipped_end=getattr(self, "_skipped_end", None))
        if self._close_skipped_epoch():
            start_epoch_after_skipped_end(self.trainer, lambda: ModuleReport.on_train_epoch_start(self))
        super().on_train_start()  # cooperative: the anomaly detector base clears a threshold this fit makes stale

    def on_train_epoch_start(self) -> None:
        self._report.start_epoch(self.current_epoch)

    def on_validation_epoch_end(self) -> None:
        # a checkpoint written at validation end comes after this hook: add the ranks' report sums first
        if not self.trainer.sanity_checking and self.trainer.state.fn == TrainerFn.FITTING:
            self._report.flush()
        super().on_validation_epoch_end()  # cooperative: RCA's `val_auroc` is logged by its detector base

    def on_train_end(self) -> None:
        self._close_skipped_epoch()
        path = self._report.write(self.trainer, self.hparams.estimator)
        if path is not None:
            self.report_path = path

    def on_fit_end(self) -> None:
        empty = no_training_batches(self.trainer)
        if empty is not None:
            rank_zero_warn(f"{type(self).__name__}: {empty}")
        if say_trained_nothing(self, type(self).__name__, reports=self._report.target is not None):
            return
        self._close_skipped_epoch()  # resumed from the fit's last batch: Lightning skips the fit loop, its hooks too
        path = self._report.write_if_skipped(self.trainer, self.hparams.estimator)
        if path is not None:
            self.report_path = path
