"""How scores become a selection: the pure rules (one tie-break: score, then index), the exact sharded
algorithms, every ``torch.distributed`` call, the samplers that iterate a selection, and ``drop_ratio="auto"``.

Layers, each importing only those below it: ``auto_drop`` → ``samplers`` → ``distributed`` (the only module
importing ``torch.distributed``) → ``sharded`` → ``radix`` / ``rules`` (pure).
"""

from lit_robust.selection.distributed import global_batch_keep_mask, global_smallest_k_mask, global_trim_mask
from lit_robust.selection.rules import keep_count, rank_order, smallest_k_mask, trim_mask
from lit_robust.selection.samplers import SelectionSampler, ShardedSampler

__all__ = [
    "keep_count",
    "rank_order",
    "smallest_k_mask",
    "trim_mask",
    "global_smallest_k_mask",
    "global_trim_mask",
    "global_batch_keep_mask",
    "SelectionSampler",
    "ShardedSampler",
]
