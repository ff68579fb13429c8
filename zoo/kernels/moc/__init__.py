"""Mixture of Contexts (MoC) sparse attention, routed per query block and run on the block-sparse engine
(see docs/kernels/moc.md)."""
from .nn import MoCAttention
from .op import moc_attention, moc_routing
from .reference import moc_reference

__all__ = ["MoCAttention", "moc_attention", "moc_reference", "moc_routing"]
