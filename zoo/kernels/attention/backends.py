"""The attention backends: ``sdpa``, ``flex``, ``triton`` and ``reference``.

Each backend is ``fn(q, k, v, spec, scale, return_lse, cache) -> o or (o, lse)`` and has a capability check
:func:`unsupported_reason` (``None`` when it can run the case) used by dispatch and by the public API's errors.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .masks import MaskSpec
from .op import interpreter_on, triton_attention, triton_available, triton_kernels
from .reference import reference_attention

__all__ = ["BACKENDS", "Case", "flex_attention_backend", "run_backend", "sdpa_attention", "unsupported_reason"]


@dataclass(frozen=True)
class Case:
    """What dispatch and the capability checks look at."""

    device: torch.device
    dtype: torch.dtype
    batch: int
    heads_q: int
    heads_kv: int
    nq: int
    nk: int
    head_dim: int
    head_dim_v: int
    kind: str  # MaskSpec.kind or "none"
    varlen: bool
    block_size: int
    return_lse: bool
    needs_grad: bool
    exporting: bool


# ----------------------------------------------------------------------------------------------------------- sdpa
SDPA_MAX_BATCH_HEADS = 65535


def sdpa_attention(q, k, v, spec: MaskSpec | None, scale: float, return_lse: bool = False, cache=None):
    """``F.scaled_dot_product_attention``: ``is_causal`` for a plain causal mask with Nq == Nk, else a dense
    boolean ``attn_mask``; rows that see no key are set to zero (SDPA returns NaN there)."""
    if return_lse:
        raise ValueError("backend='sdpa' cannot return the log-sum-exp; use backend='triton', 'flex' or 'reference'")
    gqa = q.shape[1] != k.shape[1]
    if spec is None:
        if q.is_cuda and q.shape[0] * q.shape[1] > SDPA_MAX_BATCH_HEADS:
            # CUDA SDPA kernels put batch x heads on one grid axis (65535 at most): run in batch slices
            step = max(1, SDPA_MAX_BATCH_HEADS // q.shape[1])
            return torch.cat([F.scaled_dot_product_attention(q[i:i + step], k[i:i + step], v[i:i + step], scale=scale,
                                                             enable_gqa=gqa) for i in range(0, q.shape[0], step)])
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    if spec.is_causal_only and q.shape[2] == k.shape[2]:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    m = spec.dense(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.device)
    nonempty = m.any(dim=-1, keepdim=True)
    # Open empty rows to every key so SDPA stays finite (forward and backward), then zero them: their output
    # gradient is then zero, so they contribute nothing to dq, dk, dv.
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=m | ~nonempty, scale=scale, enable_gqa=gqa)
    return torch.where(nonempty, o, torch.zeros((), dtype=o.dtype, device=o.device))


# ----------------------------------------------------------------------------------------------------------- flex
_compiled_flex = None
_SHARED_BLOCK_MASKS: dict = {}


def _flex_fn(device: torch.device):
    global _compiled_flex
    from torch.nn.attention.flex_attention import flex_attention

    if device.type != "cuda" or torch.compiler.is_compiling():
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


def flex_block_mask(spec: MaskSpec | None, q, k, cache: dict | None = None):
    """BlockMask for ``spec`` at q/k's shapes (cached in ``cache``, a dict owned by the user's mask object)."""
    if spec is None:
        return None
    key = ("flex_block_mask", q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], str(q.device))
    if not spec.tensors():  # tensor-free masks (causal / window) share one process-wide cache
        cache = _SHARED_BLOCK_MASKS
        key = key + (spec.causal, spec.window_left, spec.window_right)
    if cache is not None and key in cache:
        return cache[key]
    if cache is not None and len(cache) >= 32:  # shapes keep changing (e.g. varlen batches): start over
        cache.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bm = spec.block_mask(q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.device,
                             compile=q.device.type == "cuda" and not torch.compiler.is_compiling())
    if cache is not None:
        cache[key] = bm
    return bm


def flex_attention_backend(q, k, v, spec: MaskSpec | None, scale: float, return_lse: bool = False, cache=None):
    """FlexAttention with a BlockMask from the same mask (compiled on CUDA, eager elsewhere)."""
    bm = flex_block_mask(spec, q, k, cache)
    fn = _flex_fn(q.device)
    gqa = q.shape[1] != k.shape[1]
    if q.device.type == "cpu" and not torch.is_grad_enabled():
        q, k, v = q.detach(), k.detach(), v.detach()  # Flex refuses CPU inputs that require grad, even under no_grad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(q, k, v, block_mask=bm, scale=scale, enable_gqa=gqa, return_lse=return_lse)
    if return_lse:
        o, lse = out
        return o, (lse if q.dtype == torch.float64 else lse.float())
    return out


# ------------------------------------------------------------------------------------------------------ reference
def reference_backend(q, k, v, spec, scale, return_lse=False, cache=None):
    return reference_attention(q, k, v, spec, scale, return_lse)


def triton_backend(q, k, v, spec, scale, return_lse=False, cache=None):
    return triton_attention(q, k, v, spec, scale, return_lse)


BACKENDS = {
    "triton": triton_backend,
    "sdpa": sdpa_attention,
    "flex": flex_attention_backend,
    "reference": reference_backend,
}


def _triton_max_head_dim() -> int:
    """Largest head dim the kernels take (they pad any smaller dim to a power of two)."""
    try:
        from . import triton_common

        return int(getattr(triton_common, "MAX_HEAD_DIM", 256))
    except Exception:  # noqa: BLE001
        return 256


def unsupported_reason(backend: str, c: Case) -> str | None:
    """Why ``backend`` cannot run case ``c`` (a sentence), or None when it can."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; expected one of {sorted(BACKENDS)} or 'auto'"
    if c.exporting and backend in ("triton", "flex"):
        return "torch.export needs a pure-aten path (sdpa or reference)"
    if backend == "reference":
        return None
    if backend == "sdpa":
        if c.return_lse:
            return "SDPA does not return the log-sum-exp"
        return None
    if backend == "flex":
        if c.device.type == "cpu" and c.needs_grad:
            return "FlexAttention has no backward on CPU"
        if c.device.type not in ("cpu", "cuda"):
            return f"FlexAttention is not supported on {c.device.type}"
        if c.head_dim < 16:
            return f"FlexAttention needs head dim >= 16, got {c.head_dim}"
        return None
    if backend == "triton":
        if triton_kernels() is None:
            return "the Triton kernels (zoo/kernels/attention/triton_fwd.py, triton_bwd.py) are not importable"
        if not triton_available(c.device):
            if c.device.type == "cpu":
                return "Triton runs on CPU only under TRITON_INTERPRET=1 (set before triton is imported)"
            return f"Triton needs a CUDA device, got {c.device}"
        if c.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            return f"Triton kernels support float16, bfloat16 and float32, got {c.dtype}"
        if c.dtype == torch.bfloat16 and c.device.type == "cpu" and interpreter_on():
            return "bfloat16 is computed wrongly by the Triton interpreter (TRITON_INTERPRET=1)"
        mx = _triton_max_head_dim()
        for name, d in (("head dim of q/k", c.head_dim), ("head dim of v", c.head_dim_v)):
            if d > mx:
                return f"Triton kernels support head dims up to {mx}, got {name} = {d}"
        if c.kind == "blocksparse" and c.varlen:
            return "Triton kernels do not combine BlockSparse with Varlen"
        if c.kind == "blocksparse" and (c.block_size < 16 or c.block_size & (c.block_size - 1)):
            return f"Triton kernels need a block_size that is a power of two >= 16, got {c.block_size}"
        return None
    return None  # pragma: no cover


def run_backend(backend: str, q, k, v, spec, scale, return_lse=False, cache=None):
    return BACKENDS[backend](q, k, v, spec, scale, return_lse, cache)
