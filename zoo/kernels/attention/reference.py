"""The oracle: plain attention math with a dense mask, in fp32 (fp64 when the inputs are fp64)."""
from __future__ import annotations

import torch

from .masks import MaskSpec

__all__ = ["reference_attention", "reference_attention_backward", "reference_attention_chunked"]


def _expand_kv(x: torch.Tensor, heads_q: int) -> torch.Tensor:
    h = x.shape[1]
    return x if h == heads_q else x.repeat_interleave(heads_q // h, dim=1)


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    spec: MaskSpec | None,
    scale: float,
    return_lse: bool = False,
    *,
    compute_dtype: torch.dtype | None = None,
    q_start: int = 0,
    nq_total: int | None = None,
):
    """Reference attention, differentiable, no NaN on empty rows.

    q (B, Hq, Nq, D), k (B, Hkv, Nk, D), v (B, Hkv, Nk, Dv) -> o (B, Hq, Nq, Dv) in q.dtype and, with
    ``return_lse``, lse (B, Hq, Nq) (fp32, or fp64 for fp64 inputs; ``-inf`` on rows that see no key).
    ``q_start`` / ``nq_total``: q holds rows ``[q_start, q_start + Nq)`` of a longer query (for chunked evaluation).
    """
    cdt = compute_dtype or (torch.float64 if q.dtype == torch.float64 else torch.float32)
    b, hq, nq, _ = q.shape
    nk = k.shape[2]
    qf = q.to(cdt)
    kf = _expand_kv(k.to(cdt), hq)
    vf = _expand_kv(v.to(cdt), hq)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if spec is not None:
        total = nq if nq_total is None else nq_total
        m = spec.dense(b, hq, k.shape[1], total, nk, q.device, q_rows=(q_start, q_start + nq))
        s = s.masked_fill(~m, float("-inf"))
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx)).detach()
    e = torch.exp(s - mx)
    den = e.sum(dim=-1, keepdim=True)
    nonempty = den > 0
    p = e / torch.where(nonempty, den, torch.ones_like(den))
    o = torch.matmul(p, vf).to(q.dtype)
    if not return_lse:
        return o
    lse = torch.where(
        nonempty, torch.log(torch.where(nonempty, den, torch.ones_like(den))) + mx, torch.full_like(den, float("-inf"))
    ).squeeze(-1)
    return o, lse


@torch.no_grad()
def reference_attention_backward(do, dlse, q, k, v, spec: MaskSpec | None, scale: float):
    """Analytic backward of :func:`reference_attention` (no autograd, so it runs inside custom-op kernels).

    do (B, Hq, Nq, Dv); dlse (B, Hq, Nq) or None, the gradient flowing into lse. Returns dq, dk, dv in the input
    dtypes. dS = P * (dO V^T - rowsum(dO * O) + dlse); dq = scale dS K; dk = scale dS^T Q; dv = P^T dO.
    """
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    b, hq, nq, _ = q.shape
    hkv, nk = k.shape[1], k.shape[2]
    grp = hq // hkv
    qf, dof = q.to(cdt), do.to(cdt)
    kf, vf = _expand_kv(k.to(cdt), hq), _expand_kv(v.to(cdt), hq)
    s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
    if spec is not None:
        s = s.masked_fill(~spec.dense(b, hq, hkv, nq, nk, q.device), float("-inf"))
    mx = s.amax(dim=-1, keepdim=True)
    mx = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    p = torch.exp(s - mx)
    den = p.sum(dim=-1, keepdim=True)
    p = p / torch.where(den > 0, den, torch.ones_like(den))
    o = torch.matmul(p, vf)
    dp = torch.matmul(dof, vf.transpose(-1, -2))
    delta = (dof * o).sum(-1, keepdim=True)
    if dlse is not None:
        g = dlse.to(cdt)[..., None]
        delta = delta - torch.where(den > 0, g, torch.zeros_like(g))
    ds = p * (dp - delta)
    dq = torch.matmul(ds, kf) * scale
    dk = torch.matmul(ds.transpose(-1, -2), qf) * scale
    dv = torch.matmul(p.transpose(-1, -2), dof)
    dk = dk.view(b, hkv, grp, nk, -1).sum(2)
    dv = dv.view(b, hkv, grp, nk, -1).sum(2)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


@torch.no_grad()
def reference_attention_chunked(q, k, v, spec: MaskSpec | None, scale: float, chunk: int = 1024,
                                compute_dtype: torch.dtype = torch.float64):
    """No-grad reference over chunks of queries (for long sequences); returns (o in compute_dtype, lse)."""
    nq = q.shape[2]
    outs, lses = [], []
    for s0 in range(0, nq, chunk):
        qc = q[:, :, s0 : s0 + chunk].to(compute_dtype)
        o, lse = reference_attention(qc, k, v, spec, scale, True, compute_dtype=compute_dtype, q_start=s0,
                                     nq_total=nq)
        outs.append(o)
        lses.append(lse)
    return torch.cat(outs, 2), torch.cat(lses, 2)
