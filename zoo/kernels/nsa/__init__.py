"""Native Sparse Attention (compressed + selected + sliding-window branches, gated) on the block-sparse engine
(see docs/kernels/nsa.md)."""
from .common import PRESETS, NSAConfig
from .nn import BlockCompressor, NSAAttention
from .op import nsa, nsa_select
from .reference import nsa_reference

__all__ = ["BlockCompressor", "NSAAttention", "NSAConfig", "PRESETS", "nsa", "nsa_reference", "nsa_select"]
