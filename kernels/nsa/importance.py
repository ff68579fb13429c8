"""Triton kernel for NSA's selection scores: compressed-attention probabilities summed per query block and KV group.

``psum[b, hk, n, j] = sum over the g query heads of group hk and the queries t of block n ([n*l', (n+1)*l') clipped
to T) of p[h, t, j] = exp(scale * q_t . kc_j - lse_t)``, 0 where ``lse_t = -inf`` and, causal, where
``j*d + l - 1 > t``. Then ``importance = psum @ overlap_matrix`` (done in torch). Forward only (selection has no
gradient).

Layout: one program per (query block n, range of compressed blocks, b * Hkv + hk). The g * l' rows (head, query) of
the group are walked in tiles of BLOCK_M rows (several heads per tile when l' < BLOCK_M, padding heads masked), so
a tile's column sums are already summed over heads and queries; per tile of BLOCK_J compressed blocks the column
sums accumulate in registers and are stored once (each program owns its slice of psum: no atomics). Causal: the
compressed blocks no query of block n can see are never visited; heavy query blocks are launched first.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["block_prob_sums", "block_prob_sums_supported"]

# Read once, when the module is imported: the @triton.jit decorator makes the same decision.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_HEAD_DIM = 256
_LOG2E = 1.4426950408889634


def _configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_J": 16}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": 128, "BLOCK_J": 64}, num_warps=4, num_stages=2),
            triton.Config({"BLOCK_M": 128, "BLOCK_J": 128}, num_warps=8, num_stages=2)]


def _prune(configs, named_args, **kwargs):
    def get(name, default):
        return kwargs.get(name, named_args.get(name, default))

    if INTERPRET:
        return configs
    if get("IS_FP32", False):  # FMA dots: larger tiles make ptxas spill (sm_90 AOT check)
        return [triton.Config({"BLOCK_M": 32, "BLOCK_J": 32}, num_warps=4, num_stages=1)]
    if get("BLOCK_D", 64) > 128:  # 128 x 256 q tiles double-buffered leave no room for a 128-wide kc tile
        return [triton.Config({"BLOCK_M": 64, "BLOCK_J": 64}, num_warps=4, num_stages=2)]
    return configs


@triton.autotune(configs=_configs(), key=["BLOCK_D", "L", "CAUSAL", "IS_FP32"],
                 prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _block_prob_sums_kernel(
    Q, KC, LSE, PSUM,
    stride_qb, stride_qh, stride_qt, stride_qd,
    stride_kb, stride_kh, stride_kj, stride_kd,
    stride_lb, stride_lh, stride_lt,
    T, NC, NS, D, G, HKV, J_RANGE, qk_scale,
    CMP_LEN: tl.constexpr, CMP_STRIDE: tl.constexpr, L: tl.constexpr, BLOCK_D: tl.constexpr,
    CAUSAL: tl.constexpr, IS_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr,
):
    PREC: tl.constexpr = "ieee" if IS_FP32 else "tf32"
    n = NS - 1 - tl.program_id(0)  # heaviest (latest) query blocks first under the causal rule
    j_lo = tl.program_id(1) * J_RANGE
    pid_bh = tl.program_id(2)
    b = pid_bh // HKV
    hk = pid_bh % HKV
    j_end = tl.minimum(NC, j_lo + J_RANGE)
    t0 = n * L
    if CAUSAL:
        # last query of the block sees blocks j with j*d + l - 1 <= t_max
        t_max = tl.minimum(T, t0 + L) - 1
        j_end = tl.minimum(j_end, (tl.maximum(t_max - CMP_LEN + 1, -1) + CMP_STRIDE) // CMP_STRIDE)

    offs_d = tl.arange(0, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    offs_j = tl.arange(0, BLOCK_J)
    d_ok = offs_d < D
    q_base = Q + b.to(tl.int64) * stride_qb + (hk * G).to(tl.int64) * stride_qh
    l_base = LSE + b.to(tl.int64) * stride_lb + (hk * G).to(tl.int64) * stride_lh
    k_base = KC + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    p_base = PSUM + (pid_bh.to(tl.int64) * NS + n) * NC
    rows = G * L  # (head, query) rows of the group, head-major

    for j0 in tl.range(j_lo, j_end, BLOCK_J):
        cols = j0 + offs_j
        col_ok = cols < j_end
        kc = tl.load(k_base + cols[:, None] * stride_kj + offs_d[None, :] * stride_kd,
                     mask=col_ok[:, None] & d_ok[None, :], other=0.0)
        acc = tl.zeros([BLOCK_J], dtype=tl.float32)
        for r0 in tl.range(0, rows, BLOCK_M):
            r = r0 + offs_m
            h = r // L
            t = t0 + r % L
            row_ok = (r < rows) & (t < T)
            q = tl.load(q_base + h[:, None].to(tl.int64) * stride_qh + t[:, None].to(tl.int64) * stride_qt
                        + offs_d[None, :] * stride_qd, mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            lse = tl.load(l_base + h.to(tl.int64) * stride_lh + t * stride_lt, mask=row_ok,
                          other=float("-inf"))
            # -inf (nothing visible / padding row) -> +inf so exp2 gives 0 instead of NaN
            lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
            s = tl.dot(q, tl.trans(kc), input_precision=PREC) * qk_scale
            p = tl.exp2(s - lse2[:, None])
            ok = col_ok[None, :]
            if CAUSAL:
                ok = ok & (cols[None, :] * CMP_STRIDE + (CMP_LEN - 1) <= t[:, None])
            p = tl.where(ok, p, 0.0)
            acc += tl.sum(p, 0)
        tl.store(p_base + cols, acc, mask=col_ok)


def block_prob_sums_supported(q: torch.Tensor, sel_len: int) -> bool:
    """True when :func:`block_prob_sums` can run for q (B, Hq, T, D): CUDA (or CPU under TRITON_INTERPRET=1),
    fp16 / bf16 / fp32, D <= 256, l' a power of two >= 16."""
    if not (q.is_cuda or INTERPRET):
        return False
    if INTERPRET and q.dtype == torch.bfloat16:  # the interpreter computes bf16 wrongly
        return False
    return (q.dtype in (torch.float16, torch.bfloat16, torch.float32) and q.shape[-1] <= MAX_HEAD_DIM
            and sel_len >= 16 and sel_len & (sel_len - 1) == 0)


def block_prob_sums(q: torch.Tensor, kc: torch.Tensor, lse: torch.Tensor, *, cmp_len: int, cmp_stride: int,
                    sel_len: int, causal: bool, scale: float, heads_kv: int, j_range: int = 2048) -> torch.Tensor:
    """Compressed-attention probabilities summed per (KV group, query block).

    Args:
        q: (B, Hq, T, D) fp16 / bf16 / fp32; kc: (B, Hkv, Nc, D) (cast to q's dtype); lse: (B, Hq, T) fp32 from the
            compressed branch (-inf where nothing is visible). Hq = g * heads_kv; group hk = heads [hk*g, (hk+1)*g).
        cmp_len / cmp_stride: l / d of the compression blocks ``[j*d, j*d + l)``; sel_len: l' (power of two >= 16).
        causal: keep only ``j*d + l - 1 <= t``. j_range: compressed blocks per program (work split along Nc).

    Returns psum (B, Hkv, Ns, Nc) fp32 with Ns = ceil(T / l').
    """
    if not block_prob_sums_supported(q, sel_len):
        raise ValueError("block_prob_sums needs q on CUDA (or TRITON_INTERPRET=1), fp16/bf16/fp32, head dim <= 256 "
                         f"and sel_len a power of two >= 16; got {q.device}, {q.dtype}, D={q.shape[-1]}, "
                         f"sel_len={sel_len}")
    b, hq, t, d = q.shape
    nc = kc.shape[2]
    if hq % heads_kv or kc.shape != (b, heads_kv, nc, d) or lse.shape != (b, hq, t):
        raise ValueError(f"expected kc (B, Hkv={heads_kv}, Nc, D={d}) and lse (B, Hq, T) = {(b, hq, t)} for q "
                         f"{tuple(q.shape)}; got {tuple(kc.shape)}, {tuple(lse.shape)}")
    if j_range < 1:
        raise ValueError(f"j_range must be >= 1, got {j_range}")
    ns = triton.cdiv(t, sel_len)
    psum = torch.zeros(b, heads_kv, ns, nc, device=q.device, dtype=torch.float32)
    if nc == 0 or t == 0 or b == 0:
        return psum
    kc = kc.to(q.dtype)
    lse = lse.float()
    grid = (ns, triton.cdiv(nc, j_range), b * heads_kv)
    _block_prob_sums_kernel[grid](
        q, kc, lse, psum, *q.stride(), *kc.stride(), *lse.stride(),
        t, nc, ns, d, hq // heads_kv, heads_kv, j_range, scale * _LOG2E,
        CMP_LEN=cmp_len, CMP_STRIDE=cmp_stride, L=sel_len, BLOCK_D=max(16, triton.next_power_of_2(d)),
        CAUSAL=bool(causal), IS_FP32=q.dtype == torch.float32,
    )
    return psum
