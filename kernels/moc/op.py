"""``moc_attention``: Mixture-of-Contexts routing (PyTorch, vectorised) executed by the block-sparse engine.

Routing rule (block granularity; docs/kernels/moc.md has the full statement):
- Tokens are laid out per sequence; anchor tokens are moved out of the routed key layout (they are attended through a
  second, dense call and merged by log-sum-exp). Query blocks = ``block_size`` consecutive tokens of a sequence; key
  blocks = ``block_size`` consecutive *non-anchor* tokens of a sequence.
- Chunk descriptor: mean of the chunk's non-anchor keys (per KV head). Query-block descriptor: mean of its queries.
- A query block's own chunks = every chunk it overlaps (always attended). Candidates: the other non-empty chunks of
  its sequence (with ``causal_routing`` only chunks before the first own chunk); it takes the ``top_k`` by
  ``q_mean . k_mean``. Visible key blocks = key blocks that contain at least one token of a selected/own chunk.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..attention import BlockSparse, KeyPadding, attention
from .common import check_moc_args

__all__ = ["MoCRouting", "moc_attention", "moc_routing", "merge_by_lse"]


class MoCRouting(NamedTuple):
    """Result of :func:`moc_routing`. Layout tensors are on q's device; ``None`` fields mean "identity / absent".

    mask: ``BlockSparse`` (& ``KeyPadding``) over the routed layout, block lists (R, Hq, nqb, max_blocks), R = B * S.
    q_index / k_index / a_index: (S * L,) token ids gathered into the query / routed-key / anchor layouts (N = pad).
    out_index: (N,) flat layout position of every token. lengths_*: (R,) int32 valid lengths per layout row.
    """

    mask: object
    q_index: torch.Tensor | None
    k_index: torch.Tensor | None
    a_index: torch.Tensor | None
    out_index: torch.Tensor | None
    num_seqs: int
    len_q: int
    len_k: int
    len_a: int
    lengths_k: torch.Tensor
    lengths_a: torch.Tensor | None


def _layout(sel: torch.Tensor, seq: torch.Tensor, sb: torch.Tensor, n: int):
    """Positions of the tokens flagged in ``sel`` inside their sequence: (pos (N,), lengths (S,), L max)."""
    c = torch.cumsum(sel.long(), 0)
    before = torch.cat([torch.zeros(1, dtype=torch.long), c])[sb[:-1]]  # selected tokens before each sequence
    pos = c - 1 - before[seq]
    lens = torch.stack([int(sel[sb[i]:sb[i + 1]].sum()) * torch.ones((), dtype=torch.long) for i in range(len(sb) - 1)])
    return pos, lens, int(lens.max()) if lens.numel() else 0


def _index(sel, seq, pos, L, S, n):
    idx = torch.full((S * L,), n, dtype=torch.long)
    tok = torch.nonzero(sel).flatten()
    idx[seq[tok] * L + pos[tok]] = tok
    return idx


def _block_chunks(chunk_flat: torch.Tensor, lens: torch.Tensor, L: int, bs: int):
    """First / last chunk id of each block of a layout (S, L) (-1 padded); empty blocks get (0, -1)."""
    S = lens.numel()
    nb = math.ceil(L / bs) if L else 0
    starts = torch.arange(nb) * bs
    valid = starts[None, :] < lens[:, None]  # (S, nb)
    ends = torch.minimum(starts[None, :] + bs, lens[:, None]) - 1
    ch = chunk_flat.view(S, L) if L else chunk_flat.view(S, 0)
    first = ch.gather(1, starts[None, :].expand(S, nb).clamp(max=max(L - 1, 0))) if nb else ch[:, :0]
    last = ch.gather(1, ends.clamp(min=0)) if nb else ch[:, :0]
    first = torch.where(valid, first, torch.zeros_like(first))
    last = torch.where(valid, last, torch.full_like(last, -1))
    return first, last, valid


@torch.no_grad()
def moc_routing(q, k, chunk_cu_seqlens, *, top_k: int, anchors=None, causal_routing: bool = False,
                cu_seqlens=None, block_size: int = 64, _checked=None) -> MoCRouting:
    """The MoC routing of :func:`moc_attention` as a block-sparse mask over the per-sequence layout (no gradient)."""
    if _checked is None:
        _checked = check_moc_args(q, k, k, chunk_cu_seqlens, top_k, anchors, cu_seqlens, block_size, causal_routing)
    cb, sb, anchors = _checked
    dev = q.device
    b, hq, n, _ = q.shape
    hkv = k.shape[1]
    bs = block_size
    S, C = sb.numel() - 1, cb.numel() - 1
    tok = torch.arange(n)
    seq = torch.searchsorted(sb[1:], tok, right=True)
    chunk = torch.searchsorted(cb[1:], tok, right=True)
    chunk_seq = torch.searchsorted(sb[1:], cb[:-1], right=True)  # sequence of each chunk
    is_key = torch.ones(n, dtype=torch.bool) if anchors is None else ~anchors
    identity = S == 1 and anchors is None

    qpos, lq, Lq = _layout(torch.ones(n, dtype=torch.bool), seq, sb, n)
    kpos, lk, Lk = _layout(is_key, seq, sb, n)
    q_index = _index(torch.ones(n, dtype=torch.bool), seq, qpos, Lq, S, n)
    k_index = _index(is_key, seq, kpos, Lk, S, n)
    chunk_pad = torch.cat([chunk, torch.tensor([-1])])
    qf, ql, qvalid = _block_chunks(chunk_pad[q_index], lq, Lq, bs)  # (S, nqb)
    kf, kl, _ = _block_chunks(chunk_pad[k_index], lk, Lk, bs)  # (S, nkb)
    nqb, nkb = qf.shape[1], kf.shape[1]

    # Descriptors (fp32): chunk mean keys over routed tokens, query-block mean queries.
    ktok = torch.nonzero(is_key).flatten().to(dev)
    kf32 = k.detach().float()
    ksum = torch.zeros(b, hkv, C, k.shape[-1], device=dev).index_add_(2, chunk.to(dev)[ktok], kf32[:, :, ktok])
    kcount = torch.zeros(C).index_add_(0, chunk[is_key], torch.ones(int(is_key.sum())))
    kmean = (ksum / kcount.clamp(min=1).to(dev)[:, None]).repeat_interleave(hq // hkv, dim=1)  # (B, Hq, C, D)
    qf32 = F.pad(q.detach().float(), (0, 0, 0, 1))[:, :, q_index.to(dev)].view(b, hq, S, Lq, -1)
    qf32 = F.pad(qf32, (0, 0, 0, nqb * bs - Lq)).view(b, hq, S, nqb, bs, -1).sum(4)
    qcnt = (torch.minimum(torch.arange(nqb)[None] * bs + bs, lq[:, None]) - torch.arange(nqb)[None] * bs).clamp(min=1)
    qmean = qf32 / qcnt.to(dev)[None, None, :, :, None]
    scores = torch.einsum("bhsnd,bhcd->bhsnc", qmean, kmean)  # (B, Hq, S, nqb, C)

    cid = torch.arange(C)
    own = (cid >= qf[..., None]) & (cid <= ql[..., None]) & qvalid[..., None]  # (S, nqb, C)
    cand = (chunk_seq[None, None, :] == torch.arange(S)[:, None, None]) & (kcount > 0) & ~own & qvalid[..., None]
    if causal_routing:
        cand &= cid < qf[..., None]
    own, cand = own.to(dev), cand.to(dev)
    sel = own.expand(b, hq, S, nqb, C).clone()
    kk = min(top_k, C)
    if kk > 0:
        val, idx = scores.masked_fill(~cand, float("-inf")).topk(kk, dim=-1)
        sel.scatter_(-1, idx, (val > float("-inf")) | sel.gather(-1, idx))
    P = F.pad(torch.cumsum(sel.to(torch.int32), -1), (1, 0))  # (B, Hq, S, nqb, C + 1)
    shape = (b, hq, S, nqb, nkb)
    hi = P.gather(-1, (kl + 1).to(dev)[None, None, :, None, :].expand(shape))
    lo = P.gather(-1, kf.to(dev)[None, None, :, None, :].expand(shape))
    vis = hi > lo
    counts = vis.sum(-1, dtype=torch.int32)
    mb = max(1, int(counts.max()))
    key = torch.where(vis, nkb - torch.arange(nkb, device=dev, dtype=torch.int32), 0)
    top = key.topk(mb, dim=-1).values
    bidx = torch.where(top > 0, nkb - top, 0).to(torch.int32)
    bidx = bidx.permute(0, 2, 1, 3, 4).reshape(b * S, hq, nqb, mb).contiguous()
    counts = counts.permute(0, 2, 1, 3).reshape(b * S, hq, nqb).contiguous()
    mask = BlockSparse(bidx, counts, bs)
    lengths_k = lk.repeat(b).to(torch.int32).to(dev)
    if bool((lk < Lk).any()):
        mask = mask & KeyPadding(lengths_k)

    a_index = lengths_a = None
    La = 0
    if anchors is not None:
        apos, la, La = _layout(anchors, seq, sb, n)
        if La > 0:
            a_index = _index(anchors, seq, apos, La, S, n).to(dev)
            lengths_a = la.repeat(b).to(torch.int32).to(dev)
    out_index = None if identity else (seq * Lq + qpos).to(dev)
    return MoCRouting(mask, None if identity else q_index.to(dev), None if identity else k_index.to(dev), a_index,
                      out_index, S, Lq, Lk, La, lengths_k, lengths_a)


def _gather(x: torch.Tensor, index: torch.Tensor, S: int, L: int) -> torch.Tensor:
    """(B, H, N, D) -> (B * S, H, L, D) per-sequence layout (zero rows where index == N)."""
    b, h, _, d = x.shape
    y = F.pad(x, (0, 0, 0, 1))[:, :, index].view(b, h, S, L, d)
    return y.transpose(1, 2).reshape(b * S, h, L, d)


def merge_by_lse(o1, l1, o2, l2):
    """Merge two partial attentions over disjoint key sets: o (B, H, N, Dv) in o1's dtype, lse (B, H, N) fp32."""
    m = torch.maximum(l1, l2).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
    den = w1 + w2
    o = (w1[..., None] * o1.float() + w2[..., None] * o2.float()) / den.clamp(min=1e-30)[..., None]
    lse = torch.where(den > 0, torch.log(den.clamp(min=1e-30)) + m, torch.full_like(m, float("-inf")))
    return o.to(o1.dtype), lse


def moc_attention(q, k, v, chunk_cu_seqlens, *, top_k: int, anchors=None, causal_routing: bool = False,
                  cu_seqlens=None, block_size: int = 64, scale: float | None = None, backend: str = "auto",
                  return_lse: bool = False):
    """Mixture-of-Contexts attention (arXiv:2508.21058), routed per query block, run on the block-sparse engine.

    Args:
        q: (B, Hq, N, D); k: (B, Hkv, N, D); v: (B, Hkv, N, Dv); self-attention, Hq a multiple of Hkv.
        chunk_cu_seqlens: (C + 1,) int32/int64 chunk boundaries over N (content-aligned, e.g. one per frame).
        top_k: chunks each query block selects besides its own chunk(s) (and the anchors).
        anchors: optional bool (N,): tokens every query always attends to (caption / text); never routed.
        causal_routing: a query block may only select chunks before its first own chunk (attention within the
            visited set stays bidirectional).
        cu_seqlens: optional (S + 1,) packed sequences (B must be 1); each boundary must be a chunk boundary.
        block_size: routing / kernel block (power of two >= 16 for the Triton kernel).
        scale, backend: as in :func:`zoo.kernels.attention`.
        return_lse: also return the log-sum-exp (B, Hq, N) fp32.

    Returns o (B, Hq, N, Dv) in q.dtype (and lse). Gradients flow to q, k, v through attention; routing has none.
    """
    checked = check_moc_args(q, k, v, chunk_cu_seqlens, top_k, anchors, cu_seqlens, block_size, causal_routing)
    r = moc_routing(q, k, chunk_cu_seqlens, top_k=top_k, anchors=anchors, causal_routing=causal_routing,
                    cu_seqlens=cu_seqlens, block_size=block_size, _checked=checked)
    b, hq, n, _ = q.shape
    S = r.num_seqs
    if r.q_index is None:
        ql, kl, vl = q, k, v
    else:
        ql, kl, vl = _gather(q, r.q_index, S, r.len_q), _gather(k, r.k_index, S, r.len_k), _gather(v, r.k_index, S, r.len_k)
    need_lse = return_lse or r.a_index is not None
    out = attention(ql, kl, vl, r.mask, scale=scale, backend=backend, return_lse=need_lse)
    o, lse = out if need_lse else (out, None)
    if r.a_index is not None:
        ka, va = _gather(k, r.a_index, S, r.len_a), _gather(v, r.a_index, S, r.len_a)
        o2, l2 = attention(ql, ka, va, KeyPadding(r.lengths_a), scale=scale, backend=backend, return_lse=True)
        o, lse = merge_by_lse(o, lse, o2, l2)
    if r.out_index is not None:
        dv = o.shape[-1]
        o = o.view(b, S, hq, r.len_q, dv).transpose(1, 2).reshape(b, hq, S * r.len_q, dv)[:, :, r.out_index]
        if lse is not None:
            lse = lse.view(b, S, hq, r.len_q).transpose(1, 2).reshape(b, hq, S * r.len_q)[:, :, r.out_index]
    return (o, lse) if return_lse else o
