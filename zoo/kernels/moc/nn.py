"""``MoCAttention``: q/k/v/out projections around :func:`zoo.kernels.moc.moc_attention`."""
from __future__ import annotations

import torch
from torch import nn

from .op import moc_attention

__all__ = ["MoCAttention"]


class MoCAttention(nn.Module):
    """Self-attention with Mixture-of-Contexts routing.

    Args: dim, num_heads, num_kv_heads (default num_heads), top_k, block_size, causal_routing, qkv_bias, out_bias,
    backend. Parameters ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``. ``rotary`` in forward: optional callable
    ``(q, k) -> (q, k)`` on (B, H, N, Dh) tensors (position encoding is the model's business).
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, *, top_k: int = 3,
                 block_size: int = 64, causal_routing: bool = False, qkv_bias: bool = True, out_bias: bool = True,
                 backend: str = "auto"):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
        if num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        self.dim, self.num_heads, self.num_kv_heads, self.head_dim = dim, num_heads, num_kv_heads, dim // num_heads
        self.top_k, self.block_size, self.causal_routing, self.backend = top_k, block_size, causal_routing, backend
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim, bias=out_bias)

    def forward(self, x: torch.Tensor, chunk_cu_seqlens: torch.Tensor, anchors=None, cu_seqlens=None,
                rotary=None) -> torch.Tensor:
        """x (B, N, dim) -> (B, N, dim); chunk_cu_seqlens / anchors / cu_seqlens as in ``moc_attention``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, N, {self.dim}), got {tuple(x.shape)}")
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rotary is not None:
            q, k = rotary(q, k)
        o = moc_attention(q, k, v, chunk_cu_seqlens, top_k=self.top_k, anchors=anchors,
                          causal_routing=self.causal_routing, cu_seqlens=cu_seqlens, block_size=self.block_size,
                          backend=self.backend)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, self.dim))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, top_k={self.top_k}, "
                f"block_size={self.block_size}, causal_routing={self.causal_routing}")
