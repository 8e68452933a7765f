r"""Per-sample scores of the per-batch filters (PRL(L), SPL, PRL(G)) as pure tensor functions.

A per-batch filter ranks the samples of a minibatch by a score and averages the loss over the ones
ranked first (see :mod:`lit_robust.selection.rules`); the rules differ only in the score:

* **PRL(L)** (Liu et al., *Provable robust learning for corrupted supervision*, Alg. 3; thesis Alg. 4):
  the norm of the loss-layer gradient :math:`\|\partial \ell_i / \partial f_i\|_2` with respect to the
  model's output :math:`f_i` (:func:`prl_l_scores`). It needs the outputs only — no backward through
  the network.
* **SPL** (self-paced learning, Kumar et al. 2010): the loss :math:`\ell_i` itself (:func:`spl_scores`).
* **PRL(G)** (Alg. 2; thesis Alg. 3): the norm of the full per-sample gradient
  :math:`\|\nabla_\theta \ell_i\|_2` (:func:`prl_g_scores`, :class:`GradNormRecorder`), computed exactly
  from each layer's input activations and output gradients without forming per-sample gradients of
  the whole network ("ghost norms"): after an extra backward (:meth:`GradNormRecorder.compute`), or
  inside the training loss's own backward, which then also forms the kept samples' gradient from the
  same tensors (book-keeping, Bu et al. 2023; :meth:`GradNormRecorder.filtered_mean`).

Nothing here imports Lightning.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "LossLayer",
    "NormMode",
    "prl_l_scores",
    "spl_scores",
    "loss_layer_scores",
    "prl_g_scores",
    "GradNormRecorder",
    "check_per_sample_gradients",
]

LossLayer = Literal["ce", "mse"]
NormMode = Literal["auto", "ghost", "per_layer"]

# `torch.autograd.grad(..., inputs=[GradientEdge, ...])` (torch >= 2.4): the book-keeping backward asks autograd
# for the layers' output gradients only, so it never computes the layers' weight gradients
_EDGE_GRAD = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 4)
if _EDGE_GRAD:
    from torch.autograd.graph import GradientEdge


# ---------------------------------------------------------------------------------------------------------
# PRL(L) and SPL
# ---------------------------------------------------------------------------------------------------------
def prl_l_scores(outputs: Tensor, targets: Tensor,
                 loss: LossLayer | Callable[[Tensor, Tensor], Tensor] = "ce") -> Tensor:
    r"""PRL(L) score: the loss-layer gradient norm :math:`\|\partial \ell_i / \partial f_i\|_2` per sample.

    The conventions (each the exact gradient of the per-sample loss named):

    * ``"ce"`` — :math:`\ell_i = -\sum_c y_{ic} \log \operatorname{softmax}(f_i)_c`
      (``F.cross_entropy(f, y, reduction="none")``) with ``outputs`` the logits ``[B, C]`` and ``targets``
      class indices ``[B]`` or class probabilities ``[B, C]``:

      .. math:: \frac{\partial \ell_i}{\partial f_i} = \operatorname{softmax}(f_i) \textstyle\sum_c y_{ic} - y_i,
                \qquad \text{i.e. } \|\operatorname{softmax}(f_i) - \operatorname{onehot}(y_i)\|_2
                \text{ for class indices.}

    * ``"mse"`` — :math:`\ell_i = \frac1q \sum_{j=1}^{q} (\hat y_{ij} - y_{ij})^2`, the mean over the
      :math:`q` output elements of one sample (``F.mse_loss(f, y, reduction="none").flatten(1).mean(1)``,
      as :class:`~lit_robust.LinearRegressor` does); ``outputs`` and ``targets`` hold ``q`` elements per
      sample in any shape ``[B, ...]``:

      .. math:: \frac{\partial \ell_i}{\partial \hat y_i} = \frac{2}{q} (\hat y_i - y_i),
                \qquad \text{score} = \frac{2}{q} \|\hat y_i - y_i\|_2 .

      The constant does not change the ranking; with one output it is :math:`2 |\hat y_i - y_i|`, a
      monotone function of the loss, so PRL(L) and SPL select alike (prl_paper §4).

    * a callable ``loss(outputs, targets) -> losses [B]`` — any other per-sample loss: the gradient is
      taken by :func:`torch.autograd.grad` with respect to a detached copy of ``outputs`` only (never
      through the network). The loss must not mix samples.

    Args:
        outputs: the loss layer's input (logits or predictions), batch first; not modified.
        targets: the (possibly corrupted) supervision: a tensor, or for a callable ``loss`` whatever it takes (a dict
            or tuple of several targets).
        loss: ``"ce"``, ``"mse"`` or a callable as above.

    Returns:
        A detached float tensor ``[B]`` of non-negative scores (lower = more trusted).

    >>> prl_l_scores(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))   # ||(0.5, -0.5)||
    tensor([0.7071])
    >>> prl_l_scores(torch.tensor([[1.0], [4.0]]), torch.tensor([[1.0], [2.0]]), "mse")
    tensor([0., 4.])
    """
    if callable(loss) and not isinstance(outputs, Tensor) and _float_parts(outputs) is not None:
        return _autograd_loss_layer_norm(outputs, targets, loss)  # a multi-task model's dict or tuple of outputs
    if not isinstance(outputs, Tensor) or outputs.ndim == 0:
        got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
        raise ValueError(f"`outputs` must be a tensor with the batch in dimension 0, got {got}.")
    out = outputs.detach()
    if callable(loss):  # it takes the targets as they come (a multi-task model's dict of targets)
        return _autograd_loss_layer_norm(out, targets, loss)
    if not isinstance(targets, Tensor):
        raise ValueError(f"`targets` must be a tensor for loss={loss!r}, got {type(targets).__name__}; for targets of "
                         "several parts (a dict or tuple) pass a callable `loss(outputs, targets) -> [B]` that picks "
                         "its part.")
    if loss == "ce":
        return _ce_grad_norm(out, targets)
    if loss == "mse":
        return _mse_grad_norm(out, targets)
    raise ValueError(f"`loss` must be 'ce', 'mse' or a callable `loss(outputs, targets) -> [B]`, got {loss!r}.")


def _float(t: Tensor) -> Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _ce_grad_norm(logits: Tensor, targets: Tensor) -> Tensor:
    if logits.ndim != 2:
        raise ValueError(f"`loss='ce'` expects logits of shape [batch, classes], got {tuple(logits.shape)}; for other "
                         "layouts pass a callable loss.")
    b, c = logits.shape
    if c < 2:  # a one-class softmax is constant: every score 0, the filter would drop by index (a regressor's output)
        raise ValueError(f"`loss='ce'` expects logits of at least 2 classes, got shape {tuple(logits.shape)}; for a "
                         "regression output pass `loss='mse'`.")
    p = torch.softmax(_float(logits), dim=1)
    if targets.is_floating_point() and targets.shape == logits.shape:  # class probabilities (soft labels)
        y = targets.to(device=p.device, dtype=p.dtype)
        # one read of the device: regression targets of the outputs' width are no probabilities (an auditor's
        # `loss: ce` on a 10-target regression trained on meaningless scores without a word)
        if b:
            negative, unnormalised = (torch.stack([(y < 0).any(), ((y.sum(1) - 1).abs() > 1e-3).any()])).tolist()
            if negative:
                raise ValueError(f"`loss='ce'` reads float `targets` of the logits' shape {tuple(logits.shape)} as "
                                 "class probabilities (soft labels), but they hold negative values; for a regression "
                                 "output pass `loss='mse'`.")
            if unnormalised:  # weights that need not sum to 1 are cross-entropy's too: said, not refused
                # one text for every batch, so that Python's default filter says it once (a reviewer's fit printed it
                # per batch shape)
                warnings.warn("`loss='ce'` reads float `targets` of the logits' shape as class probabilities (soft "
                              "labels), but some rows do not sum to 1: if they are regression targets, pass "
                              "`loss='mse'`; multi-label (multi-hot) targets need a loss of their own, a callable "
                              "`loss(outputs, targets) -> [B]` (e.g. binary cross-entropy summed over the labels).",
                              UserWarning, stacklevel=2)
        return _soft_ce_grad_norm(p, y)
    if targets.is_floating_point() or targets.dtype == torch.bool or targets.shape != (b,):
        raise ValueError(f"`loss='ce'` expects `targets` as class indices of shape [{b}] or probabilities of shape "
                         f"[{b}, {c}], got dtype {targets.dtype} and shape {tuple(targets.shape)}.")
    t = targets.to(device=p.device, dtype=torch.long)
    # one read of the device per call (each read waits for the GPU): the range check was two, min and max, in
    # every PRL(L) training step; the extremes are read only for the message
    if b and bool(((t < 0) | (t >= c)).any()):
        # a label of -100 (`ignore_index`) or -1 (semi-labelled data) has no class to take the gradient towards
        unlabelled = (" A negative label marks a sample without one (`ignore_index=-100`, -1), which has no PRL(L) "
                      "score: leave such samples out of the filtered training set, or filter with 'spl' or ITLM, "
                      "which keep them." if int(t.min()) < 0 else "")
        raise ValueError(f"`targets` must be class indices in [0, {c - 1}], got values in "
                         f"[{int(t.min())}, {int(t.max())}].{unlabelled}")
    # ||p - e_y||^2 = sum_{c != y} p_c^2 + (1 - p_y)^2 with 1 - p_y summed from the other classes: the shorter
    # ||p||^2 - 2 p_y + 1 cancelled to 0 in float32 once p_y > 0.9999 (a 12-logit lead), and a memorised batch then
    # tied at 0 and was trimmed by index
    others = p.scatter(1, t[:, None], 0.0)
    return _norm_with_last(others, others.sum(1))


def _norm_with_last(v: Tensor, last: Tensor) -> Tensor:
    """``sqrt(||v_i||^2 + last_i^2)`` per row for ``0 <= v_ic <= last_i`` (no overflow, no underflow)."""
    # divided by `last` first: the squares of probabilities below 1e-19 (a 44-logit lead) are float32 denormals
    scale = last.clamp_min(torch.finfo(last.dtype).tiny)
    return last * ((v / scale[:, None]).square().sum(1) + 1.0).sqrt()


def _soft_ce_grad_norm(p: Tensor, y: Tensor) -> Tensor:
    """``||p_i sum_c y_ic - y_i||`` per row, without the cancellation of ``p_a S - y_a`` at the likeliest class."""
    total = y.sum(1)
    g = p * total[:, None] - y
    # only the likeliest class a can have p_a near 1: there p_a S - y_a = sum_{c != a} y_c - S sum_{c != a} p_c,
    # both sums of the other classes (a one-hot float target of a memorised sample scored 0, as for class indices)
    a = p.argmax(1, keepdim=True)
    g_a = y.scatter(1, a, 0.0).sum(1) - total * p.scatter(1, a, 0.0).sum(1)
    g = g.scatter(1, a, g_a[:, None])
    scale = g.abs().amax(1).clamp_min(torch.finfo(g.dtype).tiny)  # scaled: no underflow of tiny entries' squares
    return (g / scale[:, None]).norm(dim=1) * scale


def _mse_grad_norm(pred: Tensor, targets: Tensor) -> Tensor:
    b = pred.shape[0]
    y = targets.detach()
    if y.ndim == 0 or y.shape[0] != b or y.numel() != pred.numel():
        raise ValueError(f"`loss='mse'` needs `targets` with the same number of elements per sample as `outputs`, "
                         f"{b} rows of {pred.numel() // b if b else 0} (e.g. shape {tuple(pred.shape)}, as `outputs`), "
                         f"got shape {tuple(y.shape)}.")
    q = math.prod(pred.shape[1:])  # not reshape(b, -1): an empty batch has no -1 to infer
    diff = _float(pred).reshape(b, q) - y.to(device=pred.device, dtype=_float(pred).dtype).reshape(b, q)
    q = diff.shape[1]
    return (2.0 / q) * diff.norm(dim=1) if q else diff.new_zeros(b)


def _float_parts(outputs: Any) -> list[tuple[Any, Tensor]] | None:
    """``(key or position, tensor)`` of the floating batch-first tensors of a dict, list or tuple of several heads'
    outputs (all of one batch size), else ``None``; other parts (an integer tensor, ``None``) are not among them."""
    items = list(outputs.items()) if isinstance(outputs, dict) else list(enumerate(outputs)) \
        if isinstance(outputs, (list, tuple)) else []
    parts = [(k, v) for k, v in items if isinstance(v, Tensor) and v.ndim >= 1 and v.is_floating_point()]
    return parts if parts and len({v.shape[0] for _, v in parts}) == 1 else None


def _rebuilt(outputs: Any, replaced: dict[Any, Tensor]) -> Any:
    """``outputs`` with the parts at the keys of ``replaced`` swapped in, of the same type (a namedtuple too)."""
    if isinstance(outputs, dict):
        new = {k: replaced.get(k, v) for k, v in outputs.items()}
        try:  # a dict subclass (an OrderedDict, Hugging Face's ModelOutput) keeps its type and attributes
            return new if type(outputs) is dict else type(outputs)(new)
        except Exception:
            return new
    values = [replaced.get(i, v) for i, v in enumerate(outputs)]
    if hasattr(outputs, "_fields"):
        return type(outputs)(*values)
    return type(outputs)(values) if isinstance(outputs, tuple) else values


def _autograd_loss_layer_norm(outputs: Any, targets: Any, loss: Callable[[Any, Any], Tensor]) -> Tensor:
    """``||d loss_i / d outputs_i||`` by autograd on detached copies of the outputs: one tensor, or a dict / list /
    tuple of several heads' (the norm then spans their floating parts: ``sqrt(sum over heads of |grad_i|^2)``)."""
    if isinstance(outputs, Tensor):
        o: Any = outputs.detach().clone().requires_grad_(True)
        leaves = [o]
    else:
        copies = {k: v.detach().clone().requires_grad_(True) for k, v in _float_parts(outputs) or []}
        leaves, o = list(copies.values()), _rebuilt(outputs, copies)
    b = leaves[0].shape[0]
    with torch.enable_grad():
        losses = loss(o, targets)
        if not isinstance(losses, Tensor) or losses.shape != (b,):
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(f"the callable `loss` must return one loss per sample (shape [{b}]), got {got}.")
        if not losses.requires_grad:  # autograd's own error named no argument of ours
            raise ValueError(f"the callable `loss` must be differentiable with respect to `outputs` (PRL(L) scores "
                             f"are the norms of its gradient), but the losses of {getattr(loss, '__name__', loss)!s} "
                             "do not require grad: e.g. an accuracy, or a loss computed from `outputs.detach()` or "
                             "`argmax`.")
        grads = torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
    if isinstance(outputs, Tensor):  # one tensor: its gradient's norm, as before several were taken
        (g,) = grads
        return o.new_zeros(b).detach() if g is None else _float(g).reshape(b, math.prod(g.shape[1:])).norm(dim=1)
    device = leaves[0].device
    squares = [_float(g).reshape(b, math.prod(g.shape[1:])).square().sum(1).to(device) for g in grads if g is not None]
    if not squares:
        return leaves[0].new_zeros(b).float().detach()
    return torch.stack(squares).sum(0).sqrt()


def spl_scores(losses: Tensor) -> Tensor:
    """SPL score: the per-sample loss itself, detached (Kumar et al. 2010; prl_paper §4).

    >>> spl_scores(torch.tensor([0.3, 2.0], requires_grad=True))
    tensor([0.3000, 2.0000])
    """
    if not isinstance(losses, Tensor) or losses.ndim != 1:
        got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
        raise ValueError(f"`losses` must be a 1-D tensor with one loss per sample, got {got}.")
    return losses.detach()


def infer_loss_layer(outputs: Tensor, targets: Any) -> LossLayer:
    """The loss layer PRL(L) assumes when none is given (pure): ``"ce"`` for integer class labels and for class
    probabilities -- floating ``[B, C]`` targets shaped like the ``[B, C]`` outputs (``C >= 2``), each row >= 0 and
    summing to 1 (one-hot, label-smoothed, mixup's mixed labels) -- and ``"mse"`` for other floating targets
    (regression). A soft-label user's one-hot float targets were read as a regression: the filter dropped mostly
    clean samples (24 % of its drops corrupted for 30 % noise) and test accuracy fell from 0.912 to 0.768. Pass
    ``loss="mse"`` for a regression whose targets happen to be such rows (e.g. proportions). Rows of 0s and 1s of
    the outputs' shape that do not all sum to 1 are read as a regression with a warning that names multi-label tags
    and the callable they need: a multi-label user's filter dropped corrupted samples at their base rate, without a
    word (a batch whose rows each hold one tag still reads as class probabilities).

    >>> infer_loss_layer(torch.zeros(2, 3), torch.tensor([[0.0, 1.0, 0.0], [0.5, 0.5, 0.0]]))
    'ce'
    >>> infer_loss_layer(torch.zeros(2, 1), torch.tensor([[0.3], [2.0]]))
    'mse'
    """
    if not isinstance(targets, Tensor) or not targets.is_floating_point():
        return "ce"
    if (isinstance(outputs, Tensor) and outputs.ndim == 2 and targets.shape == outputs.shape
            and outputs.shape[1] >= 2 and targets.numel()):
        t = targets.detach()
        if bool((t >= 0).all()) and float((t.sum(1) - 1).abs().max()) <= 1e-3:
            return "ce"
        if bool(((t == 0) | (t == 1)).all()):
            # not refused: 0/1 indicators or small counts are regression targets too (a reviewer's Poisson counts
            # read so in 31 % of first batches)
            warnings.warn(f"`rule='prl'` infers `loss='mse'` from float targets of 0s and 1s shaped like the outputs "
                          f"{tuple(outputs.shape)}, with rows that do not sum to 1 (read at the fit's first batch). If "
                          "they are multi-label tags, MSE on logits ranks the samples about at random: pass a callable "
                          "`loss(outputs, targets) -> [B]`, e.g. `lambda o, y: F.binary_cross_entropy_with_logits(o, "
                          "y, reduction='none').sum(1)`; if they are regression targets, pass `loss='mse'`.",
                          UserWarning, stacklevel=2)
    return "mse"


def fit_loss_layer(owner: Any, rule: str, loss: Any, outputs: Any, targets: Any) -> Any:
    """The loss layer a PRL(L) owner passes on: ``loss`` when given; else :func:`infer_loss_layer` decided once per
    fit, at the first batch with tensor outputs, and kept in ``owner._inferred_loss`` (reset to ``None`` at each
    fit's setup). Deciding per batch read the targets' values in every training step (a host sync on a GPU: a
    reviewer counted them) and could switch between cross-entropy and MSE from batch to batch (multi-label rows)."""
    if loss is not None or rule != "prl":
        return loss
    if getattr(owner, "_inferred_loss", None) is None and isinstance(outputs, Tensor):
        owner._inferred_loss = infer_loss_layer(outputs, targets)
    return getattr(owner, "_inferred_loss", None)


def loss_layer_scores(rule: Literal["prl", "spl"], losses: Tensor, outputs: Any, targets: Any,
                      loss: LossLayer | Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """The score of a loss-layer rule from one training step's by-products (no extra backward).

    ``"spl"``: :func:`spl_scores` of ``losses``. ``"prl"``: :func:`prl_l_scores` of ``outputs`` (the loss
    layer's input, e.g. logits) and ``targets``, with ``loss=None`` inferred from the targets
    (:func:`infer_loss_layer`: integer labels or class probabilities → ``"ce"``, other floating point → ``"mse"``).
    """
    if rule == "spl":
        return spl_scores(losses)
    if rule != "prl":
        raise ValueError(f"`rule` must be 'prl' or 'spl', got {rule!r}.")
    if callable(loss) and _float_parts(outputs) is not None:
        return prl_l_scores(outputs, targets, loss)  # several heads' outputs: the callable takes them all
    if not isinstance(outputs, Tensor):
        several = (" PRL measures the gradient of one loss with respect to its input: for several heads (e.g. class "
                   "logits and an auxiliary regression) pass a callable `loss(outputs, targets) -> [B]` taking the "
                   "dict or tuple of outputs (the norm is over all of them), or return the main head's outputs only "
                   "and carry an auxiliary target in the input, e.g. samples `((x, aux), label)` (a multi-task "
                   "newcomer's tuple of outputs)."
                   if isinstance(outputs, (tuple, list, dict)) else
                   " In a `training_step` of your own, pass them on: `self.reduce_loss(losses, batch, outputs)` (a "
                   "release check followed a hint that left them out)." if outputs is None else "")
        raise ValueError("`rule='prl'` needs the loss layer's input: make `per_sample_loss` return "
                         f"`(losses, outputs)` (e.g. the logits), got outputs of type {type(outputs).__name__}.{several}")
    if loss is None:
        if not isinstance(targets, Tensor):
            raise ValueError(f"`rule='prl'` infers its loss layer from tensor targets, got {type(targets).__name__}: "
                             "for targets of several parts (a dict or tuple) pass a callable `loss(outputs, targets) "
                             "-> [B]` that picks its part.")
        loss = infer_loss_layer(outputs, targets)
        if loss == "ce" and outputs.ndim != 2:
            # a regression user's integer targets made the inferred loss cross-entropy; the message named a `loss='ce'`
            # they never wrote
            raise ValueError(f"`rule='prl'` inferred `loss='ce'` from integer targets, which needs logits of shape "
                             f"[batch, classes], but the outputs have shape {tuple(outputs.shape)}: for a regression "
                             "pass `loss='mse'` (or make the targets float).")
    return prl_l_scores(outputs, targets, loss)


# ---------------------------------------------------------------------------------------------------------
# PRL(G): exact per-sample gradient norms
# ---------------------------------------------------------------------------------------------------------
_BN_FIX = ("Per-sample gradients are undefined for BatchNorm in training mode (its batch statistics mix the "
           "samples). Replace it by GroupNorm (e.g. `nn.GroupNorm(8, channels)`) or freeze it: call `.eval()` on "
           "the BatchNorm layers (and `requires_grad_(False)` if their affine parameters should not train) "
           "before fitting.")


_BN_NO_STATS_FIX = ("Per-sample gradients are undefined for it: built with `track_running_stats=False` it "
                    "normalises with the batch's statistics in eval mode too, so they mix the samples and `.eval()` "
                    "does not help. "
                    "Replace it by GroupNorm (e.g. `nn.GroupNorm(8, channels)`) or LayerNorm, or build it with "
                    "`track_running_stats=True` and call `.eval()` on it once its running statistics are trained.")


def _check_batch_norm(name: str, m: nn.Module) -> None:
    """Raise ``ValueError`` if ``m`` is a BatchNorm layer whose forward uses the batch's statistics."""
    if not isinstance(m, nn.modules.batchnorm._BatchNorm):
        return
    label = name or type(m).__name__
    if m.training:
        raise ValueError(f"`rule='prl_g'` cannot use layer `{label}` ({type(m).__name__} in training mode). {_BN_FIX}")
    # torch's own rule: without running statistics BatchNorm normalises with the batch's in eval mode too (a
    # reviewer's scores were silently wrong, and BatchNorm1d on [B, C] failed inside vmap)
    if m.running_mean is None and m.running_var is None:
        raise ValueError(f"`rule='prl_g'` cannot use layer `{label}` ({type(m).__name__} with "
                         f"`track_running_stats=False`). {_BN_NO_STATS_FIX}")


def check_per_sample_gradients(module: nn.Module) -> None:
    """Raise ``ValueError`` if a BatchNorm layer of ``module`` normalises with the batch's statistics (in training
    mode, or built with ``track_running_stats=False``): per-sample gradients are then undefined."""
    for name, m in module.named_modules():
        _check_batch_norm(name, m)


@dataclass
class _Call:
    """One forward call of a hooked layer: its inputs and the outputs the loss may depend on."""

    args: tuple
    kwargs: dict
    outs: list[tuple[Tensor, int, Any, int]]  # (output, its version at forward time, grad_fn, output_nr)
    positions: list[int]  # where the recorded outputs sit among the layer's flattened outputs
    grads: list[Tensor | None] = field(default_factory=list)
    # the autograd nodes of its inputs that require grad, and the ids of such inputs that are leaves
    in_nodes: list[Any] = field(default_factory=list)
    in_leaves: list[int] = field(default_factory=list)


def _is_plain(module: nn.Module, cls: type) -> bool:
    return isinstance(module, cls) and type(module).forward is cls.forward and (
        cls is not nn.Conv2d or type(module)._conv_forward is nn.Conv2d._conv_forward)


class GradNormRecorder:
    r"""Exact per-sample gradient norms :math:`\|\nabla_\theta \ell_i\|_2`, from one extra backward
    (:meth:`compute`) or from the training loss's own backward (:meth:`filtered_mean`, which also writes the
    kept samples' gradient into ``.grad``).

    While attached, forward hooks on every submodule that owns trainable parameters record each call's
    input activations and outputs. :meth:`compute` then takes **one** ``torch.autograd.grad`` of
    :math:`\sum_i \ell_i` with respect to those outputs (``retain_graph=True``, so the training step's own
    backward still works; parameter ``.grad`` is untouched). Because no layer mixes samples,
    :math:`\delta_i = \partial \sum_j \ell_j / \partial z_i = \partial \ell_i / \partial z_i`, and the
    per-sample gradient of a layer follows from its input :math:`a_i` and :math:`\delta_i`:

    * ``nn.Linear`` with inputs ``[B, p]``: :math:`\|g_i\|^2 = \|a_i\|^2 \|\delta_i\|^2` (+ :math:`\|\delta_i\|^2`
      for the bias); with inputs ``[B, T, p]`` (sequences; every extra dimension, and repeated calls of
      the layer, count as positions :math:`t`) the Gram ("ghost") form
      :math:`\|g_i\|^2 = \langle A_i A_i^\top, \Delta_i \Delta_i^\top \rangle_F` with :math:`A_i \in
      \mathbb{R}^{T\times p}, \Delta_i \in \mathbb{R}^{T\times q}` (bias: :math:`\|\sum_t \delta_{it}\|^2`);
    * ``nn.Conv1d`` / ``nn.Conv2d`` (any stride, padding, padding mode, dilation, groups, bias; Conv1d as a
      Conv2d of height 1): the same with :math:`A_i`
      the unfolded input patches, per group (the per-layer form comes from one grouped convolution
      backward with the batch folded into the groups, without unfolding);
    * any other layer with its own parameters (LayerNorm, GroupNorm, eval-mode BatchNorm with running statistics,
      Embedding, custom modules, ...): ``torch.func.vmap`` of ``torch.func.grad`` of
      :math:`\langle \text{layer}(a_i), \delta_i\rangle` over the layer's own parameters.

    The total is :math:`\sqrt{\sum_\text{layers} \|g_i\|^2}`. For Linear/Conv with :math:`T > 1`
    positions, ``mode="auto"`` uses the Gram form when it takes fewer multiply-adds,
    :math:`T^2 (p + q) \le T p q` (per group; it then also takes less memory, :math:`B\,T^2` instead of
    :math:`B\,p\,q`), and otherwise the layer's per-sample gradient :math:`\Delta_i^\top A_i`;
    ``"ghost"`` / ``"per_layer"`` force one form. The full per-sample gradient of the
    network is never formed.

    Requirements (checked where possible): the batch is dimension 0 of every hooked layer's input; no
    BatchNorm that uses the batch's statistics, i.e. in training mode or built with ``track_running_stats=False``
    (:func:`check_per_sample_gradients`); every trainable parameter is used
    through its own module's forward (not, e.g., ``F.linear(x, other.weight)``) and is not shared
    between modules; layers handled by ``torch.func`` are deterministic (no dropout inside them).

    Usage::

        with GradNormRecorder(model) as rec:
            losses = F.cross_entropy(model(x), y, reduction="none")
        scores = rec.compute(losses)          # [B]; then losses[keep].mean().backward() as usual
    """

    def __init__(self, module: nn.Module, mode: NormMode = "auto") -> None:
        if mode not in ("auto", "ghost", "per_layer"):
            raise ValueError(f"`mode` must be 'auto', 'ghost' or 'per_layer', got {mode!r}.")
        if not isinstance(module, nn.Module):
            raise TypeError(f"`module` must be a torch.nn.Module, got {type(module).__name__}.")
        self.module = module
        self.mode = mode
        self._handles: list[RemovableHandle] = []
        self._calls: dict[str, list[_Call]] = {}
        self._recording = False
        self._layers: dict[str, nn.Module] = {}
        self._batch_norms: list[tuple[str, nn.Module]] | None = None  # cached while attached
        self._param_names: dict[int, tuple[str, nn.Parameter]] | None = None  # cached while attached
        self._compiled_seen = False  # a recorded output came out of a torch.compile'd graph since the last clear
        self.last_scores: Tensor | None = None  # of the last :meth:`filtered_mean` step, once its backward ended
        self.last_mask: Tensor | None = None

    # -- hooks ---------------------------------------------------------------------------------------------
    def attach(self) -> GradNormRecorder:
        """Register the forward hooks (idempotent) and start recording."""
        if self._handles:
            self._recording = True
            return self
        self._batch_norms = self._param_names = None  # the module may have changed since the last attach
        owners: dict[int, str] = {}
        for name, m in self.module.named_modules():
            for pname, p in m.named_parameters(recurse=False):
                if id(p) in owners and owners[id(p)] != name:
                    raise ValueError(f"`rule='prl_g'` does not support parameters shared between modules: "
                                     f"`{owners[id(p)]}` and `{name}` hold the same tensor (`{pname}`).")
                owners[id(p)] = name
        self._layers = {name: m for name, m in self.module.named_modules()
                        if any(p.requires_grad for p in m.parameters(recurse=False))}
        for name, m in self._layers.items():
            self._handles.append(m.register_forward_hook(self._hook(name), with_kwargs=True))
        self._recording = True
        return self

    def detach(self) -> None:
        """Remove the hooks and drop every recorded activation."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self._recording = False
        self._batch_norms = self._param_names = None
        self.clear()

    def pause(self) -> None:
        """Stop recording (hooks stay registered) and drop what was recorded."""
        self._recording = False
        self.clear()

    def clear(self) -> None:
        """Forget the recorded calls (the activations they hold) without removing the hooks."""
        self._calls = {}
        self._compiled_seen = False

    def __enter__(self) -> GradNormRecorder:
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        # keep what was recorded inside the block, stop recording further forwards
        for h in self._handles:
            h.remove()
        self._handles = []
        self._recording = False

    def _hook(self, name: str) -> Callable:
        # Opaque to torch.compile: in a compiled module the hook splits the graph at the layer, so the
        # recorded input and output are real tensors whose gradient the backward passes through.
        @torch.compiler.disable
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if not self._recording or not torch.is_grad_enabled():
                return
            # the common case (one tensor out) without the pytree walk
            flat = [output] if isinstance(output, Tensor) else torch.utils._pytree.tree_flatten(output)[0]
            positions = [i for i, o in enumerate(flat)
                         if isinstance(o, Tensor) and o.requires_grad and o.grad_fn is not None]
            if not positions:
                return
            outs = [(flat[i], flat[i]._version, flat[i].grad_fn, flat[i].output_nr) for i in positions]
            if not self._compiled_seen:
                self._compiled_seen = any("Compiled" in type(o[2]).__name__ for o in outs)
            detached = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
            call = _Call(detached, dict(kwargs), outs, positions)
            leaves = args if not kwargs and all(isinstance(a, Tensor) for a in args) else \
                torch.utils._pytree.tree_leaves((args, kwargs))
            for t in leaves:
                if isinstance(t, Tensor) and t.requires_grad:
                    if t.grad_fn is None:
                        call.in_leaves.append(id(t))
                    else:
                        call.in_nodes.append(t.grad_fn)
            self._calls.setdefault(name, []).append(call)

        return hook

    # -- norms ---------------------------------------------------------------------------------------------
    def compute(self, losses: Tensor) -> Tensor:
        """Per-sample gradient norms ``[B]`` of ``losses`` (shape ``[B]``) over every trainable parameter.

        Uses the calls recorded since the last :meth:`clear` and clears them afterwards.
        """
        try:
            return self._compute(losses)
        finally:
            self.clear()

    def _compute(self, losses: Tensor) -> Tensor:
        if not isinstance(losses, Tensor) or losses.ndim != 1:
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(f"`losses` must be a 1-D tensor with one loss per sample, got {got}.")
        check_per_sample_gradients(self.module)
        b = losses.shape[0]
        if not losses.requires_grad:
            raise ValueError("`losses` must require grad (computed with autograd enabled) to take per-sample "
                             "gradient norms.")
        for name, calls in self._calls.items():
            for call in calls:
                lead = next((a for a in call.args if isinstance(a, Tensor)), None)
                if lead is not None and (lead.ndim == 0 or lead.shape[0] != b):
                    raise ValueError(f"layer `{name}` saw an input of shape {tuple(lead.shape)} but the batch has {b} "
                                     "losses; `rule='prl_g'` needs the batch in dimension 0 of every layer's input.")
        # one backward: gradients w.r.t. every recorded output (pre-in-place values via node pre-hooks when an
        # in-place op such as ReLU(inplace=True) overwrote an output), plus unrecorded trainable parameters to
        # detect parameters used outside their module's forward
        inputs: list[Tensor] = []
        slots: list[tuple[_Call, int, str]] = []  # where each returned gradient goes
        handles: list[RemovableHandle] = []
        captured: dict[tuple[int, int], Tensor] = {}
        for name, calls in self._calls.items():
            for call in calls:
                call.grads = [None] * len(call.outs)
                for j, (z, version, node, nr) in enumerate(call.outs):
                    if z._version == version and z.grad_fn is node:
                        inputs.append(z)
                        slots.append((call, j, "direct"))
                    else:
                        key = (id(call), j)
                        handles.append(node.register_prehook(_capture(captured, key, nr)))
                        p = next(q for q in self._layers[name].parameters(recurse=False) if q.requires_grad)
                        inputs.append(p)
                        slots.append((call, j, "prehook"))
        recorded = set(self._calls)
        loose = [(n, p) for n, p in self.module.named_parameters()
                 if p.requires_grad and n.rpartition(".")[0] not in recorded]
        inputs.extend(p for _, p in loose)
        total = losses.new_zeros(b, dtype=torch.float64 if losses.dtype == torch.float64 else torch.float32)
        if not inputs:
            return total
        try:
            grads = torch.autograd.grad(losses.sum(), inputs, retain_graph=True, allow_unused=True)
        finally:
            for h in handles:
                h.remove()
        for (call, j, how), g in zip(slots, grads):
            call.grads[j] = g if how == "direct" else captured.get((id(call), j))
        used = [n for (n, _), g in zip(loose, grads[len(slots):]) if g is not None]
        if used:
            raise ValueError(f"`rule='prl_g'`: parameters {used[:5]} get gradients but their module's forward was not "
                             "called (e.g. a raw nn.Parameter used in `per_sample_loss`, or `F.linear(x, layer.weight)`); "
                             "their per-sample gradients cannot be recorded. Use them through a module's forward.")
        for book in self._books(self._calls, b):
            sq = book.sq()
            if sq is not None:
                total = total + sq.to(total.dtype)
        return total.clamp_min(0.0).sqrt()

    def _books(self, calls_by_layer: dict[str, list[_Call]], b: int) -> list[_LayerBook]:
        """One book per recorded layer: Linear/Conv1d/Conv2d by their closed forms, any other layer by torch.func."""
        books: list[_LayerBook] = []
        for name, calls in calls_by_layer.items():
            calls = [c for c in calls if any(g is not None for g in c.grads)]
            if not calls:
                continue
            layer = self._layers[name]
            if _is_plain(layer, nn.Linear):
                books.append(_LinearBook(layer, calls, b, self.mode))
            elif _is_plain(layer, nn.Conv2d) or _is_plain(layer, nn.Conv1d):
                books.append(_ConvBook(layer, calls, b, self.mode))
            else:
                books.append(_FuncBook(self._func_per_sample(name, layer, calls, b)))
        return books

    def _func_per_sample(self, name: str, layer: nn.Module, calls: list[_Call], b: int
                         ) -> list[tuple[nn.Parameter, Tensor]]:
        """Per-sample gradients ``[B, *shape]`` of ``layer``'s own trainable parameters, by ``torch.func``."""
        from torch.func import functional_call, grad, vmap

        own = {n: p for n, p in layer.named_parameters(recurse=False) if p.requires_grad}
        params = {n: p.detach() for n, p in own.items()}
        acc: dict[str, Tensor] = {}
        was_recording = self._recording
        self._recording = False  # the functional calls below run the layer's forward (and its hooks) again
        try:
            for call in calls:
                # outputs the loss does not use are left out (an LSTM's unused h_n/c_n, batch in dimension 1, made vmap
                # fail); a used one must have the batch in dimension 0, as vmap maps it
                used = [(pos, z, g) for pos, (z, *_), g in zip(call.positions, call.outs, call.grads) if g is not None]
                for _, z, _ in used:
                    if z.ndim == 0 or z.shape[0] != b:
                        raise ValueError(
                            f"`rule='prl_g'`: layer `{name}` ({type(layer).__name__}) returns an output of shape "
                            f"{tuple(z.shape)} that the loss uses, but the batch has {b} samples: PRL(G) needs the "
                            f"batch in dimension 0 of every used output of a layer with parameters.{_rnn_hint(layer)}")
                deltas = [g for _, _, g in used]
                positions = [pos for pos, _, _ in used]
                batched = [isinstance(a, Tensor) and a.ndim > 0 and a.shape[0] == b for a in call.args]
                kwargs = call.kwargs

                # `inner` is called (through vmap) inside this same iteration, so the loop variables it
                # reads (layer, batched, kwargs, positions) cannot go stale
                def inner(p: dict[str, Tensor], args: tuple, ds: list[Tensor]) -> Tensor:
                    full = tuple(a.unsqueeze(0) if bt else a for a, bt in zip(args, batched))  # noqa: B023
                    flat, _ = torch.utils._pytree.tree_flatten(functional_call(layer, p, full, kwargs))  # noqa: B023
                    return sum((flat[i].squeeze(0) * d).sum() for i, d in zip(positions, ds))  # noqa: B023

                in_dims = (None, tuple(0 if bt else None for bt in batched), [0] * len(deltas))
                try:
                    per_sample = vmap(grad(inner), in_dims=in_dims, randomness="error")(params, call.args, deltas)
                except RuntimeError as err:
                    if "random" in str(err).lower():
                        raise ValueError(f"`rule='prl_g'`: layer `{name}` ({type(layer).__name__}) draws random numbers "
                                         "in its forward (e.g. dropout inside it); its per-sample gradients cannot be "
                                         "recomputed exactly. Move the randomness into a separate module.") from err
                    # e.g. a GRU/LSTM, which torch.func cannot batch: name the layer rather than leave a bare vmap error
                    raise ValueError(f"`rule='prl_g'`: the per-sample gradients of layer `{name}` "
                                     f"({type(layer).__name__}) cannot be computed with torch.func.vmap: "
                                     f"{err}.{_rnn_hint(layer)}") from err
                for n, g in per_sample.items():
                    acc[n] = acc[n] + g if n in acc else g
        finally:
            self._recording = was_recording
        return [(own[n], g) for n, g in acc.items()]

    # -- one backward (book-keeping) -------------------------------------------------------------------------
    def filtered_mean(self, losses: Tensor, select: Callable[[Tensor], Tensor], keep_count: int,
                      prior_keep: Tensor | None = None,
                      on_selected: Callable[[Tensor, Tensor], None] | None = None) -> Tensor:
        r"""The loss of a PRL(G) step whose selection and filtered gradient come from its **one** backward.

        Returns a scalar to back-propagate (its value: the mean of the batch's finite losses, since the
        selection is only known after the backward). Its backward sends :math:`c / k` to every sample
        (:math:`k` = ``keep_count``, the expected number kept; :math:`c` whatever multiplies the returned
        loss downstream: gradient accumulation's :math:`1/N`, AMP's loss scale) in an inner
        ``torch.autograd.grad`` that stops at the recorded layers' outputs: it yields each layer's output
        gradient :math:`\delta_i` and autograd computes no weight gradient of these layers (torch >= 2.4, a module
        not compiled by ``torch.compile``; otherwise the backward runs through the whole network, node pre-hooks take
        :math:`\delta_i` on the way, and step 3 corrects the full batch's gradient it left in ``.grad``). When
        the backward ends (``queue_callback``):

        1. the per-sample gradient norms :math:`\|\nabla_\theta \ell_i\|` from :math:`(a_i, \delta_i)`
           (as :meth:`compute`), divided by the weight :math:`v_i = \partial L / \partial \ell_i` each loss
           received (so a loss scale or accumulation factor does not change them);
        2. ``mask = select(scores)`` (``& prior_keep``), :math:`t_i = [i \text{ kept}] / |\text{mask}|`;
        3. each parameter's ``.grad`` gets :math:`\sum_i w_i \nabla_\theta \ell_i` with :math:`w_i = c\,t_i`
           (the full-backward path: :math:`w_i = c\,(t_i - 1/k)`, non-zero only for the dropped samples when
           ``keep_count`` was right), formed from the same :math:`(a_i, \delta_i)` — for Linear
           :math:`\sum_i w_i \delta_i a_i^\top`, for Conv the sum of the per-sample gradients formed for the norms
           (or the weight gradient of the weighted samples under the Gram form), for other layers the torch.func
           per-sample gradients;
        4. ``on_selected(scores, mask)``; :attr:`last_scores` / :attr:`last_mask` hold them.

        So ``.grad`` ends as if ``masked_mean(losses, mask) * c`` had been back-propagated (plus whatever
        else the backward carried, e.g. a penalty on the parameters, or — on the inner-backward path — a term
        computed from the activations, such as a logit penalty, which back-propagates unfiltered: the inner
        backward keeps the graph for it). Requirements beyond :meth:`compute`'s: one backward through the
        returned loss; on the full-backward path (compiled module) the recorded layers reach the loss only
        through ``losses`` (a term computed from the activations would be filtered too). A sample whose loss is
        NaN/inf gets the score NaN (ranked last) and is never kept. Its gradient is left out of ``.grad`` when its
        backward is otherwise finite (a non-finite term of the loss itself), and on the inner-backward path also when
        the forward made it non-finite (a NaN input). On the full-backward path (torch < 2.4, or a compiled module)
        such a sample's zero weight still meets its non-finite activations, and 0 · NaN makes ``.grad`` NaN, as
        back-propagating ``masked_mean(losses, mask)`` would.
        """
        if not isinstance(losses, Tensor) or losses.ndim != 1:
            got = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(f"`losses` must be a 1-D tensor with one loss per sample, got {got}.")
        if not losses.requires_grad:
            raise ValueError("`losses` must require grad (computed with autograd enabled) to take per-sample "
                             "gradient norms.")
        self._check_batch_norms()
        b = losses.shape[0]
        calls, self._calls = self._calls, {}  # later forwards of this step are not part of this loss
        compiled, self._compiled_seen = self._compiled_seen, False
        self._check_batch(calls, b)
        pending = _Pending(self, calls, b, 1.0 / max(int(keep_count), 1), select, prior_keep, on_selected)
        if _EDGE_GRAD and not compiled:
            # the output gradients from an inner backward to the recorded outputs only (no weight gradients),
            # and the trainable parameters of layers whose forward did not run (they must get no gradient)
            for call in calls.values():
                for c in call:
                    c.grads = [None] * len(c.outs)
                    for j, (_, _, node, nr) in enumerate(c.outs):
                        pending.edges.append(GradientEdge(node, nr))
                        pending.slots.append((c, j))
            pending.touched.extend(self._stray_parameters(losses, calls))
            pending.losses = losses
            anchor = torch.zeros((), dtype=losses.dtype, device=losses.device, requires_grad=True)
            return _OneBackwardMean.apply(anchor, pending)
        # a compiled graph's backward cannot be entered twice (its buffers are donated), so there the outer
        # backward computes the full batch's gradient and the end of the backward corrects it
        for call in calls.values():
            for c in call:
                c.grads = [None] * len(c.outs)
                for j, (_, _, node, nr) in enumerate(c.outs):
                    pending.handles.append(node.register_prehook(_capture_into(c, j, nr)))
        # a trainable parameter of a layer whose forward did not run this step must not get a gradient
        for name, layer in self._layers.items():
            if name not in calls:
                for pname, p in layer.named_parameters(recurse=False):
                    if p.requires_grad:
                        full = f"{name}.{pname}" if name else pname
                        pending.handles.append(p.register_hook(_mark(pending.touched, full)))
        pending.handles.append(losses.register_hook(pending.take_loss_grad))
        return _OneBackwardMean.apply(losses, pending)

    def _stray_parameters(self, losses: Tensor, calls: dict[str, list[_Call]]) -> list[str]:
        """Trainable parameters the losses' graph reaches other than through a recorded layer call (a layer whose
        forward did not run, `F.linear(x, layer.weight)`, a raw parameter in the loss): the inner backward would
        leave them without their gradient. A walk of the graph from the losses that jumps from each recorded
        call's output node to its inputs' nodes."""
        boundary: dict[Any, list[Any]] = {}
        leaf_inputs: set[int] = set()
        for cs in calls.values():
            for c in cs:
                leaf_inputs.update(c.in_leaves)
                for _, _, node, _ in c.outs:
                    boundary.setdefault(node, []).extend(c.in_nodes)
        names = self._param_names
        if names is None or not self._handles:  # cached while attached (a parameter's id is its identity)
            names = {id(p): (n, p) for n, p in self.module.named_parameters()}
            self._param_names = names if self._handles else None
        # a trainable parameter passed to a layer as its input
        stray = [names[i][0] for i in leaf_inputs if i in names and names[i][1].requires_grad]
        seen: set[Any] = set()
        stack = [losses.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            if node in boundary:
                stack.extend(boundary[node])
                continue
            var = getattr(node, "variable", None)  # AccumulateGrad: a leaf
            if var is not None:
                if id(var) in names and var.requires_grad:
                    stray.append(names[id(var)][0])
                continue
            stack.extend(n for n, _ in node.next_functions)
        return stray

    def _check_batch_norms(self) -> None:
        if not self._handles:  # not attached: the module may change between calls
            check_per_sample_gradients(self.module)
            return
        if self._batch_norms is None:
            self._batch_norms = [(name, m) for name, m in self.module.named_modules()
                                 if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for name, m in self._batch_norms:
            _check_batch_norm(name, m)

    def _check_batch(self, calls: dict[str, list[_Call]], b: int) -> None:
        for name, cs in calls.items():
            for call in cs:
                lead = next((a for a in call.args if isinstance(a, Tensor)), None)
                if lead is not None and (lead.ndim == 0 or lead.shape[0] != b):
                    raise ValueError(f"layer `{name}` saw an input of shape {tuple(lead.shape)} but the batch has {b} "
                                     "losses; `rule='prl_g'` needs the batch in dimension 0 of every layer's input.")


def _rnn_hint(layer: nn.Module) -> str:
    # torch.func cannot batch nn.LSTM/GRU/RNN (measured: a GRU read through its batch-first output sequence fails
    # inside torch), so reading `output` instead of `h_n` would not help
    if type(layer).__name__ == "ParametrizationList":
        # SpectralNorm(mode="normalize") + prl_g ended in torch.func's "please rewrite the function being transformed"
        # (a newcomer's): the power iteration writes its vectors in place during the forward
        return (" A parametrised weight (e.g. `SpectralNorm(mode='normalize')`, whose power iteration updates its "
                "vectors in place in the forward) cannot be differentiated per sample: use "
                "`SpectralNorm(mode='truncate')`, which works with PRL(G), or `rule='prl'`.")
    if not isinstance(layer, nn.RNNBase):
        return ""
    return (" Recurrent layers (nn.LSTM, nn.GRU, nn.RNN) are not supported by PRL(G): torch.func cannot batch their "
            "per-sample gradients. Use `rule='prl'` (PRL(L)) or `rule='spl'`, which need no per-sample gradients.")


def _capture(store: dict, key: tuple[int, int], output_nr: int) -> Callable:
    def prehook(grad_outputs: tuple) -> None:
        store[key] = grad_outputs[output_nr]

    return prehook


def _capture_into(call: _Call, j: int, output_nr: int) -> Callable:
    def prehook(grad_outputs: tuple) -> None:
        call.grads[j] = grad_outputs[output_nr]

    return prehook


def _mark(store: list[str], name: str) -> Callable:
    def hook(grad: Tensor) -> None:
        store.append(name)

    return hook


class _Pending:
    """The state of one book-keeping step between the forward and the end of its backward."""

    def __init__(self, recorder: GradNormRecorder, calls: dict[str, list[_Call]], b: int, c0: float,
                 select: Callable[[Tensor], Tensor], prior_keep: Tensor | None,
                 on_selected: Callable[[Tensor, Tensor], None] | None) -> None:
        self.recorder, self.calls, self.b, self.c0 = recorder, calls, b, c0
        self.select, self.prior_keep, self.on_selected = select, prior_keep, on_selected
        self.handles: list[RemovableHandle] = []
        self.touched: list[str] = []
        self.finite: Tensor | None = None
        self.upstream: Tensor | None = None  # c: d(backpropagated scalar) / d(returned loss)
        self.loss_grad: Tensor | None = None  # v_i: d(backpropagated scalar) / d(loss_i)
        self.started = False
        # the inner-backward path (no weight gradients from autograd): filled by `filtered_mean`
        self.losses: Tensor | None = None
        self.edges: list[Any] = []  # GradientEdge of each recorded output
        self.slots: list[tuple[_Call, int]] = []  # where each edge's gradient goes

    @property
    def inner(self) -> bool:
        return self.losses is not None

    def run_inner(self, v: Tensor) -> None:
        """The recorded outputs' gradients of ``sum_i v_i losses_i`` (one backward that stops at them: autograd
        prunes every weight gradient)."""
        inputs = self.edges
        if not inputs or self.touched:  # nothing recorded, or an error to raise when the backward ends
            return
        # retain_graph: the outer backward may still reach this graph by other paths (a term of the returned loss
        # that uses `losses` or the activations again), which then back-propagate as usual
        grads = torch.autograd.grad(self.losses, inputs, grad_outputs=v, retain_graph=True, allow_unused=True)
        for (call, j), g in zip(self.slots, grads):
            call.grads[j] = g

    def take_loss_grad(self, grad: Tensor) -> None:
        self.loss_grad = grad.detach()

    def finish(self) -> None:
        try:
            self._finish()
        finally:
            for h in self.handles:
                h.remove()
            self.handles = []
            self.calls = {}
            self.losses, self.edges, self.slots = None, [], []

    def _finish(self) -> None:
        rec = self.recorder
        if self.touched:
            raise ValueError(f"`rule='prl_g'`: parameters {sorted(set(self.touched))[:5]} get gradients but their "
                             "module's forward was not called, or not only through it (e.g. a raw nn.Parameter used in "
                             "`per_sample_loss`, or "
                             "`F.linear(x, layer.weight)`); their per-sample gradients cannot be recorded. Use them "
                             "through a module's forward. Under `torch.compile` this also happens when the module's "
                             "code was compiled earlier in this process without the recording hooks (TorchDynamo does "
                             "not guard on module hooks): call `torch._dynamo.reset()` before this fit.")
        b, finite = self.b, self.finite
        c = self.upstream.detach().reshape(()).to(torch.float64 if self.upstream.dtype == torch.float64
                                                   else torch.float32)
        dt = c.dtype
        v = (self.loss_grad if self.loss_grad is not None else (c * self.c0) * finite).to(dt).reshape(b)
        books = rec._books(self.calls, b)
        sq = None
        for book in books:
            part = book.sq()
            if part is not None:
                sq = _as(part, dt) if sq is None else sq + _as(part, dt)
        if sq is None:
            sq = torch.zeros(b, dtype=dt, device=v.device)
        usable = finite & (v != 0)
        all_usable = bool(usable.all())  # the common case: every loss finite and weighted; fewer ops below
        norms = sq.clamp_min(0.0).sqrt() / v.abs()
        scores = norms if all_usable else torch.where(usable, norms, torch.full_like(sq, float("nan")))
        mask = _as(self.select(scores), torch.bool)
        if self.prior_keep is not None:
            mask = mask & self.prior_keep.to(mask.device)
        kept = mask if all_usable else mask & finite
        k = max(int(kept.sum()), 1)
        if self.inner:
            # the inner path left no gradient of `losses` in `.grad`: add the kept samples' whole gradient,
            # w_i = c / (k v_i) for the kept (usable) samples
            idx = torch.nonzero(kept if all_usable else kept & usable).squeeze(1)
            ws = (c / k) / v.index_select(0, idx)
            w = None
        else:
            # the backward's full-batch gradient (c * c0 per finite sample) is corrected to the kept samples'
            t = kept.to(dt) * (1.0 / k)
            have = self.c0 * finite.to(dt)
            w = torch.where(usable, c * (t - have) / torch.where(usable, v, torch.ones_like(v)), torch.zeros_like(v))
            idx = torch.nonzero(w).squeeze(1)
            ws = w.index_select(0, idx)
        if idx.numel():
            # every sample's per-sample gradient is finite: a layer holding them all sums them with w directly
            # (zeros included) instead of copying the kept rows out first
            dense = None
            if any(book.wants_dense for book in books) and (all_usable or bool(finite.all())):
                dense = w if w is not None else torch.zeros(b, dtype=dt, device=v.device).index_copy_(0, idx, ws)
            for book in books:
                for param, delta in book.grads(ws, idx, dense):
                    if param.grad is None:
                        param.grad = _as(delta, param.dtype)
                    else:
                        param.grad.add_(_as(delta, param.grad.dtype))
        rec.last_scores, rec.last_mask = scores, mask
        if self.on_selected is not None:
            self.on_selected(scores, mask)


class _OneBackwardMean(torch.autograd.Function):
    """Value: the mean of the finite losses; backward: ``c / k`` to every finite loss, and the book-keeping
    step (:meth:`GradNormRecorder.filtered_mean`) queued to run when the backward ends."""

    @staticmethod
    def forward(ctx: Any, source: Tensor, pending: _Pending) -> Tensor:
        # source: the losses themselves (the outer backward runs through them), or, on the inner-backward path, a
        # scalar that only carries the autograd connection (the losses' graph is entered by `run_inner` alone)
        losses = pending.losses.detach() if pending.inner else source
        finite = torch.isfinite(losses)
        pending.finite = finite
        ctx.pending = pending
        return torch.where(finite, losses, torch.zeros_like(losses)).sum() / finite.sum().clamp(min=1)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None]:
        pending: _Pending = ctx.pending
        if pending.started:
            raise RuntimeError("`rule='prl_g'`: the filtered loss was back-propagated twice; its book-keeping "
                               "selection runs once per training step.")
        pending.started = True
        pending.upstream = grad_out.detach()
        torch.autograd.Variable._execution_engine.queue_callback(pending.finish)
        grad = (grad_out * pending.c0) * pending.finite.to(grad_out.dtype)
        if pending.inner:
            pending.run_inner(grad)
            return None, None
        return grad, None


_FEW_INPUT_CHANNELS = 3  # per-sample Conv weight gradients by a forward convolution up to this many input channels


def _use_ghost(mode: NormMode, positions: int, p: int, q: int) -> bool:
    if mode == "ghost":
        return True
    if mode == "per_layer":
        return False
    # multiply-adds per sample: Gram form T^2 (p + q), per-sample gradient T p q (its memory p q, the Gram's T^2)
    return positions * (p + q) <= p * q


def _sq_norms(per_sample: Tensor) -> Tensor:
    """``[B]``: each sample's squared norm (one pass, no squared copy of a large per-sample tensor)."""
    return torch.linalg.vector_norm(per_sample.reshape(per_sample.shape[0], -1), dim=1).square()


def _as(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t.to(dtype)`` without a dispatch when it already has it (the book-keeping step's many small tensors)."""
    return t if t.dtype == dtype else t.to(dtype)


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _weighted_sum(w: Tensor, per_sample: Tensor, shape: torch.Size) -> Tensor:
    """``sum_i w_i per_sample[i]`` reshaped to ``shape`` (one matrix-vector product)."""
    return (w.to(per_sample.dtype) @ per_sample.reshape(per_sample.shape[0], -1)).reshape(shape)


def _dense_or_indexed(w: Tensor, idx: Tensor, dense: Tensor | None, per_sample: Tensor, shape: torch.Size) -> Tensor:
    """``sum_j w[j] per_sample[idx[j]]``, over the whole batch with ``dense`` when it is given."""
    if dense is not None:
        return _weighted_sum(dense, per_sample, shape)
    return _weighted_sum(w, per_sample.index_select(0, idx), shape)


class _LayerBook:
    """What one layer's recorded calls give: per-sample squared gradient norms and weighted gradient sums."""

    wants_dense = True  # whether :meth:`grads` can use the whole batch's weights (asked once :meth:`sq` ran)

    def sq(self) -> Tensor | None:  # pragma: no cover - interface
        raise NotImplementedError

    def grads(self, w: Tensor, idx: Tensor, dense: Tensor | None = None
              ) -> list[tuple[nn.Parameter, Tensor]]:  # pragma: no cover
        """``sum_j w[j] * grad_theta loss_{idx[j]}`` for each of the layer's trainable parameters (``dense``: the
        same weights over the whole batch, zero elsewhere, given when every sample's gradient is finite)."""
        raise NotImplementedError


class _LinearBook(_LayerBook):
    r"""``nn.Linear``: :math:`g_i = \sum_t \delta_{it} a_{it}^\top`, with :math:`A_i \in \mathbb{R}^{T\times p}`
    the inputs at the :math:`T` positions (extra dimensions and repeated calls) and :math:`\Delta_i` the
    output gradients."""

    def __init__(self, layer: nn.Linear, calls: list[_Call], b: int, mode: NormMode) -> None:
        acts, deltas = [], []
        for call in calls:
            g = call.grads[0]
            if g is None:
                continue
            a = call.args[0] if call.args else call.kwargs["input"]
            acts.append(_float(a).reshape(b, -1, layer.in_features))
            deltas.append(_float(g).reshape(b, -1, layer.out_features))
        dt = torch.promote_types(acts[0].dtype, deltas[0].dtype)
        self.A, self.D = _as(_cat(acts, 1), dt), _as(_cat(deltas, 1), dt)  # [B, T, p], [B, T, q]
        self.layer, self.mode = layer, mode
        self.per_sample: Tensor | None = None  # [B, q, p] when the per-layer form was used

    @property
    def wants_dense(self) -> bool:  # type: ignore[override]
        return self.per_sample is not None

    def sq(self) -> Tensor:
        A, D, layer = self.A, self.D, self.layer
        t, p, q = A.shape[1], A.shape[2], D.shape[2]
        if t == 1:  # one position: ||g_i||^2 = ||delta_i||^2 (||a_i||^2 + 1 with a bias)
            d2 = torch.linalg.vector_norm(D.reshape(-1, q), dim=1).square()
            bias = layer.bias is not None and layer.bias.requires_grad
            if not layer.weight.requires_grad:
                return d2 if bias else torch.zeros_like(d2)
            a2 = torch.linalg.vector_norm(A.reshape(-1, p), dim=1).square()
            return d2 * (a2 + 1.0) if bias else d2 * a2
        sq = D.new_zeros(D.shape[0])
        if layer.weight.requires_grad:
            if _use_ghost(self.mode, t, p, q):
                sq = sq + (torch.bmm(A, A.transpose(1, 2)) * torch.bmm(D, D.transpose(1, 2))).sum((1, 2))
            else:
                self.per_sample = torch.bmm(D.transpose(1, 2), A)
                sq = sq + _sq_norms(self.per_sample)
        if layer.bias is not None and layer.bias.requires_grad:
            sq = sq + D.sum(1).pow(2).sum(1)
        return sq

    def grads(self, w: Tensor, idx: Tensor, dense: Tensor | None = None) -> list[tuple[nn.Parameter, Tensor]]:
        layer, out = self.layer, []
        w = _as(w, self.D.dtype)
        D = self.D.index_select(0, idx)  # index_select: a fraction of advanced indexing's cost on small batches
        if layer.weight.requires_grad:
            if self.per_sample is not None:
                dw = _dense_or_indexed(w, idx, dense, self.per_sample, layer.weight.shape)
            else:
                A = self.A.index_select(0, idx)
                dw = (D * w[:, None, None]).reshape(-1, D.shape[2]).t() @ A.reshape(-1, A.shape[2])
            out.append((layer.weight, dw))
        if layer.bias is not None and layer.bias.requires_grad:
            out.append((layer.bias, w @ (D[:, 0] if D.shape[1] == 1 else D.sum(1))))
        return out


class _ConvBook(_LayerBook):
    """``nn.Conv1d`` / ``nn.Conv2d`` (any stride, padding, padding mode, dilation, groups; Conv1d as a
    Conv2d of height 1): the inputs (padded as the layer pads them, or with ``pad`` left to the convolutions
    below when it is zero padding, the same on both sides), and the output gradients."""

    def __init__(self, layer: nn.Conv1d | nn.Conv2d, calls: list[_Call], b: int, mode: NormMode) -> None:
        one_d = isinstance(layer, nn.Conv1d)
        nd = 3 if one_d else 4
        self.kernel = (1, *layer.kernel_size) if one_d else tuple(layer.kernel_size)
        self.stride = (1, *layer.stride) if one_d else tuple(layer.stride)
        self.dilation = (1, *layer.dilation) if one_d else tuple(layer.dilation)
        # zero padding, the same on both sides: the convolutions below pad (no padded copy of the input)
        r = layer._reversed_padding_repeated_twice  # (left, right[, top, bottom])
        same = layer.padding_mode == "zeros" and r[0] == r[1] and (one_d or r[2] == r[3])
        self.pad = ((0, r[0]) if one_d else (r[2], r[0])) if same else (0, 0)
        padded, deltas = [], []
        for call in calls:
            d = call.grads[0]
            if d is None:
                continue
            a = _float(call.args[0] if call.args else call.kwargs["input"])
            if a.ndim != nd:
                raise ValueError(f"`rule='prl_g'` supports {type(layer).__name__} on batched inputs of {nd} dimensions, "
                                 f"got {tuple(a.shape)}.")
            if not same:
                a = F.pad(a, r, mode="constant" if layer.padding_mode == "zeros" else layer.padding_mode)
            d = _float(d)
            padded.append(a.unsqueeze(2) if one_d else a)
            deltas.append(d.unsqueeze(2) if one_d else d)
        dt = torch.promote_types(padded[0].dtype, deltas[0].dtype)
        self.padded, self.deltas = [a.to(dt) for a in padded], [d.to(dt) for d in deltas]
        self.layer, self.mode, self.b = layer, mode, b
        self.per_sample: Tensor | None = None  # [B, cout, cin/g, kh, kw] when the per-layer form was used
        self.per_sample_bias: Tensor | None = None  # [B, cout], once sq() ran

    def _weight_grad(self, a: Tensor, d: Tensor, groups: int) -> Tensor:
        cin, cout = a.shape[1], d.shape[1]
        return torch.nn.grad.conv2d_weight(a, (cout, cin // groups, *self.kernel), d, stride=self.stride, padding=self.pad,
                                           dilation=self.dilation, groups=groups)

    def sq(self) -> Tensor:
        layer, b = self.layer, self.b
        g_, cin, cout = layer.groups, layer.in_channels, layer.out_channels
        sq = self.deltas[0].new_zeros(b)
        if layer.weight.requires_grad:
            kh, kw = self.kernel
            positions = sum(d.shape[-2] * d.shape[-1] for d in self.deltas)
            p, q = cin // g_ * kh * kw, cout // g_
            if _use_ghost(self.mode, positions, p, q):
                # Gram form over the unfolded patches: <A_i^T A_i, D_i^T D_i>_F per group, summed over groups
                A = _cat([F.unfold(a, self.kernel, dilation=self.dilation, padding=self.pad, stride=self.stride)
                          .reshape(b, g_, p, -1) for a in self.padded], -1)
                D = _cat([d.reshape(b, g_, q, -1) for d in self.deltas], -1)
                sq = sq + (torch.einsum("bgpl,bgpm->bglm", A, A) * torch.einsum("bgql,bgqm->bglm", D, D)).sum((1, 2, 3))
            else:
                per_sample = None
                for a, d in zip(self.padded, self.deltas):
                    gw = self._per_sample_weight_grad(a, d)
                    per_sample = gw if per_sample is None else per_sample + gw
                self.per_sample = per_sample
                sq = sq + _sq_norms(per_sample)
        if layer.bias is not None and layer.bias.requires_grad:
            self.per_sample_bias = sum(d.sum((2, 3)) for d in self.deltas)  # [B, cout]
            sq = sq + self.per_sample_bias.pow(2).sum(1)
        return sq

    def _per_sample_weight_grad(self, a: Tensor, d: Tensor) -> Tensor:
        """``[B, cout, cin/groups, kh, kw]``: the per-sample weight gradients of one call."""
        layer, b = self.layer, self.b
        g_, cin, cout = layer.groups, layer.in_channels, layer.out_channels
        kh, kw = self.kernel
        if g_ == 1 and cin <= _FEW_INPUT_CHANNELS:
            # few input channels (a first layer): a forward convolution with the input channels as its batch and
            # each sample's output gradient as a kernel of its own group (the roles of stride and dilation swap)
            # measured faster on CPU than the grouped weight gradient below for cin = 1..3
            # ([cin, B*cout, >= kh, >= kw], cut to the kernel)
            out = F.conv2d(a.transpose(0, 1), d.reshape(b * cout, 1, *d.shape[2:]), stride=self.dilation,
                           dilation=self.stride, padding=self.pad, groups=b)[..., :kh, :kw]
            return out.reshape(cin, b, cout, kh, kw).permute(1, 2, 0, 3, 4)
        # one grouped convolution weight-gradient with the batch folded into the groups
        gw = self._weight_grad(a.reshape(1, b * cin, *a.shape[2:]), d.reshape(1, b * cout, *d.shape[2:]), b * g_)
        return gw.reshape(b, cout, cin // g_, kh, kw)

    def grads(self, w: Tensor, idx: Tensor, dense: Tensor | None = None) -> list[tuple[nn.Parameter, Tensor]]:
        layer, out = self.layer, []
        w = w.to(self.deltas[0].dtype)
        if layer.weight.requires_grad:
            if self.per_sample is not None:
                dw = _dense_or_indexed(w, idx, dense, self.per_sample, layer.weight.shape)
            else:
                deltas = [d.index_select(0, idx) * w[:, None, None, None] for d in self.deltas]
                dw = sum(self._weight_grad(a.index_select(0, idx), d, layer.groups) for a, d in zip(self.padded, deltas))
                dw = dw.reshape(layer.weight.shape)
            out.append((layer.weight, dw))
        if layer.bias is not None and layer.bias.requires_grad:
            per_sample_bias = self.per_sample_bias
            if per_sample_bias is None:
                per_sample_bias = sum(d.sum((2, 3)) for d in self.deltas)  # [B, cout]
            out.append((layer.bias, _dense_or_indexed(w, idx, dense, per_sample_bias, layer.bias.shape)))
        return out


class _FuncBook(_LayerBook):
    """Any other layer: its per-sample parameter gradients from ``torch.func`` (``[B, *shape]`` each)."""

    def __init__(self, per_sample: list[tuple[nn.Parameter, Tensor]]) -> None:
        self.per_sample = per_sample

    def sq(self) -> Tensor | None:
        if not self.per_sample:
            return None
        return sum(_sq_norms(_float(g)) for _, g in self.per_sample)

    def grads(self, w: Tensor, idx: Tensor, dense: Tensor | None = None) -> list[tuple[nn.Parameter, Tensor]]:
        return [(p, _dense_or_indexed(w, idx, dense, _float(g), p.shape)) for p, g in self.per_sample]


def prl_g_scores(module: nn.Module, compute_losses: Callable[[], Tensor], mode: NormMode = "auto"
                 ) -> tuple[Tensor, Tensor]:
    r"""PRL(G) score: exact per-sample gradient norms :math:`\|\nabla_\theta \ell_i\|_2`, and the losses.

    Runs ``compute_losses()`` (a forward through ``module`` returning per-sample losses ``[B]``) while
    a :class:`GradNormRecorder` records it, then takes one extra backward. The losses keep their graph,
    so the caller can still back-propagate a reduction of them.

    >>> net = nn.Linear(3, 1, bias=False)
    >>> x = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    >>> with torch.no_grad(): _ = net.weight.fill_(1.0)
    >>> scores, losses = prl_g_scores(net, lambda: net(x).squeeze(1))   # d(w.x)/dw = x
    >>> scores
    tensor([1., 2.])
    """
    rec = GradNormRecorder(module, mode)
    with rec:
        losses = compute_losses()
    return rec.compute(losses), losses
