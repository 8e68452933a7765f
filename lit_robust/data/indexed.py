"""Datasets whose samples carry their dataset index (and, when known, a corruption flag)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["IndexedDataset", "IndexedBatch", "unpack_batch", "check_pair_dataset"]


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so that each sample is ``(index, input, target[, is_corrupted])``.

    Args:
        dataset: a map-style dataset returning ``(input, target)``.
        targets: optional replacement targets (e.g. corrupted labels), one per sample.
        corrupted: optional ground-truth flags, one per sample. They are only ever used for metrics
            (clean precision of a selection, ...); no algorithm reads them.

    >>> ds = IndexedDataset(torch.utils.data.TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 2])),
    ...                     corrupted=torch.tensor([False, True, False]))
    >>> i, x, y, c = ds[1]
    >>> (i, int(y), bool(c))
    (1, 1, True)
    """

    def __init__(self, dataset: Any, targets: Tensor | Sequence | None = None, corrupted: Tensor | None = None) -> None:
        n = check_pair_dataset(dataset)
        self.dataset = dataset
        if targets is not None:
            targets = torch.as_tensor(targets)
            if len(targets) != n:
                raise ValueError(f"`targets` must have one entry per sample ({n}), got {len(targets)}.")
        if corrupted is not None:
            raw = torch.as_tensor(corrupted)
            if raw.dtype != torch.bool and bool(((raw != 0) & (raw != 1)).any()):
                raise ValueError(f"`corrupted` must be a boolean (or 0/1) mask, got values "
                                 f"{sorted(set(raw.flatten().tolist()))[:6]}.")
            corrupted = raw.to(torch.bool)
            if corrupted.ndim != 1 or len(corrupted) != n:
                raise ValueError(f"`corrupted` must be a 1-D mask with one entry per sample ({n}), got shape "
                                 f"{tuple(corrupted.shape)}.")
        self.targets = targets
        self.corrupted = corrupted

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        x, y = self.dataset[index]
        if self.targets is not None:
            y = self.targets[index]
        if self.corrupted is None:
            return index, x, y
        return index, x, y, self.corrupted[index]


_PAIR_HINT = "e.g. `IndexedDataset(torch.utils.data.TensorDataset(x, y))`"


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)} element(s)"
    return f"a {type(obj).__name__}"


def check_pair_dataset(dataset: Any, argument: str = "dataset") -> int:
    """The length of ``dataset``, after checking that it is a non-empty map-style dataset whose first item is an
    ``(input, target)`` pair; otherwise a ``TypeError``/``ValueError`` naming ``argument``."""
    if isinstance(dataset, Tensor):
        raise TypeError(f"`{argument}` must be a map-style dataset of `(input, target)` pairs, got a tensor of shape "
                        f"{tuple(dataset.shape)}; wrap inputs and targets together, {_PAIR_HINT}.")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"`{argument}` must be a map-style dataset (with `__len__` and `__getitem__`) of "
                        f"`(input, target)` pairs, got {_describe(dataset)}; {_PAIR_HINT}.")
    n = len(dataset)
    if n == 0:
        raise ValueError(f"`{argument}` must hold at least one sample, got an empty {type(dataset).__name__} "
                         "(a run would train on zero samples).")
    first = dataset[0]
    if isinstance(first, (str, bytes)) or not isinstance(first, Sequence) or len(first) != 2:
        raise ValueError(f"`{argument}` must yield `(input, target)` pairs, but its first item is {_describe(first)}; "
                         f"{_PAIR_HINT}.")
    return n


class IndexedBatch(NamedTuple):
    """A collated batch from an :class:`IndexedDataset`; ``corrupted`` is ``None`` when unknown."""

    index: Tensor
    input: Any
    target: Any
    corrupted: Tensor | None


def _batch_size(x: Any) -> int | None:
    if isinstance(x, Tensor) and x.ndim > 0:
        return x.shape[0]
    if isinstance(x, (list, tuple)) and x:
        return _batch_size(x[0])
    if isinstance(x, dict) and x:
        return _batch_size(next(iter(x.values())))
    return None


def unpack_batch(batch: Any, owner: str | None = None) -> IndexedBatch:
    """Split a collated ``(index, input, target[, corrupted])`` batch, checking that it carries indices
    (``owner``, e.g. ``"BatchFilter"``, is named in the error)."""
    who = f"`{owner}`: " if owner else ""
    hint = ("Wrap the training dataset in `lit_robust.IndexedDataset` so that every sample is "
            "`(index, input, target[, is_corrupted])`.")
    if not isinstance(batch, (tuple, list)) or len(batch) not in (3, 4):
        kind = f"a {type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else \
            f"a {type(batch).__name__}"
        raise ValueError(f"{who}lit_robust expects batches `(index, input, target[, is_corrupted])`, got {kind}. {hint}")
    index = batch[0]
    n = _batch_size(batch[1])
    if not (isinstance(index, Tensor) and index.ndim == 1 and not index.is_floating_point()
            and index.dtype != torch.bool and (n is None or index.numel() == n)):
        got = f"tensor of dtype {index.dtype} and shape {tuple(index.shape)}" if isinstance(index, Tensor) \
            else type(index).__name__
        raise ValueError(f"{who}the first element of a batch must be the 1-D integer sample index, got {got}. {hint}")
    corrupted = batch[3] if len(batch) == 4 else None
    return IndexedBatch(index, batch[1], batch[2], corrupted)
