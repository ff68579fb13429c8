"""Context parallelism: one long sequence split across the ranks of a ``torch.distributed`` group.

``ring_attention`` passes K/V blocks around the ring and merges partial outputs by log-sum-exp;
``ulysses_attention`` swaps sequence- for head-sharding with two all-to-alls. See docs/kernels/context_parallel.md.
"""
from .layout import (
    contiguous_merge,
    contiguous_split,
    local_positions,
    shard,
    zigzag_merge,
    zigzag_split,
)
from .merge import merge_attention
from .ring import ring_attention
from .ulysses import all_to_all_4d, ulysses_attention

__all__ = [
    "all_to_all_4d",
    "contiguous_merge",
    "contiguous_split",
    "local_positions",
    "merge_attention",
    "ring_attention",
    "shard",
    "ulysses_attention",
    "zigzag_merge",
    "zigzag_split",
]
