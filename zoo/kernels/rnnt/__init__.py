"""Fused RNN-T joint + loss (Triton; docs/kernels/rnnt.md): ``fused_rnnt_loss`` and its torchaudio reference."""
from .fused import fused_rnnt_loss, lattice_posteriors  # noqa: F401
from .reference import rnnt_joint_loss_reference  # noqa: F401

__all__ = ["fused_rnnt_loss", "lattice_posteriors", "rnnt_joint_loss_reference"]
