"""Ring attention: K/V shards travel around the ring (P2P, overlapped with compute), partial outputs are merged by
log-sum-exp. Backward recomputes each block with the attention layer and sends dK/dV around the ring with K/V."""
from __future__ import annotations

import math

import torch

from ..attention import Causal, Varlen, attention
from ._dist import check_qkv, check_same_shapes, group_info, p2p, wait
from .layout import LAYOUTS, segments
from .merge import merge_attention

__all__ = ["ring_attention"]


def _doc_counts(doc_bounds: torch.Tensor, segs: list[tuple[int, int]]) -> torch.Tensor:
    """(S+1,) int32 cu_seqlens of the tokens of ``segs`` (global runs in local order) per document."""
    ds, de = doc_bounds[:-1], doc_bounds[1:]
    cnt = torch.zeros_like(ds)
    for a, n in segs:
        cnt += (torch.minimum(de, torch.tensor(a + n)) - torch.maximum(ds, torch.tensor(a))).clamp(min=0)
    return torch.cat([torch.zeros(1, dtype=torch.int64), cnt.cumsum(0)]).to(torch.int32)


def _plan(rank: int, src: int, world: int, n: int, layout: str, causal: bool, docs: torch.Tensor | None, device):
    """Blocks to compute when rank's queries meet src's keys: list of (q slice, k slice, mask) in local indices.

    Causal: a key run entirely before a query run is fully visible, an identical run is causal, a later run is
    skipped; for both layouts the visible pairs form one rectangle (or the diagonal step), so one call per step.
    Documents: a Varlen mask whose sequences are each document's tokens inside the q and k slices (local order is
    increasing in global position, so a document's tokens are one run).
    """
    qsegs, ksegs = segments(rank, world, n, layout), segments(src, world, n, layout)
    qoff = [0] + [int(x) for x in torch.tensor([s[1] for s in qsegs]).cumsum(0).tolist()]
    koff = [0] + [int(x) for x in torch.tensor([s[1] for s in ksegs]).cumsum(0).tolist()]
    if not causal or src == rank:
        qi, ki, diag = list(range(len(qsegs))), list(range(len(ksegs))), causal
    else:
        full = [(i, j) for i, (qa, _) in enumerate(qsegs) for j, (ka, kl) in enumerate(ksegs) if ka + kl <= qa]
        for i, (qa, ql) in enumerate(qsegs):
            for j, (ka, kl) in enumerate(ksegs):
                if (i, j) not in full and ka < qa + ql:  # neither fully before nor fully after: not a layout we know
                    raise AssertionError(f"ring_attention: partial overlap of q run {qsegs[i]} and k run {ksegs[j]}")
        if not full:
            return []
        qi, ki = sorted({i for i, _ in full}), sorted({j for _, j in full})
        if len(full) != len(qi) * len(ki):
            return [_block([i], [j], qsegs, ksegs, qoff, koff, False, docs, device) for i, j in full]
        diag = False
    return [_block(qi, ki, qsegs, ksegs, qoff, koff, diag, docs, device)]


def _block(qi, ki, qsegs, ksegs, qoff, koff, diag, docs, device):
    qs = slice(qoff[qi[0]], qoff[qi[-1] + 1])
    ks = slice(koff[ki[0]], koff[ki[-1] + 1])
    mask = Causal() if diag else None
    if docs is not None:
        cq = _doc_counts(docs, [qsegs[i] for i in qi]).to(device)
        ck = _doc_counts(docs, [ksegs[j] for j in ki]).to(device)
        mask = Varlen(cq, ck) & Causal() if diag else Varlen(cq, ck)
    return qs, ks, mask


class _RingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, docs, group, scale, backend, layout):
        rank, world = group_info(group)
        n = q.shape[2]
        nxt, prv = (rank + 1) % world, (rank - 1) % world
        o = torch.zeros(*q.shape[:3], v.shape[-1], dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
        kc, vc = k.contiguous(), v.contiguous()
        plans = []
        for step in range(world):
            reqs, kn, vn = [], None, None
            if step < world - 1:  # start passing the current block on before computing with it
                kn, vn = torch.empty_like(kc), torch.empty_like(vc)
                reqs = p2p([(kc, nxt), (vc, nxt)], [(kn, prv), (vn, prv)], group, tag0=0)
            src = (rank - step) % world
            plan = _plan(rank, src, world, n, layout, causal, docs, q.device)
            plans.append(plan)
            for qs, ks, mask in plan:
                ob, lb = attention(q[:, :, qs], kc[:, :, ks], vc[:, :, ks], mask, scale=scale, backend=backend,
                                   return_lse=True)
                o[:, :, qs], lse[:, :, qs] = merge_attention(o[:, :, qs], lse[:, :, qs], ob, lb)
            wait(reqs)
            if kn is not None:
                kc, vc = kn, vn
        out = o.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plans, ctx.group, ctx.scale, ctx.backend = plans, group, scale, backend
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, do, _dlse):
        q, k, v, o, lse = ctx.saved_tensors
        group, scale, backend = ctx.group, ctx.scale, ctx.backend
        rank, world = group_info(group)
        nxt, prv = (rank + 1) % world, (rank - 1) % world
        do32 = do.float()
        dsum = (do32 * o.float()).sum(-1)  # rowsum(dO * O), the softmax-backward correction
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        kc, vc = k.contiguous(), v.contiguous()
        dk_t = dv_t = None  # dK/dV of the block held now; travels with it
        dreqs = []
        for step in range(world):
            reqs, kn, vn = [], None, None
            if step < world - 1:
                kn, vn = torch.empty_like(kc), torch.empty_like(vc)
                reqs = p2p([(kc, nxt), (vc, nxt)], [(kn, prv), (vn, prv)], group, tag0=0)
            dk_b = torch.zeros(kc.shape, dtype=torch.float32, device=q.device)
            dv_b = torch.zeros(vc.shape, dtype=torch.float32, device=q.device)
            for qs, ks, mask in ctx.plans[step]:
                with torch.enable_grad():
                    qq = q[:, :, qs].detach().requires_grad_()
                    kk = kc[:, :, ks].detach().requires_grad_()
                    vv = vc[:, :, ks].detach().requires_grad_()
                    ob, lb = attention(qq, kk, vv, mask, scale=scale, backend=backend, return_lse=True)
                # P_global = exp(lse_b - lse) * P_b: feed the block's backward dO scaled by w and a dlse term that
                # swaps its own rowsum(dO*O_b) for the global one.
                lg = lse[:, :, qs]
                w = torch.where(torch.isneginf(lb), torch.zeros_like(lb),
                                torch.exp(lb.detach() - torch.where(torch.isneginf(lg), torch.zeros_like(lg), lg)))
                g_o = (w.unsqueeze(-1) * do32[:, :, qs]).to(ob.dtype)
                g_l = w * ((do32[:, :, qs] * ob.detach().float()).sum(-1) - dsum[:, :, qs])
                gq, gk, gv = torch.autograd.grad((ob, lb), (qq, kk, vv), (g_o, g_l.to(lb.dtype)))
                dq[:, :, qs] += gq.float()
                dk_b[:, :, ks] += gk.float()
                dv_b[:, :, ks] += gv.float()
            if step > 0:
                wait(dreqs)  # the dK/dV of this block, accumulated by the ranks it visited before
                dk_b += dk_t
                dv_b += dv_t
            dk_t, dv_t = torch.empty_like(dk_b), torch.empty_like(dv_b)
            dreqs = p2p([(dk_b, nxt), (dv_b, nxt)], [(dk_t, prv), (dv_t, prv)], group, tag0=2) if world > 1 else []
            if world == 1:
                dk_t, dv_t = dk_b, dv_b
            wait(reqs)
            if kn is not None:
                kc, vc = kn, vn
        wait(dreqs)  # after R hops the block's gradient is home
        return dq.to(q.dtype), dk_t.to(k.dtype), dv_t.to(v.dtype), None, None, None, None, None, None


def ring_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    group=None,
    scale: float | None = None,
    backend: str = "auto",
    layout: str = "contiguous",
    return_lse: bool = False,
):
    """Ring (context-parallel) self-attention over a sequence sharded across the ranks of ``group``.

    Args:
        q: (B, Hq, N_local, D), k: (B, Hkv, N_local, D), v: (B, Hkv, N_local, Dv): this rank's shard of the global
            sequence of N = R * N_local tokens (R = group size); Hq a multiple of Hkv. Every rank holds equal shapes.
        causal: causal mask over global positions.
        cu_seqlens: (S+1,) int32 global document boundaries (same on every rank, any device): a token sees only
            tokens of its own document (``Varlen`` over the global sequence); ends at N.
        group: process group (default: the world).
        scale: softmax scale, default 1/sqrt(D). backend: the attention layer's backend for each block.
        layout: ``"contiguous"`` (rank r holds tokens [r*N_local, (r+1)*N_local)) or ``"zigzag"`` (rank r holds
            chunks r and 2R-1-r of 2R chunks; balances causal work; see ``zigzag_split``).
        return_lse: also return lse (B, Hq, N_local) fp32 (not differentiable).

    Returns:
        o (B, Hq, N_local, Dv) in q.dtype for this rank's queries (same layout as the input); differentiable in
        q, k, v (backward passes dK/dV around the ring).
    """
    check_qkv(q, k, v)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    _, world = group_info(group)
    n = q.shape[2]
    if layout == "zigzag" and n % 2:
        raise ValueError(f"zigzag layout needs an even local length (2 chunks per rank), got N_local={n}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])
    docs = None
    if cu_seqlens is not None:
        if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1:
            raise TypeError("cu_seqlens must be a 1-D int32 tensor (S+1,) of global document boundaries")
        docs = cu_seqlens.detach().to("cpu", torch.int64)
        if docs.numel() < 2 or int(docs[0]) != 0 or bool((docs[1:] < docs[:-1]).any()):
            raise ValueError(f"cu_seqlens must start at 0 and be non-decreasing, got {docs.tolist()}")
        if int(docs[-1]) != n * world:
            raise ValueError(f"cu_seqlens[-1]={int(docs[-1])} must equal the global length N = world ({world}) * "
                             f"N_local ({n}) = {n * world}")
    check_same_shapes([("q", tuple(q.shape)), ("k", tuple(k.shape)), ("v", tuple(v.shape))], group, world, q.device)
    o, lse = _RingAttention.apply(q, k, v, causal, docs, group, float(scale), backend, layout)
    return (o, lse) if return_lse else o
