"""The oracle: the simple GLA recurrence as a plain loop over time, and a PyTorch chunked form (pure aten ops).

Recurrence (per batch and head), with log-space gates ``g_t <= 0``::

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t        S (K, V), fp32
    o_t = scale * q_t S_t
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gla_chunk_torch", "gla_chunk_torch_bwd", "gla_reference"]


def _cdt(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def gla_reference(q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None = None,
                  output_final_state: bool = False, scale: float | None = None):
    """Step-by-step GLA, differentiable (plain autograd), computed in fp32 (fp64 for fp64 inputs).

    q, k, g (B, H, T, K); v (B, H, T, V); g = log forget gate (<= 0); initial_state (B, H, K, V) or None.
    Returns (o (B, H, T, V) in q.dtype, final state (B, H, K, V) fp32/fp64, or None).
    """
    cdt = _cdt(q)
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    scale = kd ** -0.5 if scale is None else scale
    qf, kf, vf, gf = (x.to(cdt) for x in (q, k, v, g))
    s = q.new_zeros(b, h, kd, vd, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    outs = []
    for i in range(t):
        s = s * gf[:, :, i].exp()[..., None] + kf[:, :, i, :, None] * vf[:, :, i, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", qf[:, :, i] * scale, s))
    o = torch.stack(outs, dim=2).to(q.dtype)
    return o, (s if output_final_state else None)


def gla_chunk_torch(q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None = None,
                    scale: float | None = None, chunk_size: int = 16):
    """Chunkwise-parallel GLA in PyTorch (aten ops only: used on CPU without Triton, under ``torch.export`` and as
    the autograd-based backward of that fallback). O(T * C * K) work and memory.

    Intra-chunk weights exp(b_t - b_s) (b = within-chunk cumulative log gate) are formed only for s <= t, so they
    never overflow. Returns (o in q.dtype, final state fp32/fp64); same shapes as :func:`gla_reference`.
    """
    cdt = _cdt(q)
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    scale = kd ** -0.5 if scale is None else scale
    c = chunk_size
    nc = (t + c - 1) // c
    pad = nc * c - t
    qf, kf, vf, gf = (x.to(cdt) for x in (q, k, v, g))
    if pad:
        qf, kf, vf, gf = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (qf, kf, vf, gf))
    qf = qf.reshape(b, h, nc, c, kd) * scale
    kf = kf.reshape(b, h, nc, c, kd)
    vf = vf.reshape(b, h, nc, c, vd)
    bc = gf.reshape(b, h, nc, c, kd).cumsum(-2)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    diff = bc[..., :, None, :] - bc[..., None, :, :]  # (b, h, nc, t, s, K)
    w = torch.exp(diff.masked_fill(~causal[..., None], float("-inf")))
    a = torch.einsum("bhntk,bhnsk,bhntsk->bhnts", qf, kf, w)
    o_intra = a @ vf
    b_last = bc[..., -1, :]  # (b, h, nc, K)
    k_dec = kf * torch.exp(b_last[..., None, :] - bc)
    q_dec = qf * torch.exp(bc)
    s = q.new_zeros(b, h, kd, vd, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    o_inter = []
    for n in range(nc):
        o_inter.append(q_dec[:, :, n] @ s)
        s = s * torch.exp(b_last[:, :, n])[..., None] + k_dec[:, :, n].transpose(-1, -2) @ vf[:, :, n]
    o = (o_intra + torch.stack(o_inter, dim=2)).reshape(b, h, nc * c, vd)[:, :, :t]
    return o.to(q.dtype), s


def gla_chunk_torch_bwd(do: Tensor, dht: Tensor | None, q: Tensor, k: Tensor, v: Tensor, g: Tensor,
                        initial_state: Tensor | None, final_state: Tensor | None, scale: float | None = None,
                        chunk_size: int = 16):
    """Analytic chunked backward of :func:`gla_chunk_torch` (aten ops, no autograd needed: it runs inside custom-op
    kernels, below autograd). Returns (dq, dk, dv, dg, dh0) in the input dtypes, dh0 fp32/fp64 (zeros without an
    initial state). dg from the closed form sum_{t>=r}(q_t dq_t - k_t dk_t) + sum_V(dht * final_state)."""
    cdt = _cdt(q)
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    scale = kd ** -0.5 if scale is None else scale
    c = chunk_size
    nc = (t + c - 1) // c
    pad = nc * c - t
    qf, kf, vf, gf, dof = (x.to(cdt) for x in (q, k, v, g, do))
    if pad:
        qf, kf, vf, gf, dof = (torch.nn.functional.pad(x, (0, 0, 0, pad)) for x in (qf, kf, vf, gf, dof))
    qs = qf.reshape(b, h, nc, c, kd) * scale
    kc = kf.reshape(b, h, nc, c, kd)
    vc = vf.reshape(b, h, nc, c, vd)
    doc = dof.reshape(b, h, nc, c, vd)
    bc = gf.reshape(b, h, nc, c, kd).cumsum(-2)
    causal = torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    w = torch.exp((bc[..., :, None, :] - bc[..., None, :, :]).masked_fill(~causal[..., None], float("-inf")))
    a = torch.einsum("bhntk,bhnsk,bhntsk->bhnts", qs, kc, w)
    da = doc @ vc.transpose(-1, -2)  # (t, s): do_t . v_s
    b_last = bc[..., -1, :]
    eb = torch.exp(bc)
    k_dec = kc * torch.exp(b_last[..., None, :] - bc)
    s = q.new_zeros(b, h, kd, vd, dtype=cdt) if initial_state is None else initial_state.to(cdt)
    states = []
    for n in range(nc):
        states.append(s)
        s = s * torch.exp(b_last[:, :, n])[..., None] + k_dec[:, :, n].transpose(-1, -2) @ vc[:, :, n]
    ds = q.new_zeros(b, h, kd, vd, dtype=cdt) if dht is None else dht.to(cdt)
    dstates = [None] * nc  # gradient of the state leaving chunk n
    for n in reversed(range(nc)):
        dstates[n] = ds
        ds = ds * torch.exp(b_last[:, :, n])[..., None] + (qs[:, :, n] * eb[:, :, n]).transpose(-1, -2) @ doc[:, :, n]
    sn = torch.stack(states, dim=2)
    dsn = torch.stack(dstates, dim=2)
    dq = torch.einsum("bhnts,bhnsk,bhntsk->bhntk", da, kc, w) + eb * (doc @ sn.transpose(-1, -2))
    dq = dq * scale
    dk = torch.einsum("bhnts,bhntk,bhntsk->bhnsk", da, qs, w) + (vc @ dsn.transpose(-1, -2)) * torch.exp(
        b_last[..., None, :] - bc)
    dv = a.transpose(-1, -2) @ doc + k_dec @ dsn
    dq, dk = dq.reshape(b, h, nc * c, kd)[:, :, :t], dk.reshape(b, h, nc * c, kd)[:, :, :t]
    dv = dv.reshape(b, h, nc * c, vd)[:, :, :t]
    dg = (q.to(cdt) * dq - k.to(cdt) * dk).flip(2).cumsum(2).flip(2)
    if dht is not None:
        dg = dg + (dht.to(cdt) * final_state.to(cdt)).sum(-1)[:, :, None, :]
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dg.to(g.dtype), ds
