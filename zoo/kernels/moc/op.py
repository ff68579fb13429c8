"""``moc_attention``: Mixture-of-Contexts routing (PyTorch, vectorised) executed by the block-sparse engine.

Routing rule (block granularity; docs/kernels/moc.md has the full statement):
- Tokens are laid out per sequence; anchor tokens are moved out of the routed key layout (they are attended through a
  second, dense call and merged by log-sum-exp). Query blocks = ``block_size`` consecutive tokens of a sequence; key
  blocks = ``block_size`` consecutive *non-anchor* tokens of a sequence.
- Chunk descriptor: mean of the chunk's non-anchor keys (per KV head). Query-block descriptor: mean of its queries.
- A query block's own chunks = every chunk it overlaps (always attended). Candidates: the other non-empty chunks of
  its sequence (with ``causal_routing`` only chunks before the first own chunk); it takes the ``top_k`` by
  ``q_mean . k_mean``. Visible key blocks = key blocks that contain at least one token of a selected/own chunk.

Everything is device-resident and loop-free (no Python loop over sequences, chunks, blocks or tokens). Host work is
O(C + S) arithmetic on the CPU copies of the boundaries / anchors that the argument check makes anyway; with the
boundaries (and anchors) given on the host, routing and the calls around attention make no device->host sync.
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

    mask: ``MaskSpec`` of ``BlockSparse`` (& ``KeyPadding``) over the routed layout, block lists (R, Hq, nqb, W),
    R = B * S, W a host-side upper bound on the list length (unused entries 0; ``block_counts`` exact).
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


def _dense_index(sb: torch.Tensor, slen: torch.Tensor, L: int, n: int) -> torch.Tensor:
    """(S * L,) token at position p of sequence s in the all-token layout (n = padding)."""
    p = torch.arange(L, device=sb.device)
    return torch.where(p < slen[:, None], sb[:-1, None] + p, n).flatten()


def _flag_index(flag, cum, seq, sb, S: int, L: int, n: int) -> torch.Tensor:
    """(S * L,) the tokens flagged in ``flag`` (N,) laid out per sequence (n = padding), by one scatter.

    cum: (N + 1,) flagged tokens before each position; seq: (N,) sequence of each token."""
    tok = torch.arange(n, device=flag.device)
    dst = torch.where(flag, seq * L + cum[:-1] - cum[sb[seq]], S * L)  # unflagged -> dropped slot S * L
    return torch.full((S * L + 1,), n, dtype=torch.long, device=flag.device).scatter_(0, dst, tok)[:-1]


def _block_chunks(chunk_flat: torch.Tensor, lens: torch.Tensor, L: int, nb: int, bs: int):
    """First / last chunk id of each block of a layout (S, L) (-1 padded), (S, nb); empty blocks get (0, -1)."""
    S = lens.numel()
    starts = torch.arange(nb, device=lens.device) * bs
    valid = starts[None, :] < lens[:, None]
    ends = torch.minimum(starts[None, :] + bs, lens[:, None]) - 1
    ch = chunk_flat.view(S, L)
    first = ch.gather(1, starts[None, :].expand(S, nb).clamp(max=L - 1))
    last = ch.gather(1, ends.clamp(min=0))
    return torch.where(valid, first, 0), torch.where(valid, last, -1), valid


def _on_device(host: torch.Tensor, given, dev: torch.device) -> torch.Tensor:
    """``host`` (a validated CPU copy) on ``dev`` without a host sync: the caller's tensor when it already lives
    there, otherwise an asynchronous copy from pinned memory (a pageable copy would synchronise the stream)."""
    if isinstance(given, torch.Tensor) and given.device == dev:
        return given.detach().to(host.dtype)
    if dev.type == "cpu":
        return host
    if dev.type == "cuda":
        return host.pin_memory().to(dev, non_blocking=True)
    return host.to(dev)


def _list_width(cb: torch.Tensor, keys_per_chunk: torch.Tensor, top_k: int, bs: int, nkb: int) -> int:
    """Host-side upper bound on the visited key blocks of one query block (sizes ``block_indices`` without a sync).

    A query block visits the key blocks of at most ``own + top_k`` chunks, ``own`` <= 1 + the most chunk starts in
    ``bs - 1`` consecutive tokens; a chunk with m keys (consecutive in the key layout) touches <= (m + bs - 2) // bs + 1
    key blocks. All host arithmetic on the (C + 1,) boundaries."""
    inner = cb[1:-1]
    own = 1
    if inner.numel():
        own += int((torch.searchsorted(inner, inner + (bs - 2), right=True) - torch.arange(inner.numel())).max())
    span = torch.where(keys_per_chunk > 0, (keys_per_chunk + bs - 2) // bs + 1, 0)
    top = span.sort(descending=True).values[: own + top_k]
    return max(1, min(nkb, int(top.sum())))


@torch.no_grad()
def moc_routing(q, k, chunk_cu_seqlens, *, top_k: int, anchors=None, causal_routing: bool = False,
                cu_seqlens=None, block_size: int = 64, _checked=None) -> MoCRouting:
    """The MoC routing of :func:`moc_attention` as a block-sparse mask over the per-sequence layout (no gradient).

    Device-resident and loop-free: sizes come from the host copies of the boundaries / anchors made by the argument
    check (no device sync when those are given on the host; one copy each otherwise); everything that depends on q
    or k stays on q's device. ``block_indices`` is sized by a host bound (``_list_width``), so its last dimension
    may exceed the longest list (entries past ``block_counts`` are 0); ``block_counts`` is exact."""
    if _checked is None:
        _checked = check_moc_args(q, k, k, chunk_cu_seqlens, top_k, anchors, cu_seqlens, block_size, causal_routing)
    cb, sb, anc = _checked
    dev = q.device
    b, hq, n, d = q.shape
    hkv = k.shape[1]
    bs = block_size
    S, C = sb.numel() - 1, cb.numel() - 1
    identity = S == 1 and anc is None

    # Host sizes (CPU copies only).
    slen = sb[1:] - sb[:-1]
    if anc is None:
        lk, la, keys_per_chunk = slen, None, cb[1:] - cb[:-1]
    else:
        acum = F.pad(torch.cumsum(anc, 0), (1, 0))
        la = acum[sb[1:]] - acum[sb[:-1]]
        lk = slen - la
        keys_per_chunk = (cb[1:] - cb[:-1]) - (acum[cb[1:]] - acum[cb[:-1]])
    Lq, Lk = int(slen.max()), int(lk.max())
    La = int(la.max()) if la is not None else 0
    nqb, nkb = math.ceil(Lq / bs), math.ceil(Lk / bs)
    width = _list_width(cb, keys_per_chunk, top_k, bs, nkb)
    pad_k = bool((lk < Lk).any())

    # Device index arrays.
    cb_d = _on_device(cb, chunk_cu_seqlens, dev)
    sb_d = _on_device(sb, cu_seqlens, dev) if cu_seqlens is not None else torch.arange(2, device=dev) * n
    tok = torch.arange(n, device=dev)
    chunk = torch.searchsorted(cb_d[1:], tok, right=True)  # (N,) chunk of every token
    seq = torch.searchsorted(sb_d[1:], tok, right=True) if S > 1 else torch.zeros_like(tok)
    slen_d = sb_d[1:] - sb_d[:-1]
    q_index = _dense_index(sb_d, slen_d, Lq, n)  # (S * Lq,)
    if anc is None:
        k_index, lk_d, kcount = q_index, slen_d, (cb_d[1:] - cb_d[:-1]).float()
        kchunk, a_index, la_d = chunk, None, None
    else:
        anc_d = _on_device(anc, anchors, dev)
        kcum = F.pad(torch.cumsum(~anc_d, 0), (1, 0))  # (N + 1,) keys before each token
        lk_d = kcum[sb_d[1:]] - kcum[sb_d[:-1]]
        k_index = _flag_index(~anc_d, kcum, seq, sb_d, S, Lk, n)
        kcount = (kcum[cb_d[1:]] - kcum[cb_d[:-1]]).float()
        kchunk = torch.where(anc_d, C, chunk)  # anchors go to a dummy chunk C
        a_index = la_d = None
        if La > 0:
            acum_d = F.pad(torch.cumsum(anc_d, 0), (1, 0))
            a_index = _flag_index(anc_d, acum_d, seq, sb_d, S, La, n)
            la_d = acum_d[sb_d[1:]] - acum_d[sb_d[:-1]]

    # First / last chunk of every query / key block, (S, nb); empty blocks get (0, -1).
    chunk_pad = F.pad(chunk, (0, 1), value=-1)
    qf, ql, qvalid = _block_chunks(chunk_pad[q_index], slen_d, Lq, nqb, bs)
    kf, kl, _ = _block_chunks(chunk_pad[k_index], lk_d, Lk, nkb, bs)

    # Descriptors (fp32): chunk mean keys over routed tokens, query-block mean queries.
    ksum = chunk_key_sums(k, kchunk, C + (anc is not None))[:, :, :C]
    kmean = (ksum / kcount.clamp(min=1)[:, None]).repeat_interleave(hq // hkv, dim=1)  # (B, Hq, C, D)
    if S == 1:
        qb = F.pad(q.detach(), (0, 0, 0, nqb * bs - n)) if nqb * bs != n else q.detach().contiguous()
    else:
        blk = F.pad(q_index.view(S, Lq), (0, nqb * bs - Lq), value=n).flatten()
        qb = _rows(q.detach(), blk, n)
    qsum = qb.reshape(b, hq, S, nqb, bs, d).sum(4, dtype=torch.float32)
    jb = torch.arange(nqb, device=dev) * bs
    qcnt = (torch.minimum(jb[None] + bs, slen_d[:, None]) - jb[None]).clamp(min=1)
    qmean = qsum / qcnt[None, None, :, :, None]
    scores = torch.einsum("bhsnd,bhcd->bhsnc", qmean, kmean)  # (B, Hq, S, nqb, C)

    cid = torch.arange(C, device=dev)
    own = (cid >= qf[..., None]) & (cid <= ql[..., None]) & qvalid[..., None]  # (S, nqb, C)
    chunk_seq = torch.searchsorted(sb_d[1:], cb_d[:-1], right=True)
    cand = (chunk_seq == torch.arange(S, device=dev)[:, None, None]) & (kcount > 0) & ~own & qvalid[..., None]
    if causal_routing:
        cand &= cid < qf[..., None]
    sel = own.expand(b, hq, S, nqb, C).clone()
    kk = min(top_k, C)
    if kk > 0:
        val, idx = scores.masked_fill(~cand, float("-inf")).topk(kk, dim=-1)
        sel.scatter_(-1, idx, (val > float("-inf")) | sel.gather(-1, idx))
    # Key block [kf, kl] is visited iff a selected chunk lies in it: prefix sums over the chunk axis.
    P = F.pad(torch.cumsum(sel.to(torch.int32), -1), (1, 0))  # (B, Hq, S, nqb, C + 1)
    shape = (b, hq, S, nqb, nkb)
    hi = P.gather(-1, (kl + 1)[None, None, :, None, :].expand(shape))
    lo = P.gather(-1, kf[None, None, :, None, :].expand(shape))
    vis = hi > lo
    del hi, lo
    counts = vis.sum(-1, dtype=torch.int32)
    # Block lists, ascending: top-`width` of (nkb - block id) over the visited blocks (0 = not visited).
    key = torch.where(vis, nkb - torch.arange(nkb, device=dev, dtype=torch.int32), 0)
    top = key.topk(width, dim=-1).values
    bidx = torch.where(top > 0, nkb - top, 0).to(torch.int32)
    bidx = bidx.permute(0, 2, 1, 3, 4).reshape(b * S, hq, nqb, width).contiguous()
    counts = counts.permute(0, 2, 1, 3).reshape(b * S, hq, nqb).contiguous()
    # Valid by construction (distinct, in range, counts <= width): skip BlockSparse's host-side validation (a sync).
    mask = BlockSparse.trusted(bidx, counts, bs, max_index=nkb - 1).to_spec()
    lengths_k = lk_d.to(torch.int32).repeat(b)
    if pad_k:
        mask = mask & KeyPadding(lengths_k, max_length=Lk)
    lengths_a = la_d.to(torch.int32).repeat(b) if la_d is not None else None
    return MoCRouting(mask, None if identity else q_index, None if identity else k_index, a_index,
                      None if identity else seq * Lq + tok - sb_d[seq], S, Lq, Lk, La, lengths_k, lengths_a)


# Tokens per fp32 slice in chunk_key_sums: the fp32 copy of k it makes is B * Hkv * KEY_SUM_SLICE * D * 4 bytes
# (64 MB at Hkv 16, D 128) instead of all of k (512 MB at N65536; 2.2 GB at N180000 with 24 heads).
KEY_SUM_SLICE = 8192


def chunk_key_sums(k: torch.Tensor, chunk_of_token: torch.Tensor, n_slots: int) -> torch.Tensor:
    """Per-chunk sums of the keys: k (B, Hkv, N, D) any float dtype, chunk_of_token (N,) int64 in [0, n_slots).
    Returns (B, Hkv, n_slots, D) float32, accumulated from fp32 slices of KEY_SUM_SLICE tokens."""
    b, h, n, d = k.shape
    out = torch.zeros(b, h, n_slots, d, device=k.device, dtype=torch.float32)
    for start in range(0, n, KEY_SUM_SLICE):
        stop = min(n, start + KEY_SUM_SLICE)
        out.index_add_(2, chunk_of_token[start:stop], k[:, :, start:stop].detach().float())
    return out


def _rows(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """x[:, :, index] with zero rows where index == n, without a padded copy of x (differentiable)."""
    return x.index_select(2, index.clamp(max=n - 1)).masked_fill_((index == n)[:, None], 0)


def _gather(x: torch.Tensor, index: torch.Tensor, S: int, L: int) -> torch.Tensor:
    """(B, H, N, D) -> (B * S, H, L, D) per-sequence layout (zero rows where index == N)."""
    b, h, n, d = x.shape
    y = _rows(x, index, n).view(b, h, S, L, d)
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
        pad_a = KeyPadding(r.lengths_a, max_length=r.len_a)  # max given: no sync
        o2, l2 = attention(ql, ka, va, pad_a, scale=scale, backend=backend, return_lse=True)
        o, lse = merge_by_lse(o, lse, o2, l2)
    if r.out_index is not None:
        dv = o.shape[-1]
        o = o.view(b, S, hq, r.len_q, dv).transpose(1, 2).reshape(b, hq, S * r.len_q, dv)[:, :, r.out_index]
        if lse is not None:
            lse = lse.view(b, S, hq, r.len_q).transpose(1, 2).reshape(b, hq, S * r.len_q)[:, :, r.out_index]
    return (o, lse) if return_lse else o
