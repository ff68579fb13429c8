"""``gla``: public entry point, input checks, and the ``torch.library`` ops ``zoo::gla`` / ``zoo::gla_backward``.

The ops have fake implementations and an autograd formula, so ``torch.compile`` sees one opaque node per direction.
Where Triton cannot run (CPU without ``TRITON_INTERPRET=1``, fp64 inputs) they use the PyTorch chunked math of
``reference.py``. While ``torch.export`` traces, :func:`gla` calls that PyTorch math directly, so exported graphs hold
only aten ops.
"""
from __future__ import annotations

import math
import os

import torch
from torch import Tensor

from .reference import gla_chunk_torch, gla_chunk_torch_bwd

__all__ = ["gla", "triton_available"]

_MODES = ("chunk", "recurrent")
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_KERNELS = None
_LOADED = False


def _kernels():
    """(chunk module, recurrent module), or None when Triton or the kernels cannot be imported."""
    global _KERNELS, _LOADED
    if not _LOADED:
        try:
            from . import chunk, recurrent

            _KERNELS = (chunk, recurrent)
        except Exception:  # noqa: BLE001 - triton absent or broken: report unavailable
            _KERNELS = None
        _LOADED = True
    return _KERNELS


def triton_available(device: torch.device) -> bool:
    """True when the GLA Triton kernels can run on ``device`` (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
    if _kernels() is None:
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and _interpreter_on()


def _use_triton(q: Tensor) -> bool:
    return q.dtype != torch.float64 and max(q.shape[-1], 1) <= 256 and triton_available(q.device)


def _state_dtype(q: Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


@torch.library.custom_op("zoo::gla", mutates_args=())
def _gla_op(q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None, scale: float,
            recurrent: bool) -> tuple[Tensor, Tensor]:
    """o (B, H, T, V) in q.dtype, final state (B, H, K, V) fp32 (fp64 for fp64 inputs)."""
    if _use_triton(q) and v.shape[-1] <= 256:
        chunk, rec = _kernels()
        fn = rec.gla_recurrent_fwd if recurrent else chunk.gla_chunk_fwd
        return fn(q, k, v, g, initial_state, scale)
    o, s = gla_chunk_torch(q, k, v, g, initial_state, scale)
    return o, s.to(_state_dtype(q))


@_gla_op.register_fake
def _(q, k, v, g, initial_state, scale, recurrent):
    b, h, t, kd = q.shape
    return q.new_empty(b, h, t, v.shape[-1]), q.new_empty(b, h, kd, v.shape[-1], dtype=_state_dtype(q))


@torch.library.custom_op("zoo::gla_backward", mutates_args=())
def _gla_backward_op(do: Tensor, dht: Tensor | None, q: Tensor, k: Tensor, v: Tensor, g: Tensor,
                     initial_state: Tensor | None, final_state: Tensor, scale: float
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dq, dk, dv, dg, dh0); dh0 (B, H, K, V) fp32 (zeros when there is no initial state)."""
    if _use_triton(q) and v.shape[-1] <= 256:
        chunk, _ = _kernels()
        return chunk.gla_chunk_bwd(do, dht, q, k, v, g, initial_state, final_state, scale)
    dq, dk, dv, dg, dh0 = gla_chunk_torch_bwd(do, dht, q, k, v, g, initial_state, final_state, scale)
    return dq, dk, dv, dg, dh0.to(_state_dtype(q))


@_gla_backward_op.register_fake
def _(do, dht, q, k, v, g, initial_state, final_state, scale):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(g),
            torch.empty_like(final_state))


def _setup_context(ctx, inputs, output):
    q, k, v, g, initial_state, scale, _ = inputs
    ctx.save_for_backward(q, k, v, g, initial_state, output[1])
    ctx.scale = scale
    ctx.has_h0 = initial_state is not None


def _backward(ctx, do, dht):
    q, k, v, g, h0, ht = ctx.saved_tensors
    if do is None:
        do = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
    dq, dk, dv, dg, dh0 = torch.ops.zoo.gla_backward(do.contiguous(), dht, q, k, v, g, h0, ht, ctx.scale)
    return dq, dk, dv, dg, (dh0.to(h0.dtype) if ctx.has_h0 else None), None, None


_gla_op.register_autograd(_backward, setup_context=_setup_context)


def _exporting() -> bool:
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else bool(flag)


def _check(name: str, t, rank: int, layout: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(t).__name__}")
    if t.dim() != rank:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)}")
    if t.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None = None,
        output_final_state: bool = False, mode: str = "chunk", scale: float | None = None):
    """Gated linear attention: S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t, o_t = scale * q_t S_t.

    Args:
        q, k: (B, H, T, K); v: (B, H, T, V); all of one dtype (fp16 / bf16 / fp32 / fp64).
        g: (B, H, T, K) log forget gates (<= 0, e.g. ``logsigmoid(x) / 16``), any float dtype (fp32 recommended).
        initial_state: (B, H, K, V) or (1, H, K, V) (broadcast over the batch), any float dtype, computed in fp32;
            differentiable (initial-state tuning).
        output_final_state: also return the state after the last step, (B, H, K, V) fp32 (fp64 for fp64 inputs).
        mode: ``"chunk"`` (chunkwise-parallel, training / prefill) or ``"recurrent"`` (fused step-by-step loop,
            decoding). Same results; both backwards use the chunked kernels.
        scale: query scale, default K ** -0.5.

    Returns:
        (o (B, H, T, V) in q.dtype, final state or None).
    """
    _check("q", q, 4, "(B, H, T, K)")
    _check("k", k, 4, "(B, H, T, K)")
    _check("v", v, 4, "(B, H, T, V)")
    _check("g", g, 4, "(B, H, T, K)")
    if k.shape != q.shape:
        raise ValueError(f"k must have the shape of q {tuple(q.shape)}, got {tuple(k.shape)}")
    if g.shape != q.shape:
        raise ValueError(f"g must have the shape of q {tuple(q.shape)}, got {tuple(g.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape (B, H, T, V) with (B, H, T) = {tuple(q.shape[:3])}, got {tuple(v.shape)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    for name, t in (("k", k), ("v", v), ("g", g)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    b, h, t, kd = q.shape
    vd = v.shape[-1]
    if t == 0 or kd == 0 or vd == 0 or b == 0 or h == 0:
        raise ValueError(f"q and v must have non-empty B, H, T, K, V, got q {tuple(q.shape)}, v {tuple(v.shape)}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if scale is None:
        scale = kd ** -0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale):
        raise TypeError(f"scale must be a finite float or None, got {scale!r}")
    if not isinstance(output_final_state, bool):
        raise TypeError(f"output_final_state must be a bool, got {type(output_final_state).__name__}")
    if initial_state is not None:
        _check("initial_state", initial_state, 4, f"(B, H, K, V) = ({b}, {h}, {kd}, {vd})")
        if initial_state.shape[1:] != (h, kd, vd) or initial_state.shape[0] not in (1, b):
            raise ValueError(f"initial_state must have shape ({b} or 1, {h}, {kd}, {vd}), got "
                             f"{tuple(initial_state.shape)}")
        if initial_state.device != q.device:
            raise ValueError(f"initial_state is on {initial_state.device} but q is on {q.device}")
        initial_state = initial_state.to(_state_dtype(q)).expand(b, h, kd, vd).contiguous()
    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    if _exporting():
        o, s = gla_chunk_torch(q, k, v, g, initial_state, float(scale))
        s = s.to(_state_dtype(q))
    else:
        o, s = torch.ops.zoo.gla(q, k, v, g, initial_state, float(scale), mode == "recurrent")
    return o, (s if output_final_state else None)
