r"""Co-teaching and Co-PRL(L): two copies of a model, each trained on the samples the *other* one trusts."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust._backend import is_overridden, mismatch_advice, pl, rank_zero_info, rank_zero_warn
from lit_robust._checks import check_seed
from lit_robust._lightning import epoch_cut, epoch_part, is_a, mark_restored, sigterm_without_collectives
from lit_robust.callbacks._report_file import (
    EpochReport,
    ModuleReport,
    check_report_args,
    say_starved_classes,
    split_class_counts,
)
from lit_robust.callbacks._resume import (
    as_long_as_every_ranks,
    check_resume_arguments_in_fit,
    check_same_on_every_rank,
    counts_of_this_rank,
    loss_argument,
    random_state,
    reduce_counters_to_rank_zero,
    restore_random_state_in_fit,
    train_set_length,
    warn_cut_epoch_in_fit,
    with_class_counts,
)
from lit_robust.callbacks.batch_filter import (
    check_filter_args,
    only_counted,
    planned_epochs,
    refuse_sparse_monitors,
    select_and_count,
    small_batch_message,
    sparse_metrics,
    warmup_outlasts_fit,
    warn_early_stopping_in_warmup,
    warn_ended_in_warmup,
    warn_unused_loss,
)
from lit_robust.data.indexed import check_collate, unpack_batch
from lit_robust.data.spec import check_fits_data
from lit_robust.functional.scores import fit_loss_layer, loss_layer_scores
from lit_robust.functional.spectral import record_spectral_norm, restore_spectral_norm
from lit_robust.mixin import require_mixin, split_loss_output
from lit_robust.report import ReportFormat, batch_class_labels, given_and_predicted
from lit_robust.selection import distributed
from lit_robust.selection.auto_drop import (
    DEFAULT_FILTER_ESTIMATOR,
    FILTER_ESTIMATORS,
    AutoDropRatio,
    FilterEstimator,
    auto_for,
    check_auto_args,
    kept_on_a_fit_that_goes_on,
    resolved_warmup,
    say_reestimated,
)
from lit_robust.selection.rules import masked_mean, scheduled_drop_ratio

__all__ = ["CoTeaching", "CoTeachingEpochRecord"]

# per epoch, summed over steps and ranks: seen, dropped by net 1, dropped by net 2, corrupted seen,
# corrupted among net 1's drops, corrupted among net 2's drops, batches, batches with ground truth
_COUNTERS = ("seen", "dropped_1", "dropped_2", "corrupted_seen", "corrupted_dropped_1", "corrupted_dropped_2",
             "batches", "batches_with_truth")


@dataclass
class CoTeachingEpochRecord:
    """What each network rejected during one training epoch (summed over every rank; ``history``, one per epoch).

    Attributes:
        epoch: the epoch, from 0; ``drop_ratio``: its scheduled drop ratio; ``seen``: the entries of its
            batches (a ``DistributedSampler``'s padding repeat counts again, as :class:`~lit_robust.FilterEpochRecord`).
        dropped_1: the samples network 1 rejected (so network 2 did not train on them); ``dropped_2`` the other way.
        corrupted_seen: with the ground-truth flag (the batch's 4th element) only, else ``None``: the corrupted
            samples seen; ``dropped_corrupted_frac_1`` / ``_2``: the corrupted share of each network's rejects;
            ``corrupted_frac``: of all samples seen (what rejecting at random would reach).
        estimated_corruption: with ``drop_ratio="auto"``, the estimate in force at the end of the epoch.
        seen_by_class: for a classifier's batches (as :attr:`~lit_robust.FilterEpochRecord.seen_by_class`), the
            entries seen per given label ``0 .. C - 1``;
            ``kept_by_class`` those both networks kept (the report's ``kept``). A class the last epoch kept far less of
            than the rest is warned of at the fit's end, with or without a report. ``None`` otherwise.
    """

    epoch: int
    drop_ratio: float
    seen: int
    dropped_1: int  # rejected by network 1 (so network 2 did not train on them)
    dropped_2: int
    corrupted_seen: int | None = None
    dropped_corrupted_frac_1: float | None = None  # corrupted among network 1's rejects
    dropped_corrupted_frac_2: float | None = None
    corrupted_frac: float | None = None  # of all samples seen: what rejecting at random would reach
    estimated_corruption: float | None = None  # drop_ratio="auto": the estimate in force at the end of the epoch
    # by given label 0 .. C - 1 of a classifier's batches: the entries seen, and those both networks kept
    seen_by_class: list[int] | None = None
    kept_by_class: list[int] | None = None


def _split_optimizer_config(conf: Any, owner: str) -> tuple[torch.optim.Optimizer, dict | None]:
    """One optimizer (and at most one LR scheduler) from a ``configure_optimizers`` return value."""
    sched: Any = None
    if isinstance(conf, torch.optim.Optimizer):
        opt = conf
    elif isinstance(conf, dict) and "optimizer" in conf:
        opt, sched = conf["optimizer"], conf.get("lr_scheduler")
    elif isinstance(conf, (list, tuple)) and len(conf) == 1 and isinstance(conf[0], torch.optim.Optimizer):
        opt = conf[0]
    elif (isinstance(conf, (list, tuple)) and len(conf) == 2 and isinstance(conf[0], (list, tuple))
          and len(conf[0]) == 1 and isinstance(conf[1], (list, tuple)) and len(conf[1]) <= 1):
        opt, sched = conf[0][0], (conf[1][0] if conf[1] else None)
    else:
        raise ValueError(f"`CoTeaching` needs `{owner}.configure_optimizers()` to return one optimizer, optionally with "
                         f"one LR scheduler (`opt`, `{{'optimizer': opt, 'lr_scheduler': sched}}` or `([opt], [sched])`), "
                         f"got {type(conf).__name__}: {conf!r}.")
    if not isinstance(opt, torch.optim.Optimizer):
        raise ValueError(f"`{owner}.configure_optimizers()` returned {type(opt).__name__} as its optimizer.")
    if sched is None:
        return opt, None
    cfg = dict(sched) if isinstance(sched, dict) else {"scheduler": sched}
    cfg.setdefault("interval", "epoch")
    cfg.setdefault("frequency", 1)
    if isinstance(cfg["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError(f"`CoTeaching` steps LR schedulers itself and does not support ReduceLROnPlateau "
                         f"(from `{owner}.configure_optimizers()`); use a schedule that needs no monitored metric.")
    if cfg["interval"] not in ("epoch", "step"):
        raise ValueError(f"LR scheduler `interval` must be 'epoch' or 'step', got {cfg['interval']!r}.")
    return opt, cfg


#: how many seeds after ``seed`` :func:`_draw_apart` may try (``seed`` is checked so that each is a valid torch seed)
_DRAW_TRIES = 8


def _draw_apart(net1: torch.nn.Module, net2: torch.nn.Module, seed: int, tries: int = _DRAW_TRIES) -> int:
    """Re-draw ``net2`` (already drawn with ``seed``) with ``seed + 1``, ``seed + 2``, ... while it equals ``net1``
    parameter for parameter; returns the seed it was drawn with. A model built right after
    ``seed_everything(s)`` is what ``reinitialize(s)`` draws: with ``s == seed`` the two networks started identical
    and Co-teaching silently ran as one network's small-loss filter (a newcomer's runs matched SPL exactly)."""

    def same() -> bool:
        return all(torch.equal(a, b) for a, b in zip(net1.parameters(), net2.parameters()))

    used = seed
    while same() and used < seed + tries:
        used += 1
        net2.reinitialize(used)
    if used == seed:
        return seed
    if same():  # e.g. a model whose reinitialize() is a no-op
        raise ValueError(f"CoTeaching's second network must start apart from the first, but re-drawing it with seeds "
                         f"{seed}..{used} gave the same parameters each time: make the model's `reinitialize(seed)` "
                         "draw fresh parameters from `seed`.")
    rank_zero_info(f"CoTeaching: the second network drawn with seed={seed} started identical to the model given "
                   f"(built under the same global seed); drawn with seed={used} instead.")
    return used


class _Net1Step:
    """A ``CoTeaching`` evaluation step (``validation_step``, ``test_step``) that exists only where the wrapped model
    has its own. Lightning decides whether a module has one (is there a validation loop, may ``trainer.test`` run) by
    looking the method up before any hook: a wrapper that always had them told a precision newcomer "You defined a
    `validation_step` but have no `val_dataloader`" of a model that defined none, and let ``trainer.test`` run net1's
    missing ``test_step`` (a warning, no metric). Read, it is the delegate to net1 where net1 overrides the hook, else
    LightningModule's own (which Lightning reads as "not defined"); assigned (as Lightning does to fit a
    ``torch.compile``d module), the value assigned."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, module: Any, owner: type | None = None) -> Any:
        if module is None:
            return self
        if self.name in module._assigned_hooks:
            return module._assigned_hooks[self.name]
        if is_overridden(self.name, module.net1, pl.LightningModule):
            return functools.partial(module._delegate, self.name)
        return getattr(pl.LightningModule, self.name).__get__(module, owner)

    def __set__(self, module: Any, fn: Callable[..., Any]) -> None:
        module._assigned_hooks[self.name] = fn


# the wrapped model's evaluation epoch hooks, run on net1 as its evaluation steps are (a power user's
# `on_validation_epoch_end`, which logged the accuracy its `validation_step` added up, never ran: no metric, and the
# counts went on across epochs)
_NET1_EPOCH_HOOKS = ("on_validation_epoch_start", "on_validation_epoch_end", "on_test_epoch_start", "on_test_epoch_end",
                     "on_predict_epoch_start", "on_predict_epoch_end")
# the training hooks of the wrapped model, which CoTeaching's own training does not call
_TRAINING_HOOKS = ("on_fit_start", "on_fit_end", "on_train_start", "on_train_end", "on_train_epoch_start",
                   "on_train_epoch_end", "on_train_batch_start", "on_train_batch_end", "on_before_backward",
                   "on_after_backward", "on_before_optimizer_step", "configure_gradient_clipping")


def _net1_epoch_hook(name: str) -> Callable[[Any], None]:
    """A ``CoTeaching`` hook that runs the wrapped model's own ``name`` on ``net1`` (nothing where it has none)."""

    def hook(self: Any) -> None:
        if is_overridden(name, self.net1, pl.LightningModule):
            self._delegate(name)

    hook.__name__ = hook.__qualname__ = name
    return hook


def _own(model: pl.LightningModule, name: str) -> Callable[..., Any] | None:
    """``model``'s class's own ``name``, not lit_robust's, Lightning's or torch's (``None`` then)."""
    fn = getattr(type(model), name, None)
    if fn is None or getattr(fn, "__module__", "").split(".")[0] in ("lit_robust", "pytorch_lightning", "lightning",
                                                                     "torch"):
        return None
    return fn


def _say_own_training_step_unused(model: pl.LightningModule) -> None:
    """Warn when ``model``'s class has a ``training_step`` (or training hooks) of its own: CoTeaching trains both
    networks from ``per_sample_loss`` and never calls them (a manual-optimisation researcher's step, with its gradient
    clipping, ran 0 times without a word; a power user's ``on_train_epoch_end`` and ``on_fit_start`` alike)."""
    step = _own(model, "training_step")
    if step is not None:
        name = getattr(step, "__qualname__", "training_step").removesuffix(".training_step")
        rank_zero_warn(f"CoTeaching: `{name}.training_step` is not called: CoTeaching trains its two copies of the "
                       f"model itself, each from `per_sample_loss` and the optimizer of `configure_optimizers`, so "
                       "anything else that step does (logging, gradient clipping, a second optimizer, manual "
                       "optimisation) does not happen; CoTeaching logs its own training figures (`coteach/...`).")
    hooks = [h for h in _TRAINING_HOOKS if _own(model, h) is not None]
    if hooks:
        rank_zero_warn(f"CoTeaching: {type(model).__name__}'s {', '.join(f'`{h}`' for h in hooks)} "
                       f"{'is' if len(hooks) == 1 else 'are'} not called: CoTeaching runs the training of its two "
                       "copies itself. Its validation, test and prediction steps and their epoch hooks "
                       f"({', '.join(_NET1_EPOCH_HOOKS[:2])}, ...) run on the first copy.")


class CoTeaching(ModuleReport, pl.LightningModule):
    r"""Co-teaching (Han et al., 2018) and Co-PRL(L) (robust_dnn_thesis Alg. 5) around any model.

    Wrap your own :class:`~lit_robust.RobustMixin` LightningModule; ``CoTeaching`` holds two copies of it
    (``net1`` is the model given, ``net2`` a deep copy re-initialised with ``seed``) and trains them with
    manual optimisation. In every training batch each network ranks the samples by its own score —
    the loss (``rule="spl"``: Co-teaching) or the loss-layer gradient norm (``rule="prl"``: Co-PRL(L)) —
    keeps the :math:`\lfloor R(t) B \rfloor` it trusts most (``(score, index)`` order,
    :func:`lit_robust.selection.rules.smallest_k_mask`), and the *other* network takes a gradient step on the
    mean loss over those samples. The kept fraction follows the same warm-up as
    :class:`~lit_robust.BatchFilter`: :math:`R(t) = 1 - \varepsilon \min(t / T_k, 1)`.

    Each network keeps its own optimizer (and LR scheduler) from the wrapped module's
    ``configure_optimizers`` (one optimizer, at most one scheduler; stepped here, per epoch or per step). The
    wrapped module's own ``training_step``, if it has one, is not called (warned).
    Validation, test, prediction and ``forward`` use ``net1`` (the wrapped module's own
    ``validation_step``/``test_step``/``predict_step``, so it logs the metrics it always logs).

    With ground truth in the batches (``(index, input, target, is_corrupted)``) each epoch records, per
    network, the fraction of corrupted samples among its rejects: ``coteach/dropped_corrupted_frac_1`` and
    ``_2`` (also in :attr:`history`).

    ``drop_ratio="auto"``: :math:`\varepsilon` is estimated during warm-up as by :class:`~lit_robust.BatchFilter`
    (:mod:`lit_robust.selection.auto_drop`: epoch 0 drops nothing; the median of the warm-up epochs' estimates), from each
    sample's score averaged over the two networks (the mean of their losses, or of their loss-layer gradient
    norms for ``"prl"``), gathered over the ranks whatever ``scope`` says; with ``estimator="disagreement"`` the
    predicted labels are ``net1``'s (the argmax of its ``[B, C]`` outputs in the same training forward); logged as
    ``coteach/estimated_corruption``
    and kept in :attr:`history` and in checkpoints.

    Args:
        model: a LightningModule adopting :class:`~lit_robust.RobustMixin` (``per_sample_loss`` returning
            ``(losses, outputs)`` for ``rule="prl"``), with its layers built (a model that reads its shape from
            the data at setup, such as ``MLPClassifier()`` without ``in_features``, is refused: give its shape).
        rule: ``"spl"`` (Co-teaching) or ``"prl"`` (Co-PRL(L)).
        drop_ratio: :math:`\varepsilon \in [0, 0.5)` after warm-up (``[0, 1)`` with ``allow_large_drop``), or
            ``"auto"``: estimated during warm-up from the networks' scores, as :class:`~lit_robust.BatchFilter`
            does (the median of the warm-up epochs' estimates), then ramped to.
        warmup_epochs: :math:`T_k \ge 0`; ``None`` (default): 0 with a numeric ``drop_ratio``, 3 with ``"auto"``
            (an explicit 0 or 1 with ``"auto"`` fixes the estimate from a model trained one epoch: warned).
        loss: the loss layer for ``rule="prl"`` (``"ce"``, ``"mse"``, a callable, or ``None`` to infer it from
            the targets), as in :class:`~lit_robust.BatchFilter`.
        seed: seeds ``net2``'s re-initialisation (the two networks must start apart: where it draws the model
            given -- one built right after ``seed_everything(seed)`` -- ``seed + 1``, ... is used, and the log says so);
            an integer in ``[0, 2**32 - 1]``.
        scope: ``"local"`` (each rank's own batch, the default) or ``"global"`` (the union of the ranks' batches).
        allow_large_drop: allow :math:`\varepsilon \ge 0.5` (no guarantee; e.g. symmetric noise above 50%).
        estimator: how ``drop_ratio="auto"`` estimates :math:`\varepsilon`, as :class:`~lit_robust.BatchFilter`'s:
            ``"disagreement"`` (default; the share of samples whose label ``net1`` predicts otherwise, corrected for
            its training error), ``"class_floor"``, or the score mixtures ``"gmm"`` / ``"bmm"``. Not used with a
            number as ``drop_ratio``.
        auto_margin: :math:`m \in [0, 0.5)` dropped on top of the estimate (``drop_ratio="auto"`` only; default 0).
        reestimate: re-estimate at the end of every epoch, not only in warm-up (``drop_ratio="auto"`` only).
            ``None`` (default): ``True`` where the scores are one regression target's losses (``rule="spl"`` on a fit
            that reads one regression target), ``False`` otherwise, as for :class:`~lit_robust.BatchFilter`.
        report: write the per-sample report (:mod:`lit_robust.report`), as a :class:`~lit_robust.BatchFilter`
            does: ``<folder>/coteaching_report.csv`` at the end of training, one row
            per training sample, ranked by the last epoch's mean score averaged over the two networks (the score
            ``"auto"`` estimates from), ``kept`` = no batch of the last epoch left the sample out of either
            network's update, the epoch first dropped, ``net1``'s prediction, the given label and the ground truth
            when the batches carry it. ``None`` (default): on when ``report_dir`` is given or under
            ``lit-robust fit``; the path is :attr:`report_path`. In epochs that drop nothing the scores are
            computed for the report anyway (no extra backward).
        report_dir: the report's folder (created if missing); default: the logger's folder (``trainer.log_dir``).
        report_format: ``"csv"`` (default) or ``"parquet"`` (needs pyarrow).

    Example::

        model = CoTeaching(ImageClassifier(backbone="mlp", optimizer="adam", lr=1e-3), rule="prl",
                           drop_ratio=0.45, warmup_epochs=5)
        pl.Trainer(max_epochs=20).fit(model, datamodule=dm)
    """

    #: why LightningCLI's single ``optimizer:`` cannot stand in for this module's (see ``RobustCLI``)
    cli_optimizer_note = ("trains two networks, each with its own optimizer from the wrapped module's "
                          "`configure_optimizers`: set the optimizer there (e.g. `model.init_args.model.init_args."
                          "optimizer` and `lr` for an ImageClassifier) and leave out `optimizer:` / `--optimizer`.")

    def __init__(
        self,
        model: pl.LightningModule | None = None,
        rule: Literal["spl", "prl"] = "spl",
        drop_ratio: float | Literal["auto"] = 0.2,
        warmup_epochs: int | None = None,
        loss: Literal["ce", "mse"] | Callable[[Tensor, Tensor], Tensor] | None = None,
        seed: int = 1,
        scope: Literal["local", "global"] = "local",
        allow_large_drop: bool = False,
        estimator: FilterEstimator = DEFAULT_FILTER_ESTIMATOR,
        auto_margin: float = 0.0,
        reestimate: bool | None = None,
        report: bool | None = None,
        report_dir: str | None = None,
        report_format: ReportFormat = "csv",
    ) -> None:
        super().__init__()
        if model is None:  # `model` is not in the hyper-parameters: a notebook newcomer's `load_from_checkpoint(path)`
            raise TypeError("`CoTeaching` needs `model`, the LightningModule it trains two copies of; it is not saved "
                            "in the checkpoint's hyper-parameters, so pass it to load one too: "
                            "`CoTeaching.load_from_checkpoint(path, model=MyModel(...))`.")
        require_mixin("CoTeaching", model)
        advice = mismatch_advice(model, "`model`")
        if advice is not None:  # Lightning would train it, but its `self.log` calls would go nowhere
            raise TypeError(f"`CoTeaching`: {advice}")
        check_report_args(report, report_dir, report_format)
        if rule not in ("spl", "prl"):
            raise ValueError(f"`rule` must be 'spl' (Co-teaching) or 'prl' (Co-PRL(L)), got {rule!r}.")
        drop_ratio = check_auto_args(
            drop_ratio, estimator, auto_margin, reestimate, allow_large_drop, estimators=FILTER_ESTIMATORS,
            default_estimator=DEFAULT_FILTER_ESTIMATOR)
        check_filter_args(warmup_epochs, scope, loss)
        warn_unused_loss("CoTeaching", rule, loss)
        # the range ITLM and `seed_everything` take (-1 was accepted here); the seeds after it that `_draw_apart` may
        # try stay in torch's range (2**64 ended in torch's bare "Overflow when unpacking long long")
        check_seed("seed", seed)
        # `seed` only draws net2 (its weights are in the state dict): saved as a hyper-parameter it clashed with a
        # datamodule's own `seed` (Lightning: "Error while merging hparams") as soon as a logger was attached
        self.save_hyperparameters(ignore=["model", "seed"])
        self.automatic_optimization = False
        # `drop_ratio` and `warmup_epochs` live in `hparams` only (the properties below): set after saving them, so
        # the checked `drop_ratio` is the one recorded
        self.drop_ratio = drop_ratio
        self.rule, self.loss, self.scope = rule, loss, scope
        self._assigned_hooks: dict[str, Callable[..., Any]] = {}  # see `_Net1Step`
        if next(iter(model.parameters()), None) is None:
            # a model that builds its layers from the data at setup (MLPClassifier without `in_features`): the
            # copy has nothing to re-draw, and `_draw_apart` blamed the model's `reinitialize` instead
            raise ValueError(f"`model` ({type(model).__name__}) has no parameters yet: CoTeaching copies it and "
                             "re-draws the copy when it is built, so build its layers in `__init__` (e.g. "
                             "MLPClassifier(in_features=..., num_classes=...) or MLPRegressor(in_features=..., "
                             "out_features=...): they are read from the data only at setup).")
        self.net1 = model
        self.net2 = copy.deepcopy(model)
        self.net2.reinitialize(seed)
        self._peer_seed = _draw_apart(self.net1, self.net2, seed)
        self.history: list[CoTeachingEpochRecord] = []
        self._counters: Tensor | None = None
        self._counted: Tensor | None = None  # the last batch's entries that count (`select_and_count`)
        self._warned_small = False
        self._sched_cfgs: list[dict | None] = [None, None]
        # attributes, not only hyperparameters: `lit-robust fit` turns a `report` left at None on
        self.report, self.report_dir, self.report_format = report, report_dir, report_format
        self.report_path: str | None = None  # the report written by the last fit
        self._report = EpochReport("CoTeaching", "coteaching_report")
        self._auto: AutoDropRatio | None = auto_for(None, "CoTeaching", self.drop_ratio, estimator, auto_margin,
                                                    reestimate, self._warmup, high=1.0 if allow_large_drop else 0.5)

    # -- schedule -----------------------------------------------------------------------------------------
    @property
    def drop_ratio(self) -> float | Literal["auto"]:
        """:math:`\\varepsilon` after warm-up (or ``"auto"``), read from ``hparams["drop_ratio"]``: setting either the
        attribute or ``hparams.drop_ratio`` (what a checkpoint saves) sets the one value the next fit checks and uses,
        as RCA and the RealNVP flows read theirs (before, a value set in ``hparams`` was overwritten at setup by the
        constructor's without a word)."""
        return self.hparams["drop_ratio"]

    @drop_ratio.setter
    def drop_ratio(self, value: float | Literal["auto"]) -> None:
        self.hparams["drop_ratio"] = value  # checked at the next fit's setup (`_apply_arguments`)

    @property
    def warmup_epochs(self) -> int | None:
        """:math:`T_k` as given (``None``: the default of :attr:`_warmup`), read from ``hparams["warmup_epochs"]``: the
        attribute and ``hparams.warmup_epochs`` are one value (a notebook user's ``co.hparams.warmup_epochs = 4`` and a
        ``load_from_checkpoint(..., warmup_epochs=4)`` model's later ``hparams`` edits were overwritten at setup)."""
        return self.hparams["warmup_epochs"]

    @warmup_epochs.setter
    def warmup_epochs(self, value: int | None) -> None:
        self.hparams["warmup_epochs"] = value  # checked at the next fit's setup (`_apply_arguments`)

    def drop_ratio_at(self, epoch: int) -> float:
        r""":math:`\varepsilon_t = \varepsilon \min(t / T_k, 1)` for the 0-based epoch ``t`` (with ``"auto"``: from
        the current estimate, 0 before the first one)."""
        if self._auto is not None:
            return self._auto.drop_ratio_at(epoch)
        return scheduled_drop_ratio(epoch, self.drop_ratio, self._warmup)

    @property
    def _warmup(self) -> int:
        """``warmup_epochs`` as the schedule uses it (``None``: 3 with ``"auto"``, else 0), read afresh at every use: a
        notebook user may set ``drop_ratio`` or ``warmup_epochs`` between fits."""
        return resolved_warmup(self.warmup_epochs, self.drop_ratio)

    @property
    def estimated_corruption(self) -> float | None:
        """``drop_ratio="auto"``: the latest estimate (``None`` before the first one and with a numeric ratio)."""
        return None if self._auto is None else self._auto.estimate

    def keep_ratio_at(self, epoch: int) -> float:
        """The kept fraction :math:`R(t) = 1 - \\varepsilon_t`."""
        return 1.0 - self.drop_ratio_at(epoch)

    def setup(self, stage: str) -> None:
        check_fits_data(self.net1, self._trainer)  # the wrapped model's own `setup` is not called by Lightning
        if stage == "fit":  # (not for a validate-only run of a loaded checkpoint, where nothing trains)
            _say_own_training_step_unused(self.net1)
            self._inferred_loss = None  # `loss=None`: PRL's loss layer, decided at this fit's first batch
        short = None if stage != "fit" or self._trainer is None else warmup_outlasts_fit(
            self.drop_ratio, self.warmup_epochs, planned_epochs(self._trainer))
        if short is not None:
            rank_zero_warn(f"CoTeaching: {short}")
        if stage == "fit" and self._trainer is not None:
            if any(is_a(cb, "StochasticWeightAveraging") for cb in self._trainer.callbacks):
                # a Trainer-flags newcomer met Lightning's "SWA currently works with 1 `optimizer`" for one optimizer
                # of their own
                raise ValueError("CoTeaching trains two networks, each with its own optimizer (two copies of yours), "
                                 "and Lightning's `StochasticWeightAveraging` works with one optimizer only: remove it "
                                 "from the Trainer's callbacks.")
            refuse_sparse_monitors(self._trainer, "CoTeaching", sparse_metrics(self._trainer,
                ("coteach/dropped_corrupted_frac_1", "coteach/dropped_corrupted_frac_2"),
                "coteach/estimated_corruption", self.drop_ratio))
            sigterm_without_collectives(self._trainer)  # Lightning's handler hangs a DDP fit: see the function
            self.setup_report()

    def _apply_arguments(self, goes_on: bool = False) -> None:
        """At fit setup: the schedule's arguments as they are now (`drop_ratio`, `warmup_epochs`, the ``"auto"`` ones;
        all in ``hparams``), checked and applied: a notebook user's `co.drop_ratio = 0.25` on a
        module fitted before with ``"auto"`` was ignored. On a fit that goes on, changed ``"auto"`` arguments are
        refused (:func:`~lit_robust.selection.auto_drop.kept_on_a_fit_that_goes_on`)."""
        hp = self.hparams
        self.drop_ratio = check_auto_args(self.drop_ratio, hp.estimator, hp.auto_margin, hp.reestimate,
                                          hp.allow_large_drop, estimators=FILTER_ESTIMATORS,
                                          default_estimator=DEFAULT_FILTER_ESTIMATOR)
        check_filter_args(self.warmup_epochs, self.scope, self.loss)
        new = auto_for(self._auto, "CoTeaching", self.drop_ratio, hp.estimator, hp.auto_margin, hp.reestimate,
                       self._warmup, high=1.0 if hp.allow_large_drop else 0.5)
        self._auto = kept_on_a_fit_that_goes_on(self._auto, new, "CoTeaching", goes_on)

    def resume_arguments(self) -> dict[str, Any]:
        """The arguments that shape the selection and its schedule; a checkpoint holds them and a resumed fit must have
        the same (checked at restore, as :class:`~lit_robust.BatchFilter`'s are). ``seed`` is not among them: it only
        draws ``net2``, whose weights the checkpoint restores."""
        hp = self.hparams
        # the warm-up in use, not the argument: a checkpoint of a numeric ratio's default 0 resumes with `None`
        return {"rule": self.rule, "drop_ratio": self.drop_ratio, "warmup_epochs": self._warmup,
                "loss": loss_argument(self.loss), "scope": self.scope, "allow_large_drop": hp.allow_large_drop,
                "estimator": hp.estimator, "auto_margin": hp.auto_margin, "reestimate": hp.reestimate}

    def _reset_fit_state(self) -> None:
        # a module fitted again by a new Trainer: a notebook user's `history` listed epochs 0-14 twice, and the new
        # fit's epoch 0 showed the first fit's estimate
        super()._reset_fit_state()
        self.history = []
        self._counters = None
        self._warned_small = False

    def _drop_partial_epoch(self, epoch: int) -> None:
        super()._drop_partial_epoch(epoch)
        self._counters = None  # the stopped epoch's counts (a notebook user's epoch read `seen=1756` of 1,500)

    def on_train_start(self) -> None:
        super().on_train_start()  # the report's start
        check_collate(self.trainer.train_dataloader, "CoTeaching")  # before the first batch, which it builds
        length = train_set_length(self.trainer)
        # a DDP newcomer's training sets of 1,500 and 1,400 samples hung the fit (as BatchFilter's did)
        check_same_on_every_rank(
            "CoTeaching", {**{f"`{k}`": v for k, v in self.resume_arguments().items()},
                           "the training set's length": length},
            "the processes train the two networks in step, their counts summed at each epoch's end (with "
            "`scope='global'` one cut serves them all), so each needs the same settings and the same training set.")
        # as BatchFilter: an EarlyStopping that may stop inside the warm-up is said before training (a Lightning
        # user's `EarlyStopping(patience=0)` ended an "auto" fit after epoch 1 of a 3-epoch warm-up, silently)
        warn_early_stopping_in_warmup("CoTeaching", self.trainer, self._warmup, self._auto is not None,
                                      self.drop_ratio)
        steps = self.trainer.max_steps
        if steps is not None and steps > 0 and not self.trainer.ckpt_path:
            # a Lightning user's `max_steps=40` trained 20 batches, and only the docs said why; an odd count ends
            # after the batch that crosses it (a reviewer's 41: 21 batches), and `max_epochs` may end the fit first
            batches = -(-steps // 2)
            rank_zero_info(f"CoTeaching: `max_steps`={steps} counts both networks' optimizer steps, two a batch: "
                           f"this fit trains at most {batches} batch{'' if batches == 1 else 'es'} "
                           "(`trainer.global_step` counts two a batch too).")

    def on_train_end(self) -> None:
        self._close_skipped_epoch()  # (its epoch goes into `history` before the last epoch is read)
        last = self.history[-1] if self.history else None
        warn_ended_in_warmup("CoTeaching", self.trainer, None if last is None else (last.epoch, last.drop_ratio),
                             self._warmup, self._auto is not None)
        say_reestimated(self._auto)
        super().on_train_end()  # the report
        if self._report.target is None:  # (the report says it of its rows)
            say_starved_classes("CoTeaching", self.history, getattr(self, "_short_epoch", None))

    # -- the co-teaching step -----------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net1(*args, **kwargs)

    @staticmethod
    def _losses(net: Any, batch: Any) -> tuple[Tensor, Any]:
        out = net.per_sample_loss(batch)
        losses, outputs = split_loss_output(out)
        if losses.ndim != 1:
            raise ValueError(f"`per_sample_loss` must return one loss per sample (shape [batch_size]), got shape "
                             f"{tuple(losses.shape)}.")
        return losses, outputs

    def selections(self, batch: Any, losses: tuple[Tensor, Tensor], outputs: tuple[Any, Any],
                   drop_ratio: float) -> tuple[Tensor, Tensor]:
        """``(keep_1, keep_2)``: the samples each network trusts in ``batch`` at drop ratio ``drop_ratio``."""
        ib = unpack_batch(batch)
        index = ib.index.to(losses[0].device)
        collect = self._auto is not None and self.training and self._auto.collects(self.current_epoch)
        report = self._report.active and self.training
        keep = torch.ones_like(losses[0], dtype=torch.bool)
        self._counted = None
        if drop_ratio == 0.0 and not collect and not report:
            return keep, keep
        loss = fit_loss_layer(self, self.rule, self.loss, outputs[0], ib.target)
        scores = [loss_layer_scores(self.rule, l_i, o_i, ib.target, loss) for l_i, o_i in zip(losses, outputs)]
        mean_score = 0.5 * (scores[0].double() + scores[1].double()) if collect or report else None
        given = predicted = None
        if report or (collect and self._auto.uses_labels):  # net1's prediction (the network `forward` uses)
            given, predicted = given_and_predicted(outputs[0], ib.target, self.net1)  # the wrapped model's `label_key`
        if collect:
            labels = (given, predicted) if self._auto.uses_labels else (None, None)
            self._auto.add(index, mean_score, *labels)
        masks = (keep, keep)
        if drop_ratio != 0.0:
            # both networks rank the same indices: one first-occurrence mask; a padding repeat is neither seen nor
            # dropped in the counts and the report (it was, and marked its sample dropped where rank 0 kept it)
            (m1, self._counted), (m2, _) = (select_and_count(s, index, drop_ratio, self.scope, self._warn_small)
                                            for s in scores)
            masks = (m1, m2)
        if report:
            self._report.add(*only_counted(self._counted, index, mean_score, ~(masks[0] & masks[1]), predicted,
                                           given, ib.corrupted))
        return masks[0], masks[1]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._check_batch(batch, batch_idx)
        opt1, opt2 = self.optimizers()
        l1, o1 = self._losses(self.net1, batch)
        l2, o2 = self._losses(self.net2, batch)
        keep1, keep2 = self._trusted(batch, (l1, l2), (o1, o2))
        # the exchange: each network learns from the samples its peer trusts
        loss1, loss2 = masked_mean(l1, keep2), masked_mean(l2, keep1)
        self._update(opt1, opt2, loss1 + loss2)
        self._after_step(batch, keep1, keep2, loss1.detach(), loss2.detach(), o1)
        return loss1.detach()

    @torch.compiler.disable
    def _update(self, opt1: Any, opt2: Any, loss: Tensor) -> None:
        # out of the compiled graph: traced, the two optimizers' steps guarded on each optimizer object and recompiled
        # in 8 functions (a compile user counted 18 recompiles of a Co-teaching fit)
        opt1.zero_grad()
        opt2.zero_grad()
        self.manual_backward(loss)  # disjoint graphs: one backward gives both networks' gradients
        opt1.step()
        opt2.step()

    # Opaque to torch.compile, as RobustMixin's own step: they read the epoch, the schedules, the bookkeeping and the
    # logger, which dynamo would guard on and recompile the step for at every epoch of the warm-up.
    @torch.compiler.disable
    def _check_batch(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:  # before the wrapped model's `per_sample_loss` unpacks it in its own way
            unpack_batch(batch, owner="CoTeaching")

    @torch.compiler.disable
    def _trusted(self, batch: Any, losses: tuple[Tensor, Tensor], outputs: tuple[Any, Any]) -> tuple[Tensor, Tensor]:
        return self.selections(batch, losses, outputs, self.drop_ratio_at(self.current_epoch))

    @torch.compiler.disable
    def _after_step(self, batch: Any, keep1: Tensor, keep2: Tensor, loss1: Tensor, loss2: Tensor,
                    outputs: Any = None) -> None:
        self._step_schedulers("step")
        ib = unpack_batch(batch)
        # net1's outputs, read at its `label_key` as the report reads them
        self._count(keep1, keep2, ib.corrupted, batch_class_labels(outputs, ib.target, self.net1))
        self.log("train_loss", loss1, prog_bar=True)
        self.log("train_loss_2", loss2)

    def _warn_small(self, n: int, eps: float) -> None:
        if not self._warned_small:
            self._warned_small = True
            rank_zero_warn(small_batch_message("CoTeaching", n, eps))

    def _count(self, keep1: Tensor, keep2: Tensor, corrupted: Tensor | None,
               classes: tuple[Tensor | None, int] = (None, 0)) -> None:
        dev = keep1.device
        if self._counters is None:
            self._counters = torch.zeros(len(_COUNTERS), dtype=torch.int64, device=dev)
        self._counters = self._counters.to(dev)
        labels, slots = classes  # (`batch_class_labels`)
        if labels is not None and labels.numel() != keep1.numel():
            labels = None  # (not one per entry: nothing to count by class)
        keep1, keep2, corrupted, labels = only_counted(self._counted, keep1, keep2,
                                                       None if corrupted is None else corrupted.reshape(-1),
                                                       None if labels is None else labels.reshape(-1))
        d1, d2 = ~keep1, ~keep2
        one = torch.ones((), dtype=torch.int64, device=dev)
        seen = torch.full((), keep1.numel(), dtype=torch.int64, device=dev)
        if corrupted is not None:
            bad = corrupted.to(device=dev, dtype=torch.bool).reshape(-1)
            parts = [seen, d1.sum(), d2.sum(), bad.sum(), (bad & d1).sum(), (bad & d2).sum(), one, one]
        else:
            zero = torch.zeros((), dtype=torch.int64, device=dev)
            parts = [seen, d1.sum(), d2.sum(), zero, zero, zero, one, zero]
        self._counters[:len(_COUNTERS)] += torch.stack(parts)
        self._counters = with_class_counts(self._counters, len(_COUNTERS), (labels, slots), keep1 & keep2)

    def _gather_epoch_to_rank_zero(self, epoch: int) -> None:
        """:meth:`ModuleReport._gather_epoch_to_rank_zero`, with the epoch's running counts of :attr:`history`."""
        self._counters = reduce_counters_to_rank_zero(self._counters)
        super()._gather_epoch_to_rank_zero(epoch)

    def on_train_epoch_end(self) -> None:
        self._epoch_end(self.current_epoch)

    def _epoch_end(self, epoch: int, log: bool = True) -> None:
        self._report.end_epoch(epoch, self.trainer if log else None)  # a collective, before an epoch-end checkpoint
        self._short_epoch = epoch_cut(self.trainer) if log else None  # said when a fit resumes from its end
        counts = self._counters if self._counters is not None else torch.zeros(len(_COUNTERS), dtype=torch.int64)
        values = [int(v) for v in distributed.all_reduce_sum(as_long_as_every_ranks(counts)).tolist()]
        seen, d1, d2, c_seen, c_d1, c_d2, batches, truth = values[:len(_COUNTERS)]
        rec = CoTeachingEpochRecord(epoch=epoch, drop_ratio=self.drop_ratio_at(epoch),
                                    seen=seen, dropped_1=d1, dropped_2=d2)
        rec.seen_by_class, rec.kept_by_class = split_class_counts(values[len(_COUNTERS):])
        if self._auto is not None:
            # a collective: every rank, every epoch (one closed at train start, skipped by Lightning, was whole)
            self._auto.end_epoch(epoch, self.device, epoch_part(self.trainer) if log else None)
            rec.estimated_corruption = self._auto.estimate
        if batches and truth == batches:
            rec.corrupted_seen = c_seen
            rec.dropped_corrupted_frac_1 = c_d1 / d1 if d1 else None
            rec.dropped_corrupted_frac_2 = c_d2 / d2 if d2 else None
            rec.corrupted_frac = c_seen / seen if seen else None
        self.history.append(rec)
        self._counters = None
        for key, value in () if not log else (("coteach/drop_ratio", rec.drop_ratio),
                           ("coteach/dropped_corrupted_frac_1", rec.dropped_corrupted_frac_1),
                           ("coteach/dropped_corrupted_frac_2", rec.dropped_corrupted_frac_2),
                           ("coteach/estimated_corruption", rec.estimated_corruption)):
            if value is not None:
                self.log(key, float(value), on_step=False, on_epoch=True, sync_dist=True)
        self._step_schedulers("epoch", epoch)

    # -- optimizers ---------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        confs = []
        for i, net in enumerate((self.net1, self.net2)):
            opt, sched = _split_optimizer_config(net.configure_optimizers(), f"net{i + 1}")
            self._sched_cfgs[i] = sched
            confs.append({"optimizer": opt} if sched is None else {"optimizer": opt, "lr_scheduler": sched})
        return confs

    def _step_schedulers(self, interval: str, epoch: int | None = None) -> None:
        """Step the schedulers of ``interval`` due now (``"epoch"``: at the end of ``epoch``, default the current)."""
        if not any(self._sched_cfgs):
            return
        schedulers = self.lr_schedulers()
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        active = [cfg for cfg in self._sched_cfgs if cfg is not None]
        epoch = self.current_epoch if epoch is None else epoch
        count = epoch + 1 if interval == "epoch" else self.global_step // 2  # two optimizers step
        for cfg, sched in zip(active, schedulers):
            if cfg["interval"] == interval and count % int(cfg["frequency"]) == 0:
                sched.step()

    # -- evaluation: network 1 ----------------------------------------------------------------------------
    def _delegate(self, hook: str, *args: Any) -> Any:
        self.net1._current_fx_name = self._current_fx_name  # so `self.log` inside net1 is allowed
        return getattr(self.net1, hook)(*args)

    validation_step = _Net1Step()
    test_step = _Net1Step()

    # the evaluation epoch hooks (`_NET1_EPOCH_HOOKS`), each net1's where it has its own
    on_validation_epoch_start = _net1_epoch_hook("on_validation_epoch_start")
    on_validation_epoch_end = _net1_epoch_hook("on_validation_epoch_end")
    on_test_epoch_start = _net1_epoch_hook("on_test_epoch_start")
    on_test_epoch_end = _net1_epoch_hook("on_test_epoch_end")
    on_predict_epoch_start = _net1_epoch_hook("on_predict_epoch_start")
    on_predict_epoch_end = _net1_epoch_hook("on_predict_epoch_end")

    def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        return self._delegate("predict_step", batch, batch_idx, *args)

    # -- state ----------------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record_spectral_norm(self, checkpoint)  # as RobustMixin does: a load without the callback
        counters = None if self._counters is None else self._counters.cpu().tolist()
        checkpoint["co_teaching"] = {
            "history": [asdict(r) for r in self.history],
            "counters": counters,
            # the other ranks' counts of the epoch (a checkpoint written inside it held rank 0's alone: BatchFilter's)
            "other_ranks_counters": distributed.other_ranks_parts(counters),
            "warned_small": self._warned_small,
            "short_epoch": getattr(self, "_short_epoch", None),
            "auto": None if self._auto is None else self._auto.state_dict(),
            "report": self._report.state_dict(),
            "random": random_state(),
            "arguments": self.resume_arguments(),
        }

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """As RobustMixin's: the weights ``ddp_spawn`` hands back keep the Trainer's spectral normalisation (the
        script's CoTeaching had kept its initial weights: 0.123 where the checkpoint read 0.324)."""
        from lit_robust.mixin import spectral_norm_before_load

        spectral_norm_before_load(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_spectral_norm(self, checkpoint)  # both copies' layers saved normalised, loaded without the callback
        state = checkpoint.get("co_teaching")
        if state is None:
            return
        check_resume_arguments_in_fit(self, state)  # before anything is restored (absent from older checkpoints)
        self._note_skipped_epoch_end(checkpoint)
        warn_cut_epoch_in_fit(self, state.get("short_epoch"))
        mark_restored(self)  # (outside a fit too: each fit's setup clears it)
        restore_random_state_in_fit(self, state.get("random"))
        self.history = [CoTeachingEpochRecord(**r) for r in state["history"]]
        counters = counts_of_this_rank(state["counters"], state.get("other_ranks_counters"))
        self._counters = None if counters is None else torch.tensor(counters, dtype=torch.int64)
        self._warned_small = state["warned_small"]
        if self._auto is not None and state.get("auto") is not None:
            self._auto.load_state_dict(state["auto"])
        self._report.load_state_dict(state.get("report"))  # absent from checkpoints before the report
