"""The per-sample loss protocol a LightningModule adopts to work with lit_robust."""

from __future__ import annotations

import sys
import warnings
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from lit_robust._backend import TrainerFn, rank_zero_info, rank_zero_warn
from lit_robust._hook_parts import guarantee_parts, run_part
from lit_robust._lightning import check_datamodule_package
from lit_robust._modes import evaluating
from lit_robust.data.indexed import check_corrupted_flags, unpack_batch
from lit_robust.data.spec import check_first_batch
from lit_robust.report import confidence_from_outputs, given_and_predicted, label_part, values_from_outputs
from lit_robust.selection.rules import masked_mean

__all__ = ["RobustMixin", "BatchSelector", "require_mixin", "reset_parameters", "check_per_sample_scores",
           "scores_predictions_confidence"]

#: the checkpoint key under which :class:`RobustMixin` saves the fit's random generators
RANDOM_STATE_KEY = "robust_random_state"


@runtime_checkable
class BatchSelector(Protocol):
    """Anything that decides, inside one training batch, which samples the loss keeps.

    Per-batch filters (PRL, SPL, co-teaching, ...) implement this and register themselves with
    :meth:`RobustMixin.add_batch_selector`; :meth:`RobustMixin.reduce_loss` combines their masks. A selector that
    reads ``batch`` (its indices, targets) sets a class attribute ``needs_batch = True``: ``reduce_loss`` then
    refuses a call without it by name; one that reads the losses alone gets ``batch=None``.
    """

    def keep_mask(self, losses: Tensor, batch: Any, outputs: Any, module: Any) -> Tensor:
        """Boolean mask of shape ``losses.shape`` (``True`` = keep)."""



def split_loss_output(out: Any) -> tuple[Tensor, Any]:
    """``(losses, outputs)`` of what ``per_sample_loss`` returned: the losses alone (``outputs`` ``None``) or the
    pair. Anything else is named (an auditor's 1-tuple `(losses,)` ended in "not enough values to unpack", and
    integer losses in torch's "mean(): could not infer output dtype")."""
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            comma = " (a trailing comma?)" if len(out) == 1 else ""
            raise ValueError(f"`per_sample_loss` must return the per-sample losses or a pair `(losses, outputs)`, got "
                             f"a {type(out).__name__} of {len(out)} element(s){comma}.")
        losses, outputs = out
    else:
        losses, outputs = out, None
    check_losses(losses)
    return losses, outputs


def check_losses(losses: Any) -> None:
    """Raise unless ``losses`` is a floating-point tensor (its shape is checked where it is reduced)."""
    if not isinstance(losses, Tensor):
        raise ValueError(f"`per_sample_loss` must return the per-sample losses as a tensor of shape [batch_size], got "
                         f"a {type(losses).__name__}.")
    if not losses.is_floating_point():
        raise ValueError(f"`per_sample_loss` must return floating-point losses (a loss with `reduction='none'`), got "
                         f"dtype {losses.dtype}: a count or a 0/1 error is no loss to train on.")


def broadcast_hint(shape: tuple[int, ...]) -> str:
    """A note for losses of shape ``[B, B]``: a ``[B]`` output against ``[B, 1]`` targets (or the reverse) broadcast
    there, and averaging would train on every pair (a regression analyst's ``targets=df[["y"]]``). ``""`` otherwise.

    >>> broadcast_hint((32, 32))[:52]
    ' A [32, 32] loss is what `(output - target) ** 2` gi'
    >>> broadcast_hint((32, 3))
    ''
    """
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] < 2:
        return ""
    b = shape[0]
    return (f" A [{b}, {b}] loss is what `(output - target) ** 2` gives for a [{b}] output and [{b}, 1] targets (or the "
            f"reverse): they broadcast to every pair, and averaging would train on that; give both the same shape "
            "(e.g. `output.squeeze(-1)`, or targets of one column as a 1-D tensor).")

class RobustMixin:
    """Cooperative mixin: ``class MyModel(RobustMixin, pl.LightningModule)``.

    A module implements :meth:`per_sample_loss` (one loss per sample, ``reduction="none"``) and gets:

    * :meth:`reduce_loss` — the mean over the samples that every active batch selector keeps
      (all samples when none is active), the single place where per-batch filters plug in;
    * :meth:`sample_scores` — the per-sample score of a round's scoring pass (default: the loss;
      override it, e.g. a GAN's discriminator loss on real images or a flow's ``-log p``);
    * a default :meth:`training_step` that chains the two and logs ``train_loss``.

    Batches are ``(index, input, target[, is_corrupted])`` (see :class:`lit_robust.IndexedDataset`).
    """

    #: Whether the training batches' targets mean something (class labels, regression targets). ``False`` for a
    #: module whose targets are placeholders (the zeros of a GAN's or a density model's data): its per-sample
    #: reports leave the label and target columns empty (they read ``given_label`` 0 on every row).
    report_targets: bool = True

    #: Where the class labels are in targets of several parts (a multi-task model's ``{"digit": y, "ink": v}`` or
    #: ``(y, v)``): their key or position, e.g. ``label_key = "digit"``; the same key picks that head's outputs when
    #: ``per_sample_loss`` returns a dict or tuple of outputs. The report's ``given_label`` / ``predicted_label`` and
    #: the label estimators (``"disagreement"``) read them; ``None`` (default): the targets themselves.
    label_key: str | int | None = None

    #: Whether ``training_step`` has one loss to return (ITLM's round lines show it and warn when it diverges).
    #: ``False`` for a module that trains several networks on losses of their own (DCGAN): ITLM then says nothing
    #: about a step that returns no loss.
    single_loss: bool = True

    # Set by a callback that reads each training batch's per-sample losses (ITLM's collapse check) for its fit:
    # `reduce_loss` keeps them only then. Checked before the call, which torch.compile cannot trace (a graph break):
    # a compiled `training_step` without ITLM stays one graph (two when the break was made in every fit).
    _records_losses: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._robust_selectors: list[BatchSelector] = []

    def on_fit_start(self) -> None:
        check_datamodule_package(getattr(self, "_trainer", None))
        hook = getattr(super(), "on_fit_start", None)
        if callable(hook):
            hook()

    def on_train_start(self) -> None:
        run_part(self, RobustMixin._mixin_on_train_start)
        hook = getattr(super(), "on_train_start", None)
        if callable(hook):
            hook()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        run_part(self, RobustMixin._mixin_on_save_checkpoint, checkpoint)
        hook = getattr(super(), "on_save_checkpoint", None)
        if callable(hook):
            hook(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        run_part(self, RobustMixin._mixin_on_load_checkpoint, checkpoint)
        hook = getattr(super(), "on_load_checkpoint", None)
        if callable(hook):
            hook(checkpoint)

    # The mixin's part of those three hooks. A subclass's own hook that does not call `super()` (Lightning's docs
    # write `on_save_checkpoint`/`on_load_checkpoint` so) hid it: the random state was neither saved nor restored and
    # a resume from an epoch's end parted from the uninterrupted fit (0.13 in a weight), and an own `on_train_start`
    # dropped the mid-epoch resume warning. `__init_subclass__` wraps such hooks (a subclass's own, or a user mixin's
    # listed before this one) to run the part after them where `super()` did not reach it (`lit_robust._hook_parts`).
    def _mixin_on_train_start(self) -> None:
        # a module trained without ITLM or a filter, resumed from a checkpoint written inside an epoch
        # (`every_n_train_steps`, `save_on_exception`), got only Lightning's generic "not resumable" note while the
        # filters, CoTeaching, RCA and SimCLR say how to resume exactly; such a callback says it (or, ITLM, resumes
        # that epoch exactly) itself, before this hook runs: said once
        trainer = getattr(self, "_trainer", None)
        skipped_end = self.__dict__.pop("_robust_skipped_end", None)  # recorded by this resumed fit's load
        if trainer is not None and not _resume_owned_by_a_callback(trainer):
            from lit_robust.callbacks._resume import skipped_epoch_end_note, warn_inexact_resume

            if skipped_end is not None:
                # a checkpoint of an epoch's last batch (`every_n_train_steps` of an epoch's length): said to be
                # "inside epoch 2 (after 5 of its batches) ... in a new order", where Lightning goes on at epoch 2's
                # start and the weights ended bit for bit the uninterrupted fit's
                rank_zero_warn(skipped_epoch_end_note(type(self).__name__, skipped_end, kept=None, trainer=trainer))
            warn_inexact_resume(trainer, type(self).__name__, mid_epoch=skipped_end is None)

    def _mixin_on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the process's random generators, which Lightning does not save: a module trained without ITLM or a filter
        # (the Bootstrap loss of configs/bootstrap_mnist.yaml, a plain flow) resumed from an epoch-end checkpoint drew
        # its next shuffles and dropout masks anew, and its weights parted from the uninterrupted fit's
        from lit_robust.callbacks._resume import random_state

        checkpoint[RANDOM_STATE_KEY] = random_state()  # every rank calls this hook, as `random_state` needs
        from lit_robust.functional.spectral import record_spectral_norm

        record_spectral_norm(self, checkpoint)  # for a load without the SpectralNorm callback (inference)

    def _mixin_on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from lit_robust.callbacks._resume import epoch_whose_end_was_skipped, restore_random_state_in_fit

        # a resumed fit only (absent from older checkpoints); ITLM and the filters put back the same state
        restore_random_state_in_fit(self, checkpoint.get(RANDOM_STATE_KEY))
        if getattr(getattr(getattr(self, "_trainer", None), "state", None), "fn", None) == TrainerFn.FITTING:
            self.__dict__["_robust_skipped_end"] = epoch_whose_end_was_skipped(checkpoint)
        if "co_teaching" in checkpoint:
            # a notebook newcomer's `MLP.load_from_checkpoint("cot.ckpt")` got a RuntimeError listing every `net1.*` and
            # `net2.*` key
            name = type(self).__name__
            raise ValueError(f"{name}.load_from_checkpoint: this is a checkpoint of `CoTeaching`, which holds two "
                             f"copies of your model (`net1.*` and `net2.*` in its state dict). Load it with "
                             f"`CoTeaching.load_from_checkpoint(path, model={name}(...))` and take its `.net1`.")
        from lit_robust.functional.spectral import restore_spectral_norm

        # weights saved under SpectralNorm, loaded without the callback; before the compiled keys are matched, which
        # match the normalised layers' keys only once they are normalised here too (a checkpoint of a compiled
        # submodule, loaded into the module uncompiled, failed on torch's missing keys)
        restore_spectral_norm(self, checkpoint)
        _match_compiled_keys(self, checkpoint)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """``nn.Module.load_state_dict``, after normalising the layers whose weights ``state_dict`` holds normalised
        and this module holds plain, as the Trainer's ``SpectralNorm`` callbacks would: under ``ddp_spawn`` the
        callback normalises the copies in the started processes only, and Lightning hands the fitted weights back to
        the script's module with ``strict=False``, which dropped them all (a newcomer's ``trainer.test(model)``
        read 0.294 where the fit's checkpoint read 0.946)."""
        spectral_norm_before_load(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)  # type: ignore[misc]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        guarantee_parts(cls, RobustMixin, {name: getattr(RobustMixin, f"_mixin_{name}") for name in _MIXIN_HOOKS})
        # `class M(LightningModule, RobustMixin)`: LightningModule's `training_step` hides the mixin's and
        # torch.nn.Module's `__init__` does not call on to the mixin's; a newcomer got only Lightning's "No
        # `training_step()` method defined"
        mro = cls.__mro__
        module = next((c for c in mro if c.__name__ == "LightningModule"
                       and c.__module__.split(".")[0] in ("pytorch_lightning", "lightning")), None)
        if module is not None and mro.index(module) < mro.index(RobustMixin):
            raise TypeError(f"`{cls.__name__}` has `LightningModule` before `RobustMixin` among its bases, so "
                            "Lightning's `training_step` and `__init__` hide the mixin's. Put the mixin first: "
                            f"`class {cls.__name__}(RobustMixin, LightningModule)`.")
        # `class Robust(RobustMixin, MyModule)`, MyModule with a `training_step` of its own: the mixin's wins and the
        # user's never runs -- a dict-batch newcomer's counter in theirs read 0 calls after a whole ITLM fit, with no
        # word of it (an extra loss term, logging or manual optimisation there would be skipped)
        if RobustMixin in cls.__bases__ and "training_step" not in cls.__dict__:
            after = mro[mro.index(RobustMixin) + 1:]
            hidden = next((c for c in after if "training_step" in c.__dict__
                           and c.__module__.split(".")[0] not in ("pytorch_lightning", "lightning")), None)
            if hidden is not None:
                warnings.warn(f"`{cls.__name__}` takes `training_step` from RobustMixin, so `{hidden.__name__}."
                              "training_step` never runs (anything it adds -- another loss term, logging, manual "
                              f"optimisation -- is skipped). To keep yours, define `training_step` in `{cls.__name__}` "
                              "and hand the per-sample losses to `self.reduce_loss(losses, batch, outputs)` there (the "
                              "README's section 1); to use the mixin's and silence this, write `training_step = "
                              f"RobustMixin.training_step` in `{cls.__name__}`.", UserWarning, stacklevel=2)

    # -- protocol -----------------------------------------------------------------------------
    def per_sample_loss(self, batch: Any) -> Tensor | tuple[Tensor, Any]:
        """Return the per-sample losses of ``batch`` (shape ``[B]``), or ``(losses, outputs)``.

        ``outputs`` (e.g. the logits) is handed to batch selectors that need the loss layer's input.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `per_sample_loss(batch)`.")

    def sample_scores(self, batch: Any) -> Tensor:
        """Per-sample score for a round's scoring pass (lower = more trusted). Default: the loss."""
        return split_loss_output(self.per_sample_loss(batch))[0]

    def predicted_labels(self, batch: Any) -> Tensor | None:
        """Predicted class per sample, for the per-sample report (``ITLM(report=True)``); ``None``: no prediction.

        Default: the argmax over classes of the ``[B, C]`` outputs :meth:`per_sample_loss` returns, when the
        targets are integer class labels (:func:`lit_robust.report.labels_from_outputs`); ``None`` for other
        outputs (regression, a single binary logit). Override it for another rule. Called in eval mode without
        gradients; with both this and :meth:`sample_scores` left as they are, ITLM's report pass takes the score
        and the prediction from one forward.
        """
        # the same reading of the return as everywhere else: a list `[losses, outputs]` carries outputs too
        outputs = split_loss_output(self.per_sample_loss(batch))[1]
        return given_and_predicted(outputs, unpack_batch(batch).target, self)[1]

    # -- selectors ----------------------------------------------------------------------------
    @property
    def batch_selectors(self) -> list[BatchSelector]:
        if not hasattr(self, "_robust_selectors"):
            # a subclass that did not call RobustMixin.__init__ (e.g. skipped super().__init__)
            self._robust_selectors = []
        return self._robust_selectors

    def add_batch_selector(self, selector: BatchSelector) -> None:
        if not isinstance(selector, BatchSelector):
            raise TypeError(f"`selector` must implement `keep_mask(losses, batch, outputs, module)`, got {selector!r}.")
        if selector not in self.batch_selectors:
            self.batch_selectors.append(selector)

    def remove_batch_selector(self, selector: BatchSelector) -> None:
        if selector in self.batch_selectors:
            self.batch_selectors.remove(selector)

    def batch_keep_mask(self, losses: Tensor, batch: Any = None, outputs: Any = None, record: bool = True) -> Tensor:
        """The samples of one batch that every active batch selector keeps (all of them when none is active).

        ``record=False`` asks selectors for a preview that leaves their bookkeeping (e.g. a filter's dropped
        counts) untouched — used by :class:`lit_robust.AdversarialTrigger`, whose inner step ranks the batch
        once more; selectors without a ``preview_mask`` method are asked through ``keep_mask`` either way.
        """
        keep = torch.ones_like(losses, dtype=torch.bool)
        for selector in self.batch_selectors:
            ask = selector.keep_mask if record else getattr(selector, "preview_mask", selector.keep_mask)
            keep &= ask(losses, batch, outputs, self)
        return keep

    @property
    def selectors_paused(self) -> bool:
        """While ``True``, :meth:`reduce_loss` averages over every sample (the selectors are not asked)."""
        return getattr(self, "_robust_selectors_paused", False)

    @selectors_paused.setter
    def selectors_paused(self, value: bool) -> None:
        self._robust_selectors_paused = bool(value)

    def reduce_loss(self, losses: Tensor, batch: Any = None, outputs: Any = None) -> Tensor:
        """Mean of ``losses`` over the samples kept by every active batch selector.

        A selector with ``reduce_in_backward`` (``BatchFilter("prl_g")``'s one-backward book-keeping) is asked
        last, with the others' mask: it returns a loss whose backward makes the selection and leaves the kept
        samples' mean gradient in ``.grad`` (the loss's value is then the whole batch's mean), or ``None``,
        and the mask is formed here as usual.

        Pass ``batch`` (and ``outputs``, what :meth:`per_sample_loss` returned with the losses) whenever a batch
        selector may be active, e.g. ``self.reduce_loss(losses, batch, outputs)``: the selectors read the sample
        indices and the loss layer's input from them, and a ``ValueError`` says so when ``batch`` is missing.
        """
        check_losses(losses)
        if losses.ndim != 1:
            raise ValueError(
                f"`per_sample_loss` must return one loss per sample (shape [batch_size]), got shape "
                f"{tuple(losses.shape)}; use `reduction='none'` and average any extra dimensions."
                + broadcast_hint(tuple(losses.shape))
            )
        if self._records_losses:
            self._record_losses(losses)
        if not self.batch_selectors or self.selectors_paused:
            return losses.mean()
        needs = [s for s in self.batch_selectors if getattr(s, "needs_batch", False)]
        if batch is None and needs:
            # a user's `reduce_loss(losses)` reached a selector's batch check, which told them to wrap their data set
            # in IndexedDataset; a user's own selector of the losses alone works without it (the diff reviewer's)
            names = ", ".join(type(s).__name__ for s in needs)
            raise ValueError(f"`reduce_loss` needs `batch` (and `outputs`) when a batch selector is active ({names}): "
                             "call `self.reduce_loss(losses, batch, outputs)` with what `per_sample_loss(batch)` "
                             "returned, got batch=None.")
        return self._selected_mean(losses, batch, outputs)

    @torch.compiler.disable
    def _record_losses(self, losses: Tensor) -> None:
        # a callback that reads the batch's per-sample losses (ITLM's collapse check) sets a list here for the batch
        record = getattr(self, "_batch_losses", None)
        if isinstance(record, list):
            record.append(losses.detach())

    @torch.compiler.disable
    def _selected_mean(self, losses: Tensor, batch: Any, outputs: Any) -> Tensor:
        # Opaque to torch.compile (run eagerly, on the compiled forward's tensors): the selectors read the epoch,
        # their schedules and bookkeeping, which dynamo would guard on and recompile for at every epoch of a
        # warm-up ramp (a newcomer's compiled PRL fit hit the recompile limit and ran 48x slower than eager)
        # a selector that ranks during the backward (PRL(G) book-keeping) reduces last, given the others' mask
        deferred = next((s for s in self.batch_selectors if callable(getattr(s, "reduce_in_backward", None))), None)
        others = [s for s in self.batch_selectors if s is not deferred]
        keep = torch.ones_like(losses, dtype=torch.bool)
        for selector in others:
            keep &= selector.keep_mask(losses, batch, outputs, self)
        if deferred is not None:
            out = deferred.reduce_in_backward(losses, batch, outputs, self, keep if others else None)
            if out is not None:
                return out
            keep &= deferred.keep_mask(losses, batch, outputs, self)
        return masked_mean(losses, keep)

    @property
    def model_start_epoch(self) -> int | None:
        """The epoch at whose start a round-based callback last re-drew this model's parameters in the current fit
        (``ITLM(reinit=True)`` sets it after :meth:`reinitialize`); ``None`` when none has. A fit that starts afresh
        (not one that goes on with the same Trainer) sets it back to ``None`` at the setup of its ITLM or
        BatchFilter, so an earlier fit's announcement does not shift a later fit's schedules.

        Per-batch schedules that count epochs (:class:`~lit_robust.BatchFilter`'s warm-up and its
        ``drop_ratio="auto"`` estimation window, hence :class:`~lit_robust.AdversarialTrigger`'s use of the filter)
        read it during the step and restart from that epoch, so the order of the callbacks does not matter; they keep
        the epoch they count from in their own checkpoint state. A round-based callback of your own announces a
        re-initialisation by setting it to ``trainer.current_epoch``.
        """
        return getattr(self, "_robust_model_start_epoch", None)

    @model_start_epoch.setter
    def model_start_epoch(self, epoch: int | None) -> None:
        self._robust_model_start_epoch = None if epoch is None else int(epoch)

    def reinitialize(self, seed: int) -> None:
        """Re-draw every trainable parameter (used by round-based callbacks such as ITLM at each round start).

        The default calls ``reset_parameters()`` on every submodule that owns trainable parameters, under a forked
        RNG seeded with ``seed`` (the global RNG is untouched). Frozen parameters (``requires_grad=False``, e.g. a
        pretrained backbone kept fixed) keep their values, and a submodule whose parameters are all frozen keeps its
        buffers too. Running statistics start afresh (``reset_running_stats``) in every norm layer that is re-drawn,
        and in parameter-free ones (``BatchNorm(affine=False)``, ``InstanceNorm(track_running_stats=True)``) unless
        they sit in a submodule whose parameters are all frozen. Override it for custom layers, or for frozen
        parameters that are not fixed (an EMA teacher updated by hand: it would carry over from round to round).
        """
        reset_parameters(self, seed)  # type: ignore[arg-type]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self._check_training_batch(batch, batch_idx)
        losses, outputs = split_loss_output(self.per_sample_loss(batch))
        loss = self.reduce_loss(losses, batch, outputs)
        self._log_train_loss(loss)
        return loss

    # Both opaque to torch.compile: a `batch_idx == 0` test in the traced step, or tracing into Lightning's `log`, made
    # dynamo guard on the batch number and the logger's state and recompile the step until its recompile limit.
    @torch.compiler.disable
    def _check_training_batch(self, batch: Any, batch_idx: int) -> None:
        # before `per_sample_loss` unpacks it: a batch without indices gets the hint, not a crash
        if batch_idx == 0:
            b = unpack_batch(batch, owner=f"{type(self).__name__}.training_step")
            label_part(b.target, self)  # a wrong `label_key` is named now, not once the report is written

    @torch.compiler.disable
    def _log_train_loss(self, loss: Tensor) -> None:
        self.log("train_loss", loss, prog_bar=True)  # type: ignore[attr-defined]


def reset_parameters(module: torch.nn.Module, seed: int) -> None:
    """Call ``reset_parameters()`` on every submodule owning parameters, with a private seeded RNG.

    A parametrised layer (``torch.nn.utils.parametrize``, e.g. :func:`lit_robust.apply_spectral_norm`) gets
    fresh *unconstrained* tensors: a plain copy of the layer is reset and its values become the
    parametrisation's ``original`` (the constraint, e.g. ``W / (σ/k)``, still applies on top).
    """
    owners = _reset_owners(module)
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for m in owners:
            frozen = [(p, p.detach().clone()) for p in _own_parameters(m) if not p.requires_grad]
            if parametrize.is_parametrized(m):
                _reset_parametrized(m)
            else:
                _resetter(m)()
            with torch.no_grad():
                for p, value in frozen:  # a layer with some parameters frozen: those keep their values
                    p.copy_(value)
        for m in _stat_only_norms(module):
            m.reset_running_stats()


def _resetter(m: torch.nn.Module) -> Any:
    """``m.reset_parameters``, or for a module of torch's own that keeps it private (``nn.MultiheadAttention``'s
    ``_reset_parameters``: every stock transformer) that one; ``None`` when there is neither."""
    public = getattr(m, "reset_parameters", None)
    if callable(public):
        return public
    private = getattr(m, "_reset_parameters", None)
    return private if callable(private) and type(m).__module__.startswith("torch.nn.") else None


def _own_parameters(m: torch.nn.Module) -> list[torch.nn.Parameter]:
    """``m``'s own parameters, with the unconstrained ``original`` tensors of a parametrised layer."""
    own = list(m.parameters(recurse=False))
    if parametrize.is_parametrized(m):
        own += list(m.parametrizations.parameters())
    return own


def _reset_owners(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The submodules :func:`reset_parameters` resets, or a ``TypeError`` naming the classes it cannot reset.

    A submodule whose parameters are all frozen (``requires_grad=False``: a pretrained backbone kept fixed) is not
    one of them: re-drawn, it would never train again. Its buffers (a frozen BatchNorm's running statistics) are
    kept too. A fine-tuner's frozen backbone was re-drawn at random at each ITLM round start, without a word."""
    owners = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))
              and not isinstance(m, parametrize.ParametrizationList)]
    owners += [m for m in module.modules() if parametrize.is_parametrized(m) and m not in owners]
    owners = [m for m in owners if any(p.requires_grad for p in _own_parameters(m))]
    missing = sorted({type(m).__name__ for m in owners if _resetter(m) is None})
    if missing:
        raise TypeError(
            f"cannot re-initialise {missing}: these modules own parameters but have no `reset_parameters()`. "
            "Add one, override `reinitialize(seed)` on your LightningModule, or pass `reinit=False`."
        )
    return owners


def _stat_only_norms(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The norm layers with running statistics but no parameters (``BatchNorm(affine=False)``, ``InstanceNorm(
    track_running_stats=True)``) that a re-initialisation resets: owning no parameter, they are no owner of
    :func:`_reset_owners`, and their statistics of the old model carried over into the fresh one (a reviewer's
    ``num_batches_tracked`` counted on over ITLM's rounds). Frozen, and kept, is one inside a submodule whose
    parameters are all frozen: the nearest enclosing module that holds any parameter holds no trainable one."""
    parents: dict[torch.nn.Module, torch.nn.Module] = {}
    for parent in module.modules():
        for child in parent.children():
            parents.setdefault(child, parent)
    found = []
    for m in module.modules():
        if (not isinstance(m, torch.nn.modules.batchnorm._NormBase) or not m.track_running_stats
                or any(True for _ in m.parameters())):
            continue
        up = parents.get(m)
        while up is not None and not any(True for _ in up.parameters()):
            up = parents.get(up)
        if up is None or any(p.requires_grad for p in up.parameters()):
            found.append(m)
    return found


def check_reinitializable(module: Any) -> None:
    """Raise the ``TypeError`` :meth:`RobustMixin.reinitialize` would raise at the first round start, at fit start
    instead (an NLP newcomer's encoder failed after round 0 had trained); nothing when the module overrides it."""
    if type(module).reinitialize is RobustMixin.reinitialize:
        _reset_owners(module)


def _reset_parametrized(m: torch.nn.Module) -> None:
    r"""Reset a parametrised layer through a plain twin of its own class (its ``reset_parameters`` then writes
    real tensors, not the parametrisation's output), and store the fresh tensors as the ``original``\ s."""
    base = type(m).__bases__[0]  # parametrize swaps the class for a subclass `Parametrized<Base>`
    names = list(m.parametrizations.keys())
    twin = base.__new__(base)
    twin.__dict__.update(m.__dict__)
    twin._modules = {k: v for k, v in m._modules.items() if k != "parametrizations"}
    twin._parameters = dict(m._parameters)  # shares the unconstrained parameters (e.g. bias): reset in place
    for name in names:
        twin._parameters[name] = torch.nn.Parameter(m.parametrizations[name].original.detach().clone())
    twin.reset_parameters()
    with torch.no_grad():
        for name in names:
            m.parametrizations[name].original.copy_(twin._parameters[name])


def scores_predictions_confidence(module: RobustMixin, batch: Any
                                  ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """``(module.sample_scores(batch), module.predicted_labels(batch), predicted values, confidence)``, from one
    forward of ``per_sample_loss`` when the module overrides neither; the predicted values are a regression's ``[B]``
    outputs for one target per sample (:func:`lit_robust.report.values_from_outputs`), else ``None``; the confidence
    is the predicted class's probability per sample (:func:`lit_robust.report.confidence_from_outputs`), ``None``
    where the module overrides ``sample_scores`` or ``predicted_labels`` (its own rule: the outputs need not be what
    it predicts by). A module that overrides ``sample_scores`` only (a GAN's discriminator loss, a flow's
    ``-log p``) gets ``None`` for both predictions (its ``per_sample_loss`` outputs are no predictions) without a
    second forward -- unless it sets ``label_key`` (a multi-task module scoring by one head): its predictions then
    take a second forward."""
    cls = type(module)
    own_scores = cls.sample_scores is not RobustMixin.sample_scores
    own_labels = cls.predicted_labels is not RobustMixin.predicted_labels
    if not own_scores and not own_labels:
        losses, outputs = split_loss_output(module.per_sample_loss(batch))
        target = unpack_batch(batch).target
        predicted = given_and_predicted(outputs, target, module)[1]
        confidence = (None if predicted is None else
                      confidence_from_outputs(label_part(outputs, module, strict=False), label_part(target, module)))
        return losses, predicted, values_from_outputs(outputs, target), confidence
    scores = module.sample_scores(batch)
    # a multi-task module scoring by one head (`sample_scores`) still predicts labels (`label_key` says it has them)
    wants_labels = own_labels or getattr(module, "label_key", None) is not None
    return scores, module.predicted_labels(batch) if wants_labels else None, None, None


def spectral_norm_before_load(module: torch.nn.Module, state_dict: Any) -> None:
    """Normalise ``module``'s layers as its Trainer's ``SpectralNorm`` callbacks do, where ``state_dict`` holds them
    normalised and ``module`` plain (:func:`~lit_robust.functional.spectral.spectral_norm_from_callbacks`); the
    Trainer is the module's, or the one whose ``ddp_spawn`` launcher hands the fitted weights back
    (:func:`_handing_back_trainer`). Called by ``load_state_dict`` (RobustMixin's, CoTeaching's)."""
    from lit_robust.functional.spectral import spectral_norm_from_callbacks

    trainer = getattr(module, "_trainer", None) or _handing_back_trainer(module)
    spectral_norm_from_callbacks(module, state_dict, getattr(trainer, "callbacks", None))


def _handing_back_trainer(module: torch.nn.Module) -> Any:
    """The Trainer whose ``ddp_spawn`` launcher is handing the fitted weights back to ``module`` in the script's
    process (a local ``trainer`` of a calling frame whose ``lightning_module`` is ``module``), else ``None``: the
    module there was never attached to it, as its fit ran in the started processes only."""
    frame = sys._getframe(1)
    for _ in range(6):
        if frame is None:
            return None
        trainer = frame.f_locals.get("trainer")
        if trainer is not None and getattr(trainer, "lightning_module", None) is module:
            return trainer
        frame = frame.f_back
    return None


def _match_compiled_keys(module: torch.nn.Module, checkpoint: dict[str, Any]) -> None:
    """Rename the checkpoint's weights of a submodule compiled by assignment (``self.net = torch.compile(self.net)``:
    keys ``net._orig_mod.*``) to this module's keys, or the other way round, so that a checkpoint loads into the
    module compiled or not. A precision-and-compile newcomer's ``load_from_checkpoint`` and resume into the
    uncompiled module failed on torch's "Unexpected key(s) net._orig_mod..." with no word of the fix."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        return
    own = set(module.state_dict())
    if not any("_orig_mod." in k for k in state) and not any("_orig_mod." in k for k in own):
        return
    plain = {k.replace("_orig_mod.", ""): k for k in own}
    saved = set(state)
    renamed = {}
    for key in saved - own:
        target = plain.get(key.replace("_orig_mod.", ""))
        if target is not None and target not in saved:
            renamed[key] = target
    for old, new in renamed.items():
        state[new] = state.pop(old)
    if renamed:
        rank_zero_info(f"{type(module).__name__}: {len(renamed)} weights of the checkpoint were matched to this "
                       "module by their names without `_orig_mod.` (a submodule compiled by assignment, "
                       "`self.net = torch.compile(self.net)`, on one side only).")


def require_mixin(owner: str, module: Any) -> RobustMixin:
    """Raise a clear error unless ``module`` adopts :class:`RobustMixin` and implements the protocol."""
    from lit_robust.models.coteaching import CoTeaching  # here: that module imports this one

    if isinstance(module, CoTeaching) and not isinstance(module, RobustMixin):
        # its networks rank their batches themselves (a newcomer got the advice to subclass RobustMixin)
        raise TypeError(f"`{owner}` does not combine with `CoTeaching`, which filters each batch itself: set its "
                        "`rule`, `drop_ratio` and `warmup_epochs` instead.")
    if isinstance(module, type):  # a newcomer passed the class
        raise TypeError(f"`{owner}` needs a module instance, got the class `{module.__name__}` itself: pass "
                        f"`{module.__name__}(...)`.")
    if isinstance(getattr(module, "_orig_mod", None), torch.nn.Module):  # torch.compile's OptimizedModule
        raise TypeError(f"`{owner}` got a `torch.compile`d module: give it the module itself and compile the result "
                        f"instead, e.g. `torch.compile({owner}(model))` (for a callback, `trainer.fit(torch.compile("
                        "model))` works as it is).")
    if not isinstance(module, RobustMixin):
        raise TypeError(
            f"`{owner}` needs the LightningModule to adopt `lit_robust.RobustMixin` "
            f"(`class {type(module).__name__}(RobustMixin, LightningModule)`), got `{type(module).__name__}` without it."
        )
    if type(module).per_sample_loss is RobustMixin.per_sample_loss:
        raise TypeError(f"`{owner}`: `{type(module).__name__}` adopts RobustMixin but does not implement "
                        "`per_sample_loss(batch)`.")
    return module


def _head(x: Any, k: int, n: int) -> Any:
    """The first ``k`` samples of one batch element (tensors/lists/tuples/dicts batched along dim 0)."""
    if isinstance(x, Tensor):
        if x.ndim == 0 or x.shape[0] != n:
            raise _Unsliceable
        return x[:k]
    if isinstance(x, (list, tuple)):
        items = [_head(v, k, n) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else type(x)(items)
    if isinstance(x, dict):
        return {key: _head(v, k, n) for key, v in x.items()}
    raise _Unsliceable


#: the hooks whose mixin part runs even where a subclass's own hook does not call `super()`
_MIXIN_HOOKS = ("on_train_start", "on_save_checkpoint", "on_load_checkpoint")


def _resume_owned_by_a_callback(trainer: Any) -> bool:
    """Whether a callback of the fit (ITLM, a per-batch filter and their subclasses) judges its resume itself."""
    from lit_robust.callbacks.batch_filter import BatchFilter
    from lit_robust.callbacks.itlm import ITLM

    return any(isinstance(cb, (BatchFilter, ITLM)) for cb in getattr(trainer, "callbacks", []))


class _Unsliceable(Exception):
    pass


def _batch_size_elsewhere(x: Any, n: int) -> bool:
    """Whether a tensor in ``x`` has a dimension after the first of size ``n`` (then dimension 0 may be another
    axis that happens to have ``n`` entries too, e.g. the time steps of a sequence-first ``[T, B]`` padding)."""
    if isinstance(x, Tensor):
        return n in tuple(x.shape[1:])
    if isinstance(x, (list, tuple)):
        return any(_batch_size_elsewhere(v, n) for v in x)
    if isinstance(x, dict):
        return any(_batch_size_elsewhere(v, n) for v in x.values())
    return False


def per_sample_mismatch(again: Tensor, scores: Tensor, rtol: float = 1e-3) -> Tensor:
    """Which of ``again`` (scores of the first samples of a batch, scored without the others) differ from
    ``scores`` (the whole batch's scores, whose first entries they must reproduce).

    Allowed: ``|a - b| <= rtol * (|b| + spread)``, ``spread`` the range of the batch's finite scores (a shift
    that matters for a ranking is large against it; float rounding of a different batch size is not); NaN
    must meet NaN and an infinity the same infinity.
    """
    a, full = again.detach().double(), scores.detach().double().to(again.device)
    b = full[: a.shape[0]]
    finite = full[torch.isfinite(full)]
    spread = float(finite.max() - finite.min()) if finite.numel() else 0.0
    both_finite = torch.isfinite(a) & torch.isfinite(b)
    close = (a - b).abs() <= rtol * (b.abs() + spread)
    same_special = (torch.isnan(a) & torch.isnan(b)) | (torch.isinf(a) & (a == b))
    return ~torch.where(both_finite, close, same_special)


def check_per_sample_scores(owner: str, score_fn: Any, batch: Any, scores: Tensor, max_head: int = 16,
                            rtol: float = 1e-3, what: str = "sample_scores") -> None:
    """Raise unless ``scores = score_fn(batch)`` are per-sample: each independent of the rest of the batch.

    The first ``k = min(B // 2, max_head)`` samples, and the first two, are scored again on their own and
    must reproduce their scores (:func:`per_sample_mismatch`). This catches a batch statistic mixed into
    every score (e.g. ``loss - loss.mean()``, ``loss.mean().expand(B)``) or a layer that mixes samples.
    Batches of fewer than two samples, or whose elements cannot be cut along the first dimension, are not
    checked; nor are batches holding a tensor with the batch size in a later dimension too (a sequence-first
    ``[T, B]`` padding whose ``T`` happens to equal ``B``) when the model cannot score their cut: the first
    dimension may not be the samples' there.
    """
    n = scores.shape[0] if isinstance(scores, Tensor) and scores.ndim == 1 else 0
    k = min(n // 2, max_head)
    for size in dict.fromkeys((k, min(k, 2))):
        if size < 1:
            return
        try:
            head = _head(batch, size, n)  # a namedtuple batch is rebuilt field by field, as `_head` does
        except _Unsliceable:
            return
        if not _batch_size_elsewhere(batch, n):
            again = score_fn(head)
        else:
            # `[T, B]` with T == B is cut along time, not samples: an NLP newcomer's sequence-first GRU (texts cut
            # to 32 tokens, batches of 32) died in the check with torch's "start (232) + length (8) exceeds
            # dimension size" before the first step. A cut the model cannot score, or one that did not change
            # its batch size, was no cut of the samples
            try:
                again = score_fn(head)
            except Exception:  # noqa: BLE001 - the full batch scored; its cut is what failed
                return
            if isinstance(again, Tensor) and again.shape == (n,):
                return
        if not isinstance(again, Tensor) or again.shape != (size,):
            got = tuple(again.shape) if isinstance(again, Tensor) else type(again).__name__
            raise ValueError(f"`{owner}`: `{what}` returned shape {got} for a batch of {size} samples; it "
                             f"must return one score per sample (shape ({size},)).")
        bad = per_sample_mismatch(again, scores, rtol)
        if bool(bad.any()):
            j = int(torch.nonzero(bad)[0])
            raise ValueError(
                f"`{owner}`: `{what}` must score each sample on its own, but the first {size} samples of a "
                f"batch of {n} got different scores when scored without the others (sample {j}: "
                f"{float(scores[j]):.6g} in the batch, {float(again[j]):.6g} alone). A batch statistic mixed into "
                "every score (e.g. `loss - loss.mean()`) or a layer that mixes samples does this"
                + _broadcast_hint(batch) + ". If the difference is expected (e.g. random scores), pass "
                "`check_per_sample=False`."
            )


def _broadcast_hint(batch: Any) -> str:
    """For floating targets of shape ``[B]``, the regression slip that mixes samples (a newcomer's ``[B, 1]`` outputs
    against ``[B]`` targets made ``(out - y) ** 2`` a ``[B, B]`` table, named only as "a layer that mixes samples")."""
    try:
        target = unpack_batch(batch).target
    except Exception:  # a batch of another layout: its owner's check reports it
        return ""
    if isinstance(target, Tensor) and target.is_floating_point() and target.ndim == 1:
        return (f"; so does, for a regression, an output of shape [B, 1] against targets of shape [B] (here "
                f"{tuple(target.shape)}): `(output - target) ** 2` broadcasts to [B, B]; reshape one to the other's "
                "shape")
    return ""


def check_per_sample_at_first_batch(owner: str, module: Any, batch: Any, what: str = "sample_scores") -> None:
    """Before the fit's first training step: ``what`` (``"sample_scores"`` or ``"per_sample_loss"``) must give one
    value per sample of ``batch``, each independent of the rest of the batch (:func:`check_per_sample_scores`).
    Run in eval mode, without gradients, the random state untouched, so that a mistake (a batch mean broadcast to
    every sample, ``[2B]`` losses) is named at once rather than after a round of training."""
    unpacked = unpack_batch(batch, owner=owner)
    check_corrupted_flags(unpacked, owner)
    # a ready-made module's own check of what the batches hold comes first: it runs at its first training step,
    # after this (a regression newcomer's `in_features=12` on 10 columns ended in "mat1 and mat2 shapes cannot be
    # multiplied" under ITLM or a filter, and in its one-line misfit without them)
    check_first_batch(module, batch, 0)
    n = int(unpacked.index.shape[0])

    def fn(b: Any) -> Any:
        if what == "per_sample_loss":
            return split_loss_output(module.per_sample_loss(b))[0]
        return module.sample_scores(b)

    cuda = [module.device.index or 0] if module.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad(), evaluating(module):
        values = fn(batch)
        if not isinstance(values, Tensor) or tuple(values.shape) != (n,):
            got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            noun = "loss" if what == "per_sample_loss" else "score"
            raise ValueError(f"`{owner}`: `{what}` must return one {noun} per sample (shape ({n},)), got {got}. "
                             "Use `reduction='none'` and flatten a `[B, 1]` output (e.g. a discriminator's logits) "
                             "or average any extra dimensions."
                             + (broadcast_hint(got) if isinstance(got, tuple) else ""))
        check_per_sample_scores(owner, fn, batch, values, what=what)
