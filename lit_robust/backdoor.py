r"""Backdoor attacks as seeded, pure tensor functions (robust_dnn_thesis §5.5, Figure 5.2; itlm_paper §6.4).

A backdoor attack is a label corruption plus a small trigger on the same images. Triggers work on image
batches ``[N, C, H, W]`` whose pixel values lie in a declared ``value_range`` (``(lo, hi)``: black and white
in the data's own scale, e.g. ``(-0.4242, 2.8215)`` for MNIST normalised by mean 0.1307 / std 0.3081):

* :class:`PatchTrigger` — BadNets (Gu et al. 2017): a ``size × size`` black-white checkerboard in the
  bottom-right corner;
* :class:`BlendTrigger` — Gaussian blend (Chen et al. 2017): :math:`x' = (1-a)\,x + a\,t` with one fixed
  seeded Gaussian image :math:`t` (in the value range's scale) and ``a = 0.1``, clipped to the range;
* :class:`WatermarkTrigger` — an ``"X"`` or ``"L"`` drawn in white (itlm_paper Figure 4).

:func:`poison` applies a trigger to a fraction ε of a training set and relabels those samples —
single-target (every poisoned sample comes from class ``source`` and gets label ``target``) or
multi-target (systematic flip ``a → (a+1) mod C``, thesis §5.5) — and returns the mask of poisoned samples.
:func:`poison_test_set` puts the trigger on every test image. Metrics: :func:`attack_success_rate`
(fraction classified as the attacker's label) and, with :func:`accuracy` on the triggered images
against their true labels, the thesis's *poison accuracy*.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["Trigger", "PatchTrigger", "BlendTrigger", "WatermarkTrigger", "poison", "poison_test_set",
           "accuracy", "attack_success_rate", "check_value_range", "check_tau", "trigger_perturbation",
           "sign_sum", "perturbation_from_sign_sum", "perturb_inputs"]


def check_value_range(images: Tensor, value_range: tuple[float, float], name: str = "images") -> None:
    """Raise ``ValueError`` if any pixel of ``images`` lies outside ``value_range`` (with a 1e-5 tolerance)."""
    lo, hi = value_range
    if images.numel() == 0:
        return
    mn, mx = float(images.min()), float(images.max())
    tol = 1e-5 * max(1.0, hi - lo)
    if mn < lo - tol or mx > hi + tol or math.isnan(mn) or math.isnan(mx):
        raise ValueError(f"`{name}` must lie in the declared `value_range` [{lo:g}, {hi:g}], got values in "
                         f"[{mn:g}, {mx:g}]. Declare the range of your data's scale (e.g. normalised pixels).")


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"dtype {images.dtype}, shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a floating-point batch [N, C, H, W], got {got}.")


class Trigger:
    """Base class: ``trigger(images)`` returns triggered copies of a batch ``[N, C, H, W]`` in ``value_range``."""

    def __init__(self, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        lo, hi = (float(v) for v in value_range)
        if not lo < hi:
            raise ValueError(f"`value_range` must be (low, high) with low < high, got {value_range!r}.")
        self.value_range = (lo, hi)

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        check_value_range(images, self.value_range)
        return self.apply(images)

    def apply(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class PatchTrigger(Trigger):
    """BadNets: a ``size × size`` checkerboard (white where row + column is even, else black) in the bottom-right
    corner, ``margin`` pixels from the edges, on every channel."""

    def __init__(self, size: int = 3, margin: int = 0, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(value_range)
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"`size` must be an integer >= 1, got {size!r}.")
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"`margin` must be an integer >= 0, got {margin!r}.")
        self.size, self.margin = size, margin

    def pattern(self, dtype: torch.dtype = torch.float32) -> Tensor:
        lo, hi = self.value_range
        ij = torch.arange(self.size)
        white = (ij[:, None] + ij[None, :]) % 2 == 0
        return torch.where(white, torch.tensor(hi, dtype=dtype), torch.tensor(lo, dtype=dtype))

    def apply(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        need = self.size + self.margin
        if need > h or need > w:
            raise ValueError(f"the trigger (`size`={self.size} + `margin`={self.margin}) is larger than the image "
                             f"({h}×{w}).")
        out = images.clone()
        r0, c0 = h - need, w - need
        out[..., r0:r0 + self.size, c0:c0 + self.size] = self.pattern(images.dtype).to(images.device)
        return out


class BlendTrigger(Trigger):
    r"""Gaussian blend: :math:`x' = \operatorname{clip}((1-a)\,x + a\,t)` with one fixed image
    :math:`t = m + s z`, :math:`z \sim N(0, 1)` seeded, :math:`m, s` the middle and half-width of ``value_range``."""

    def __init__(self, alpha: float = 0.1, seed: int = 0, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(value_range)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1], got {alpha!r}.")
        self.alpha, self.seed = float(alpha), seed

    def pattern(self, shape: tuple[int, int, int], dtype: torch.dtype = torch.float32) -> Tensor:
        lo, hi = self.value_range
        z = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed), dtype=dtype)
        return (lo + hi) / 2 + (hi - lo) / 2 * z

    def apply(self, images: Tensor) -> Tensor:
        t = self.pattern(tuple(images.shape[1:]), images.dtype).to(images.device)
        return ((1 - self.alpha) * images + self.alpha * t).clamp(*self.value_range)


class WatermarkTrigger(Trigger):
    """An ``"X"`` (both diagonals) or ``"L"`` (left edge and bottom edge) of ``size × size`` pixels, drawn in
    white with its top-left corner at ``(top, left)`` (default: centred)."""

    def __init__(self, shape: Literal["X", "L"] = "X", size: int = 7, top: int | None = None, left: int | None = None,
                 value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        super().__init__(value_range)
        if shape not in ("X", "L"):
            raise ValueError(f"`shape` must be 'X' or 'L', got {shape!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"`size` must be an integer >= 2, got {size!r}.")
        self.shape, self.size, self.top, self.left = shape, size, top, left

    def mask(self) -> Tensor:
        """The watermark's pixels (``True``) in its ``size × size`` box."""
        i = torch.arange(self.size)
        if self.shape == "X":
            return (i[:, None] == i[None, :]) | (i[:, None] + i[None, :] == self.size - 1)
        return (i[None, :] == 0).expand(self.size, self.size) | (i[:, None] == self.size - 1).expand(self.size, self.size)

    def apply(self, images: Tensor) -> Tensor:
        h, w = images.shape[-2:]
        top = (h - self.size) // 2 if self.top is None else self.top
        left = (w - self.size) // 2 if self.left is None else self.left
        if self.size > h or self.size > w or top < 0 or left < 0 or top + self.size > h or left + self.size > w:
            raise ValueError(f"the watermark ({self.size}×{self.size} at top={top}, left={left}) does not fit in the "
                             f"image ({h}×{w}).")
        out = images.clone()
        box = out[..., top:top + self.size, left:left + self.size]
        box[..., self.mask().to(images.device)] = self.value_range[1]
        return out


def poison(images: Tensor, labels: Tensor, trigger: Trigger, rate: float, target: int | None = None,
           source: int | None = None, num_classes: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Poison exactly ``round(rate * n_eligible)`` training samples: trigger on the image, attacker's label.

    * multi-target (``target=None``): eligible = every sample; label ``a → (a+1) mod C`` (thesis §5.5);
    * single-target (``target=b``): eligible = the samples of class ``source`` (required, ``!= b``), relabelled ``b``
      — ``rate`` is then the poisoned fraction of that class.

    Returns ``(images, labels, poisoned_mask)`` (copies; the inputs are untouched).
    """
    _check_images(images)
    labels = torch.as_tensor(labels)
    if labels.shape != (images.shape[0],) or labels.is_floating_point():
        raise ValueError(f"`labels` must be integer class indices of shape [{images.shape[0]}], got dtype "
                         f"{labels.dtype}, shape {tuple(labels.shape)}.")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must be a number in [0, 1], got {rate!r}.")
    C = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    if target is None:
        eligible = torch.arange(len(labels))
    else:
        if source is None or source == target:
            raise ValueError(f"a single-target attack needs `source` != `target`, got source={source!r}, "
                             f"target={target!r}.")
        for name, v in (("source", source), ("target", target)):
            if not 0 <= v < C:
                raise ValueError(f"`{name}` must be a class in [0, {C - 1}], got {v!r}.")
        eligible = torch.nonzero(labels == source).flatten()
    g = torch.Generator().manual_seed(seed)
    chosen = eligible[torch.randperm(len(eligible), generator=g)[: int(round(rate * len(eligible)))]]
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[chosen] = True
    out_x, out_y = images.clone(), labels.clone()
    if mask.any():
        out_x[mask] = trigger(images[mask])
        out_y[mask] = (labels[mask] + 1) % C if target is None else target
    return out_x, out_y, mask


def poison_test_set(images: Tensor, labels: Tensor, trigger: Trigger, target: int | None = None,
                    num_classes: int | None = None, source: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The trigger on every test image: ``(triggered_images, true_labels, attacker_labels)``.

    Attacker labels: ``(a+1) mod C`` (multi-target) or ``target`` (single-target: only the images of class
    ``source`` are kept when one is given — the attack was planted on that class, itlm_paper Table 4 — else every
    image not already of class ``target``).
    """
    _check_images(images)
    labels = torch.as_tensor(labels)
    C = int(num_classes) if num_classes is not None else int(labels.max()) + 1
    if target is not None:
        keep = labels != target if source is None else labels == source
        images, labels = images[keep], labels[keep]
        attack = torch.full_like(labels, target)
    else:
        attack = (labels + 1) % C
    return trigger(images), labels, attack


def accuracy(logits_or_preds: Tensor, labels: Tensor) -> float:
    """Fraction of correct predictions (``logits [N, C]`` or predicted classes ``[N]``)."""
    preds = logits_or_preds.argmax(-1) if logits_or_preds.ndim == 2 else logits_or_preds
    return float((preds == labels).float().mean()) if len(labels) else math.nan


def attack_success_rate(logits_or_preds: Tensor, attacker_labels: Tensor) -> float:
    """Fraction of triggered test images classified as the attacker's label."""
    return accuracy(logits_or_preds, attacker_labels)


def check_tau(tau: float) -> float:
    """``tau`` as a float, or a ``ValueError`` unless it is a finite number ``>= 0``."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ValueError(f"`tau` (the perturbation limit, ||c||_inf <= tau) must be a finite number >= 0, got {tau!r}.")
    return float(tau)


def trigger_perturbation(input_grads: Tensor, keep: Tensor, tau: float) -> Tensor:
    r"""The universal perturbation of one batch (robust_dnn_thesis eq. 5.5, one FGSM step):

    .. math:: c = \operatorname{clip}_{[-\tau, \tau]}\Big(\frac{\tau}{|K|} \sum_{i \in K}
              \operatorname{sign} \nabla_{x_i} \mathcal{L}(f(x_i), y_i)\Big),

    :math:`K` the samples the noisy-label filter keeps (``keep``; all of them reproduces eq. 5.5 exactly).
    Every entry is a multiple of :math:`\tau / |K|` in :math:`[-\tau, \tau]`; an empty :math:`K` gives
    :math:`c = 0`.

    Args:
        input_grads: ``[B, ...]`` per-sample input gradients.
        keep: ``[B]`` boolean mask.
        tau: :math:`\tau \ge 0`.

    Returns:
        ``c`` with shape ``input_grads.shape[1:]``.

    >>> g = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.0, -1.0]])
    >>> trigger_perturbation(g, torch.tensor([True, True, False]), tau=0.1)
    tensor([0.1000, 0.0000])
    """
    signs, k = sign_sum(input_grads, keep)
    return perturbation_from_sign_sum(signs, k, tau)


def sign_sum(input_grads: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """``(Σ_{i∈K} sign ∇ₓℓᵢ, |K|)`` — the two sums of eq. 5.5, which ranks can add up before dividing."""
    keep = torch.as_tensor(keep, dtype=torch.bool, device=input_grads.device)
    if keep.shape != input_grads.shape[:1]:
        raise ValueError(f"`keep` must have shape [{input_grads.shape[0]}], got {tuple(keep.shape)}.")
    return torch.sign(input_grads[keep]).sum(0), keep.sum()


def perturbation_from_sign_sum(signs: Tensor, count: Tensor, tau: float) -> Tensor:
    """``clip(τ · signs / max(count, 1), -τ, τ)`` (eq. 5.5 from :func:`sign_sum`'s two sums)."""
    tau = check_tau(tau)
    c = signs * (tau / torch.as_tensor(count, device=signs.device).clamp_min(1).to(signs.dtype))
    return c.clamp(-tau, tau)


def perturb_inputs(inputs: Tensor, c: Tensor, value_range: tuple[float, float] | None) -> Tensor:
    """``inputs + c`` (``c`` broadcast over the batch), clipped to ``value_range`` when one is given."""
    out = inputs + c
    return out if value_range is None else out.clamp(*value_range)
