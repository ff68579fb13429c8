"""Shared pieces of the Triton attention kernels: argument checks, mask bounds, tile masks.

Positions are per sequence. With ``off = Lk - Lq`` (bottom-right alignment), key ``j`` is visible to query ``i`` iff
``j < kv_len`` (``kv_len = min(Lk, seqlens_k[b])``), and ``j <= i + off`` (causal), ``j >= i + off - window_left``
(window_left >= 0), ``j <= i + off + window_right`` (window_right >= 0), and, with block-sparse lists, key block
``j // block_size`` is listed for query block ``i // block_size``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Read once, when the kernel modules are imported: the @triton.jit decorator makes the same decision.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 256

# Head packing for block-sparse lists shared by a KV group (Hb = Hkv, GROUP > 1): one forward / dq program takes
# PACK query heads of the group x BLOCK_M / PACK positions of one query block, so every K/V tile of the shared list
# serves PACK heads and the MMA tiles are PACK times taller (block 64: 128-row tiles). Read by the launchers at each
# call. On by default since H200 batch 14: NSA T65536 selected branch 13.2 -> 10.9 ms, forward 36.4 -> 33.6 ms.
PACK_GQA_HEADS = True
PACK_TILE_ROWS = 128  # PACK = largest power of two dividing GROUP, at most PACK_TILE_ROWS // block_size (and 8)


@dataclass
class MaskArgs:
    """Normalised mask arguments shared by the forward and backward launchers."""

    causal: bool
    window_left: int
    window_right: int
    seqlens_k: torch.Tensor | None
    cu_seqlens_q: torch.Tensor | None
    cu_seqlens_k: torch.Tensor | None
    max_seqlen_q: int
    max_seqlen_k: int
    block_indices: torch.Tensor | None
    block_counts: torch.Tensor | None
    block_size: int

    @property
    def varlen(self) -> bool:
        return self.cu_seqlens_q is not None

    @property
    def sparse(self) -> bool:
        return self.block_indices is not None


def _check_int_tensor(t, name: str, shape: tuple, device) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of int32, got {type(t).__name__}")
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name} must be an int32 tensor, got {t.dtype}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device}, got {t.device}")
    return t.to(torch.int32).contiguous()


def check_inputs(q, k, v, *, scale, causal, window_left, window_right, seqlens_k, cu_seqlens_q, cu_seqlens_k,
                 max_seqlen_q, max_seqlen_k, block_indices, block_counts, block_size) -> MaskArgs:
    """Validate q (B, Hq, Nq, D), k (B, Hkv, Nk, D), v (B, Hkv, Nk, Dv) and the mask arguments; raise ValueError."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, N, D), got shape {tuple(t.shape)}")
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if k.device != q.device or v.device != q.device:
        raise ValueError(f"q, k, v must be on one device, got q {q.device}, k {k.device}, v {v.device}")
    B, Hq, Nq, D = q.shape
    Bk, Hkv, Nk, Dk = k.shape
    Bv, Hv, Nv, Dv = v.shape
    if Bk != B or Bv != B:
        raise ValueError(f"k and v batch must equal q batch {B}, got k {Bk}, v {Bv}")
    if Hv != Hkv or Nv != Nk:
        raise ValueError(f"v must have the heads and length of k ({Hkv}, {Nk}), got ({Hv}, {Nv})")
    if Dk != D:
        raise ValueError(f"k head dim must equal q head dim {D}, got {Dk}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(f"q heads ({Hq}) must be a multiple of k/v heads ({Hkv})")
    for name, d in (("q/k head dim", D), ("v head dim", Dv)):
        if not 1 <= d <= MAX_HEAD_DIM:
            raise ValueError(f"{name} must be in [1, {MAX_HEAD_DIM}], got {d}")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise ValueError(f"scale must be a float, got {type(scale).__name__}")
    for name, w in (("window_left", window_left), ("window_right", window_right)):
        if not isinstance(w, int) or isinstance(w, bool) or w < -1:
            raise ValueError(f"{name} must be an int >= -1 (-1 = unbounded), got {w!r}")
    dev = q.device
    if seqlens_k is not None:
        seqlens_k = _check_int_tensor(seqlens_k, "seqlens_k", (B,) if cu_seqlens_q is None else seqlens_k.shape, dev)
    if (cu_seqlens_q is None) != (cu_seqlens_k is None):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must be given together")
    if cu_seqlens_q is not None:
        if B != 1:
            raise ValueError(f"with cu_seqlens_q/cu_seqlens_k, q/k/v must be packed with batch 1, got batch {B}")
        if cu_seqlens_q.dim() != 1 or cu_seqlens_q.numel() < 2:
            raise ValueError(f"cu_seqlens_q must be 1-D of length S+1 >= 2, got shape {tuple(cu_seqlens_q.shape)}")
        S = cu_seqlens_q.numel() - 1
        cu_seqlens_q = _check_int_tensor(cu_seqlens_q, "cu_seqlens_q", (S + 1,), dev)
        cu_seqlens_k = _check_int_tensor(cu_seqlens_k, "cu_seqlens_k", (S + 1,), dev)
        if seqlens_k is not None and tuple(seqlens_k.shape) != (S,):
            raise ValueError(f"seqlens_k must have shape ({S},) with varlen, got {tuple(seqlens_k.shape)}")
        if not isinstance(max_seqlen_q, int) or max_seqlen_q <= 0:
            max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item())
        if not isinstance(max_seqlen_k, int) or max_seqlen_k <= 0:
            max_seqlen_k = int((cu_seqlens_k[1:] - cu_seqlens_k[:-1]).max().item())
    else:
        max_seqlen_q, max_seqlen_k = Nq, Nk
    if (block_indices is None) != (block_counts is None):
        raise ValueError("block_indices and block_counts must be given together")
    if block_indices is not None:
        if cu_seqlens_q is not None:
            raise NotImplementedError("block-sparse attention (block_indices) cannot be combined with packed varlen "
                                      "(cu_seqlens_q/cu_seqlens_k) in the Triton kernels")
        if not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
            raise ValueError(f"block_size must be a power of two >= 16, got {block_size!r}")
        if not isinstance(block_indices, torch.Tensor) or block_indices.dim() != 4:
            raise ValueError("block_indices must be an int32 tensor (B, Hb, ceil(Nq/block_size), max_blocks)")
        Hb = block_indices.shape[1]
        if Hb not in (Hq, Hkv):
            raise ValueError(f"block_indices heads must be Hq ({Hq}) or Hkv ({Hkv}), got {Hb}")
        nqb = triton.cdiv(Nq, block_size)
        block_indices = _check_int_tensor(block_indices, "block_indices", (B, Hb, nqb, block_indices.shape[3]), dev)
        block_counts = _check_int_tensor(block_counts, "block_counts", (B, Hb, nqb), dev)
    return MaskArgs(bool(causal), int(window_left), int(window_right), seqlens_k, cu_seqlens_q, cu_seqlens_k,
                    int(max_seqlen_q), int(max_seqlen_k), block_indices, block_counts, int(block_size))


def head_block(d: int) -> int:
    """Power-of-two tile width >= 16 covering a head dim."""
    return max(16, triton.next_power_of_2(d))


def pack_heads(ma: MaskArgs, hq: int, hkv: int) -> int:
    """PACK for the forward / dq kernels: query heads of one KV group per program (1 = one head, the default)."""
    if not PACK_GQA_HEADS or not ma.sparse or ma.block_indices.shape[1] != hkv or hq == hkv:
        return 1
    group = hq // hkv
    return max(1, min(group & -group, PACK_TILE_ROWS // ma.block_size, 8))


def last_dim_contiguous(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def prune_configs(configs, named_args, kwargs, fast, d256, small):
    """Autotune candidates for one launch: tiles within the sparse block size, small tiles for head dim 256, small
    sparse blocks and fp32; small tiles added to the fast ones for bands narrower than 64 keys. With head packing
    (PACK > 1) a tile holds PACK heads x BLOCK_M / PACK rows of one query block: only the tallest such tiles are kept
    (block 64, PACK 2: BLOCK_M 128).
    ZOO_ATTN_TRITON_SINGLE_CONFIG=1 keeps only the first candidate (quick GPU tests)."""
    def get(name, default):
        return kwargs.get(name, named_args.get(name, default))

    bs = get("BLOCK_SIZE", 0)
    pack = get("PACK", 1)
    d = max(get("BLOCK_D", 64), get("BLOCK_DV", 64))
    if INTERPRET:
        allowed = None
    elif get("IS_FP32", False):
        # IEEE fp32 dots are built from FMAs: 5-26 s of sm_90 compile per config at the fast tiles
        # (benchmarks/triton_compile.py); small tiles only, which also fit fp32's doubled register/shared needs.
        allowed = small
    elif bs and bs < 64:
        allowed = small
    elif d >= 256:
        allowed = d256
    else:
        allowed = fast
        right = get("wr", -1) if get("HAS_WR", False) else (0 if get("CAUSAL", False) else None)
        if get("HAS_WL", False) and right is not None and get("wl", -1) + right < 63:
            # Narrow bands (the transducer's left 10 / right 2): most of a 64-128 wide tile is masked, so let
            # autotuning also try the small tiles.
            allowed = fast + small
    out = []
    for c in configs:
        shape = (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages)
        if allowed is not None and shape not in allowed:
            continue
        if bs and (shape[0] > bs * pack or shape[1] > bs):
            continue
        out.append(c)
    if pack > 1 and out:
        tallest = max(c.kwargs["BLOCK_M"] for c in out)
        out = [c for c in out if c.kwargs["BLOCK_M"] == tallest]
    if not out:
        out = [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16}, num_warps=4, num_stages=1)]
    if os.environ.get("ZOO_ATTN_TRITON_SINGLE_CONFIG") == "1":
        out = out[:1]
    return out


def transpose_block_lists(block_indices: torch.Tensor, block_counts: torch.Tensor, n_kblocks: int):
    """Per (b, hb, key block): the query blocks whose lists name it.

    Returns indices int32 (B, Hb, nKB, nQB) (valid entries first, ascending) and counts int32 (B, Hb, nKB)."""
    B, Hb, nqb, maxb = block_indices.shape
    idx = block_indices.long()
    valid = torch.arange(maxb, device=idx.device) < block_counts.long()[..., None]
    valid &= (idx >= 0) & (idx < n_kblocks)
    idx = torch.where(valid, idx, n_kblocks)
    dense = torch.zeros(B, Hb, nqb, n_kblocks + 1, dtype=torch.bool, device=idx.device)
    dense.scatter_(3, idx, True)
    dense = dense[..., :n_kblocks].transpose(2, 3)  # (B, Hb, nKB, nQB)
    counts = dense.sum(-1, dtype=torch.int32)
    order = torch.sort((~dense).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return order.contiguous(), counts.contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Device helpers
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def program_heads(pid_bh, H, PACK: tl.constexpr):
    """(sequence, first query head) of a query-tile program: one head per program, or (PACK > 1, head packing) PACK
    consecutive heads of one KV group (PACK divides the group)."""
    if PACK == 1:
        return pid_bh // H, pid_bh % H
    else:
        return pid_bh // (H // PACK), (pid_bh % (H // PACK)) * PACK


@triton.jit
def seq_info(pid_b, cu_q_ptr, cu_k_ptr, seqlens_k_ptr, NQ, NK, VARLEN: tl.constexpr, HAS_SEQLENS_K: tl.constexpr):
    """(q_start, Lq, k_start, Lk, kv_len) of sequence pid_b."""
    if VARLEN:
        q_start = tl.load(cu_q_ptr + pid_b)
        Lq = tl.load(cu_q_ptr + pid_b + 1) - q_start
        k_start = tl.load(cu_k_ptr + pid_b)
        Lk = tl.load(cu_k_ptr + pid_b + 1) - k_start
    else:
        q_start = pid_b * 0
        Lq = NQ + pid_b * 0
        k_start = pid_b * 0
        Lk = NK + pid_b * 0
    kv_len = Lk
    if HAS_SEQLENS_K:
        kv_len = tl.minimum(kv_len, tl.maximum(tl.load(seqlens_k_ptr + pid_b), 0))
    return q_start, Lq, k_start, Lk, kv_len


@triton.jit
def key_bounds(m0, BLOCK_M: tl.constexpr, Lq, kv_len, off, wl, wr,
               CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Keys visible to some query of rows [m0, m0+BLOCK_M) ∩ [0, Lq): [lo, hi); visible to all of them: [flo, fhi)."""
    m_last = tl.minimum(m0 + BLOCK_M, Lq) - 1
    lo = m0 * 0
    hi = kv_len
    flo = m0 * 0
    fhi = kv_len
    if CAUSAL:
        hi = tl.minimum(hi, m_last + off + 1)
        fhi = tl.minimum(fhi, m0 + off + 1)
    if HAS_WR:
        hi = tl.minimum(hi, m_last + off + wr + 1)
        fhi = tl.minimum(fhi, m0 + off + wr + 1)
    if HAS_WL:
        lo = tl.maximum(lo, m0 + off - wl)
        flo = tl.maximum(flo, m_last + off - wl)
    return lo, hi, flo, fhi


@triton.jit
def query_bounds(n0, BLOCK_N: tl.constexpr, Lq, kv_len, off, wl, wr,
                 CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Queries that see some key of [n0, n0+BLOCK_N) ∩ [0, kv_len): [lo, hi); that see all of them: [flo, fhi)."""
    n_last = tl.minimum(n0 + BLOCK_N, kv_len) - 1
    lo = n0 * 0
    hi = Lq
    flo = n0 * 0
    fhi = Lq
    if n0 + BLOCK_N > kv_len:
        fhi = n0 * 0
    if n0 >= kv_len:
        hi = n0 * 0
    if CAUSAL:
        lo = tl.maximum(lo, n0 - off)
        flo = tl.maximum(flo, n0 + BLOCK_N - 1 - off)
    if HAS_WR:
        lo = tl.maximum(lo, n0 - off - wr)
        flo = tl.maximum(flo, n0 + BLOCK_N - 1 - off - wr)
    if HAS_WL:
        hi = tl.minimum(hi, n_last - off + wl + 1)
        fhi = tl.minimum(fhi, n0 - off + wl + 1)
    return lo, hi, flo, fhi


@triton.jit
def split_range(start, end, lo, hi, flo, fhi, BLOCK: tl.constexpr):
    """Tiles of BLOCK covering [start, end) ∩ [lo, hi) (start BLOCK-aligned), split into [a, b) masked,
    [b, c) fully visible (no elementwise mask) and [c, e) masked."""
    a = tl.maximum(start, lo) // BLOCK * BLOCK
    e_pos = tl.minimum(end, hi)
    e = (e_pos + BLOCK - 1) // BLOCK * BLOCK
    e = tl.maximum(e, a)
    b = (flo + BLOCK - 1) // BLOCK * BLOCK
    b = tl.minimum(tl.maximum(b, a), e)
    c = tl.maximum(fhi, 0) // BLOCK * BLOCK
    c = tl.minimum(c, (tl.maximum(end, 0)) // BLOCK * BLOCK)
    c = tl.minimum(tl.maximum(c, b), e)
    return a, b, c, e


@triton.jit
def _visible_grid(r, c, Lq, kv_len, off, wl, wr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Visibility of key positions ``c`` to query positions ``r`` (broadcastable tiles of per-sequence positions)."""
    ok = (r < Lq) & (c < kv_len) & (c >= 0)
    if CAUSAL:
        ok = ok & (c <= r + off)
    if HAS_WR:
        ok = ok & (c <= r + off + wr)
    if HAS_WL:
        ok = ok & (c >= r + off - wl)
    return ok


@triton.jit
def visible(rows, cols, Lq, kv_len, off, wl, wr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Boolean tile: key cols[None, :] visible to query rows[:, None] (rows and cols are per-sequence positions)."""
    return _visible_grid(rows[:, None], cols[None, :], Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR)


@triton.jit
def visible_t(cols, rows, Lq, kv_len, off, wl, wr, CAUSAL: tl.constexpr, HAS_WL: tl.constexpr, HAS_WR: tl.constexpr):
    """Transposed ``visible``: tile (keys, queries)."""
    return _visible_grid(rows[None, :], cols[:, None], Lq, kv_len, off, wl, wr, CAUSAL, HAS_WL, HAS_WR)
