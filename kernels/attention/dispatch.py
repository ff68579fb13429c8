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

__all__ = ["case_key", "choose_backend", "table", "update_table"]

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
    ("*", "*", "*", "*", "*"): ("sdpa", "reference"),
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


def table() -> dict:
    """A copy of the dispatch table."""
    return dict(_TABLE)


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


def choose_backend(c: Case) -> str:
    """The backend ``auto`` uses for case ``c``."""
    if torch.compiler.is_compiling():  # Dynamo ignores (and warns about) lru_cache: trace the plain function
        return _choose.__wrapped__(c)
    return _choose(c)


@functools.lru_cache(maxsize=4096)
def _choose(c: Case) -> str:
    if c.exporting:
        return "sdpa" if unsupported_reason("sdpa", c) is None else "reference"
    key = case_key(c)
    rows = sorted((r for r in _TABLE if _matches(r, key)), key=_specificity, reverse=True)
    for r in rows:
        for b in _TABLE[r]:
            if unsupported_reason(b, c) is None:
                return b
    return "reference"


# Optional runtime override from a JSON file written by benchmarks/attention.py.
if os.environ.get("ZOO_ATTENTION_DISPATCH"):
    with open(os.environ["ZOO_ATTENTION_DISPATCH"]) as _f:
        update_table(json.load(_f).get("table", {}))
