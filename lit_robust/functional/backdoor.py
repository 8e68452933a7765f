r"""Backdoor attacks as seeded, pure tensor functions (robust_dnn_thesis §5.5, Figure 5.2; itlm_paper §6.4).

A backdoor attack is a label corruption plus a small trigger on the same images. Triggers work on image
batches ``[N, C, H, W]`` whose pixel values lie in a declared ``value_range`` (``(lo, hi)``: black and white
in the data's own scale, e.g. ``(-0.4242, 2.8215)`` for MNIST normalised by mean 0.1307 / std 0.3081):

* :class:`PatchTrigger` — BadNets (Gu et al. 2017): by default a ``3 × 3`` black-white checkerboard in the
  bottom-right corner; any ``pattern`` (a tensor of intensities in [0, 1]), ``size`` and ``position``;
* :class:`BlendTrigger` — blend (Chen et al. 2017): :math:`x' = (1-a)\,x + a\,t` with one fixed image :math:`t`,
  by default a seeded Gaussian image (in the value range's scale) and ``a = 0.1``, or any ``pattern``; clipped to
  the range;
* :class:`WatermarkTrigger` — an ``"X"`` or ``"L"`` drawn in white (itlm_paper Figure 4);
* your own function ``images -> images``: :func:`as_trigger` wraps it (:class:`FunctionTrigger`); every place that
  takes a trigger (:func:`poison`, the backdoored datamodules' ``trigger=``, :class:`~lit_robust.BackdoorMetrics`)
  accepts one.

:func:`poison` applies a trigger to a fraction ε of a training set and relabels those samples —
single-target (every poisoned sample comes from class ``source`` and gets label ``target``) or
multi-target (systematic flip ``a → (a+1) mod C``, thesis §5.5) — and returns the mask of poisoned samples.
:func:`poison_test_set` puts the trigger on every test image. Metrics: :func:`attack_success_rate`
(fraction classified as the attacker's label) and, with :func:`accuracy` on the triggered images
against their true labels, the thesis's *poison accuracy*.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust._checks import check_int, check_seed, check_torch_seed, real_scalar

__all__ = ["Trigger", "PatchTrigger", "BlendTrigger", "WatermarkTrigger", "FunctionTrigger", "as_trigger", "poison", "poison_test_set",
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


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"dtype {images.dtype}, shape {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a floating-point batch [N, C, H, W], got {got}.")
    _, c, h, w = images.shape
    # channels last ([N, H, W, C] read as C=H, H=W, W=C): a 3x3 patch went down a whole column of a newcomer's
    # [N, 28, 28, 3] images, silently. An image at most 4 pixels wide (h <= 4 here) is read as it is given: a real
    # [2, 8, 4, 4] batch of 8-channel 4x4 maps was refused
    if w in (1, 3, 4) and c > 4 and h > 4:
        raise ValueError(f"`images` of shape {tuple(images.shape)} look channels-last ([N, H, W, C]); the triggers take "
                         "[N, C, H, W]: pass `images.permute(0, 3, 1, 2)` (and keep your dataset's images that way).")


class Trigger:
    """Base class: ``trigger(images)`` returns triggered copies of a batch ``[N, C, H, W]`` in ``value_range``.

    ``value_range=None`` means ``(0, 1)`` when the trigger is called on its own, and the data's own range when it is
    given to a backdoored datamodule or to :class:`~lit_robust.BackdoorMetrics` (:meth:`with_value_range`); a range
    given explicitly must match the data's.
    """

    def __init__(self, value_range: tuple[float, float] | None = None) -> None:
        self.value_range_given = value_range is not None
        pair = value_range if value_range is not None else (0.0, 1.0)
        # (0, inf) pasted inf pixels; three numbers failed with "too many values to unpack"
        ok = not isinstance(pair, (str, bytes)) and isinstance(pair, Sequence) and len(pair) == 2
        lo, hi = (real_scalar(v) for v in pair) if ok else (None, None)  # numpy / 0-d tensor bounds as floats
        if not (ok and _is_real(lo) and _is_real(hi) and math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"`value_range` must be (low, high) with low < high, both finite, got {value_range!r}.")
        self.value_range = (float(lo), float(hi))

    #: whether :meth:`apply` leaves its input as it is (the built-in triggers build a new batch); a subclass of a user's
    #: gets a copy, as a function does: one that wrote into its input put the trigger into the clean test split
    #: through :func:`poison_test_set` (a newcomer's check of the functions' fix)
    _leaves_its_input = False

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        check_value_range(images, self.value_range)
        return self.apply(images if self._leaves_its_input else images.clone())

    def apply(self, images: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def with_value_range(self, value_range: tuple[float, float]) -> Trigger:
        """A copy working on ``value_range`` (the same pattern intensities in that scale)."""
        out = copy.copy(self)
        Trigger.__init__(out, value_range)
        return out

    def _fields(self) -> dict[str, object]:
        return {}

    def __repr__(self) -> str:
        fields = {**self._fields(), "value_range": self.value_range}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in fields.items())})"


def _intensities(name: str, pattern: Any) -> Tensor:
    """``pattern`` as a float tensor ``[h, w]`` or ``[C, h, w]`` of intensities in [0, 1], else a ``ValueError``."""
    if not isinstance(pattern, Tensor) or pattern.ndim not in (2, 3) or pattern.numel() == 0 or pattern.dtype == torch.bool:
        got = f"shape {tuple(pattern.shape)}, dtype {pattern.dtype}" if isinstance(pattern, Tensor) else \
            f"{pattern!r} (a {type(pattern).__name__})"
        raise ValueError(f"`{name}` must be a non-empty real tensor [h, w] or [C, h, w] of intensities in [0, 1] "
                         f"(0 = black, 1 = white), got {got}.")
    p = pattern.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(p).all()) or float(p.min()) < 0.0 or float(p.max()) > 1.0:
        raise ValueError(f"`{name}` must hold intensities in [0, 1] (0 = black, 1 = white, in the trigger's "
                         f"`value_range`), got values in [{float(p.min()):g}, {float(p.max()):g}].")
    return p


def _in_range(p: Tensor, value_range: tuple[float, float], dtype: torch.dtype) -> Tensor:
    """Intensities in [0, 1] as pixel values of ``value_range``: 0 is exactly low, 1 exactly high."""
    lo, hi = value_range
    p = p.to(dtype)
    return lo * (1 - p) + hi * p


def _channels(pattern: Tensor, images: Tensor, name: str) -> Tensor:
    """``pattern`` ``[h, w]`` / ``[1 or C, h, w]`` broadcast to the images' ``C`` channels."""
    c = images.shape[1]
    if pattern.ndim == 3 and pattern.shape[0] not in (1, c):
        allowed = "1 channel" if c == 1 else f"1 or {c} channels"
        raise ValueError(f"`{name}` has {pattern.shape[0]} channels but the images have {c}; give it {allowed}, or "
                         "shape [h, w].")
    return pattern if pattern.ndim == 2 else pattern.expand(c, *pattern.shape[1:])


_CORNERS = ("bottom_right", "bottom_left", "top_left", "top_right", "center")


class PatchTrigger(Trigger):
    """A patch pasted onto every image (BadNets, Gu et al. 2017).

    The default is BadNets' ``3 × 3`` black-white checkerboard (white where row + column is even) in the bottom-right
    corner, ``margin`` pixels from the edges, on every channel.

    Args:
        size: the patch's height and width (an int, or ``(h, w)``); default 3, or the ``pattern``'s own size. A
            pattern of another size is resized to it (nearest neighbour).
        margin: pixels between the patch and the image edges at a corner ``position``.
        value_range: the pixel values of black and white (see :class:`Trigger`).
        pattern: your own patch, a tensor ``[h, w]`` or ``[C, h, w]`` (``C`` = 1 or the images' channels) of
            intensities in [0, 1]: 0 is black (``value_range[0]``), 1 white (``value_range[1]``). ``None``: the
            checkerboard.
        position: ``"bottom_right"`` (default), ``"bottom_left"``, ``"top_left"``, ``"top_right"``, ``"center"``, or
            ``(top, left)``, the patch's top-left pixel. A patch that does not fit the image is an error when the
            trigger is applied.
    """

    _leaves_its_input = True  # it builds a new batch

    def __init__(self, size: int | tuple[int, int] | None = None, margin: int = 0,
                 value_range: tuple[float, float] | None = None, pattern: Tensor | None = None,
                 position: str | tuple[int, int] = "bottom_right") -> None:
        super().__init__(value_range)
        self._pattern = None if pattern is None else _intensities("pattern", pattern)
        if size is None:
            size = 3 if self._pattern is None else tuple(self._pattern.shape[-2:])
        sizes = size if isinstance(size, (tuple, list)) and len(size) == 2 else (size, size)
        if not all(_is_int(v) and v >= 1 for v in sizes):
            raise ValueError(f"`size` must be an integer >= 1 or a pair (h, w) of them, got {size!r}." if
                             isinstance(size, (tuple, list)) else f"`size` must be an integer >= 1, got {size!r}.")
        if not _is_int(margin) or margin < 0:
            raise ValueError(f"`margin` must be an integer >= 0, got {margin!r}.")
        if isinstance(position, str):
            if position not in _CORNERS:
                raise ValueError(f"`position` must be one of {', '.join(map(repr, _CORNERS))} or (top, left) with "
                                 f"integers >= 0, got {position!r}.")
        elif not (isinstance(position, (tuple, list)) and len(position) == 2
                  and all(_is_int(v) and v >= 0 for v in position)):
            raise ValueError(f"`position` must be one of {', '.join(map(repr, _CORNERS))} or (top, left) with "
                             f"integers >= 0, got {position!r}.")
        if margin and (not isinstance(position, str) or position == "center"):
            raise ValueError(f"`margin` applies at a corner `position` only, got margin={margin!r} with "
                             f"position={position!r}; leave margin=0 or choose a corner.")
        self.size = int(sizes[0]) if sizes[0] == sizes[1] and not isinstance(size, (tuple, list)) else \
            (int(sizes[0]), int(sizes[1]))
        self._hw = (int(sizes[0]), int(sizes[1]))
        self.margin = int(margin)
        self.position = position if isinstance(position, str) else (int(position[0]), int(position[1]))

    def _fields(self) -> dict[str, object]:
        return {"size": self.size, "margin": self.margin, "position": self.position,
                "pattern": "checkerboard" if self._pattern is None else f"custom {tuple(self._pattern.shape)}"}

    def pattern(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The patch in pixel values, ``[h, w]`` or ``[C, h, w]``."""
        h, w = self._hw
        if self._pattern is None:
            lo, hi = self.value_range
            white = (torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0
            return torch.where(white, torch.tensor(hi, dtype=dtype), torch.tensor(lo, dtype=dtype))
        p = self._pattern
        if tuple(p.shape[-2:]) != (h, w):
            p3 = p if p.ndim == 3 else p[None]
            p3 = torch.nn.functional.interpolate(p3[None], size=(h, w), mode="nearest-exact")[0]
            p = p3 if p.ndim == 3 else p3[0]
        return _in_range(p, self.value_range, dtype)

    def corner(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """``(top, left)`` of the patch on an image of ``image_hw``; a ``ValueError`` if it does not fit."""
        H, W = image_hw
        h, w = self._hw
        if self.position == "bottom_right" and (h + self.margin > H or w + self.margin > W):
            # the default's wording, kept
            raise ValueError(f"the trigger (`size`={self.size} + `margin`={self.margin}) is larger than the image "
                             f"({H}×{W}).")
        m = self.margin
        top, left = {"bottom_right": (H - h - m, W - w - m), "bottom_left": (H - h - m, m), "top_left": (m, m),
                     "top_right": (m, W - w - m), "center": ((H - h) // 2, (W - w) // 2)}.get(
            self.position, self.position) if isinstance(self.position, str) else self.position
        if top < 0 or left < 0 or top + h > H or left + w > W:
            where = f"position={self.position!r}" + (f", margin={m}" if m else "")
            raise ValueError(f"`position` puts the {h}×{w} patch off the {H}×{W} image ({where}: top={top}, "
                             f"left={left}); top must be in [0, {max(H - h, -1)}] and left in [0, {max(W - w, -1)}]"
                             + (" (the patch is larger than the image)" if h > H or w > W else "") + ".")
        return top, left

    def apply(self, images: Tensor) -> Tensor:
        top, left = self.corner(tuple(images.shape[-2:]))
        h, w = self._hw
        patch = self.pattern(images.dtype).to(images.device)
        if patch.ndim == 3:
            patch = _channels(patch, images, "pattern")
        out = images.clone()
        out[..., top:top + h, left:left + w] = patch
        return out


class BlendTrigger(Trigger):
    r"""Blend: :math:`x' = \operatorname{clip}((1-a)\,x + a\,t)` with one fixed image :math:`t` (Chen et al. 2017).

    The default :math:`t = m + s z`, :math:`z \sim N(0, 1)` seeded, :math:`m, s` the middle and half-width of
    ``value_range`` (a Gaussian blend); or your own ``pattern``.

    Args:
        alpha: :math:`a \in (0, 1]`.
        seed: seeds the Gaussian image (without ``pattern``).
        value_range: the pixel values of black and white (see :class:`Trigger`).
        pattern: your own blend image, a tensor ``[H, W]`` or ``[C, H, W]`` (``C`` = 1 or the images' channels) of
            intensities in [0, 1] (0 black, 1 white), of the images' height and width.
    """

    _leaves_its_input = True  # it builds a new batch

    def __init__(self, alpha: float = 0.1, seed: int = 0, value_range: tuple[float, float] | None = None,
                 pattern: Tensor | None = None) -> None:
        super().__init__(value_range)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < alpha <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1], got {alpha!r}.")
        # a float failed in torch's manual_seed when first applied, a string was kept; 2**64 failed there too
        self.alpha, self.seed = float(alpha), check_seed("seed", seed)
        self._pattern = None if pattern is None else _intensities("pattern", pattern)

    def _fields(self) -> dict[str, object]:
        return {"alpha": self.alpha, **({"seed": self.seed} if self._pattern is None else
                                        {"pattern": f"custom {tuple(self._pattern.shape)}"})}

    def pattern(self, shape: tuple[int, int, int], dtype: torch.dtype = torch.float32) -> Tensor:
        """The blend image :math:`t` for images of ``shape`` ``(C, H, W)``, in pixel values."""
        if self._pattern is not None:
            if tuple(self._pattern.shape[-2:]) != tuple(shape[-2:]):
                raise ValueError(f"`pattern` is {tuple(self._pattern.shape[-2:])[0]}×{tuple(self._pattern.shape)[-1]} "
                                 f"but the images are {shape[-2]}×{shape[-1]}; a blend pattern must have the images' "
                                 "height and width.")
            return _in_range(self._pattern, self.value_range, dtype)
        lo, hi = self.value_range
        z = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed), dtype=dtype)
        return (lo + hi) / 2 + (hi - lo) / 2 * z

    def apply(self, images: Tensor) -> Tensor:
        t = self.pattern(tuple(images.shape[1:]), images.dtype).to(images.device)
        if t.ndim == 3 and self._pattern is not None:
            t = _channels(t, images, "pattern")
        return ((1 - self.alpha) * images + self.alpha * t).clamp(*self.value_range)


class FunctionTrigger(Trigger):
    """Your own trigger as a plain function ``images -> triggered images`` (made by :func:`as_trigger`).

    The function gets a copy of a batch ``[N, C, H, W]`` in the data's scale (it may write into it) and returns one
    of the same shape; the result is clipped into ``value_range`` when one is set (given, or the data's once adopted),
    as the built-in triggers' results are. Without a range nothing is checked or clipped.
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], value_range: tuple[float, float] | None = None) -> None:
        if not callable(fn) or isinstance(fn, Trigger):
            raise TypeError(f"`trigger` must be a lit_robust.functional.backdoor.Trigger or a function `images -> images`, got "
                            f"{fn!r} (a {type(fn).__name__}).")
        super().__init__(value_range)
        self.fn = fn

    def _fields(self) -> dict[str, object]:
        return {"fn": getattr(self.fn, "__qualname__", type(self.fn).__name__)}

    def __call__(self, images: Tensor) -> Tensor:
        _check_images(images)
        if self.value_range_given:
            check_value_range(images, self.value_range)
        return self.apply(images)

    def apply(self, images: Tensor) -> Tensor:
        # on a copy: a newcomer's `images[..., :3, :3] = v; return images` wrote the trigger into the clean test split
        # through `poison_test_set` (the datamodule's `poisoned_test_set()`), and every later test ran on triggered
        # images; the built-in triggers never write into their input
        out = self.fn(images.clone())
        if not isinstance(out, Tensor) or out.shape != images.shape or not out.is_floating_point():
            got = f"shape {tuple(out.shape)}, dtype {out.dtype}" if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"the trigger function {self._fields()['fn']} must return a floating-point batch of the "
                             f"input's shape {tuple(images.shape)}, got {got}.")
        return out.clamp(*self.value_range) if self.value_range_given else out


def as_trigger(trigger: Trigger | Callable[[Tensor], Tensor], value_range: tuple[float, float] | None = None
               ) -> Trigger:
    """``trigger`` as a :class:`Trigger`: a plain function ``images -> images`` is wrapped in a
    :class:`FunctionTrigger`. With ``value_range`` (the data's), a trigger whose range was left unset takes it, and
    one built for another range is an error.

    >>> as_trigger(lambda x: x.flip(-1))(torch.zeros(1, 1, 2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """
    out = trigger if isinstance(trigger, Trigger) else FunctionTrigger(trigger)
    if value_range is None:
        return out
    vr = (float(value_range[0]), float(value_range[1]))
    if not out.value_range_given:
        return out.with_value_range(vr)
    if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6) for a, b in zip(out.value_range, vr)):
        raise ValueError(f"`trigger` was built for `value_range` ({out.value_range[0]:g}, {out.value_range[1]:g}) but "
                         f"the images lie in ({vr[0]:g}, {vr[1]:g}); build it with value_range=None (it then takes "
                         "the data's) or with the data's range.")
    return out


class WatermarkTrigger(Trigger):
    """An ``"X"`` (both diagonals) or ``"L"`` (left edge and bottom edge) of ``size × size`` pixels, drawn in
    white with its top-left corner at ``(top, left)`` (default: centred)."""

    _leaves_its_input = True  # it builds a new batch

    def __init__(self, shape: Literal["X", "L"] = "X", size: int = 7, top: int | None = None, left: int | None = None,
                 value_range: tuple[float, float] | None = None) -> None:
        super().__init__(value_range)
        if shape not in ("X", "L"):
            raise ValueError(f"`shape` must be 'X' or 'L', got {shape!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ValueError(f"`size` must be an integer >= 2, got {size!r}.")
        # 'a' was kept and 1.5 reported as "does not fit" when applied
        top, left = check_int("top", top, 0, optional=True), check_int("left", left, 0, optional=True)
        self.shape, self.size, self.top, self.left = shape, size, top, left

    def _fields(self) -> dict[str, object]:
        return {"shape": self.shape, "size": self.size, "top": self.top, "left": self.left}

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


def _attack_labels(labels: Any, n: int, source: Any, target: Any, num_classes: Any) -> tuple[Tensor, int | None]:
    """``(labels, C)`` after checking the attack's arguments: ``labels`` integer classes ``[n]`` in ``[0, C)``,
    ``num_classes`` an integer >= 2 (``None``: ``max(labels) + 1``; ``C`` is ``None`` for an empty batch),
    ``source`` / ``target`` integer classes (``source`` only with ``target``, and different from it)."""
    labels = torch.as_tensor(labels)
    if labels.shape != (n,) or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"`labels` must be integer class indices of shape [{n}], got dtype "
                         f"{labels.dtype}, shape {tuple(labels.shape)}.")
    if num_classes is not None and (not _is_int(num_classes) or num_classes < 2):
        raise ValueError(f"`num_classes` must be an integer >= 2 or None, got {num_classes!r}.")
    for name, v in (("target", target), ("source", source)):
        # 1.5 relabelled samples as 1 and True as 1 without a word (a reviewer's)
        if v is not None and not _is_int(v):
            raise ValueError(f"`{name}` must be an integer class or None, got {v!r} (a {type(v).__name__}).")
    if source is not None and target is None:  # was ignored: a multi-target attack poisons every class
        raise ValueError(f"`source`={source!r} needs a single-target attack, but `target` is None (multi-target "
                         "a -> a+1 poisons every class); pass `target`, or `source=None`.")
    if target is not None and source == target:
        raise ValueError(f"a single-target attack needs `source` != `target` (or source=None: every other "
                         f"class), got source={source!r}, target={target!r}.")
    if n and int(labels.min()) < 0:  # a negative label was flipped to (a+1) mod C, another class
        raise ValueError(f"`labels` must be classes >= 0, got {int(labels.min())}.")
    C = int(num_classes) if num_classes is not None else (int(labels.max()) + 1 if n else None)
    if n and int(labels.max()) >= C:
        raise ValueError(f"`labels` must be classes in [0, {C - 1}] (`num_classes`={C}), got {int(labels.max())}.")
    for name, v in (("source", source), ("target", target)):
        if v is not None and (v < 0 or (C is not None and v >= C)):
            rng = f"[0, {C - 1}]" if C is not None else ">= 0"
            raise ValueError(f"`{name}` must be a class in {rng}, got {v!r}.")
    return labels, C


def poison(images: Tensor, labels: Tensor, trigger: Trigger | Callable[[Tensor], Tensor], rate: float, target: int | None = None,
           source: int | None = None, num_classes: int | None = None, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Poison exactly ``round(rate * n_eligible)`` training samples: trigger on the image, attacker's label.

    * multi-target (``target=None``): eligible = every sample; label ``a → (a+1) mod C`` (thesis §5.5);
    * single-target (``target=b``): eligible = the samples of class ``source`` (``!= b``), relabelled ``b`` —
      ``rate`` is then the poisoned fraction of that class; with ``source=None``, all-to-one (BadNets): eligible =
      every sample not of class ``b`` (``rate`` is their poisoned fraction).

    Returns ``(images, labels, poisoned_mask)`` (copies; the inputs are untouched). ``trigger``: a
    :class:`Trigger` or a function ``images -> images`` (:func:`as_trigger`). ``labels`` must be classes in
    ``[0, num_classes)`` (default ``num_classes``: ``max(labels) + 1``); an empty batch returns empty copies.
    """
    _check_images(images)
    trigger = as_trigger(trigger)
    # torch's range, as the corruptions' (a datamodule passes its seed + 1): 2**70 ended in torch's bare "Overflow
    # when unpacking long long", 1.5 in its "manual_seed expected a long"
    check_torch_seed("seed", seed)
    labels, C = _attack_labels(labels, images.shape[0], source, target, num_classes)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"`rate` must be a number in [0, 1], got {rate!r}.")
    if C is None:  # an empty batch: nothing to poison
        return images.clone(), labels.clone(), torch.zeros(0, dtype=torch.bool)
    if target is None:
        eligible = torch.arange(len(labels))
    else:
        eligible = torch.nonzero(labels == source if source is not None else labels != target).flatten()
    g = torch.Generator().manual_seed(seed)
    chosen = eligible[torch.randperm(len(eligible), generator=g)[: int(round(rate * len(eligible)))]]
    mask = torch.zeros(len(labels), dtype=torch.bool)
    mask[chosen] = True
    out_x, out_y = images.clone(), labels.clone()
    if mask.any():
        out_x[mask] = trigger(images[mask])
        out_y[mask] = (labels[mask] + 1) % C if target is None else target
    return out_x, out_y, mask


def poison_test_set(images: Tensor, labels: Tensor, trigger: Trigger | Callable[[Tensor], Tensor], target: int | None = None,
                    num_classes: int | None = None, source: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The trigger on every test image: ``(triggered_images, true_labels, attacker_labels)``.

    Attacker labels: ``(a+1) mod C`` (multi-target) or ``target`` (single-target: only the images of class
    ``source`` are kept when one is given — the attack was planted on that class, itlm_paper Table 4 — else every
    image not already of class ``target``). ``trigger``: a :class:`Trigger` or a function (:func:`as_trigger`).
    ``labels``, ``target`` and ``source`` are checked as by :func:`poison`; an empty batch gives empty outputs.
    """
    _check_images(images)
    trigger = as_trigger(trigger)
    # a target of 10 on 10 classes gave attacker labels no model predicts
    labels, C = _attack_labels(labels, images.shape[0], source, target, num_classes)
    if C is None:  # an empty batch
        return images.clone(), labels.clone(), labels.clone()
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
    """``(Σ_{i∈K} sign ∇ₓℓᵢ, |K|)`` — the two sums of eq. 5.5, which ranks can add up before dividing; ``keep`` is
    a boolean mask ``[B]`` (indices are refused)."""
    keep = torch.as_tensor(keep, device=input_grads.device)
    if keep.dtype != torch.bool:  # indices [0, 2, 1] were read as the mask "all but the first", silently
        raise ValueError(f"`keep` must be a boolean mask of shape [{input_grads.shape[0]}], got dtype {keep.dtype} "
                         "(indices? make a mask: `torch.zeros(B, dtype=torch.bool).index_fill_(0, idx, True)`).")
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
