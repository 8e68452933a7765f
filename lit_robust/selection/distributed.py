"""The one module of lit_robust that talks to ``torch.distributed``.

Every helper here is a *collective*: **call it on every rank, in the same order**, or the ranks
wait for each other forever. When ``torch.distributed`` is unavailable or no process group is
initialised, every helper acts as the world of one process (``world_size() == 1``) and needs no
setup, so code written for DDP runs unchanged in one process.

Exact global selection (:func:`global_smallest_k_mask`, :func:`global_trim_mask`,
:func:`global_batch_keep_mask`) gives every rank the part of the selection that
:func:`lit_robust.selection.rules.smallest_k_mask` would make in one process on the concatenation of all
ranks' ``(score, index)`` pairs, after dropping repeats of an index (kept: its first occurrence in
rank order). The algorithms live in :mod:`lit_robust.selection.sharded`; this module only supplies the
process-group collectives (:class:`ProcessGroupCollectives`).

Backends: gloo communicates CPU tensors (CUDA tensors are staged through the CPU), nccl communicates
CUDA tensors, so scores handed to a selection under nccl must already be on the rank's GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lit_robust._checks import real_scalar
from lit_robust.selection.rules import keep_count
from lit_robust.selection.sharded import (
    Algorithm,
    Collectives,
    RatioK,
    SelectionInfo,
    SimulatedCollectives,
    _local_error,
    sharded_smallest_k_masks,
)

__all__ = [
    "is_distributed",
    "world_size",
    "rank",
    "backend",
    "check_device",
    "all_gather_uneven",
    "all_gather_cat",
    "all_reduce_sum",
    "all_reduce_max",
    "gather_uneven",
    "gather_objects",
    "all_gather_objects",
    "other_ranks_parts",
    "parts_to_restore",
    "broadcast",
    "ProcessGroupCollectives",
    "collectives",
    "global_selection",
    "global_smallest_k_mask",
    "global_trim_mask",
    "global_per_class_trim_mask",
    "global_batch_keep_mask",
    "init_process_group",
    "destroy_process_group",
]

Group = Any  # torch.distributed.ProcessGroup | None

# device types each backend can communicate directly
_BACKEND_DEVICES = {"nccl": ("cuda",), "gloo": ("cpu", "cuda")}


# -- process facts ----------------------------------------------------------------------------------------
def is_distributed() -> bool:
    """Whether a ``torch.distributed`` process group is initialised in this process."""
    return dist.is_available() and dist.is_initialized()


def world_size(group: Group = None) -> int:
    """Number of ranks (``1`` without a process group)."""
    return dist.get_world_size(group) if is_distributed() else 1


def rank(group: Group = None) -> int:
    """This process's rank in ``group`` (``0`` without a process group)."""
    return dist.get_rank(group) if is_distributed() else 0


def backend(group: Group = None) -> str | None:
    """Name of the process group's backend (``"gloo"``, ``"nccl"``, ...), ``None`` without one."""
    return str(dist.get_backend(group)) if is_distributed() else None


def init_process_group(backend: str, init_method: str, world_size: int, rank: int, timeout_s: float = 60.0) -> None:
    """Thin wrapper of :func:`torch.distributed.init_process_group` with a finite timeout (tests, scripts)."""
    dist.init_process_group(backend, init_method=init_method, world_size=world_size, rank=rank,
                            timeout=timedelta(seconds=timeout_s))


def destroy_process_group() -> None:
    """Tear down the default process group if one is initialised."""
    if is_distributed():
        dist.destroy_process_group()


def _device_error(name: str, tensor: Tensor, group: Group = None) -> str | None:
    name_of_backend = backend(group)
    allowed = _BACKEND_DEVICES.get(name_of_backend or "")
    if allowed is None or tensor.device.type in allowed:
        return None
    return (f"`{name}` must be on a device in {list(allowed)} for the {name_of_backend} process group, got "
            f"{tensor.device}; move it to this rank's device (e.g. `pl_module.device`) first.")


def check_device(name: str, tensor: Tensor, group: Group = None) -> None:
    """Raise ``ValueError`` if ``tensor`` is on a device the group's backend cannot communicate."""
    err = _device_error(name, tensor, group)
    if err is not None:
        raise ValueError(err)


def _comm_device(group: Group = None) -> torch.device:
    if backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# -- collectives --------------------------------------------------------------------------------------------
def _padded_rows(tensor: Tensor, group: Group) -> tuple[Tensor, list[int]]:
    """``tensor`` on the communication device, zero-padded to the longest first dimension over the ranks, and
    every rank's row count (the collective that uneven gathers start with)."""
    check_device("tensor", tensor, group)
    if tensor.ndim == 0:
        raise ValueError(f"`tensor` must have at least one dimension (rows are gathered), got shape {tuple(tensor.shape)}.")
    dev = _comm_device(group)
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=dev)
    sizes = [torch.empty_like(size) for _ in range(world_size(group))]
    dist.all_gather(sizes, size, group=group)
    lengths = [int(s) for s in sizes]
    t = tensor.to(dev)
    if t.shape[0] < max(lengths):
        t = torch.cat([t, t.new_zeros((max(lengths) - t.shape[0], *t.shape[1:]))])
    return t, lengths


def all_gather_uneven(tensor: Tensor, group: Group = None) -> list[Tensor]:
    """Every rank's ``tensor``, in rank order; the first dimension may differ per rank (also 0).

    Call on every rank. The tensors are padded to the longest first dimension, gathered and trimmed;
    the other dimensions and the dtype must agree across ranks. Without a process group: ``[tensor]``.
    """
    if not is_distributed():
        return [tensor]
    t, lengths = _padded_rows(tensor, group)
    out = [torch.empty_like(t) for _ in lengths]
    dist.all_gather(out, t.contiguous(), group=group)
    return [o[:m].to(tensor.device) for o, m in zip(out, lengths)]


def all_gather_cat(tensor: Tensor, group: Group = None) -> Tensor:
    """``torch.cat(all_gather_uneven(tensor))``: every rank's rows, concatenated in rank order. Call on every rank."""
    return torch.cat(all_gather_uneven(tensor, group))


def _all_reduce(tensor: Tensor, op: Any, group: Group) -> Tensor:
    if not is_distributed():
        return tensor.clone()
    check_device("tensor", tensor, group)
    t = tensor.to(_comm_device(group), copy=True)
    dist.all_reduce(t, op=op, group=group)
    return t.to(tensor.device)


def all_reduce_sum(tensor: Tensor, group: Group = None) -> Tensor:
    """Element-wise sum of ``tensor`` over the ranks, as a new tensor (the input is untouched). Call on every rank."""
    return _all_reduce(tensor, dist.ReduceOp.SUM, group)


def all_reduce_max(tensor: Tensor, group: Group = None) -> Tensor:
    """Element-wise maximum of ``tensor`` over the ranks, as a new tensor (the input is untouched). Call on every
    rank."""
    return _all_reduce(tensor, dist.ReduceOp.MAX, group)


def _check_dst(dst: int, ws: int) -> None:
    """``dst`` names one of ``ws`` ranks (``ws`` = 1 without a process group)."""
    if not 0 <= dst < ws:
        where = "" if is_distributed() else " without a process group"
        raise ValueError(f"`dst` must be in [0, {ws - 1}]{where}, got {dst}.")


def _global_rank(r: int, group: Group) -> int:
    """Rank ``r`` of ``group`` as a rank of the default group (what ``dist.gather``'s ``dst`` takes)."""
    return dist.get_global_rank(group, r) if group is not None else r


def gather_uneven(tensor: Tensor, dst: int = 0, group: Group = None) -> list[Tensor] | None:
    """Every rank's ``tensor`` on rank ``dst`` only, in rank order (``None`` on the other ranks); the first
    dimension may differ per rank (also 0). Call on every rank.

    Unlike :func:`all_gather_uneven`, only ``dst`` receives (and holds) the rows: what a file written once, by
    one rank, needs. Without a process group: ``[tensor]``.
    """
    if not is_distributed():
        _check_dst(dst, 1)
        return [tensor]
    _check_dst(dst, world_size(group))
    t, lengths = _padded_rows(tensor, group)
    me = rank(group)
    out = [torch.empty_like(t) for _ in lengths] if me == dst else None
    dist.gather(t.contiguous(), out, dst=_global_rank(dst, group), group=group)
    if out is None:
        return None
    return [o[:m].to(tensor.device) for o, m in zip(out, lengths)]


def gather_objects(obj: Any, dst: int = 0, group: Group = None) -> list[Any] | None:
    """Every rank's picklable ``obj`` on rank ``dst`` only, in rank order (``None`` on the other ranks). Call on
    every rank. For small, irregular payloads (rows of mixed types, a rank's error message); tensors of a fixed
    layout go through :func:`gather_uneven`. Without a process group: ``[obj]``."""
    if not is_distributed():
        _check_dst(dst, 1)
        return [obj]
    ws = world_size(group)
    _check_dst(dst, ws)
    out: list[Any] | None = [None] * ws if rank(group) == dst else None
    dist.gather_object(obj, out, dst=_global_rank(dst, group), group=group)
    return out


def all_gather_objects(obj: Any, group: Group = None) -> list[Any]:
    """Every rank's picklable ``obj`` on every rank, in rank order. Call on every rank. For small payloads that every
    rank keeps the same copy of (each rank's random state in a checkpoint). Without a process group: ``[obj]``."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def other_ranks_parts(part: Any) -> list[Any]:
    """For a checkpoint of a running state that each rank adds to and that is summed over the ranks later (a filter's
    counts, ``"auto"`` scores, report sums): every rank's picklable ``part`` but rank 0's, in rank order; rank 0's is
    in the checkpoint's own fields (what older checkpoints hold alone). Call on every rank (a gather, as each rank's
    random state is saved); without a process group: ``[]``. Restore with :func:`parts_to_restore`."""
    return all_gather_objects(part)[1:]


def parts_to_restore(rank0: Any, others: list[Any] | None) -> list[Any]:
    """Which of a checkpoint's parts (:func:`other_ranks_parts`) this rank restores: its own where the fit runs on as
    many ranks as wrote them; else all of them on rank 0 and none elsewhere (the sum over the ranks counts each part
    once). ``others`` ``None`` (a checkpoint written before they were saved): rank 0's part, on rank 0."""
    parts = [rank0] if others is None else [rank0, *others]
    if others is not None and len(parts) == world_size():
        return [parts[rank()]]
    return parts if rank() == 0 else []


def broadcast(tensor: Tensor, src: int = 0, group: Group = None) -> Tensor:
    """Rank ``src``'s ``tensor`` on every rank, as a new tensor; shapes and dtypes must agree. Call on every rank."""
    if not is_distributed():
        if src != 0:
            raise ValueError(f"`src` must be in [0, 0] without a process group, got {src}.")
        return tensor.clone()
    ws = world_size(group)
    if not 0 <= src < ws:
        raise ValueError(f"`src` must be in [0, {ws - 1}], got {src}.")
    check_device("tensor", tensor, group)
    t = tensor.to(_comm_device(group), copy=True)
    dist.broadcast(t, src=src, group=group)
    return t.to(tensor.device)


class ProcessGroupCollectives(Collectives):
    """:class:`~lit_robust.selection.sharded.Collectives` over a ``torch.distributed`` process group (one shard per process)."""

    def __init__(self, group: Group = None) -> None:
        super().__init__()
        if not is_distributed():
            raise RuntimeError("ProcessGroupCollectives needs an initialised torch.distributed process group.")
        self.group = group
        self.world_size = world_size(group)
        self.local_ranks = [rank(group)]
        self.device = _comm_device(group)

    def device_error(self, name: str, tensor: Tensor) -> str | None:
        return _device_error(name, tensor, self.group)

    def _all_gather(self, local: list[Tensor]) -> list[Tensor]:
        (t,) = local
        src = t.to(self.device).contiguous()
        out = [torch.empty_like(src) for _ in range(self.world_size)]
        dist.all_gather(out, src, group=self.group)
        return [o.to(t.device) for o in out]

    def _all_reduce_sum(self, local: list[Tensor]) -> Tensor:
        (t,) = local
        total = t.to(self.device, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.group)
        return total.to(t.device)

    def _all_gather_objects(self, local: list[Any]) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, local[0], group=self.group)
        return out


def collectives(group: Group = None) -> Collectives:
    """The collectives of ``group``, or a world of one process without a process group."""
    return ProcessGroupCollectives(group) if is_distributed() else SimulatedCollectives(1)


# -- exact global selection -----------------------------------------------------------------------------------
def global_selection(scores: Tensor, index: Tensor, k: int | Callable[[int], int], algorithm: Algorithm = "auto",
                     group: Group = None, bits_per_pass: int = 11,
                     names: tuple[str, str] = ("scores", "index")) -> tuple[Tensor, SelectionInfo]:
    """This rank's keep-mask of the global ``k`` smallest ``(score, index)`` pairs, and how it was found.

    Call on every rank. See :func:`global_smallest_k_mask`; ``k`` may also be a function of the global
    number of distinct samples ``n``. ``names``: the caller's names of ``scores`` and ``index``, for the errors.
    """
    masks, info = sharded_smallest_k_masks([scores], [index], k, collectives(group), algorithm=algorithm,
                                           bits_per_pass=bits_per_pass, names=names)
    return masks[0], info


def global_smallest_k_mask(scores: Tensor, index: Tensor, k: int, algorithm: Algorithm = "auto",
                           group: Group = None) -> Tensor:
    """Keep the ``k`` samples ranked first by ``(score, index)`` over all ranks; return this rank's part.

    Call on every rank, each with its own samples. With ``U`` the first occurrences (in rank order)
    of every dataset index,

    .. math:: \\operatorname{keep}_U = \\operatorname{smallest\\_k\\_mask}(s_U, k, i_U), \\qquad
              \\operatorname{keep}_{\\text{repeats}} = \\text{False},

    exactly what one process would select, for any world size and split. ``algorithm="auto"``
    all-gathers up to :data:`~lit_robust.selection.sharded.GATHER_ALL_MAX_N` scores and runs the histogram
    (radix) select above, whose traffic does not grow with ``n`` when the ranks' index ranges are
    disjoint (e.g. :class:`~lit_robust.selection.samplers.ShardedSampler`).

    Args:
        scores: this rank's scores, 1-D (lower is better; NaN/±inf rank last). May be empty.
        index: this rank's dataset indices, 1-D integers, same length and device as ``scores``.
        k: global number of distinct samples to keep, in ``[0, n]`` (an int, numpy integers included); the same on
            every rank.
        algorithm: how the ranks find the global cut, the same selection either way: ``"gather"`` all-gathers
            every rank's scores (traffic grows with ``n``), ``"histogram"`` narrows the cut by rounds of a
            radix histogram (traffic independent of ``n``), ``"auto"`` the first up to ``GATHER_ALL_MAX_N`` samples
            and the second above.
        group: the ``torch.distributed`` process group whose ranks select together (default ``None``: the world).

    Returns:
        Boolean mask shaped like ``scores``.

    Raises:
        ValueError: on every rank, if any rank's input is bad (lengths, dtypes, device for the backend),
            if ``k`` is out of range or differs between ranks, or if ``n < world_size``.

    >>> global_smallest_k_mask(torch.tensor([0.3, 0.1, 0.2]), torch.tensor([5, 6, 7]), 2).tolist()
    [False, True, True]
    """
    return global_selection(scores, index, k, algorithm, group)[0]


def global_trim_mask(scores: Tensor, index: Tensor, keep_ratio: float, algorithm: Algorithm = "auto",
                     group: Group = None) -> Tensor:
    """ITLM's trimmed set over all ranks: keep ``floor(keep_ratio * n)`` of the ``n`` distinct samples.

    Call on every rank. The global counterpart of :func:`lit_robust.selection.rules.trim_mask`:

    .. math:: S = \\arg\\min_{|S| = \\lfloor \\alpha n \\rfloor} \\sum_{i \\in S} f(s_i)
              \\quad \\text{(ties by index, non-finite last)}

    Args:
        scores, index, algorithm, group: as :func:`global_smallest_k_mask`.
        keep_ratio: the kept fraction α, in ``(0, 1]``; the same on every rank (a ratio that resolves to another
            ``k`` on some rank raises ``ValueError`` on every rank).

    >>> global_trim_mask(torch.tensor([0.9, 0.1, float("nan"), 0.3]), torch.arange(4), 0.5).tolist()
    [False, True, False, True]
    """
    keep_ratio = real_scalar(keep_ratio)  # np.float32(0.5), as `trim_mask` takes it
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio!r}.")
    keep = float(keep_ratio)
    return global_selection(scores, index, RatioK(lambda n: keep_count(n, keep), keep), algorithm, group)[0]


def global_per_class_trim_mask(scores: Tensor, index: Tensor, labels: Tensor, keep_ratio: float,
                               algorithm: Algorithm = "auto", group: Group = None) -> Tensor:
    """:func:`~lit_robust.selection.rules.per_class_trim_mask` over all ranks: for each class ``c``, keep
    ``floor(keep_ratio * n_c)`` of the ``n_c`` distinct samples labelled ``c``, ranked by ``(score, index)``.

    Call on every rank (with empty tensors where a rank has no samples): one :func:`global_trim_mask` per class present
    on any rank, so the selection is exactly one process's for any world size and split.

    >>> global_per_class_trim_mask(torch.tensor([0.9, 0.1, 0.8, 0.7]), torch.arange(4), torch.tensor([0, 0, 1, 1]),
    ...                            0.5).tolist()
    [False, True, False, True]
    """
    from lit_robust.selection.rules import check_class_labels

    keep_ratio = real_scalar(keep_ratio)
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)) or not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"`keep_ratio` must be in (0, 1], got {keep_ratio!r}.")
    # a rank's bad labels or index raise on every rank (the others waited in the collective below until the timeout,
    # 30 minutes under NCCL; a short `index` raised a bare IndexError on one rank); a rank with no samples may pass
    # empty labels and index of any dtype (`torch.tensor([])`)
    def empty(t: Any) -> bool:
        return isinstance(t, Tensor) and t.ndim == 1 and not t.numel()

    error = _local_error(scores, index.long() if empty(index) else index, collectives(group))
    if error is None:
        try:
            check_class_labels(labels.long() if empty(labels) else labels, scores.numel())
        except ValueError as err:
            error = str(err)
    device = scores.device if isinstance(scores, Tensor) else None
    if int(all_reduce_max(torch.tensor([int(error is not None)], device=device), group).item()):
        raise ValueError(error or "another rank's `scores`, `index` or `labels` are bad (its error says why).")
    labels = labels.to(device=scores.device, dtype=torch.long)
    top = labels.max() + 1 if labels.numel() else torch.zeros((), dtype=torch.long, device=scores.device)
    num_classes = int(all_reduce_max(top.reshape(1), group).item())
    present = all_reduce_sum(torch.bincount(labels, minlength=num_classes), group).tolist()
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    for c in range(num_classes):
        if present[c]:  # the same classes on every rank: the collectives pair up
            members = labels == c
            mask[members] = global_trim_mask(scores[members], index[members], keep_ratio, algorithm, group)
    return mask


_LOCAL_NAMES = ("local_scores", "local_index")  # global_batch_keep_mask's names for `scores`, `index`


def global_batch_keep_mask(local_scores: Tensor, local_index: Tensor, drop_ratio: float | None = None,
                           k: int | None = None, group: Group = None) -> Tensor:
    """Per-batch filter over the *global* batch (``scope="global"``): this rank's survivors.

    Call on every rank with its minibatch. The scores of all ranks' batches are all-gathered, repeats
    of an index (padding samplers) are dropped, and the global batch of ``n`` distinct samples keeps

    .. math:: k = \\lfloor (1 - \\varepsilon)\\, n \\rfloor \\text{ (from } \\varepsilon = \\text{drop\\_ratio)}
              \\quad \\text{or the given } k,

    ranked by ``(score, index)`` with non-finite scores dropped first. With one process it equals
    ``trim_mask(local_scores, 1 - drop_ratio, local_index)``.

    Args:
        local_scores: this rank's per-sample scores (e.g. losses), 1-D.
        local_index: this rank's dataset indices, same length.
        drop_ratio: fraction :math:`\\varepsilon \\in [0, 1)` of the global batch to drop; the same on every rank
            (one that resolves to another ``k`` on some rank raises ``ValueError`` on every rank).
        k: number to keep instead of ``drop_ratio`` (exactly one of the two; an int, numpy integers included).
        group: process group (default: the world).

    >>> global_batch_keep_mask(torch.tensor([2.0, 0.5, 1.0, 9.0]), torch.arange(4), drop_ratio=0.25).tolist()
    [True, True, True, False]
    """
    for name, t in (("local_scores", local_scores), ("local_index", local_index)):
        if not isinstance(t, Tensor) or t.ndim != 1:
            got = f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"`{name}` must be a 1-D tensor with one entry per sample of this process, got {got}.")
    if (drop_ratio is None) == (k is None):
        raise ValueError(f"exactly one of `drop_ratio` and `k` must be given, got drop_ratio={drop_ratio!r}, k={k!r}.")
    if drop_ratio is not None:
        drop_ratio = real_scalar(drop_ratio)
        if isinstance(drop_ratio, bool) or not isinstance(drop_ratio, (int, float)) or not 0.0 <= drop_ratio < 1.0:
            raise ValueError(f"`drop_ratio` must be in [0, 1), got {drop_ratio!r}.")
        keep_ratio = 1.0 - float(drop_ratio)
        k_of = RatioK(lambda n: keep_count(n, keep_ratio), keep_ratio)
        # the names the user passed: the checks below said `index` and `scores` of `local_index`, `local_scores`
        return global_selection(local_scores, local_index, k_of, "gather", group, names=_LOCAL_NAMES)[0]
    return global_selection(local_scores, local_index, k, "gather", group, names=_LOCAL_NAMES)[0]
