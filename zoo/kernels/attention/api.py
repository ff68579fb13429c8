"""The public entry point :func:`attention`."""
from __future__ import annotations

import math

import torch

from .backends import BACKENDS, Case, run_backend, unsupported_reason
from .dispatch import choose_backend
from .masks import Mask, as_spec

__all__ = ["attention"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, t, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape_doc}, got {type(t).__name__}")
    if t.dim() != 4:
        raise ValueError(f"{name} must be 4-D {shape_doc}, got shape {tuple(t.shape)}")
    if t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def _exporting() -> bool:
    """True while torch.export traces. Not ``torch.compiler.is_exporting()``: Dynamo folds that to True under plain
    ``torch.compile`` as well (torch 2.11), which would hide the Triton op from compiled models."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else bool(flag)


def _mask_cache(mask) -> dict | None:
    if mask is None:
        return None
    c = getattr(mask, "_zoo_cache", None)
    if c is None:
        c = {}
        try:
            object.__setattr__(mask, "_zoo_cache", c)
        except (AttributeError, TypeError):
            return None
    return c


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: Mask | None = None,
    *,
    scale: float | None = None,
    backend: str = "auto",
    return_lse: bool = False,
):
    """Scaled dot-product attention with composable masks.

    Args:
        q: (B, Hq, Nq, D). k: (B, Hkv, Nk, D). v: (B, Hkv, Nk, Dv). Hq must be a multiple of Hkv (GQA / MQA).
            All float16, bfloat16, float32 (or float64: reference / sdpa only), one dtype and one device.
            Packed varlen batches (``Varlen`` mask): B = 1, Nq = total query tokens, Nk = total key tokens.
        mask: None (full attention) or ``Causal()``, ``SlidingWindow(l, r)``, ``KeyPadding(lengths)``,
            ``Varlen(...)``, ``BlockSparse(...)`` and their ``&`` intersections. Bottom-right aligned.
        scale: softmax scale, default ``1 / sqrt(D)``.
        backend: ``"auto"`` (table in ``dispatch.py``), ``"triton"``, ``"sdpa"``, ``"flex"`` or ``"reference"``.
            While ``torch.export`` traces, ``triton`` / ``flex`` / ``auto`` run the SDPA or reference math so the
            exported graph holds only aten ops.
        return_lse: also return the natural-log log-sum-exp of the scaled scores, (B, Hq, Nq) fp32 (``-inf`` on
            rows that see no key); differentiable.

    Returns:
        o (B, Hq, Nq, Dv) in q.dtype, or (o, lse) with ``return_lse``. Rows with no visible key are zero.
    """
    _check_tensor("q", q, "(B, Hq, Nq, D)")
    _check_tensor("k", k, "(B, Hkv, Nk, D)")
    _check_tensor("v", v, "(B, Hkv, Nk, Dv)")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}; q, k and v must share one dtype")
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; q, k and v must share one device")
    b, hq, nq, d = q.shape
    _, hkv, nk, dk = k.shape
    if k.shape[0] != b:
        raise ValueError(f"k must have batch {b} like q, got k.shape={tuple(k.shape)}")
    if dk != d:
        raise ValueError(f"k must have head dim {d} like q, got k.shape={tuple(k.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v must match k in (B, Hkv, Nk) = {tuple(k.shape[:3])}, got v.shape={tuple(v.shape)}")
    if hkv == 0 or hq % hkv != 0:
        raise ValueError(f"q has Hq={hq} heads, which must be a multiple of k's Hkv={hkv} heads (GQA/MQA)")
    if d == 0 or v.shape[-1] == 0:
        raise ValueError(f"head dims must be >= 1, got q/k D={d}, v Dv={v.shape[-1]}")
    if scale is None:
        scale = 1.0 / math.sqrt(d)
    elif isinstance(scale, torch.Tensor) or not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a Python float or None, got {type(scale).__name__}")
    elif not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    if not isinstance(backend, str) or (backend != "auto" and backend not in BACKENDS):
        raise ValueError(f"backend must be 'auto' or one of {sorted(BACKENDS)}, got {backend!r}")
    if not isinstance(return_lse, bool):
        raise TypeError(f"return_lse must be a bool, got {type(return_lse).__name__}")

    spec = as_spec(mask)
    if spec is not None:
        spec.validate(b, hq, hkv, nq, nk, q.device)

    exporting = _exporting()
    case = Case(
        device=q.device, dtype=q.dtype, batch=b, heads_q=hq, heads_kv=hkv, nq=nq, nk=nk, head_dim=d,
        head_dim_v=v.shape[-1], kind=spec.kind if spec is not None else "none",
        varlen=spec is not None and spec.is_varlen, block_size=spec.block_size if spec is not None else 0, return_lse=return_lse,
        needs_grad=torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad),
        exporting=exporting,
    )
    if backend == "auto" or (exporting and backend in ("triton", "flex")):
        chosen = choose_backend(case)
    else:
        chosen = backend
        why = unsupported_reason(chosen, case)
        if why is not None:
            raise ValueError(f"backend={backend!r} cannot run this case: {why}")
    cache = _mask_cache(mask) if chosen == "flex" else None
    return run_backend(chosen, q, k, v, spec, float(scale), return_lse, cache)
