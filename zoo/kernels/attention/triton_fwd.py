"""FlashAttention-2 style Triton forward: online softmax in base 2, stores the natural-log LSE.

Each program owns BLOCK_M queries of one (sequence, query head) and visits only the key tiles its mask can reach
(causal / window / padding / varlen bounds, block-sparse lists); tiles fully inside the visible region skip the
elementwise mask. Block-sparse lists are walked as one flat loop over (entry, tile) so the pipeliner can prefetch
the next listed tile (``_fwd_sparse_flat``). With head packing (PACK > 1, block-sparse lists shared by a KV group,
``PACK_GQA_HEADS``) the BLOCK_M rows are PACK heads x BLOCK_M / PACK positions of one query block: row r is head
h0 + r // (BLOCK_M / PACK) at position m0 + r % (BLOCK_M / PACK).
"""
from __future__ import annotations

import math

import os

import torch
import triton
import triton.language as tl

from .triton_common import (INTERPRET, check_inputs, head_block, key_bounds, last_dim_contiguous,
                            pack_heads, program_heads, prune_configs, seq_info, split_range, visible)

LOG2E = 1.4426950408889634


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv, n, need_mask,
              Lq, kv_len, off, wl, wr, qk_scale,
              HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_N: tl.constexpr,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
              PREC: tl.constexpr):
    """Online-softmax update with keys [n, n + BLOCK_N). MASKED: 0 = every key visible to every row, 1 = mask,
    2 = mask when the runtime flag ``need_mask`` is set (flat block-sparse loop)."""
    offs_n = n + tl.arange(0, BLOCK_N)
    if MASKED == 0:
        kmask = offs_d[None, :] < HEAD_DIM
        vmask = offs_dv[None, :] < HEAD_DIM_V
    else:
        kmask = (offs_n[:, None] < kv_len) & (offs_d[None, :] < HEAD_DIM)
        vmask = (offs_n[:, None] < kv_len) & (offs_dv[None, :] < HEAD_DIM_V)
    k = tl.load(k_base + offs_n[:, None] * stride_kn + offs_d[None, :], mask=kmask, other=0.0)
    s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
    if MASKED == 1:
        s = tl.where(visible(offs_m, offs_n, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR), s, float("-inf"))
    elif MASKED == 2:
        if need_mask:
            s = tl.where(visible(offs_m, offs_n, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR), s,
                         float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    if MASKED == 0:
        m_use = m_new
    else:  # a row with nothing visible yet keeps m = -inf; exp2 against 0 gives p = alpha = 0
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.math.exp2(s - m_use[:, None])
    alpha = tl.math.exp2(m_i - m_use)
    l_i = l_i * alpha + tl.sum(p, 1)
    v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_dv[None, :], mask=vmask, other=0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
    return acc, l_i, m_new


@triton.jit
def _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
               n_from, n_to, Lq, kv_len, off, wl, wr, qk_scale,
               HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_N: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
               PREC: tl.constexpr, WS: tl.constexpr = False):
    for n in tl.range(n_from, n_to, BLOCK_N, warp_specialize=WS):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                                  n, False, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N,
                                  MASKED, CAUSAL, HAS_WL, HAS_WR, PREC)
    return acc, l_i, m_i


@triton.jit
def _fwd_sparse_flat(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                     idx_base, cnt, lo, hi, flo, fhi, Lq, kv_len, off, wl, wr, qk_scale,
                     HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                     BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr,
                     PREC: tl.constexpr):
    """All key tiles of a block list in one loop over (entry, tile), masked where the runtime flag says so: the
    next listed block's K/V loads are pipelined behind the current tile's math, which per-entry masked / unmasked
    sub-range loops (one or two trips each) cannot do (H200: NSA's selected branch 10.9 -> 5.2 ms at T65536)."""
    TPB: tl.constexpr = BLOCK_SIZE // BLOCK_N
    for i in tl.range(0, cnt * TPB):
        start = tl.load(idx_base + i // TPB) * BLOCK_SIZE
        n = start + (i % TPB) * BLOCK_N
        a, b, c, e = split_range(start, start + BLOCK_SIZE, lo, hi, flo, fhi, BLOCK_N)
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                                  n, (n < b) | (n >= c), Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V,
                                  BLOCK_N, 2, CAUSAL, HAS_WL, HAS_WR, PREC)
    return acc, l_i, m_i


_FWD_FAST = [(128, 128, 8, 3), (128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3)]
_FWD_D256 = [(64, 64, 4, 2), (64, 32, 4, 2)]
_FWD_SMALL = [(32, 32, 4, 2), (16, 16, 4, 2)]


def _fwd_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
            for m, n, w, st in _FWD_FAST + _FWD_D256 + _FWD_SMALL]


def _prune(configs, named_args, **kwargs):
    kept = prune_configs(configs, named_args, kwargs, _FWD_FAST, _FWD_D256, _FWD_SMALL)
    if kwargs.get("WS", named_args.get("WS", False)):
        # Triton 3.6's sm_90 warp-specialisation pass asserts on the 4-warp configs of this kernel
        # (TaskIdPropagation.cpp:162, benchmarks/triton_compile.py); the 8-warp ones compile
        kept = [c for c in kept if c.num_warps == 8] or kept
    return kept


_KEY = ["HEAD_DIM", "HEAD_DIM_V", "CAUSAL", "HAS_WL", "HAS_WR", "VARLEN", "SPARSE", "BLOCK_SIZE", "IS_FP32",
        "PACK", "WS", "wl", "wr"]  # window sizes: narrow bands tune over more tiles (prune_configs)


@triton.autotune(configs=_fwd_configs(), key=_KEY, prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, SEQLENS_K, BIDX, BCNT,
    stride_qb, stride_qh, stride_qn, stride_kb, stride_kh, stride_kn, stride_vb, stride_vh, stride_vn,
    stride_ob, stride_oh, stride_on, stride_lb, stride_lh,
    stride_ib, stride_ih, stride_iq, stride_cb, stride_ch,
    H, GROUP, HB_DIV, NQ, NK, qk_scale, wl, wr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr, VARLEN: tl.constexpr,
    HAS_SEQLENS_K: tl.constexpr, SPARSE: tl.constexpr, BLOCK_SIZE: tl.constexpr, IS_FP32: tl.constexpr,
    PACK: tl.constexpr, WS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    PREC: tl.constexpr = "ieee" if IS_FP32 else "tf32"
    ROWS: tl.constexpr = BLOCK_M // PACK  # query positions per program (rows per packed head)
    pid_m = tl.program_id(0)
    if CAUSAL:  # longest rows first: better tail balance
        pid_m = tl.num_programs(0) - 1 - pid_m
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
    else:  # row r: head h + r // ROWS, position m0 + r % ROWS
        offs_m = m0 + tl.arange(0, BLOCK_M) % ROWS
        dh = (tl.arange(0, BLOCK_M) // ROWS).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    q_base = Q + bt * stride_qb + h.to(tl.int64) * stride_qh + q_start.to(tl.int64) * stride_qn
    k_base = K + bt * stride_kb + hk.to(tl.int64) * stride_kh + k_start.to(tl.int64) * stride_kn
    v_base = V + bt * stride_vb + hk.to(tl.int64) * stride_vh + k_start.to(tl.int64) * stride_vn
    q_rows = offs_m[:, None] * stride_qn
    if PACK > 1:
        q_rows = q_rows + dh[:, None] * stride_qh
    q = tl.load(q_base + q_rows + offs_d[None, :],
                mask=(offs_m[:, None] < Lq) & (offs_d[None, :] < HEAD_DIM), other=0.0)

    acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    lo, hi, flo, fhi = key_bounds(m0, ROWS, Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR)
    if SPARSE:
        hb = h // HB_DIV
        qb = m0 // BLOCK_SIZE
        idx_base = BIDX + bt * stride_ib + hb.to(tl.int64) * stride_ih + qb.to(tl.int64) * stride_iq
        cnt = tl.load(BCNT + bt * stride_cb + hb.to(tl.int64) * stride_ch + qb)
        acc, l_i, m_i = _fwd_sparse_flat(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d,
                                         offs_dv, idx_base, cnt, lo, hi, flo, fhi, Lq, kv_len, off, wl, wr, qk_scale,
                                         HEAD_DIM, HEAD_DIM_V, BLOCK_SIZE, BLOCK_N, CAUSAL, HAS_WL, HAS_WR, PREC)
    else:
        a, b, c, e = split_range(lo * 0, kv_len, lo, hi, flo, fhi, BLOCK_N)
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                                   a, b, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, True,
                                   CAUSAL, HAS_WL, HAS_WR, PREC)
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                                   b, c, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, False,
                                   CAUSAL, HAS_WL, HAS_WR, PREC, WS)
        acc, l_i, m_i = _fwd_tiles(acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, offs_m, offs_d, offs_dv,
                                   c, e, Lq, kv_len, off, wl, wr, qk_scale, HEAD_DIM, HEAD_DIM_V, BLOCK_N, True,
                                   CAUSAL, HAS_WL, HAS_WR, PREC)

    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    o = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)
    o_base = O + bt * stride_ob + h.to(tl.int64) * stride_oh + q_start.to(tl.int64) * stride_on
    o_rows = offs_m[:, None] * stride_on
    l_rows = offs_m
    if PACK > 1:
        o_rows = o_rows + dh[:, None] * stride_oh
        l_rows = l_rows + dh * stride_lh
    tl.store(o_base + o_rows + offs_dv[None, :], o.to(O.dtype.element_ty),
             mask=(offs_m[:, None] < Lq) & (offs_dv[None, :] < HEAD_DIM_V))
    l_base = LSE + bt * stride_lb + h.to(tl.int64) * stride_lh + q_start
    tl.store(l_base + l_rows, lse, mask=offs_m < Lq)



def fwd_warp_specialize(ma) -> bool:
    """Warp-specialised main loop (``tl.range(..., warp_specialize=True)``: Triton splits the fully visible key
    tiles' loop into producer / consumer warp groups) for dense, windowed and varlen masks. Experimental: on only
    with ``ZOO_ATTN_FWD_WS=1`` until an H200 run has timed it against the plain software-pipelined loop
    (``bash scripts/gpu/run.sh kernels_dense_ws``)."""
    return (not ma.sparse) and os.environ.get("ZOO_ATTN_FWD_WS") == "1" and not INTERPRET


def _dummy(device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int32, device=device)


def launch_fwd(q, k, v, o, lse, scale: float, ma) -> None:
    """Run the forward kernel into preallocated o (B, Hq, Nq, Dv) and lse (B, Hq, Nq) float32.

    Head packing (``triton_common.PACK_GQA_HEADS``, see ``pack_heads``) applies to block-sparse lists shared by a KV
    group."""
    B, H, Nq, D = q.shape
    Hkv, Nk, Dv = k.shape[1], k.shape[2], v.shape[3]
    dev = q.device
    dummy = _dummy(dev)
    if ma.varlen:
        n_seq = ma.cu_seqlens_q.numel() - 1
        max_q = ma.max_seqlen_q
    else:
        n_seq, max_q = B, Nq
    if ma.sparse:
        bidx, bcnt = ma.block_indices, ma.block_counts
        hb_div = H // bidx.shape[1]
        sb = (bidx.stride(0), bidx.stride(1), bidx.stride(2), bcnt.stride(0), bcnt.stride(1))
    else:
        bidx = bcnt = dummy
        hb_div = 1
        sb = (0, 0, 0, 0, 0)
    if max_q == 0 or n_seq == 0:
        return
    pack = pack_heads(ma, H, Hkv)

    def grid(meta):  # a program: BLOCK_M // pack positions x pack heads
        return (triton.cdiv(max_q, meta["BLOCK_M"] // pack), n_seq * H // pack)

    _attn_fwd_kernel[grid](
        q, k, v, o, lse,
        ma.cu_seqlens_q if ma.varlen else dummy, ma.cu_seqlens_k if ma.varlen else dummy,
        ma.seqlens_k if ma.seqlens_k is not None else dummy, bidx, bcnt,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1),
        v.stride(2), o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1), *sb,
        H, H // Hkv, hb_div, Nq, Nk, scale * LOG2E, ma.window_left, ma.window_right,
        HEAD_DIM=D, HEAD_DIM_V=Dv, BLOCK_D=head_block(D), BLOCK_DV=head_block(Dv),
        CAUSAL=ma.causal, HAS_WL=ma.window_left >= 0, HAS_WR=ma.window_right >= 0, VARLEN=ma.varlen,
        HAS_SEQLENS_K=ma.seqlens_k is not None, SPARSE=ma.sparse, BLOCK_SIZE=ma.block_size if ma.sparse else 0,
        IS_FP32=q.dtype == torch.float32, PACK=pack, WS=fwd_warp_specialize(ma),
    )


def attention_fwd(q, k, v, *, scale: float, causal: bool = False, window_left: int = -1, window_right: int = -1,
                  seqlens_k=None, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q: int = 0, max_seqlen_k: int = 0,
                  block_indices=None, block_counts=None, block_size: int = 0):
    """Masked softmax attention forward.

    q (B, Hq, Nq, D), k (B, Hkv, Nk, D), v (B, Hkv, Nk, Dv); fp32/fp16/bf16. Returns o (B, Hq, Nq, Dv) in q.dtype and
    lse (B, Hq, Nq) float32 (natural log; -inf for a row with nothing visible, whose o row is 0). Mask arguments:
    see ``triton_common`` (causal, window, key padding, packed varlen, block-sparse lists).
    """
    ma = check_inputs(q, k, v, scale=scale, causal=causal, window_left=window_left, window_right=window_right,
                      seqlens_k=seqlens_k, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
                      max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, block_indices=block_indices,
                      block_counts=block_counts, block_size=block_size)
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    B, H, Nq, _ = q.shape
    Dv = v.shape[3]
    if ma.varlen:  # rows outside every sequence stay zero / -inf
        o = torch.zeros(B, H, Nq, Dv, dtype=q.dtype, device=q.device)
        lse = torch.full((B, H, Nq), float("-inf"), dtype=torch.float32, device=q.device)
    else:
        o = torch.empty(B, H, Nq, Dv, dtype=q.dtype, device=q.device)
        lse = torch.empty(B, H, Nq, dtype=torch.float32, device=q.device)
    if not math.isfinite(float(scale)):
        raise ValueError(f"scale must be finite, got {scale}")
    launch_fwd(q, k, v, o, lse, float(scale), ma)
    return o, lse
