"""Attention with composable masks over Triton / SDPA / FlexAttention / reference backends (see docs/kernels/attention.md)."""
from .api import attention
from .masks import (
    BlockSparse,
    Causal,
    KeyPadding,
    Mask,
    MaskSpec,
    SlidingWindow,
    Varlen,
    as_spec,
)
from .nn import MultiheadAttention
from .reference import reference_attention

__all__ = [
    "BlockSparse",
    "Causal",
    "KeyPadding",
    "Mask",
    "MaskSpec",
    "MultiheadAttention",
    "SlidingWindow",
    "Varlen",
    "as_spec",
    "attention",
    "reference_attention",
]
