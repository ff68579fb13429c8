"""FlashAttention-2 style Triton backward.

One kernel per query tile computes dq (and delta = rowsum(o * do) in fp32, the usual preprocess, fused in); then one
kernel per key tile accumulates dk/dv over the query tiles that can see it and over the query heads of its KV group
(GQA sums need no second pass). Both visit only the tiles the mask reaches; block-sparse lists are transposed on
the host for the dk/dv kernel and walked as one flat loop over (entry, tile) (over the heads sharing a list too, in
dk/dv) so the pipeliner can prefetch the next listed tile. dq, and dk/dv of dense, windowed and varlen masks and of
block-sparse masks whose key blocks are each selected by at most SEG query blocks, are deterministic (plain stores,
no atomics).

Long transposed lists (a key block that most query blocks select, e.g. Native Sparse Attention's block 0) would make
one dk/dv program walk them all while the rest of the grid idles. So the block-sparse dk/dv grid gets a third
dimension of list segments of ``SEG = DKDV_SEGMENT_ROWS // block_size`` entries, sized from the number of query blocks
(no device sync); a key tile whose lists fit one segment is stored plainly, longer ones are summed with fp32
``tl.atomic_add`` into zeroed buffers (order-dependent rounding). ``torch.use_deterministic_algorithms(True)`` keeps
the single-program path.

Block-sparse masks can also run as one kernel (``atomic_dq_enabled``: ``ZOO_ATTN_ATOMIC_DQ=1``): the dk/dv kernel adds
each tile's dq = scale * dS^T K into a zeroed fp32 buffer with atomics, so QK^T and dO V^T are computed once per
visited tile instead of once more in the dq kernel (6 tile GEMMs instead of 8); delta = rowsum(o * do) is then a
torch reduction before the launch.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from .triton_common import (INTERPRET, check_inputs, head_block, key_bounds, last_dim_contiguous,
                            pack_heads, program_heads, prune_configs, query_bounds, seq_info, split_range,
                            transpose_block_lists, visible, visible_t)

LOG2E = 1.4426950408889634

# Query rows per dk/dv list segment (per query head): SEG = max(1, DKDV_SEGMENT_ROWS // block_size) list entries,
# 32 at block 64. Each extra segment costs one more k/v tile load and one fp32 atomic add of the dk/dv tile, about
# three list entries' worth of memory traffic for one head, against GROUP x SEG entries of work: <= ~10% at GROUP 1,
# < 1% at GROUP 16, and only on the tiles that split. The longest program walks GROUP x 2048 query rows instead of
# GROUP x Nq (NSA at T65536, GROUP 16: 512 list entries instead of 16384). Tests patch it to split tiny problems.
DKDV_SEGMENT_ROWS = 2048
# ... and at least this many times the mean list length bound (see dkdv_segments); tests set 0.
DKDV_MEAN_FACTOR = 2
# Block-sparse dq inside the dk/dv kernel (see atomic_dq_enabled); ZOO_ATTN_ATOMIC_DQ overrides.
ATOMIC_DQ_DEFAULT = False


# ---------------------------------------------------------------------------------------------------------------
# dk / dv
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _row_tiles(a_base, b_base, stride_a, stride_b, offs, bound, offs_d, offs_dv, HEAD_DIM: tl.constexpr,
               HEAD_DIM_V: tl.constexpr, MASKED: tl.constexpr):
    """Rows ``offs`` of a (rows, HEAD_DIM) and a (rows, HEAD_DIM_V) tensor (q and do, or k and v), and the row mask
    (rows < bound; every row when MASKED == 0); masked rows load as zeros."""
    if MASKED == 0:
        rmask = offs >= 0
    else:
        rmask = offs < bound
    a = tl.load(a_base + offs[:, None] * stride_a + offs_d[None, :],
                mask=rmask[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    b = tl.load(b_base + offs[:, None] * stride_b + offs_dv[None, :],
                mask=rmask[:, None] & (offs_dv[None, :] < HEAD_DIM_V), other=0.0)
    return a, b, rmask


@triton.jit
def _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_don, offs_n, offs_d, offs_dv,
               m, need_mask, Lq, kv_len, off, wl, wr, qk_scale, dq_base, stride_dqn, scale,
               HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
               CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, PREC: tl.constexpr,
               ATOMIC_DQ: tl.constexpr):
    """dk/dv contribution of query rows [m, m + BLOCK_M) of one head; MASKED as in triton_fwd._fwd_tile. ATOMIC_DQ:
    also add this tile's dq = scale * dS^T K to the fp32 buffer at dq_base (FA2's single-kernel backward: QK^T
    and dO V^T are computed once, not again in a dq kernel)."""
    offs_m = m + tl.arange(0, BLOCK_M)
    q, do, rmask = _row_tiles(q_base, do_base, stride_qn, stride_don, offs_m, Lq, offs_d, offs_dv, HEAD_DIM,
                              HEAD_DIM_V, MASKED)
    lse = tl.load(lse_base + offs_m, mask=rmask, other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    delta = tl.load(delta_base + offs_m, mask=rmask, other=0.0)
    s_t = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale
    p_t = tl.math.exp2(s_t - lse2[None, :])
    if MASKED == 1:
        p_t = tl.where(visible_t(offs_n, offs_m, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR), p_t, 0.0)
    elif MASKED == 2:
        if need_mask:
            p_t = tl.where(visible_t(offs_n, offs_m, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR), p_t, 0.0)
    dv += tl.dot(p_t.to(do.dtype), do, input_precision=PREC)
    dp_t = tl.dot(v, tl.trans(do), input_precision=PREC)
    ds_t = p_t * (dp_t - delta[None, :])
    dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PREC)
    if ATOMIC_DQ:
        dq_t = tl.dot(tl.trans(ds_t).to(k.dtype), k, input_precision=PREC) * scale
        tl.atomic_add(dq_base + offs_m[:, None] * stride_dqn + offs_d[None, :], dq_t,
                      mask=rmask[:, None] & (offs_d[None, :] < HEAD_DIM), sem="relaxed")
    return dk, dv


@triton.jit
def _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_don, offs_n, offs_d, offs_dv,
                m_from, m_to, Lq, kv_len, off, wl, wr, qk_scale,
                HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
                CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, PREC: tl.constexpr):
    for m in tl.range(m_from, m_to, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_don, offs_n,
                            offs_d, offs_dv, m, False, Lq, kv_len, off, wl, wr, qk_scale, q_base, 0, 1.0, HEAD_DIM,
                            HEAD_DIM_V, BLOCK_M, MASKED, CAUSAL, HAS_WL, HAS_WR, PREC, False)
    return dk, dv


@triton.jit
def _dkdv_sparse_flat(dk, dv, k, v, q_ptr, do_ptr, lse_ptr, delta_ptr, stride_qh, stride_doh, stride_lh, stride_qn,
                      stride_don, h0, n_heads, idx_base, t_from, t_to, lo, hi, flo, fhi, offs_n, offs_d, offs_dv,
                      Lq, kv_len, off, wl, wr, qk_scale, dq_ptr, stride_dqh, stride_dqn, scale,
                      HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                      BLOCK_M: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
                      PREC: tl.constexpr, ATOMIC_DQ: tl.constexpr):
    """Entries [t_from, t_to) of one transposed list for n_heads consecutive query heads from h0 (the heads that
    share it), as one pipelinable loop over (head, entry, query tile). q_ptr / do_ptr / lse_ptr / delta_ptr point at
    head 0 of the sequence."""
    TPB: tl.constexpr = BLOCK_SIZE // BLOCK_M
    per_head = (t_to - t_from) * TPB
    div = tl.maximum(per_head, 1)  # the pipeliner's prologue may evaluate the indices of an empty loop
    for i in tl.range(0, n_heads * per_head):
        h = (h0 + i // div).to(tl.int64)
        j = i % div
        start = tl.load(idx_base + t_from + j // TPB) * BLOCK_SIZE
        m = start + (j % TPB) * BLOCK_M
        a, b, c, e = split_range(start, start + BLOCK_SIZE, lo, hi, flo, fhi, BLOCK_M)
        dk, dv = _dkdv_tile(dk, dv, k, v, q_ptr + h * stride_qh, do_ptr + h * stride_doh, lse_ptr + h * stride_lh,
                            delta_ptr + h * stride_lh, stride_qn, stride_don, offs_n, offs_d, offs_dv, m,
                            (m < b) | (m >= c), Lq, kv_len, off, wl, wr, qk_scale, dq_ptr + h * stride_dqh,
                            stride_dqn, scale, HEAD_DIM, HEAD_DIM_V, BLOCK_M, 2, CAUSAL, HAS_WL, HAS_WR, PREC,
                            ATOMIC_DQ)
    return dk, dv


_DKDV_FAST = [(32, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3)]
_DQ_FAST = [(128, 32, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3)]
_BWD_D256 = [(32, 32, 4, 2), (64, 32, 4, 2)]
_BWD_SMALL = [(16, 16, 4, 2), (32, 32, 4, 1)]


def _bwd_configs(fast):
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
            for m, n, w, st in fast + _BWD_D256 + _BWD_SMALL]


def _prune_dkdv(configs, named_args, **kwargs):
    return prune_configs(configs, named_args, kwargs, _DKDV_FAST, _BWD_D256, _BWD_SMALL)


def _prune_dq(configs, named_args, **kwargs):
    return prune_configs(configs, named_args, kwargs, _DQ_FAST, _BWD_D256, _BWD_SMALL)


_KEY = ["HEAD_DIM", "HEAD_DIM_V", "CAUSAL", "HAS_WL", "HAS_WR", "VARLEN", "SPARSE", "BLOCK_SIZE", "IS_FP32",
        "wl", "wr"]  # window sizes: narrow bands tune over more tiles (prune_configs)
_DKDV_KEY = _KEY + ["SPLIT", "SEG", "ATOMIC_DQ"]
_DQ_KEY = _KEY + ["PACK"]


@triton.autotune(configs=_bwd_configs(_DKDV_FAST), key=_DKDV_KEY,
                  prune_configs_by={"early_config_prune": _prune_dkdv})
@triton.jit
def _attn_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, DQ, CU_Q, CU_K, SEQLENS_K, TIDX, TCNT,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_don, stride_lb, stride_lh,
    stride_dkb, stride_dkh, stride_dkn, stride_dvb, stride_dvh, stride_dvn, stride_dqb, stride_dqh, stride_dqn,
    stride_ib, stride_ih, stride_ik, stride_cb, stride_ch,
    HKV, GROUP, HB_DIV, NQ, NK, qk_scale, scale, wl, wr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, VARLEN: tl.constexpr,
    HAS_SEQLENS_K: tl.constexpr, SPARSE: tl.constexpr, BLOCK_SIZE: tl.constexpr, IS_FP32: tl.constexpr,
    SPLIT: tl.constexpr, SEG: tl.constexpr, ATOMIC_DQ: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # ATOMIC_DQ (block-sparse only): dq is added here into the zeroed fp32 DQ buffer; no dq kernel runs.
    # SPLIT (block-sparse only): program (key tile, bh, seg) walks entries [seg*SEG, (seg+1)*SEG) of each list; DK/DV
    # are zeroed fp32 buffers, added to atomically when the tile's longest list needs more than one segment.
    PREC: tl.constexpr = "ieee" if IS_FP32 else "tf32"
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_b = pid_bh // HKV
    hk = pid_bh % HKV
    q_start, Lq, k_start, Lk, kv_len = seq_info(pid_b, CU_Q, CU_K, SEQLENS_K, NQ, NK, VARLEN, HAS_SEQLENS_K)
    n0 = pid_n * BLOCK_N
    if n0 >= Lk:
        return
    off = Lk - Lq
    bt = pid_b.to(tl.int64)
    if VARLEN:
        bt = bt * 0
    if SPLIT:
        seg0 = tl.program_id(2) * SEG
        longest = seg0 * 0
        for g in tl.range(0, GROUP, HB_DIV):  # one visit per distinct list (Hb = Hkv: one; Hb = Hq: GROUP)
            hb = (hk * GROUP + g).to(tl.int64) // HB_DIV
            longest = tl.maximum(longest, tl.load(TCNT + bt * stride_cb + hb * stride_ch + n0 // BLOCK_SIZE))
        if seg0 >= longest:  # nothing to add; the buffers start at zero
            return
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    nmask = offs_n < Lk
    k_off = bt * stride_kb + hk.to(tl.int64) * stride_kh + k_start.to(tl.int64) * stride_kn
    v_off = bt * stride_vb + hk.to(tl.int64) * stride_vh + k_start.to(tl.int64) * stride_vn
    k = tl.load(K + k_off + offs_n[:, None] * stride_kn + offs_d[None, :],
                mask=nmask[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    v = tl.load(V + v_off + offs_n[:, None] * stride_vn + offs_dv[None, :],
                mask=nmask[:, None] & (offs_dv[None, :] < HEAD_DIM_V), other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    lo, hi, flo, fhi = query_bounds(n0, BLOCK_N, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR)
    if SPARSE:  # one flat loop per list, over the HB_DIV heads (1 or GROUP) that share it
        for g0 in tl.range(0, GROUP, HB_DIV):
            h0 = hk * GROUP + g0
            hb = (h0 // HB_DIV).to(tl.int64)
            kb = n0 // BLOCK_SIZE
            cnt = tl.load(TCNT + bt * stride_cb + hb * stride_ch + kb)
            if SPLIT:
                t_from = seg0
                t_to = tl.minimum(cnt, seg0 + SEG)
            else:
                t_from = cnt * 0
                t_to = cnt
            dk, dv = _dkdv_sparse_flat(
                dk, dv, k, v, Q + bt * stride_qb + q_start.to(tl.int64) * stride_qn,
                DO + bt * stride_dob + q_start.to(tl.int64) * stride_don, LSE + bt * stride_lb + q_start,
                DELTA + bt * stride_lb + q_start, stride_qh, stride_doh, stride_lh, stride_qn, stride_don, h0,
                HB_DIV, TIDX + bt * stride_ib + hb * stride_ih + kb.to(tl.int64) * stride_ik,
                t_from, tl.maximum(t_to, t_from), lo, hi, flo, fhi, offs_n, offs_d, offs_dv, Lq, kv_len, off, wl,
                wr, qk_scale, DQ + bt * stride_dqb + q_start.to(tl.int64) * stride_dqn, stride_dqh, stride_dqn,
                scale, HEAD_DIM, HEAD_DIM_V, BLOCK_SIZE, BLOCK_M, CAUSAL, HAS_WL, HAS_WR, PREC, ATOMIC_DQ)
    else:
        a, b, c, e = split_range(lo * 0, Lq, lo, hi, flo, fhi, BLOCK_M)
        for g in tl.range(0, GROUP):
            h = (hk * GROUP + g).to(tl.int64)
            q_base = Q + bt * stride_qb + h * stride_qh + q_start.to(tl.int64) * stride_qn
            do_base = DO + bt * stride_dob + h * stride_doh + q_start.to(tl.int64) * stride_don
            lse_base = LSE + bt * stride_lb + h * stride_lh + q_start
            delta_base = DELTA + bt * stride_lb + h * stride_lh + q_start
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_don, offs_n,
                                 offs_d, offs_dv, a, b, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V,
                                 BLOCK_M, True, CAUSAL, HAS_WL, HAS_WR, PREC)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_don, offs_n,
                                 offs_d, offs_dv, b, c, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V,
                                 BLOCK_M, False, CAUSAL, HAS_WL, HAS_WR, PREC)
            dk, dv = _dkdv_tiles(dk, dv, k, v, q_base, do_base, lse_base, delta_base, stride_qn, stride_don, offs_n,
                                 offs_d, offs_dv, c, e, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V,
                                 BLOCK_M, True, CAUSAL, HAS_WL, HAS_WR, PREC)
    dk_off = bt * stride_dkb + hk.to(tl.int64) * stride_dkh + k_start.to(tl.int64) * stride_dkn
    dv_off = bt * stride_dvb + hk.to(tl.int64) * stride_dvh + k_start.to(tl.int64) * stride_dvn
    if SPLIT:
        dk_ptrs = DK + dk_off + offs_n[:, None] * stride_dkn + offs_d[None, :]
        dv_ptrs = DV + dv_off + offs_n[:, None] * stride_dvn + offs_dv[None, :]
        dk_mask = nmask[:, None] & (offs_d[None, :] < HEAD_DIM)
        dv_mask = nmask[:, None] & (offs_dv[None, :] < HEAD_DIM_V)
        if longest > SEG:  # other segments add into this tile too
            tl.atomic_add(dk_ptrs, dk * scale, mask=dk_mask, sem="relaxed")
            tl.atomic_add(dv_ptrs, dv, mask=dv_mask, sem="relaxed")
        else:  # the only program of this tile: deterministic plain store
            tl.store(dk_ptrs, dk * scale, mask=dk_mask)
            tl.store(dv_ptrs, dv, mask=dv_mask)
    else:
        tl.store(DK + dk_off + offs_n[:, None] * stride_dkn + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty),
                 mask=nmask[:, None] & (offs_d[None, :] < HEAD_DIM))
        tl.store(DV + dv_off + offs_n[:, None] * stride_dvn + offs_dv[None, :], dv.to(DV.dtype.element_ty),
                 mask=nmask[:, None] & (offs_dv[None, :] < HEAD_DIM_V))


# The same kernel behind a second autotuner for SPLIT=True: autotuning runs it several times, so its fp32
# accumulators are zeroed before every timed run (reset_to_zero; triton 3.6 Autotuner.run also zeroes them once more
# after tuning, before the real launch). The plain launcher above has no reset, so the unsplit path pays no zeroing.
_attn_bwd_dkdv_split_kernel = triton.autotune(configs=_bwd_configs(_DKDV_FAST), key=_DKDV_KEY,
                                              prune_configs_by={"early_config_prune": _prune_dkdv},
                                              reset_to_zero=["DK", "DV"])(_attn_bwd_dkdv_kernel.fn)
# ... and behind two more for ATOMIC_DQ (its fp32 DQ buffer, and DK/DV when split, zeroed before every timed run).
_attn_bwd_dkdv_atomic_dq_kernel = triton.autotune(configs=_bwd_configs(_DKDV_FAST), key=_DKDV_KEY,
                                                  prune_configs_by={"early_config_prune": _prune_dkdv},
                                                  reset_to_zero=["DQ"])(_attn_bwd_dkdv_kernel.fn)
_attn_bwd_dkdv_split_atomic_dq_kernel = triton.autotune(configs=_bwd_configs(_DKDV_FAST), key=_DKDV_KEY,
                                                        prune_configs_by={"early_config_prune": _prune_dkdv},
                                                        reset_to_zero=["DK", "DV", "DQ"])(_attn_bwd_dkdv_kernel.fn)


# ---------------------------------------------------------------------------------------------------------------
# dq
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv, n, need_mask,
             Lq, kv_len, off, wl, wr, qk_scale,
             HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
             CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, PREC: tl.constexpr):
    """dq contribution of keys [n, n + BLOCK_N); MASKED as in triton_fwd._fwd_tile (0 none, 1 mask, 2 runtime)."""
    offs_n = n + tl.arange(0, BLOCK_N)
    k, v, _ = _row_tiles(k_base, v_base, stride_kn, stride_vn, offs_n, kv_len, offs_d, offs_dv, HEAD_DIM, HEAD_DIM_V,
                         MASKED)
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
    p = tl.math.exp2(s - lse2[:, None])
    if MASKED == 1:
        p = tl.where(visible(offs_m, offs_n, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR), p, 0.0)
    elif MASKED == 2:
        if need_mask:
            p = tl.where(visible(offs_m, offs_n, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR), p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=PREC)
    ds = p * (dp - delta[:, None])
    return dq + tl.dot(ds.to(k.dtype), k, input_precision=PREC)


@triton.jit
def _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
              n_from, n_to, Lq, kv_len, off, wl, wr, qk_scale,
              HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, PREC: tl.constexpr):
    for n in tl.range(n_from, n_to, BLOCK_N):
        dq = _dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv, n,
                      False, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, MASKED, CAUSAL,
                      HAS_WL, HAS_WR, PREC)
    return dq


@triton.jit
def _dq_sparse_flat(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                    idx_base, cnt, lo, hi, flo, fhi, Lq, kv_len, off, wl, wr, qk_scale,
                    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, PREC: tl.constexpr):
    """All key tiles of a block list in one pipelinable loop (see triton_fwd._fwd_sparse_flat)."""
    TPB: tl.constexpr = BLOCK_SIZE // BLOCK_N
    for i in tl.range(0, cnt * TPB):
        start = tl.load(idx_base + i // TPB) * BLOCK_SIZE
        n = start + (i % TPB) * BLOCK_N
        a, b, c, e = split_range(start, start + BLOCK_SIZE, lo, hi, flo, fhi, BLOCK_N)
        dq = _dq_tile(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv, n,
                      (n < b) | (n >= c), Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, 2,
                      CAUSAL, HAS_WL, HAS_WR, PREC)
    return dq


@triton.autotune(configs=_bwd_configs(_DQ_FAST), key=_DQ_KEY, prune_configs_by={"early_config_prune": _prune_dq})
@triton.jit
def _attn_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, O, CU_Q, CU_K, SEQLENS_K, BIDX, BCNT,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_dob, stride_doh, stride_don, stride_lb, stride_lh, stride_dqb, stride_dqh, stride_dqn,
    stride_ob, stride_oh, stride_on,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch,
    H, GROUP, HB_DIV, NQ, NK, qk_scale, scale, wl, wr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, VARLEN: tl.constexpr,
    HAS_SEQLENS_K: tl.constexpr, SPARSE: tl.constexpr, BLOCK_SIZE: tl.constexpr, IS_FP32: tl.constexpr,
    PACK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # PACK > 1 (head packing, see triton_fwd): row r is head h + r // ROWS at position m0 + r % ROWS.
    PREC: tl.constexpr = "ieee" if IS_FP32 else "tf32"
    ROWS: tl.constexpr = BLOCK_M // PACK
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_b, h = program_heads(pid_bh, H, PACK)
    hk = h // GROUP
    q_start, Lq, k_start, Lk, kv_len = seq_info(pid_b, CU_Q, CU_K, SEQLENS_K, NQ, NK, VARLEN, HAS_SEQLENS_K)
    m0 = pid_m * ROWS
    if m0 >= Lq:
        return
    off = Lk - Lq
    bt = pid_b.to(tl.int64)
    if VARLEN:
        bt = bt * 0
    if PACK == 1:
        offs_m = m0 + tl.arange(0, BLOCK_M)
    else:
        offs_m = m0 + tl.arange(0, BLOCK_M) % ROWS
        dh = (tl.arange(0, BLOCK_M) // ROWS).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    rmask = offs_m < Lq
    q_off = bt * stride_qb + h.to(tl.int64) * stride_qh + q_start.to(tl.int64) * stride_qn
    do_off = bt * stride_dob + h.to(tl.int64) * stride_doh + q_start.to(tl.int64) * stride_don
    l_off = bt * stride_lb + h.to(tl.int64) * stride_lh + q_start
    o_off = bt * stride_ob + h.to(tl.int64) * stride_oh + q_start.to(tl.int64) * stride_on
    q_rows = offs_m[:, None] * stride_qn
    do_rows = offs_m[:, None] * stride_don
    l_rows = offs_m
    o_rows = offs_m[:, None] * stride_on
    if PACK > 1:
        q_rows = q_rows + dh[:, None] * stride_qh
        do_rows = do_rows + dh[:, None] * stride_doh
        l_rows = l_rows + dh * stride_lh
        o_rows = o_rows + dh[:, None] * stride_oh
    q = tl.load(Q + q_off + q_rows + offs_d[None, :],
                mask=rmask[:, None] & (offs_d[None, :] < HEAD_DIM), other=0.0)
    do = tl.load(DO + do_off + do_rows + offs_dv[None, :],
                 mask=rmask[:, None] & (offs_dv[None, :] < HEAD_DIM_V), other=0.0)
    lse = tl.load(LSE + l_off + l_rows, mask=rmask, other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    o = tl.load(O + o_off + o_rows + offs_dv[None, :],
                mask=rmask[:, None] & (offs_dv[None, :] < HEAD_DIM_V), other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)  # preprocess fused here; the dk/dv kernel reads it
    tl.store(DELTA + l_off + l_rows, delta, mask=rmask)
    k_base = K + bt * stride_kb + hk.to(tl.int64) * stride_kh + k_start.to(tl.int64) * stride_kn
    v_base = V + bt * stride_vb + hk.to(tl.int64) * stride_vh + k_start.to(tl.int64) * stride_vn
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    lo, hi, flo, fhi = key_bounds(m0, ROWS, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR)
    if SPARSE:
        hb = h // HB_DIV
        qb = m0 // BLOCK_SIZE
        idx_base = BIDX + bt * stride_ib + hb.to(tl.int64) * stride_ih + qb.to(tl.int64) * stride_iq
        cnt = tl.load(BCNT + bt * stride_cb + hb.to(tl.int64) * stride_ch + qb)
        dq = _dq_sparse_flat(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                             idx_base, cnt, lo, hi, flo, fhi, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM,
                             HEAD_DIM_V, BLOCK_SIZE, BLOCK_N, CAUSAL, HAS_WL, HAS_WR, PREC)
    else:
        a, b, c, e = split_range(lo * 0, kv_len, lo, hi, flo, fhi, BLOCK_N)
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                       a, b, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, True,
                       CAUSAL, HAS_WL, HAS_WR, PREC)
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                       b, c, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, False,
                       CAUSAL, HAS_WL, HAS_WR, PREC)
        dq = _dq_tiles(dq, q, do, lse2, delta, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                       c, e, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, True,
                       CAUSAL, HAS_WL, HAS_WR, PREC)
    dq_off = bt * stride_dqb + h.to(tl.int64) * stride_dqh + q_start.to(tl.int64) * stride_dqn
    dq_rows = offs_m[:, None] * stride_dqn
    if PACK > 1:
        dq_rows = dq_rows + dh[:, None] * stride_dqh
    tl.store(DQ + dq_off + dq_rows + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty),
             mask=rmask[:, None] & (offs_d[None, :] < HEAD_DIM))


# ---------------------------------------------------------------------------------------------------------------
# launcher
# ---------------------------------------------------------------------------------------------------------------
def atomic_dq_enabled(sparse: bool) -> bool:
    """Whether the block-sparse backward adds dq inside the dk/dv kernel (one kernel; fp32 atomics, so not under
    ``torch.use_deterministic_algorithms(True)``) instead of a second kernel that recomputes QK^T and dO V^T.
    ``ZOO_ATTN_ATOMIC_DQ=1`` turns it on, ``0`` off; the default is ``ATOMIC_DQ_DEFAULT`` (off until the H200 suite
    ``kernels_sparse_dq`` has measured both on the same card)."""
    if not sparse or torch.are_deterministic_algorithms_enabled():
        return False
    env = os.environ.get("ZOO_ATTN_ATOMIC_DQ")
    return ATOMIC_DQ_DEFAULT if env is None else env == "1"


def dkdv_segments(n_qblocks: int, block_size: int, max_per_query: int = 0, n_kblocks: int = 1) -> tuple[int, int]:
    """(SEG, NSEG) for the block-sparse dk/dv grid: list entries per segment and segments per key tile.

    ``n_qblocks`` bounds every transposed list's length (known without a device sync); 0 = not block-sparse.
    ``max_per_query`` (the lists' allocated width) bounds the mean transposed list length by
    ``n_qblocks * max_per_query / n_kblocks``; SEG is at least DKDV_MEAN_FACTOR (2) times that, so only outlier
    key blocks (NSA's block 0, a popular MoC chunk) split while typical ones keep one deterministic program. NSEG is
    1 (no split, plain stores) for dense masks, short lists and under ``torch.use_deterministic_algorithms(True)``."""
    if n_qblocks <= 0 or torch.are_deterministic_algorithms_enabled():
        return 1, 1
    seg = max(1, DKDV_SEGMENT_ROWS // block_size,
              DKDV_MEAN_FACTOR * triton.cdiv(n_qblocks * max_per_query, max(1, n_kblocks)))
    nseg = triton.cdiv(n_qblocks, seg)
    return (seg, nseg) if nseg > 1 else (1, 1)


def attention_bwd(do, q, k, v, o, lse, *, scale: float, causal: bool = False, window_left: int = -1,
                  window_right: int = -1, seqlens_k=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q: int = 0,
                  max_seqlen_k: int = 0, block_indices=None, block_counts=None, block_size: int = 0):
    """Gradients of ``attention_fwd``.

    do, o (B, Hq, Nq, Dv); lse (B, Hq, Nq) float32 from the forward. Returns dq, dk, dv in the shapes and dtypes of
    q, k, v (dk/dv summed over the query heads of each KV group). Rows with nothing visible get zero gradient.
    """
    ma = check_inputs(q, k, v, scale=scale, causal=causal, window_left=window_left, window_right=window_right,
                      seqlens_k=seqlens_k, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                      max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, block_indices=block_indices,
                      block_counts=block_counts, block_size=block_size)
    B, H, Nq, D = q.shape
    Hkv, Nk, Dv = k.shape[1], k.shape[2], v.shape[3]
    for name, t in (("do", do), ("o", o)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (B, H, Nq, Dv):
            raise ValueError(f"{name} must have shape {(B, H, Nq, Dv)}, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on {q.device}, got {t.device}")
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"{name} must be a float tensor, got {t.dtype}")
    if not isinstance(lse, torch.Tensor) or tuple(lse.shape) != (B, H, Nq):
        raise ValueError(f"lse must have shape {(B, H, Nq)}")
    if lse.device != q.device:
        raise ValueError(f"lse must be on {q.device}, got {lse.device}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be finite, got {scale}")
    scale = float(scale)
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    do = last_dim_contiguous(do.to(q.dtype))
    lse = lse.to(torch.float32).contiguous()
    o = last_dim_contiguous(o)
    delta = torch.empty(B, H, Nq, dtype=torch.float32, device=q.device)  # written by the dq kernel
    atomic_dq = atomic_dq_enabled(ma.sparse)

    seg, nseg = dkdv_segments(triton.cdiv(Nq, ma.block_size) if ma.sparse else 0, ma.block_size,
                              ma.block_indices.shape[-1] if ma.sparse else 0, triton.cdiv(Nk, max(1, ma.block_size)))
    split = nseg > 1
    alloc = torch.zeros if ma.varlen else torch.empty
    if atomic_dq:  # fp32 accumulator for the dk/dv kernel's atomic adds; delta computed here (no dq kernel)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        delta = (o.float() * do.float()).sum(-1).contiguous()
    else:
        dq = alloc(q.shape, dtype=q.dtype, device=q.device)
    if split:  # fp32 accumulators, cast below
        dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
    else:
        dk = alloc(k.shape, dtype=k.dtype, device=k.device)
        dv = alloc(v.shape, dtype=v.dtype, device=v.device)
    dev = q.device
    dummy = torch.zeros(1, dtype=torch.int32, device=dev)
    if ma.varlen:
        n_seq = ma.cu_seqlens_q.numel() - 1
        max_q, max_k = ma.max_seqlen_q, ma.max_seqlen_k
    else:
        n_seq, max_q, max_k = B, Nq, Nk
    if n_seq == 0:
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
    if ma.sparse:
        bidx, bcnt = ma.block_indices, ma.block_counts
        hb_div = H // bidx.shape[1]
        tidx, tcnt = transpose_block_lists(bidx, bcnt, triton.cdiv(Nk, ma.block_size))
        sb = (bidx.stride(0), bidx.stride(1), bidx.stride(2), bcnt.stride(0), bcnt.stride(1))
        st = (tidx.stride(0), tidx.stride(1), tidx.stride(2), tcnt.stride(0), tcnt.stride(1))
    else:
        bidx = bcnt = tidx = tcnt = dummy
        hb_div = 1
        sb = st = (0, 0, 0, 0, 0)
    cu_q = ma.cu_seqlens_q if ma.varlen else dummy
    cu_k = ma.cu_seqlens_k if ma.varlen else dummy
    sk = ma.seqlens_k if ma.seqlens_k is not None else dummy
    meta = dict(HEAD_DIM=D, HEAD_DIM_V=Dv, BLOCK_D=head_block(D), BLOCK_DV=head_block(Dv), CAUSAL=ma.causal,
                HAS_WL=ma.window_left >= 0, HAS_WR=ma.window_right >= 0, VARLEN=ma.varlen,
                HAS_SEQLENS_K=ma.seqlens_k is not None, SPARSE=ma.sparse,
                BLOCK_SIZE=ma.block_size if ma.sparse else 0, IS_FP32=q.dtype == torch.float32)
    common_strides = (q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0),
                      v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2), lse.stride(0),
                      lse.stride(1))
    # dq first: it also computes delta = rowsum(o * do), which the dk/dv kernel reads. With head packing a dq
    # program takes BLOCK_M // pack positions of pack heads.
    pack = pack_heads(ma, H, Hkv)
    if max_q > 0 and not atomic_dq:
        _attn_bwd_dq_kernel[lambda m: (triton.cdiv(max_q, m["BLOCK_M"] // pack), n_seq * H // pack)](
            q, k, v, do, lse, delta, dq, o, cu_q, cu_k, sk, bidx, bcnt, *common_strides,
            dq.stride(0), dq.stride(1), dq.stride(2), o.stride(0), o.stride(1), o.stride(2), *sb,
            H, H // Hkv, hb_div, Nq, Nk, scale * LOG2E, scale, ma.window_left, ma.window_right, **meta, PACK=pack)
    if max_k > 0:
        if atomic_dq:
            kernel = _attn_bwd_dkdv_split_atomic_dq_kernel if split else _attn_bwd_dkdv_atomic_dq_kernel
        else:
            kernel = _attn_bwd_dkdv_split_kernel if split else _attn_bwd_dkdv_kernel
        kernel[lambda m: (triton.cdiv(max_k, m["BLOCK_N"]), n_seq * Hkv, nseg)](
            q, k, v, do, lse, delta, dk, dv, dq, cu_q, cu_k, sk, tidx, tcnt, *common_strides,
            dk.stride(0), dk.stride(1), dk.stride(2), dv.stride(0), dv.stride(1), dv.stride(2),
            dq.stride(0), dq.stride(1), dq.stride(2), *st,
            Hkv, H // Hkv, hb_div, Nq, Nk, scale * LOG2E, scale, ma.window_left, ma.window_right, **meta,
            SPLIT=split, SEG=seg, ATOMIC_DQ=atomic_dq)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)
