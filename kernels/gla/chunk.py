"""Chunkwise-parallel GLA in Triton: forward and backward (gradients to q, k, v, g and the initial state).

Per chunk n of BT steps (b = within-chunk cumulative log gate, S_n the state entering chunk n):

    o_t     = scale * [(q_t * exp(b_t)) S_n + sum_{s<=t in chunk} (q_t . (k_s * exp(b_t - b_s))) v_s]
    S_{n+1} = exp(b_last) * S_n + sum_s (k_s * exp(b_last - b_s))^T v_s

Only the state recurrence is sequential (grid K-blocks x V-blocks x B*H, one (BK, BT) x (BT, BV) update per chunk);
everything else runs over all chunks at once.
  forward:  _state_fwd_kernel stores S_n for every chunk (fp32, (B*H, NC, K, V)) and the final state;
            _intra_a_kernel (grid sub-chunks x NC x B*H) the intra-chunk scores A[t, s] (s <= t, fp32, (B*H, TP, BT));
            _fwd_o_kernel (grid V-blocks x NC x B*H)  o = (scale * q * exp(b)) S_n + A v.
  backward: S_n and A recomputed; _state_bwd_kernel walks the chunks in reverse storing dS_{n+1} (gradient of the
            state leaving chunk n, seeded with dht) and the initial-state gradient; _bwd_inter_kernel the inter-chunk
            dq, dk and dA = scale * do v^T; _bwd_dv_kernel dv = A^T do + (k * exp(b_last - b)) dS_{n+1};
            _bwd_dqdk_kernel adds the intra-chunk dq, dk; dg follows in closed form (see :func:`gla_chunk_bwd`).

Inside a chunk the BT rows are cut into sub-chunks of BC: the off-diagonal sub-chunk pairs (i > j) are matmuls with the
gates re-based to the boundary gn = b[end of sub-chunk j], so both factors exp(b_t - gn) and exp(gn - b_s) are <= 1;
the diagonal BC x BC blocks are formed column by column with exp(b_t - b_s) taken only where s <= t (in the backward
dq and dk share each column's factors). Nothing overflows for any gate value. Every loop is a runtime loop (no static
unrolling): each kernel compiles in about a second for sm_90.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_DIM = 256

__all__ = ["chunk_sizes", "gla_chunk_bwd", "gla_chunk_fwd"]


def chunk_sizes() -> tuple[int, int]:
    """(BT, BC): chunk and sub-chunk lengths. 64/16 on GPU; 32/16 under the interpreter (both code paths, fast)."""
    return (32, 16) if INTERPRET else (64, 16)


def _configs():
    if INTERPRET:
        return [triton.Config({}, num_warps=4, num_stages=1)]
    # Chunk-parallel kernels: short runtime loops, little to pipeline.
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (4, 8)]


def _state_configs():
    if INTERPRET:
        return [triton.Config({}, num_warps=4, num_stages=1)]
    # The sequential state passes: prefetch the next chunks' k / v / gates (sm_90 AOT: <= 132 KB shared, fp32 inputs).
    return [triton.Config({}, num_warps=4, num_stages=s) for s in (2, 3)]


_KEY = ["K", "V", "BT", "BK", "BV"]


def _blocks(kd: int, vd: int) -> tuple[int, int, int]:
    """(BK, BV, BKS): full-K block of the chunk kernels, V-block, K-block of the state passes."""
    bk = max(16, triton.next_power_of_2(kd))
    bv = max(16, min(64, triton.next_power_of_2(vd)))
    return bk, bv, min(64, bk)


@triton.jit
def _rows(ptr, rows, cols, T, ncol, NCOL: tl.constexpr):
    m = (rows[:, None] < T) & (cols[None, :] < NCOL)
    return tl.load(ptr + rows[:, None] * ncol + cols[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _row(ptr, r, cols, T, ncol, NCOL: tl.constexpr):
    return tl.load(ptr + r * ncol + cols, mask=(cols < NCOL) & (r < T), other=0.0).to(tl.float32)


@triton.autotune(configs=_state_configs(), key=_KEY)
@triton.jit
def _state_fwd_kernel(k, v, bcum, h0, h, ht, T, TP, NC,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      HAS_H0: tl.constexpr, UPCAST: tl.constexpr):
    """h[bh, n] = S_n (state entering chunk n), ht = S_NC, for one (K-block, V-block, batch*head)."""
    ik = tl.program_id(0)
    iv = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else k.dtype.element_ty
    ok = ik * BK + tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    k += bh * T * K
    v += bh * T * V
    bcum += bh * TP * K
    h += bh * NC * K * V
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    off = ok[:, None] * V + ov[None, :]
    s = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        s = tl.load(h0 + bh * K * V + off, mask=ms, other=0.0).to(tl.float32)
    for n in tl.range(0, NC):
        tl.store(h + off, s, mask=ms)
        h += K * V
        r_n = n * BT + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        b_last = _row(bcum, n * BT + BT - 1, ok, TP, K, K)
        k_n = (_rows(k, r_n, ok, T, K, K) * tl.exp(b_last[None, :] - b_n)).to(DT)
        v_n = _rows(v, r_n, ov, T, V, V).to(DT)
        s = s * tl.exp(b_last)[:, None] + tl.dot(tl.trans(k_n), v_n, out_dtype=tl.float32)
    tl.store(ht + bh * K * V + off, s, mask=ms)


@triton.autotune(configs=_state_configs(), key=_KEY)
@triton.jit
def _state_bwd_kernel(q, do, bcum, dht, dh, dh0, scale, T, TP, NC,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      HAS_DHT: tl.constexpr, UPCAST: tl.constexpr):
    """dh[bh, n] = gradient of S_{n+1} (state leaving chunk n; dht for the last), dh0 = gradient of S_0."""
    ik = tl.program_id(0)
    iv = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = ik * BK + tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    q += bh * T * K
    do += bh * T * V
    bcum += bh * TP * K
    dh += (bh * NC + NC - 1) * K * V
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    off = ok[:, None] * V + ov[None, :]
    ds = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        ds = tl.load(dht + bh * K * V + off, mask=ms, other=0.0).to(tl.float32)
    for nn in tl.range(0, NC):
        t0 = (NC - 1 - nn) * BT
        tl.store(dh + off, ds, mask=ms)
        dh -= K * V
        r_n = t0 + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
        q_n = (_rows(q, r_n, ok, T, K, K) * scale * tl.exp(b_n)).to(DT)
        do_n = _rows(do, r_n, ov, T, V, V).to(DT)
        ds = ds * tl.exp(b_last)[:, None] + tl.dot(tl.trans(q_n), do_n, out_dtype=tl.float32)
    tl.store(dh0 + bh * K * V + off, ds, mask=ms)


@triton.autotune(configs=_configs(), key=["K", "BT", "BK"])
@triton.jit
def _intra_a_kernel(q, k, bcum, A, scale, T, TP,
                    K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr):
    """A[t, s] = scale * q_t . (k_s * exp(b_t - b_s)) for s <= t in the chunk, rows of sub-chunk i (grid NS, NC, B*H).
    A is (B*H, TP, BT) fp32; only the causal (s <= t) part is written."""
    i = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = tl.arange(0, BK)
    oc = tl.arange(0, BC)
    q += bh * T * K
    k += bh * T * K
    bcum += bh * TP * K
    A += bh * TP * BT
    t0 = n * BT
    r_i = t0 + i * BC + oc
    q_i = _rows(q, r_i, ok, T, K, K) * scale
    b_i = _rows(bcum, r_i, ok, TP, K, K)
    for j in tl.range(0, i):
        r_j = t0 + j * BC + oc
        k_j = _rows(k, r_j, ok, T, K, K)
        b_j = _rows(bcum, r_j, ok, TP, K, K)
        gn = _row(bcum, t0 + j * BC + BC - 1, ok, TP, K, K)
        qg = (q_i * tl.exp(b_i - gn[None, :])).to(DT)
        kg = (k_j * tl.exp(gn[None, :] - b_j)).to(DT)
        a = tl.dot(qg, tl.trans(kg), out_dtype=tl.float32)
        tl.store(A + r_i[:, None] * BT + j * BC + oc[None, :], a)
    for c in tl.range(0, BC):
        r = t0 + i * BC + c
        k_c = _row(k, r, ok, T, K, K)
        b_c = _row(bcum, r, ok, TP, K, K)
        e = tl.exp(tl.where((oc >= c)[:, None], b_i - b_c[None, :], float("-inf")))
        tl.store(A + r_i * BT + i * BC + c, tl.sum(q_i * k_c[None, :] * e, axis=1))


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _fwd_o_kernel(q, v, bcum, h, A, o, scale, T, TP, NC,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                  UPCAST: tl.constexpr):
    """o = (scale * q * exp(b)) S_n + A v for one (V-block, chunk, batch*head); K in blocks of BK."""
    iv = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else o.dtype.element_ty
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    r_n = n * BT + ot
    q += bh * T * K
    bcum += bh * TP * K
    h += (bh * NC + n) * K * V
    a = tl.load(A + bh * TP * BT + r_n[:, None] * BT + ot[None, :], mask=ot[:, None] >= ot[None, :], other=0.0)
    v_n = _rows(v + bh * T * V, r_n, ov, T, V, V).to(DT)
    acc = tl.dot(a.to(DT), v_n, out_dtype=tl.float32)
    for ik in tl.range(0, (K + BK - 1) // BK):
        ok = ik * BK + tl.arange(0, BK)
        qg = _rows(q, r_n, ok, T, K, K) * scale * tl.exp(_rows(bcum, r_n, ok, TP, K, K))
        s = tl.load(h + ok[:, None] * V + ov[None, :], mask=(ok[:, None] < K) & (ov[None, :] < V), other=0.0)
        acc += tl.dot(qg.to(DT), s.to(DT), out_dtype=tl.float32)
    tl.store(o + bh * T * V + r_n[:, None] * V + ov[None, :], acc.to(o.dtype.element_ty),
             mask=(r_n[:, None] < T) & (ov[None, :] < V))


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _bwd_dv_kernel(k, bcum, dh, A, do, dv, T, TP, NC,
                   K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   UPCAST: tl.constexpr):
    """dv = A^T do + (k * exp(b_last - b)) dS_{n+1} for one (V-block, chunk, batch*head); K in blocks of BK."""
    iv = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else k.dtype.element_ty
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    t0 = n * BT
    r_n = t0 + ot
    k += bh * T * K
    bcum += bh * TP * K
    dh += (bh * NC + n) * K * V
    # at[s, t] = A[t, s], causal part (t >= s) only.
    at = tl.load(A + bh * TP * BT + r_n[None, :] * BT + ot[:, None], mask=ot[None, :] >= ot[:, None], other=0.0)
    do_n = _rows(do + bh * T * V, r_n, ov, T, V, V).to(DT)
    acc = tl.dot(at.to(DT), do_n, out_dtype=tl.float32)
    for ik in tl.range(0, (K + BK - 1) // BK):
        ok = ik * BK + tl.arange(0, BK)
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
        kd = _rows(k, r_n, ok, T, K, K) * tl.exp(b_last[None, :] - _rows(bcum, r_n, ok, TP, K, K))
        ds = tl.load(dh + ok[:, None] * V + ov[None, :], mask=(ok[:, None] < K) & (ov[None, :] < V), other=0.0)
        acc += tl.dot(kd.to(DT), ds.to(DT), out_dtype=tl.float32)
    tl.store(dv + bh * T * V + r_n[:, None] * V + ov[None, :], acc.to(dv.dtype.element_ty),
             mask=(r_n[:, None] < T) & (ov[None, :] < V))


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _bwd_inter_kernel(v, bcum, h, dh, do, dq, dk, dA, scale, T, TP, NC,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      UPCAST: tl.constexpr):
    """One (K-block, chunk, batch*head), V in blocks of BV: the inter-chunk parts dq = scale * exp(b) * (do S_n^T),
    dk = exp(b_last - b) * (v dS_{n+1}^T); the K-block 0 program also stores dA = scale * do v^T (zero above the
    diagonal), (B*H, TP, BT) fp32."""
    ik = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else do.dtype.element_ty
    ok = ik * BK + tl.arange(0, BK)
    ot = tl.arange(0, BT)
    t0 = n * BT
    r_n = t0 + ot
    v += bh * T * V
    do += bh * T * V
    bcum += bh * TP * K
    h += (bh * NC + n) * K * V
    dh += (bh * NC + n) * K * V
    acc_q = tl.zeros([BT, BK], dtype=tl.float32)
    acc_k = tl.zeros([BT, BK], dtype=tl.float32)
    acc_a = tl.zeros([BT, BT], dtype=tl.float32)
    for iv in tl.range(0, (V + BV - 1) // BV):
        ov = iv * BV + tl.arange(0, BV)
        ms = (ok[:, None] < K) & (ov[None, :] < V)
        s = tl.load(h + ok[:, None] * V + ov[None, :], mask=ms, other=0.0).to(DT)
        ds = tl.load(dh + ok[:, None] * V + ov[None, :], mask=ms, other=0.0).to(DT)
        do_n = _rows(do, r_n, ov, T, V, V).to(DT)
        v_n = _rows(v, r_n, ov, T, V, V).to(DT)
        acc_q += tl.dot(do_n, tl.trans(s), out_dtype=tl.float32)
        acc_k += tl.dot(v_n, tl.trans(ds), out_dtype=tl.float32)
        if ik == 0:
            acc_a += tl.dot(do_n, tl.trans(v_n), out_dtype=tl.float32)
    b_n = _rows(bcum, r_n, ok, TP, K, K)
    b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
    mq = (r_n[:, None] < T) & (ok[None, :] < K)
    tl.store(dq + bh * T * K + r_n[:, None] * K + ok[None, :], acc_q * scale * tl.exp(b_n), mask=mq)
    tl.store(dk + bh * T * K + r_n[:, None] * K + ok[None, :], acc_k * tl.exp(b_last[None, :] - b_n), mask=mq)
    if ik == 0:
        tl.store(dA + bh * TP * BT + r_n[:, None] * BT + ot[None, :],
                 tl.where(ot[:, None] >= ot[None, :], acc_a * scale, 0.0))


@triton.autotune(configs=_configs(), key=["K", "BT", "BK"])
@triton.jit
def _bwd_dqdk_kernel(q, k, bcum, dA, dq0, dk0, dq, dk, T, TP,
                     K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr, UPCAST: tl.constexpr):
    """dq, dk of sub-chunk i (grid NS, NC, B*H): the inter-chunk parts dq0, dk0 plus the intra-chunk parts
    sum_{s<=t} dA[t, s] k_s exp(b_t - b_s) and sum_{t>=s} dA[t, s] q_t exp(b_t - b_s). Separate outputs keep the kernel
    idempotent, as autotuning (which runs it several times) requires."""
    i = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = tl.arange(0, BK)
    oc = tl.arange(0, BC)
    q += bh * T * K
    k += bh * T * K
    dq += bh * T * K
    dk += bh * T * K
    dq0 += bh * T * K
    dk0 += bh * T * K
    bcum += bh * TP * K
    dA += bh * TP * BT
    t0 = n * BT
    r_i = t0 + i * BC + oc
    m_i = (r_i[:, None] < T) & (ok[None, :] < K)
    q_i = _rows(q, r_i, ok, T, K, K)
    b_i = _rows(bcum, r_i, ok, TP, K, K)
    gn_i = _row(bcum, t0 + i * BC + BC - 1, ok, TP, K, K)
    acc_q = tl.load(dq0 + r_i[:, None] * K + ok[None, :], mask=m_i, other=0.0)
    acc_k = tl.load(dk0 + r_i[:, None] * K + ok[None, :], mask=m_i, other=0.0)
    for j in tl.range(0, i):
        r_j = t0 + j * BC + oc
        k_j = _rows(k, r_j, ok, T, K, K)
        b_j = _rows(bcum, r_j, ok, TP, K, K)
        gn = _row(bcum, t0 + j * BC + BC - 1, ok, TP, K, K)
        da = tl.load(dA + r_i[:, None] * BT + j * BC + oc[None, :]).to(DT)
        kg = (k_j * tl.exp(gn[None, :] - b_j)).to(DT)
        acc_q += tl.dot(da, kg, out_dtype=tl.float32) * tl.exp(b_i - gn[None, :])
    for j in tl.range(i + 1, BT // BC):
        r_j = t0 + j * BC + oc
        q_j = _rows(q, r_j, ok, T, K, K)
        b_j = _rows(bcum, r_j, ok, TP, K, K)
        da = tl.load(dA + r_j[:, None] * BT + i * BC + oc[None, :]).to(DT)
        qg = (q_j * tl.exp(b_j - gn_i[None, :])).to(DT)
        acc_k += tl.dot(tl.trans(da), qg, out_dtype=tl.float32) * tl.exp(gn_i[None, :] - b_i)
    for c in tl.range(0, BC):
        r = t0 + i * BC + c
        k_c = _row(k, r, ok, T, K, K)
        b_c = _row(bcum, r, ok, TP, K, K)
        da_c = tl.load(dA + r_i * BT + i * BC + c)
        e = tl.exp(tl.where((oc >= c)[:, None], b_i - b_c[None, :], float("-inf")))
        acc_q += da_c[:, None] * k_c[None, :] * e
        dk_c = tl.sum(da_c[:, None] * q_i * e, axis=0)
        acc_k += tl.where((oc == c)[:, None], dk_c[None, :], 0.0)
    tl.store(dq + r_i[:, None] * K + ok[None, :], acc_q, mask=m_i)
    tl.store(dk + r_i[:, None] * K + ok[None, :], acc_k, mask=m_i)


def _upcast(q: torch.Tensor) -> bool:
    """Matmul operands in fp32 for bf16 under the interpreter: its bf16 ``tl.dot`` returns garbage (triton 3.6)."""
    return INTERPRET and q.dtype == torch.bfloat16


def _cumgate(g: torch.Tensor, bt: int) -> torch.Tensor:
    """Within-chunk inclusive cumsum of the log gates, fp32, T padded to a multiple of BT with zeros."""
    b, h, t, kd = g.shape
    nc = triton.cdiv(t, bt)
    gf = torch.nn.functional.pad(g.float(), (0, 0, 0, nc * bt - t))
    return gf.view(b, h, nc, bt, kd).cumsum(-2).view(b, h, nc * bt, kd).contiguous()


def _prep(q, k, v, g):
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    if kd > MAX_DIM or vd > MAX_DIM:
        raise ValueError(f"GLA Triton kernels support K, V <= {MAX_DIM}, got K={kd}, V={vd}")
    bt, bc = chunk_sizes()
    nc = triton.cdiv(t, bt)
    if nc > 65535 or b * h > 65535:  # CUDA grid y / z limits (chunks, batch * heads)
        raise ValueError(f"GLA chunk kernels support T <= {65535 * bt} and B*H <= 65535, got T={t}, B*H={b * h}")
    return b, h, t, kd, vd, bt, bc, nc


def _states(k, v, bcum, initial_state, nc, bt):
    """(S_n for every chunk (B*H, NC, K, V) fp32, final state (B, H, K, V) fp32)."""
    b, h, t, kd = k.shape
    vd = v.shape[-1]
    _, bv, bks = _blocks(kd, vd)
    hs = torch.empty(b * h, nc, kd, vd, device=k.device, dtype=torch.float32)
    ht = torch.empty(b, h, kd, vd, device=k.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else ht
    grid = (triton.cdiv(kd, bks), triton.cdiv(vd, bv), b * h)
    _state_fwd_kernel[grid](k, v, bcum, h0, hs, ht, t, nc * bt, nc, K=kd, V=vd, BT=bt, BK=bks, BV=bv,
                            HAS_H0=initial_state is not None, UPCAST=_upcast(k))
    return hs, ht


def _intra(q, k, bcum, scale, nc, bt, bc, bk):
    """A (B*H, NC*BT, BT) fp32: the scaled, gated intra-chunk attention (causal part written)."""
    b, h, t, kd = q.shape
    a = torch.empty(b * h, nc * bt, bt, device=q.device, dtype=torch.float32)
    _intra_a_kernel[(bt // bc, nc, b * h)](q, k, bcum, a, scale, t, nc * bt, K=kd, BT=bt, BC=bc, BK=bk,
                                          UPCAST=_upcast(q))
    return a


def gla_chunk_fwd(q, k, v, g, initial_state=None, scale=None):
    """q, k, g (B, H, T, K), v (B, H, T, V), initial_state (B, H, K, V) or None (contiguous).
    Returns o (B, H, T, V) in q.dtype and the final state (B, H, K, V) fp32."""
    b, h, t, kd, vd, bt, bc, nc = _prep(q, k, v, g)
    bk, bv, bks = _blocks(kd, vd)
    scale = kd ** -0.5 if scale is None else float(scale)
    bcum = _cumgate(g, bt)
    hs, ht = _states(k, v, bcum, initial_state, nc, bt)
    a = _intra(q, k, bcum, scale, nc, bt, bc, bk)
    o = torch.empty(b, h, t, vd, device=q.device, dtype=q.dtype)
    grid = (triton.cdiv(vd, bv), nc, b * h)
    _fwd_o_kernel[grid](q, v, bcum, hs, a, o, scale, t, nc * bt, nc, K=kd, V=vd, BT=bt, BK=bks, BV=bv,
                        UPCAST=_upcast(q))
    return o, ht


def gla_chunk_bwd(do, dht, q, k, v, g, initial_state, final_state, scale=None):
    """Gradients (dq, dk, dv, dg, dh0) of the chunked GLA. ``dht`` (B, H, K, V) or None is the gradient of the final
    state, ``final_state`` the forward's final state (needed for dg when dht is given).

    The per-chunk states and the intra-chunk A are recomputed; the state gradients come from one reverse pass.
    dg uses the closed form  dg_r = sum_{t>=r} (q_t dq_t - k_t dk_t) + sum_V(dht * final_state)  (every gate factor
    exp(B_t - B_s) splits into a query part exp(B_t) and a key part exp(-B_s); the final state carries exp(B_T)).
    """
    b, h, t, kd, vd, bt, bc, nc = _prep(q, k, v, g)
    bk, bv, bks = _blocks(kd, vd)
    scale = kd ** -0.5 if scale is None else float(scale)
    bcum = _cumgate(g, bt)
    do = do.contiguous()
    hs, _ = _states(k, v, bcum, initial_state, nc, bt)
    dhs = torch.empty(b * h, nc, kd, vd, device=q.device, dtype=torch.float32)
    dh0 = torch.empty(b, h, kd, vd, device=q.device, dtype=torch.float32)
    dht_c = dht.float().contiguous() if dht is not None else dh0
    _state_bwd_kernel[(triton.cdiv(kd, bks), triton.cdiv(vd, bv), b * h)](
        q, do, bcum, dht_c, dhs, dh0, scale, t, nc * bt, nc, K=kd, V=vd, BT=bt, BK=bks, BV=bv,
        HAS_DHT=dht is not None, UPCAST=_upcast(q))
    a = _intra(q, k, bcum, scale, nc, bt, bc, bk)
    dq0, dk0, dq, dk = (torch.empty(b, h, t, kd, device=q.device, dtype=torch.float32) for _ in range(4))
    dv = torch.empty(b, h, t, vd, device=q.device, dtype=v.dtype)
    da = torch.empty_like(a)
    _bwd_inter_kernel[(triton.cdiv(kd, bks), nc, b * h)](v, bcum, hs, dhs, do, dq0, dk0, da, scale, t, nc * bt, nc,
                                                         K=kd, V=vd, BT=bt, BK=bks, BV=bv, UPCAST=_upcast(q))
    _bwd_dv_kernel[(triton.cdiv(vd, bv), nc, b * h)](k, bcum, dhs, a, do, dv, t, nc * bt, nc, K=kd, V=vd, BT=bt,
                                                     BK=bks, BV=bv, UPCAST=_upcast(q))
    _bwd_dqdk_kernel[(bt // bc, nc, b * h)](q, k, bcum, da, dq0, dk0, dq, dk, t, nc * bt, K=kd, BT=bt, BC=bc, BK=bk,
                                           UPCAST=_upcast(q))
    dg = (q.float() * dq - k.float() * dk).flip(2).cumsum(2).flip(2)
    if dht is not None:
        dg = dg + (dht.float() * final_state.float()).sum(-1)[:, :, None, :]
    return dq.to(q.dtype), dk.to(k.dtype), dv, dg.to(g.dtype), dh0
