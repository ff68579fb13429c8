"""``backend="auto"``: pick the fastest backend known to be correct for a case, from a small table.

Keys are ``(device, mask kind, dtype class, head-dim bucket, size bucket)``; ``"*"`` matches anything. The most
specific matching row wins; its backends are tried in order and the first one whose capability check passes
(:func:`~zoo.kernels.attention.backends.unsupported_reason`) is used, with ``reference`` as the last resort, so
``auto`` never picks a backend that cannot handle the case.

Filling the table: ``python benchmarks/attention.py --json dispatch.json`` prints, per benchmark row, which backend
won and the key it maps to; copy those rows into ``_TABLE`` (say which run filled them), or call
:func:`update_table` at runtime.
"""
from __future__ import annotations

import functools
import json
import os

import torch

from .backends import Case, unsupported_reason

__all__ = ["FLEX_SHAPE_BUDGET", "case_key", "choose_backend", "reset_flex_shape_budget", "table", "update_table"]

MASK_KINDS = ("none", "causal", "padding", "window", "varlen", "blocksparse")

# Filled from the H200 run of benchmarks/attention.py --quick on 2026-11-29 (bf16, torch 2.11.0+cu130, triton
# 3.6.0; docs/benchmarks/attention-h200.md). Dense and plain causal: SDPA (cuDNN) beats everything, ours included.
# Sliding window, limited context + key padding and varlen: compiled FlexAttention wins forward+backward (ours wins
# only the W2048 forward). Block-sparse chunk routing: ours 1.08x Flex forward, 0.98x forward+backward.
# On CPU, SDPA's fused CPU kernel takes a boolean mask and beats the reference math on every mask.
_TABLE: dict[tuple[str, str, str, str, str], tuple[str, ...]] = {
    ("cpu", "*", "*", "*", "*"): ("sdpa", "reference"),
    ("cuda", "none", "*", "*", "*"): ("sdpa", "triton", "flex"),
    ("cuda", "causal", "*", "*", "*"): ("sdpa", "triton", "flex"),
    ("cuda", "padding", "*", "*", "*"): ("flex", "triton", "sdpa"),
    ("cuda", "window", "*", "*", "*"): ("flex", "triton", "sdpa"),
    ("cuda", "varlen", "*", "*", "*"): ("flex", "triton", "sdpa"),
    ("cuda", "blocksparse", "*", "*", "*"): ("triton", "flex", "sdpa"),
    # fp32 on CUDA: our kernels then use IEEE-exact dots, which Triton builds from FMAs instead of tensor cores: slow
    # to run, and at the fast tiles 5-26 s of sm_90 compile per autotune config (benchmarks/triton_compile.py), which
    # stalled the transducer's fp32 GPU training in its first step (2026-11-29; fp32 now autotunes small tiles only).
    # SDPA's memory-efficient kernel takes fp32 with any boolean mask.
    ("cuda", "none", "fp32", "*", "*"): ("sdpa", "flex", "triton"),
    ("cuda", "causal", "fp32", "*", "*"): ("sdpa", "flex", "triton"),
    ("cuda", "padding", "fp32", "*", "*"): ("sdpa", "flex", "triton"),
    ("cuda", "window", "fp32", "*", "*"): ("sdpa", "flex", "triton"),
    ("cuda", "varlen", "fp32", "*", "*"): ("sdpa", "flex", "triton"),
    ("cuda", "blocksparse", "fp32", "*", "*"): ("flex", "sdpa", "triton"),
    # Full-size rows (H200, 2026-11-29, docs/benchmarks/attention-h200.md): varlen at N32768 (16 documents of 2048,
    # and ragged): ours 1.10x / 1.22x Flex forward, 0.99x / 1.12x forward+backward.
    ("cuda", "varlen", "bf16", "*", "large"): ("triton", "flex", "sdpa"),
    ("cuda", "varlen", "fp16", "*", "large"): ("triton", "flex", "sdpa"),
    ("*", "*", "*", "*", "*"): ("sdpa", "reference"),
}

# Consulted first when no gradient is needed (inference): rows where ours wins the forward but not the backward.
# Sliding window W512 / W2048 at N32768: ours 1.10x / 1.05x Flex forward (0.95x / 0.97x forward+backward).
_FORWARD_TABLE: dict[tuple[str, str, str, str, str], tuple[str, ...]] = {
    ("cuda", "window", "bf16", "*", "large"): ("triton", "flex", "sdpa"),
    ("cuda", "window", "fp16", "*", "large"): ("triton", "flex", "sdpa"),
}


def _dtype_class(dtype: torch.dtype) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}.get(dtype, "other")


def _hd_bucket(d: int) -> str:
    return "d<=64" if d <= 64 else ("d<=128" if d <= 128 else "d>128")


def _size_bucket(c: Case) -> str:
    work = c.batch * c.heads_q * c.nq * c.nk
    return "small" if work <= 2**26 else ("medium" if work <= 2**31 else "large")


def case_key(c: Case) -> tuple[str, str, str, str, str]:
    """The table key of a case: (device, mask kind, dtype class, head-dim bucket, size bucket)."""
    return (c.device.type, c.kind, _dtype_class(c.dtype), _hd_bucket(c.head_dim), _size_bucket(c))


def _matches(row, key) -> bool:
    return all(r == "*" or r == k for r, k in zip(row, key))


def _specificity(row) -> int:
    return sum(r != "*" for r in row)


def table(forward_only: bool = False) -> dict:
    """A copy of the dispatch table (or of the rows consulted first when no gradient is needed)."""
    return dict(_FORWARD_TABLE if forward_only else _TABLE)


def update_table(rows: dict) -> None:
    """Add or replace rows: ``{(device, kind, dtype, hd_bucket, size): [backends...]}`` or the JSON form
    ``{"device|kind|dtype|hd|size": [backends...]}`` emitted by ``benchmarks/attention.py``."""
    for key, val in rows.items():
        k = tuple(key.split("|")) if isinstance(key, str) else tuple(key)
        if len(k) != 5:
            raise ValueError(f"dispatch key must have 5 parts (device, kind, dtype, hd, size), got {key!r}")
        if isinstance(val, str):
            val = (val,)
        _TABLE[k] = tuple(val)
    _choose.cache_clear()
    _choose_without_flex.cache_clear()


# Compiled FlexAttention (and its compiled BlockMask) is specialised to one shape: every new (B, H, N) recompiles
# for seconds, and past Dynamo's recompile limit it silently runs eagerly, hundreds of times slower. Training on
# variable shapes (speech batches, tabular episodes) would hit that on every step, so ``auto`` gives Flex a budget
# of distinct shapes per process; shapes beyond it go to the next backend of the row (ours: one compile per
# head-dim / mask kind, any length).
FLEX_SHAPE_BUDGET = 4
_flex_shapes: set = set()


def choose_backend(c: Case) -> str:
    """The backend ``auto`` uses for case ``c``."""
    if torch.compiler.is_compiling():  # Dynamo ignores (and warns about) lru_cache: trace the plain function
        return _choose.__wrapped__(c)
    b = _choose(c)
    if b == "flex" and c.device.type == "cuda" and c not in _flex_shapes:
        if len(_flex_shapes) >= FLEX_SHAPE_BUDGET:
            return _choose_without_flex(c)
        _flex_shapes.add(c)
    return b


def reset_flex_shape_budget() -> None:
    """Forget the shapes counted against :data:`FLEX_SHAPE_BUDGET` (e.g. between benchmark rows)."""
    _flex_shapes.clear()


def _candidates(c: Case):
    if c.exporting:
        yield "sdpa"
        return
    key = case_key(c)
    tables = (_TABLE,) if c.needs_grad else (_FORWARD_TABLE, _TABLE)
    for t in tables:
        for r in sorted((r for r in t if _matches(r, key)), key=_specificity, reverse=True):
            yield from t[r]


@functools.lru_cache(maxsize=4096)
def _choose(c: Case) -> str:
    return next((b for b in _candidates(c) if unsupported_reason(b, c) is None), "reference")


@functools.lru_cache(maxsize=4096)
def _choose_without_flex(c: Case) -> str:
    return next((b for b in _candidates(c) if b != "flex" and unsupported_reason(b, c) is None), "reference")


# Optional runtime override from a JSON file written by benchmarks/attention.py.
if os.environ.get("ZOO_ATTENTION_DISPATCH"):
    with open(os.environ["ZOO_ATTENTION_DISPATCH"]) as _f:
        update_table(json.load(_f).get("table", {}))
