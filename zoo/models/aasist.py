"""AASIST / AASIST-L (Jung et al., ICASSP 2022, arXiv:2110.01200) and Scalable AASIST (arXiv:2507.11777).

Speech anti-spoofing (countermeasure, CM) on raw 16 kHz waveforms. Every model here maps a batch of waveforms
``x (B, L) float32`` to ``(embedding (B, 160), logits (B, 2))``; class 1 is *bona fide*, class 0 *spoof*, and the
detection score used for EER / t-DCF is the raw bona-fide logit ``logits[:, 1]`` (higher = more likely human).

The file reads top-down: sinc front end, residual encoder, graph layers (GAT, HS-GAL, graph pooling), the AASIST
model, the Scalable-AASIST layers and model, configs, registry entries and the converter for the authors' ``.pth``.

AASIST is a re-implementation of clovaai/aasist ``models/AASIST.py`` (commit a04c986) that keeps the authors'
parameter names, so their released state dicts load strictly and reproduce their outputs (see
tests/models/test_aasist.py). Quirks of the original that are kept on purpose are marked ``QUIRK`` where they live.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.kernels import attention as zoo_attention
from zoo.kernels.attention.nn import MultiheadAttention
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "SincFilterBank",
    "ResidualBlock",
    "GraphAttentionLayer",
    "HtrgGraphAttentionLayer",
    "GraphPool",
    "AASIST",
    "ScalableAASIST",
    "sinc_band_pass",
    "convert_checkpoint",
    "aasist",
    "aasist_l",
    "aasist_scalable",
]

SAMPLE_RATE = 16000
NB_SAMP = 64600  # ~4.04 s at 16 kHz: the fixed input length every AASIST recipe crops / tiles to


# ----------------------------------------------------------------------------------------------------------------
# Front end: fixed sinc band-pass filter bank
# ----------------------------------------------------------------------------------------------------------------
def sinc_band_pass(out_channels: int = 70, kernel_size: int = 129, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """The fixed AASIST filter bank: ``out_channels`` band-pass filters of odd length ``kernel_size``.

    Band edges are equally spaced on the mel scale (mel = 2595 log10(1 + f / 700)) from 0 Hz to Nyquist; each
    filter is the difference of two ideal low-pass sincs times a Hamming window. Computed in float64 (as the
    authors do with numpy) and returned as float32, shape (out_channels, kernel_size).
    """
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    to_mel = lambda hz: 2595.0 * torch.log10(1.0 + hz / 700.0)  # noqa: E731
    to_hz = lambda mel: 700.0 * (10.0 ** (mel / 2595.0) - 1.0)  # noqa: E731
    nyq = torch.tensor(float(sample_rate // 2), dtype=torch.float64)
    edges = to_hz(torch.linspace(0.0, float(to_mel(nyq)), out_channels + 1, dtype=torch.float64))
    half = (kernel_size - 1) / 2
    t = torch.arange(-half, half + 1, dtype=torch.float64)  # (K,)
    f_lo, f_hi = edges[:-1, None], edges[1:, None]  # (C, 1)
    ideal = (2 * f_hi / sample_rate) * torch.sinc(2 * f_hi * t / sample_rate) - (2 * f_lo / sample_rate) * torch.sinc(
        2 * f_lo * t / sample_rate
    )
    window = torch.hamming_window(kernel_size, periodic=False, dtype=torch.float64)
    return (ideal * window).to(torch.float32)


class SincFilterBank(nn.Module):
    """Fixed (not learned) sinc convolution: (B, L) -> (B, out_channels, L - kernel_size + 1).

    The filters are a non-persistent buffer: they move with ``.to()`` but are not in the state dict, exactly like the
    authors' plain tensor attribute (their checkpoints have no ``conv_time`` keys). An even ``kernel_size`` is bumped
    to the next odd number (128 -> 129), as in the original.
    """

    def __init__(self, out_channels: int = 70, kernel_size: int = 128, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size = kernel_size + 1 if kernel_size % 2 == 0 else kernel_size
        self.register_buffer("band_pass", sinc_band_pass(out_channels, self.kernel_size, sample_rate), persistent=False)

    def forward(self, x: torch.Tensor, freq_mask: bool = False) -> torch.Tensor:
        filters = self.band_pass
        if freq_mask:
            # The authors' optional training augmentation ("freq_aug", off in their configs): zero a random run of
            # 0..19 consecutive filters.
            width = int(torch.randint(0, 20, ()).item())
            start = int(torch.randint(0, self.out_channels - width + 1, ()).item())
            keep = torch.ones(self.out_channels, 1, device=filters.device, dtype=filters.dtype)
            keep[start : start + width] = 0
            filters = filters * keep
        return F.conv1d(x.unsqueeze(1), filters.unsqueeze(1))


# ----------------------------------------------------------------------------------------------------------------
# Residual encoder
# ----------------------------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """AASIST residual block on (B, C_in, F, T) -> (B, C_out, F, T // 3).

    conv(2x3, pad (1,1)) -> BN -> SELU -> conv(2x3, pad (0,1)), plus a 1x3 conv shortcut when the channel count
    changes, then MaxPool(1, 3).

    QUIRK (kept): every block but the first owns a ``bn1`` that the authors compute and then discard (their
    ``conv1`` reads the raw input, not the pre-activation). It has no effect on the output; it is kept only so the
    released state dicts (which carry untrained ``bn1`` weight/bias and updated running stats) load strictly. We skip
    the dead computation, so ``bn1``'s running statistics no longer change during training — nothing reads them.
    """

    def __init__(self, in_ch: int, out_ch: int, first: bool = False, act: type[nn.Module] = nn.SELU,
                 pool: bool = True, fix_preact: bool = False):
        super().__init__()
        self.first = first
        self.fix_preact = fix_preact
        if not first:
            self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(2, 3), padding=(0, 1))
        self.act = act()
        self.conv_downsample = nn.Conv2d(in_ch, out_ch, kernel_size=(1, 3), padding=(0, 1)) if in_ch != out_ch else None
        self.mp = nn.MaxPool2d((1, 3)) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fix_preact and not self.first:  # Scalable AASIST fixes the bug: conv1 sees the pre-activation
            out = self.conv1(self.act(self.bn1(x)))
        else:
            out = self.conv1(x)
        out = self.conv2(self.act(self.bn2(out)))
        identity = self.conv_downsample(x) if self.conv_downsample is not None else x
        return self.mp(out + identity)


def _encoder(filts: list, **block_kw: Any) -> nn.Sequential:
    """Six residual blocks: filts[1], filts[2], filts[3], then filts[4] three times. Keys ``encoder.{i}.0.*``."""
    pairs = [filts[1], filts[2], filts[3], filts[4], filts[4], filts[4]]
    return nn.Sequential(
        *[nn.Sequential(ResidualBlock(int(a), int(b), first=(i == 0), **block_kw)) for i, (a, b) in enumerate(pairs)]
    )


# ----------------------------------------------------------------------------------------------------------------
# Graph layers
# ----------------------------------------------------------------------------------------------------------------
def _xavier_param(*size: int) -> nn.Parameter:
    p = nn.Parameter(torch.empty(*size))
    nn.init.xavier_normal_(p)
    return p


def _bn_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over all (batch, node) rows of x (B, N, D)."""
    return bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)


class GraphAttentionLayer(nn.Module):
    """Homogeneous graph attention (GAT-S / GAT-T): (B, N, in_dim) -> (B, N, out_dim).

    a_ij = softmax_j(w . tanh(W (x_i * x_j)) / temperature); out = SELU(BN(Lin(sum_j a_ij x_j) + Lin'(x_i))).
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0):
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = _xavier_param(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.act = nn.SELU()
        self.temp = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_drop(x)
        pair = torch.tanh(self.att_proj(x.unsqueeze(2) * x.unsqueeze(1)))  # (B, N, N, out)
        att = torch.softmax((pair @ self.att_weight).squeeze(-1) / self.temp, dim=-1)  # (B, N, N) over j
        x = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return self.act(_bn_nodes(self.bn, x))


class HtrgGraphAttentionLayer(nn.Module):
    """Heterogeneous stacking graph attention layer (HS-GAL) with a stack (master) node.

    x1 (B, N1, in_dim) temporal nodes, x2 (B, N2, in_dim) spectral nodes, master (B or 1, 1, in_dim) ->
    (x1' (B, N1, out_dim), x2' (B, N2, out_dim), master' (B, 1, out_dim)).

    Node types get their own input projection (``proj_type1`` for T, ``proj_type2`` for S). Pair scores use three
    vectors: ``att_weight11`` (T-T), ``att_weight22`` (S-S) and ``att_weight12``.
    QUIRK (kept): ``att_weight12`` is shared by both directions T->S and S->T (``att_weight21`` does not exist).
    The master node attends over all nodes with ``att_weightM`` and is updated without BN / activation.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0):
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_projM = nn.Linear(in_dim, out_dim)
        self.att_weight11 = _xavier_param(out_dim, 1)
        self.att_weight22 = _xavier_param(out_dim, 1)
        self.att_weight12 = _xavier_param(out_dim, 1)
        self.att_weightM = _xavier_param(out_dim, 1)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.input_drop = nn.Dropout(0.2)
        self.act = nn.SELU()
        self.temp = float(temperature)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor):
        n1, n2 = x1.shape[1], x2.shape[1]
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)
        x = self.input_drop(x)
        # Node-pair scores with the three type-pair vectors, selected blockwise (no in-place writes: exportable).
        pair = torch.tanh(self.att_proj(x.unsqueeze(2) * x.unsqueeze(1)))  # (B, N, N, out)
        w = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1)  # (out, 3)
        s = pair @ w  # (B, N, N, 3)
        is_t = torch.arange(n1 + n2, device=x.device) < n1
        same_t = is_t[:, None] & is_t[None, :]
        same_s = ~is_t[:, None] & ~is_t[None, :]
        score = torch.where(same_t, s[..., 0], torch.where(same_s, s[..., 1], s[..., 2]))
        att = torch.softmax(score / self.temp, dim=-1)  # (B, N, N) over j
        # Stack node: attention over all nodes conditioned on the master.
        m_score = torch.tanh(self.att_projM(x * master)) @ self.att_weightM  # (B, N, 1)
        m_att = torch.softmax(m_score / self.temp, dim=1)
        master = self.proj_with_attM(m_att.transpose(1, 2) @ x) + self.proj_without_attM(master)
        x = self.proj_with_att(att @ x) + self.proj_without_att(x)
        x = self.act(_bn_nodes(self.bn, x))
        return x[:, :n1], x[:, n1:], master


class GraphPool(nn.Module):
    """Graph pooling: keep the top ``max(int(N * ratio), 1)`` nodes by sigmoid(Linear(dropout(h))), each scaled by
    its score. (B, N, D) -> (B, k, D). The order of kept nodes is irrelevant downstream (permutation-equivariant
    layers, max/mean readout)."""

    def __init__(self, ratio: float, in_dim: int, p: float = 0.3):
        super().__init__()
        self.ratio = float(ratio)
        self.proj = nn.Linear(in_dim, 1)
        self.drop = nn.Dropout(p) if p > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # (B, N, 1)
        k = max(int(h.shape[1] * self.ratio), 1)
        idx = torch.topk(scores, k, dim=1).indices.expand(-1, -1, h.shape[-1])
        return torch.gather(h * scores, 1, idx)


# ----------------------------------------------------------------------------------------------------------------
# AASIST
# ----------------------------------------------------------------------------------------------------------------
class AASIST(nn.Module):
    """AASIST / AASIST-L: raw waveform (B, L) float32 at 16 kHz (L = 64600 in every recipe) ->
    (embedding (B, 5 * gat_dims[1]), logits (B, 2)); score = ``logits[:, 1]`` (bona fide).

    Args mirror the authors' ``model_config`` (config/AASIST.conf):
        nb_samp: nominal input length (informational; any length > first_conv + 9 * 3**5 works, 64600 is trained).
        first_conv: sinc filter length (forced odd: 128 -> 129).
        filts: [n_sinc, [in, out] x 4]; the last pair is reused for blocks 4-6.
        gat_dims: [GAT-S/T width, HS-GAL width].
        pool_ratios: [GAT-S pool, GAT-T pool, HS-GAL pools, unused].
        temperatures: [GAT-S, GAT-T, HS-GAL, unused].
        num_classes: 2 (spoof, bona fide).

    QUIRKS (kept): ``pool_ratios[3]`` and ``temperatures[3]`` are unused — all four HS-GAL layers use
    ``temperatures[2]`` and all four HS-GAL pools ``pool_ratios[2]``. ``pos_S`` is sized for 23 spectral nodes
    (70 sinc channels // 3).
    """

    def __init__(self, nb_samp: int = NB_SAMP, first_conv: int = 128,
                 filts: list | None = None, gat_dims: list | None = None,
                 pool_ratios: list | None = None, temperatures: list | None = None, num_classes: int = 2):
        super().__init__()
        filts = filts if filts is not None else [70, [1, 32], [32, 32], [32, 64], [64, 64]]
        gat_dims = gat_dims if gat_dims is not None else [64, 32]
        pool_ratios = pool_ratios if pool_ratios is not None else [0.5, 0.7, 0.5, 0.5]
        temperatures = temperatures if temperatures is not None else [2.0, 2.0, 100.0, 100.0]
        if len(filts) != 5 or not all(len(p) == 2 for p in filts[1:]):
            raise ValueError(f"filts must be [n_sinc, [in, out] x 4], got {filts}")
        if filts[1][0] != 1:
            raise ValueError(f"filts[1][0] must be 1 (the first block reads a 1-channel image), got {filts[1][0]}")
        if len(gat_dims) != 2 or len(pool_ratios) != 4 or len(temperatures) != 4:
            raise ValueError("gat_dims needs 2 values, pool_ratios and temperatures 4 each "
                             f"(got {gat_dims}, {pool_ratios}, {temperatures})")
        self.nb_samp = int(nb_samp)
        c = int(filts[-1][-1])
        d0, d1 = int(gat_dims[0]), int(gat_dims[1])
        self.embed_dim = 5 * d1

        self.conv_time = SincFilterBank(int(filts[0]), int(first_conv))
        self.first_bn = nn.BatchNorm2d(1)
        self.selu = nn.SELU()
        self.encoder = _encoder(filts)
        n_spec = int(filts[0]) // 3
        self.pos_S = nn.Parameter(torch.randn(1, n_spec, c))
        self.master1 = nn.Parameter(torch.randn(1, 1, d0))
        self.master2 = nn.Parameter(torch.randn(1, 1, d0))
        self.GAT_layer_S = GraphAttentionLayer(c, d0, temperature=temperatures[0])
        self.GAT_layer_T = GraphAttentionLayer(c, d0, temperature=temperatures[1])
        self.HtrgGAT_layer_ST11 = HtrgGraphAttentionLayer(d0, d1, temperature=temperatures[2])
        self.HtrgGAT_layer_ST12 = HtrgGraphAttentionLayer(d1, d1, temperature=temperatures[2])
        self.HtrgGAT_layer_ST21 = HtrgGraphAttentionLayer(d0, d1, temperature=temperatures[2])
        self.HtrgGAT_layer_ST22 = HtrgGraphAttentionLayer(d1, d1, temperature=temperatures[2])
        self.pool_S = GraphPool(pool_ratios[0], d0, 0.3)
        self.pool_T = GraphPool(pool_ratios[1], d0, 0.3)
        self.pool_hS1 = GraphPool(pool_ratios[2], d1, 0.3)
        self.pool_hT1 = GraphPool(pool_ratios[2], d1, 0.3)
        self.pool_hS2 = GraphPool(pool_ratios[2], d1, 0.3)
        self.pool_hT2 = GraphPool(pool_ratios[2], d1, 0.3)
        self.drop_way = nn.Dropout(0.2)
        self.drop = nn.Dropout(0.5)
        self.out_layer = nn.Linear(5 * d1, num_classes)

    def forward_features(self, x: torch.Tensor, freq_aug: bool = False) -> torch.Tensor:
        """Waveform (B, L) -> encoder output (B, C, 23, T') (T' = 29 for L = 64600)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, L), got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"x must be a batch of waveforms (B, L), got shape {tuple(x.shape)}")
        x = self.conv_time(x, freq_mask=freq_aug and self.training)  # (B, 70, L - 128)
        x = F.max_pool2d(x.unsqueeze(1).abs(), (3, 3), stride=(3, 3))  # (B, 1, 23, (L - 128) // 3)
        x = self.selu(self.first_bn(x))
        return self.encoder(x)

    def _branch(self, out_t, out_s, master, gal1, gal2, pool_s, pool_t):
        t1, s1, m1 = gal1(out_t, out_s, master)
        s1, t1 = pool_s(s1), pool_t(t1)
        t_aug, s_aug, m_aug = gal2(t1, s1, m1)
        return t1 + t_aug, s1 + s_aug, m1 + m_aug

    def forward(self, x: torch.Tensor, freq_aug: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L) float32 waveform -> (embedding (B, 160), logits (B, 2)). ``freq_aug`` (training only) masks a
        random run of sinc channels, the authors' optional augmentation."""
        e = self.forward_features(x, freq_aug)
        e_abs = e.abs()
        e_s = e_abs.amax(dim=3).transpose(1, 2) + self.pos_S  # spectral nodes (B, 23, C)
        out_s = self.pool_S(self.GAT_layer_S(e_s))
        e_t = e_abs.amax(dim=2).transpose(1, 2)  # temporal nodes (B, T', C)
        out_t = self.pool_T(self.GAT_layer_T(e_t))
        # The un-expanded (1, 1, D) masters broadcast over the batch (the authors' expanded copies are unused).
        t1, s1, m1 = self._branch(out_t, out_s, self.master1, self.HtrgGAT_layer_ST11, self.HtrgGAT_layer_ST12,
                                  self.pool_hS1, self.pool_hT1)
        t2, s2, m2 = self._branch(out_t, out_s, self.master2, self.HtrgGAT_layer_ST21, self.HtrgGAT_layer_ST22,
                                  self.pool_hS2, self.pool_hT2)
        d = self.drop_way
        out_t = torch.maximum(d(t1), d(t2))  # max graph operation
        out_s = torch.maximum(d(s1), d(s2))
        master = torch.maximum(d(m1), d(m2))
        hidden = _readout(out_t, out_s, master)
        hidden = self.drop(hidden)
        return hidden, self.out_layer(hidden)


def _readout(out_t: torch.Tensor, out_s: torch.Tensor, master: torch.Tensor) -> torch.Tensor:
    """[max|T|, mean T, max|S|, mean S, master] -> (B, 5 * D)."""
    return torch.cat(
        [out_t.abs().amax(dim=1), out_t.mean(dim=1), out_s.abs().amax(dim=1), out_s.mean(dim=1), master.squeeze(1)],
        dim=1,
    )


# ----------------------------------------------------------------------------------------------------------------
# Scalable AASIST (arXiv:2507.11777)
# ----------------------------------------------------------------------------------------------------------------
class _MHA(MultiheadAttention):
    """The attention layer's ``MultiheadAttention`` plus output dropout: query (B, Nq, D), key/value (B, Nk, D) ->
    (B, Nq, D). Parameters ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__(dim, num_heads)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor | None = None) -> torch.Tensor:
        return self.drop(super().forward(q, kv))


def _heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, n, d = x.shape
    return x.reshape(b, n, h, d // h).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class MHAGraphLayer(nn.Module):
    """GAT-S / GAT-T of Scalable AASIST: multi-head self-attention over nodes, then
    GELU(BN(Lin(attn) + Lin'(x))). (B, N, in_dim) -> (B, N, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, num_heads: int = 4, dropout: float = 0.2):
        super().__init__()
        self.attn = _MHA(in_dim, num_heads, dropout)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_with_att(self.attn(x)) + self.proj_without_att(x)
        return self.act(_bn_nodes(self.bn, x))


class HeteroMHAGraphLayer(nn.Module):
    """HS-GAL of Scalable AASIST: multi-head attention with node-type-specific query (and key) projections —
    ``to_q1`` / ``to_k1`` for temporal nodes, ``to_q2`` / ``to_k2`` for spectral nodes, shared ``to_v`` — and a
    stack node updated by multi-head cross-attention (query = master, keys/values = all nodes).

    x1 (B, N1, in_dim), x2 (B, N2, in_dim), master (B or 1, 1, in_dim) -> (B, N1, out), (B, N2, out), (B, 1, out).
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int = 4, dropout: float = 0.2):
        super().__init__()
        if in_dim % num_heads:
            raise ValueError(f"in_dim={in_dim} must be divisible by num_heads={num_heads}")
        self.h = num_heads
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.to_q1 = nn.Linear(in_dim, in_dim)
        self.to_q2 = nn.Linear(in_dim, in_dim)
        self.to_k1 = nn.Linear(in_dim, in_dim)
        self.to_k2 = nn.Linear(in_dim, in_dim)
        self.to_v = nn.Linear(in_dim, in_dim)
        self.to_out = nn.Linear(in_dim, in_dim)
        self.master_attn = _MHA(in_dim, num_heads, dropout)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_attM = nn.Linear(in_dim, out_dim)
        self.proj_without_attM = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.drop = nn.Dropout(dropout)
        self.act = nn.GELU()

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor):
        n1 = x1.shape[1]
        x1, x2 = self.proj_type1(x1), self.proj_type2(x2)
        x = torch.cat([x1, x2], dim=1)
        q = torch.cat([self.to_q1(x1), self.to_q2(x2)], dim=1)
        k = torch.cat([self.to_k1(x1), self.to_k2(x2)], dim=1)
        o = zoo_attention(_heads(q, self.h), _heads(k, self.h), _heads(self.to_v(x), self.h))
        att = self.drop(self.to_out(_merge(o)))
        master = master.expand(x.shape[0], -1, -1)
        master = self.proj_with_attM(self.master_attn(master, x)) + self.proj_without_attM(master)
        x = self.act(_bn_nodes(self.bn, self.proj_with_att(att) + self.proj_without_att(x)))
        return x[:, :n1], x[:, n1:], master


class AttentionFusion(nn.Module):
    """Context-aware integration replacing AASIST's element-wise max: concatenate the two branches along the node
    axis, multi-head self-attention, residual, LayerNorm. (B, N_a, D), (B, N_b, D) -> (B, N_a + N_b, D)."""

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.2):
        super().__init__()
        self.attn = _MHA(dim, num_heads, dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat([a, b], dim=1)
        return self.norm(x + self.attn(x))


# torchaudio.models.wav2vec2_model arguments. "xlsr_300m" = the XLS-R 300M architecture (24 layers, width 1024) the
# paper freezes; "small" = a 4-layer width-256 encoder with a narrow conv extractor (same 320x stride: 201 frames
# for 64600 samples) for tests and CPU experiments.
_SSL_CONFIGS: dict[str, dict[str, Any]] = {
    "xlsr_300m": dict(
        extractor_mode="layer_norm", extractor_conv_layer_config=None, extractor_conv_bias=True,
        encoder_embed_dim=1024, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=128,
        encoder_pos_conv_groups=16, encoder_num_layers=24, encoder_num_heads=16, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=4096, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=True, encoder_layer_drop=0.0, aux_num_out=None,
    ),
    "small": dict(
        extractor_mode="layer_norm",
        extractor_conv_layer_config=[(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2,
        extractor_conv_bias=True, encoder_embed_dim=256, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=32,
        encoder_pos_conv_groups=8, encoder_num_layers=4, encoder_num_heads=4, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=1024, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=True, encoder_layer_drop=0.0, aux_num_out=None,
    ),
}


class ScalableAASIST(nn.Module):
    """Scalable AASIST (Viakhirev et al., arXiv:2507.11777): frozen SSL (wav2vec 2.0 / XLS-R) front end + AASIST
    graph back end with multi-head attention and attention fusion. Waveform (B, L) float32 16 kHz ->
    (embedding (B, 5 * gat_dims[1]), logits (B, 2)); score = ``logits[:, 1]``.

    Args:
        ssl: ``"xlsr_300m"`` (paper) or ``"small"``; or a dict of ``torchaudio.models.wav2vec2_model`` arguments.
        proj_dim: width of the linear projection of SSL features (128 -> 42 spectral nodes after 3x3 pooling).
        filts: residual block channel pairs (4 pairs; the last one is reused for blocks 4-6).
        gat_dims, pool_ratios, num_heads, dropout: back-end widths, pooling ratios [S, T, HS-GAL], heads.
        normalize_waveform: per-utterance zero-mean / unit-variance input, as XLS-R was pre-trained.
        freeze_ssl: keep the front end frozen (``requires_grad=False`` and always in eval mode).

    The front end starts from random init; ``load_ssl_state_dict`` loads a torchaudio-layout wav2vec2 state dict
    (e.g. fetched by ``AntiSpoofingTask(ssl_weights=...)`` from a hub id). Differences from the authors' code:
    multi-head attention runs through ``zoo.kernels.attention`` (exportable); no forced ``.eval()`` inside forward.
    """

    def __init__(self, ssl: str | dict = "small", proj_dim: int = 128,
                 filts: list | None = None, gat_dims: list | None = None, pool_ratios: list | None = None,
                 num_heads: int = 4, dropout: float = 0.2, normalize_waveform: bool = True, freeze_ssl: bool = True,
                 num_classes: int = 2):
        super().__init__()
        from torchaudio.models import wav2vec2_model

        if isinstance(ssl, str):
            if ssl not in _SSL_CONFIGS:
                raise ValueError(f"ssl must be one of {sorted(_SSL_CONFIGS)} or a dict of wav2vec2_model args, got {ssl!r}")
            ssl_args = dict(_SSL_CONFIGS[ssl])
        elif isinstance(ssl, dict):
            ssl_args = dict(ssl)
        else:
            raise TypeError(f"ssl must be a config name or a dict, got {type(ssl).__name__}")
        filts = filts if filts is not None else [[1, 32], [32, 32], [32, 64], [64, 64]]
        gat_dims = gat_dims if gat_dims is not None else [64, 32]
        pool_ratios = pool_ratios if pool_ratios is not None else [0.5, 0.5, 0.5]
        if len(filts) != 4 or len(gat_dims) != 2 or len(pool_ratios) != 3:
            raise ValueError(f"need 4 filts pairs, 2 gat_dims, 3 pool_ratios; got {filts}, {gat_dims}, {pool_ratios}")
        self.ssl = wav2vec2_model(**ssl_args)
        self.freeze_ssl = bool(freeze_ssl)
        self.normalize_waveform = bool(normalize_waveform)
        if self.freeze_ssl:
            self.ssl.requires_grad_(False)
            self.ssl.eval()
        ssl_dim = int(ssl_args["encoder_embed_dim"])
        c = int(filts[-1][-1])
        d0, d1 = int(gat_dims[0]), int(gat_dims[1])
        n_spec = proj_dim // 3
        self.embed_dim = 5 * d1
        self.feature_proj = nn.Linear(ssl_dim, proj_dim)
        self.first_bn = nn.BatchNorm2d(1)
        self.act = nn.GELU()
        self.encoder = _encoder([None, *filts], act=nn.GELU, pool=False, fix_preact=True)
        self.post_encoder_bn = nn.BatchNorm2d(c)
        self.node_attention = nn.Sequential(
            nn.Conv2d(c, 2 * c, 1), nn.GELU(), nn.BatchNorm2d(2 * c), nn.Conv2d(2 * c, c, 1)
        )
        self.pos_S = nn.Parameter(torch.randn(1, n_spec, c))
        self.masters = nn.Parameter(torch.randn(2, 1, 1, d0))
        self.GAT_layer_S = MHAGraphLayer(c, d0, num_heads, dropout)
        self.GAT_layer_T = MHAGraphLayer(c, d0, num_heads, dropout)
        self.pool_S = GraphPool(pool_ratios[0], d0, 0.3)
        self.pool_T = GraphPool(pool_ratios[1], d0, 0.3)
        self.hgat1 = nn.ModuleList([HeteroMHAGraphLayer(d0, d1, num_heads, dropout) for _ in range(2)])
        self.hgat2 = nn.ModuleList([HeteroMHAGraphLayer(d1, d1, num_heads, dropout) for _ in range(2)])
        self.pool_hS = nn.ModuleList([GraphPool(pool_ratios[2], d1, 0.3) for _ in range(2)])
        self.pool_hT = nn.ModuleList([GraphPool(pool_ratios[2], d1, 0.3) for _ in range(2)])
        self.fuse_T = AttentionFusion(d1, num_heads, dropout)
        self.fuse_S = AttentionFusion(d1, num_heads, dropout)
        self.fuse_M = AttentionFusion(d1, num_heads, dropout)
        self.drop = nn.Dropout(0.5)
        self.out_layer = nn.Linear(5 * d1, num_classes)

    def train(self, mode: bool = True):
        """As ``nn.Module.train``, but a frozen SSL front end stays in eval mode (no dropout / layer drop)."""
        super().train(mode)
        if self.freeze_ssl:
            self.ssl.eval()
        return self

    def load_ssl_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Strictly load a torchaudio ``Wav2Vec2Model`` state dict into the front end."""
        self.ssl.load_state_dict(state_dict, strict=True)

    def trainable_parameters(self) -> int:
        """Number of trainable parameters (the back end when the front end is frozen)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L) float32 waveform -> (embedding (B, 160), logits (B, 2))."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2:
            raise ValueError(f"x must be a batch of waveforms (B, L), got {getattr(x, 'shape', type(x))}")
        if self.normalize_waveform:
            x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + 1e-7)
        feats, _ = self.ssl(x)  # (B, frames, ssl_dim); frozen params -> no graph through the front end
        if self.freeze_ssl:
            feats = feats.detach()
        e = self.feature_proj(feats).transpose(1, 2).unsqueeze(1)  # (B, 1, proj_dim, frames)
        e = self.act(self.first_bn(F.max_pool2d(e, (3, 3), stride=(3, 3))))  # (B, 1, proj_dim // 3, frames // 3)
        e = self.act(self.post_encoder_bn(self.encoder(e)))  # (B, C, F, T)
        w = self.node_attention(e)
        e_s = (e * torch.softmax(w, dim=3)).sum(dim=3).transpose(1, 2) + self.pos_S  # (B, F, C)
        e_t = (e * torch.softmax(w, dim=2)).sum(dim=2).transpose(1, 2)  # (B, T, C)
        out_s = self.pool_S(self.GAT_layer_S(e_s))
        out_t = self.pool_T(self.GAT_layer_T(e_t))
        ts, ss, ms = [], [], []
        for i in range(2):
            t, s, m = self.hgat1[i](out_t, out_s, self.masters[i])
            s, t = self.pool_hS[i](s), self.pool_hT[i](t)
            t_aug, s_aug, m_aug = self.hgat2[i](t, s, m)
            ts.append(t + t_aug)
            ss.append(s + s_aug)
            ms.append(m + m_aug)
        out_t = self.fuse_T(ts[0], ts[1])
        out_s = self.fuse_S(ss[0], ss[1])
        master = self.fuse_M(ms[0], ms[1]).mean(dim=1, keepdim=True)
        hidden = self.drop(_readout(out_t, out_s, master))
        return hidden, self.out_layer(hidden)


# ----------------------------------------------------------------------------------------------------------------
# Configs and registry
# ----------------------------------------------------------------------------------------------------------------
_VARIANTS: dict[str, dict[str, Any]] = {
    # config/AASIST.conf
    "aasist": dict(nb_samp=64600, first_conv=128, filts=[70, [1, 32], [32, 32], [32, 64], [64, 64]],
                   gat_dims=[64, 32], pool_ratios=[0.5, 0.7, 0.5, 0.5], temperatures=[2.0, 2.0, 100.0, 100.0]),
    # config/AASIST-L.conf
    "aasist_l": dict(nb_samp=64600, first_conv=128, filts=[70, [1, 32], [32, 32], [32, 24], [24, 24]],
                     gat_dims=[24, 32], pool_ratios=[0.4, 0.5, 0.7, 0.5], temperatures=[2.0, 2.0, 100.0, 100.0]),
}
_SCALABLE_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": dict(ssl="xlsr_300m"),
    "small": dict(ssl="small"),
}

_CITATION = """@inproceedings{jung2022aasist,
  title={{AASIST}: Audio Anti-Spoofing using Integrated Spectro-Temporal Graph Attention Networks},
  author={Jung, Jee-weon and Heo, Hee-Soo and Tak, Hemlata and Shim, Hye-jin and Chung, Joon Son and
          Lee, Bong-Jin and Yu, Ha-Jin and Evans, Nicholas},
  booktitle={Proc. ICASSP}, year={2022}}"""
_CITATION_SCALABLE = """@article{viakhirev2025scalable,
  title={Towards Scalable {AASIST}: Refining Graph Attention for Speech Deepfake Detection},
  author={Viakhirev, Ivan and Sirota, Daniil and Smirnov, Aleksandr and Borodin, Kirill},
  journal={arXiv preprint arXiv:2507.11777}, year={2025}}"""
_INPUT_SPEC = {"shape": (64600,), "dtype": "float32", "sample_rate": 16000,
               "note": "mono waveform in [-1, 1]; shorter clips are tiled (repeated) to 64600 samples"}
_TITLE = "AASIST: Audio Anti-Spoofing using Integrated Spectro-Temporal Graph Attention Networks"
_ASV19 = "ASVspoof 2019 LA"


@register_model(
    paper="arXiv:2110.01200", title=_TITLE, task="audio-anti-spoofing", license="mit", input_spec=_INPUT_SPEC,
    citation=_CITATION,
    pretrained={"asvspoof2019": PretrainedSource(
        repo_id="zoo-models/aasist.asvspoof2019", dataset=_ASV19,
        sha256="25a8ff281552f47e4edb8dbe26086586cf865c2c3ed394e23f57fe0087306604",
        metrics={"eer": 0.83, "min_tdcf": 0.0275})},
)
def aasist(**kwargs: Any) -> AASIST:
    """AASIST (297,866 params). Waveform (B, 64600) -> (embedding (B, 160), logits (B, 2)). kwargs override the
    authors' config/AASIST.conf values."""
    return AASIST(**{**_VARIANTS["aasist"], **kwargs})


@register_model(
    paper="arXiv:2110.01200", title=_TITLE + " (AASIST-L)", task="audio-anti-spoofing", license="mit",
    input_spec=_INPUT_SPEC, citation=_CITATION,
    pretrained={
        "asvspoof2019": PretrainedSource(
            repo_id="zoo-models/aasist_l.asvspoof2019", dataset=_ASV19,
            sha256="f9668ea930426eae3aec4ef345bd16c60c17f5c10be5409c8847e24f518acd08",
            metrics={"eer": 0.99, "min_tdcf": 0.0309}),
        # Trained by the zoo on the offline spoof_speech task (`python -m zoo.datasets.spoof_speech prepare`), not on
        # ASVspoof: EER 0.88 % on its eval split (119 bona fide / 218 spoof clips). Caveats are on the card.
        "spoof_speech": PretrainedSource(
            repo_id="zoo-models/aasist_l.spoof_speech", dataset="spoof_speech",
            sha256="a570b6b592b88f344c0875ecd067a42e63969f652beca794d7935905acdf1e4c",
            metrics={"eer": 0.88}),
    },
    default_tag="asvspoof2019",
)
def aasist_l(**kwargs: Any) -> AASIST:
    """AASIST-L (85,306 params), the light variant. Waveform (B, 64600) -> (embedding (B, 160), logits (B, 2))."""
    return AASIST(**{**_VARIANTS["aasist_l"], **kwargs})


@register_model(
    paper="arXiv:2507.11777", title="Towards Scalable AASIST: Refining Graph Attention for Speech Deepfake Detection",
    task="audio-anti-spoofing", license="mit", input_spec=_INPUT_SPEC, citation=_CITATION_SCALABLE,
)
def aasist_scalable(variant: str = "paper", **kwargs: Any) -> ScalableAASIST:
    """Scalable AASIST. ``variant="paper"`` = frozen XLS-R-300M-sized wav2vec2 front end (~316M frozen params,
    random init unless loaded), ``"small"`` = a 4-layer front end for tests / CPU. Waveform (B, 64600) ->
    (embedding (B, 160), logits (B, 2))."""
    if variant not in _SCALABLE_VARIANTS:
        raise ValueError(f"variant must be one of {sorted(_SCALABLE_VARIANTS)}, got {variant!r}")
    return ScalableAASIST(**{**_SCALABLE_VARIANTS[variant], **kwargs})


# ----------------------------------------------------------------------------------------------------------------
# Converter from the authors' checkpoint
# ----------------------------------------------------------------------------------------------------------------
def convert_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load the authors' ``AASIST.pth`` / ``AASIST-L.pth`` (a plain state dict saved from CUDA) into a CPU state
    dict for :class:`AASIST` (keys are identical; a ``module.`` DataParallel prefix is stripped). Loads with
    ``weights_only=True``; the fixed sinc filters are not part of it."""
    sd = torch.load(str(path), weights_only=True, map_location="cpu")
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (the authors' released format)")
    return {(k[len("module."):] if k.startswith("module.") else k): v.contiguous() for k, v in sd.items()}
