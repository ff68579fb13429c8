"""Reference RNN-T joint + loss: the joint materialised as (B, T, U+1, V) logits, then torchaudio's ``rnnt_loss``."""
from __future__ import annotations

import torch


def rnnt_joint_loss_reference(a: torch.Tensor, l: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                              targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
                              blank: int = 0, reduction: str = "mean") -> torch.Tensor:
    """``torchaudio.functional.rnnt_loss(tanh(a[:, :, None] + l[:, None]) @ weight.T + bias, ...)`` in fp32.

    a (B, T, J), l (B, U+1, J), weight (V, J), bias (V,) or None, targets (B, U), lengths (B,). Memory: the logits
    and torchaudio's saved gradient, 2 x B*T*(U+1)*V*4 bytes, plus the tanh activations (B, T, U+1, J).
    """
    import torchaudio

    h = torch.tanh(a.float()[:, :, None] + l.float()[:, None])
    logits = torch.nn.functional.linear(h, weight.float(), None if bias is None else bias.float())
    return torchaudio.functional.rnnt_loss(
        logits, targets.to(torch.int32).contiguous(), logit_lengths.to(torch.int32),
        target_lengths.to(torch.int32), blank=blank, reduction=reduction)
