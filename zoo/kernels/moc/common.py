"""Argument checks shared by the MoC op and its reference."""
from __future__ import annotations

import torch


def check_moc_args(q, k, v, chunk_cu_seqlens, top_k, anchors, cu_seqlens, block_size, causal_routing):
    """Validate MoC inputs; returns (chunk bounds (C+1,) int64 cpu, seq bounds (S+1,) int64 cpu, anchors or None)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, N, D), got shape {tuple(t.shape)}")
    b, hq, n, _ = q.shape
    if k.shape[0] != b or k.shape[2] != n or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"k and v must be (B={b}, Hkv, N={n}, D) like q (self-attention), got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if k.shape[1] == 0 or hq % k.shape[1] != 0:
        raise ValueError(f"q's heads ({hq}) must be a multiple of k's heads ({k.shape[1]})")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0, got {top_k!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not isinstance(causal_routing, bool):
        raise TypeError(f"causal_routing must be a bool, got {type(causal_routing).__name__}")

    def bounds(name, cu):
        if not isinstance(cu, torch.Tensor) or cu.dtype not in (torch.int32, torch.int64) or cu.dim() != 1:
            raise TypeError(f"{name} must be a 1-D int32/int64 tensor of boundaries (starts at 0, ends at N={n})")
        c = cu.detach().to("cpu", torch.int64)
        if c.numel() < 2 or int(c[0]) != 0 or int(c[-1]) != n:
            raise ValueError(f"{name} must start at 0 and end at N={n} with >= 2 entries, got {c.tolist()[:8]}...")
        if bool((c[1:] <= c[:-1]).any()):
            raise ValueError(f"{name} must be strictly increasing (no empty segments), got {c.tolist()[:16]}")
        return c

    cb = bounds("chunk_cu_seqlens", chunk_cu_seqlens)
    if cu_seqlens is None:
        sb = torch.tensor([0, n], dtype=torch.int64)
    else:
        sb = bounds("cu_seqlens", cu_seqlens)
        if b != 1:
            raise ValueError(f"cu_seqlens (packed sequences) needs q of batch 1, got batch {b}")
        if not bool(torch.isin(sb, cb).all()):
            raise ValueError("every sequence boundary in cu_seqlens must also be a chunk boundary in chunk_cu_seqlens")
    if anchors is not None:
        if not isinstance(anchors, torch.Tensor) or anchors.dtype != torch.bool or anchors.shape != (n,):
            raise TypeError(f"anchors must be a bool tensor of shape (N,) = ({n},), got "
                            f"{getattr(anchors, 'dtype', type(anchors).__name__)} {tuple(getattr(anchors, 'shape', ()))}")
        anchors = anchors.detach().to("cpu")
        if bool(anchors.all()):
            raise ValueError("anchors marks every token; MoC needs at least one routed (non-anchor) token")
    return cb, sb, anchors
