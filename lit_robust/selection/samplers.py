"""Samplers whose order depends only on (seed, epoch), so a resumed run sees the same batches."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler, Sampler

from lit_robust._checks import check_bool, check_int, check_seed
from lit_robust.selection import distributed

__all__ = ["SelectionSampler", "ShardedSampler", "epoch_seed"]


def epoch_seed(seed: int, epoch: int, stream: str = "SelectionSampler") -> int:
    """The generator seed of ``SelectionSampler``'s order in ``epoch``: a hash of ``(seed, epoch)``, in ``[0, 2**63)``.

    Not ``seed + epoch``: data pipelines seed their own permutations with small integers too (the datamodules
    draw the training pool with ``seed`` and the corrupted samples with ``seed + 1``), and a sampler seeded with
    ``seed + 1`` then visited the corrupted samples of such a set first and the clean ones last in epoch 1, which
    trained a cleaner model than any real shuffle would.

    ``stream`` names what the seed is for, so two uses of one ``(seed, epoch)`` draw unrelated numbers (the order, and
    the training loader's worker seeds: ``"workers"``).

    >>> epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(1, 0)
    True
    >>> epoch_seed(0, 1) != epoch_seed(0, 1, "workers")
    True
    """
    digest = hashlib.blake2b(f"lit_robust.{stream}:{int(seed)}:{int(epoch)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class SelectionSampler(DistributedSampler):
    """Iterate over a mutable selection of dataset indices, optionally this rank's share of it.

    The order of epoch ``e`` is a permutation drawn from a generator seeded with
    :func:`epoch_seed` ``(seed, e)`` (or the selection's sorted order when ``shuffle=False``); Lightning calls
    :meth:`set_epoch` before every epoch, so a resumed run sees the same batches. ``selection=None`` means every index in ``range(n)``.

    With ``num_replicas = W > 1`` the epoch's order is padded by wrapping around to a multiple of ``W``
    (as ``DistributedSampler`` does, so every rank runs the same number of steps) and rank ``r`` takes
    positions ``r, r + W, ...``. It subclasses ``DistributedSampler`` only so that Lightning neither
    re-wraps it nor skips ``set_epoch``; it does not call that class's constructor.
    """

    def __init__(self, n: int, selection: Tensor | None = None, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        # integers only: n=5.0 yielded float indices, rank=True passed as rank 1
        n = check_int("n", n, 0)
        num_replicas = check_int("num_replicas", num_replicas, 1)
        rank = check_int("rank", rank, 0, num_replicas - 1)
        # unchecked, seed=2.5 and seed=-1 shuffled with a seed nobody asked for, seed="7" failed in the first epoch
        # naming no argument, and shuffle="no" (truthy) shuffled
        self.n = n
        self.shuffle = check_bool("shuffle", shuffle)
        self.seed = check_seed("seed", seed)
        self.epoch = 0
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = False
        self.selection: Tensor | None = None
        #: the training loader's ``DataLoader(generator=)``, from which each of its iterators draws the workers' base
        #: seed; :meth:`set_epoch` re-seeds it from ``(seed, epoch)``, so the workers' seeds do not depend on how many
        #: iterators Lightning created before (two in an epoch whose loader was reloaded, one in a resumed epoch)
        self.worker_generator: torch.Generator | None = None
        #: batches of the next iteration's order to leave out, once (a fit resumed from a checkpoint written inside an
        #: epoch: Lightning restarts the epoch's loader and trains only the steps left, so the order must start where
        #: the checkpoint stopped), and the loader's batch size they are counted in
        self.skip_batches = 0
        self.batch_size = 1
        self.set_selection(selection)

    def set_selection(self, selection: Tensor | None) -> None:
        if selection is not None:
            try:
                selection = torch.as_tensor(selection).flatten().cpu()
            except (TypeError, ValueError, RuntimeError) as err:  # "zzz", a dict: torch's "Could not infer dtype"
                raise ValueError(f"`selection` must be a tensor or sequence of integer dataset indices, got "
                                 f"{type(selection).__name__} {selection!r}.") from err
            # a float tensor was truncated to the indices below it (0.5 -> 0, 1.7 -> 1) without a word
            if selection.numel() and (selection.dtype.is_floating_point or selection.dtype.is_complex
                                      or selection.dtype == torch.bool):
                raise ValueError(f"`selection` must hold integer dataset indices, got dtype {selection.dtype}.")
            selection = selection.long()
            if selection.numel() and (int(selection.min()) < 0 or int(selection.max()) >= self.n):
                bad = selection[(selection < 0) | (selection >= self.n)][0]
                raise ValueError(f"`selection` indices must be in [0, {self.n - 1}] (the dataset's length is "
                                 f"{self.n}), got {int(bad)}.")
            selection = torch.sort(selection).values
        self.selection = selection

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.worker_generator is not None:
            self.worker_generator.manual_seed(epoch_seed(self.seed, epoch, "workers"))

    def _size(self) -> int:
        return self.n if self.selection is None else int(self.selection.numel())

    def indices(self) -> Tensor:
        base = torch.arange(self.n) if self.selection is None else self.selection
        if self.shuffle:
            g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            base = base[torch.randperm(base.numel(), generator=g)]
        if self.num_replicas == 1 or base.numel() == 0:
            return base
        total = len(self) * self.num_replicas
        padded = base.repeat((total + base.numel() - 1) // base.numel())[:total]
        return padded[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        order = self.indices()
        if self.skip_batches:
            order, self.skip_batches = order[self.skip_batches * self.batch_size:], 0
        return iter(order.tolist())

    def __len__(self) -> int:
        size = self._size()
        return size if self.num_replicas == 1 else -(-size // self.num_replicas)


class ShardedSampler(Sampler[int]):
    """Rank ``r`` of ``W`` visits one contiguous block of ``range(n)`` in order: no padding, no shuffling.

    .. math:: \\text{rank } r \\text{ visits } [\\lfloor r n / W \\rfloor, \\lfloor (r + 1) n / W \\rfloor)

    Every index is visited by exactly one rank (block sizes differ by at most one; a rank gets an
    empty block when ``W > n``), which is what a scoring pass needs: ``DistributedSampler`` pads
    shards with repeated samples, which would be scored twice. The blocks are disjoint *intervals*,
    so :func:`lit_robust.selection.distributed.global_smallest_k_mask` can prove from each rank's first and
    last index alone that no index repeats across ranks, keeping its histogram select's traffic
    independent of ``n``; the indices also come out increasing, so no sort is needed locally.

    Args:
        n: dataset length.
        num_replicas: world size ``W`` (default: :func:`lit_robust.selection.distributed.world_size`).
        rank: this rank ``r`` (default: :func:`lit_robust.selection.distributed.rank`).

    >>> [list(ShardedSampler(10, num_replicas=3, rank=r)) for r in range(3)]
    [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    """

    def __init__(self, n: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        # integers only: num_replicas=2.0 or rank=1.5 made float block bounds, num_replicas=True passed as 1
        n = check_int("n", n, 0)
        num_replicas = check_int("num_replicas", distributed.world_size() if num_replicas is None else num_replicas, 1)
        rank = check_int("rank", distributed.rank() if rank is None else rank, 0, num_replicas - 1)
        self.n = n
        self.num_replicas = num_replicas
        self.rank = rank
        self.start = rank * n // num_replicas
        self.stop = (rank + 1) * n // num_replicas

    def set_epoch(self, epoch: int) -> None:
        """No-op (the order never changes); present for Lightning's sampler protocol."""

    def indices(self) -> Tensor:
        return torch.arange(self.start, self.stop)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
