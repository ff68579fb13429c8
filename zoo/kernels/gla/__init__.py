"""Gated linear attention: chunked / fused-recurrent Triton kernels, PyTorch reference, nn layer
(see docs/kernels/gla.md)."""
from .nn import GatedLinearAttention
from .op import gla
from .reference import gla_reference

__all__ = ["GatedLinearAttention", "gla", "gla_reference"]
