"""Chunkwise-parallel GLA in Triton: forward and backward (gradients to q, k, v, g and the initial state).

Per chunk n of BT steps (b = within-chunk cumulative log gate, S_n the state entering chunk n):

    o_t     = scale * [(q_t * exp(b_t)) S_n + sum_{s<=t in chunk} (q_t . (k_s * exp(b_t - b_s))) v_s]
    S_{n+1} = exp(b_last) * S_n + sum_s (k_s * exp(b_last - b_s))^T v_s

The kernels keep b in log2 units (b = log2(e) * cumsum(g)): every gate factor is one ``exp2``. Grids in brackets; only
the two state passes are sequential, everything else runs over all chunks at once.

  _cumsum_kernel [NC, B*H]: b (fp32 (B*H, NC*BT, K), gates past T read as 0), per chunk and column the pivot
      r = (max_t b + min_t b) / 2, and per chunk a flag "fast": max |b - r| <= FAST_LIMIT (48, log2 units).
  _state_fwd_kernel [K-blk, V-blk, B*H]: S_n for every chunk, stored in the matmul dtype (bf16 / fp16; fp32 for fp32
      inputs: every consumer casts to that dtype before its dot anyway) and the final state (fp32).
      _state_bwd_kernel: the reverse pass, dS_{n+1} (gradient of the state leaving chunk n, seeded with dht; matmul
      dtype) and the initial-state gradient (fp32).
  Two levels when that grid is small (few batch*heads, long T; _num_segments picks P segments of L = NC / P
      chunks, P = 1 otherwise): grid [P x K-blk, V-blk, B*H], PHASE 1 walks each segment from a zero state storing
      nothing and writes its end state e_p and log2 decay d_p = sum of its chunks' b_last (fp32 scratch); PHASE 2
      starts each segment from h0 carried through the earlier summaries (S = 2^d_q S + e_q, fp32) and walks it as the
      single-level pass does, storing every S_n (the last segment: the final state). The backward pass does the same
      in reverse (dht carried back through the later segments; the first segment stores dh0). The sequential depth
      drops from NC chunk steps to about 2 NC / P + P; stored states are rounded once, as before.

Fast chunks (all of them unless some gate channel decays by more than 2^-96, ~66 nats of log gate, within one chunk):
the intra-chunk scores are one (BT, BT) matmul A = scale (q 2^(b-r)) (k 2^(r-b))^T, causal-masked afterwards. Both
factors lie within 2^+-48, so every causal product is finite and normal in fp32 (entries above the diagonal may
overflow; they are discarded). The operands stay fp32 (a tf32 matmul on the GPU, as the slow path's pair matmuls).
  _fwd_o_kernel [V-blk, NC, B*H]: A over K slices, o = A v + (scale q 2^b) S_n; A never leaves the registers.
  _bwd_dv_kernel [V-blk, NC, B*H]: A as above, dv = A^T do + (k 2^(b_last - b)) dS_{n+1}.
  _bwd_dqdk_kernel [K-blk, NC, B*H]: dA = scale do v^T (causal) and the inter parts do S_n^T, v dS_{n+1}^T over
      V-blocks; dq = scale 2^b (do S_n^T) + 2^(b-r) (dA (k 2^(r-b))),
      dk = 2^(b_last-b) (v dS_{n+1}^T) + 2^(r-b) (dA^T (q 2^(b-r))), and dg in its chunk-local form
      dg_r = sum_{t>=r in chunk} (q_t dq_t - k_t dk_t) + sum_V(S_{n+1} dS_{n+1}): the reverse sum with
      tl.cumsum(reverse=True), the boundary term as 2^b_last sum_V(S_n dS_{n+1}) + sum_s k_s dk_s^inter (S_{n+1}
      expanded: no extra state tile is read).

Slow chunks: the fast kernels return at once; _fwd_o_slow_kernel, _bwd_dv_slow_kernel and _bwd_dqdk_slow_kernel (grids
over groups of SLOW_GROUP chunks, one vector load of the flags when all are fast) cut the chunk into sub-chunks of BC
rows: off-diagonal sub-chunk pairs (i > j) are matmuls with the gates re-based to gn = b[last row of j] (both factors
2^(b_t - gn), 2^(gn - b_s) <= 1); the diagonal (BC, BC) blocks are a 3-D broadcast (BC, BC, BKD) over K slices with
2^(b_t - b_s) taken only where s <= t (exponent -inf elsewhere) summed over K, so there is no serial per-column loop.
The slow dq/dk/dg kernel walks the sub-chunks from the last, carrying the column sums for dg, and reads S_{n+1} (the
final state for the last chunk) for the boundary term. Nothing overflows for any gate value on either path.

Every loop is a runtime loop (no static unrolling); each kernel compiles in about a second for sm_90.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_DIM = 256
LOG2E = tl.constexpr(1.4426950408889634)
# Fast-path bound on |b - r| in log2 units: factors within 2^+-48 keep every product of a causal pair finite in fp32
# (tf32 shares its exponent range) and far from subnormals. Read at call time; tests lower it to force the slow path.
FAST_LIMIT = 48.0
# Two-level state passes (see _num_segments): target programs per SM, minimum chunks per segment, and a forced segment
# count (None: automatic; tests set it to take the two-level path at small sizes).
SEG_WAVES = 3
SEG_MIN_CHUNKS = 16
SEGMENTS = None
# Chunks per program of the slow-chunk kernels: when every chunk is fast their grids are short (one flag load each).
SLOW_GROUP = 8

__all__ = ["chunk_sizes", "gla_chunk_bwd", "gla_chunk_fwd"]


def chunk_sizes() -> tuple[int, int]:
    """(BT, BC): chunk and sub-chunk lengths. 64/16 on GPU; 32/16 under the interpreter (both code paths, fast)."""
    return (32, 16) if INTERPRET else (64, 16)


def _one_config():
    # Streaming cumsum and the slow-chunk kernels (data-dependent work: autotuning on whatever the first call holds
    # would be noise).
    return [triton.Config({}, num_warps=4, num_stages=1)]


def _state_configs():
    """The sequential state passes: V-blocks of 64 or 32 (twice the programs, i.e. twice the independent chains in
    flight, for the same DRAM traffic), and 2-3 stages to prefetch the next chunks' k / v / gates (sm_90: <= 132 KB
    shared at fp32 K=V=256)."""
    if INTERPRET:
        return [triton.Config({"BV": 32}, num_warps=4, num_stages=1)]
    return [triton.Config({"BV": bv}, num_warps=4, num_stages=st) for bv, st in ((64, 2), (64, 3), (32, 2))]


def _clamp_bv(configs, named_args, **kwargs):
    pv = max(16, triton.next_power_of_2(kwargs["V"]))
    out, seen = [], set()
    for c in configs:
        bv = min(c.kwargs["BV"], pv)
        if (bv, c.num_stages) not in seen:
            seen.add((bv, c.num_stages))
            out.append(triton.Config({"BV": bv}, num_warps=c.num_warps, num_stages=c.num_stages))
    return out


def _tile_configs(spec):
    """Autotune configs over (BK, BV, num_warps, maxnreg) of the chunk-parallel kernels; one small config under the
    interpreter (several K slices / V-blocks even at test sizes). maxnreg=128 lets two 8-warp programs share an SM
    (ptxas: no or a few bytes of spill at bf16 K=V=128)."""
    if INTERPRET:
        return [triton.Config({"BK": 32, "BV": 64}, num_warps=4, num_stages=1)]
    return [triton.Config({"BK": bk, "BV": bv}, num_warps=w, num_stages=1, maxnreg=r) for bk, bv, w, r in spec]


def _clamp_tiles(configs, named_args, **kwargs):
    """Shrink BK / BV to the (power-of-two) problem size and drop the duplicates that leaves."""
    pk = max(16, triton.next_power_of_2(kwargs["K"]))
    pv = max(16, triton.next_power_of_2(kwargs["V"]))
    out, seen = [], set()
    for c in configs:
        kw = {"BK": min(c.kwargs["BK"], pk), "BV": min(c.kwargs["BV"], pv)}
        key = (kw["BK"], kw["BV"], c.num_warps, c.maxnreg)
        if key not in seen:
            seen.add(key)
            out.append(triton.Config(kw, num_warps=c.num_warps, num_stages=c.num_stages, maxnreg=c.maxnreg))
    return out


# Output / dv kernels: BV = 128 forms A once per chunk for V <= 128 (the 64 x 128 fp32 accumulator wants 8 warps);
# BV = 64 halves the accumulator for 4 warps (A formed once per V-block).
_OUT_TILES = _tile_configs([(64, 128, 8, 128), (32, 128, 8, None), (32, 64, 4, 128)])
# dq / dk / dg kernel: K-blocks of BK (dA = do v^T is formed once per K-block), V in blocks of BV. BK = 32: two
# programs per SM; BK = 64: one (234 registers) but half the dA work and do / v reads.
_DQK_TILES = _tile_configs([(32, 64, 8, 128), (64, 64, 8, None)])
_TILE_PRUNE = {"early_config_prune": _clamp_tiles}
_BV_PRUNE = {"early_config_prune": _clamp_bv}
_KEY = ["K", "V", "BT", "BK", "BV"]


def _blocks(kd: int, vd: int) -> tuple[int, int, int]:
    """(BK, BVO, BKD) of the state passes and the slow-chunk kernels: K slice / K-block (<= 64), V-block of the slow
    output / dv kernels and of the slow dq/dk V loop (<= 128), K slice of the 3-D diagonal blocks and column block of
    the slow dq/dk kernel (<= 32). The fast kernels and the state passes autotune their other tiles."""
    bk = max(16, triton.next_power_of_2(kd))
    return min(64, bk), min(128, max(16, triton.next_power_of_2(vd))), min(32, bk)


@triton.jit
def _rows(ptr, rows, cols, T, ncol, NCOL: tl.constexpr):
    m = (rows[:, None] < T) & (cols[None, :] < NCOL)
    return tl.load(ptr + rows[:, None] * ncol + cols[None, :], mask=m, other=0.0).to(tl.float32)


@triton.jit
def _row(ptr, r, cols, T, ncol, NCOL: tl.constexpr):
    return tl.load(ptr + r * ncol + cols, mask=(cols < NCOL) & (r < T), other=0.0).to(tl.float32)


@triton.jit
def _kv(ptr, ok, ov, K: tl.constexpr, V: tl.constexpr):
    """(BK, BV) tile of a (K, V) state, in its stored dtype."""
    return tl.load(ptr + ok[:, None] * V + ov[None, :], mask=(ok[:, None] < K) & (ov[None, :] < V), other=0.0)


@triton.autotune(configs=_one_config(), key=["K", "BT", "BK"])
@triton.jit
def _cumsum_kernel(g, bcum, piv, fast, lim, T, TP, NC, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """Chunk n of one batch*head: b = log2(e) * within-chunk cumsum of g (rows past T read as 0), the pivot
    r = (max_t b + min_t b) / 2 per column and fast = max |b - r| <= lim."""
    n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    r_n = n * BT + tl.arange(0, BT)
    g += bh * T * K
    bcum += bh * TP * K
    piv += (bh * NC + n) * K
    half = tl.zeros([BK], dtype=tl.float32)
    for ik in tl.range(0, tl.cdiv(K, BK)):
        ok = ik * BK + tl.arange(0, BK)
        b = tl.cumsum(_rows(g, r_n, ok, T, K, K) * LOG2E, axis=0)
        tl.store(bcum + r_n[:, None] * K + ok[None, :], b, mask=ok[None, :] < K)
        hi = tl.max(b, axis=0)
        lo = tl.min(b, axis=0)
        tl.store(piv + ok, 0.5 * (hi + lo), mask=ok < K)
        half = tl.maximum(half, 0.5 * (hi - lo))
    tl.store(fast + bh * NC + n, (tl.max(half, axis=0) <= lim).to(tl.int32))


@triton.jit
def _segment(L, NC, K: tl.constexpr, BK: tl.constexpr):
    """(K-block, segment, first chunk, end chunk) of a state-pass program: grid axis 0 is segment * K-blocks + K-block;
    segment p covers chunks [p L, min(p L + L, NC)) (one segment of L = NC for the single-level pass)."""
    nk = tl.cdiv(K, BK)
    pid = tl.program_id(0)
    p = pid // nk
    n0 = p * L
    return pid % nk, p, n0, tl.minimum(n0 + L, NC)


@triton.autotune(configs=_state_configs(), key=["K", "V", "BT", "BK", "PHASE"], prune_configs_by=_BV_PRUNE)
@triton.jit
def _state_fwd_kernel(k, v, bcum, h0, h, ht, e, d, T, TP, NC, L, NSEG,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      HAS_H0: tl.constexpr, UPCAST: tl.constexpr, PHASE: tl.constexpr):
    """One (segment x K-block, V-block, batch*head) program. PHASE 0 (one segment) and 2: h[bh, n] = S_n (state
    entering chunk n, h's dtype) over the segment and ht = S_NC (fp32) from the last segment; PHASE 2 starts from
    S_{p L} = h0 decayed and updated through the summaries of the earlier segments (S = 2^d_q S + e_q, fp32).
    PHASE 1: the segment's summary, walked from a zero state storing nothing: e[bh, p] = its end state (fp32) and
    d[bh, p] = sum over its chunks of b_last (log2 decay of the segment per K row, fp32)."""
    ik, p, n0, n1 = _segment(L, NC, K, BK)
    iv = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else k.dtype.element_ty
    ok = ik * BK + tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    k += bh * T * K
    v += bh * T * V
    bcum += bh * TP * K
    h += (bh * NC + n0) * K * V
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    off = ok[:, None] * V + ov[None, :]
    s = tl.zeros([BK, BV], dtype=tl.float32)
    dsum = tl.zeros([BK], dtype=tl.float32)
    if PHASE != 1:
        if HAS_H0:
            s = tl.load(h0 + bh * K * V + off, mask=ms, other=0.0).to(tl.float32)
        if PHASE == 2:
            for j in tl.range(0, p):
                dj = tl.load(d + (bh * NSEG + j) * K + ok, mask=ok < K, other=0.0)
                s = s * tl.exp2(dj)[:, None] + tl.load(e + (bh * NSEG + j) * K * V + off, mask=ms, other=0.0)
    for n in tl.range(n0, n1):
        if PHASE != 1:
            tl.store(h + off, s.to(h.dtype.element_ty), mask=ms)
            h += K * V
        r_n = n * BT + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        b_last = _row(bcum, n * BT + BT - 1, ok, TP, K, K)
        k_n = (_rows(k, r_n, ok, T, K, K) * tl.exp2(b_last[None, :] - b_n)).to(DT)
        v_n = _rows(v, r_n, ov, T, V, V).to(DT)
        s = s * tl.exp2(b_last)[:, None] + tl.dot(tl.trans(k_n), v_n, out_dtype=tl.float32)
        if PHASE == 1:
            dsum += b_last
    if PHASE == 1:
        tl.store(e + (bh * NSEG + p) * K * V + off, s, mask=ms)
        tl.store(d + (bh * NSEG + p) * K + ok, dsum, mask=(ok < K) & (iv == 0))
    elif p == NSEG - 1:
        tl.store(ht + bh * K * V + off, s, mask=ms)


@triton.autotune(configs=_state_configs(), key=["K", "V", "BT", "BK", "PHASE"], prune_configs_by=_BV_PRUNE)
@triton.jit
def _state_bwd_kernel(q, do, bcum, dht, dh, dh0, e, d, scale, T, TP, NC, L, NSEG,
                      K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                      HAS_DHT: tl.constexpr, UPCAST: tl.constexpr, PHASE: tl.constexpr):
    """The reverse pass, one (segment x K-block, V-block, batch*head) program, chunks from the segment's last. PHASE 0
    (one segment) and 2: dh[bh, n] = gradient of S_{n+1} (state leaving chunk n; dht for the last; dh's dtype) and,
    from the first segment, dh0 = gradient of S_0 (fp32); PHASE 2 seeds the segment's end with dht carried back
    through the summaries of the later segments (dS = 2^d_q dS + e_q, fp32). PHASE 1: e[bh, p] = the segment's
    gradient to the state entering it from a zero seed, d[bh, p] = its log2 decay (as in _state_fwd_kernel)."""
    ik, p, n0, n1 = _segment(L, NC, K, BK)
    iv = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = ik * BK + tl.arange(0, BK)
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    q += bh * T * K
    do += bh * T * V
    bcum += bh * TP * K
    dh += (bh * NC + n1 - 1) * K * V
    ms = (ok[:, None] < K) & (ov[None, :] < V)
    off = ok[:, None] * V + ov[None, :]
    ds = tl.zeros([BK, BV], dtype=tl.float32)
    dsum = tl.zeros([BK], dtype=tl.float32)
    if PHASE != 1:
        if HAS_DHT:
            ds = tl.load(dht + bh * K * V + off, mask=ms, other=0.0).to(tl.float32)
        if PHASE == 2:
            for jj in tl.range(0, NSEG - 1 - p):
                j = NSEG - 1 - jj
                dj = tl.load(d + (bh * NSEG + j) * K + ok, mask=ok < K, other=0.0)
                ds = ds * tl.exp2(dj)[:, None] + tl.load(e + (bh * NSEG + j) * K * V + off, mask=ms, other=0.0)
    for nn in tl.range(0, n1 - n0):
        t0 = (n1 - 1 - nn) * BT
        if PHASE != 1:
            tl.store(dh + off, ds.to(dh.dtype.element_ty), mask=ms)
            dh -= K * V
        r_n = t0 + ot
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
        q_n = (_rows(q, r_n, ok, T, K, K) * scale * tl.exp2(b_n)).to(DT)
        do_n = _rows(do, r_n, ov, T, V, V).to(DT)
        ds = ds * tl.exp2(b_last)[:, None] + tl.dot(tl.trans(q_n), do_n, out_dtype=tl.float32)
        if PHASE == 1:
            dsum += b_last
    if PHASE == 1:
        tl.store(e + (bh * NSEG + p) * K * V + off, ds, mask=ms)
        tl.store(d + (bh * NSEG + p) * K + ok, dsum, mask=(ok < K) & (iv == 0))
    elif p == 0:
        tl.store(dh0 + bh * K * V + off, ds, mask=ms)


# ------------------------------------------------------------------------------------------------ fast chunks
@triton.jit
def _chunk_scores(q, k, bcum, piv, r_n, T, TP, K: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr):
    """Unscaled, unmasked (BT, BT) fp32 scores of a fast chunk: (q 2^(b - r)) (k 2^(r - b))^T with the chunk's pivot
    r, K in slices of BK (tf32 dots; both factors within 2^+-48 on a fast chunk)."""
    a = tl.zeros([BT, BT], dtype=tl.float32)
    for ik in tl.range(0, tl.cdiv(K, BK)):
        ok = ik * BK + tl.arange(0, BK)
        b_n = _rows(bcum, r_n, ok, TP, K, K)
        r = tl.load(piv + ok, mask=ok < K, other=0.0)[None, :]
        qg = _rows(q, r_n, ok, T, K, K) * tl.exp2(b_n - r)
        kg = _rows(k, r_n, ok, T, K, K) * tl.exp2(r - b_n)
        a += tl.dot(qg, tl.trans(kg), out_dtype=tl.float32)
    return a


@triton.autotune(configs=_OUT_TILES, key=["K", "V", "BT"], prune_configs_by=_TILE_PRUNE)
@triton.jit
def _fwd_o_kernel(q, k, v, bcum, piv, fast, h, o, scale, T, TP, NC,
                  K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                  UPCAST: tl.constexpr):
    """o of one (V-block, chunk, batch*head) for a fast chunk: A = scale (q 2^(b-r)) (k 2^(r-b))^T (causal, tf32),
    o = A v + (scale q 2^b) S_n; K in slices of BK, A first and the state term second (short live ranges)."""
    iv = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    if tl.load(fast + bh * NC + n) == 0:
        return
    DT = tl.float32 if UPCAST else o.dtype.element_ty
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    r_n = n * BT + ot
    q += bh * T * K
    k += bh * T * K
    bcum += bh * TP * K
    piv += (bh * NC + n) * K
    h += (bh * NC + n) * K * V
    a = _chunk_scores(q, k, bcum, piv, r_n, T, TP, K, BT, BK)
    a = tl.where(ot[:, None] >= ot[None, :], a * scale, 0.0).to(DT)
    acc = tl.dot(a, _rows(v + bh * T * V, r_n, ov, T, V, V).to(DT), out_dtype=tl.float32)
    for ik in tl.range(0, tl.cdiv(K, BK)):
        ok = ik * BK + tl.arange(0, BK)
        qg = _rows(q, r_n, ok, T, K, K) * scale * tl.exp2(_rows(bcum, r_n, ok, TP, K, K))
        acc += tl.dot(qg.to(DT), _kv(h, ok, ov, K, V).to(DT), out_dtype=tl.float32)
    tl.store(o + bh * T * V + r_n[:, None] * V + ov[None, :], acc.to(o.dtype.element_ty),
             mask=(r_n[:, None] < T) & (ov[None, :] < V))


@triton.autotune(configs=_OUT_TILES, key=["K", "V", "BT"], prune_configs_by=_TILE_PRUNE)
@triton.jit
def _bwd_dv_kernel(q, k, bcum, piv, fast, dh, do, dv, scale, T, TP, NC,
                   K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                   UPCAST: tl.constexpr):
    """dv = A^T do + (k 2^(b_last - b)) dS_{n+1} of one (V-block, chunk, batch*head) for a fast chunk (A as in
    _fwd_o_kernel); K in slices of BK."""
    iv = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    if tl.load(fast + bh * NC + n) == 0:
        return
    DT = tl.float32 if UPCAST else k.dtype.element_ty
    ov = iv * BV + tl.arange(0, BV)
    ot = tl.arange(0, BT)
    t0 = n * BT
    r_n = t0 + ot
    q += bh * T * K
    k += bh * T * K
    bcum += bh * TP * K
    piv += (bh * NC + n) * K
    dh += (bh * NC + n) * K * V
    a = _chunk_scores(q, k, bcum, piv, r_n, T, TP, K, BT, BK)
    a = tl.where(ot[:, None] >= ot[None, :], a * scale, 0.0)
    acc = tl.dot(tl.trans(a).to(DT), _rows(do + bh * T * V, r_n, ov, T, V, V).to(DT), out_dtype=tl.float32)
    for ik in tl.range(0, tl.cdiv(K, BK)):
        ok = ik * BK + tl.arange(0, BK)
        b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)[None, :]
        kd = _rows(k, r_n, ok, T, K, K) * tl.exp2(b_last - _rows(bcum, r_n, ok, TP, K, K))
        acc += tl.dot(kd.to(DT), _kv(dh, ok, ov, K, V).to(DT), out_dtype=tl.float32)
    tl.store(dv + bh * T * V + r_n[:, None] * V + ov[None, :], acc.to(dv.dtype.element_ty),
             mask=(r_n[:, None] < T) & (ov[None, :] < V))


@triton.autotune(configs=_DQK_TILES, key=["K", "V", "BT"], prune_configs_by=_TILE_PRUNE)
@triton.jit
def _bwd_dqdk_kernel(q, k, v, bcum, piv, fast, h, dh, do, dq, dk, dg, scale, T, TP, NC,
                     K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
                     UPCAST: tl.constexpr):
    """dq, dk, dg of one (K-block, chunk, batch*head) for a fast chunk; V in blocks of BV. dA = scale do v^T (causal);
    dq = scale 2^b (do S_n^T) + 2^(b-r) (dA (k 2^(r-b))), dk = 2^(b_last-b) (v dS_{n+1}^T) + 2^(r-b) (dA^T (q 2^(b-r)));
    dg = reverse cumsum over the chunk of q dq - k dk, plus sum_V(S_{n+1} dS_{n+1})."""
    ik = tl.program_id(0)
    n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    if tl.load(fast + bh * NC + n) == 0:
        return
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    ok = ik * BK + tl.arange(0, BK)
    ot = tl.arange(0, BT)
    t0 = n * BT
    r_n = t0 + ot
    q += bh * T * K
    k += bh * T * K
    v += bh * T * V
    do += bh * T * V
    bcum += bh * TP * K
    h += (bh * NC + n) * K * V
    dh += (bh * NC + n) * K * V
    acc_q = tl.zeros([BT, BK], dtype=tl.float32)
    acc_k = tl.zeros([BT, BK], dtype=tl.float32)
    acc_a = tl.zeros([BT, BT], dtype=tl.float32)
    bnd = tl.zeros([BK], dtype=tl.float32)
    for iv in tl.range(0, tl.cdiv(V, BV)):
        ov = iv * BV + tl.arange(0, BV)
        s = _kv(h, ok, ov, K, V)
        ds = _kv(dh, ok, ov, K, V)
        do_n = _rows(do, r_n, ov, T, V, V).to(DT)
        v_n = _rows(v, r_n, ov, T, V, V).to(DT)
        acc_q += tl.dot(do_n, tl.trans(s.to(DT)), out_dtype=tl.float32)
        acc_k += tl.dot(v_n, tl.trans(ds.to(DT)), out_dtype=tl.float32)
        acc_a += tl.dot(do_n, tl.trans(v_n), out_dtype=tl.float32)
        bnd += tl.sum(s.to(tl.float32) * ds.to(tl.float32), axis=1)
    b_n = _rows(bcum, r_n, ok, TP, K, K)
    b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)
    r = tl.load(piv + (bh * NC + n) * K + ok, mask=ok < K, other=0.0)[None, :]
    k_n = _rows(k, r_n, ok, T, K, K)
    dk_n = acc_k * tl.exp2(b_last[None, :] - b_n)
    # sum_V(S_{n+1} dS_{n+1}) with S_{n+1} = 2^b_last S_n + sum_s (k_s 2^(b_last - b_s))^T v_s.
    bnd = bnd * tl.exp2(b_last) + tl.sum(k_n * dk_n, axis=0)
    da = tl.where(ot[:, None] >= ot[None, :], acc_a * scale, 0.0)
    dq_n = acc_q * scale * tl.exp2(b_n) + tl.exp2(b_n - r) * tl.dot(da, k_n * tl.exp2(r - b_n), out_dtype=tl.float32)
    q_n = _rows(q, r_n, ok, T, K, K)
    dk_n += tl.exp2(r - b_n) * tl.dot(tl.trans(da), q_n * tl.exp2(b_n - r), out_dtype=tl.float32)
    m = (r_n[:, None] < T) & (ok[None, :] < K)
    off = bh * T * K + r_n[:, None] * K + ok[None, :]
    tl.store(dq + off, dq_n.to(dq.dtype.element_ty), mask=m)
    tl.store(dk + off, dk_n.to(dk.dtype.element_ty), mask=m)
    dg_n = tl.cumsum(q_n * dq_n - k_n * dk_n, axis=0, reverse=True) + bnd[None, :]
    tl.store(dg + off, dg_n.to(dg.dtype.element_ty), mask=m)


# ------------------------------------------------------------------------------------------------ slow chunks
@triton.jit
def _diag_scores(q, k, bcum, r_i, T, TP, K: tl.constexpr, BC: tl.constexpr, BKD: tl.constexpr):
    """(BC, BC) fp32: sum_k q[t, k] k[s, k] 2^(b[t, k] - b[s, k]) for s <= t of rows r_i, 0 above the diagonal;
    a 3-D broadcast (BC, BC, BKD) per K slice, the exponent -inf where s > t."""
    oc = tl.arange(0, BC)
    causal = (oc[:, None] >= oc[None, :])[:, :, None]
    a = tl.zeros([BC, BC], dtype=tl.float32)
    for kd in tl.range(0, tl.cdiv(K, BKD)):
        ok = kd * BKD + tl.arange(0, BKD)
        q_i = _rows(q, r_i, ok, T, K, K)
        k_i = _rows(k, r_i, ok, T, K, K)
        b_i = _rows(bcum, r_i, ok, TP, K, K)
        e = tl.exp2(tl.where(causal, b_i[:, None, :] - b_i[None, :, :], float("-inf")))
        a += tl.sum(q_i[:, None, :] * k_i[None, :, :] * e, axis=2)
    return a


@triton.jit
def _pair_scores(q, k, bcum, r_i, r_j, gn_row, T, TP, K: tl.constexpr, BK: tl.constexpr):
    """(BC, BC) fp32: q_i . (k_j 2^(b_i - b_j)) for a sub-chunk i after sub-chunk j, with the gates re-based to
    gn = b[gn_row] (the last row of j): both factors 2^(b_i - gn), 2^(gn - b_j) are <= 1."""
    a = tl.zeros([r_i.shape[0], r_j.shape[0]], dtype=tl.float32)
    for ik in tl.range(0, tl.cdiv(K, BK)):
        ok = ik * BK + tl.arange(0, BK)
        gn = _row(bcum, gn_row, ok, TP, K, K)[None, :]
        qg = _rows(q, r_i, ok, T, K, K) * tl.exp2(_rows(bcum, r_i, ok, TP, K, K) - gn)
        kg = _rows(k, r_j, ok, T, K, K) * tl.exp2(gn - _rows(bcum, r_j, ok, TP, K, K))
        a += tl.dot(qg, tl.trans(kg), out_dtype=tl.float32)
    return a


@triton.jit
def _slow_chunks(fast, bh, ig, NC, G: tl.constexpr):
    """True when one of the chunks ig*G .. ig*G+G-1 (of batch*head bh) is slow: one vector load, so the programs of the
    slow-chunk kernels cost about one memory round trip when every chunk is fast."""
    og = ig * G + tl.arange(0, G)
    return tl.min(tl.load(fast + bh * NC + og, mask=og < NC, other=1), axis=0) == 0


@triton.jit
def _is_slow(fast, bh, n, NC):
    return tl.load(fast + bh * NC + n, mask=n < NC, other=1) == 0


@triton.autotune(configs=_one_config(), key=_KEY + ["BC", "BKD", "G"])
@triton.jit
def _fwd_o_slow_kernel(q, k, v, bcum, fast, h, o, scale, T, TP, NC,
                       K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                       BKD: tl.constexpr, BV: tl.constexpr, G: tl.constexpr, UPCAST: tl.constexpr):
    """o of the slow chunks among G consecutive chunks (grid V-blocks, chunk groups, B*H), one sub-chunk of BC rows
    at a time: inter part, off-diagonal sub-chunk pairs (re-based matmuls), the diagonal block (3-D broadcast)."""
    iv = tl.program_id(0)
    ig = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    if not _slow_chunks(fast, bh, ig, NC, G):
        return
    DT = tl.float32 if UPCAST else o.dtype.element_ty
    ov = iv * BV + tl.arange(0, BV)
    oc = tl.arange(0, BC)
    q += bh * T * K
    k += bh * T * K
    v += bh * T * V
    o += bh * T * V
    bcum += bh * TP * K
    for jn in tl.range(0, G):
        n = ig * G + jn
        if _is_slow(fast, bh, n, NC):
            t0 = n * BT
            hn = h + (bh * NC + n) * K * V
            for i in tl.range(0, BT // BC):
                r_i = t0 + i * BC + oc
                acc = tl.zeros([BC, BV], dtype=tl.float32)
                for ik in tl.range(0, tl.cdiv(K, BK)):
                    ok = ik * BK + tl.arange(0, BK)
                    qg = _rows(q, r_i, ok, T, K, K) * scale * tl.exp2(_rows(bcum, r_i, ok, TP, K, K))
                    acc += tl.dot(qg.to(DT), _kv(hn, ok, ov, K, V).to(DT), out_dtype=tl.float32)
                for j in tl.range(0, i):
                    r_j = t0 + j * BC + oc
                    a = _pair_scores(q, k, bcum, r_i, r_j, t0 + j * BC + BC - 1, T, TP, K, BK)
                    acc += tl.dot((a * scale).to(DT), _rows(v, r_j, ov, T, V, V).to(DT), out_dtype=tl.float32)
                a = _diag_scores(q, k, bcum, r_i, T, TP, K, BC, BKD)
                acc += tl.dot((a * scale).to(DT), _rows(v, r_i, ov, T, V, V).to(DT), out_dtype=tl.float32)
                tl.store(o + r_i[:, None] * V + ov[None, :], acc.to(o.dtype.element_ty),
                         mask=(r_i[:, None] < T) & (ov[None, :] < V))


@triton.autotune(configs=_one_config(), key=_KEY + ["BC", "BKD", "G"])
@triton.jit
def _bwd_dv_slow_kernel(q, k, bcum, fast, dh, do, dv, scale, T, TP, NC,
                        K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                        BKD: tl.constexpr, BV: tl.constexpr, G: tl.constexpr, UPCAST: tl.constexpr):
    """dv of the slow chunks among G consecutive chunks (grid V-blocks, chunk groups, B*H), one key sub-chunk j of BC
    rows at a time: dv_j = (k_j 2^(b_last - b_j)) dS_{n+1} + sum_{i >= j} A_ij^T do_i."""
    iv = tl.program_id(0)
    ig = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    if not _slow_chunks(fast, bh, ig, NC, G):
        return
    DT = tl.float32 if UPCAST else k.dtype.element_ty
    ov = iv * BV + tl.arange(0, BV)
    oc = tl.arange(0, BC)
    q += bh * T * K
    k += bh * T * K
    do += bh * T * V
    dv += bh * T * V
    bcum += bh * TP * K
    for jn in tl.range(0, G):
        n = ig * G + jn
        if _is_slow(fast, bh, n, NC):
            t0 = n * BT
            dhn = dh + (bh * NC + n) * K * V
            for j in tl.range(0, BT // BC):
                r_j = t0 + j * BC + oc
                acc = tl.zeros([BC, BV], dtype=tl.float32)
                for ik in tl.range(0, tl.cdiv(K, BK)):
                    ok = ik * BK + tl.arange(0, BK)
                    b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)[None, :]
                    kd = _rows(k, r_j, ok, T, K, K) * tl.exp2(b_last - _rows(bcum, r_j, ok, TP, K, K))
                    acc += tl.dot(kd.to(DT), _kv(dhn, ok, ov, K, V).to(DT), out_dtype=tl.float32)
                a = _diag_scores(q, k, bcum, r_j, T, TP, K, BC, BKD)
                acc += tl.dot(tl.trans(a * scale).to(DT), _rows(do, r_j, ov, T, V, V).to(DT), out_dtype=tl.float32)
                for i in tl.range(j + 1, BT // BC):
                    r_i = t0 + i * BC + oc
                    a = _pair_scores(q, k, bcum, r_i, r_j, t0 + j * BC + BC - 1, T, TP, K, BK)
                    acc += tl.dot(tl.trans(a * scale).to(DT), _rows(do, r_i, ov, T, V, V).to(DT),
                                  out_dtype=tl.float32)
                tl.store(dv + r_j[:, None] * V + ov[None, :], acc.to(dv.dtype.element_ty),
                         mask=(r_j[:, None] < T) & (ov[None, :] < V))


@triton.jit
def _da_block(do, v, r_t, r_s, T, V: tl.constexpr, BV: tl.constexpr, DT: tl.constexpr):
    """(BC, BC) fp32: do_t . v_s for rows r_t, r_s; V in blocks of BV."""
    da = tl.zeros([r_t.shape[0], r_s.shape[0]], dtype=tl.float32)
    for iv in tl.range(0, tl.cdiv(V, BV)):
        ov = iv * BV + tl.arange(0, BV)
        da += tl.dot(_rows(do, r_t, ov, T, V, V).to(DT), tl.trans(_rows(v, r_s, ov, T, V, V).to(DT)),
                     out_dtype=tl.float32)
    return da


@triton.jit
def _dqdk_slow_chunk(q, k, v, bcum, h, ht, dh, do, dq, dk, dg, scale, T, TP, NC, n, ok,
                     K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                     BV: tl.constexpr, DT: tl.constexpr):
    """dq, dk, dg of chunk n, columns ok (pointers offset to the batch*head; h, dh to the chunk; ht to the final
    state), one sub-chunk i of BC rows at a time from the last: dg_i = reverse cumsum within i + the column sums of
    q dq - k dk over the later sub-chunks + sum_V(S_{n+1} dS_{n+1})."""
    NS: tl.constexpr = BT // BC
    oc = tl.arange(0, BC)
    causal = oc[:, None] >= oc[None, :]
    t0 = n * BT
    carry = tl.zeros([BK], dtype=tl.float32)
    for iv in tl.range(0, tl.cdiv(V, BV)):
        ov = iv * BV + tl.arange(0, BV)
        if n < NC - 1:
            s_next = _kv(h + K * V, ok, ov, K, V).to(tl.float32)
        else:
            s_next = _kv(ht, ok, ov, K, V).to(tl.float32)
        carry += tl.sum(s_next * _kv(dh, ok, ov, K, V).to(tl.float32), axis=1)
    b_last = _row(bcum, t0 + BT - 1, ok, TP, K, K)[None, :]
    for ii in tl.range(0, NS):
        i = NS - 1 - ii
        r_i = t0 + i * BC + oc
        q_i = _rows(q, r_i, ok, T, K, K)
        k_i = _rows(k, r_i, ok, T, K, K)
        b_i = _rows(bcum, r_i, ok, TP, K, K)
        gn_i = _row(bcum, t0 + i * BC + BC - 1, ok, TP, K, K)[None, :]
        acc_q = tl.zeros([BC, BK], dtype=tl.float32)
        acc_k = tl.zeros([BC, BK], dtype=tl.float32)
        for iv in tl.range(0, tl.cdiv(V, BV)):
            ov = iv * BV + tl.arange(0, BV)
            acc_q += tl.dot(_rows(do, r_i, ov, T, V, V).to(DT), tl.trans(_kv(h, ok, ov, K, V).to(DT)),
                            out_dtype=tl.float32)
            acc_k += tl.dot(_rows(v, r_i, ov, T, V, V).to(DT), tl.trans(_kv(dh, ok, ov, K, V).to(DT)),
                            out_dtype=tl.float32)
        dq_i = acc_q * scale * tl.exp2(b_i)
        dk_i = acc_k * tl.exp2(b_last - b_i)
        for j in tl.range(0, i):
            r_j = t0 + j * BC + oc
            gn = _row(bcum, t0 + j * BC + BC - 1, ok, TP, K, K)[None, :]
            kg = _rows(k, r_j, ok, T, K, K) * tl.exp2(gn - _rows(bcum, r_j, ok, TP, K, K))
            da = _da_block(do, v, r_i, r_j, T, V, BV, DT) * scale
            dq_i += tl.dot(da, kg, out_dtype=tl.float32) * tl.exp2(b_i - gn)
        for j in tl.range(i + 1, NS):
            r_j = t0 + j * BC + oc
            qg = _rows(q, r_j, ok, T, K, K) * tl.exp2(_rows(bcum, r_j, ok, TP, K, K) - gn_i)
            da = _da_block(do, v, r_j, r_i, T, V, BV, DT) * scale
            dk_i += tl.dot(tl.trans(da), qg, out_dtype=tl.float32) * tl.exp2(gn_i - b_i)
        da = tl.where(causal, _da_block(do, v, r_i, r_i, T, V, BV, DT) * scale, 0.0)
        e = tl.exp2(tl.where(causal[:, :, None], b_i[:, None, :] - b_i[None, :, :], float("-inf")))
        dq_i += tl.sum(da[:, :, None] * k_i[None, :, :] * e, axis=1)
        dk_i += tl.sum(da[:, :, None] * q_i[:, None, :] * e, axis=0)
        x = q_i * dq_i - k_i * dk_i
        dg_i = tl.cumsum(x, axis=0, reverse=True) + carry[None, :]
        carry += tl.sum(x, axis=0)
        m = (r_i[:, None] < T) & (ok[None, :] < K)
        off = r_i[:, None] * K + ok[None, :]
        tl.store(dq + off, dq_i.to(dq.dtype.element_ty), mask=m)
        tl.store(dk + off, dk_i.to(dk.dtype.element_ty), mask=m)
        tl.store(dg + off, dg_i.to(dg.dtype.element_ty), mask=m)


@triton.autotune(configs=_one_config(), key=_KEY + ["BC", "G"])
@triton.jit
def _bwd_dqdk_slow_kernel(q, k, v, bcum, fast, h, ht, dh, do, dq, dk, dg, scale, T, TP, NC,
                          K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr, BK: tl.constexpr,
                          BV: tl.constexpr, G: tl.constexpr, UPCAST: tl.constexpr):
    """dq, dk, dg of the slow chunks among G consecutive chunks (grid chunk groups, B*H), K in column blocks of BK:
    inter parts, off-diagonal sub-chunk pairs (dA blocks recomputed, gates re-based to the sub-chunk boundary), the
    diagonal block as a 3-D broadcast (see _dqdk_slow_chunk)."""
    ig = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    if not _slow_chunks(fast, bh, ig, NC, G):
        return
    DT = tl.float32 if UPCAST else q.dtype.element_ty
    off = bh * T * K
    for jn in tl.range(0, G):
        n = ig * G + jn
        if _is_slow(fast, bh, n, NC):
            for ik in tl.range(0, tl.cdiv(K, BK)):
                _dqdk_slow_chunk(q + off, k + off, v + bh * T * V, bcum + bh * TP * K, h + (bh * NC + n) * K * V,
                                 ht + bh * K * V, dh + (bh * NC + n) * K * V, do + bh * T * V, dq + off, dk + off,
                                 dg + off, scale, T, TP, NC, n, ik * BK + tl.arange(0, BK), K, V, BT, BC, BK, BV, DT)


# ------------------------------------------------------------------------------------------------ launchers
def _upcast(q: torch.Tensor) -> bool:
    """Matmul operands in fp32 for bf16 under the interpreter: its bf16 ``tl.dot`` returns garbage (triton 3.6)."""
    return INTERPRET and q.dtype == torch.bfloat16


def _state_dtype(q: torch.Tensor) -> torch.dtype:
    """Storage dtype of the per-chunk states and state gradients: the matmul dtype (every consumer casts them to it
    before its dot), fp32 for fp32 inputs and under the interpreter's bf16 upcast."""
    return torch.float32 if q.dtype == torch.float32 or _upcast(q) else q.dtype


def _prep(q, k, v, g):
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    if kd > MAX_DIM or vd > MAX_DIM:
        raise ValueError(f"GLA Triton kernels support K, V <= {MAX_DIM}, got K={kd}, V={vd}")
    bt, bc = chunk_sizes()
    nc = triton.cdiv(t, bt)
    if nc > 65535 or b * h > 65535:  # CUDA grid y / z limits (chunks, batch * heads)
        raise ValueError(f"GLA chunk kernels support T <= {65535 * bt} and B*H <= 65535, got T={t}, B*H={b * h}")
    return b, h, t, kd, vd, bt, bc, nc


def _gates(g, nc, bt):
    """(b (B*H, NC*BT, K) fp32 within-chunk cumulative log2 gates, pivots (B*H, NC, K) fp32, fast flags (B*H, NC))."""
    b, h, t, kd = g.shape
    bcum = torch.empty(b * h, nc * bt, kd, device=g.device, dtype=torch.float32)
    piv = torch.empty(b * h, nc, kd, device=g.device, dtype=torch.float32)
    fast = torch.empty(b * h, nc, device=g.device, dtype=torch.int32)
    bk = _blocks(kd, kd)[0]
    _cumsum_kernel[(nc, b * h)](g, bcum, piv, fast, float(FAST_LIMIT), t, nc * bt, nc, K=kd, BT=bt, BK=bk)
    return bcum, piv, fast


def _num_segments(b, h, kd, vd, nc, device) -> int:
    """P, the segments of the two-level state passes: enough programs for SEG_WAVES per SM when the single-level grid
    (K-blocks x V-blocks of 64 x B*H) is small, segments of >= SEG_MIN_CHUNKS chunks; 1 (single level) for large
    grids. ``SEGMENTS`` (tests) forces P, clamped to [1, NC]."""
    if SEGMENTS is not None:
        return max(1, min(int(SEGMENTS), nc))
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 132
    progs = triton.cdiv(kd, _blocks(kd, vd)[0]) * triton.cdiv(vd, min(64, max(16, triton.next_power_of_2(vd)))) * b * h
    return max(1, min(triton.cdiv(SEG_WAVES * sms, progs), nc // SEG_MIN_CHUNKS))


def _segments(b, h, kd, vd, nc, device):
    """(P, L): P segments of L chunks (the last may be shorter; none empty); (1, NC) for the single-level pass."""
    seg = _num_segments(b, h, kd, vd, nc, device)
    ln = triton.cdiv(nc, seg)
    return triton.cdiv(nc, ln), ln


def _state_pass(kernel, args, scalars, const, b, h, kd, vd, bk, nc, device):
    """Launch a state pass (``kernel`` with its leading tensors ``args``, then ``scalars`` and ``const``): single level
    (PHASE 0) for P = 1; otherwise PHASE 1 (segment summaries into fp32 scratch) then PHASE 2 (every segment from its
    start state), both on a (P x K-blocks, V-blocks, B*H) grid."""
    seg, ln = _segments(b, h, kd, vd, nc, device)
    nk = triton.cdiv(kd, bk)
    grid = lambda m: (seg * nk, triton.cdiv(vd, m["BV"]), b * h)  # noqa: E731
    if seg == 1:
        kernel[grid](*args, args[-1], args[-1], *scalars, nc, 1, **const, PHASE=0)  # e, d unused
        return
    e = torch.empty(b * h, seg, kd, vd, device=device, dtype=torch.float32)
    d = torch.empty(b * h, seg, kd, device=device, dtype=torch.float32)
    for phase in (1, 2):
        kernel[grid](*args, e, d, *scalars, ln, seg, **const, PHASE=phase)


def _states(k, v, bcum, initial_state, nc, bt):
    """(S_n for every chunk (B*H, NC, K, V) in the state dtype, final state (B, H, K, V) fp32)."""
    b, h, t, kd = k.shape
    vd = v.shape[-1]
    bk = _blocks(kd, vd)[0]
    hs = torch.empty(b * h, nc, kd, vd, device=k.device, dtype=_state_dtype(k))
    ht = torch.empty(b, h, kd, vd, device=k.device, dtype=torch.float32)
    h0 = initial_state.float().contiguous() if initial_state is not None else ht
    _state_pass(_state_fwd_kernel, (k, v, bcum, h0, hs, ht), (t, nc * bt, nc),
                dict(K=kd, V=vd, BT=bt, BK=bk, HAS_H0=initial_state is not None, UPCAST=_upcast(k)),
                b, h, kd, vd, bk, nc, k.device)
    return hs, ht


def gla_chunk_fwd(q, k, v, g, initial_state=None, scale=None):
    """q, k, g (B, H, T, K), v (B, H, T, V), initial_state (B, H, K, V) or None (contiguous).
    Returns o (B, H, T, V) in q.dtype and the final state (B, H, K, V) fp32."""
    b, h, t, kd, vd, bt, bc, nc = _prep(q, k, v, g)
    bk, bvo, bkd = _blocks(kd, vd)
    scale = kd ** -0.5 if scale is None else float(scale)
    up = _upcast(q)
    bcum, piv, fast = _gates(g, nc, bt)
    hs, ht = _states(k, v, bcum, initial_state, nc, bt)
    o = torch.empty(b, h, t, vd, device=q.device, dtype=q.dtype)
    _fwd_o_kernel[lambda m: (triton.cdiv(vd, m["BV"]), nc, b * h)](
        q, k, v, bcum, piv, fast, hs, o, scale, t, nc * bt, nc, K=kd, V=vd, BT=bt, UPCAST=up)
    _fwd_o_slow_kernel[(triton.cdiv(vd, bvo), triton.cdiv(nc, SLOW_GROUP), b * h)](
        q, k, v, bcum, fast, hs, o, scale, t, nc * bt, nc, K=kd, V=vd, BT=bt, BC=bc, BK=bk, BKD=bkd, BV=bvo,
        G=SLOW_GROUP, UPCAST=up)
    return o, ht


def gla_chunk_bwd(do, dht, q, k, v, g, initial_state, final_state, scale=None):
    """Gradients (dq, dk, dv, dg, dh0) of the chunked GLA: dq, dk, dv in the input dtypes, dg in g.dtype, dh0 (B, H, K,
    V) fp32. ``dht`` (B, H, K, V) or None is the gradient of the final state; ``final_state`` is not read (the state
    pass recomputes it) and is kept for the op's signature.

    The per-chunk states and the intra-chunk scores are recomputed; the state gradients come from one reverse pass.
    dg is chunk-local: for r in chunk n, dg_r = sum_{t>=r in chunk n} (q_t dq_t - k_t dk_t) + sum_V(S_{n+1} dS_{n+1})
    (every gate factor exp(B_t - B_s) splits into a query part exp(B_t) and a key part exp(-B_s); raising g_r scales
    the state leaving chunk n by exactly what it adds to every later cumulative gate), so no sum runs over more than one
    chunk and no large terms cancel across the sequence.
    """
    b, h, t, kd, vd, bt, bc, nc = _prep(q, k, v, g)
    bk, bvo, bkd = _blocks(kd, vd)
    scale = kd ** -0.5 if scale is None else float(scale)
    up = _upcast(q)
    tp = nc * bt
    do = do.contiguous()
    bcum, piv, fast = _gates(g, nc, bt)
    hs, ht = _states(k, v, bcum, initial_state, nc, bt)
    dhs = torch.empty(b * h, nc, kd, vd, device=q.device, dtype=_state_dtype(q))
    dh0 = torch.empty(b, h, kd, vd, device=q.device, dtype=torch.float32)
    dht_c = dht.float().contiguous() if dht is not None else dh0
    _state_pass(_state_bwd_kernel, (q, do, bcum, dht_c, dhs, dh0), (scale, t, tp, nc),
                dict(K=kd, V=vd, BT=bt, BK=bk, HAS_DHT=dht is not None, UPCAST=up), b, h, kd, vd, bk, nc, q.device)
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    dg = torch.empty(g.shape, device=g.device, dtype=g.dtype)
    _bwd_dv_kernel[lambda m: (triton.cdiv(vd, m["BV"]), nc, b * h)](
        q, k, bcum, piv, fast, dhs, do, dv, scale, t, tp, nc, K=kd, V=vd, BT=bt, UPCAST=up)
    _bwd_dv_slow_kernel[(triton.cdiv(vd, bvo), triton.cdiv(nc, SLOW_GROUP), b * h)](
        q, k, bcum, fast, dhs, do, dv, scale, t, tp, nc, K=kd, V=vd, BT=bt, BC=bc, BK=bk, BKD=bkd, BV=bvo,
        G=SLOW_GROUP, UPCAST=up)
    _bwd_dqdk_kernel[lambda m: (triton.cdiv(kd, m["BK"]), nc, b * h)](
        q, k, v, bcum, piv, fast, hs, dhs, do, dq, dk, dg, scale, t, tp, nc, K=kd, V=vd, BT=bt, UPCAST=up)
    _bwd_dqdk_slow_kernel[(triton.cdiv(nc, SLOW_GROUP), b * h)](
        q, k, v, bcum, fast, hs, ht, dhs, do, dq, dk, dg, scale, t, tp, nc, K=kd, V=vd, BT=bt, BC=bc, BK=bkd, BV=bvo,
        G=SLOW_GROUP, UPCAST=up)
    return dq, dk, dv, dg, dh0
