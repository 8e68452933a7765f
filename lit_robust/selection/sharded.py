"""Exact global smallest-``k`` selection over scores split into shards (one shard per rank).

The result is defined by the single-process rule of :mod:`lit_robust.selection.rules`: concatenate the
shards in rank order, drop every repeated dataset index after its first occurrence (padding
samplers repeat samples), and keep the ``k`` distinct samples ranked first by ``(score, index)``
with non-finite scores last:

.. math:: \\operatorname{keep} = \\operatorname{smallest\\_k\\_mask}(s_U, k, i_U), \\qquad
          U = \\{\\text{first occurrence of each index in } (\\text{rank}, \\text{position}) \\text{ order}\\},

and every repeated copy gets ``False``. Two algorithms compute it:

* **gather** (``algorithm="gather"``): all-gather ``(index, score)``, de-duplicate and run
  :func:`~lit_robust.selection.rules.smallest_k_mask` on the concatenation; each rank receives ``12 n``
  bytes (float32 scores).
* **histogram** (``algorithm="histogram"``): radix select on :func:`~lit_robust.selection.radix.ordered_key`
  with one all-reduce of a ``2**bits_per_pass``-bin histogram per pass (``ceil(32 / bits_per_pass)``
  passes for float32 scores), then the same passes over the int64 index of the samples whose key
  equals the threshold, so ties are resolved exactly by index. Per rank it sends and receives
  ``O(world_size + passes * 2**bits_per_pass)`` bytes, independent of ``n``, as long as the shards'
  index ranges do not overlap (e.g. :class:`~lit_robust.selection.samplers.ShardedSampler`); otherwise
  duplicates could hide anywhere, and the indices (not the scores) are all-gathered to find them.

The algorithms are written once against :class:`Collectives`, an interface over the ranks as seen by
one process that holds *one or more* shards: :class:`lit_robust.selection.distributed.ProcessGroupCollectives`
holds one shard per process and talks to ``torch.distributed``; :class:`SimulatedCollectives` holds
every shard in one process (tests, benchmarks) and sums the histograms itself. Both count the bytes
each rank contributes to and receives from collectives.

Nothing here imports Lightning or ``torch.distributed``.
"""

from __future__ import annotations

import abc
import numbers
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from lit_robust.selection.radix import digit_histogram, key_bits, ordered_key, pass_schedule, radix_digit, select_bin
from lit_robust.selection.rules import smallest_k_mask

__all__ = [
    "GATHER_ALL_MAX_N",
    "Algorithm",
    "RatioK",
    "Collectives",
    "SimulatedCollectives",
    "SelectionInfo",
    "first_occurrence_mask",
    "sharded_smallest_k_masks",
]

#: ``algorithm="auto"`` gathers all scores while the global number of scores is at most this, and runs
#: the histogram select above it. At 2**20 scores a gather costs every rank 12 MiB of traffic and
#: host memory, and one sort of the gathered scores takes well under a second on a CPU core.
GATHER_ALL_MAX_N = 1 << 20

Algorithm = Literal["auto", "gather", "histogram"]

# dtypes a score tensor may have; the position is the code exchanged between ranks
_SCORE_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                 torch.int16, torch.int8, torch.uint8, torch.bool]
_INT64_MAX = (1 << 63) - 1
# meta row exchanged before every selection: [error, n_local, dtype code, k (-1: from n, -2: a RatioK), lo, hi,
# increasing, the RatioK's ratio as its float64 bits]
_META = 8


class Collectives(abc.ABC):
    """Collective operations over ``world_size`` ranks, seen from one process holding some shards.

    Every method takes ``local``: one entry per shard this process holds, in the order of
    :attr:`local_ranks`, and returns what *each* of those ranks would get. Call every method on
    every rank, in the same order (as with any collective).

    Attributes:
        bytes_sent: bytes one rank contributed to collectives so far (the payload of its input).
        bytes_received: bytes one rank received from collectives so far.
        calls: number of collectives issued.
    """

    world_size: int
    local_ranks: list[int]

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.calls = 0

    # -- backend -----------------------------------------------------------------------------
    @abc.abstractmethod
    def _all_gather(self, local: list[Tensor]) -> list[Tensor]:
        """Same-shape tensors from every rank, in rank order."""

    @abc.abstractmethod
    def _all_reduce_sum(self, local: list[Tensor]) -> Tensor:
        """Element-wise sum over the ranks."""

    @abc.abstractmethod
    def _all_gather_objects(self, local: list[Any]) -> list[Any]:
        """Picklable objects from every rank, in rank order."""

    def device_error(self, name: str, tensor: Tensor) -> str | None:
        """Why ``tensor`` cannot take part in this backend's collectives (``None`` if it can)."""
        return None

    # -- counted operations --------------------------------------------------------------------
    def all_gather(self, local: list[Tensor]) -> list[Tensor]:
        """Gather one same-shape tensor per rank; returns ``world_size`` tensors in rank order."""
        self._check(local)
        nbytes = local[0].numel() * local[0].element_size()
        self._count(nbytes, nbytes * self.world_size)
        return self._all_gather(local)

    def all_gather_uneven(self, local: list[Tensor], sizes: Sequence[int]) -> list[Tensor]:
        """Gather tensors whose first dimension differs per rank (``sizes[r]`` rows on rank ``r``).

        Every rank pads its tensor to ``max(sizes)`` rows, the padded tensors are gathered and each
        is trimmed back to its true length; a rank may hold zero rows.
        """
        self._check(local)
        longest = max(sizes) if len(sizes) else 0
        padded = []
        for t in local:
            pad = t.new_zeros((longest - t.shape[0], *t.shape[1:]))
            padded.append(torch.cat([t, pad]) if pad.shape[0] else t)
        gathered = self.all_gather(padded)
        return [g[: sizes[r]] for r, g in enumerate(gathered)]

    def all_reduce_sum(self, local: list[Tensor]) -> Tensor:
        """Element-wise sum of one same-shape tensor per rank."""
        self._check(local)
        nbytes = local[0].numel() * local[0].element_size()
        self._count(nbytes, nbytes)
        return self._all_reduce_sum(local)

    def all_gather_objects(self, local: list[Any]) -> list[Any]:
        """Gather one picklable object per rank (used for error messages only; not counted)."""
        self._check(local)
        self.calls += 1
        return self._all_gather_objects(local)

    def _count(self, sent: int, received: int) -> None:
        self.bytes_sent += sent
        self.bytes_received += received
        self.calls += 1

    def _check(self, local: list[Any]) -> None:
        if len(local) != len(self.local_ranks):
            raise ValueError(f"`local` must hold one entry per local shard ([{len(self.local_ranks)}, "
                             f"{len(self.local_ranks)}]), got {len(local)}.")


class SimulatedCollectives(Collectives):
    """All ``world_size`` ranks live in this process: gathers concatenate, all-reduces sum.

    >>> comm = SimulatedCollectives(3)
    >>> comm.all_reduce_sum([torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([5, 6])]).tolist()
    [9, 12]
    """

    def __init__(self, world_size: int) -> None:
        super().__init__()
        if world_size < 1:
            raise ValueError(f"`world_size` must be in [1, inf), got {world_size}.")
        self.world_size = world_size
        self.local_ranks = list(range(world_size))

    def _all_gather(self, local: list[Tensor]) -> list[Tensor]:
        return list(local)

    def _all_reduce_sum(self, local: list[Tensor]) -> Tensor:
        total = local[0].clone()
        for t in local[1:]:
            total += t
        return total

    def _all_gather_objects(self, local: list[Any]) -> list[Any]:
        return list(local)


@dataclass
class SelectionInfo:
    """How a global selection was computed (identical on every rank).

    Attributes:
        algorithm: ``"gather"`` or ``"histogram"``.
        n: global number of distinct samples.
        k: number kept.
        world_size: number of ranks.
        passes: histogram all-reduce passes (0 for gather).
        dedupe: ``"disjoint"`` (index ranges of the ranks do not overlap, no index exchange),
            ``"gather-index"`` (indices all-gathered to find repeats) or ``"gather"`` (gather path).
        bytes_sent: bytes one rank contributed to collectives.
        bytes_received: bytes one rank received.
        first: per local shard, ``True`` at the first occurrence of each index (in rank order), ``False`` at the
            repeats the selection leaves out (``None``: no repeat in that shard). Unlike the other fields it is this
            process's own, not the same on every rank.
    """

    algorithm: str
    n: int
    k: int
    world_size: int
    passes: int = 0
    dedupe: str = "gather"
    bytes_sent: int = 0
    bytes_received: int = 0
    first: list[Tensor | None] = field(default_factory=list, repr=False, compare=False)


def first_occurrence_mask(index: Tensor) -> Tensor:
    """``True`` at the first position of each distinct value of ``index``, ``False`` at repeats.

    .. math:: m_p = [\\, i_q \\ne i_p \\ \\forall q < p \\,]

    >>> first_occurrence_mask(torch.tensor([4, 1, 4, 7, 1])).tolist()
    [True, True, False, True, False]
    """
    n = index.numel()
    if n < 2 or bool((index[1:] > index[:-1]).all()):
        return torch.ones(n, dtype=torch.bool, device=index.device)
    order = torch.argsort(index, stable=True)  # stable: the earliest position leads each group
    ordered = index[order]
    first_sorted = torch.ones(n, dtype=torch.bool, device=index.device)
    first_sorted[1:] = ordered[1:] != ordered[:-1]
    mask = torch.empty(n, dtype=torch.bool, device=index.device)
    mask[order] = first_sorted
    return mask


KeepSpec = int | Callable[[int], int]


class RatioK:
    """A ``k`` that is a function of the global ``n`` for one ratio (``keep_count(n, keep_ratio)``): the ratio travels
    in the meta row every selection exchanges anyway, so ranks given different ratios all raise without the extra
    all-gather that checks a plain function's ``k`` (one more collective per training step under
    ``scope="global"``)."""

    def __init__(self, fn: Callable[[int], int], ratio: float) -> None:
        self.fn, self.ratio = fn, float(ratio) + 0.0  # -0.0 is 0.0 (its bits are not): equal ratios compare equal

    def __call__(self, n: int) -> int:
        return self.fn(n)

    @property
    def bits(self) -> int:
        """The ratio's float64 bit pattern as a signed int64: equal iff the ratios are the same number."""
        return struct.unpack("<q", struct.pack("<d", self.ratio))[0]


def sharded_smallest_k_masks(
    scores: Sequence[Tensor],
    index: Sequence[Tensor],
    k: KeepSpec,
    comm: Collectives,
    algorithm: Algorithm = "auto",
    bits_per_pass: int = 11,
    chunk_size: int = 1 << 18,
    gather_max_n: int = GATHER_ALL_MAX_N,
    names: tuple[str, str] = ("scores", "index"),
) -> tuple[list[Tensor], SelectionInfo]:
    """Keep-masks of the ``k`` globally smallest ``(score, index)`` pairs, one per local shard.

    Call on every rank. The masks equal the single-process rule of the module docstring for any
    world size, split and algorithm.

    Args:
        scores: this process's shards of scores (one 1-D tensor per entry of ``comm.local_ranks``).
        index: the shards' dataset indices (1-D integer tensors, same lengths).
        k: number of distinct samples kept, in ``[0, n]``, or a function of the global number ``n``
            of distinct samples (e.g. ``lambda n: keep_count(n, 0.7)``). Must be the same on every rank.
        comm: the ranks' collectives.
        algorithm: ``"gather"``, ``"histogram"`` or ``"auto"`` (gather up to ``gather_max_n`` scores).
        bits_per_pass: histogram digit width; each pass all-reduces ``2**bits_per_pass`` int64 counts.
        chunk_size: scores keyed per step of the first histogram pass (keeps temporaries in cache).
        gather_max_n: threshold of ``algorithm="auto"``.

    Returns:
        ``(masks, info)``: boolean masks shaped like the local shards, and a :class:`SelectionInfo`.

    Raises:
        ValueError: on every rank, when any rank passes bad input (shapes, dtypes, devices, ``k``),
            or when the world size exceeds the number of distinct samples.
    """
    if algorithm not in ("auto", "gather", "histogram"):
        raise ValueError(f"`algorithm` must be in ['auto', 'gather', 'histogram'], got {algorithm!r}.")
    if not 1 <= bits_per_pass <= 16:
        raise ValueError(f"`bits_per_pass` must be in [1, 16], got {bits_per_pass}.")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be in [1, inf), got {chunk_size}.")
    scores, index = list(scores), list(index)
    if len(scores) != len(comm.local_ranks) or len(index) != len(comm.local_ranks):
        raise ValueError(f"`scores` and `index` must hold one shard per local rank ([{len(comm.local_ranks)}, "
                         f"{len(comm.local_ranks)}]), got {len(scores)} and {len(index)}.")
    before_sent, before_received = comm.bytes_sent, comm.bytes_received

    # 1. local checks + one small all-gather, so that every rank raises together instead of hanging
    errors = [_local_error(s, i, comm, names) for s, i in zip(scores, index)]
    # numpy integers count, as the numpy ratios of the global entry points do (np.int64(2) was refused)
    k_int = int(k) if isinstance(k, numbers.Integral) and not isinstance(k, bool) else None
    if k_int is None and not callable(k):
        errors = [f"`k` must be an int in [0, n] or a function of n, got {k!r}."] * len(errors)
    elif k_int is not None and not 0 <= k_int <= _INT64_MAX:  # 2**70 failed in the meta row: "Overflow when unpacking"
        errors = [f"`k` must be in [0, n] (the global number of distinct samples), got {k_int}."] * len(errors)
    rows = []
    for s, i, err in zip(scores, index, errors):
        rows.append(_meta_row(s, i, err, k_int, k.bits if isinstance(k, RatioK) else None))
    meta = torch.stack(comm.all_gather(rows)).cpu()
    if bool(meta[:, 0].any()):
        messages = comm.all_gather_objects(errors)
        r, msg = next((r, m) for r, m in enumerate(messages) if m is not None)
        raise ValueError(msg if r in comm.local_ranks and len(comm.local_ranks) == 1 else f"rank {r}: {msg}")
    sizes = meta[:, 1].tolist()
    total = sum(sizes)
    codes = sorted({int(c) for c, m in zip(meta[:, 2].tolist(), sizes) if m > 0})
    if len(codes) > 1:
        raise ValueError(f"`scores` must have one dtype on every rank, got {[str(_SCORE_DTYPES[c]) for c in codes]}.")
    dtype = _SCORE_DTYPES[codes[0]] if codes else torch.float32
    ks = sorted(set(meta[:, 3].tolist()))
    if len(ks) > 1:
        kinds = {-2: "a ratio", -1: "a function of n"}
        raise ValueError(f"`k` must be the same on every rank, got {[kinds.get(v, v) for v in ks]}.")
    if ks == [-2] and len(set(meta[:, 7].tolist())) > 1:
        ratios = [struct.unpack("<d", struct.pack("<q", int(b)))[0] for b in meta[:, 7].tolist()]
        raise ValueError(f"`k` must be the same on every rank, but its ratio differs: {ratios} (in rank order): pass "
                         "the same `keep_ratio` / `drop_ratio` on every rank.")
    if algorithm == "auto":
        algorithm = "gather" if total <= gather_max_n else "histogram"
    run = _gather_select if algorithm == "gather" else _histogram_select
    masks, info = run(scores, index, k, comm, meta, dtype, bits_per_pass, chunk_size)
    info.bytes_sent = comm.bytes_sent - before_sent
    info.bytes_received = comm.bytes_received - before_received
    return masks, info


# -- checks --------------------------------------------------------------------------------------------
def _local_error(scores: Tensor, index: Tensor, comm: Collectives,
                 names: tuple[str, str] = ("scores", "index")) -> str | None:
    """The first thing wrong with this rank's inputs, if any; ``names``: what the caller calls its two arguments
    (``global_batch_keep_mask``'s are ``local_scores`` and ``local_index``)."""
    sn, xn = names
    if not isinstance(scores, Tensor) or scores.ndim != 1:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        return f"`{sn}` must be a 1-D tensor with one score per sample, got {shape}."
    if not isinstance(index, Tensor) or index.ndim != 1:
        shape = tuple(index.shape) if isinstance(index, Tensor) else type(index).__name__
        return f"`{xn}` must be a 1-D tensor of dataset indices, got {shape}."
    if index.numel() != scores.numel():
        return (f"`{xn}` must have one entry per score: its length must be in [{scores.numel()}, "
                f"{scores.numel()}] (the length of `{sn}` on this rank), got {index.numel()}.")
    if index.dtype.is_floating_point or index.dtype.is_complex or index.dtype == torch.bool:
        return f"`{xn}` must be an integer tensor, got dtype {index.dtype}."
    if scores.dtype not in _SCORE_DTYPES:
        return f"`{sn}` must have a real dtype in {[str(d) for d in _SCORE_DTYPES]}, got {scores.dtype}."
    if index.device != scores.device:
        return f"`{xn}` must be on the device of `{sn}` ({scores.device}), got {index.device}."
    return comm.device_error(sn, scores)


def _meta_row(scores: Tensor, index: Tensor, error: str | None, k: int | None, ratio_bits: int | None = None
              ) -> Tensor:
    row = torch.zeros(_META, dtype=torch.int64)
    row[3] = -1 if k is None or not 0 <= k <= _INT64_MAX else k  # an out-of-range k is in `error`
    if ratio_bits is not None:
        row[3], row[7] = -2, ratio_bits
    if error is not None:
        row[0] = 1
        return row
    n = index.numel()
    row[1] = n
    row[2] = _SCORE_DTYPES.index(scores.dtype)
    if n:
        idx = index.detach()
        increasing = n < 2 or bool((idx[1:] > idx[:-1]).all())
        if increasing:
            lo, hi = int(idx[0]), int(idx[-1])
        else:
            lo, hi = int(idx.min()), int(idx.max())
        row[4], row[5], row[6] = lo, hi, int(increasing)
    return row


def _resolve_k(k: KeepSpec, n: int) -> int:
    # fewer distinct samples than ranks is a valid selection (ranks with none contribute nothing): refusing it crashed
    # a DDP fit with `per_class=True` at a class of one sample, which one process selects (a reviewer's)
    kk = k(n) if callable(k) else k
    if not isinstance(kk, numbers.Integral) or isinstance(kk, bool) or not 0 <= kk <= n:
        raise ValueError(f"`k` must be in [0, {n}] (the global number of distinct samples), got {kk!r}.")
    return int(kk)


def _agreed_k(k: KeepSpec, n: int, comm: Collectives) -> int:
    """``_resolve_k`` on every rank, raising on every rank when a ``k`` computed from ``n`` differs between them (an
    int ``k`` was compared in the meta row already). A ratio that differed per rank (0.7 and 0.4) kept 6 of 10: each
    rank cut its own part at its own ``k``, neither ratio's selection."""
    if not callable(k) or isinstance(k, RatioK):
        return _resolve_k(k, n)  # n is global, and a RatioK's ratio was compared in the meta row: alike on every rank
    try:
        kk, error = _resolve_k(k, n), None
    except ValueError as err:
        kk, error = -1, str(err)
    ks = [int(t) for t in comm.all_gather([torch.tensor([kk], dtype=torch.int64) for _ in comm.local_ranks])]
    if error is not None:
        raise ValueError(error)
    if len(set(ks)) > 1:
        shown = [("error" if v < 0 else v) for v in ks]
        raise ValueError(f"`k` must be the same on every rank, got {shown} (in rank order, from the global n = {n}): "
                         "pass the same `keep_ratio` / `drop_ratio` / `k` on every rank.")
    return kk


# -- gather ---------------------------------------------------------------------------------------------
def _gather_select(scores: list[Tensor], index: list[Tensor], k: KeepSpec, comm: Collectives, meta: Tensor,
                   dtype: torch.dtype, bits_per_pass: int, chunk_size: int) -> tuple[list[Tensor], SelectionInfo]:
    sizes = meta[:, 1].tolist()
    all_index = torch.cat(comm.all_gather_uneven([i.detach().to(torch.int64) for i in index], sizes))
    all_scores = torch.cat(comm.all_gather_uneven([s.detach().to(dtype) for s in scores], sizes))
    first = first_occurrence_mask(all_index)
    n = int(first.sum())
    kk = _agreed_k(k, n, comm)
    keep = torch.zeros(all_index.numel(), dtype=torch.bool, device=all_index.device)
    keep[first] = smallest_k_mask(all_scores[first], kk, all_index[first])
    offsets = [0]
    for m in sizes:
        offsets.append(offsets[-1] + m)
    masks = [keep[offsets[r]: offsets[r + 1]].to(s.device) for r, s in zip(comm.local_ranks, scores)]
    firsts = [first[offsets[r]: offsets[r + 1]].to(s.device) for r, s in zip(comm.local_ranks, scores)]
    return masks, SelectionInfo("gather", n, kk, comm.world_size, first=firsts)


# -- histogram --------------------------------------------------------------------------------------------
def _histogram_select(scores: list[Tensor], index: list[Tensor], k: KeepSpec, comm: Collectives, meta: Tensor,
                      dtype: torch.dtype, bits_per_pass: int, chunk_size: int) -> tuple[list[Tensor], SelectionInfo]:
    world = comm.world_size
    sizes = meta[:, 1].tolist()
    scores = [s.detach() for s in scores]
    index = [i.detach().to(torch.int64) for i in index]

    # repeated indices: impossible across ranks whose index ranges are disjoint; within a rank, local
    valid: list[Tensor | None]
    if _ranges_disjoint(meta):
        dedupe = "disjoint"
        valid = []
        local_unique = []
        for r, i in zip(comm.local_ranks, index):
            if bool(meta[r, 6]) or i.numel() == 0:
                valid.append(None)
                local_unique.append(i.numel())
            else:
                v = first_occurrence_mask(i)
                valid.append(None if bool(v.all()) else v)
                local_unique.append(int(v.sum()))
        if bool(meta[:, 6][meta[:, 1] > 0].all()):  # every rank strictly increasing: no repeats anywhere
            n = sum(sizes)
        else:
            n = int(comm.all_reduce_sum([torch.tensor([u], dtype=torch.int64) for u in local_unique]))
    else:
        dedupe = "gather-index"
        all_index = torch.cat(comm.all_gather_uneven(index, sizes))
        first = first_occurrence_mask(all_index)
        n = int(first.sum())
        offsets = [sum(sizes[:r]) for r in range(world + 1)]
        valid = []
        for r, i in zip(comm.local_ranks, index):
            v = first[offsets[r]: offsets[r + 1]].to(i.device)
            valid.append(None if bool(v.all()) else v)
    kk = _agreed_k(k, n, comm)
    info = SelectionInfo("histogram", n, kk, world, dedupe=dedupe, first=list(valid))

    def everything(v: Tensor | None, s: Tensor) -> Tensor:
        return torch.ones(s.numel(), dtype=torch.bool, device=s.device) if v is None else v.clone()

    if kk == 0:
        return [torch.zeros(s.numel(), dtype=torch.bool, device=s.device) for s in scores], info
    if kk == n:
        return [everything(v, s) for v, s in zip(valid, scores)], info

    bits = key_bits(dtype)
    bias = 1 << (bits - 1)
    schedule = pass_schedule(bits, bits_per_pass)
    device_of = [s.device for s in scores]

    # pass 1 over every score, keyed chunk by chunk; the digits are kept for the final comparison
    shift, width = schedule[0]
    digits, hists = [], []
    for s, v in zip(scores, valid):
        d, h = _first_pass(s, v, shift, width, bits, chunk_size)
        digits.append(d)
        hists.append(h)
    hist = comm.all_reduce_sum(hists).cpu()
    info.passes = 1
    j, k_rem = select_bin(hist, kk)
    prefix = j
    if k_rem == int(hist[j]):  # the whole bin is kept
        return [d <= j if v is None else (d >= 0) & (d <= j) for d, v in zip(digits, valid)], info
    masks = [d < j if v is None else (d >= 0) & (d < j) for d, v in zip(digits, valid)]
    # candidates: the samples in bin j (their keys are recomputed; there are few of them)
    cand_pos = [torch.nonzero(d == j).flatten() for d in digits]
    del digits
    cand_keys = [ordered_key(s[p].to(dtype)) for s, p in zip(scores, cand_pos)]
    cur_pos, cur_keys = list(cand_pos), list(cand_keys)
    exit_shift = None
    for shift, width in schedule[1:]:
        ds = [radix_digit(ck, shift, width, bits) for ck in cur_keys]
        hist = comm.all_reduce_sum([digit_histogram(d, width).to(dev) for d, dev in zip(ds, device_of)]).cpu()
        info.passes += 1
        j, k_rem = select_bin(hist, k_rem)
        prefix = (prefix << width) | j
        if k_rem == int(hist[j]):
            exit_shift = shift
            break
        sel = [d == j for d in ds]
        cur_pos = [p[m] for p, m in zip(cur_pos, sel)]
        cur_keys = [ck[m] for ck, m in zip(cur_keys, sel)]
    if exit_shift is not None:
        # keep every key whose top digits are <= prefix, i.e. key < (prefix + 1) * 2**shift - bias
        bound = ((prefix + 1) << exit_shift) - bias
        for mask, p, ck in zip(masks, cand_pos, cand_keys):
            mask[p] = ck < bound if bound <= bias - 1 else torch.ones_like(p, dtype=torch.bool)
        return masks, info

    # every remaining candidate has key == threshold; rank them by dataset index
    threshold = prefix - bias
    for mask, p, ck in zip(masks, cand_pos, cand_keys):
        mask[p] = ck < threshold
    tie_index = [i[p] for i, p in zip(index, cur_pos)]
    bound, passes = _index_bound(tie_index, k_rem, comm, bits_per_pass)
    info.passes += passes
    for mask, p, ti in zip(masks, cur_pos, tie_index):
        mask[p] = ti < bound if bound <= _INT64_MAX else torch.ones_like(p, dtype=torch.bool)
    return masks, info


def _ranges_disjoint(meta: Tensor) -> bool:
    spans = sorted((int(lo), int(hi)) for n, lo, hi in zip(meta[:, 1], meta[:, 4], meta[:, 5]) if int(n) > 0)
    return all(a_hi < b_lo for (_, a_hi), (b_lo, _) in zip(spans, spans[1:]))


def _first_pass(scores: Tensor, valid: Tensor | None, shift: int, width: int, bits: int,
                chunk_size: int) -> tuple[Tensor, Tensor]:
    """Digits (``-1`` for repeats) and histogram of the top digit of every score of one shard."""
    n = scores.numel()
    digits = torch.empty(n, dtype=torch.int16 if width <= 15 else torch.int32, device=scores.device)
    hist = torch.zeros(1 << width, dtype=torch.int64, device=scores.device)
    step = n if scores.device.type != "cpu" else chunk_size  # accelerators: one launch per op
    for a in range(0, n, max(step, 1)):
        b = min(n, a + step)
        d = radix_digit(ordered_key(scores[a:b]), shift, width, bits)
        if valid is not None:
            v = valid[a:b]
            hist += digit_histogram(d[v], width)
            d = d.masked_fill(~v, -1)
        else:
            hist += digit_histogram(d, width)
        digits[a:b] = d
    return digits, hist


def _index_bound(tie_index: list[Tensor], k: int, comm: Collectives, bits_per_pass: int) -> tuple[int, int]:
    """Exclusive upper bound ``B`` such that exactly ``k`` of the (distinct) tied indices are ``< B``."""
    bias = 1 << 63
    rows = []
    for ti in tie_index:
        if ti.numel():
            rows.append(torch.tensor([1, int(ti.min()), int(ti.max())], dtype=torch.int64))
        else:
            rows.append(torch.tensor([0, 0, 0], dtype=torch.int64))
    spans = torch.stack(comm.all_gather(rows)).cpu()
    present = spans[spans[:, 0] > 0]
    lo, hi = int(present[:, 1].min()) + bias, int(present[:, 2].max()) + bias  # unsigned patterns
    shift = (lo ^ hi).bit_length()  # bits below the common prefix of every tied index
    prefix = lo >> shift
    if shift == 0:  # a single tied index (cannot happen with k < count, kept for safety)
        return lo + 1 - bias, 0
    cur = list(tie_index)
    passes = 0
    while True:
        width = min(bits_per_pass, shift)
        shift -= width
        ds = [radix_digit(t, shift, width, 64) for t in cur]
        hist = comm.all_reduce_sum([digit_histogram(d, width) for d in ds]).cpu()
        passes += 1
        j, k = select_bin(hist, k)
        prefix = (prefix << width) | j
        if k == int(hist[j]):
            return ((prefix + 1) << shift) - bias, passes
        cur = [t[d == j] for t, d in zip(cur, ds)]
