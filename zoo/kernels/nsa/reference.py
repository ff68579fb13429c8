"""``nsa_reference``: NSA with dense masks and plain softmax math (fp32 / fp64), the oracle of :func:`nsa`.

Same rule as the op (block-causal compression ``j*d + l - 1 <= t``, selection per query block of l' tokens shared by a
KV group, window), written token by token with loops over blocks. Small shapes only.
"""
from __future__ import annotations

import math

import torch

from .common import check_nsa_args, resolve_config, window_bounds

__all__ = ["nsa_reference"]


def _softmax_attn(q, k, v, mask, scale):
    s = (q @ k.transpose(-1, -2)) * scale
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), -1).nan_to_num(0.0)
    return p @ v, p


def nsa_reference(q, k, v, gates, *, causal: bool = True, config="paper", compressor=None, scale=None,
                  return_branches: bool = False, **overrides):
    """Dense-mask NSA; arguments and result as in :func:`zoo.kernels.nsa.nsa`."""
    cfg = resolve_config(config, overrides)
    check_nsa_args(q, k, v, gates, cfg)
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    fk, fv = (None, None) if compressor is None else (
        compressor if isinstance(compressor, (tuple, list)) else (compressor, compressor))
    l, st, bs = cfg.cmp_len, cfg.cmp_stride, cfg.sel_len
    nc = (t - l) // st + 1 if t >= l else 0
    kb = [k[:, :, j * st:j * st + l] for j in range(nc)]
    vb = [v[:, :, j * st:j * st + l] for j in range(nc)]

    def comp(blocks, fn):
        if not blocks:
            return k.new_zeros(b, hkv, 0, blocks_dim)
        x = torch.stack(blocks, 2)
        return x.mean(3) if fn is None else fn(x)

    blocks_dim = d
    kc = comp(kb, fk)
    blocks_dim = v.shape[-1]
    vc = comp(vb, fv)
    qf = q.to(cdt)
    rep = lambda x: x.to(cdt).repeat_interleave(g, 1)  # noqa: E731
    tt = torch.arange(t)[:, None]
    # compressed branch
    jj = torch.arange(nc)[None, :]
    mc = (jj * st + l - 1 <= tt) if causal else torch.ones(t, nc, dtype=torch.bool)
    o_cmp, p_cmp = _softmax_attn(qf, rep(kc), rep(vc), mc, scale)
    # selection, one list per (batch, kv head, query block)
    ns = math.ceil(t / bs)
    sel = torch.zeros(b, hkv, ns, ns, dtype=torch.bool)
    pc = p_cmp.detach().view(b, hkv, g, t, nc).sum(2)  # (B, Hkv, T, Nc)
    for n in range(ns):
        blk = pc[:, :, n * bs:(n + 1) * bs].sum(2)  # (B, Hkv, Nc)
        imp = torch.zeros(b, hkv, ns, dtype=cdt)
        for s in range(ns):
            for j in range(nc):
                if j * st < (s + 1) * bs and j * st + l > s * bs:
                    imp[:, :, s] += blk[:, :, j]
        forced = {s for s in range(min(cfg.init_blocks, ns)) if not causal or s <= n}
        forced |= {s for s in range(max(0, n - cfg.local_blocks + 1), n + 1)}
        cands = [s for s in range(ns) if s not in forced and (not causal or s < n)]
        budget = max(0, cfg.sel_count - len(forced))
        for bb in range(b):
            for h in range(hkv):
                chosen = set(forced)
                if cands and budget:
                    sc = imp[bb, h, cands]
                    order = torch.argsort(sc, descending=True, stable=True).tolist()
                    chosen |= {cands[i] for i in order[:budget]}
                sel[bb, h, n, list(chosen)] = True
    kblk = torch.arange(t) // bs
    ms = sel[:, :, kblk][:, :, :, kblk].repeat_interleave(g, 1)  # (B, Hq, T, T)
    if causal:
        ms = ms & (torch.arange(t)[None, :] <= tt)
    o_slc, _ = _softmax_attn(qf, rep(k), rep(v), ms, scale)
    # window
    if cfg.window > 0:
        left, right = window_bounds(cfg, causal)
        kk = torch.arange(t)[None, :]
        mw = (kk >= tt - left) & (kk <= tt + right)
        o_win, _ = _softmax_attn(qf, rep(k), rep(v), mw, scale)
    else:
        o_win = torch.zeros_like(o_slc)
    gg = gates.to(cdt)
    o = (gg[..., 0:1] * o_cmp + gg[..., 1:2] * o_slc + gg[..., 2:3] * o_win).to(q.dtype)
    return (o, (o_cmp, o_slc, o_win)) if return_branches else o
