"""Seeded label corruption with the ground-truth mask kept (ITLM paper §6.2)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["corrupt_labels", "NoiseKind"]

NoiseKind = Literal["random", "systematic"]


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
        seed: seed of the private generator; the global RNG is untouched.
        mapping: for ``"systematic"``, a length-``C`` tensor with ``mapping[a] != a``.

    Returns:
        ``(noisy_targets, corrupted_mask)``; ``noisy_targets[mask] != targets[mask]`` everywhere.

    >>> y, m = corrupt_labels(torch.arange(10) % 5, clean_ratio=0.6, kind="systematic", seed=0)
    >>> int(m.sum()), bool(((y - torch.arange(10) % 5) % 5 == 1)[m].all())
    (4, True)
    """
    targets = torch.as_tensor(targets)
    if targets.ndim != 1 or targets.is_floating_point():
        raise ValueError(f"`targets` must be a 1-D integer tensor, got dtype {targets.dtype}, shape {tuple(targets.shape)}.")
    if not 0.0 <= clean_ratio <= 1.0:
        raise ValueError(f"`clean_ratio` must be in [0, 1], got {clean_ratio!r}.")
    if kind not in ("random", "systematic"):
        raise ValueError(f"`kind` must be 'random' or 'systematic', got {kind!r}.")
    C = int(num_classes) if num_classes is not None else int(targets.max()) + 1
    if C < 2:
        raise ValueError(f"`num_classes` must be >= 2 to corrupt labels, got {C}.")
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
        if mapping is None:
            mapping = (torch.arange(C) + 1) % C
        mapping = torch.as_tensor(mapping, dtype=torch.long)
        if mapping.shape != (C,) or bool((mapping == torch.arange(C)).any()):
            raise ValueError(f"`mapping` must have {C} entries with mapping[a] != a, got {mapping.tolist()}.")
        noisy[mask] = mapping[targets[mask]]
    return noisy, mask
