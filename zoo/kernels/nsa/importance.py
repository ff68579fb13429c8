"""Triton kernel for NSA's selection scores: importance of every selection block for every query block.

``imp[b, hk, n, s] = sum over the g query heads of group hk, the queries t of block n ([n*l', (n+1)*l') clipped to T)
and the compression blocks j overlapping selection block s ([s*l', (s+1)*l')) of p[h, t, j] = exp(scale * q_t . kc_j
- lse_t)``, p = 0 where ``lse_t = -inf`` and, causal, where ``j*d + l - 1 > t``. Equal to the per-block probability
sums ``psum`` (B, Hkv, Ns, Nc) times the 0/1 overlap matrix (Nc, Ns), without materialising either. Forward only.

Layout: one program per (query block n, range of compressed blocks, b * Hkv + hk). The compressed blocks are walked
in tiles of BLOCK_J (outer loop; the kc tile stays in registers / shared memory); per tile the g * l' rows (head,
query) of the group stream through in tiles of BLOCK_M (inner, software-pipelined loop). Scores are computed
transposed, ``kc @ q^T`` (BLOCK_J, BLOCK_M), so the per-column sums over the rows are row reductions of the MMA
accumulator (in-thread adds and a quad shuffle; no shared-memory round trip per step).

Overlap folded in: BLOCK_J is chosen so that R = BLOCK_J * d / l' is an integer; tile t (columns [t*BLOCK_J,
(t+1)*BLOCK_J)) "owns" selection blocks [t*R, (t+1)*R), and its columns overlap only blocks owned by t or t + 1
(checked on the host: l <= (BLOCK_J + 1) * d). Per tile the column sums are folded with two (BLOCK_J, R) masks
(column j overlaps blocks [j*d // l', (j*d + l - 1) // l']) to ``own`` (blocks of t) and ``next`` (blocks of t + 1);
``own + carry`` is added to imp and ``next`` becomes the carry. The fold runs once per BLOCK_J columns and all g * l'
rows, so it costs a few percent of the tile's exponentials.
Every imp element therefore receives one add per program, and at most two programs touch it (the boundary blocks of
two adjacent column ranges), so the fp32 atomics onto zeros give the same bits in any order: deterministic.
Causal: compressed blocks no query of block n can see are never visited, tiles every query sees skip the
elementwise mask, and heavy query blocks are launched first.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["block_importance", "block_importance_supported", "importance_tile"]

# Read once, when the module is imported: the @triton.jit decorator makes the same decision.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_HEAD_DIM = 256
MAX_OWNED = 64  # selection blocks owned per column tile (the fold is a (BLOCK_J, R) reduction per tile)
_LOG2E = 1.4426950408889634


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1)]
    # BLOCK_J = 128 comes from the host (importance_tile). kc @ q^T: BLOCK_J is the wgmma M side, BLOCK_M its N side;
    # both keep the (BLOCK_J, BLOCK_M) fp32 score tile at 64 registers per thread.
    return [triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=3),
            triton.Config({"BLOCK_M": 128}, num_warps=8, num_stages=2)]


def _prune(configs, named_args, **kwargs):
    def get(name, default):
        return kwargs.get(name, named_args.get(name, default))

    if INTERPRET:
        return configs
    if get("IS_FP32", False):  # IEEE fp32 dots are FMA loops: small tiles (ptxas spills and slow compiles otherwise)
        return [triton.Config({"BLOCK_M": 32}, num_warps=4, num_stages=1)]
    if get("BLOCK_D", 64) > 128:  # 256-wide rows: keep the q stages and the kc tile within shared memory
        return [triton.Config({"BLOCK_M": 64}, num_warps=4, num_stages=2)]
    return configs


@triton.jit
def _load_kc(k_base, stride_kj, stride_kd, j0, j_hi, offs_j, offs_d, d_ok):
    cols = j0 + offs_j
    return tl.load(k_base + cols[:, None].to(tl.int64) * stride_kj + offs_d[None, :] * stride_kd,
                   mask=(cols < j_hi)[:, None] & d_ok[None, :], other=0.0)


@triton.jit
def _tile_colsum(kc, q_base, l_base, stride_qh, stride_qt, stride_qd, stride_lh, stride_lt,
                 j0, j_hi, t0, T, ROWS, qk_scale, offs_m, offs_j, offs_d, d_ok,
                 CMP_LEN: tl.constexpr, CMP_STRIDE: tl.constexpr, L: tl.constexpr, MASKED: tl.constexpr,
                 PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr):
    """(BLOCK_J,) sums over the group's rows of p for columns [j0, j0 + BLOCK_J) (0 for columns >= j_hi); kc is
    that column tile (BLOCK_J, BLOCK_D)."""
    cols = j0 + offs_j
    col_ok = cols < j_hi
    colsum = tl.zeros([BLOCK_J], dtype=tl.float32)
    for r0 in tl.range(0, ROWS, BLOCK_M):
        r = r0 + offs_m
        h = r // L
        t = t0 + r % L
        row_ok = (r < ROWS) & (t < T)
        q = tl.load(q_base + h[:, None].to(tl.int64) * stride_qh + t[:, None].to(tl.int64) * stride_qt
                    + offs_d[None, :] * stride_qd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        lse = tl.load(l_base + h.to(tl.int64) * stride_lh + t * stride_lt, mask=row_ok, other=float("-inf"))
        # -inf (nothing visible / padding row) -> +inf so that exp2 gives 0 instead of NaN
        lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
        s = tl.dot(kc, tl.trans(q), input_precision=PREC) * qk_scale  # (BLOCK_J, BLOCK_M)
        p = tl.exp2(s - lse2[None, :])
        if MASKED:
            p = tl.where(cols[:, None] * CMP_STRIDE + (CMP_LEN - 1) <= t[None, :], p, 0.0)
        colsum += tl.sum(p, 1)
    return tl.where(col_ok, colsum, 0.0)


@triton.jit
def _fold_store(imp_row, colsum, carry, j0, NS, offs_j, offs_r,
                CMP_LEN: tl.constexpr, CMP_STRIDE: tl.constexpr, L: tl.constexpr, R: tl.constexpr,
                BLOCK_J: tl.constexpr):
    """Adds own + carry to the R blocks owned by tile j0 // BLOCK_J; returns the new carry (its columns' share of
    the blocks owned by the next tile). Column j overlaps blocks [j*d // l', (j*d + l - 1) // l']."""
    cols = j0 + offs_j
    first = (cols * CMP_STRIDE // L)[:, None]
    last = ((cols * CMP_STRIDE + CMP_LEN - 1) // L)[:, None]
    s_own = (j0 // BLOCK_J) * R + offs_r  # absolute ids: the (BLOCK_J, R_P) masks depend on the tile, so they are
    s_nxt = s_own + R  # recomputed per tile instead of being hoisted into registers for the whole kernel
    cs = colsum[:, None]
    own = tl.sum(tl.where((s_own[None, :] >= first) & (s_own[None, :] <= last), cs, 0.0), 0)
    nxt = tl.sum(tl.where((s_nxt[None, :] >= first) & (s_nxt[None, :] <= last), cs, 0.0), 0)
    tl.atomic_add(imp_row + s_own, own + carry, mask=(offs_r < R) & (s_own < NS), sem="relaxed")
    return nxt


@triton.autotune(configs=_configs(), key=["BLOCK_D", "L", "CAUSAL", "IS_FP32", "BLOCK_J", "R"],
                 prune_configs_by={"early_config_prune": _prune}, reset_to_zero=["IMP"])
@triton.jit
def _block_prob_sums_kernel(
    Q, KC, LSE, IMP,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kj, stride_kd,
    stride_lb, stride_lh, stride_lt,
    T, NC, NS, G, HKV, J_RANGE, qk_scale,
    D: tl.constexpr, CMP_LEN: tl.constexpr, CMP_STRIDE: tl.constexpr, L: tl.constexpr, BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr, IS_FP32: tl.constexpr, BLOCK_J: tl.constexpr, R: tl.constexpr, R_P: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    PREC: tl.constexpr = "ieee" if IS_FP32 else "tf32"
    n = NS - 1 - tl.program_id(0)  # heaviest (latest) query blocks first under the causal rule
    j_lo = tl.program_id(1) * J_RANGE  # a multiple of BLOCK_J
    pid_bh = tl.program_id(2)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    j_hi = tl.minimum(NC, j_lo + J_RANGE)
    t0 = n * L
    if CAUSAL:
        # blocks j with j*d + l - 1 <= t: visible to the block's last query / to all of its queries
        t_last = tl.minimum(T, t0 + L) - 1
        j_hi = tl.minimum(j_hi, tl.maximum(t_last - CMP_LEN + 1 + CMP_STRIDE, 0) // CMP_STRIDE)
        j_full = tl.maximum(t0 - CMP_LEN + 1 + CMP_STRIDE, 0) // CMP_STRIDE
        j_mid = j_lo + tl.maximum(tl.minimum(j_full, j_hi) - j_lo, 0) // BLOCK_J * BLOCK_J
    else:
        j_mid = j_hi  # the column bound is applied to the column sums; no elementwise mask

    offs_d = tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_J)
    offs_r = tl.arange(0, R_P)
    d_ok = offs_d < D
    q_base = Q + b.to(tl.int64) * stride_qb + (hk * G).to(tl.int64) * stride_qh
    l_base = LSE + b.to(tl.int64) * stride_lb + (hk * G).to(tl.int64) * stride_lh
    k_base = KC + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    imp_row = IMP + (pid_bh.to(tl.int64) * NS + n) * NS
    rows = G * L  # (head, query) rows of the group, head-major

    carry = tl.zeros([R_P], dtype=tl.float32)
    # The next column tile is loaded while the current one's sums are folded (the inner loop's registers are free).
    kc = _load_kc(k_base, stride_kj, stride_kd, j_lo, j_hi, offs_j, offs_d, d_ok)
    for j0 in tl.range(j_lo, j_mid, BLOCK_J):
        colsum = _tile_colsum(kc, q_base, l_base, stride_qh, stride_qt, stride_qd, stride_lh, stride_lt,
                              j0, j_hi, t0, T, rows, qk_scale, offs_m, offs_j, offs_d, d_ok,
                              CMP_LEN, CMP_STRIDE, L, False, PREC, BLOCK_M, BLOCK_J)
        kc = _load_kc(k_base, stride_kj, stride_kd, j0 + BLOCK_J, j_hi, offs_j, offs_d, d_ok)
        carry = _fold_store(imp_row, colsum, carry, j0, NS, offs_j, offs_r, CMP_LEN, CMP_STRIDE, L, R, BLOCK_J)
    for j0 in tl.range(j_mid, j_hi, BLOCK_J):
        colsum = _tile_colsum(kc, q_base, l_base, stride_qh, stride_qt, stride_qd, stride_lh, stride_lt,
                              j0, j_hi, t0, T, rows, qk_scale, offs_m, offs_j, offs_d, d_ok,
                              CMP_LEN, CMP_STRIDE, L, CAUSAL, PREC, BLOCK_M, BLOCK_J)
        kc = _load_kc(k_base, stride_kj, stride_kd, j0 + BLOCK_J, j_hi, offs_j, offs_d, d_ok)
        carry = _fold_store(imp_row, colsum, carry, j0, NS, offs_j, offs_r, CMP_LEN, CMP_STRIDE, L, R, BLOCK_J)
    if j_lo < j_hi:  # the last tile's share of the blocks owned by the next tile
        s = (j_hi + BLOCK_J - 1) // BLOCK_J * R + offs_r
        tl.atomic_add(imp_row + s, carry, mask=(offs_r < R) & (s < NS), sem="relaxed")


def importance_tile(cmp_len: int, cmp_stride: int, sel_len: int, dtype: torch.dtype = torch.bfloat16,
                    head_dim: int = 128) -> int | None:
    """BLOCK_J (compressed blocks per tile) for a configuration, or None when no tile size fits: BLOCK_J * d must be
    a multiple of l' (R = BLOCK_J * d / l' owned selection blocks, at most MAX_OWNED) and l <= (BLOCK_J + 1) * d (a
    tile's columns reach only its own and the next tile's blocks). Preferred: 128 (kc tiles reused over more rows),
    64 for head dims > 128 (the prefetched tile lives in registers), small tiles for fp32 and the interpreter."""
    if INTERPRET:
        candidates = (16, 32, 64, 128)
    elif dtype == torch.float32:
        candidates = (32, 64, 128)
    elif head_dim > 128:
        candidates = (64, 128)
    else:
        candidates = (128, 64)
    for bj in candidates:
        r = bj * cmp_stride // sel_len
        if bj * cmp_stride % sel_len == 0 and r <= MAX_OWNED and cmp_len <= (bj + 1) * cmp_stride:
            return bj
    return None


def block_importance_supported(q: torch.Tensor, cmp_len: int, cmp_stride: int, sel_len: int) -> bool:
    """True when :func:`block_importance` can run for q (B, Hq, T, D): CUDA (or CPU under TRITON_INTERPRET=1),
    fp16 / bf16 / fp32, D <= 256, l' a power of two >= 16 and a column tile exists (:func:`importance_tile`)."""
    if not (q.is_cuda or INTERPRET):
        return False
    if INTERPRET and q.dtype == torch.bfloat16:  # the interpreter computes bf16 wrongly
        return False
    return (q.dtype in (torch.float16, torch.bfloat16, torch.float32) and q.shape[-1] <= MAX_HEAD_DIM
            and sel_len >= 16 and sel_len & (sel_len - 1) == 0
            and importance_tile(cmp_len, cmp_stride, sel_len, q.dtype, q.shape[-1]) is not None)


def block_importance(q: torch.Tensor, kc: torch.Tensor, lse: torch.Tensor, *, cmp_len: int, cmp_stride: int,
                     sel_len: int, causal: bool, scale: float, heads_kv: int, j_range: int = 2048) -> torch.Tensor:
    """Importance of every selection block for every (KV group, query block), from the compressed attention.

    Args:
        q: (B, Hq, T, D) fp16 / bf16 / fp32, any strides; kc: (B, Hkv, Nc, D) (cast to q's dtype); lse: (B, Hq, T)
            fp32 from the compressed branch (-inf where nothing is visible). Hq = g * heads_kv; group hk = heads
            [hk*g, (hk+1)*g).
        cmp_len / cmp_stride: l / d of the compression blocks ``[j*d, j*d + l)``; sel_len: l' (power of two >= 16).
        causal: keep only ``j*d + l - 1 <= t``. j_range: compressed blocks per program (work split along Nc; rounded
            up to a multiple of the column tile).

    Returns imp (B, Hkv, Ns, Ns) fp32 with Ns = ceil(T / l'): ``block_prob_sums_torch(...) @ overlap_matrix(...)``.
    """
    if not block_importance_supported(q, cmp_len, cmp_stride, sel_len):
        raise ValueError("block_importance needs q on CUDA (or TRITON_INTERPRET=1), fp16/bf16/fp32, head dim <= 256, "
                         f"sel_len a power of two >= 16 and a column tile for (l={cmp_len}, d={cmp_stride}, "
                         f"l'={sel_len}); got {q.device}, {q.dtype}, D={q.shape[-1]}")
    b, hq, t, d = q.shape
    nc = kc.shape[2]
    if hq % heads_kv or kc.shape != (b, heads_kv, nc, d) or lse.shape != (b, hq, t):
        raise ValueError(f"expected kc (B, Hkv={heads_kv}, Nc, D={d}) and lse (B, Hq, T) = {(b, hq, t)} for q "
                         f"{tuple(q.shape)}; got {tuple(kc.shape)}, {tuple(lse.shape)}")
    if j_range < 1:
        raise ValueError(f"j_range must be >= 1, got {j_range}")
    ns = triton.cdiv(t, sel_len)
    imp = torch.zeros(b, heads_kv, ns, ns, device=q.device, dtype=torch.float32)
    if nc == 0 or t == 0 or b == 0:
        return imp
    bj = importance_tile(cmp_len, cmp_stride, sel_len, q.dtype, d)
    r = bj * cmp_stride // sel_len
    j_range = triton.cdiv(j_range, bj) * bj
    kc = kc.to(q.dtype)
    lse = lse.float()
    grid = (ns, triton.cdiv(nc, j_range), b * heads_kv)
    _block_prob_sums_kernel[grid](
        q, kc, lse, imp, *q.stride(), *kc.stride(), *lse.stride(),
        t, nc, ns, hq // heads_kv, heads_kv, j_range, scale * _LOG2E,
        D=d, CMP_LEN=cmp_len, CMP_STRIDE=cmp_stride, L=sel_len, BLOCK_D=max(16, triton.next_power_of_2(d)),
        CAUSAL=bool(causal), IS_FP32=q.dtype == torch.float32, BLOCK_J=bj, R=r, R_P=triton.next_power_of_2(r),
    )
    return imp
