"""Ulysses (all-to-all head-parallel) attention: sequence-sharded in, head-sharded over the full sequence for the
attention itself, sequence-sharded out. Backward is autograd through the all-to-alls."""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..attention import Mask, attention
from ._dist import check_qkv, check_same_shapes, group_info
from .layout import LAYOUTS, local_positions

__all__ = ["all_to_all_4d", "ulysses_attention"]


class _AllToAll(torch.autograd.Function):
    """all_to_all_single with equal splits along dim 0; its adjoint is the same exchange."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        x = x.contiguous()
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
        dist.all_to_all_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous()  # autograd may hand a permuted view; empty_like would copy its strides
        out = torch.empty_like(g, memory_format=torch.contiguous_format)
        dist.all_to_all_single(out, g, group=ctx.group)
        return out, None


def all_to_all_4d(x: torch.Tensor, group=None, *, seq_to_heads: bool = True) -> torch.Tensor:
    """Differentiable sequence <-> head re-sharding over the R ranks of ``group``.

    ``seq_to_heads``: (B, H, N/R, D) -> (B, H/R, N, D), the full sequence in rank order for this rank's head group
    (rank r gets heads [r*H/R, (r+1)*H/R)). Otherwise the inverse, (B, H/R, N, D) -> (B, H, N/R, D).
    """
    _, world = group_info(group)
    b = x.shape[0]
    if seq_to_heads:
        _, h, n, d = x.shape
        if h % world:
            raise ValueError(f"head count {h} must be divisible by the context-parallel world size {world}")
        send = x.reshape(b, world, h // world, n, d).permute(1, 0, 2, 3, 4)  # (R, B, H/R, n, D): head group j -> j
        recv = _AllToAll.apply(send.contiguous(), group)  # (R, B, H/R, n, D): sequence shard i from rank i
        return recv.permute(1, 2, 0, 3, 4).reshape(b, h // world, world * n, d)
    _, hl, nfull, d = x.shape
    if nfull % world:
        raise ValueError(f"sequence length {nfull} must be divisible by the context-parallel world size {world}")
    n = nfull // world
    send = x.reshape(b, hl, world, n, d).permute(2, 0, 1, 3, 4)  # (R, B, H/R, n, D): sequence shard j -> rank j
    recv = _AllToAll.apply(send.contiguous(), group)  # (R, B, H/R, n, D): head group i from rank i
    return recv.permute(1, 0, 2, 3, 4).reshape(b, world * hl, n, d)


def ulysses_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Mask | None = None,
    *,
    group=None,
    scale: float | None = None,
    backend: str = "auto",
    layout: str = "contiguous",
):
    """All-to-all head-parallel self-attention over a sequence sharded across the ranks of ``group``.

    Args:
        q: (B, Hq, N_local, D), k: (B, Hkv, N_local, D), v: (B, Hkv, N_local, Dv): this rank's shard of the global
            sequence (N = R * N_local). Hq and Hkv must both be divisible by R (GQA works when they are).
        mask: any attention mask over the *global* sequence (``Causal()``, ``Varlen`` with global cu_seqlens, ...);
            it is applied unchanged because each rank sees the whole sequence for its heads.
        group, scale, backend: process group (default world), softmax scale, the attention layer's backend.
        layout: ``"contiguous"`` or ``"zigzag"`` (the input shards' layout; the output keeps it).

    Returns:
        o (B, Hq, N_local, Dv) in q.dtype, differentiable (backward = the two all-to-alls reversed).
    """
    check_qkv(q, k, v)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    _, world = group_info(group)
    hq, hkv, n = q.shape[1], k.shape[1], q.shape[2]
    if hq % world or hkv % world:
        raise ValueError(f"Ulysses needs q heads ({hq}) and k/v heads ({hkv}) divisible by the world size {world}; "
                         "use ring_attention otherwise")
    if layout == "zigzag" and n % 2:
        raise ValueError(f"zigzag layout needs an even local length, got N_local={n}")
    check_same_shapes([("q", tuple(q.shape)), ("k", tuple(k.shape)), ("v", tuple(v.shape))], group, world, q.device)
    qh, kh, vh = (all_to_all_4d(t, group) for t in (q, k, v))
    perm = None
    if layout == "zigzag" and world > 1:  # rank-order concatenation -> global order
        pos = torch.cat([local_positions(r, world, n, layout) for r in range(world)]).to(q.device)
        perm = torch.argsort(pos)
        qh, kh, vh = (t.index_select(2, perm) for t in (qh, kh, vh))
    o = attention(qh, kh, vh, mask, scale=scale, backend=backend)
    if perm is not None:
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        o = o.index_select(2, inv)
    return all_to_all_4d(o, group, seq_to_heads=False)
