r"""Robust per-sample losses as pure tensor functions (no Lightning import)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_robust._checks import check_bool, check_has_values

__all__ = ["bootstrap_loss"]


def bootstrap_loss(logits: Tensor, targets: Tensor, beta: float = 0.95, kind: Literal["soft", "hard"] = "soft",
                   detach_prediction: bool = False) -> Tensor:
    r"""Bootstrapping loss (Reed et al., 2014; thesis Table 5.5): cross-entropy against a target that
    mixes the given label with the model's own prediction.

    .. math:: \tilde y_i = \beta\, y_i + (1 - \beta)\, \hat y_i, \qquad
              \ell_i = -\sum_c \tilde y_{ic} \log \operatorname{softmax}(f_i)_c,

    with :math:`\hat y_i = \operatorname{softmax}(f_i)` (``kind="soft"``) or
    :math:`\operatorname{onehot}(\arg\max_c f_{ic})` (``kind="hard"``). ``beta=1`` is plain cross-entropy.
    In the soft form the gradient also flows through :math:`\hat y_i` (Reed et al.'s formulation, an
    entropy regulariser); ``detach_prediction=True`` treats the prediction as a constant target instead.

    Args:
        logits: ``[B, C]``.
        targets: class indices ``[B]`` or class probabilities ``[B, C]`` (the possibly noisy labels).
        beta: :math:`\beta \in [0, 1]`, the weight of the given label (Reed et al.: 0.95 soft, 0.8 hard).
        kind: ``"soft"`` or ``"hard"``.
        detach_prediction: stop the gradient through :math:`\hat y_i`.

    Returns:
        Per-sample losses ``[B]`` (``reduction="none"``), ready for :meth:`RobustMixin.reduce_loss`.

    >>> logits, y = torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([1, 0])
    >>> torch.allclose(bootstrap_loss(logits, y, beta=1.0), F.cross_entropy(logits, y, reduction="none"))
    True
    >>> bootstrap_loss(logits, y, beta=0.8, kind="hard")   # sample 0: target 0.8 * [0, 1] + 0.2 * [1, 0]
    tensor([1.7269, 0.6931])
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
        raise ValueError(f"`beta` must be in [0, 1], got {beta!r}.")
    if kind not in ("soft", "hard"):
        raise ValueError(f"`kind` must be 'soft' or 'hard', got {kind!r}.")
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"`logits` must have shape [batch, classes], got {got}.")
    if not logits.is_floating_point():  # integer logits ended in torch's "log_softmax ... not implemented for 'Long'"
        raise ValueError(f"`logits` must be a floating-point tensor, got dtype {logits.dtype}.")
    check_has_values("logits", logits)
    if isinstance(targets, Tensor):
        check_has_values("targets", targets)
    # a string or None was taken as its truth value: "no" stopped the gradient
    check_bool("detach_prediction", detach_prediction)
    if not isinstance(targets, Tensor):
        raise ValueError(f"`targets` must be a tensor of class indices [batch] or probabilities [batch, classes], got "
                         f"{type(targets).__name__}.")
    b, c = logits.shape
    log_p = F.log_softmax(logits, dim=1)
    if targets.is_floating_point() and targets.shape == (b, c):
        y = targets.to(log_p.dtype)
    elif not targets.is_floating_point() and targets.dtype != torch.bool and targets.shape == (b,):
        if b and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise ValueError(f"`targets` must be class indices in [0, {c - 1}], got values in "
                             f"[{int(targets.min())}, {int(targets.max())}].")
        y = F.one_hot(targets.long(), c).to(log_p.dtype)
    else:
        raise ValueError(f"`targets` must be class indices of shape [{b}] or probabilities of shape [{b}, {c}], got "
                         f"dtype {targets.dtype} and shape {tuple(targets.shape)}.")
    if kind == "soft":
        pred = log_p.exp()
    else:
        pred = F.one_hot(logits.argmax(1), c).to(log_p.dtype)
    if detach_prediction:
        pred = pred.detach()
    target = beta * y + (1.0 - beta) * pred
    # 0 * log 0 counts as 0, as in cross-entropy: a masked class (logit -inf) made every loss NaN, beta=1 too; the
    # log is replaced rather than the product, so that the gradient through the target stays finite as well
    return -(target * torch.where(target == 0, torch.zeros_like(log_p), log_p)).sum(1)
