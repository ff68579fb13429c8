"""``moc_reference``: the MoC routing rule written out with loops and a dense mask, then plain softmax attention.

The oracle for :func:`zoo.kernels.moc.moc_attention` (same block-granular rule, independent code). Small shapes only.
"""
from __future__ import annotations

import math

import torch

from .common import check_moc_args

__all__ = ["moc_reference", "moc_dense_mask"]


@torch.no_grad()
def moc_dense_mask(q, k, chunk_cu_seqlens, *, top_k, anchors=None, causal_routing=False, cu_seqlens=None,
                   block_size=64) -> torch.Tensor:
    """(B, Hq, N, N) bool visibility of MoC attention (True = attend), built token by token from the rule."""
    cb, sb, anchors = check_moc_args(q, k, k, chunk_cu_seqlens, top_k, anchors, cu_seqlens, block_size, causal_routing)
    b, hq, n, _ = q.shape
    g = hq // k.shape[1]
    bs = block_size
    chunk_of = [0] * n
    for c in range(cb.numel() - 1):
        for t in range(int(cb[c]), int(cb[c + 1])):
            chunk_of[t] = c
    anc = [False] * n if anchors is None else anchors.tolist()
    mask = torch.zeros(b, hq, n, n, dtype=torch.bool)
    for s in range(sb.numel() - 1):
        toks = list(range(int(sb[s]), int(sb[s + 1])))
        keys = [t for t in toks if not anc[t]]
        ancs = [t for t in toks if anc[t]]
        chunks = sorted({chunk_of[t] for t in toks})
        kblocks = [keys[i:i + bs] for i in range(0, len(keys), bs)]
        qblocks = [toks[i:i + bs] for i in range(0, len(toks), bs)]
        for bb in range(b):
            for h in range(hq):
                kh = k[bb, h // g].float()
                means = {}
                for c in chunks:
                    ck = [t for t in keys if chunk_of[t] == c]
                    if ck:
                        means[c] = kh[ck].mean(0)
                for qb in qblocks:
                    qbar = q[bb, h, qb].float().mean(0)
                    own = {chunk_of[t] for t in qb}
                    cands = [c for c in means if c not in own and (not causal_routing or c < min(own))]
                    sc = torch.stack([qbar @ means[c] for c in cands]) if cands else torch.zeros(0)
                    order = torch.argsort(sc, descending=True, stable=True).tolist()
                    chosen = own | {cands[i] for i in order[:top_k]}
                    vis = [t for blk in kblocks if any(chunk_of[t] in chosen for t in blk) for t in blk] + ancs
                    for t in qb:
                        mask[bb, h, t, vis] = True
    return mask


def moc_reference(q, k, v, chunk_cu_seqlens, *, top_k: int, anchors=None, causal_routing: bool = False,
                  cu_seqlens=None, block_size: int = 64, scale: float | None = None):
    """Dense-mask MoC attention in fp32 (fp64 for fp64 input); same arguments and result as ``moc_attention``."""
    check_moc_args(q, k, v, chunk_cu_seqlens, top_k, anchors, cu_seqlens, block_size, causal_routing)
    m = moc_dense_mask(q, k, chunk_cu_seqlens, top_k=top_k, anchors=anchors, causal_routing=causal_routing,
                       cu_seqlens=cu_seqlens, block_size=block_size).to(q.device)
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    g = q.shape[1] // k.shape[1]
    kk = k.to(cdt).repeat_interleave(g, 1)
    vv = v.to(cdt).repeat_interleave(g, 1)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q.to(cdt) @ kk.transpose(-1, -2)) * scale
    p = torch.softmax(s.masked_fill(~m, float("-inf")), -1).nan_to_num(0.0)
    return (p @ vv).to(q.dtype)
