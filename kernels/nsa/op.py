"""``nsa``: Native Sparse Attention executed on ``zoo.kernels.attention``.

- compressed branch: queries grouped by position residue ``t mod d`` so the block-causal rule
  ``j*d + l - 1 <= t`` becomes a bottom-right ``Causal()`` mask per group (2 attention calls; 1 call non-causal);
- selected branch: ``BlockSparse`` with Hb = Hkv (one selection per KV group, any head ratio, no padding),
  ``& Causal()`` in causal mode; selection per query block of l' tokens (see docs/kernels/nsa.md);
- window branch: ``SlidingWindow``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..attention import BlockSparse, Causal, SlidingWindow, attention
from .common import NSAConfig, check_nsa_args, compress_blocks, resolve_config, window_bounds
from .importance import block_prob_sums, block_prob_sums_supported

__all__ = ["block_prob_sums_torch", "compressed_attention", "nsa", "nsa_select", "overlap_matrix"]


def overlap_matrix(nc: int, ns: int, cfg: NSAConfig, device=None) -> torch.Tensor:
    """(Nc, Ns) fp32: 1 where compression block j ([j*d, j*d+l)) overlaps selection block s ([s*l', (s+1)*l'))."""
    j = torch.arange(nc, device=device)[:, None] * cfg.cmp_stride
    s = torch.arange(ns, device=device)[None, :] * cfg.sel_len
    return ((j < s + cfg.sel_len) & (j + cfg.cmp_len > s)).float()


def compressed_attention(q, kc, vc, cfg: NSAConfig, causal: bool, scale: float, backend: str):
    """Attention of q (B, Hq, T, D) over compressed kc/vc (B, Hkv, Nc, D); causal: block j visible iff
    ``j*d + l - 1 <= t``. Returns o (B, Hq, T, Dv) and lse (B, Hq, T) fp32 (-inf where nothing is visible)."""
    b, hq, t, d = q.shape
    nc, dv = kc.shape[2], vc.shape[-1]
    if nc == 0:
        return q.new_zeros(b, hq, t, dv), q.new_full((b, hq, t), float("-inf"), dtype=torch.float32)
    if not causal:
        return attention(q, kc, vc, None, scale=scale, backend=backend, return_lse=True)
    st, ln = cfg.cmp_stride, cfg.cmp_len
    u = math.ceil(t / st)
    qp = F.pad(q, (0, 0, 0, u * st - t)).view(b, hq, u, st, d)
    outs, lses = [], []
    r0 = 0
    while r0 < st:  # residues with the same offset c_r = floor((r - l + 1) / d) form one contiguous group
        c = (r0 - ln + 1) // st
        r1 = r0
        while r1 < st and (r1 - ln + 1) // st == c:
            r1 += 1
        nr, nk = r1 - r0, u + c
        if nk <= 0:
            outs.append(q.new_zeros(b, hq, u, nr, dv))
            lses.append(q.new_full((b, hq, u, nr), float("-inf"), dtype=torch.float32))
        else:
            qs = qp[:, :, :, r0:r1].permute(0, 3, 1, 2, 4).reshape(b * nr, hq, u, d)
            ks = F.pad(kc, (0, 0, 0, max(0, nk - nc)))[:, :, :nk]
            vs = F.pad(vc, (0, 0, 0, max(0, nk - nc)))[:, :, :nk]
            ks = ks[:, None].expand(b, nr, *ks.shape[1:]).reshape(b * nr, *ks.shape[1:])
            vs = vs[:, None].expand(b, nr, *vs.shape[1:]).reshape(b * nr, *vs.shape[1:])
            o, lse = attention(qs, ks, vs, Causal(), scale=scale, backend=backend, return_lse=True)
            outs.append(o.view(b, nr, hq, u, dv).permute(0, 2, 3, 1, 4))
            lses.append(lse.view(b, nr, hq, u).permute(0, 2, 3, 1))
        r0 = r1
    o = torch.cat(outs, 3).reshape(b, hq, u * st, dv)[:, :, :t]
    lse = torch.cat(lses, 3).reshape(b, hq, u * st)[:, :, :t]
    return o, lse


@torch.no_grad()
def block_prob_sums_torch(q, kc, lse, cfg: NSAConfig, causal: bool, scale: float, heads_kv: int,
                          max_work: int = 2 ** 27) -> torch.Tensor:
    """PyTorch (CPU path and test oracle) of :func:`zoo.kernels.nsa.importance.block_prob_sums`: (B, Hkv, Ns, Nc)
    fp32 sums over each query block's queries and the group's heads of exp(scale * q . kc - lse) (0 where lse = -inf
    and, causal, where ``j*d + l - 1 > t``). Score matrices are materialised ``max_work`` elements at a time."""
    b, hq, t, _ = q.shape
    g = hq // heads_kv
    bs = cfg.sel_len
    ns = math.ceil(t / bs)
    nc = kc.shape[2]
    dev = q.device
    psum = torch.zeros(b, heads_kv, ns, nc, device=dev)
    if nc == 0:
        return psum
    kcr = kc.float().repeat_interleave(g, 1)
    step = max(1, max_work // max(1, b * hq * bs * nc))
    jend = torch.arange(nc, device=dev) * cfg.cmp_stride + cfg.cmp_len - 1
    for n0 in range(0, ns, step):
        n1 = min(ns, n0 + step)
        a, e = n0 * bs, min(t, n1 * bs)
        s = torch.einsum("bhtd,bhjd->bhtj", q[:, :, a:e].float(), kcr) * scale
        lz = lse[:, :, a:e, None]
        p = torch.where(torch.isfinite(lz), torch.exp(s - torch.where(torch.isfinite(lz), lz, 0)), 0)
        if causal:
            p = p * (jend[None, :] <= torch.arange(a, e, device=dev)[:, None])
        p = p.view(b, heads_kv, g, e - a, nc).sum(2)
        psum[:, :, n0:n1] = F.pad(p, (0, 0, 0, (n1 - n0) * bs - (e - a))).view(b, heads_kv, n1 - n0, bs, nc).sum(3)
    return psum


@torch.no_grad()
def nsa_select(q, kc, lse, cfg: NSAConfig, causal: bool, scale: float, heads_kv: int,
               max_work: int = 2 ** 27, use_kernel: bool | None = None) -> BlockSparse:
    """Top-n selection per (KV group, query block of l' tokens) from the compressed attention probabilities.

    Importance of selection block s for query block n = sum over the block's queries, the group's query heads and the
    compression blocks overlapping s of softmax(q . kc) (normalised with the compressed branch's ``lse``). Forced:
    the first ``init_blocks`` blocks and the ``local_blocks`` blocks ending at n; the rest of the budget n goes to the
    highest-importance candidates (causal: blocks before n). Returns ``BlockSparse`` (B, Hkv, Ns, <= sel_count).
    The probability sums run in a Triton kernel (kernels/nsa/importance.py) when q is on CUDA or
    TRITON_INTERPRET=1 is set and the shapes allow it (``use_kernel=None``); ``use_kernel=False`` forces PyTorch.
    """
    b, t = q.shape[0], q.shape[2]
    bs = cfg.sel_len
    ns = math.ceil(t / bs)
    nc = kc.shape[2]
    dev = q.device
    if nc > 0:
        if use_kernel is None:
            use_kernel = block_prob_sums_supported(q, bs)
        if use_kernel:
            psum = block_prob_sums(q, kc, lse, cmp_len=cfg.cmp_len, cmp_stride=cfg.cmp_stride, sel_len=bs,
                                   causal=causal, scale=scale, heads_kv=heads_kv)
        else:
            psum = block_prob_sums_torch(q, kc, lse, cfg, causal, scale, heads_kv, max_work)
        imp = psum @ overlap_matrix(nc, ns, cfg, dev)
    else:
        imp = torch.zeros(b, heads_kv, ns, ns, device=dev)
    n = torch.arange(ns, device=dev)[:, None]
    s = torch.arange(ns, device=dev)[None, :]
    forced = (s < cfg.init_blocks) | ((s <= n) & (s > n - cfg.local_blocks))
    if causal:
        forced &= s <= n
    cand = ~forced & ((s < n) if causal else torch.ones_like(forced))
    budget = (cfg.sel_count - forced.sum(1)).clamp(min=0)  # (Ns,)
    kk = min(int(budget.max()), ns)
    sel = forced[None, None].expand(b, heads_kv, ns, ns).clone()
    if kk > 0:
        val, idx = imp.masked_fill(~cand, float("-inf")).topk(kk, dim=-1)
        keep = (val > float("-inf")) & (torch.arange(kk, device=dev) < budget[:, None])
        sel.scatter_(-1, idx, keep | sel.gather(-1, idx))
    counts = sel.sum(-1, dtype=torch.int32)
    mb = max(1, int(counts.max()))
    key = torch.where(sel, ns - torch.arange(ns, device=dev, dtype=torch.int32), 0)
    top = key.topk(mb, dim=-1).values
    idx = torch.where(top > 0, ns - top, 0).to(torch.int32).contiguous()
    return BlockSparse(idx, counts.contiguous(), bs)


def _compressors(compressor):
    if compressor is None:
        return None, None
    if isinstance(compressor, (tuple, list)) and len(compressor) == 2:
        return compressor
    if callable(compressor):
        return compressor, compressor
    raise TypeError("compressor must be None (mean pooling), a callable (B,H,Nc,l,D)->(B,H,Nc,D) or a pair of them "
                    f"(for k, v); got {type(compressor).__name__}")


def nsa(q, k, v, gates, *, causal: bool = True, config="paper", compressor=None, scale: float | None = None,
        backend: str = "auto", return_branches: bool = False, **overrides):
    """Native Sparse Attention (arXiv:2502.11089).

    Args:
        q: (B, Hq, T, D); k: (B, Hkv, T, D); v: (B, Hkv, T, Dv); any Hq / Hkv ratio.
        gates: (B, Hq, T, 3) branch gates (cmp, slc, win), already through the sigmoid; differentiable.
        causal: causal (language) or bidirectional (video tokens) mode.
        config: ``"paper"``, ``"videonsa"`` or an :class:`NSAConfig`; ``**overrides`` replace its fields
            (cmp_len, cmp_stride, sel_len, sel_count, window, init_blocks, local_blocks).
        compressor: None (mean pooling), a callable (B, Hkv, Nc, l, D) -> (B, Hkv, Nc, D), or a (k, v) pair of them.
        scale: softmax scale (default 1/sqrt(D)). backend: attention backend of the three branches (the compressed
            branch needs the log-sum-exp, so not ``"sdpa"``).
        return_branches: also return the three ungated branch outputs.

    Returns o (B, Hq, T, Dv) in q.dtype. Gradients reach q, k, v, gates and the compressor; selection has none.
    """
    cfg = resolve_config(config, overrides)
    check_nsa_args(q, k, v, gates, cfg)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if backend == "sdpa":
        raise ValueError("backend='sdpa' cannot return the log-sum-exp the selection needs; use 'auto', 'triton', "
                         "'flex' or 'reference'")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    fk, fv = _compressors(compressor)
    kc, vc = compress_blocks(k, cfg, fk), compress_blocks(v, cfg, fv)
    o_cmp, lse = compressed_attention(q, kc, vc, cfg, causal, scale, backend)
    mask = nsa_select(q.detach(), kc.detach(), lse.detach(), cfg, causal, scale, k.shape[1])
    o_slc = attention(q, k, v, mask & Causal() if causal else mask, scale=scale, backend=backend)
    if cfg.window > 0:
        left, right = window_bounds(cfg, causal)
        o_win = attention(q, k, v, SlidingWindow(left, right), scale=scale, backend=backend)
    else:
        o_win = torch.zeros_like(o_slc)
    g = gates.to(o_slc.dtype)
    o = g[..., 0:1] * o_cmp.to(o_slc.dtype) + g[..., 1:2] * o_slc + g[..., 2:3] * o_win
    return (o, (o_cmp, o_slc, o_win)) if return_branches else o
