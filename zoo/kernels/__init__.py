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
from .gla import GatedLinearAttention, gla  # noqa: F401  (GLA layer, docs/kernels/gla.md)
from .moc import MoCAttention, moc_attention, moc_reference  # noqa: F401  (docs/kernels/moc.md)
from .nsa import NSAAttention, nsa, nsa_reference  # noqa: F401  (docs/kernels/nsa.md)
from .rnnt import fused_rnnt_loss  # noqa: F401  (docs/kernels/rnnt.md)

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
