"""Triton kernels of VideoNSA's two per-token operations (see zoo/models/videonsa.py for the PyTorch oracles):

- :func:`topk_triton`: the released top-k (fla 0.3.1 ``parallel_nsa_topk`` semantics): per (token, KV group) the
  group-summed block scores ``exp(q.kc * scale - lse)`` of the earlier blocks, 1.0 per head for the current block,
  candidates walked in chunks of ``block_size`` blocks, each chunk bitonic-sorted and merged into the running top
  ``block_size / 2``; the first ``S = next_power_of_2(block_counts)`` ids are kept (-1 = empty). The compare-and-swap
  reproduces the network's tie order and its bit-XOR swap.
- :func:`selected_attention_triton`: per-token block-sparse attention (fla ``parallel_nsa_fwd`` semantics): token t
  of a KV group attends to the tokens ``<= t`` of each listed block that starts in ``[0, t]``.

One program per (token, batch * KV group); the group's query heads are the rows of the tile (padded to 16). Forward
only (the released model is served; training the released function needs the fla backward).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

__all__ = ["selected_attention_triton", "topk_triton"]


# ----------------------------------------------------------------------------------------------------- bitonic sort
@triton.jit
def _cas(x, ids, flip, I: tl.constexpr, N_DIMS: tl.constexpr):
    """Compare-and-swap at stride 2**(N_DIMS - I - 1) on a 1-D tile of 2**N_DIMS values (x fp32, ids int32)."""
    n_outer: tl.constexpr = x.numel >> N_DIMS
    shape: tl.constexpr = [n_outer * 2 ** I, 2, 2 ** (N_DIMS - I - 1)]
    sel = tl.arange(0, 2)[None, :, None]
    y = tl.reshape(x, shape)
    a = tl.reshape(tl.broadcast_to(tl.sum(y * (1 - sel), 1)[:, None, :], shape), x.shape)  # a*1 + b*0
    b = tl.reshape(tl.broadcast_to(tl.sum(y * sel, 1)[:, None, :], shape), x.shape)  # a*0 + b*1
    yi = tl.reshape(ids, shape)
    ai = tl.reshape(tl.broadcast_to(tl.sum(yi * (1 - sel), 1)[:, None, :], shape), x.shape)
    bi = tl.reshape(tl.broadcast_to(tl.sum(yi * sel, 1)[:, None, :], shape), x.shape)
    swap = (a > b) != flip
    xb = x.to(tl.int32, bitcast=True)
    xv = tl.where(swap, a.to(tl.int32, bitcast=True) ^ b.to(tl.int32, bitcast=True), tl.zeros_like(xb))
    iv = tl.where(swap, ai ^ bi, tl.zeros_like(ids))
    return (xb ^ xv).to(tl.float32, bitcast=True), ids ^ iv


@triton.jit
def _merge(x, ids, STAGE: tl.constexpr, ORDER: tl.constexpr, N_DIMS: tl.constexpr):
    """Bitonic merge of runs of 2**STAGE: ORDER 2 alternates the direction per run, 1 = descending, 0 = ascending."""
    n_outer: tl.constexpr = x.numel >> N_DIMS
    if ORDER == 2:
        shape: tl.constexpr = [n_outer * 2 ** (N_DIMS - 1 - STAGE), 2, 2 ** STAGE]
        flip = tl.reshape(tl.broadcast_to(tl.arange(0, 2)[None, :, None], shape), x.shape) != 0
    else:
        flip = tl.full(x.shape, ORDER, tl.int32) != 0
    for i in tl.static_range(STAGE):
        x, ids = _cas(x, ids, flip, i + (N_DIMS - STAGE), N_DIMS)
    return x, ids


@triton.jit
def _topk_kernel(Q, KC, LSE, OUT,
                 sqb, sqt, sqh, sqd, skb, skg, skc, skd, slb, slt, slh, sob, sot, sog, sos,
                 T0, NB, scale,
                 GH: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BH: tl.constexpr, BD: tl.constexpr,
                 BS: tl.constexpr, N_DIMS: tl.constexpr, S: tl.constexpr):
    t = T0 + tl.program_id(0)
    pid = tl.program_id(1)
    b = pid // G
    g = pid % G
    rows = tl.arange(0, BH)
    offs_d = tl.arange(0, BD)
    row_ok = rows < GH
    d_ok = offs_d < D
    q = tl.load(Q + b.to(tl.int64) * sqb + t.to(tl.int64) * sqt + (g * GH + rows)[:, None] * sqh
                + offs_d[None, :] * sqd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
    q = (q * scale).to(q.dtype)
    lse = tl.load(LSE + b.to(tl.int64) * slb + t.to(tl.int64) * slt + (g * GH + rows) * slh, mask=row_ok,
                  other=0.0)
    cur = t // BS
    offs_c = tl.arange(0, BS)
    best = tl.full([BS], -1.0, tl.float32)
    best_id = tl.zeros([BS], tl.int32)
    half = (offs_c < BS // 2).to(tl.float32)
    half_i = (offs_c < BS // 2).to(tl.int32)
    k_base = KC + b.to(tl.int64) * skb + g.to(tl.int64) * skg
    for i_c in range(0, cur + 1, BS):
        oc = i_c + offs_c
        kc = tl.load(k_base + oc[:, None].to(tl.int64) * skc + offs_d[None, :] * skd,
                     mask=(oc < NB)[:, None] & d_ok[None, :], other=0.0).to(q.dtype)
        if q.dtype == tl.float32:
            s = tl.dot(q, tl.trans(kc), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(kc))
        s = tl.where((cur > oc)[None, :], s, float("-inf"))
        p = tl.where((cur == oc)[None, :], 1.0, tl.exp(s - lse[:, None]))
        p = tl.where(row_ok[:, None], p, 0.0)
        sc = tl.sum(p, 0)
        ids = tl.where(oc <= cur, oc + 1, 0).to(tl.int32)
        for st in tl.static_range(1, N_DIMS):
            sc, ids = _merge(sc, ids, st, 2, N_DIMS)
        if i_c != 0:
            sc, ids = _merge(sc, ids, N_DIMS, 0, N_DIMS)
            sc = best * half + sc * (1 - half)
            ids = best_id * half_i + ids * (1 - half_i)
            sc, ids = _merge(sc, ids, N_DIMS, 1, N_DIMS)
        else:
            sc, ids = _merge(sc, ids, N_DIMS, 1, N_DIMS)
        best = sc
        best_id = ids
    first = tl.arange(0, BS // S) == 0
    top = tl.sum(tl.where(first[:, None], tl.reshape(best_id - 1, [BS // S, S]), 0), 0)
    tl.store(OUT + b.to(tl.int64) * sob + t.to(tl.int64) * sot + g * sog + tl.arange(0, S) * sos, top)


def topk_triton(q: torch.Tensor, kc: torch.Tensor, lse: torch.Tensor, block_counts: int, block_size: int,
                scale: float | None = None, token_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Same contract as :func:`zoo.models.videonsa.released_topk`: q (B, L, P, D) as read (any strides), kc
    (B, G, NB, D), lse (B, L, P) fp32 -> (B, L, G, S) int32. ``token_range=(t0, t1)`` computes only those tokens
    (the others are left uninitialised; for tests under the slow interpreter)."""
    b, n, p, d = q.shape
    g = kc.shape[1]
    s_top = triton.next_power_of_2(int(block_counts))
    n_dims = int(math.log2(block_size))
    if 2 ** n_dims != block_size or s_top > block_size // 2 or block_size < 16:
        raise ValueError(f"block_size must be a power of two >= max(16, 2 * S), got {block_size} (S = {s_top})")
    scale = d ** -0.5 if scale is None else scale
    out = torch.empty(b, n, g, s_top, dtype=torch.int32, device=q.device)
    gh = p // g
    lse = lse.float()
    t0, t1 = token_range or (0, n)
    _topk_kernel[(t1 - t0, b * g)](q, kc, lse, out, *q.stride(), *kc.stride(), *lse.stride(), *out.stride(),
                             t0, kc.shape[2], scale, GH=gh, G=g, D=d, BH=max(16, triton.next_power_of_2(gh)),
                             BD=max(16, triton.next_power_of_2(d)), BS=block_size, N_DIMS=n_dims, S=s_top,
                             num_warps=4)
    return out


# ---------------------------------------------------------------------------------------------- selected attention
@triton.jit
def _sel_kernel(Q, K, V, IDX, O,
                sqb, sqh, sqt, sqd, skb, skh, skt, skd, svb, svh, svt, svd, sib, sit, sig, sis,
                sob, soh, sot, sod, T, T0, scale,
                GH: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BH: tl.constexpr,
                BD: tl.constexpr, BDV: tl.constexpr, BS: tl.constexpr, S: tl.constexpr):
    t = T0 + tl.program_id(0)
    pid = tl.program_id(1)
    b = pid // G
    g = pid % G
    rows = tl.arange(0, BH)
    offs_d = tl.arange(0, BD)
    offs_v = tl.arange(0, BDV)
    offs_k = tl.arange(0, BS)
    row_ok = rows < GH
    q = tl.load(Q + b.to(tl.int64) * sqb + (g * GH + rows)[:, None].to(tl.int64) * sqh + t.to(tl.int64) * sqt
                + offs_d[None, :] * sqd, mask=row_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    q = (q * scale).to(q.dtype)
    k_base = K + b.to(tl.int64) * skb + g.to(tl.int64) * skh
    v_base = V + b.to(tl.int64) * svb + g.to(tl.int64) * svh
    i_base = IDX + b.to(tl.int64) * sib + t.to(tl.int64) * sit + g * sig
    m = tl.full([BH], float("-inf"), tl.float32)
    acc = tl.zeros([BH], tl.float32)
    o = tl.zeros([BH, BDV], tl.float32)
    for i in range(S):
        start = tl.load(i_base + i * sis).to(tl.int32) * BS
        if start >= 0 and start <= t:
            pos = start + offs_k
            kk = tl.load(k_base + pos[:, None].to(tl.int64) * skt + offs_d[None, :] * skd,
                         mask=(pos < T)[:, None] & (offs_d < D)[None, :], other=0.0)
            vv = tl.load(v_base + pos[:, None].to(tl.int64) * svt + offs_v[None, :] * svd,
                         mask=(pos < T)[:, None] & (offs_v < DV)[None, :], other=0.0)
            if q.dtype == tl.float32:
                s = tl.dot(q, tl.trans(kk), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(kk))
            s = tl.where((pos <= t)[None, :], s, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            r = tl.exp(m - m_new)
            pr = tl.exp(s - m_new[:, None])
            acc = acc * r + tl.sum(pr, 1)
            if q.dtype == tl.float32:
                o = o * r[:, None] + tl.dot(pr, vv, input_precision="ieee")
            else:
                o = o * r[:, None] + tl.dot(pr.to(vv.dtype), vv)
            m = m_new
    o = o / tl.where(acc > 0, acc, 1.0)[:, None]
    tl.store(O + b.to(tl.int64) * sob + (g * GH + rows)[:, None].to(tl.int64) * soh + t.to(tl.int64) * sot
             + offs_v[None, :] * sod, o.to(O.dtype.element_ty), mask=row_ok[:, None] & (offs_v < DV)[None, :])


def selected_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_indices: torch.Tensor,
                              block_size: int, scale: float | None = None,
                              token_range: tuple[int, int] | None = None) -> torch.Tensor:
    """Same contract as :func:`zoo.models.videonsa.selected_attention`: q (B, P, L, D), k / v (B, G, L, D),
    block_indices (B, L, G, S) -> (B, P, L, Dv) in q.dtype. ``token_range`` as in :func:`topk_triton`."""
    b, p, n, d = q.shape
    g = k.shape[1]
    gh = p // g
    dv = v.shape[-1]
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    out = torch.empty(b, p, n, dv, dtype=q.dtype, device=q.device)
    scale = d ** -0.5 if scale is None else scale
    t0, t1 = token_range or (0, n)
    _sel_kernel[(t1 - t0, b * g)](q, k, v, block_indices, out, *q.stride(), *k.stride(), *v.stride(),
                            *block_indices.stride(), *out.stride(), n, t0, scale, GH=gh, G=g, D=d, DV=dv,
                            BH=max(16, triton.next_power_of_2(gh)), BD=max(16, triton.next_power_of_2(d)),
                            BDV=max(16, triton.next_power_of_2(dv)), BS=block_size, S=block_indices.shape[-1],
                            num_warps=4)
    return out
