"""``nsa``: Native Sparse Attention executed on ``zoo.kernels.attention``.

- compressed branch: queries grouped by position residue ``t mod d`` so the block-causal rule
  ``j*d + l - 1 <= t`` becomes a bottom-right ``Causal()`` mask per group (2 attention calls on strided views of q,
  no copy; 1 call non-causal);
- selection: one Triton kernel gives the importance of every selection block per (KV group, query block)
  (zoo/kernels/nsa/importance.py), top-n in torch with sizes known from the config (no device -> host sync);
- selected branch: ``BlockSparse`` with Hb = Hkv (one selection per KV group, any head ratio, no padding),
  ``& Causal()`` in causal mode; selection per query block of l' tokens (see docs/kernels/nsa.md);
- window branch: ``SlidingWindow``; gates: one fused pass (reads the compressed output in its residue layout).

Every stage of :func:`nsa` runs inside ``_stage(name)``; :func:`record_stages` times them (benchmarks/sparse.py
``--breakdown``) on the real path.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import time

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..attention import BlockSparse, Causal, SlidingWindow, attention
from .common import NSAConfig, check_nsa_args, compress_blocks, resolve_config, window_bounds
from .importance import block_importance, block_importance_supported

__all__ = ["STAGES", "StageTimes", "block_importance_torch", "block_prob_sums_torch", "compressed_attention", "nsa",
           "nsa_select", "overlap_matrix", "record_stages"]

# ------------------------------------------------------------------------------------------------- stage timing
STAGES = ("compress_blocks", "compressed_attention", "importance", "topk_mask", "selected_attention",
          "window_attention", "gate_combine")


class StageTimes:
    """Per-stage times of the :func:`nsa` calls made inside :func:`record_stages`: CUDA events on ``device``'s
    current stream (GPU time between the stage's first and last launch), wall time on CPU."""

    def __init__(self, device):
        self.device = torch.device(device)
        self._marks: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def stage(self, name: str):
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            try:
                yield
            finally:
                end.record()
                self._marks.append((name, start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._marks.append((name, t0, time.perf_counter()))

    def times_ms(self) -> dict[str, float]:
        """{stage: ms} in :data:`STAGES` order (summed when a stage ran several times); synchronises CUDA."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out: dict[str, float] = {}
        for name, a, b in self._marks:
            ms = a.elapsed_time(b) if self.device.type == "cuda" else (b - a) * 1e3
            out[name] = out.get(name, 0.0) + ms
        return {k: out[k] for k in sorted(out, key=lambda k: STAGES.index(k) if k in STAGES else len(STAGES))}


_RECORDER: StageTimes | None = None
_NO_STAGE = contextlib.nullcontext()


def _stage(name: str):
    return _NO_STAGE if _RECORDER is None else _RECORDER.stage(name)


@contextlib.contextmanager
def record_stages(device):
    """``with record_stages("cuda") as rec: nsa(...)``, then ``rec.times_ms()``. For benchmarks (process-global,
    not thread-safe); the stages are the ones :func:`nsa` itself runs."""
    global _RECORDER
    prev, _RECORDER = _RECORDER, StageTimes(device)
    try:
        yield _RECORDER
    finally:
        _RECORDER = prev


# ------------------------------------------------------------------------------------------------- compressed branch
def overlap_matrix(nc: int, ns: int, cfg: NSAConfig, device=None) -> torch.Tensor:
    """(Nc, Ns) fp32: 1 where compression block j ([j*d, j*d+l)) overlaps selection block s ([s*l', (s+1)*l'))."""
    j = torch.arange(nc, device=device)[:, None] * cfg.cmp_stride
    s = torch.arange(ns, device=device)[None, :] * cfg.sel_len
    return ((j < s + cfg.sel_len) & (j + cfg.cmp_len > s)).float()


class _Compressed:
    """Compressed-branch output: ``full`` (B, Hq, T, Dv), or residue groups ``parts`` = [((r0, r1), o5)] with o5 a
    (B, Hq, u, r1 - r0, Dv) view of one attention call's output (query t = i*d + r is o5[:, :, i, r - r0])."""

    def __init__(self, full=None, parts=None, stride=0, length=0):
        self.full, self.parts, self.stride, self.length = full, parts, stride, length

    def tensor(self) -> torch.Tensor:
        if self.full is not None:
            return self.full
        o = torch.cat([p for _, p in self.parts], 3)  # (B, Hq, u, d, Dv)
        return o.reshape(o.shape[0], o.shape[1], -1, o.shape[-1])[:, :, :self.length]


def _residue_groups(st: int, ln: int):
    """[(r0, r1, c)]: residues r in [r0, r1) share c = floor((r - l + 1) / d) (at most 2 groups)."""
    out, r0 = [], 0
    while r0 < st:
        c = (r0 - ln + 1) // st
        r1 = r0
        while r1 < st and (r1 - ln + 1) // st == c:
            r1 += 1
        out.append((r0, r1, c))
        r0 = r1
    return out


def _compressed_branch(q, kc, vc, cfg: NSAConfig, causal: bool, scale: float, backend: str):
    """(_Compressed, lse (B, Hq, T) fp32). Causal: per residue group one attention call with queries
    q[:, :, r::d] for r in the group as a strided view of q (no copy unless T % d != 0 or q's strides forbid it)."""
    b, hq, t, d = q.shape
    hkv, nc, dv = kc.shape[1], kc.shape[2], vc.shape[-1]
    if nc == 0:
        return (_Compressed(full=q.new_zeros(b, hq, t, dv)),
                q.new_full((b, hq, t), float("-inf"), dtype=torch.float32))
    if not causal:
        o, lse = attention(q, kc, vc, None, scale=scale, backend=backend, return_lse=True)
        return _Compressed(full=o), lse
    st, ln = cfg.cmp_stride, cfg.cmp_len
    u = math.ceil(t / st)
    qp = q if u * st == t else F.pad(q, (0, 0, 0, u * st - t))
    sb, sh, stt, _ = qp.stride()
    # Residues as batch with (B, Hq) merged into heads: a view when B*Hq merges (contiguous q, or B = 1). Otherwise,
    # when tokens are strided by Hq heads ((B, T, H, D) storage, as NSAAttention makes it), residues join the heads.
    res_in_heads = not (b == 1 or hq == 1 or sb == hq * sh) and stt == hq * sh
    parts, lses = [], []
    for r0, r1, c in _residue_groups(st, ln):
        nr, nk = r1 - r0, u + c
        if nk <= 0:
            parts.append(((r0, r1), q.new_zeros(b, hq, u, nr, dv)))
            lses.append(q.new_full((b, hq, u, nr), float("-inf"), dtype=torch.float32))
            continue
        ks = kc[:, :, :nk] if nk <= nc else F.pad(kc, (0, 0, 0, nk - nc))
        vs = vc[:, :, :nk] if nk <= nc else F.pad(vc, (0, 0, 0, nk - nc))
        if res_in_heads:  # (B, nr*Hq, u, D); head r*Hq + h uses KV head r*Hkv + h // g
            qs = qp.view(b, hq, u, st, d)[:, :, :, r0:r1].permute(0, 3, 1, 2, 4).reshape(b, nr * hq, u, d)
            ks = ks[:, None].expand(b, nr, *ks.shape[1:]).reshape(b, nr * hkv, nk, d)
            vs = vs[:, None].expand(b, nr, *vs.shape[1:]).reshape(b, nr * hkv, nk, dv)
            o, lse = attention(qs, ks, vs, Causal(), scale=scale, backend=backend, return_lse=True)
            parts.append(((r0, r1), o.view(b, nr, hq, u, dv).permute(0, 2, 3, 1, 4)))
            lses.append(lse.view(b, nr, hq, u).permute(0, 2, 3, 1))
        else:  # (nr, B*Hq, u, D); K/V broadcast over the residues (stride 0)
            qs = qp.reshape(b * hq, u, st, d)[:, :, r0:r1].permute(2, 0, 1, 3)
            ks = ks.reshape(b * hkv, nk, d).expand(nr, b * hkv, nk, d)
            vs = vs.reshape(b * hkv, nk, dv).expand(nr, b * hkv, nk, dv)
            o, lse = attention(qs, ks, vs, Causal(), scale=scale, backend=backend, return_lse=True)
            parts.append(((r0, r1), o.view(nr, b, hq, u, dv).permute(1, 2, 3, 0, 4)))
            lses.append(lse.view(nr, b, hq, u).permute(1, 2, 3, 0))
    lse = torch.cat(lses, 3).reshape(b, hq, u * st)[:, :, :t]
    return _Compressed(parts=parts, stride=st, length=t), lse


def compressed_attention(q, kc, vc, cfg: NSAConfig, causal: bool, scale: float, backend: str):
    """Attention of q (B, Hq, T, D) over compressed kc/vc (B, Hkv, Nc, D); causal: block j visible iff
    ``j*d + l - 1 <= t``. Returns o (B, Hq, T, Dv) and lse (B, Hq, T) fp32 (-inf where nothing is visible)."""
    cmp, lse = _compressed_branch(q, kc, vc, cfg, causal, scale, backend)
    return cmp.tensor(), lse


# ------------------------------------------------------------------------------------------------- selection
@torch.no_grad()
def block_prob_sums_torch(q, kc, lse, cfg: NSAConfig, causal: bool, scale: float, heads_kv: int,
                          max_work: int = 2 ** 27) -> torch.Tensor:
    """(B, Hkv, Ns, Nc) fp32 sums over each query block's queries and the group's heads of exp(scale * q . kc - lse)
    (0 where lse = -inf and, causal, where ``j*d + l - 1 > t``). Score matrices are materialised ``max_work``
    elements at a time. Times :func:`overlap_matrix` it gives the importance (:func:`block_importance_torch`)."""
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
def block_importance_torch(q, kc, lse, cfg: NSAConfig, causal: bool, scale: float, heads_kv: int,
                           max_work: int = 2 ** 27) -> torch.Tensor:
    """PyTorch (CPU path and test oracle) of :func:`zoo.kernels.nsa.importance.block_importance`: (B, Hkv, Ns, Ns)
    fp32 = ``block_prob_sums_torch(...) @ overlap_matrix(Nc, Ns)``."""
    psum = block_prob_sums_torch(q, kc, lse, cfg, causal, scale, heads_kv, max_work)
    return psum @ overlap_matrix(psum.shape[-1], psum.shape[2], cfg, q.device)


def selection_sizes(ns: int, cfg: NSAConfig, causal: bool) -> tuple[int, int]:
    """(top-k width, longest block list) of :func:`nsa_select` for Ns query blocks, from the config alone (host
    arithmetic, no device sync, traceable by torch.export). Per query block n: forced f(n) = |first init_blocks
    (causal: <= n) U the local_blocks ending at n|, budget max(n_sel - f, 0), candidates n + 1 - f (causal) or
    Ns - f; the list holds f + min(budget, candidates) blocks (every candidate score is finite)."""
    return _selection_sizes(ns, cfg.init_blocks, cfg.local_blocks, cfg.sel_count, causal)


@functools.lru_cache(maxsize=256)
def _selection_sizes(ns: int, init_blocks: int, local_blocks: int, sel_count: int, causal: bool) -> tuple[int, int]:
    kk, mb = 0, 1
    for n in range(ns):
        init_end = min(n + 1, init_blocks) if causal else min(init_blocks, ns)
        loc_lo = max(n - local_blocks + 1, 0)
        forced = init_end + (n + 1 - loc_lo) - max(min(init_end, n + 1) - loc_lo, 0)
        budget = max(sel_count - forced, 0)
        cands = (n + 1 - forced) if causal else (ns - forced)
        kk, mb = max(kk, budget), max(mb, forced + min(budget, cands))
    return min(kk, ns), mb


def _topk_lists(imp: torch.Tensor, cfg: NSAConfig, causal: bool) -> BlockSparse:
    """Forced blocks + top-(n - |forced|) candidates of imp (B, Hkv, Ns, Ns) -> BlockSparse, ascending lists."""
    b, hkv, ns, _ = imp.shape
    dev = imp.device
    kk, mb = selection_sizes(ns, cfg, causal)
    n = torch.arange(ns, device=dev)[:, None]
    s = torch.arange(ns, device=dev)[None, :]
    forced = (s < cfg.init_blocks) | ((s <= n) & (s > n - cfg.local_blocks))
    if causal:
        forced &= s <= n
    cand = ~forced & ((s < n) if causal else torch.ones_like(forced))
    budget = (cfg.sel_count - forced.sum(1)).clamp(min=0)  # (Ns,)
    sel = forced[None, None].expand(b, hkv, ns, ns).clone()
    if kk > 0:
        val, idx = imp.masked_fill(~cand, float("-inf")).topk(kk, dim=-1)
        keep = (val > float("-inf")) & (torch.arange(kk, device=dev) < budget[:, None])
        sel.scatter_(-1, idx, keep | sel.gather(-1, idx))
    counts = sel.sum(-1, dtype=torch.int32)
    key = torch.where(sel, ns - torch.arange(ns, device=dev, dtype=torch.int32), 0)
    top = key.topk(mb, dim=-1).values
    idx = torch.where(top > 0, ns - top, 0).to(torch.int32).contiguous()
    # Built here, valid by construction (distinct ids in [0, Ns), counts <= mb): skip BlockSparse's host checks.
    return BlockSparse.trusted(idx, counts.contiguous(), cfg.sel_len, max_index=ns - 1)


@torch.no_grad()
def nsa_select(q, kc, lse, cfg: NSAConfig, causal: bool, scale: float, heads_kv: int,
               max_work: int = 2 ** 27, use_kernel: bool | None = None) -> BlockSparse:
    """Top-n selection per (KV group, query block of l' tokens) from the compressed attention probabilities.

    Importance of selection block s for query block n = sum over the block's queries, the group's query heads and the
    compression blocks overlapping s of softmax(q . kc) (normalised with the compressed branch's ``lse``). Forced:
    the first ``init_blocks`` blocks and the ``local_blocks`` blocks ending at n; the rest of the budget n goes to the
    highest-importance candidates (causal: blocks before n). Returns ``BlockSparse`` (B, Hkv, Ns, <= sel_count).
    The importance runs in a Triton kernel (zoo/kernels/nsa/importance.py) when q is on CUDA or TRITON_INTERPRET=1 is
    set and the shapes allow it (``use_kernel=None``); ``use_kernel=False`` forces PyTorch. No device -> host sync.
    """
    b, t = q.shape[0], q.shape[2]
    ns = math.ceil(t / cfg.sel_len)
    with _stage("importance"):
        if kc.shape[2] == 0:
            imp = torch.zeros(b, heads_kv, ns, ns, device=q.device)
        else:
            if use_kernel is None:  # traced (torch.compile / export): the torch path, the kernel is no custom op
                use_kernel = (not torch.compiler.is_compiling()
                              and block_importance_supported(q, cfg.cmp_len, cfg.cmp_stride, cfg.sel_len))
            if use_kernel:
                imp = block_importance(q, kc, lse, cmp_len=cfg.cmp_len, cmp_stride=cfg.cmp_stride,
                                       sel_len=cfg.sel_len, causal=causal, scale=scale, heads_kv=heads_kv)
            else:
                imp = block_importance_torch(q, kc, lse, cfg, causal, scale, heads_kv, max_work)
    with _stage("topk_mask"):
        return _topk_lists(imp, cfg, causal)


# ------------------------------------------------------------------------------------------------- gates
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"  # read at import, as @triton.jit does


# One config (no tuning run); autotune only so that benchmarks/triton_compile.py records and compiles it.
@triton.autotune(configs=[triton.Config({"BLOCK_T": 32}, num_warps=4)], key=["HAS_WIN", "RESIDUE", "BLOCK_D"])
@triton.jit
def _gate_combine_kernel(
    OUT, GATES, SLC, WIN, CA, CB,
    stride_ob, stride_oh, stride_ot, stride_gb, stride_gh, stride_gt, stride_gc,
    stride_sb, stride_sh, stride_st, stride_wb, stride_wh, stride_wt,
    stride_ab, stride_ah, stride_ai, stride_ar, stride_bb, stride_bh, stride_bi, stride_br,
    H, T, DV, CMP_STRIDE, R_SPLIT,
    HAS_WIN: tl.constexpr, RESIDUE: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """out[b, h, t] = g0 * cmp + g1 * slc + g2 * win in fp32, one rounding. RESIDUE: cmp of token t = i*d + r is
    CA[b, h, i, r] (r < R_SPLIT) or CB[b, h, i, r - R_SPLIT] (5-D strided views, last dim contiguous); else CA is
    (B, H, T, Dv) with the i stride used for t."""
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    t = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    d = tl.arange(0, BLOCK_D)
    t_ok = t < T
    m = t_ok[:, None] & (d < DV)[None, :]
    t64 = t.to(tl.int64)
    g_base = GATES + b * stride_gb + h * stride_gh + t64 * stride_gt
    g0 = tl.load(g_base, mask=t_ok, other=0.0).to(tl.float32)
    g1 = tl.load(g_base + stride_gc, mask=t_ok, other=0.0).to(tl.float32)
    slc = tl.load(SLC + b * stride_sb + h * stride_sh + t64[:, None] * stride_st + d[None, :], mask=m, other=0.0)
    acc = g1[:, None] * slc.to(tl.float32)
    if HAS_WIN:
        g2 = tl.load(g_base + 2 * stride_gc, mask=t_ok, other=0.0).to(tl.float32)
        win = tl.load(WIN + b * stride_wb + h * stride_wh + t64[:, None] * stride_wt + d[None, :], mask=m, other=0.0)
        acc += g2[:, None] * win.to(tl.float32)
    if RESIDUE:
        i = (t // CMP_STRIDE).to(tl.int64)
        r = t % CMP_STRIDE
        in_a = r < R_SPLIT
        off_a = i * stride_ai + r.to(tl.int64) * stride_ar
        off_b = i * stride_bi + (r - R_SPLIT).to(tl.int64) * stride_br
        ca = tl.load(CA + b * stride_ab + h * stride_ah + off_a[:, None] + d[None, :], mask=m & in_a[:, None],
                     other=0.0)
        cb = tl.load(CB + b * stride_bb + h * stride_bh + off_b[:, None] + d[None, :], mask=m & ~in_a[:, None],
                     other=0.0)
        c = tl.where(in_a[:, None], ca.to(tl.float32), cb.to(tl.float32))
    else:
        c = tl.load(CA + b * stride_ab + h * stride_ah + t64[:, None] * stride_ai + d[None, :], mask=m,
                    other=0.0).to(tl.float32)
    acc += g0[:, None] * c
    tl.store(OUT + b * stride_ob + h * stride_oh + t64[:, None] * stride_ot + d[None, :],
             acc.to(OUT.dtype.element_ty), mask=m)


def _gate_kernel_ok(gates, o_slc, o_win, cmp) -> bool:
    tensors = [gates, o_slc, *cmp] + ([o_win] if o_win is not None else [])
    if torch.compiler.is_compiling():  # torch.compile / torch.export trace the torch path (the kernel is no op)
        return False
    return ((o_slc.is_cuda or (_INTERPRET and o_slc.dtype != torch.bfloat16)) and len(cmp) <= 2
            and o_slc.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and all(x.stride(-1) == 1 for x in tensors[1:]) and o_slc.shape[-1] <= 256)


def _gate_combine_triton(gates, o_slc, o_win, stride, ranges, cmp):
    b, hq, t, dv = o_slc.shape
    out = torch.empty(b, hq, t, dv, dtype=o_slc.dtype, device=o_slc.device)
    if out.numel() == 0:
        return out
    ca = cmp[0]
    cb = cmp[1] if len(cmp) > 1 else ca
    residue = ranges is not None
    if residue:
        sa, sb_ = ca.stride()[:4], cb.stride()[:4]
        r_split = ranges[0][1] if len(cmp) > 1 else stride
    else:
        sa = (*ca.stride()[:3], 0)
        sb_, r_split = sa, 0
    win = o_win if o_win is not None else o_slc
    _gate_combine_kernel[lambda meta: (triton.cdiv(t, meta["BLOCK_T"]), b * hq)](
        out, gates, o_slc, win, ca, cb, *out.stride()[:3], *gates.stride(), *o_slc.stride()[:3], *win.stride()[:3],
        *sa, *sb_, hq, t, dv, max(stride, 1), r_split,
        HAS_WIN=o_win is not None, RESIDUE=residue, BLOCK_D=max(16, triton.next_power_of_2(dv)),
    )
    return out


class _GateCombine(torch.autograd.Function):
    """o = g_cmp * o_cmp + g_slc * o_slc + g_win * o_win, the compressed output read in place from its residue groups
    (no assembled copy). Forward: one Triton pass (reads 3, writes 1) on CUDA / in the interpreter, else three torch
    passes. Backward (torch): the same products, grads in the inputs' layouts."""

    @staticmethod
    def forward(ctx, gates, o_slc, o_win, stride, ranges, *cmp):
        ctx.save_for_backward(gates, o_slc, o_win, *cmp)
        ctx.stride, ctx.ranges = stride, ranges
        if _gate_kernel_ok(gates, o_slc, o_win, cmp):
            return _gate_combine_triton(gates, o_slc, o_win, stride, ranges, cmp)
        g = gates.to(o_slc.dtype)
        out = torch.mul(o_slc, g[..., 1:2])
        if o_win is not None:
            out.addcmul_(o_win, g[..., 2:3])
        if ranges is None:
            out.addcmul_(cmp[0], g[..., 0:1])
        else:
            b, hq, t, dv = out.shape
            o5, g5 = out.view(b, hq, t // stride, stride, dv), g[..., 0:1].view(b, hq, t // stride, stride, 1)
            for (r0, r1), part in zip(ranges, cmp):
                o5[:, :, :, r0:r1].addcmul_(part, g5[:, :, :, r0:r1])
        return out

    @staticmethod
    def backward(ctx, do):
        gates, o_slc, o_win, *cmp = ctx.saved_tensors
        stride, ranges = ctx.stride, ctx.ranges
        g = gates.to(do.dtype)
        need = ctx.needs_input_grad
        dg = None
        if need[0]:
            dg = torch.zeros(gates.shape, dtype=do.dtype, device=do.device)
            dg[..., 1] = (do * o_slc).sum(-1)
            if o_win is not None:
                dg[..., 2] = (do * o_win).sum(-1)
        d_slc = do * g[..., 1:2] if need[1] else None
        d_win = do * g[..., 2:3] if o_win is not None and need[2] else None
        d_cmp = []
        if ranges is None:
            if dg is not None:
                dg[..., 0] = (do * cmp[0]).sum(-1)
            d_cmp.append(do * g[..., 0:1] if need[5] else None)
        else:
            b, hq, t, dv = do.shape
            do5, g5 = do.view(b, hq, t // stride, stride, dv), g[..., 0:1].view(b, hq, t // stride, stride, 1)
            dg0 = dg[..., 0].view(b, hq, t // stride, stride) if dg is not None else None
            for i, ((r0, r1), part) in enumerate(zip(ranges, cmp)):
                if dg0 is not None:
                    dg0[:, :, :, r0:r1] = (do5[:, :, :, r0:r1] * part).sum(-1)
                if need[5 + i]:
                    # same strides as the part (a permuted view of the attention output): its grad needs no copy
                    d = torch.empty_like(part)
                    torch.mul(do5[:, :, :, r0:r1], g5[:, :, :, r0:r1], out=d)
                    d_cmp.append(d)
                else:
                    d_cmp.append(None)
        return (dg.to(gates.dtype) if dg is not None else None, d_slc, d_win, None, None, *d_cmp)


def _gate_combine(gates, o_slc, o_win, cmp: _Compressed):
    if cmp.parts is not None and cmp.length % cmp.stride == 0:
        ranges = [r for r, _ in cmp.parts]
        return _GateCombine.apply(gates, o_slc, o_win, cmp.stride, ranges, *[p for _, p in cmp.parts])
    return _GateCombine.apply(gates, o_slc, o_win, 0, None, cmp.tensor().to(o_slc.dtype))


# ------------------------------------------------------------------------------------------------- nsa
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
    with _stage("compress_blocks"):
        kc, vc = compress_blocks(k, cfg, fk), compress_blocks(v, cfg, fv)
    with _stage("compressed_attention"):
        cmp, lse = _compressed_branch(q, kc, vc, cfg, causal, scale, backend)
    mask = nsa_select(q.detach(), kc.detach(), lse.detach(), cfg, causal, scale, k.shape[1])
    with _stage("selected_attention"):
        o_slc = attention(q, k, v, mask & Causal() if causal else mask, scale=scale, backend=backend)
    o_win = None
    if cfg.window > 0:
        with _stage("window_attention"):
            left, right = window_bounds(cfg, causal)
            o_win = attention(q, k, v, SlidingWindow(left, right), scale=scale, backend=backend)
    with _stage("gate_combine"):
        o = _gate_combine(gates, o_slc, o_win, cmp)
    if not return_branches:
        return o
    return o, (cmp.tensor(), o_slc, o_win if o_win is not None else torch.zeros_like(o_slc))
