"""Triton kernels of the fused RNN-T joint + loss (see ``fused.py`` for the math and the autograd wrapper).

Cells are (t, u) pairs of one utterance, processed in tiles of BT x BU cells (BM = BT * BU rows). Every kernel
recomputes the joint ``z = tanh(a_t + l_u) @ W^T + bias`` of its tile chunk by chunk over the vocabulary (BV) and
the joint width (BJ); no (B, T, U+1, V) tensor is ever written.

- ``rnnt_fwd_kernel``: online log-sum-exp over V -> ``lse``, ``lp_blank = z_blank - lse``, ``lp_y = z_{y_u} - lse``.
- ``rnnt_dp_kernel``: one program per utterance; alpha and beta row by row over t, each row a log-semiring linear
  recurrence over u solved with a cumulative sum + log-cumsum-exp scan (``tl.associative_scan``).
- ``rnnt_bwd_dh_kernel``: dz = gamma * p - g_blank * e_blank - g_y * e_y per V chunk, dh += dz @ W, then through
  tanh; sums over u (-> d a_t) and over t (-> d l_u) of the tile go out with ``tl.atomic_add``.
- ``rnnt_bwd_dw_kernel``: dW[v chunk, j chunk] += dz^T @ h and dbias over a strided share of all tiles.

fp32 accumulators throughout; ``DOT_BF16`` feeds the tensor cores bf16 operands (speed), otherwise fp32 operands with
``PREC`` ("ieee" for exact tests, "tf32"). tanh is written with ``exp`` (no libdevice: the CPU interpreter has none).
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def _lae(a, b):
    """log(exp(a) + exp(b)), -inf safe."""
    m = tl.maximum(a, b)
    ms = tl.where(m == float("-inf"), 0.0, m)
    return ms + tl.log(tl.exp(a - ms) + tl.exp(b - ms))


@triton.jit
def _tile(pid_u, pid_t, b, TLEN, ULEN, BT: tl.constexpr, BU: tl.constexpr):
    tb = tl.load(TLEN + b)
    ub = tl.load(ULEN + b)
    r = tl.arange(0, BT * BU)
    t = pid_t * BT + r // BU
    u = pid_u * BU + r % BU
    valid = (t < tb) & (u <= ub)
    return t, u, valid, tb, ub


@triton.jit
def _h_chunk(A, L, b, t, u, valid, j0, J, sAb, sAt, sLb, sLu, BJ: tl.constexpr):
    jj = j0 + tl.arange(0, BJ)
    m = valid[:, None] & (jj < J)[None, :]
    av = tl.load(A + b * sAb + t[:, None] * sAt + jj[None, :], mask=m, other=0.0).to(tl.float32)
    lv = tl.load(L + b * sLb + u[:, None] * sLu + jj[None, :], mask=m, other=0.0).to(tl.float32)
    return _tanh(av + lv)


@triton.jit
def _dot(x, y, acc, DOT_BF16: tl.constexpr, PREC: tl.constexpr):
    if DOT_BF16:
        return tl.dot(x.to(tl.bfloat16), y.to(tl.bfloat16), acc)
    else:
        return tl.dot(x, y.to(tl.float32), acc, input_precision=PREC)


@triton.jit
def _logits_chunk(A, L, W, BIAS, b, t, u, valid, v0, J, V, sAb, sAt, sLb, sLu, sW, h0,
                  HAS_BIAS: tl.constexpr, BM: tl.constexpr, BV: tl.constexpr, BJ: tl.constexpr, NJ: tl.constexpr,
                  DOT_BF16: tl.constexpr, PREC: tl.constexpr):
    """z for the tile's cells and vocabulary columns v0 .. v0 + BV (-inf beyond V). h0: the tile's h when NJ == 1."""
    cols = v0 + tl.arange(0, BV)
    cm = cols < V
    acc = tl.zeros((BM, BV), dtype=tl.float32)
    if NJ == 1:
        jj = tl.arange(0, BJ)
        w = tl.load(W + cols[None, :] * sW + jj[:, None], mask=cm[None, :] & (jj < J)[:, None], other=0.0)
        acc = _dot(h0, w, acc, DOT_BF16, PREC)
    else:
        for j0 in range(0, J, BJ):
            h = _h_chunk(A, L, b, t, u, valid, j0, J, sAb, sAt, sLb, sLu, BJ)
            jj = j0 + tl.arange(0, BJ)
            w = tl.load(W + cols[None, :] * sW + jj[:, None], mask=cm[None, :] & (jj < J)[:, None], other=0.0)
            acc = _dot(h, w, acc, DOT_BF16, PREC)
    if HAS_BIAS:
        acc += tl.load(BIAS + cols, mask=cm, other=0.0).to(tl.float32)[None, :]
    return tl.where(cm[None, :], acc, float("-inf")), cols


@triton.jit
def rnnt_fwd_kernel(A, L, W, BIAS, Y, TLEN, ULEN, LSE, LPB, LPY,
                    T, U1, J, V, blank, sAb, sAt, sLb, sLu, sW, sYb,
                    HAS_BIAS: tl.constexpr, BT: tl.constexpr, BU: tl.constexpr, BV: tl.constexpr,
                    BJ: tl.constexpr, NJ: tl.constexpr, DOT_BF16: tl.constexpr, PREC: tl.constexpr):
    pid_u = tl.program_id(0)
    pid_t = tl.program_id(1)
    b = tl.program_id(2)
    BM: tl.constexpr = BT * BU
    t, u, valid, tb, ub = _tile(pid_u, pid_t, b, TLEN, ULEN, BT, BU)
    if (pid_t * BT < tb) & (pid_u * BU <= ub):
        yv = tl.load(Y + b * sYb + u, mask=valid & (u < ub), other=-1)
        h0 = _h_chunk(A, L, b, t, u, valid, 0, J, sAb, sAt, sLb, sLu, BJ)
        m = tl.full((BM,), float("-inf"), tl.float32)
        s = tl.zeros((BM,), tl.float32)
        zb = tl.zeros((BM,), tl.float32)
        zy = tl.zeros((BM,), tl.float32)
        for v0 in range(0, V, BV):
            z, cols = _logits_chunk(A, L, W, BIAS, b, t, u, valid, v0, J, V, sAb, sAt, sLb, sLu, sW, h0,
                                    HAS_BIAS, BM, BV, BJ, NJ, DOT_BF16, PREC)
            mn = tl.maximum(m, tl.max(z, 1))
            s = s * tl.exp(m - mn) + tl.sum(tl.exp(z - mn[:, None]), 1)
            m = mn
            zb += tl.sum(tl.where(cols[None, :] == blank, z, 0.0), 1)
            zy += tl.sum(tl.where(cols[None, :] == yv[:, None], z, 0.0), 1)
        lse = m + tl.log(s)
        off = b * T * U1 + t * U1 + u
        tl.store(LSE + off, lse, mask=valid)
        tl.store(LPB + off, zb - lse, mask=valid)
        tl.store(LPY + off, zy - lse, mask=valid & (u < ub))


@triton.jit
def rnnt_dp_kernel(LPB, LPY, TLEN, ULEN, ALPHA, BETA, LOSS, T, U1, BU: tl.constexpr):
    """Grid (B, 2): program (b, 0) runs alpha (and writes the loss), (b, 1) beta, concurrently."""
    b = tl.program_id(0)
    tb = tl.load(TLEN + b)
    ub = tl.load(ULEN + b)
    base = b * T * U1
    k = tl.arange(0, BU)
    km = k <= ub
    ninf = tl.full((BU,), float("-inf"), tl.float32)
    if tl.program_id(1) == 0:
        # alpha[t, u] = lae(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + y[t, u-1]); index k = u
        prev = ninf
        for t in range(0, tb):
            a_in = tl.where(t == 0, tl.where(k == 0, 0.0, float("-inf")), prev)
            c = tl.load(LPY + base + t * U1 + k - 1, mask=km & (k >= 1), other=0.0)
            cs = tl.cumsum(c, 0)
            x = cs + tl.associative_scan(a_in - cs, 0, _lae)
            x = tl.where(km, x, float("-inf"))
            tl.store(ALPHA + base + t * U1 + k, x, mask=km)
            prev = x + tl.load(LPB + base + t * U1 + k, mask=km, other=0.0)
        loss = -tl.sum(tl.where(k == ub, prev, 0.0), 0)
        tl.store(LOSS + b, loss)
    else:
        # beta[t, u] = lae(beta[t+1, u] + blank[t, u], beta[t, u+1] + y[t, u]); reversed index k = ub - u
        uk = ub - k
        nxt = ninf
        for i in range(0, tb):
            t = tb - 1 - i
            bl = tl.load(LPB + base + t * U1 + uk, mask=km, other=0.0)
            d = tl.where(t == tb - 1, tl.where(k == 0, bl, float("-inf")), nxt + bl)
            c = tl.load(LPY + base + t * U1 + uk, mask=km & (k >= 1), other=0.0)
            cs = tl.cumsum(c, 0)
            x = cs + tl.associative_scan(d - cs, 0, _lae)
            x = tl.where(km, x, float("-inf"))
            tl.store(BETA + base + t * U1 + uk, x, mask=km)
            nxt = x


@triton.jit
def _dz_chunk(z, cols, lse, gam, gb, gy, yv, blank):
    p = tl.exp(z - lse[:, None])
    dz = gam[:, None] * p
    dz -= tl.where(cols[None, :] == blank, gb[:, None], 0.0)
    dz -= tl.where(cols[None, :] == yv[:, None], gy[:, None], 0.0)
    return dz


@triton.jit
def rnnt_bwd_dh_kernel(A, L, W, BIAS, Y, TLEN, ULEN, LSE, GB, GY, DA, DL,
                       T, U1, J, V, blank, sAb, sAt, sLb, sLu, sW, sYb, NJO,
                       HAS_BIAS: tl.constexpr, BT: tl.constexpr, BU: tl.constexpr, BV: tl.constexpr,
                       BJ: tl.constexpr, NJ: tl.constexpr, BJO: tl.constexpr,
                       DOT_BF16: tl.constexpr, PREC: tl.constexpr):
    pid_u = tl.program_id(0)
    pid_t = tl.program_id(1)
    b = tl.program_id(2) // NJO
    jo = (tl.program_id(2) % NJO) * BJO
    BM: tl.constexpr = BT * BU
    t, u, valid, tb, ub = _tile(pid_u, pid_t, b, TLEN, ULEN, BT, BU)
    if (pid_t * BT < tb) & (pid_u * BU <= ub):
        off = b * T * U1 + t * U1 + u
        lse = tl.load(LSE + off, mask=valid, other=0.0)
        gb = tl.load(GB + off, mask=valid, other=0.0)
        gy = tl.load(GY + off, mask=valid, other=0.0)
        gam = gb + gy
        yv = tl.load(Y + b * sYb + u, mask=valid & (u < ub), other=-1)
        h0 = _h_chunk(A, L, b, t, u, valid, 0, J, sAb, sAt, sLb, sLu, BJ)
        jj = jo + tl.arange(0, BJO)
        jm = jj < J
        dh = tl.zeros((BM, BJO), tl.float32)
        for v0 in range(0, V, BV):
            z, cols = _logits_chunk(A, L, W, BIAS, b, t, u, valid, v0, J, V, sAb, sAt, sLb, sLu, sW, h0,
                                    HAS_BIAS, BM, BV, BJ, NJ, DOT_BF16, PREC)
            dz = _dz_chunk(z, cols, lse, gam, gb, gy, yv, blank)
            w = tl.load(W + cols[:, None] * sW + jj[None, :], mask=(cols < V)[:, None] & jm[None, :], other=0.0)
            dh = _dot(dz, w, dh, DOT_BF16, PREC)
        h = _h_chunk(A, L, b, t, u, valid, jo, J, sAb, sAt, sLb, sLu, BJO)
        dpre = dh * (1.0 - h * h)
        dpre3 = tl.reshape(dpre, (BT, BU, BJO))
        ta = pid_t * BT + tl.arange(0, BT)
        ul = pid_u * BU + tl.arange(0, BU)
        tl.atomic_add(DA + b * T * J + ta[:, None] * J + jj[None, :], tl.sum(dpre3, 1),
                      mask=(ta < tb)[:, None] & jm[None, :])
        tl.atomic_add(DL + b * U1 * J + ul[:, None] * J + jj[None, :], tl.sum(dpre3, 0),
                      mask=(ul <= ub)[:, None] & jm[None, :])


@triton.jit
def rnnt_bwd_dw_kernel(A, L, W, BIAS, Y, TLEN, ULEN, LSE, GB, GY, DW, DB,
                       T, U1, J, V, blank, sAb, sAt, sLb, sLu, sW, sYb, N_TT, N_UT, N_TILES,
                       HAS_BIAS: tl.constexpr, BT: tl.constexpr, BU: tl.constexpr, BV: tl.constexpr,
                       BJ: tl.constexpr, NJ: tl.constexpr, BJW: tl.constexpr,
                       DOT_BF16: tl.constexpr, PREC: tl.constexpr):
    v0 = tl.program_id(0) * BV
    jw = tl.program_id(1) * BJW
    pid_s = tl.program_id(2)
    n_s = tl.num_programs(2)
    BM: tl.constexpr = BT * BU
    jj = jw + tl.arange(0, BJW)
    jm = jj < J
    accw = tl.zeros((BV, BJW), tl.float32)
    accb = tl.zeros((BV,), tl.float32)
    for tile in range(pid_s, N_TILES, n_s):
        b = tile // (N_TT * N_UT)
        pid_t = (tile // N_UT) % N_TT
        pid_u = tile % N_UT
        t, u, valid, tb, ub = _tile(pid_u, pid_t, b, TLEN, ULEN, BT, BU)
        if (pid_t * BT < tb) & (pid_u * BU <= ub):
            off = b * T * U1 + t * U1 + u
            lse = tl.load(LSE + off, mask=valid, other=0.0)
            gb = tl.load(GB + off, mask=valid, other=0.0)
            gy = tl.load(GY + off, mask=valid, other=0.0)
            yv = tl.load(Y + b * sYb + u, mask=valid & (u < ub), other=-1)
            h0 = _h_chunk(A, L, b, t, u, valid, 0, J, sAb, sAt, sLb, sLu, BJ)
            z, cols = _logits_chunk(A, L, W, BIAS, b, t, u, valid, v0, J, V, sAb, sAt, sLb, sLu, sW, h0,
                                    HAS_BIAS, BM, BV, BJ, NJ, DOT_BF16, PREC)
            dz = _dz_chunk(z, cols, lse, gb + gy, gb, gy, yv, blank)
            hw = _h_chunk(A, L, b, t, u, valid, jw, J, sAb, sAt, sLb, sLu, BJW)
            accw = _dot(tl.trans(dz), hw, accw, DOT_BF16, PREC)
            accb += tl.sum(dz, 0)
    cols = v0 + tl.arange(0, BV)
    cm = cols < V
    tl.atomic_add(DW + cols[:, None] * J + jj[None, :], accw, mask=cm[:, None] & jm[None, :])
    if HAS_BIAS:
        tl.atomic_add(DB + cols, accb, mask=cm & (jw == 0))
