"""Fused RNN-T joint + loss: the transducer loss and its gradient from the joint's two projections, without the
(B, T, U+1, V) logits.

Joint (as ``zoo.models.transducer.TransformerTransducer.joint``): ``z[b,t,u] = tanh(a[b,t] + l[b,u]) @ W^T + bias``
with ``a = audio_proj(enc)`` (B, T, J), ``l = label_proj(label_enc)`` (B, U+1, J), ``W`` (V, J), ``bias`` (V,).
Loss: ``-log P(y | x)`` of the RNN-T lattice over log-softmax(z), as ``torchaudio.functional.rnnt_loss``
(``reduction`` "mean" = plain mean over utterances, "sum", "none").

Forward: per (t, u) tile, z chunk by chunk over V with an online log-sum-exp; only ``lse``, ``lp_blank`` and
``lp_y`` (B, T, U+1) stay; alpha/beta by a Triton scan. Backward: with the lattice posteriors
``g_blank = exp(alpha + lp_blank + beta[t+1] - log P)``, ``g_y = exp(alpha + lp_y + beta[u+1] - log P)`` and
``gamma = g_blank + g_y``: ``dL/dz = gamma * softmax(z) - g_blank e_blank - g_y e_y`` (the "function merging" of Li et
al. 2019), recomputed per tile and pushed through the joint to d a, d l, d W, d bias. Extra memory: O(B T U) plus
the gradients of the inputs, against 2 x B T (U+1) V x 4 bytes for torchaudio (logits + saved gradient).
"""
from __future__ import annotations

import os

import torch

from .reference import rnnt_joint_loss_reference


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _kernels():
    from . import triton_rnnt

    return triton_rnnt


def _p2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _config(t: int, u1: int, j: int, v: int, wide: bool) -> dict:
    """Block shapes: BM = BT*BU cells per tile, BV vocabulary columns, BJ joint columns per dot (NJ chunks), BJO
    joint columns of d a / d l (and d W) per program. ``wide``: 2-byte tensor-core operands (bf16), which fit wider
    tiles in shared memory than fp32 ones (checked by benchmarks/triton_compile.py: <= 227 KB, < 10 s)."""
    if _interpreter_on():  # small tiles: the CPU interpreter runs one program at a time
        bu = min(16, max(2, _p2(u1)))
        return dict(BT=max(1, 16 // bu), BU=bu, BV=16, BJ=16, NJ=-(-j // 16), BJO=16, num_warps=4, num_stages=1)
    bu = min(16, max(2, _p2(u1)))
    jp = max(16, _p2(j))
    # bf16: the whole joint width of a tile stays in registers up to J 256 (tanh once per tile, not per V chunk);
    # J 512 in one chunk or BV 128 needs 256-576 KB of shared memory on sm_90 (triton_compile.py). Tuning knobs:
    # ZOO_RNNT_BJ / ZOO_RNNT_BV (powers of two) for experiments on the GPU.
    bj = min(jp, int(os.environ.get("ZOO_RNNT_BJ", 256)) if wide else 64)
    return dict(BT=max(1, 64 // bu), BU=bu, BV=int(os.environ.get("ZOO_RNNT_BV", 64)), BJ=bj, NJ=-(-j // bj),
                BJO=min(jp, 256 if wide else 128), num_warps=8, num_stages=2)


def _check(a, l, weight, bias, targets, logit_lengths, target_lengths, blank):
    if a.dim() != 3 or l.dim() != 3 or a.shape[0] != l.shape[0] or a.shape[2] != l.shape[2]:
        raise ValueError(f"a must be (B, T, J) and l (B, U+1, J), got {tuple(a.shape)} and {tuple(l.shape)}")
    if weight.dim() != 2 or weight.shape[1] != a.shape[2]:
        raise ValueError(f"weight must be (V, J={a.shape[2]}), got {tuple(weight.shape)}")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    b, u1 = a.shape[0], l.shape[1]
    if targets.dim() != 2 or targets.shape[0] != b or targets.shape[1] != u1 - 1:
        raise ValueError(f"targets must be (B={b}, U={u1 - 1}), got {tuple(targets.shape)}")
    if logit_lengths.shape != (b,) or target_lengths.shape != (b,):
        raise ValueError("logit_lengths and target_lengths must be (B,)")
    if not 0 <= blank < weight.shape[0]:
        raise ValueError(f"blank must be in [0, V={weight.shape[0]}), got {blank}")


class _FusedRNNT(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, l, weight, bias, targets, tlen, ulen, blank, prec):
        k = _kernels()
        B, T, J = a.shape
        U1, V = l.shape[1], weight.shape[0]
        dev = a.device
        a, l, weight = a.contiguous(), l.contiguous(), weight.contiguous()
        has_bias = bias is not None
        bias_c = bias.contiguous() if has_bias else weight  # dummy pointer
        y = targets.to(torch.int32).contiguous() if targets.shape[1] > 0 else torch.zeros(B, 1, dtype=torch.int32,
                                                                                          device=dev)
        tlen, ulen = tlen.to(torch.int32).contiguous(), ulen.to(torch.int32).contiguous()
        dot_bf16 = prec == "bf16"
        cfg = _config(T, U1, J, V, dot_bf16)
        kprec = "ieee" if prec == "bf16" else prec
        f32 = dict(dtype=torch.float32, device=dev)
        lse = torch.zeros(B, T, U1, **f32)
        lpb = torch.zeros(B, T, U1, **f32)
        lpy = torch.zeros(B, T, U1, **f32)
        grid = (triton_cdiv(U1, cfg["BU"]), triton_cdiv(T, cfg["BT"]), B)
        common = dict(HAS_BIAS=has_bias, BT=cfg["BT"], BU=cfg["BU"], BV=cfg["BV"], BJ=cfg["BJ"], NJ=cfg["NJ"],
                      DOT_BF16=dot_bf16, PREC=kprec, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        strides = (a.stride(0), a.stride(1), l.stride(0), l.stride(1), weight.stride(0), y.stride(0))
        k.rnnt_fwd_kernel[grid](a, l, weight, bias_c, y, tlen, ulen, lse, lpb, lpy, T, U1, J, V, blank, *strides,
                                **common)
        alpha = torch.full((B, T, U1), float("-inf"), **f32)
        beta = torch.full((B, T, U1), float("-inf"), **f32)
        loss = torch.empty(B, **f32)
        k.rnnt_dp_kernel[(B, 2)](lpb, lpy, tlen, ulen, alpha, beta, loss, T, U1, BU=max(16, _p2(U1)), num_warps=4)
        ctx.save_for_backward(a, l, weight, bias if has_bias else None, y, tlen, ulen, lse, lpb, lpy, alpha, beta,
                              loss)
        ctx.cfg, ctx.blank, ctx.common, ctx.strides = cfg, blank, common, strides
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        k = _kernels()
        a, l, weight, bias, y, tlen, ulen, lse, lpb, lpy, alpha, beta, loss = ctx.saved_tensors
        B, T, J = a.shape
        U1, V = l.shape[1], weight.shape[0]
        dev = a.device
        gb, gy = lattice_posteriors(lpb, lpy, alpha, beta, loss, tlen, ulen)
        scale = grad_loss.to(torch.float32).reshape(B, 1, 1)
        gb, gy = (gb * scale).contiguous(), (gy * scale).contiguous()
        cfg, common = ctx.cfg, ctx.common
        bias_c = bias if bias is not None else weight
        da = torch.zeros(B, T, J, dtype=torch.float32, device=dev)
        dl = torch.zeros(B, U1, J, dtype=torch.float32, device=dev)
        njo = triton_cdiv(J, cfg["BJO"])
        nut, ntt = triton_cdiv(U1, cfg["BU"]), triton_cdiv(T, cfg["BT"])
        k.rnnt_bwd_dh_kernel[(nut, ntt, B * njo)](a, l, weight, bias_c, y, tlen, ulen, lse, gb, gy, da, dl, T, U1, J,
                                                  V, ctx.blank, *ctx.strides, njo, BJO=cfg["BJO"], **common)
        dw = torch.zeros(V, J, dtype=torch.float32, device=dev)
        db = torch.zeros(V, dtype=torch.float32, device=dev)
        nv, njw = triton_cdiv(V, cfg["BV"]), triton_cdiv(J, cfg["BJO"])
        n_tiles = B * ntt * nut
        if dev.type == "cuda":
            sms = torch.cuda.get_device_properties(dev).multi_processor_count
            splits = max(1, min(n_tiles, (2 * sms) // max(1, nv * njw)))
        else:
            splits = 2
        k.rnnt_bwd_dw_kernel[(nv, njw, splits)](a, l, weight, bias_c, y, tlen, ulen, lse, gb, gy, dw, db, T, U1, J,
                                                V, ctx.blank, *ctx.strides, ntt, nut, n_tiles, BJW=cfg["BJO"],
                                                **common)
        return (da.to(a.dtype), dl.to(l.dtype), dw.to(weight.dtype), db.to(bias.dtype) if bias is not None else None,
                None, None, None, None, None)


def triton_cdiv(x: int, y: int) -> int:
    return -(-int(x) // int(y))


def lattice_posteriors(lpb, lpy, alpha, beta, loss, tlen, ulen):
    """Posteriors of the blank and label arcs, (B, T, U+1) fp32 each: g_b = exp(alpha + lp_blank + beta[t+1] + loss)
    (the final blank of the last frame ends the lattice: beta = 0 there), g_y = exp(alpha + lp_y + beta[u+1] + loss);
    zero outside the lattice. dL/d lp_blank = -g_b, dL/d lp_y = -g_y."""
    B, T, U1 = lpb.shape
    dev = lpb.device
    tl_ = tlen.long().view(B, 1, 1)
    ul_ = ulen.long().view(B, 1, 1)
    t = torch.arange(T, device=dev).view(1, T, 1)
    u = torch.arange(U1, device=dev).view(1, 1, U1)
    ninf = torch.full((B, 1, U1), float("-inf"), device=dev)
    beta_t1 = torch.cat([beta[:, 1:], ninf], 1)
    beta_t1 = torch.where((t == tl_ - 1) & (u == ul_), torch.zeros((), device=dev), beta_t1)
    beta_u1 = torch.cat([beta[:, :, 1:], ninf[:, :, :1].expand(B, T, 1)], 2)
    lz = loss.view(B, 1, 1)
    inside = t < tl_
    gb = torch.where(inside & (u <= ul_), torch.exp(alpha + lpb + beta_t1 + lz), torch.zeros((), device=dev))
    gy = torch.where(inside & (u < ul_), torch.exp(alpha + lpy + beta_u1 + lz), torch.zeros((), device=dev))
    return torch.nan_to_num(gb), torch.nan_to_num(gy)


def fused_rnnt_loss(a: torch.Tensor, l: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
                    blank: int = 0, reduction: str = "mean", precision: str | None = None,
                    backend: str = "auto") -> torch.Tensor:
    """RNN-T loss of the joint ``tanh(a[:, :, None] + l[:, None]) @ weight.T + bias`` without materialising it.

    a (B, T, J) projected audio frames, l (B, U+1, J) projected label states (float32/bf16/fp16), weight (V, J),
    bias (V,) or None, targets (B, U) int, logit_lengths / target_lengths (B,) int. Returns per-utterance losses
    (B,) fp32 for ``reduction="none"``, else their mean / sum (scalar). Differentiable w.r.t. a, l, weight, bias.

    precision: tensor-core operands — "bf16" (default for bf16/fp16 inputs on CUDA), "tf32" (default for fp32 on
    CUDA) or "ieee" (exact fp32; default under the CPU interpreter). backend: "triton", "reference" (materialised
    joint + torchaudio) or "auto" (triton on CUDA or under TRITON_INTERPRET=1, else reference).
    """
    _check(a, l, weight, bias, targets, logit_lengths, target_lengths, blank)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if backend not in ("auto", "triton", "reference"):
        raise ValueError(f"backend must be 'auto', 'triton' or 'reference', got {backend!r}")
    use_triton = backend == "triton" or (backend == "auto" and (a.is_cuda or _interpreter_on()))
    if not use_triton:
        return rnnt_joint_loss_reference(a, l, weight, bias, targets, logit_lengths, target_lengths, blank,
                                         reduction)
    if precision is None:
        if not a.is_cuda:
            precision = "ieee"
        else:
            precision = "bf16" if a.dtype in (torch.bfloat16, torch.float16) else "tf32"
    if precision not in ("bf16", "tf32", "ieee"):
        raise ValueError(f"precision must be 'bf16', 'tf32' or 'ieee', got {precision!r}")
    if _interpreter_on() and precision == "bf16":
        raise ValueError("precision 'bf16' is computed wrongly by the Triton CPU interpreter; use 'ieee'")
    losses = _FusedRNNT.apply(a, l, weight, bias, targets, logit_lengths, target_lengths, int(blank), precision)
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses
