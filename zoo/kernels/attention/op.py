"""``torch.library`` registration of the Triton attention as two ops, ``zoo::attention`` and ``zoo::attention_backward``.

The ops take tensors and scalars only (the mask is passed as optional tensors + ints, the kernel kwargs of
:class:`~zoo.kernels.attention.masks.MaskSpec`), have fake implementations and an autograd formula, so
``torch.compile`` sees one opaque node per direction. Where the Triton kernels cannot run (CPU without
``TRITON_INTERPRET=1``, kernels missing) the ops fall back to the reference math, so they are callable everywhere.

``torch.export`` never sees these ops: :func:`zoo.kernels.attention` routes to SDPA / reference math while exporting
(ExecuTorch cannot carry custom ops).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from .masks import MaskSpec
from .reference import reference_attention, reference_attention_backward

__all__ = ["triton_attention", "triton_available", "triton_kernels"]


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_KERNELS: tuple | None = None
_KERNELS_LOADED = False


def triton_kernels():
    """(attention_fwd, attention_bwd, fwd_module) from the kernel modules, or None when they are not importable."""
    global _KERNELS, _KERNELS_LOADED
    if _KERNELS_LOADED:
        return _KERNELS
    try:
        from . import triton_bwd, triton_fwd

        fwd = getattr(triton_fwd, "attention_fwd", None)
        bwd = getattr(triton_bwd, "attention_bwd", None)
        _KERNELS = (fwd, bwd, triton_fwd) if fwd is not None and bwd is not None else None
    except Exception:  # noqa: BLE001 - missing module, triton absent, or broken import: report unavailable
        _KERNELS = None
    _KERNELS_LOADED = True
    return _KERNELS


def triton_available(device: torch.device) -> bool:
    """True when the Triton kernels exist and can run on ``device`` (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if triton_kernels() is None:
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    if device.type == "cpu":
        return interpreter_on()
    return False


_MASK_ARGS = ("causal", "window_left", "window_right", "seqlens_k", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q",
              "max_seqlen_k", "block_indices", "block_counts", "block_size")


def _spec_from(causal, window_left, window_right, seqlens_k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
               block_indices, block_counts, block_size) -> MaskSpec:
    return MaskSpec(
        causal=causal, window_left=window_left, window_right=window_right, seqlens_k=seqlens_k,
        cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
        block_indices=block_indices, block_counts=block_counts, block_size=block_size,
    )


def _kw(*values) -> dict:
    return dict(zip(_MASK_ARGS, values))


@torch.library.custom_op("zoo::attention", mutates_args=())
def _attention_op(
    q: Tensor, k: Tensor, v: Tensor, scale: float, causal: bool, window_left: int, window_right: int,
    seqlens_k: Tensor | None, cu_seqlens_q: Tensor | None, cu_seqlens_k: Tensor | None,
    max_seqlen_q: int, max_seqlen_k: int, block_indices: Tensor | None, block_counts: Tensor | None,
    block_size: int, lse_grad: bool,
) -> tuple[Tensor, Tensor]:
    """Forward: o (B, Hq, Nq, Dv) in q.dtype, lse (B, Hq, Nq) fp32 (-inf on empty rows)."""
    kw = _kw(causal, window_left, window_right, seqlens_k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
             block_indices, block_counts, block_size)
    if triton_available(q.device):
        fwd = triton_kernels()[0]
        o, lse = fwd(q, k, v, scale=scale, **kw)
        return o, lse.float()
    o, lse = reference_attention(q, k, v, _spec_from(**kw), scale, True)
    return o, lse.float()


@_attention_op.register_fake
def _(q, k, v, scale, causal, window_left, window_right, seqlens_k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
      max_seqlen_k, block_indices, block_counts, block_size, lse_grad):
    b, hq, nq, _ = q.shape
    o = q.new_empty(b, hq, nq, v.shape[-1])
    lse = q.new_empty(b, hq, nq, dtype=torch.float32)
    return o, lse


@torch.library.custom_op("zoo::attention_backward", mutates_args=())
def _attention_backward_op(
    do: Tensor, dlse: Tensor | None, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, scale: float,
    causal: bool, window_left: int, window_right: int, seqlens_k: Tensor | None, cu_seqlens_q: Tensor | None,
    cu_seqlens_k: Tensor | None, max_seqlen_q: int, max_seqlen_k: int, block_indices: Tensor | None,
    block_counts: Tensor | None, block_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward: (dq, dk, dv). ``dlse`` (B, Hq, Nq), optional, is the gradient flowing into the returned lse."""
    kw = _kw(causal, window_left, window_right, seqlens_k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
             block_indices, block_counts, block_size)
    if triton_available(q.device):
        fwd, bwd, _ = triton_kernels()
        dq, dk, dv = bwd(do.contiguous(), q, k, v, o, lse, scale=scale, **kw)
        if dlse is not None:
            # d lse_i / d s_ij = p_ij, so the lse gradient adds scale * dlse_i * (P @ K)_i to dq and
            # scale * P^T (dlse * Q) to dk: the first is a forward pass with V = K, the second the dV of a backward
            # pass with dO = dlse * Q (dV = P^T dO does not depend on O).
            g = torch.where(torch.isfinite(lse), dlse.float(), torch.zeros_like(lse))[..., None]
            ok, _ = fwd(q, k, k, scale=scale, **kw)
            dq = (dq.float() + scale * g * ok.float()).to(dq.dtype)
            gq = (g * q.float()).to(q.dtype)
            _, _, dk2 = bwd(gq, q, k, k, torch.zeros_like(q), lse, scale=scale, **kw)
            dk = (dk.float() + scale * dk2.float()).to(dk.dtype)
        return dq, dk, dv
    # Custom-op kernels run below autograd, so the fallback uses the analytic reference backward.
    return reference_attention_backward(do, dlse, q, k, v, _spec_from(**kw), scale)


@_attention_backward_op.register_fake
def _(do, dlse, q, k, v, o, lse, *args):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    (q, k, v, scale, causal, wl, wr, seqlens_k, cu_q, cu_k, mq, mk, bi, bc, bs, lse_grad) = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, seqlens_k, cu_q, cu_k, bi, bc)
    ctx.scale, ctx.causal, ctx.wl, ctx.wr, ctx.mq, ctx.mk, ctx.bs = scale, causal, wl, wr, mq, mk, bs
    ctx.lse_grad = lse_grad


def _backward(ctx, do, dlse):
    q, k, v, o, lse, seqlens_k, cu_q, cu_k, bi, bc = ctx.saved_tensors
    if do is None:
        do = torch.zeros_like(o)
    if not ctx.lse_grad:
        dlse = None
    dq, dk, dv = torch.ops.zoo.attention_backward(
        do, dlse, q, k, v, o, lse, ctx.scale, ctx.causal, ctx.wl, ctx.wr, seqlens_k, cu_q, cu_k, ctx.mq, ctx.mk,
        bi, bc, ctx.bs,
    )
    return (dq, dk, dv) + (None,) * 13


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def triton_attention(q: Tensor, k: Tensor, v: Tensor, spec: MaskSpec | None, scale: float,
                     return_lse: bool = False):
    """The ``triton`` backend: calls ``torch.ops.zoo.attention`` (differentiable). Returns o or (o, lse)."""
    s = spec if spec is not None else MaskSpec()
    o, lse = torch.ops.zoo.attention(
        q, k, v, float(scale), s.causal, s.window_left, s.window_right, s.seqlens_k, s.cu_seqlens_q, s.cu_seqlens_k,
        s.max_seqlen_q, s.max_seqlen_k, s.block_indices, s.block_counts, s.block_size, bool(return_lse),
    )
    return (o, lse) if return_lse else o
