"""Seeded label and regression-target corruption with the ground-truth mask kept.

Labels: ITLM paper §6.2 (random / systematic; the PRL papers call them symmetric / pairflip).
Regression targets: prl_paper §6 and robust_dnn_thesis §4.4 (linadv, signflip, uninoise, pairflip, mixture).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust._checks import _is_real, check_has_values, check_int, check_number, check_torch_seed, real_scalar
from lit_robust.selection.rules import percent_hint

__all__ = ["corrupt_labels", "corrupt_targets", "NoiseKind", "TargetCorruption", "TARGET_CORRUPTIONS"]

NoiseKind = Literal["random", "systematic"]
TargetCorruption = Literal["linadv", "signflip", "uninoise", "pairflip", "mixture"]
TARGET_CORRUPTIONS: tuple[str, ...] = ("linadv", "signflip", "uninoise", "pairflip", "mixture")


def corrupt_labels(
    targets: Tensor,
    clean_ratio: float,
    kind: NoiseKind = "random",
    num_classes: int | None = None,
    seed: int = 0,
    mapping: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Corrupt exactly ``round((1 - clean_ratio) * n)`` labels chosen uniformly at random.

    Args:
        targets: 1-D integer class labels.
        clean_ratio: fraction of labels left intact, in ``[0, 1]``.
        kind: ``"random"`` — a corrupted label is drawn uniformly among the *other* classes;
            ``"systematic"`` — every corrupted sample of class ``a`` gets the same wrong class
            ``mapping[a]`` (default ``(a + 1) mod C``).
        num_classes: number of classes ``C`` (default ``targets.max() + 1``).
        seed: seed of the private generator; the global RNG is untouched. The corrupted samples are the first
            ``round((1 - clean_ratio) * n)`` of ``torch.randperm(n, generator=torch.Generator().manual_seed(seed))``:
            draw a subset of the same samples with another seed, since that permutation starts with the corrupted
            ones (a newcomer's subset drawn with the same seed held all 1,800 corrupted samples: 55 % clean).
        mapping: for ``"systematic"``, a length-``C`` tensor with ``mapping[a] != a``.

    Returns:
        ``(noisy_targets, corrupted_mask)``; ``noisy_targets[mask] != targets[mask]`` everywhere.

    >>> y, m = corrupt_labels(torch.arange(10) % 5, clean_ratio=0.6, kind="systematic", seed=0)
    >>> int(m.sum()), bool(((y - torch.arange(10) % 5) % 5 == 1)[m].all())
    (4, True)
    """
    try:
        targets = torch.as_tensor(targets)
    except (TypeError, RuntimeError, ValueError):
        raise ValueError(f"`targets` must be a 1-D integer tensor, got {type(targets).__name__}.") from None
    # a bool tensor ended in torch's "Index put requires the source and destination dtypes match"
    if targets.ndim != 1 or targets.is_floating_point() or targets.dtype == torch.bool:
        raise ValueError(f"`targets` must be a 1-D integer tensor, got dtype {targets.dtype}, shape {tuple(targets.shape)}.")
    check_has_values("targets", targets)
    clean_ratio = real_scalar(clean_ratio)  # np.float32(0.7) as 0.7, as `corrupt_targets`' rate
    if not _is_real(clean_ratio) or not 0.0 <= clean_ratio <= 1.0:
        raise ValueError(f"`clean_ratio` must be in [0, 1], got {clean_ratio!r}." + percent_hint("clean_ratio", clean_ratio))
    if kind not in ("random", "systematic"):
        raise ValueError(f"`kind` must be 'random' or 'systematic', got {kind!r}.")
    if mapping is not None and kind != "systematic":  # it used to be ignored without a word
        raise ValueError(f"`mapping` applies to kind='systematic' only, got a mapping with kind={kind!r}: pass "
                         "kind='systematic', or no `mapping`.")
    check_int("num_classes", num_classes, 2, optional=True)
    check_torch_seed("seed", seed)  # a datamodule passes its seed + 1
    if targets.numel() == 0:
        raise ValueError("`targets` must hold at least one label, got an empty tensor.")
    low, high = int(targets.min()), int(targets.max())
    C = int(num_classes) if num_classes is not None else high + 1
    if C < 2:
        raise ValueError(f"`num_classes` must be >= 2 to corrupt labels, got {C}.")
    if low < 0 or high >= C:
        # an auditor's labels 0-9 with num_classes=5: "random" drew wrong labels from 0-4 only and left 5-9 as they
        # were, silently; "systematic" raised torch's bare IndexError; a -1 stayed in the output
        raise ValueError(f"`targets` must be class labels in [0, {C - 1}] (`num_classes` = {C}), got labels from "
                         f"{low} to {high}.")
    n = targets.numel()
    g = torch.Generator().manual_seed(seed)
    n_bad = int(round((1.0 - clean_ratio) * n))
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:n_bad]] = True
    noisy = targets.clone()
    if kind == "random":
        offset = torch.randint(1, C, (n,), generator=g)
        noisy[mask] = (targets[mask] + offset[mask]) % C
    else:
        mapping = (torch.arange(C) + 1) % C if mapping is None else _check_mapping(mapping, C)
        noisy[mask] = mapping[targets[mask]]
    return noisy, mask


def _check_mapping(mapping: Tensor, C: int) -> Tensor:
    """``mapping`` as a long tensor of ``C`` classes in ``[0, C - 1]`` with ``mapping[a] != a``, else a ValueError:
    out-of-range, negative and float entries (1.7 read as class 1) used to go through into the labels."""
    try:
        m = torch.as_tensor(mapping)
    except (TypeError, RuntimeError, ValueError):
        m = None
    ok = (m is not None and m.shape == (C,) and not m.is_floating_point() and not m.is_complex()
          and m.dtype != torch.bool)
    if ok:
        m = m.long()
        ok = bool(((m >= 0) & (m < C) & (m != torch.arange(C))).all())
    if not ok:
        raise ValueError(f"`mapping` must hold {C} integer classes in [0, {C - 1}] (`num_classes` = {C}) with "
                         f"mapping[a] != a, got {mapping!r}.")
    return m


def _derangement(q: int, g: torch.Generator) -> Tensor:
    """A seeded permutation of ``range(q)`` with no fixed point (``q >= 2``)."""
    while True:
        perm = torch.randperm(q, generator=g)
        if not bool((perm == torch.arange(q)).any()):
            return perm


def corrupt_targets(
    features: Tensor,
    targets: Tensor,
    rate: float,
    kind: TargetCorruption,
    seed: int = 0,
    uniform_bound: float = 5.0,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Corrupt exactly ``round(rate * n)`` regression targets, chosen uniformly at random.

    The five corruptions of the PRL experiments (prl_paper §6; robust_dnn_thesis §4.4, Table 4.1), meant
    for standardised targets:

    * ``"linadv"`` — a wrong linear relationship of the features: :math:`y' = x W_\varepsilon` with one
      random :math:`W_\varepsilon \in \mathbb{R}^{d\times q}`, entries :math:`N(0, 1/d)` (so unit-variance
      features give targets of unit scale);
    * ``"signflip"`` — :math:`y' = -y`;
    * ``"uninoise"`` — :math:`y' \sim U[-b, b]^q` with ``b = uniform_bound`` (5 in the papers);
    * ``"pairflip"`` — the target coordinates are shuffled by one fixed seeded derangement (e.g. the eye
      landmarks become the mouth's); needs ``q >= 2`` target dimensions;
    * ``"mixture"`` — every corrupted sample draws one of the four kinds above uniformly (``pairflip``
      only when ``q >= 2``).

    Args:
        features: ``[n, ...]`` inputs (flattened to ``[n, d]`` for ``linadv``).
        targets: ``[n]`` or ``[n, q]`` floating-point targets.
        rate: the corrupted fraction :math:`\varepsilon \in [0, 1]`.
        kind: one of :data:`TARGET_CORRUPTIONS`.
        seed: seed of a private generator (the global RNG is untouched).
        uniform_bound: ``b`` of ``uninoise``, ``> 0``.

    Returns:
        ``(corrupted_targets, mask, kinds)``: the targets (same shape and dtype), the boolean mask of the
            corrupted samples, and per sample the index into :data:`TARGET_CORRUPTIONS` of the corruption
            applied (``-1`` for clean samples; useful for ``mixture``).

    >>> y = torch.arange(8.0).reshape(4, 2)
    >>> y2, m, k = corrupt_targets(torch.zeros(4, 3), y, 0.5, "signflip", seed=0)
    >>> int(m.sum()), bool(torch.equal(y2[m], -y[m])), bool(torch.equal(y2[~m], y[~m]))
    (2, True, True)
    """
    features, targets, rate, uniform_bound = _check_target_corruption(features, targets, rate, kind, uniform_bound)
    check_torch_seed("seed", seed)  # a datamodule passes its seed + 1
    g = torch.Generator().manual_seed(seed)
    mask = _exact_mask(len(targets), rate, g)
    out, kinds = _corrupt_rows(features, targets, mask, kind, g, uniform_bound)
    return out, mask, kinds


def _as_tensor(name: str, value: Any) -> Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, RuntimeError, ValueError):
        raise ValueError(f"`{name}` must be a tensor, got {type(value).__name__} {value!r}.") from None


def _check_target_corruption(features: Tensor, targets: Tensor, rate: float, kind: str,
                             uniform_bound: float) -> tuple[Tensor, Tensor, float, float]:
    """:func:`corrupt_targets`' arguments checked: ``(features, targets, rate, uniform_bound)``."""
    # None, a string or a dict ended in torch's "Could not infer dtype of NoneType", naming neither argument
    features, targets = _as_tensor("features", features), _as_tensor("targets", targets)
    if not targets.is_floating_point() or targets.ndim not in (1, 2):
        raise ValueError(f"`targets` must be a floating-point tensor of shape [n] or [n, q], got dtype "
                         f"{targets.dtype}, shape {tuple(targets.shape)}.")
    n = targets.shape[0]
    if n == 0 or targets.numel() == 0:  # torch's reshape error named neither
        raise ValueError(f"`targets` must hold at least one target, got an empty tensor of shape "
                         f"{tuple(targets.shape)}.")
    if features.ndim < 1 or features.shape[0] != n:
        raise ValueError(f"`features` must have one row per target ({n}), got shape {tuple(features.shape)}.")
    rate = check_number("rate", real_scalar(rate), 0, 1)  # a numpy float, as `corrupt_labels`' clean_ratio
    if kind not in TARGET_CORRUPTIONS:
        raise ValueError(f"`kind` must be one of {list(TARGET_CORRUPTIONS)}, got {kind!r}.")
    uniform_bound = check_number("uniform_bound", real_scalar(uniform_bound), 0, low_open=True)  # inf: -inf targets
    if kind == "pairflip" and (targets.ndim < 2 or targets.shape[1] < 2):
        raise ValueError(f"`kind='pairflip'` shuffles target coordinates and needs targets of shape [n, q] with "
                         f"q >= 2, got shape {tuple(targets.shape)}.")
    return features, targets, rate, uniform_bound


def _exact_mask(n: int, rate: float, g: torch.Generator) -> Tensor:
    """The first ``round(rate * n)`` of ``torch.randperm(n, generator=g)`` as a boolean mask of ``n`` samples."""
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[: int(round(rate * n))]] = True
    return mask


def _corrupt_rows(features: Tensor, targets: Tensor, mask: Tensor, kind: str, g: torch.Generator,
                  uniform_bound: float) -> tuple[Tensor, Tensor]:
    """``(corrupted targets, kinds)``: :func:`corrupt_targets` applied to the rows of ``mask``, the candidates drawn
    from ``g``; a datamodule draws one mask per split (exact counts in each) and one set of candidates, so that the
    training and validation splits share one ``linadv`` relation and one ``pairflip`` derangement."""
    n = len(targets)
    y = targets.reshape(n, -1)
    q = y.shape[1]
    # every candidate is drawn for all samples (so one seed gives the same draw whatever the kind)
    x = features.reshape(n, -1).to(y.dtype)
    d = x.shape[1]
    w = torch.randn(d, q, generator=g, dtype=y.dtype) / d ** 0.5
    candidates = {
        "linadv": x @ w,
        "signflip": -y,
        "uninoise": (torch.rand(n, q, generator=g, dtype=y.dtype) * 2 - 1) * uniform_bound,
        "pairflip": y[:, _derangement(q, g)] if q >= 2 else y,
    }
    pool = [k for k in TARGET_CORRUPTIONS[:4] if q >= 2 or k != "pairflip"]
    if kind == "mixture":
        pick = torch.tensor([TARGET_CORRUPTIONS.index(k) for k in pool])[
            torch.randint(len(pool), (n,), generator=g)]
    else:
        pick = torch.full((n,), TARGET_CORRUPTIONS.index(kind))
    kinds = torch.where(mask, pick, torch.full_like(pick, -1))
    out = y.clone()
    for i, name in enumerate(TARGET_CORRUPTIONS[:4]):
        rows = kinds == i
        out[rows] = candidates[name][rows]
    return out.reshape(targets.shape), kinds
