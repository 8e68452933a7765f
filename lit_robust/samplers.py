"""Samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import Sampler

__all__ = ["SelectionSampler"]


class SelectionSampler(Sampler[int]):
    """Iterate over a mutable selection of dataset indices.

    The order of epoch ``e`` is a permutation drawn from a generator seeded with ``seed + e`` (or the
    selection's sorted order when ``shuffle=False``); Lightning calls :meth:`set_epoch` before every
    epoch. ``selection=None`` means every index in ``range(n)``.
    """

    def __init__(self, n: int, selection: Tensor | None = None, shuffle: bool = True, seed: int = 0) -> None:
        if n < 0:
            raise ValueError(f"`n` must be >= 0, got {n}.")
        self.n = n
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.selection: Tensor | None = None
        self.set_selection(selection)

    def set_selection(self, selection: Tensor | None) -> None:
        if selection is not None:
            selection = torch.as_tensor(selection, dtype=torch.long).flatten().cpu()
            if selection.numel() and (int(selection.min()) < 0 or int(selection.max()) >= self.n):
                raise ValueError(f"selection indices must be in [0, {self.n}).")
            selection = torch.sort(selection).values
        self.selection = selection

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> Tensor:
        base = torch.arange(self.n) if self.selection is None else self.selection
        if not self.shuffle:
            return base
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return base[torch.randperm(base.numel(), generator=g)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.n if self.selection is None else int(self.selection.numel())
