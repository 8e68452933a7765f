"""What a resumed fit needs beside the weights: each stateful callback's own state in the checkpoint (pure
bookkeeping over the checkpoint's keys; the callbacks call :func:`check_resumable` from ``on_load_checkpoint``), and
the random state the uninterrupted fit would have had (:func:`random_state`, :func:`restore_random_state`)."""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, SequentialSampler

from lit_robust._backend import TrainerFn, pl, rank_zero_warn
from lit_robust._lightning import continues_earlier_fit, in_a_lit_robust_command, start_afresh_advice
from lit_robust.data.indexed import reads_differ
from lit_robust.selection import distributed

__all__ = ["MidEpochCheckpoint", "at_last_batch_under_ddp", "check_same_on_every_rank", "train_set_length", "check_resumable", "check_resume_arguments_in_fit",
           "epoch_whose_end_was_skipped", "loss_argument", "mid_epoch_checkpoint", "random_state",
           "counts_of_this_rank", "reduce_counters_to_rank_zero", "restore_random_state", "restore_random_state_in_fit",
           "seed_persistent_workers", "set_this_process_random_state", "skipped_epoch_end_note",
           "this_process_random_state", "validates_off_epoch_ends", "warn_inexact_resume"]


def this_process_random_state() -> dict[str, Any]:
    """This process's random generators: torch's CPU generator, the CUDA ones where CUDA is in use, numpy's and
    Python's global ones. No collective (:func:`random_state` is the checkpoint's, which gathers every rank's);
    put back with :func:`set_this_process_random_state`. Only plain values and tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"torch": torch.get_rng_state(), "cuda": cuda,
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
            "python": (version, list(internal), gauss_next)}


def set_this_process_random_state(state: dict[str, Any]) -> None:
    """Put back what :func:`this_process_random_state` returned. The CUDA generators only where this process has as
    many devices as the saving one had."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def random_state() -> dict[str, Any]:
    """The random generators of the fit's processes, for a checkpoint: in one process its own
    (:func:`this_process_random_state`); under DDP ``{"ranks": [rank 0's, rank 1's, ...]}``, every rank's gathered
    onto every rank -- a collective: call it on every rank, as Lightning's checkpoint saving (``dump_checkpoint``,
    run by every rank before rank 0 writes the file) calls the owners' ``state_dict``/``on_save_checkpoint``.

    Lightning saves none of them, so a fit resumed from an epoch-end checkpoint draws its next epoch's shuffle
    (``DataLoader(shuffle=True)`` seeds its sampler from torch's generator), dropout masks and augmentations from
    wherever the resumed process's generators happen to be: the batches, the per-batch filters' drops and the weights
    part from the uninterrupted fit's (a newcomer's 128 of 2,400 ``kept`` flags). The owners of a resumable state
    (ITLM, BatchFilter, CoTeaching, RCA, SimCLR) save this beside it and put it back when the resumed training starts,
    and so does ``RobustMixin`` for a fit with none of them (a plain or Bootstrap-loss classifier, a plain flow).
    Under DDP each rank draws its own dropout masks: rank 0's state alone (or none, as before) left every rank's masks
    after a resume apart from the uninterrupted fit's (a 2-rank ITLM fit with dropout ended up to 0.08 away from its
    weights).

    Only plain values and tensors, so a ``torch.load(..., weights_only=True)`` reads it.
    """
    state = this_process_random_state()
    if distributed.world_size() <= 1:
        return state
    return {"ranks": distributed.all_gather_objects(state)}


def restore_random_state(state: dict[str, Any] | None) -> None:
    """Put back what :func:`random_state` saved: in one process its state, under DDP each rank its own. Nothing for
    ``None`` (a checkpoint written before lit_robust saved the random state under DDP), and nothing but a warning when
    the checkpoint was written by another number of processes than this fit's (whose ranks then draw other dropout
    masks and augmentations from here on)."""
    if state is None:
        return
    ranks = state.get("ranks")
    saved, now = (1 if ranks is None else len(ranks)), distributed.world_size()
    if saved != now:
        rank_zero_warn(f"lit_robust: this resumed fit runs {now} process{'es' if now > 1 else ''}, but its checkpoint "
                       f"was written by {saved}: their random state (dropout masks, random augmentations) is not "
                       "restored, so from here on those draws differ from the uninterrupted fit's. For an exact "
                       f"resume, resume with {saved} process{'es' if saved > 1 else ''} (`devices`, `num_nodes`).")
        return
    set_this_process_random_state(state if ranks is None else ranks[distributed.rank()])


def check_resumable(callback: Any, trainer: Any, checkpoint: dict[str, Any]) -> bool:
    """In a resumed fit, raise when ``checkpoint`` holds the state of a callback of ``callback``'s class under another
    key than ``callback.state_key`` that no callback of that class on ``trainer`` claims: the fit resumes a run whose
    callback had other arguments (e.g. ``keep_ratio``). Lightning would skip that state with a note and the resumed
    fit would run on without it (a newcomer's resume with another ``keep_ratio``: a history of one round, 0.87 test
    accuracy against 0.93, silently).

    Keys are Lightning's ``state_key``: the class name and the arguments that tell two instances apart, e.g.
    ``ITLM{'keep_ratio': 0.7, 'round_epochs': [3, 3, 3, 6]}``.

    Returns whether the callback's ``load_state_dict`` should restore the state (only in a fit).
    """
    if trainer.state.fn != TrainerFn.FITTING:
        # validate/test/predict from a checkpoint use the weights only: the callback keeps its state (Lightning would
        # restore it too; a newcomer's `trainer.test(ckpt_path="best")` rewound ITLM's history by a round)
        return False
    saved = checkpoint.get("callbacks") or {}
    cls = type(callback)
    mine = callback.state_key
    if mine in saved:
        _check_same_arguments(callback, saved[mine])
        return True
    prefix = f"{cls.__qualname__}{{"
    claimed = {cb.state_key for cb in trainer.callbacks if type(cb) is cls}
    others = sorted(k for k in saved if isinstance(k, str) and k.startswith(prefix) and k not in claimed)
    if others:
        diffs = _state_key_differences(callback, others[0][len(prefix) - 1:], mine[len(prefix) - 1:])
        raise ValueError(f"the checkpoint was written by {others[0]}, but this fit has {mine}"
                         + (f" (it differs in {diffs})" if diffs else "") + ": a resumed fit needs the "
                         f"{cls.__qualname__} arguments it was written with (what it selects and estimates depends "
                         f"on them). {_resume_or_start_afresh(callback)}")
    return True


def _state_key_differences(callback: Any, theirs: str, mine: str) -> str:
    """``"`per_class` True (this fit: False)"``: the arguments two state keys' dicts differ in, this fit's value read
    off the callback (a key left out of a state key is an argument at its default: a DDP newcomer had to spot
    that ``per_class`` was missing from one of two printed dicts); ``""`` when they cannot be read."""
    import ast

    try:
        a, b = ast.literal_eval(theirs), ast.literal_eval(mine)
    except (ValueError, SyntaxError):
        return ""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return ""
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, _UNSET) != b.get(k, _UNSET)]
    return ", ".join(f"`{k}` {a[k]!r} (this fit: {getattr(callback, k, b.get(k))!r})" if k in a else
                     f"`{k}` at its default (this fit: {getattr(callback, k, b.get(k))!r})" for k in keys)


_UNSET = object()


def _check_same_arguments(callback: Any, state: Any) -> None:
    """Raise when ``callback``'s ``resume_arguments()`` (the arguments outside its ``state_key`` that change what a fit
    does: its seed, warm-up, estimator, ...) differ from those its checkpointed ``state`` was written with. A
    portability-minded newcomer resumed with another ``seed``, ``reinit``, ``warmup_epochs``, ``auto_margin`` or
    ``estimator``: each was accepted without a word and gave a run that matched neither set-up (the ``estimator``
    change mixed both estimators' figures in one median). Checkpoints written before the arguments were saved pass."""
    saved = state.get("arguments") if isinstance(state, dict) else None
    now = callback.resume_arguments() if callable(getattr(callback, "resume_arguments", None)) else None
    if not saved or not now:
        return
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if changed:
        # the name the user knows: a RobustRealNVP resumed from an older checkpoint was told of a "BatchFilter" it
        # never made (its own trimming filter, whose `owner` it is)
        name = getattr(callback, "owner", None) or type(callback).__qualname__
        diffs = ", ".join(f"`{k}` {saved[k]!r} (this fit: {now[k]!r}{_default_warmup_note(callback, k, saved[k])})"
                          for k in changed)
        raise ValueError(f"the checkpoint was written by {name} with {diffs}: a resumed fit needs the {name} "
                         "arguments it was written with (what it selects and estimates depends on them). "
                         f"{_resume_or_start_afresh(callback)}")


def _resume_or_start_afresh(callback: Any) -> str:
    """The way on from a refused resume: the arguments, or a new fit (:func:`start_afresh_advice`); a module that
    holds the state (CoTeaching, RCA, RealNVP: ``callback`` or the ``owner`` of its filter) is named, where a modules
    newcomer was told of a `MyModel` that is not the checkpoint's class."""
    owner = getattr(callback, "owner", None)
    module = type(callback).__name__ if isinstance(callback, pl.LightningModule) else (
        owner if isinstance(owner, str) and owner not in ("BatchFilter", "ITLM") else None)
    where = " (the fit's config.yaml beside its checkpoints holds them)" if in_a_lit_robust_command() else ""
    return f"Resume with those arguments{where}, or {start_afresh_advice(module)}."


def _default_warmup_note(callback: Any, key: str, saved: Any) -> str:
    """For a ``warmup_epochs`` left out (``None``, the owners' default, 3 epochs with ``drop_ratio="auto"``, 0 with a
    number): that the value compared is that default and which argument resumes. A checkpoint of an ``"auto"`` fit
    written before the default became ``None`` holds 0, and its resume said "(this fit: 3)" to a user who had passed
    no warm-up."""
    if key == "reestimate" and None in (saved, getattr(callback, key, 0)):
        # `None` (the default) re-estimates on one regression target only: a resume newcomer who spelt out `False`
        # for a classifier's default was refused without a word of why the two differ
        return (", `None` being the default: re-estimate on one regression target only; pass "
                f"`reestimate={saved!r}` to resume this checkpoint")
    if key != "warmup_epochs":
        return ""
    hparams = getattr(callback, "hparams", None)  # RCA keeps its arguments there; the callbacks as attributes
    given = hparams.get(key, 0) if hparams is not None and not hasattr(callback, key) else getattr(callback, key, 0)
    if given is not None:
        return ""
    # the default depends on the drop ratio: 0 with a number was said to be "the default with drop_ratio='auto'"
    which = "drop_ratio='auto'" if getattr(callback, "drop_ratio", None) == "auto" else "a numeric drop_ratio"
    return f", the default with {which}; pass `warmup_epochs={saved!r}` to resume this checkpoint"


def loss_argument(loss: Any) -> Any:
    """A ``loss`` argument as a checkpoint keeps it for :func:`_check_same_arguments`: ``None``, the name, or a
    callable's qualified name (a function object differs from run to run)."""
    return loss if loss is None or isinstance(loss, str) else getattr(loss, "__qualname__", type(loss).__qualname__)


def check_resume_arguments_in_fit(module: Any, state: Any) -> None:
    """From a LightningModule's ``on_load_checkpoint`` (``CoTeaching``, ``RCA``): in a resumed fit only, raise as a
    callback's :func:`check_resumable` does when ``module.resume_arguments()`` differ from the ``"arguments"`` its
    checkpointed ``state`` was written with (a reviewer's CoTeaching resumed with another ``warmup_epochs`` ramped on
    the new schedule from the old estimates, a run equal to neither). Loaded for ``test``/``validate``/``predict`` or
    by ``load_from_checkpoint`` (no trainer), the weights are what is used: nothing is checked."""
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
        _check_same_arguments(module, state)


def restore_random_state_in_fit(module: Any, state: dict[str, Any] | None) -> None:
    """:func:`restore_random_state` from a LightningModule's ``on_load_checkpoint`` (``CoTeaching``, ``RCA``): only in a
    resumed fit, not when the checkpoint is loaded for ``test``/``validate``/``predict`` or by ``load_from_checkpoint``
    (no trainer), which must leave the process's random state alone."""
    trainer = getattr(module, "_trainer", None)
    if trainer is not None and trainer.state.fn == TrainerFn.FITTING:
        restore_random_state(state)


def cut_epoch_note(owner: str, cut: Sequence[int], consequence: str) -> str:
    """The warning of a fit resumed from a checkpoint written at the end of an epoch a stop cut short (``cut``:
    :func:`~lit_robust._lightning.epoch_cut`'s ``(epoch, batches trained, batches of an epoch)``, which the owner
    recorded at that epoch's end). ``consequence`` says what the missing batches change for the owner."""
    epoch, trained, batches = (int(v) for v in cut)
    return (f"{owner}: this checkpoint was written at the end of epoch {epoch}, which trained {trained} of its "
            f"{batches} batches (the fit was stopped mid-epoch: `trainer.should_stop`, `max_time`, `max_steps`, ...). "
            f"Lightning resumes at the next epoch without training the rest of that one, so {consequence}. For the "
            "uninterrupted fit's result resume from a checkpoint written at the end of a whole epoch (e.g. the one "
            "before).")


def warn_cut_epoch_in_fit(module: Any, cut: Sequence[int] | None) -> None:
    """:func:`cut_epoch_note` from a LightningModule's ``on_load_checkpoint`` (``CoTeaching``, ``RCA``), in a resumed
    fit only (a filter user's `max_steps` stop, resumed with `ckpt_path="last"`, trained 147 steps for 188 and read
    0.735 for 0.770, without a word)."""
    trainer = getattr(module, "_trainer", None)
    if cut is not None and trainer is not None and trainer.state.fn == TrainerFn.FITTING:
        rank_zero_warn(cut_epoch_note(type(module).__name__, cut, CUT_EPOCH_CONSEQUENCE))


#: what a cut epoch changes for a per-batch filter or a module with its own (ITLM says it of its rounds)
CUT_EPOCH_CONSEQUENCE = ("the resumed fit trains fewer batches than the uninterrupted one, and its drop ratios, "
                         "records and report go on from a shorter epoch")


def _training_loaders(trainer: Any) -> list[Any]:
    """The fit's training loaders (Lightning's combined loader, flattened), ``[]`` before they are set up."""
    combined = getattr(getattr(trainer, "fit_loop", None), "_combined_loader", None)
    return list(combined.flattened) if combined is not None else []


#: samples :func:`~lit_robust.data.indexed.reads_differ` reads twice each: one missed a flip applied half the time in
#: 10 of 20 seeds (a reviewer's), 16 miss it about once in 65,000
_AUGMENTATION_PROBES = 16


def _augments(loader: Any) -> bool:
    """Whether ``loader``'s dataset draws at random when read (an augmentation)."""
    return reads_differ(getattr(loader, "dataset", None), items=_AUGMENTATION_PROBES)


def _draws_worker_seed_globally(loader: Any) -> bool:
    """A loader whose one iterator per fit (persistent workers) draws its workers' base seed from torch's global
    generator (no ``generator`` of its own)."""
    return (isinstance(loader, DataLoader) and loader.num_workers > 0 and bool(loader.persistent_workers)
            and loader.generator is None)


def seed_persistent_workers(trainer: Any) -> None:
    """At fit setup: give a training ``DataLoader`` passed to ``trainer.fit`` itself, with persistent workers and no
    ``generator``, one of its own, seeded with the global seed (``PL_GLOBAL_SEED``, else 0).

    Such a loader creates its iterator once in an uninterrupted fit and once more in a resumed one, and each
    creation draws the workers' base seed from the loader's generator -- without one, from torch's global generator,
    which then stood one draw further in the resumed fit: every later shuffle and dropout mask differed (a
    reproducibility newcomer's BatchFilter with their own ``DataLoader(num_workers=2, persistent_workers=True)``).
    With a generator of its own the global one is left alone; the shuffle (``shuffle=True`` made its sampler before
    this, on the global generator) is unchanged. lit_robust's datamodules and ITLM's loader have one. A loader made
    later by a module's or datamodule's ``train_dataloader()`` is out of reach here: :func:`warn_inexact_resume`.

    The generator given is seeded again at the setup of each later fit of the same loader that does not go on from
    an earlier fit of its Trainer, so that each fit of a sweep draws what it draws in a process of its own."""
    source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)
    loader = None if source is None or source.is_module() else source.instance
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
    if _draws_worker_seed_globally(loader):
        loader.generator = torch.Generator().manual_seed(seed)
        loader._lit_robust_generator = loader.generator  # ours to seed again at the next fit (see below)
    elif (isinstance(loader, DataLoader) and loader.generator is not None  # not a dict of loaders or an array,
          and loader.generator is getattr(loader, "_lit_robust_generator", None)  # which are refused later by name
          and not continues_earlier_fit(trainer)):
        # a sweep's second fit of the same loader went on from where the first fit left this generator: its
        # workers' seeds (random augmentation) differed from the same seed's fit in a fresh process
        loader.generator.manual_seed(seed)


def _warn_unseeded_workers(trainer: Any, owner: str) -> None:
    """At train start of a resumed fit: warn when a training loader's persistent workers draw at random (an
    augmentation, found by :func:`~lit_robust.data.indexed.reads_differ`: their draws restart with the workers), and
    when one still draws its persistent workers' seed from torch's global generator (see
    :func:`seed_persistent_workers`), with the change that makes the resume exact."""
    loaders = _training_loaders(trainer)
    if getattr(trainer, "ckpt_path", None) is None or not loaders:
        return
    if any(isinstance(loader, DataLoader) and loader.num_workers > 0 and loader.persistent_workers
           and _augments(loader) for loader in loaders):
        # a vision newcomer's `persistent_workers=True` with RandomCrop: the resume kept 11 % of the samples
        # otherwise than the uninterrupted fit, without a word
        rank_zero_warn(f"{owner}: this resumed fit's training DataLoader has persistent workers and its dataset draws "
                       "at random (augmentation): those draws live in the worker processes, which start afresh here, "
                       "so the augmentations, and so the drops and weights, from here on differ from the "
                       "uninterrupted fit's. With `persistent_workers=False` (each epoch's workers seeded from the "
                       "checkpointed generators) a resume from an epoch-end checkpoint is exact.")
    if any(_draws_worker_seed_globally(loader) for loader in loaders):
        rank_zero_warn(f"{owner}: this resumed fit's training DataLoader has persistent workers and no `generator`: "
                       "creating it again drew its workers' seed from torch's global generator, so the shuffles and "
                       "dropout masks from here on differ from the uninterrupted fit's. For an exact resume build it "
                       "with a generator of its own and the sampler on the global one: `DataLoader(ds, "
                       "sampler=RandomSampler(ds), generator=torch.Generator().manual_seed(0), num_workers=..., "
                       "persistent_workers=True)` (lit_robust's datamodules do), or pass the loader to `trainer.fit` "
                       "itself.")


def _warn_mid_epoch_resume(trainer: Any, owner: str) -> None:
    """At train start: warn when the fit resumes from a checkpoint written inside an epoch (``ModelCheckpoint(
    every_n_train_steps=...)``, ``save_on_exception=True``): Lightning trains the rest of that epoch's steps in a new
    order, so the fit is not the uninterrupted one, which the docs promise only from an epoch-end checkpoint (a
    reproducibility newcomer's resume differed without a word of lit_robust's)."""
    loop = getattr(trainer, "fit_loop", None)
    if not getattr(loop, "restarted_mid_epoch", False) or _order_taken_up_where_it_stopped(trainer):
        return
    done = loop.epoch_loop.batch_progress.current.processed
    batches, interval = getattr(trainer, "num_training_batches", None), getattr(trainer, "val_check_batch", None)
    # a validation inside the epoch: ModelCheckpoint saves after each one, `last.ckpt` too (a power user's
    # `val_check_interval=0.5` with `save_last=True` was told to use `save_last: true`)
    inside = isinstance(interval, int) and isinstance(batches, (int, float)) and interval < batches
    causes = ("a validation inside the epoch (`val_check_interval`), after which ModelCheckpoint saves, "
              "`last.ckpt` too; `every_n_train_steps`, `save_on_exception`, ..." if inside else
              "`every_n_train_steps`, `save_on_exception`, ...")
    fix = ("`ModelCheckpoint(save_on_train_epoch_end=True)` writes its checkpoints at the end of each epoch only"
           if inside else "ModelCheckpoint's default, `save_last: true`")
    rank_zero_warn(f"{owner}: this fit resumes from a checkpoint written inside epoch {trainer.current_epoch} (after "
                   f"{done} of its batches: {causes}). Lightning trains the "
                   "rest of that epoch's steps in a new order, so from here on the fit is not the uninterrupted one "
                   "(other batches, drops and weights). For an exact resume, resume from a checkpoint written at the "
                   f"end of an epoch ({fix}).")


def _order_taken_up_where_it_stopped(trainer: Any) -> bool:
    """Whether every training loader draws ITLM's order (a ``SelectionSampler``), which a fit resumed inside an epoch
    takes up where the checkpoint stopped: a BatchFilter (CoTeaching, RCA) beside ITLM then goes on as in the
    uninterrupted fit (it said "a new order"). Under DDP too: each rank leaves out the batches it trained of its own
    share (``skip_batches`` counts the rank's steps, and every rank runs as many), so the filter warned of a new order
    in a fit that ended bit for bit the uninterrupted one's."""
    from lit_robust.selection.samplers import SelectionSampler

    loaders = _training_loaders(trainer)
    return bool(loaders) and all(
        isinstance(getattr(loader, "sampler", None), SelectionSampler) for loader in loaders)


class MidEpochCheckpoint(NamedTuple):
    """Where in its epoch a checkpoint written inside one stopped, read off Lightning's own progress counters as its
    "restarted mid-epoch" stage reads them."""

    epoch: int
    batches_done: int
    last_batch: bool  # it stopped after the epoch's last batch
    in_batch_end: bool  # written in that batch's `on_train_batch_end` (not after a validation)


def mid_epoch_checkpoint(checkpoint: dict[str, Any]) -> MidEpochCheckpoint | None:
    """:class:`MidEpochCheckpoint` of a checkpoint written inside an epoch; ``None`` for one written at an epoch's
    end, or of an epoch a stop cut short (Lightning resumes at the next epoch)."""
    try:
        loop = checkpoint["loops"]["fit_loop"]
        epochs, batches = loop["epoch_progress"], loop["epoch_loop.batch_progress"]
        total = epochs["total"]
        mid = (total["started"] == total["ready"] and total["processed"] == total["started"] - 1
               and total["completed"] == total["processed"])
        point = MidEpochCheckpoint(epochs["current"]["processed"], batches["current"]["ready"],
                                    bool(batches.get("is_last_batch", False)),
                                    batches["total"]["completed"] == batches["total"]["processed"] - 1)
    except (KeyError, TypeError):
        return None
    return point if mid and isinstance(point.epoch, int) and isinstance(point.batches_done, int) else None


def epoch_whose_end_was_skipped(checkpoint: dict[str, Any]) -> int | None:
    """The epoch a checkpoint was written at the last batch of, in that batch's ``on_train_batch_end``
    (``every_n_train_steps``): Lightning resumes after it without calling ``on_train_epoch_end``; ``None`` for any
    other checkpoint. One written after a validation at the last batch has the batch completed: Lightning runs that
    epoch's end itself (a reviewer's, where ITLM ran it twice). Nor does Lightning 2.6 run the next epoch's
    ``on_train_epoch_start`` or count that epoch started (:func:`lit_robust._lightning.count_epoch_started`): each
    owner of an epoch-by-epoch state (ITLM, BatchFilter, CoTeaching, RCA) runs both itself at train start, the
    next epoch's only where one follows (:func:`lit_robust._lightning.trains_another_epoch`)."""
    point = mid_epoch_checkpoint(checkpoint)
    return point.epoch if point is not None and point.last_batch and point.in_batch_end else None


def at_last_batch_under_ddp(trainer: Any) -> bool:
    """Whether the training batch that just ended is its epoch's last (Lightning's own ``is_last_batch``, the one
    :func:`epoch_whose_end_was_skipped` reads off a checkpoint), in a fit of several processes.

    There, in ``on_train_batch_end``, the owners of an epoch's running state (BatchFilter, CoTeaching, RCA) move every
    rank's part of it onto rank 0 (a collective: every rank reaches that batch), before a ModelCheckpoint after them
    saves rank 0's state: a fit resumed from such a checkpoint (``every_n_train_steps`` of an epoch's length) ran that
    epoch's end on rank 0's part alone (a 2-rank fit's record read ``seen=151`` of 302, and its ``"auto"`` estimate and
    everything after it differed from the uninterrupted fit's)."""
    if distributed.world_size() <= 1:
        return False
    progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)
    return bool(getattr(progress, "is_last_batch", False))


def as_long_as_every_ranks(counters: torch.Tensor) -> torch.Tensor:
    """``counters`` padded with zeros to the longest of the ranks' (a collective): a filter's counts by class are
    added once its first batch shows the classes, and a rank that has seen none holds the shorter counts."""
    length = int(distributed.all_reduce_max(torch.tensor([counters.numel()], device=counters.device)).item())
    if counters.numel() == length:
        return counters
    return torch.cat([counters, counters.new_zeros(length - counters.numel())])


def reduce_counters_to_rank_zero(counters: torch.Tensor | None) -> torch.Tensor | None:
    """Every rank's running counts summed onto rank 0, zeros elsewhere (a collective: see
    :func:`at_last_batch_under_ddp`); the epoch's end sums the ranks again and reads the same totals."""
    if counters is None:
        return None
    total = distributed.all_reduce_sum(as_long_as_every_ranks(counters))
    return total if distributed.rank() == 0 else torch.zeros_like(total)


def with_class_counts(counters: torch.Tensor, base: int, classes: tuple[torch.Tensor | None, int],
                      kept: torch.Tensor) -> torch.Tensor:
    """``counters`` (an epoch's ``base`` running counts, then its counts by class) with one batch's counts by class
    added: ``classes`` is :func:`~lit_robust.report.batch_class_labels`'s ``(labels, C)`` of the entries counted,
    ``kept`` their kept mask. The counts by class are added at the epoch's first batch that shows them (and start
    again where a checkpoint counted other classes); a rank that has seen none holds the shorter counts, which the
    sums over the ranks pad (:func:`as_long_as_every_ranks`). No host sync."""
    from lit_robust.report import class_count_step

    labels, slots = classes
    if labels is None or labels.numel() != kept.numel():
        return counters  # (no class labels, or not one per entry: nothing to count by class)
    length = base + 2 * slots
    if counters.numel() != length:
        grown = counters.new_zeros(length)
        grown[:base] = counters[:base]
        counters = grown
    counters[base:] += class_count_step(labels, kept, slots)
    return counters


def counts_of_this_rank(rank0: list[int] | None, others: list[list[int] | None] | None) -> list[int] | None:
    """This rank's running counts not yet summed over the ranks, from a checkpoint's rank-0 ``counters`` and
    ``other_ranks_counters`` (:func:`~lit_robust.selection.distributed.parts_to_restore`: its own; under another
    world size all of them on rank 0; an older checkpoint's rank 0's on rank 0 alone). Zeros on a rank that restores
    none: the epoch's sum over the ranks counts each saved part once (loaded everywhere, seen 39 of 38)."""
    if rank0 is None:
        return None
    parts = [p for p in distributed.parts_to_restore(rank0, others) if p is not None]
    return [sum(col) for col in zip(*parts)] if parts else [0] * len(rank0)


def validates_off_epoch_ends(trainer: Any) -> bool:
    """Whether the fit validates other than once at each epoch's end: ``val_check_interval`` inside the epoch, or
    ``check_val_every_n_epoch`` other than 1 (and validation not switched off by ``limit_val_batches=0``)."""
    if getattr(trainer, "limit_val_batches", 1) == 0:
        return False
    every = getattr(trainer, "check_val_every_n_epoch", 1)
    interval, batches = getattr(trainer, "val_check_batch", None), getattr(trainer, "num_training_batches", None)
    inside = isinstance(interval, int) and isinstance(batches, (int, float)) and interval < batches
    return inside or every != 1


def restart_draws_with_workers(trainer: Any) -> bool:
    """Whether a fit resumed from an epoch's last batch draws its next epoch's shuffle otherwise than the
    uninterrupted fit: a training loader with worker processes that shuffles or augments, in a fit that validates
    (measured: a BatchFilter fit
    with `num_workers=2` and a validation loader ended 0.46 away from the uninterrupted fit's weights, the same fit
    without validation, or with `num_workers=0`, bit for bit; a vision newcomer's 0.043). Lightning's restart makes
    the training loader's iterator once more, and one with workers draws its shuffle as it is made."""
    if getattr(trainer, "limit_val_batches", 1) == 0:
        return False
    val = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "val_loop", None)
    source = getattr(val, "_data_source", None)
    validates = source is not None and source.is_defined()
    # a loader that neither shuffles (`shuffle=False`: a SequentialSampler) nor augments resumes bit for bit (a
    # reviewer's); with augmentation in its workers their seeds move (measured: 0.18 apart)
    return validates and any(getattr(loader, "num_workers", 0) > 0
                             and (not isinstance(getattr(loader, "sampler", None), SequentialSampler)
                                  or _augments(loader))
                             for loader in _training_loaders(trainer))


def skipped_epoch_end_note(owner: str, epoch: int,
                           kept: str | None = 'its epoch records and `"auto"` estimates', trainer: Any = None) -> str:
    """The warning of an owner that ran the end of ``epoch`` itself (:func:`epoch_whose_end_was_skipped`): its own
    record (``kept``: ITLM's rounds) goes on as in the uninterrupted fit, what Lightning skipped does not. Where
    ``trainer`` validates off epoch ends (:func:`validates_off_epoch_ends`), neither do the random draws: Lightning's
    restart draws from torch's generator (its loaders' seeds) as the uninterrupted fit did only where that fit
    validated at the last batch (a `check_val_every_n_epoch=2` ITLM fit ended 0.09 away from the uninterrupted fit's
    weights, a `val_check_interval=0.5` BatchFilter fit of 5 batches an epoch 0.15). ``kept=None``: an owner with no
    epoch-end record of its own (a plain ``RobustMixin`` module, whose resume said "inside epoch 2 ... in a new
    order" where the batches, draws and weights went on as the uninterrupted fit's)."""
    reason = None
    if trainer is not None and validates_off_epoch_ends(trainer):
        reason = ("this fit validates other than at each epoch's end (`val_check_interval`, "
                  "`check_val_every_n_epoch`), after which Lightning's restart draws from the random generators "
                  "otherwise than the uninterrupted fit")
    elif trainer is not None and restart_draws_with_workers(trainer):
        reason = ("this fit's training DataLoader has worker processes (`num_workers` > 0) and the fit validates: "
                  "Lightning's restart makes the loader's iterator once more, drawing the next epoch's shuffle and "
                  "its workers' seeds otherwise than the uninterrupted fit")
    draws = reason is not None
    if kept is None:
        how = (f"{reason[0].upper()}{reason[1:]}: the shuffles, dropout masks and so the weights from here on may "
               "differ from the uninterrupted fit's" if reason is not None else
               "The batches and random draws go on as in the uninterrupted fit (so do the weights, unless a hook that "
               "did not run changes the training)")
        return (f"{owner}: this fit resumes from a checkpoint written at the last batch of epoch {epoch}, before that "
                f"epoch's end: Lightning goes on at epoch {epoch + 1} without epoch {epoch}'s validation and end hooks "
                f"(your module's and the callbacks'), nor epoch {epoch + 1}'s start hooks. {how}; epoch {epoch}'s "
                "validation and logged metrics are missing. For an exact resume, resume from a checkpoint written at "
                "the end of an epoch (ModelCheckpoint's default, `save_last: true`).")
    how = (f"{owner} runs its own, but {reason}: the shuffles, dropout masks and so the weights, " + kept + " from "
           "here on may differ from the uninterrupted fit's. That epoch's validation and logged metrics are missing"
           if draws else f"{owner} runs its own, so {kept} go on as in the uninterrupted fit, but that epoch's "
           "validation and logged metrics are missing")
    return (f"{owner}: this fit resumes from a checkpoint written at the last batch of epoch {epoch}, before that "
            "epoch's end: Lightning goes on without that epoch's validation and end hooks, nor the next epoch's start "
            f"hooks. {how} and other callbacks' epoch hooks did not run. For an exact resume, resume "
            "from a checkpoint written at the end of an epoch (ModelCheckpoint's default, `save_last: true`).")


def warn_inexact_resume(trainer: Any, owner: str, mid_epoch: bool = True, skipped_end: int | None = None) -> None:
    """At train start (the owners of a resumable state call it): say when this resumed fit cannot be the
    uninterrupted one -- a checkpoint written inside an epoch (unless ``mid_epoch=False``: ITLM's own loader resumes
    such an epoch where it stopped), or a loader out of :func:`seed_persistent_workers`' reach. ``skipped_end``: the
    epoch whose end the owner ran itself (a checkpoint of its last batch, :func:`skipped_epoch_end_note`), said
    instead of the mid-epoch note (which named the next epoch, "after 5 of its batches", and a new order that is not
    there: the checkpoint's epoch was over)."""
    if skipped_end is not None:
        rank_zero_warn(skipped_epoch_end_note(owner, skipped_end, trainer=trainer))
    elif mid_epoch:
        _warn_mid_epoch_resume(trainer, owner)
    _warn_unseeded_workers(trainer, owner)


def train_set_length(trainer: Any) -> int | None:
    """The length of the training loader's data set on this process, ``None`` for a stream without one."""
    try:
        return len(trainer.train_dataloader.dataset)
    except (TypeError, AttributeError):
        return None


def check_same_on_every_rank(owner: str, settings: dict[str, Any], why: str,
                             hints: dict[str, str] | None = None) -> None:
    """Under DDP, raise on every rank when one of ``settings`` (name -> value, compared by ``repr``) differs between
    the processes, naming every process's value: the processes run in step (their collectives pair up), and a DDP
    newcomer's differing settings or training sets hung a fit, or trained on what no process meant. One collective of
    a few integers. ``why``: the sentence after the values; ``hints``: a sentence added where its name differs."""
    if distributed.world_size() < 2:
        return
    codes = torch.tensor([zlib.crc32(repr(v).encode()) for v in settings.values()], dtype=torch.int64)
    high, low = distributed.all_reduce_max(codes), -distributed.all_reduce_max(-codes)
    differ = [name for name, h, lo in zip(settings, high.tolist(), low.tolist(), strict=True) if h != lo]
    if not differ:
        return
    # every process's values (each had named its own alone, where distributed.md promised each process's: a DDP
    # newcomer's two processes printed "rank 0 has 0.7" and "rank 1 has 0.6" apart); every rank is here
    values = distributed.all_gather_objects([repr(settings[name]) for name in differ])
    each = "; ".join(f"{name}: {', '.join(v[i] for v in values)}" for i, name in enumerate(differ))
    extra = "".join(f" {text}" for name, text in (hints or {}).items() if name in differ)
    verb = "differs" if len(differ) == 1 else "differ"
    raise ValueError(f"{owner}: {', '.join(differ)} {verb} between the processes of this DDP fit ({each}, in rank "
                     f"order): {why}{extra}")
