"""Log-sum-exp merge of two partial attentions over disjoint key sets."""
from __future__ import annotations

import torch

__all__ = ["merge_attention"]


def merge_attention(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor):
    """Merge attention over key set A (o1, lse1) and over a disjoint key set B (o2, lse2) into attention over A ∪ B.

    o1, o2: (..., N, Dv), any float dtype; lse1, lse2: (..., N) natural-log log-sum-exp of the scaled scores,
    ``-inf`` where the row saw no key (its o is then ignored). Returns (o (..., N, Dv) fp32, lse (..., N) fp32);
    a row empty in both stays zero with lse ``-inf``. Pure and differentiable.
    """
    if o1.shape != o2.shape:
        raise ValueError(f"o1 and o2 must have one shape, got {tuple(o1.shape)} and {tuple(o2.shape)}")
    if lse1.shape != o1.shape[:-1] or lse2.shape != o1.shape[:-1]:
        raise ValueError(
            f"lse1/lse2 must have shape o.shape[:-1]={tuple(o1.shape[:-1])}, got {tuple(lse1.shape)} and "
            f"{tuple(lse2.shape)}"
        )
    l1, l2 = lse1.float(), lse2.float()
    lse = torch.logaddexp(l1, l2)
    empty = torch.isneginf(lse)
    safe = torch.where(empty, torch.zeros_like(lse), lse)
    w1 = torch.where(torch.isneginf(l1), torch.zeros_like(l1), torch.exp(l1 - safe))
    w2 = torch.where(torch.isneginf(l2), torch.zeros_like(l2), torch.exp(l2 - safe))
    o = w1.unsqueeze(-1) * o1.float() + w2.unsqueeze(-1) * o2.float()
    return o, lse
