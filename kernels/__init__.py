"""zoo.kernels: the shared attention-kernel layer (torch + triton only)."""
from .attention import (
    BlockSparse,
    Causal,
    KeyPadding,
    Mask,
    MaskSpec,
    MultiheadAttention,
    SlidingWindow,
    Varlen,
    attention,
)

__all__ = [
    "BlockSparse",
    "Causal",
    "KeyPadding",
    "Mask",
    "MaskSpec",
    "MultiheadAttention",
    "SlidingWindow",
    "Varlen",
    "attention",
]
