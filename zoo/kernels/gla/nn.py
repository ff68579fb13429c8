"""``GatedLinearAttention``: the GLA token mixer (GLA paper, arXiv 2312.06635; layout of fla's ``GatedLinearAttention``
layer as used by Lina-Speech) around :func:`zoo.kernels.gla.gla`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .op import gla

__all__ = ["GatedLinearAttention"]


class GatedLinearAttention(nn.Module):
    """GLA layer: q/k/v projections, low-rank per-key-channel forget gate ``logsigmoid(gk) / gate_logit_normalizer``,
    recurrence via :func:`gla`, per-head norm times a swish output gate, output projection.

    Args:
        dim: model width. num_heads: heads; key_dim = dim * expand_k and value_dim = dim * expand_v must divide by it.
        gate_low_rank_dim: rank of the gate projection (dim -> r -> key_dim, the second with bias).
        gate_logit_normalizer: divides the log gate (16 in GLA / Lina-Speech); ``clamp_min``: optional lower bound.
        use_output_gate: swish output gate ``g_proj`` (else the norm output goes straight to ``o_proj``).
        norm: ``"rms"`` (per-head RMSNorm, weight shared by heads, as fla) or ``"group"`` (GroupNorm, one group per
            head, as the GLA paper).
        learnable_initial_state: adds a learned S0 (1, H, K, V) used when no state is passed (initial-state tuning);
            ``initial_state_rank`` r > 0 parameterises it as sum_r k_r (x) v_r (Lina-Speech: r = 1), None = full.
        mode: default kernel mode, ``"chunk"`` or ``"recurrent"``.

    Parameters: ``q_proj``, ``k_proj``, ``v_proj``, ``g_proj``, ``gk_proj`` (Sequential of two Linear), ``o_proj``,
    ``norm_weight`` (+ ``norm_bias`` for ``"group"``), and ``initial_state_param`` or ``initial_state_k/_v``.
    """

    def __init__(self, dim: int, num_heads: int, expand_k: float = 0.5, expand_v: float = 1.0,
                 gate_low_rank_dim: int = 16, gate_logit_normalizer: float = 16, clamp_min: float | None = None,
                 use_output_gate: bool = True, norm: str = "rms", norm_eps: float = 1e-5,
                 learnable_initial_state: bool = False, initial_state_rank: int | None = None,
                 initial_state_scale: float = 0.02, mode: str = "chunk"):
        super().__init__()
        key_dim, value_dim = int(dim * expand_k), int(dim * expand_v)
        if dim <= 0 or num_heads <= 0 or key_dim % num_heads or value_dim % num_heads or key_dim == 0:
            raise ValueError(f"dim * expand_k = {key_dim} and dim * expand_v = {value_dim} must be positive multiples "
                             f"of num_heads = {num_heads}")
        if norm not in ("rms", "group"):
            raise ValueError(f"norm must be 'rms' or 'group', got {norm!r}")
        if mode not in ("chunk", "recurrent"):
            raise ValueError(f"mode must be 'chunk' or 'recurrent', got {mode!r}")
        if gate_low_rank_dim <= 0 or gate_logit_normalizer <= 0:
            raise ValueError("gate_low_rank_dim and gate_logit_normalizer must be positive")
        if initial_state_rank is not None and initial_state_rank <= 0:
            raise ValueError(f"initial_state_rank must be a positive int or None, got {initial_state_rank}")
        self.dim, self.num_heads, self.key_dim, self.value_dim = dim, num_heads, key_dim, value_dim
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.gate_logit_normalizer, self.clamp_min = float(gate_logit_normalizer), clamp_min
        self.use_output_gate, self.norm, self.norm_eps, self.mode = use_output_gate, norm, norm_eps, mode
        self.q_proj = nn.Linear(dim, key_dim, bias=False)
        self.k_proj = nn.Linear(dim, key_dim, bias=False)
        self.v_proj = nn.Linear(dim, value_dim, bias=False)
        self.g_proj = nn.Linear(dim, value_dim, bias=False) if use_output_gate else None
        self.gk_proj = nn.Sequential(nn.Linear(dim, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, key_dim, bias=True))
        self.o_proj = nn.Linear(value_dim, dim, bias=False)
        nw = self.head_v_dim if norm == "rms" else value_dim
        self.norm_weight = nn.Parameter(torch.ones(nw))
        self.norm_bias = nn.Parameter(torch.zeros(value_dim)) if norm == "group" else None
        self.learnable_initial_state, self.initial_state_rank = learnable_initial_state, initial_state_rank
        hk, hv = self.head_k_dim, self.head_v_dim
        if learnable_initial_state and initial_state_rank is None:
            self.initial_state_param = nn.Parameter(torch.randn(1, num_heads, hk, hv) * initial_state_scale)
        elif learnable_initial_state:
            self.initial_state_k = nn.Parameter(torch.randn(initial_state_rank, num_heads, hk))
            self.initial_state_v = nn.Parameter(torch.randn(initial_state_rank, num_heads, hv) * initial_state_scale)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=2 ** -2.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def learned_initial_state(self) -> torch.Tensor | None:
        """The learned S0, (1, H, K, V) fp32, or None without ``learnable_initial_state``."""
        if not self.learnable_initial_state:
            return None
        if self.initial_state_rank is None:
            return self.initial_state_param.float()
        return torch.einsum("rhk,rhv->hkv", self.initial_state_k.float(), self.initial_state_v.float())[None]

    def forward(self, x: torch.Tensor, initial_state: torch.Tensor | None = None, output_final_state: bool = False,
                mode: str | None = None):
        """x (B, T, dim); initial_state (B or 1, H, K, V) (default: the learned one, else zeros).
        Returns y (B, T, dim), or (y, final state (B, H, K, V) fp32) with ``output_final_state``."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, T, {self.dim}), got {tuple(x.shape)}")
        b, t, _ = x.shape
        h = self.num_heads

        def heads(y, d):
            return y.view(b, t, h, d).transpose(1, 2)

        q = heads(self.q_proj(x), self.head_k_dim)
        k = heads(self.k_proj(x), self.head_k_dim)
        v = heads(self.v_proj(x), self.head_v_dim)
        gk = F.logsigmoid(self.gk_proj(x).float()) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        gk = heads(gk, self.head_k_dim)
        if initial_state is None:
            initial_state = self.learned_initial_state()
        o, state = gla(q, k, v, gk, initial_state=initial_state, output_final_state=output_final_state,
                       mode=mode or self.mode)
        o = o.transpose(1, 2)  # (B, T, H, Vh)
        if self.norm == "rms":
            of = o.float()
            o = (of * torch.rsqrt(of.pow(2).mean(-1, keepdim=True) + self.norm_eps)).to(o.dtype) * self.norm_weight
            o = o.reshape(b, t, self.value_dim)
        else:
            o = F.group_norm(o.reshape(b * t, self.value_dim), h, self.norm_weight, self.norm_bias, self.norm_eps)
            o = o.view(b, t, self.value_dim)
        if self.g_proj is not None:
            o = o * F.silu(self.g_proj(x))
        y = self.o_proj(o)
        return (y, state) if output_final_state else y

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, num_heads={self.num_heads}, key_dim={self.key_dim}, value_dim={self.value_dim}, "
                f"norm={self.norm!r}, learnable_initial_state={self.learnable_initial_state}, mode={self.mode!r}")
