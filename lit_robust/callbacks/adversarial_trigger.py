"""Adversarial trigger maximisation against backdoor attacks (robust_dnn_thesis Algorithm 6, eq. 5.5)."""

from __future__ import annotations

import numbers
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust._backend import Callback, pl, rank_zero_warn
from lit_robust._checks import real_scalar
from lit_robust.data.indexed import unpack_batch
from lit_robust.functional.backdoor import (
    check_tau,
    check_value_range,
    perturb_inputs,
    perturbation_from_sign_sum,
    sign_sum,
)
from lit_robust.mixin import RobustMixin, require_mixin, split_loss_output
from lit_robust.selection import distributed

__all__ = ["AdversarialTrigger", "input_gradient"]

FilterIn = Literal["both", "inner", "outer"]


class AdversarialTrigger(Callback):
    r"""Adversarial training against backdoors: train on ``x + c``, ``c`` a bounded perturbation shared by the batch.

    ``c`` is the perturbation that most increases the loss of the samples the noisy-label filter trusts (the
    thesis's meta-algorithm: PRL-AT, SPL-AT, Bootstrap-AT).

    Before every training step (thesis Alg. 6):

    1. **inner maximisation** — one FGSM step on a perturbation shared by the whole batch
       (:func:`lit_robust.functional.backdoor.trigger_perturbation`, eq. 5.5):
       :math:`c = \frac{\tau}{|K|}\sum_{i \in K} \operatorname{sign}\nabla_{x_i}\ell_i`, with :math:`\ell_i`
       the module's ``per_sample_loss`` at the clean inputs and :math:`K` the samples that the module's
       active batch selectors (e.g. :class:`~lit_robust.BatchFilter` ``"prl"``/``"spl"``) keep, previewed
       without counting; :math:`\|c\|_\infty \le \tau`;
    2. the batch's inputs are replaced by :math:`\operatorname{clip}(x + c)` into ``value_range``;
    3. **outer minimisation** — the module's usual training step on the perturbed batch, through the same
       filter (:meth:`~lit_robust.RobustMixin.reduce_loss`).

    The filter is whatever the module has: add ``BatchFilter("prl", ε)`` for PRL-AT, ``BatchFilter("spl", ε)``
    for SPL-AT, train with the Bootstrap loss (e.g. ``ImageClassifier(loss="bootstrap_soft")``) for
    Bootstrap-AT, or nothing for plain adversarial training (AT). ``filter_in`` is the thesis's ablation
    (Tables 5.6–5.7): ``"both"`` (default) uses the filter in both steps, ``"inner"`` only to pick :math:`K`
    (the outer step averages over every sample), ``"outer"`` only in the outer step (:math:`K` = the whole
    batch; with ``"inner"`` the filter drops nothing from the loss, so its epoch records count every sample seen and
    none dropped, and its report ranks the inner step's scores, every row kept). A
    loss-based method such as Bootstrap is part of ``per_sample_loss`` and so acts in both steps
    whatever ``filter_in`` says.

    The inner step costs one extra forward and one backward to the inputs (:func:`input_gradient`: no parameter
    gradient is computed; in train mode it does update BatchNorm running statistics once more). The batch must be
    ``(index, input, target[, is_corrupted])`` with a tensor input; a list batch (PyTorch's default collate)
    gets its input replaced, a tuple batch's input tensor is pointed at the perturbed values (its old values, which
    may be the data set's own, are not written into). Validation, test and prediction see
    clean inputs. The perturbation is recomputed for every batch, so the callback holds no state to checkpoint.

    Args:
        tau: :math:`\tau \ge 0`, the :math:`\ell_\infty` bound of ``c`` in the inputs' own scale (the thesis uses
            0.05 on [0, 1] pixels, i.e. ``0.05 / 0.3081`` for MNIST normalised by its std). ``0`` disables it.
        value_range: ``(low, high)`` of valid inputs, two numbers with ``low < high``; perturbed inputs are clipped
            into it and the first batch of every epoch is checked to lie in it. ``"datamodule"`` (default) takes the
            datamodule's ``value_range`` (e.g. :class:`lit_robust.BackdoorMNISTDataModule`'s), read at every fit's
            setup (a reused callback follows each fit's datamodule); ``None`` = no clipping.
        filter_in: ``"both"``, ``"inner"`` or ``"outer"``.
        scope: ``"local"`` (default): each DDP rank's ``c`` comes from its own batch, as the paper did per GPU;
            ``"global"``: the two sums of eq. 5.5 (signs and kept count) are added over the ranks, so every rank
            applies the one ``c`` of the union batch — with a ``BatchFilter(scope="global")`` the same ``c`` as one
            process (the filter keeps a padding repeat of the DistributedSampler once; with ``filter_in="outer"``
            every rank's samples count, repeats included). In one process both are the same.

    Attributes:
        last_perturbation: ``c`` of the latest training batch (detached), for inspection and tests.
        clip_range: the ``(low, high)`` the current or latest fit clips into (``value_range`` resolved at setup;
            ``None``: no clipping, or ``"datamodule"`` before the first fit).
    """

    def __init__(self, tau: float, value_range: tuple[float, float] | str | None = "datamodule",
                 filter_in: FilterIn = "both", scope: Literal["local", "global"] = "local") -> None:
        super().__init__()
        self.tau = check_tau(tau)
        if not _from_datamodule(value_range):
            value_range = _check_range(value_range)
        if filter_in not in ("both", "inner", "outer"):
            raise ValueError(f"`filter_in` must be 'both', 'inner' or 'outer', got {filter_in!r}.")
        if scope not in ("local", "global"):
            raise ValueError(f"`scope` must be 'local' or 'global', got {scope!r}.")
        self.value_range = value_range  # as given: "datamodule" is read again at every fit's setup
        self.filter_in = filter_in
        self.scope = scope
        self.last_perturbation: Tensor | None = None
        self.clip_range: tuple[float, float] | None = None if _from_datamodule(value_range) else value_range
        self._checked_epoch: int | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        # per fit: a reused instance clipped a second datamodule's inputs into the first one's range, and skipped the
        # second fit's epoch-0 range check (the first fit had checked its epoch 0)
        self._checked_epoch = None
        if _from_datamodule(self.value_range):
            vr = getattr(getattr(trainer, "datamodule", None), "value_range", None)
            if vr is None:
                raise ValueError("`AdversarialTrigger(value_range='datamodule')` needs a datamodule with a `value_range` "
                                 "(e.g. lit_robust.BackdoorMNISTDataModule); pass `value_range=(low, high)`, or None "
                                 "for no clipping.")
            self.clip_range = _check_range(vr)
        else:
            self.clip_range = _check_range(self.value_range)  # as set now (an attribute changed between fits too)
        if self.clip_range is not None and self.tau >= self.clip_range[1] - self.clip_range[0]:
            # tau=100 on normalised MNIST trained to 18 % clean accuracy without a word (a newcomer's)
            lo, hi = self.clip_range
            rank_zero_warn(f"AdversarialTrigger: `tau`={self.tau:g} is at least the width of the inputs' value range "
                           f"({lo:g}, {hi:g}), {hi - lo:g}: the trigger may set any input to any value in it. Give "
                           "tau in the inputs' units (e.g. 0.05 of a (0, 1) range, not 0.05 * 255).")
        module = require_mixin("AdversarialTrigger", pl_module)
        if not pl_module.automatic_optimization:
            raise TypeError(f"`AdversarialTrigger` perturbs the batch of the module's own training step and needs "
                            f"automatic optimisation; `{type(pl_module).__name__}` optimises manually (e.g. "
                            "CoTeaching, DCGAN).")
        for selector in module.batch_selectors:
            if getattr(selector, "rule", None) == "prl_g":
                raise ValueError("`AdversarialTrigger` works with loss-based filters ('prl', 'spl', Bootstrap); "
                                 "`BatchFilter('prl_g')` records the training step's own forward and cannot rank "
                                 "the inner step's batch.")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and isinstance(pl_module, RobustMixin):
            pl_module.selectors_paused = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning calls no `teardown` after a fit that raised: a step that raised with the selectors paused
        # (`filter_in="inner"`) left them paused, and a later BatchFilter fit of the module filtered nothing
        if isinstance(pl_module, RobustMixin):
            pl_module.selectors_paused = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        module: RobustMixin = pl_module  # type: ignore[assignment]
        ib = unpack_batch(batch, owner="AdversarialTrigger")
        x = ib.input
        if not isinstance(x, Tensor) or not x.is_floating_point():
            got = f"a tensor of dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"`AdversarialTrigger` perturbs a floating-point input tensor, got {got}.")
        if self.clip_range is not None and self._checked_epoch != trainer.current_epoch:
            check_value_range(x, self.clip_range, name="training inputs")
            self._checked_epoch = trainer.current_epoch
        module.selectors_paused = False
        c = self.perturbation(module, batch)
        self.last_perturbation = c.detach()
        x_adv = perturb_inputs(x.detach(), c, self.clip_range)
        if isinstance(batch, list):
            batch[1] = x_adv
        else:
            # the tuple's tensor is given the perturbed values' storage, not written into: a loader yielding slices of
            # its stored tensors (`X[i:i + B]`) had the trigger written into the data set, adding up over the epochs
            # (0.09 from the data after 5 epochs at tau 0.05, a newcomer's)
            with torch.no_grad():
                x.set_(x_adv.to(dtype=x.dtype))
        module.selectors_paused = self.filter_in == "inner"

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        pl_module.selectors_paused = False  # type: ignore[attr-defined]

    def perturbation(self, module: RobustMixin, batch: Any) -> Tensor:
        """``c`` for one batch (step 1): input gradients of the module's per-sample loss at the clean inputs,
        signs averaged over the samples the filter keeps (all of them with ``filter_in="outer"``)."""
        x = unpack_batch(batch).input
        if self.tau == 0.0:
            return torch.zeros_like(x[0])
        with torch.enable_grad():
            x_var = x.detach().clone().requires_grad_(True)
            probe = list(batch)
            probe[1] = x_var
            losses, outputs = split_loss_output(module.per_sample_loss(probe))
            if self.filter_in == "outer":
                keep = torch.ones_like(losses, dtype=torch.bool)
            else:
                detached = outputs.detach() if isinstance(outputs, Tensor) else outputs
                keep = module.batch_keep_mask(losses.detach(), probe, detached, record=False)
            if bool(keep.any()):
                # each sample's loss depends on its own input only, so one backward gives every per-sample gradient
                grads = input_gradient(losses[keep].sum(), x_var)
            else:
                grads = torch.zeros_like(x_var)
        signs, count = sign_sum(grads, keep)
        if self.scope == "global":  # a collective: every rank reaches it once per step
            both = distributed.all_reduce_sum(torch.cat([signs.flatten(), count.reshape(1).to(signs.dtype)]))
            signs, count = both[:-1].reshape(signs.shape), both[-1]
        return perturbation_from_sign_sum(signs, count, self.tau)


# oneDNN (PyTorch's default CPU convolution) pads the input channels of a convolution's backward-data pass to a
# block of 16, so the input gradient of a layer reading 1-channel images costs ~16x its useful work (measured:
# the 1 -> 16 channel 5x5 layer of `cnn2`, batch 100: 10 ms, the layer's forward 1 ms); PyTorch's native kernel
# does not pad. Measured on this project's CPU, an AMD EPYC with AVX-512 (benchmarks/results/
# adversarial_trigger_profile.md): native 0.2-0.9x oneDNN's time at 1-4 input channels per group, mixed at 8,
# 2-3x slower at 16-32.
NATIVE_INPUT_GRAD_MAX_CHANNELS = 4


def _few_channel_cpu_convolutions(root: Any) -> list[Any]:
    """The convolution nodes of the autograd graph under ``root`` whose input gradient oneDNN would pad: on the
    CPU, float32, not transposed, at most :data:`NATIVE_INPUT_GRAD_MAX_CHANNELS` input channels per group."""
    found, seen, stack = [], set(), [root]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "ConvolutionBackward0":
            weight = getattr(node, "_saved_weight", None)
            if (isinstance(weight, Tensor) and weight.device.type == "cpu" and weight.dtype == torch.float32
                    and weight.dim() >= 3 and weight.shape[1] <= NATIVE_INPUT_GRAD_MAX_CHANNELS
                    and not getattr(node, "_saved_transposed", True)):
                found.append(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return found


def input_gradient(total: Tensor, inputs: Tensor) -> Tensor:
    """``d total / d inputs`` in one backward pass that computes no parameter gradient.

    ``torch.autograd.grad`` with ``inputs`` only runs the graph's paths to ``inputs`` and asks each layer for the
    gradient of its input alone (the weight and bias gradients of a plain backward are skipped). On the CPU the
    input gradients of float32 convolutions with at most :data:`NATIVE_INPUT_GRAD_MAX_CHANNELS` input channels per
    group — the first layer of an image model — are computed by PyTorch's native kernel instead of oneDNN's, which
    pads those channels to 16 (oneDNN is switched off only while those graph nodes run, by node hooks, and restored
    after). Other layers, other devices and dtypes run as in a plain ``torch.autograd.grad``. The two kernels sum in
    different orders: the gradients agree to float32 rounding, not bit for bit.
    """
    nodes = _few_channel_cpu_convolutions(total.grad_fn) if torch.backends.mkldnn.enabled else []
    if not nodes:
        return torch.autograd.grad(total, inputs)[0]

    def native(_grad_outputs: Any) -> None:
        torch.backends.mkldnn.enabled = False

    def restore(_grad_inputs: Any, _grad_outputs: Any) -> None:
        torch.backends.mkldnn.enabled = True

    handles = [h for node in nodes for h in (node.register_prehook(native), node.register_hook(restore))]
    try:
        return torch.autograd.grad(total, inputs)[0]
    finally:
        torch.backends.mkldnn.enabled = True
        for h in handles:
            h.remove()


def _from_datamodule(value_range: Any) -> bool:
    return isinstance(value_range, str) and value_range == "datamodule"


def _check_range(value_range: Any) -> tuple[float, float] | None:
    """``(low, high)`` as two floats with ``low < high`` (infinite bounds allowed: a one-sided range), or ``None``."""
    if value_range is None:
        return None
    pair = None
    if not isinstance(value_range, (str, bytes)):  # a string is iterable: "01" was read as (0.0, 1.0)
        try:
            items = [real_scalar(v) for v in value_range]
        except TypeError:
            items = []
        if len(items) == 2 and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            pair = float(items[0]), float(items[1])
    if pair is None:
        raise ValueError(f"`value_range` must be (low, high), 'datamodule' or None, got {value_range!r} (a "
                         f"{type(value_range).__name__}): (low, high) is two numbers, e.g. (0.0, 1.0).")
    if not pair[0] < pair[1]:
        raise ValueError(f"`value_range` must be (low, high) with low < high, got {value_range!r}.")
    return pair
