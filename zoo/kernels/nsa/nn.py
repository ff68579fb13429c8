"""``NSAAttention`` (projections + gates around :func:`zoo.kernels.nsa.nsa`) and the learned ``BlockCompressor``."""
from __future__ import annotations

import torch
from torch import nn

from .common import resolve_config
from .op import nsa

__all__ = ["BlockCompressor", "NSAAttention"]


class BlockCompressor(nn.Module):
    """NSA's learned compressor φ: a block (…, l, D) plus an intra-block position embedding (l, D), flattened, through
    an MLP ``Linear(l*D, hidden) -> GELU -> Linear(hidden, D)``; maps (B, H, Nc, l, D) -> (B, H, Nc, D)."""

    def __init__(self, block_len: int, head_dim: int, hidden: int | None = None):
        super().__init__()
        hidden = head_dim * 2 if hidden is None else hidden
        self.block_len, self.head_dim = block_len, head_dim
        self.pos = nn.Parameter(torch.zeros(block_len, head_dim))
        self.fc1 = nn.Linear(block_len * head_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, head_dim)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.block_len, self.head_dim):
            raise ValueError(f"blocks must end in (l={self.block_len}, D={self.head_dim}), got {tuple(x.shape)}")
        y = (x + self.pos.to(x.dtype)).flatten(-2)
        return self.fc2(self.act(self.fc1(y)))


class NSAAttention(nn.Module):
    """Self-attention with Native Sparse Attention.

    Args:
        dim, num_heads, num_kv_heads (default num_heads; any divisor of num_heads), head_dim (default dim // num_heads).
        causal: causal or bidirectional. config: ``"paper"`` / ``"videonsa"`` / ``NSAConfig``; ``**overrides``.
        compress: ``"mlp"`` (learned :class:`BlockCompressor` for k and v) or ``"mean"``.
        qkv_bias, backend.
    Parameters: ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``g_proj`` (Linear(dim, 3*num_heads), sigmoid gates per
    head for cmp / slc / win), and ``k_compress`` / ``v_compress`` with ``compress="mlp"``.
    """

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int | None = None, head_dim: int | None = None, *,
                 causal: bool = True, config="paper", compress: str = "mlp", qkv_bias: bool = False,
                 backend: str = "auto", **overrides):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_kv_heads={num_kv_heads} must divide num_heads={num_heads} (both positive)")
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads} (or pass head_dim)")
            head_dim = dim // num_heads
        if compress not in ("mlp", "mean"):
            raise ValueError(f"compress must be 'mlp' or 'mean', got {compress!r}")
        self.cfg = resolve_config(config, overrides)
        self.dim, self.num_heads, self.num_kv_heads, self.head_dim = dim, num_heads, num_kv_heads, head_dim
        self.causal, self.backend, self.compress = causal, backend, compress
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=False)
        self.g_proj = nn.Linear(dim, 3 * num_heads)
        if compress == "mlp":
            self.k_compress = BlockCompressor(self.cfg.cmp_len, head_dim)
            self.v_compress = BlockCompressor(self.cfg.cmp_len, head_dim)

    def forward(self, x: torch.Tensor, rotary=None) -> torch.Tensor:
        """x (B, T, dim) -> (B, T, dim). ``rotary``: optional callable (q, k) -> (q, k) on (B, H, T, Dh)."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, T, {self.dim}), got {tuple(x.shape)}")
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if rotary is not None:
            q, k = rotary(q, k)
        gates = torch.sigmoid(self.g_proj(x)).view(b, t, self.num_heads, 3).transpose(1, 2)
        comp = (self.k_compress, self.v_compress) if self.compress == "mlp" else None
        o = nsa(q, k, v, gates, causal=self.causal, config=self.cfg, compressor=comp, backend=self.backend)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, -1))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, causal={self.causal}, compress={self.compress!r}, {self.cfg}")
