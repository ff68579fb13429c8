"""Chunkwise-parallel GLA in Triton: forward and backward (gradients to q, k, v, g and the initial state).

Per chunk of BT steps (b = within-chunk cumulative log gate, S_n the state entering chunk n):

    o_t     = scale * [(q_t * exp(b_t)) S_n + sum_{s<=t in chunk} (q_t . (k_s * exp(b_t - b_s))) v_s]
    S_{n+1} = exp(b_last) * S_n + sum_s (k_s * exp(b_last - b_s))^T v_s

Each program owns one (batch*head, V-block) and walks the chunks in order, keeping S in fp32 registers. Inside a chunk
the BT rows are cut into sub-chunks of BC: the off-diagonal sub-chunk pairs (i > j) are matmuls with the gates
re-based to the boundary gn = b[end of sub-chunk j], so both factors exp(b_t - gn) and exp(gn - b_s) are <= 1; the
diagonal BC x BC blocks are formed column by column with exp(b_t - b_s) taken only where s <= t. Nothing overflows for
any gate value. The backward walks forward for dq (same state recurrence) and backward in time for dk, dv and the
state gradient dS; dg then follows in closed form (see :func:`gla_chunk_bwd`).
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
    # num_stages=1: software-pipelining the chunk loop (stages 2) needs 140-320 KB of shared memory at K=V=128
    # (sm_90 AOT compile), over the limit for fp32 inputs, and there is little to overlap.
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (2, 4, 8)]


_KEY = ["K", "V", "BT", "BV"]


def _blocks(kd: int, vd: int) -> tuple[int, int]:
    bk = max(16, triton.next_power_of_2(kd))
    bv = max(16, min(64, triton.next_power_of_2(vd)))
    return bk, bv


@triton.jit
def _rows(ptr, rows, cols, T, ncol, NCOL: tl.constexpr):
    m = (rows[:, None] < T) & (cols[None, :] < NCOL)
    return tl.load(ptr + rows[:, None] * ncol + cols[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _row(ptr, r, cols, T, ncol, NCOL: tl.constexpr):
    return tl.load(ptr + r * ncol + cols, mask=(cols < NCOL) & (r < T), other=0.0).to(tl.float32)


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _fwd_kernel(q, k, v, bcum, h0, o, ht, scale, T, TP, NC,
                K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                BV: tl.constexpr, HAS_H0: tl.constexpr, UPCAST: tl.constexpr):
    iv = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    DT = tl.float32 if UPCAST else o.dtype.element_ty
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    oc = tl.arange(0, BC)
    ot = tl.arange(0, BT)
    q += bh * T * K
    k += bh * T * K
    v += bh * T * V
    o += bh * T * V
    bcum += bh * TP * K
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    s = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        s = tl.load(h0 + bh * K * V + ok[:, None] * V + ov[None, :], mask=ms, other=0.0).to(tl.float32)
    for n in tl.range(0, NC):
        t0 = n * BT
        for i in tl.static_range(BT // BC):
            r_i = t0 + i * BC + oc
            q_i = _rows(q, r_i, ok, T, K, K) * scale
            b_i = _rows(bcum, r_i, ok, TP, K, K)
            acc = tl.dot((q_i * tl.exp(b_i)).to(DT), s.to(DT), out_dtype=tl.float32)
            for j in tl.static_range(i):
                r_j = t0 + j * BC + oc
                k_j = _rows(k, r_j, ok, T, K, K)
                v_j = _rows(v, r_j, ov, T, V, V)
                b_j = _rows(bcum, r_j, ok, TP, K, K)
                gn = _row(bcum, t0 + j * BC + BC - 1, ok, TP, K, K)
                qg = (q_i * tl.exp(b_i - gn[None, :])).to(DT)
                kg = (k_j * tl.exp(gn[None, :] - b_j)).to(DT)
                a = tl.dot(qg, tl.trans(kg), out_dtype=tl.float32)
                acc += tl.dot(a.to(DT), v_j.to(DT), out_dtype=tl.float32)
            for c in tl.static_range(BC):
                r = t0 + i * BC + c
                k_c = _row(k, r, ok, T, K, K)
                v_c = _row(v, r, ov, T, V, V)
                b_c = _row(bcum, r, ok, TP, K, K)
                e = tl.exp(tl.where((oc >= c)[:, None], b_i - b_c[None, :], float("-inf")))
                a_c = tl.sum(q_i * k_c[None, :] * e, axis=1)
                acc += a_c[:, None] * v_c[None, :]
            tl.store(o + r_i[:, None] * V + ov[None, :], acc.to(DT), mask=(r_i[:, None] < T) & (ov[None, :] < V))
        r_n = t0 + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
        k_n = (_rows(k, r_n, ok, T, K, K) * tl.exp(b_last[None, :] - b_n)).to(DT)
        v_n = _rows(v, r_n, ov, T, V, V).to(DT)
        s = s * tl.exp(b_last)[:, None] + tl.dot(tl.trans(k_n), v_n, out_dtype=tl.float32)
    tl.store(ht + bh * K * V + ok[:, None] * V + ov[None, :], s, mask=ms)


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _bwd_dq_kernel(q, k, v, bcum, h0, do, dq, scale, T, TP, NC, BH,
                   K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                   BV: tl.constexpr, HAS_H0: tl.constexpr, UPCAST: tl.constexpr):
    """dq_t = scale * exp(b_t) * [do_t S_n^T + sum_{s<=t} (do_t . v_s) k_s exp(-b_s)], partial over this V-block."""
    iv = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    oc = tl.arange(0, BC)
    ot = tl.arange(0, BT)
    k += bh * T * K
    v += bh * T * V
    do += bh * T * V
    dq += (iv * BH + bh) * T * K
    bcum += bh * TP * K
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    s = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        s = tl.load(h0 + bh * K * V + ok[:, None] * V + ov[None, :], mask=ms, other=0.0).to(tl.float32)
    for n in tl.range(0, NC):
        t0 = n * BT
        for i in tl.static_range(BT // BC):
            r_i = t0 + i * BC + oc
            do_i = _rows(do, r_i, ov, T, V, V)
            b_i = _rows(bcum, r_i, ok, TP, K, K)
            acc = tl.dot(do_i.to(DT), tl.trans(s.to(DT)), out_dtype=tl.float32) * tl.exp(b_i)
            for j in tl.static_range(i):
                r_j = t0 + j * BC + oc
                k_j = _rows(k, r_j, ok, T, K, K)
                v_j = _rows(v, r_j, ov, T, V, V)
                b_j = _rows(bcum, r_j, ok, TP, K, K)
                gn = _row(bcum, t0 + j * BC + BC - 1, ok, TP, K, K)
                a = tl.dot(do_i.to(DT), tl.trans(v_j.to(DT)), out_dtype=tl.float32)
                kg = (k_j * tl.exp(gn[None, :] - b_j)).to(DT)
                acc += tl.dot(a.to(DT), kg, out_dtype=tl.float32) * tl.exp(b_i - gn[None, :])
            for c in tl.static_range(BC):
                r = t0 + i * BC + c
                k_c = _row(k, r, ok, T, K, K)
                v_c = _row(v, r, ov, T, V, V)
                b_c = _row(bcum, r, ok, TP, K, K)
                e = tl.exp(tl.where((oc >= c)[:, None], b_i - b_c[None, :], float("-inf")))
                a_c = tl.sum(do_i * v_c[None, :], axis=1)
                acc += a_c[:, None] * k_c[None, :] * e
            tl.store(dq + r_i[:, None] * K + ok[None, :], acc * scale, mask=(r_i[:, None] < T) & (ok[None, :] < K))
        r_n = t0 + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
        k_n = (_rows(k, r_n, ok, T, K, K) * tl.exp(b_last[None, :] - b_n)).to(DT)
        v_n = _rows(v, r_n, ov, T, V, V).to(DT)
        s = s * tl.exp(b_last)[:, None] + tl.dot(tl.trans(k_n), v_n, out_dtype=tl.float32)


@triton.autotune(configs=_configs(), key=_KEY)
@triton.jit
def _bwd_dkdv_kernel(q, k, v, bcum, dht, do, dk, dv, dh0, scale, T, TP, NC, BH,
                     K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, HAS_DHT: tl.constexpr, UPCAST: tl.constexpr):
    """Reverse sweep with dS (gradient of the state leaving the chunk): dk (partial over V-blocks), dv, dh0."""
    iv = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    oc = tl.arange(0, BC)
    ot = tl.arange(0, BT)
    q += bh * T * K
    k += bh * T * K
    v += bh * T * V
    do += bh * T * V
    dv += bh * T * V
    dk += (iv * BH + bh) * T * K
    bcum += bh * TP * K
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    ds = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        ds = tl.load(dht + bh * K * V + ok[:, None] * V + ov[None, :], mask=ms, other=0.0).to(tl.float32)
    for nn in tl.range(0, NC):
        t0 = (NC - 1 - nn) * BT
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
        for i in tl.static_range(BT // BC):
            r_i = t0 + i * BC + oc
            k_i = _rows(k, r_i, ok, T, K, K)
            v_i = _rows(v, r_i, ov, T, V, V)
            b_i = _rows(bcum, r_i, ok, TP, K, K)
            dec = tl.exp(b_last[None, :] - b_i)
            acc_k = tl.dot(v_i.to(DT), tl.trans(ds.to(DT)), out_dtype=tl.float32) * dec
            acc_v = tl.dot((k_i * dec).to(DT), ds.to(DT), out_dtype=tl.float32)
            for j in tl.static_range(i + 1, BT // BC):
                r_j = t0 + j * BC + oc
                q_j = _rows(q, r_j, ok, T, K, K) * scale
                do_j = _rows(do, r_j, ov, T, V, V)
                b_j = _rows(bcum, r_j, ok, TP, K, K)
                gn = _row(bcum, t0 + i * BC + BC - 1, ok, TP, K, K)
                qg = (q_j * tl.exp(b_j - gn[None, :])).to(DT)
                kg = (k_i * tl.exp(gn[None, :] - b_i)).to(DT)
                a_d = tl.dot(v_i.to(DT), tl.trans(do_j.to(DT)), out_dtype=tl.float32)
                acc_k += tl.dot(a_d.to(DT), qg, out_dtype=tl.float32) * tl.exp(gn[None, :] - b_i)
                a = tl.dot(kg, tl.trans(qg), out_dtype=tl.float32)
                acc_v += tl.dot(a.to(DT), do_j.to(DT), out_dtype=tl.float32)
            for c in tl.static_range(BC):
                r = t0 + i * BC + c
                q_c = _row(q, r, ok, T, K, K) * scale
                do_c = _row(do, r, ov, T, V, V)
                b_c = _row(bcum, r, ok, TP, K, K)
                e = tl.exp(tl.where((oc <= c)[:, None], b_c[None, :] - b_i, float("-inf")))
                acc_k += tl.sum(v_i * do_c[None, :], axis=1)[:, None] * q_c[None, :] * e
                acc_v += tl.sum(k_i * q_c[None, :] * e, axis=1)[:, None] * do_c[None, :]
            tl.store(dk + r_i[:, None] * K + ok[None, :], acc_k, mask=(r_i[:, None] < T) & (ok[None, :] < K))
            tl.store(dv + r_i[:, None] * V + ov[None, :], acc_v.to(dv.dtype.element_ty),
                     mask=(r_i[:, None] < T) & (ov[None, :] < V))
        r_n = t0 + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        q_n = (_rows(q, r_n, ok, T, K, K) * scale * tl.exp(b_n)).to(DT)
        do_n = _rows(do, r_n, ov, T, V, V).to(DT)
        ds = ds * tl.exp(b_last)[:, None] + tl.dot(tl.trans(q_n), do_n, out_dtype=tl.float32)
    tl.store(dh0 + bh * K * V + ok[:, None] * V + ov[None, :], ds, mask=ms)


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
    bk, bv = _blocks(kd, vd)
    return b, h, t, kd, vd, bt, bc, bk, bv


def gla_chunk_fwd(q, k, v, g, initial_state=None, scale=None):
    """q, k, g (B, H, T, K), v (B, H, T, V), initial_state (B, H, K, V) or None (contiguous).
    Returns o (B, H, T, V) in q.dtype and the final state (B, H, K, V) fp32."""
    b, h, t, kd, vd, bt, bc, bk, bv = _prep(q, k, v, g)
    scale = kd ** -0.5 if scale is None else float(scale)
    bcum = _cumgate(g, bt)
    nc = triton.cdiv(t, bt)
    o = torch.empty(b, h, t, vd, device=q.device, dtype=q.dtype)
    ht = torch.empty(b, h, kd, vd, device=q.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else ht
    grid = (triton.cdiv(vd, bv), b * h)
    _fwd_kernel[grid](q, k, v, bcum, h0, o, ht, scale, t, nc * bt, nc, K=kd, V=vd, BT=bt, BC=bc, BK=bk, BV=bv,
                      HAS_H0=initial_state is not None, UPCAST=_upcast(q))
    return o, ht


def gla_chunk_bwd(do, dht, q, k, v, g, initial_state, final_state, scale=None):
    """Gradients (dq, dk, dv, dg, dh0) of the chunked GLA. ``dht`` (B, H, K, V) or None is the gradient of the final
    state, ``final_state`` the forward's final state (needed for dg when dht is given).

    dg uses the closed form  dg_r = sum_{t>=r} (q_t dq_t - k_t dk_t) + sum_V(dht * final_state)  (every gate factor
    exp(B_t - B_s) splits into a query part exp(B_t) and a key part exp(-B_s); the final state carries exp(B_T)).
    """
    b, h, t, kd, vd, bt, bc, bk, bv = _prep(q, k, v, g)
    scale = kd ** -0.5 if scale is None else float(scale)
    bcum = _cumgate(g, bt)
    nc = triton.cdiv(t, bt)
    nv = triton.cdiv(vd, bv)
    do = do.contiguous()
    dq = torch.empty(nv, b, h, t, kd, device=q.device, dtype=torch.float32)
    dk = torch.empty(nv, b, h, t, kd, device=q.device, dtype=torch.float32)
    dv = torch.empty(b, h, t, vd, device=q.device, dtype=torch.float32)
    dh0 = torch.empty(b, h, kd, vd, device=q.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else dh0
    dht_c = dht.float().contiguous() if dht is not None else dh0
    grid = (nv, b * h)
    _bwd_dq_kernel[grid](q, k, v, bcum, h0, do, dq, scale, t, nc * bt, nc, b * h, K=kd, V=vd, BT=bt, BC=bc, BK=bk,
                         BV=bv, HAS_H0=initial_state is not None, UPCAST=_upcast(q))
    _bwd_dkdv_kernel[grid](q, k, v, bcum, dht_c, do, dk, dv, dh0, scale, t, nc * bt, nc, b * h, K=kd, V=vd, BT=bt,
                           BC=bc, BK=bk, BV=bv, HAS_DHT=dht is not None, UPCAST=_upcast(q))
    dq = dq.sum(0)
    dk = dk.sum(0)
    dg = (q.float() * dq - k.float() * dk).flip(2).cumsum(2).flip(2)
    if dht is not None:
        dg = dg + (dht.float() * final_state.float()).sum(-1)[:, :, None, :]
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(g.dtype), dh0
