"""Fused recurrent GLA in Triton (forward): one program per (batch*head, V-block) steps through time with the
(K, BV) state in fp32 registers. Meant for step-by-step decoding (T small, state carried between calls);
its backward goes through the chunked kernels (same function, see ``op.py``)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .chunk import INTERPRET, MAX_DIM

__all__ = ["gla_recurrent_fwd"]


def _configs():
    if INTERPRET:
        return [triton.Config({}, num_warps=4, num_stages=1)]
    return [triton.Config({}, num_warps=w, num_stages=1) for w in (1, 2, 4)]


@triton.autotune(configs=_configs(), key=["K", "V", "BV"])
@triton.jit
def _recurrent_fwd_kernel(q, k, v, g, h0, o, ht, scale, T,
                          K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                          HAS_H0: tl.constexpr):
    iv = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    ok = tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    mk = ok < K
    mv = ov < V
    ms = mk[:, None] & mv[None, :]
    q += bh * T * K
    k += bh * T * K
    g += bh * T * K
    v += bh * T * V
    o += bh * T * V
    s = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        s = tl.load(h0 + bh * K * V + ok[:, None] * V + ov[None, :], mask=ms, other=0.0).to(tl.float32)
    for t in tl.range(0, T):
        q_t = tl.load(q + t * K + ok, mask=mk, other=0.0).to(tl.float32) * scale
        k_t = tl.load(k + t * K + ok, mask=mk, other=0.0).to(tl.float32)
        g_t = tl.load(g + t * K + ok, mask=mk, other=0.0).to(tl.float32)
        v_t = tl.load(v + t * V + ov, mask=mv, other=0.0).to(tl.float32)
        s = s * tl.exp(g_t)[:, None] + k_t[:, None] * v_t[None, :]
        o_t = tl.sum(q_t[:, None] * s, axis=0)
        tl.store(o + t * V + ov, o_t.to(o.dtype.element_ty), mask=mv)
    tl.store(ht + bh * K * V + ok[:, None] * V + ov[None, :], s, mask=ms)


def gla_recurrent_fwd(q, k, v, g, initial_state=None, scale=None):
    """Same contract as :func:`zoo.kernels.gla.chunk.gla_chunk_fwd`: returns (o in q.dtype, final state fp32)."""
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    if kd > MAX_DIM or vd > MAX_DIM:
        raise ValueError(f"GLA Triton kernels support K, V <= {MAX_DIM}, got K={kd}, V={vd}")
    scale = kd ** -0.5 if scale is None else float(scale)
    bk = max(16, triton.next_power_of_2(kd))
    bv = max(16, min(32, triton.next_power_of_2(vd)))
    o = torch.empty(b, h, t, vd, device=q.device, dtype=q.dtype)
    ht = torch.empty(b, h, kd, vd, device=q.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else ht
    grid = (triton.cdiv(vd, bv), b * h)
    _recurrent_fwd_kernel[grid](q, k, v, g.contiguous(), h0, o, ht, scale, t, K=kd, V=vd, BK=bk, BV=bv,
                                HAS_H0=initial_state is not None)
    return o, ht
