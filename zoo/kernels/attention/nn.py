"""``MultiheadAttention``: projections around :func:`zoo.kernels.attention`, for models without their own key names."""
from __future__ import annotations

import torch
from torch import nn

from .api import attention
from .masks import Mask

__all__ = ["MultiheadAttention"]


class MultiheadAttention(nn.Module):
    """Multi-head (GQA when ``num_kv_heads < num_heads``) self- or cross-attention.

    Args:
        dim: model width of the queries (and of the output).
        num_heads: query heads; ``dim`` must be divisible by it (head dim = dim // num_heads).
        num_kv_heads: key/value heads (default ``num_heads``); must divide ``num_heads``.
        qkv_bias / out_bias: biases of the input / output projections.
        kdim / vdim: width of the context that keys / values are projected from (default ``dim``).
        backend: attention backend (``"auto"``, ``"triton"``, ``"sdpa"``, ``"flex"``, ``"reference"``).

    Parameters: ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (``nn.Linear``).
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, qkv_bias: bool = True,
                 out_bias: bool = True, kdim: int | None = None, vdim: int | None = None, backend: str = "auto"):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if dim <= 0 or num_heads <= 0 or dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")
        if num_kv_heads <= 0 or num_heads % num_kv_heads != 0:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads}")
        self.dim, self.num_heads, self.num_kv_heads = dim, num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.kdim = dim if kdim is None else kdim
        self.vdim = dim if vdim is None else vdim
        self.backend = backend
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(self.kdim, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(self.vdim, num_kv_heads * self.head_dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim, bias=out_bias)

    def forward(self, x: torch.Tensor, context=None, mask: Mask | None = None) -> torch.Tensor:
        """x (B, N, dim); context None (self-attention), (B, M, kdim) or a pair (key_in (B, M, kdim),
        value_in (B, M, vdim)); mask over (N, M). Returns (B, N, dim)."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, N, {self.dim}), got {tuple(x.shape)}")
        if context is None:
            kin = vin = x
        elif isinstance(context, (tuple, list)):
            kin, vin = context
        else:
            kin = vin = context
        b, n, _ = x.shape
        m = kin.shape[1]
        if kin.shape[-1] != self.kdim or vin.shape[-1] != self.vdim or vin.shape[:2] != kin.shape[:2]:
            raise ValueError(
                f"context must be (B, M, kdim={self.kdim}) [and values (B, M, vdim={self.vdim})], got "
                f"{tuple(kin.shape)} / {tuple(vin.shape)}"
            )
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(kin).view(b, m, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(vin).view(b, m, self.num_kv_heads, self.head_dim).transpose(1, 2)
        o = attention(q, k, v, mask, backend=self.backend)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, self.dim))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"backend={self.backend!r}")
