"""WavTokenizer (Ji et al., arXiv:2408.16532): the single-codebook speech codec of the released Lina-Speech models.

The released Lina-Speech checkpoint uses the "medium-speech-75token" variant (HF
``novateur/WavTokenizer-medium-speech-75token``, file ``wavtokenizer_medium_speech_320_24k.ckpt``, config
``wavtokenizer_mediumdata_frame75_3s_nq1_code4096_dim512_kmeans200_attn.yaml``): 24 kHz mono, hop 320 -> 75 tokens
per second, one codebook of 4096 codes of dimension 512.

    codec = WavTokenizer(MEDIUM_SPEECH_75TOKEN)
    codec.load_state_dict(convert_wavtokenizer_checkpoint(state_dict), strict=True)
    codes = codec.encode(wav)    # (B, T) float32 at 24 kHz -> (B, 1, ceil(T / 320)) int64
    wav = codec.decode(codes)    # (B, 1, n) -> (B, 320 n) float32

The file reads top-down: layers (weight-normed convolution with the encoder's reflect "same" padding, SEANet
residual block, LSTM block, SEANet encoder, the codebook, the Vocos backbone with its ``pos_net`` (resnet and
attention blocks) and ConvNeXt blocks with AdaLayerNorm, the iSTFT head with "same" padding), the model
``WavTokenizer``, configs, the converter for the released Lightning checkpoint and ``load_released``.

A re-implementation of jishengpeng/WavTokenizer (commit 5cf440d: ``encoder/modules/{seanet,conv,lstm}.py``,
``encoder/quantization/core_vq.py``, ``decoder/{feature_extractors,models,modules,heads,spectral_ops,pretrained}.py``)
for inference. Parameter names below the top-level prefixes are the authors' (``model.{i}.conv.conv.weight_g`` ...),
weight norm is kept as the stored ``weight_g`` / ``weight_v`` pair, so the converter only renames prefixes and drops
training-only entries. What inference does not use and is therefore absent: EnCodec's SEANet decoder (trained along
with the model, never called by WavTokenizer), the codebook's EMA / k-means-init buffers, dropout (``pos_net``
resnet blocks, p = 0.1, identity in eval).
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.kernels import attention as zoo_attention
from zoo.models.codec import Codec

__all__ = [
    "WNConv1d", "SConv1d", "SEANetResBlock", "SLSTM", "SEANetEncoder", "Codebook",
    "PosNetResBlock", "PosNetAttention", "AdaLayerNorm", "ConvNeXtBlock", "VocosBackbone", "istft_same",
    "ISTFT", "ISTFTHead", "WavTokenizer", "WavTokenizerConfig", "MEDIUM_SPEECH_75TOKEN", "TINY",
    "convert_wavtokenizer_checkpoint", "load_released",
]


# ----------------------------------------------------------------------------------------------------------------
# Encoder layers (SEANet as in EnCodec, non-causal, weight norm, reflect padding)
# ----------------------------------------------------------------------------------------------------------------
class WNConv1d(nn.Module):
    """Conv1d with weight normalisation over the output channel (dim 0), stored as the authors' checkpoint does:
    ``weight_g`` (C_out, 1, 1), ``weight_v`` (C_out, C_in, k), ``bias`` (C_out,). weight = g * v / ||v||."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.stride, self.dilation, self.kernel_size = stride, dilation, kernel_size
        v = torch.empty(c_out, c_in, kernel_size)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.detach().norm(dim=(1, 2), keepdim=True))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def weight(self) -> Tensor:
        """The effective kernel (C_out, C_in, k)."""
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(1, 2), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, self.stride, 0, self.dilation)


class _NormConv(nn.Module):
    """Holder that only reproduces the authors' ``.conv.conv.`` key nesting (their norm module is an identity)."""

    def __init__(self, conv: WNConv1d):
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _reflect_pad(x: Tensor, left: int, right: int) -> Tensor:
    """Reflect padding that also works when the input is not longer than the padding: zeros are appended first
    (and removed afterwards), as EnCodec does."""
    n = x.shape[-1]
    extra = max(left, right) - n + 1 if n <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    y = F.pad(x, (left, right), mode="reflect")
    return y[..., : y.shape[-1] - extra]


class SConv1d(nn.Module):
    """Non-causal EnCodec convolution: (B, C_in, T) -> (B, C_out, ceil(T / stride)). The input is reflect-padded by
    k_eff - stride (the extra sample on the left for odd totals) plus zeros-of-reflection up to a multiple of the
    stride on the right, so that the last window is full."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = _NormConv(WNConv1d(c_in, c_out, kernel_size, stride, dilation))

    def forward(self, x: Tensor) -> Tensor:
        c = self.conv.conv
        k_eff = (c.kernel_size - 1) * c.dilation + 1
        total = k_eff - c.stride
        extra = (-x.shape[-1]) % c.stride
        right = total // 2
        return self.conv(_reflect_pad(x, total - right, right + extra))


class SEANetResBlock(nn.Module):
    """x + block(x), block = ELU, conv k (dim -> dim / compress), ELU, conv 1 (-> dim); the skip is a 1x1 conv
    (``true_skip=False`` in the authors' config). (B, dim, T) -> (B, dim, T)."""

    def __init__(self, dim: int, kernel_size: int = 3, dilation: int = 1, compress: int = 2):
        super().__init__()
        hidden = dim // compress
        self.block = nn.Sequential(nn.ELU(), SConv1d(dim, hidden, kernel_size, dilation=dilation),
                                   nn.ELU(), SConv1d(hidden, dim, 1))
        self.shortcut = SConv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.block(x)


class SLSTM(nn.Module):
    """Multi-layer LSTM over time with a residual connection. (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int, num_layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.lstm(x.permute(2, 0, 1))  # nn.LSTM default layout (T, B, C)
        return y.permute(1, 2, 0) + x


class SEANetEncoder(nn.Module):
    """wav (B, channels, T) -> latents (B, dimension, ceil(T / prod(ratios))).

    ``model`` (an ``nn.Sequential``, indices as in the authors' state dict): conv 7 (channels -> n_filters); then for
    each ratio r of reversed(ratios): residual block, ELU, strided conv (kernel 2r, stride r, channels x2); LSTM
    block; ELU; conv 7 (-> dimension). For ratios (8, 5, 4, 2): convs at 0, 3, 6, 9, 12, 15, residual blocks at
    1, 4, 7, 10, the LSTM at 13.
    """

    def __init__(self, channels: int = 1, dimension: int = 512, n_filters: int = 32,
                 ratios: tuple[int, ...] = (8, 5, 4, 2), lstm_layers: int = 2, kernel_size: int = 7,
                 last_kernel_size: int = 7, residual_kernel_size: int = 3, compress: int = 2):
        super().__init__()
        layers: list[nn.Module] = [SConv1d(channels, n_filters, kernel_size)]
        width = n_filters
        for r in reversed(ratios):
            layers += [SEANetResBlock(width, residual_kernel_size, compress=compress),
                       nn.ELU(), SConv1d(width, 2 * width, 2 * r, stride=r)]
            width *= 2
        if lstm_layers:
            layers.append(SLSTM(width, lstm_layers))
        layers += [nn.ELU(), SConv1d(width, dimension, last_kernel_size)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class Codebook(nn.Module):
    """The single VQ codebook ``embed`` (K, D) as used at inference: nearest code by the authors' expanded squared
    distance ||x||^2 - 2 x.e + ||e||^2 (first index on ties); decoding is an embedding lookup."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.register_buffer("embed", torch.zeros(codebook_size, dim))

    def encode(self, z: Tensor) -> Tensor:
        """z (B, D, n) float -> codes (B, n) int64."""
        b, d, n = z.shape
        x = z.transpose(1, 2).reshape(-1, d)
        e = self.embed.t()
        # Same expression and order as upstream, so near-ties resolve to the same code.
        neg_dist = -(x.pow(2).sum(1, keepdim=True) - 2 * x @ e + e.pow(2).sum(0, keepdim=True))
        return neg_dist.max(dim=-1).indices.view(b, n)

    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, n) int64 -> features (B, D, n) float32."""
        return F.embedding(codes, self.embed).transpose(1, 2)


# ----------------------------------------------------------------------------------------------------------------
# Decoder layers (Vocos backbone with the attention "pos_net", iSTFT head)
# ----------------------------------------------------------------------------------------------------------------
def _group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class PosNetResBlock(nn.Module):
    """x + conv2(swish(norm2(conv1(swish(norm1(x)))))), convs k 3, GroupNorm(32). (B, C, T) -> (B, C, T).
    (Upstream has dropout 0.1 before conv2; inference only here.)"""

    def __init__(self, dim: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(dim), nn.Conv1d(dim, dim, 3, padding=1)
        self.norm2, self.conv2 = _group_norm(dim), nn.Conv1d(dim, dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        return x + self.conv2(_swish(self.norm2(h)))


class PosNetAttention(nn.Module):
    """Single-head self-attention over time with 1x1-conv projections and a residual. (B, C, T) -> (B, C, T)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = _group_norm(dim)
        self.q, self.k, self.v = (nn.Conv1d(dim, dim, 1) for _ in range(3))
        self.proj_out = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = (p(h).transpose(1, 2)[:, None] for p in (self.q, self.k, self.v))  # (B, 1, T, C)
        o = zoo_attention(q, k, v)[:, 0].transpose(1, 2)  # scale C^-0.5, softmax over keys
        return x + self.proj_out(o)


class AdaLayerNorm(nn.Module):
    """LayerNorm without affine parameters, then per-condition ``scale`` / ``shift`` embeddings (the bandwidth id).
    x (B, T, C), cond (1,) or (B,) int64 -> (B, T, C)."""

    def __init__(self, num_embeddings: int, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.scale = nn.Embedding(num_embeddings, dim)
        self.shift = nn.Embedding(num_embeddings, dim)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = F.layer_norm(x, (self.dim,), eps=self.eps)
        return x * self.scale(cond)[:, None] + self.shift(cond)[:, None]


class ConvNeXtBlock(nn.Module):
    """x + gamma * pwconv2(GELU(pwconv1(AdaLN(dwconv7(x))))). x (B, C, T), cond (1,) int64 -> (B, C, T)."""

    def __init__(self, dim: int, intermediate_dim: int, num_conditions: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = AdaLayerNorm(num_conditions, dim)
        self.pwconv1 = nn.Linear(dim, intermediate_dim)
        self.pwconv2 = nn.Linear(intermediate_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.norm(self.dwconv(x).transpose(1, 2), cond)
        h = self.gamma * self.pwconv2(F.gelu(self.pwconv1(h)))
        return x + h.transpose(1, 2)


class VocosBackbone(nn.Module):
    """features (B, C_in, n), cond (1,) int64 -> hidden (B, n, dim).

    ``embed`` conv 7 -> ``pos_net`` (resnet, resnet, attention, resnet, resnet, GroupNorm; indices 0-5) ->
    AdaLayerNorm ``norm`` -> ``convnext`` blocks -> ``final_layer_norm`` (LayerNorm, eps 1e-6).
    """

    def __init__(self, input_channels: int, dim: int, intermediate_dim: int, num_layers: int, num_conditions: int):
        super().__init__()
        self.embed = nn.Conv1d(input_channels, dim, 7, padding=3)
        self.pos_net = nn.Sequential(PosNetResBlock(dim), PosNetResBlock(dim), PosNetAttention(dim),
                                     PosNetResBlock(dim), PosNetResBlock(dim), _group_norm(dim))
        self.norm = AdaLayerNorm(num_conditions, dim)
        self.convnext = nn.ModuleList(ConvNeXtBlock(dim, intermediate_dim, num_conditions, 1 / num_layers)
                                      for _ in range(num_layers))
        self.final_layer_norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        x = self.pos_net(self.embed(x))
        x = self.norm(x.transpose(1, 2), cond).transpose(1, 2)
        for block in self.convnext:
            x = block(x, cond)
        return self.final_layer_norm(x.transpose(1, 2))


def istft_same(spec: Tensor, n_fft: int, hop_length: int, window: Tensor) -> Tensor:
    """Inverse STFT with "same" padding: spec (B, n_fft // 2 + 1, n) complex -> wav (B, n * hop_length) float.

    Each frame is ``irfft`` * window, frames are overlap-added at ``hop_length``, (n_fft - hop_length) / 2 samples
    are cut from each end and the result is divided by the overlap-added squared window. ``torch.istft`` cannot
    do this (its NOLA check fails at the uncut edges)."""
    n = spec.shape[-1]
    pad = (n_fft - hop_length) // 2
    frames = torch.fft.irfft(spec, n_fft, dim=1) * window[:, None]  # (B, n_fft, n)
    length = (n - 1) * hop_length + n_fft

    def overlap_add(f: Tensor) -> Tensor:
        return F.fold(f, (1, length), (1, n_fft), stride=(1, hop_length))[:, 0, 0]

    y = overlap_add(frames)
    env = overlap_add(window.square()[None, :, None].expand(1, n_fft, n))
    y, env = y[:, pad : length - pad], env[:, pad : length - pad]
    if not bool((env > 1e-11).all()):
        raise ValueError("window envelope vanishes: n_fft / hop_length do not overlap enough")
    return y / env


class ISTFT(nn.Module):
    """Holds the periodic Hann ``window`` (n_fft,) (a persistent buffer, as in the authors' state dict)."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, spec: Tensor) -> Tensor:
        return istft_same(spec, self.n_fft, self.hop_length, self.window)


class ISTFTHead(nn.Module):
    """hidden (B, n, dim) -> wav (B, n * hop). ``out`` predicts log-magnitude and phase (n_fft / 2 + 1 each);
    magnitude = exp(.) clipped at 100."""

    def __init__(self, dim: int, n_fft: int, hop_length: int):
        super().__init__()
        self.out = nn.Linear(dim, n_fft + 2)
        self.istft = ISTFT(n_fft, hop_length)

    def forward(self, x: Tensor) -> Tensor:
        logmag, phase = self.out(x).transpose(1, 2).chunk(2, dim=1)
        mag = torch.exp(logmag).clamp(max=1e2)
        return self.istft(torch.polar(mag, phase))


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WavTokenizerConfig:
    """Sizes of a WavTokenizer (single codebook, attention ``pos_net``). ``ratios`` are the authors'
    ``dowmsamples`` (the encoder applies them reversed); hop = prod(ratios)."""

    sample_rate: int = 24000
    n_filters: int = 32
    ratios: tuple[int, ...] = (8, 5, 4, 2)
    dimension: int = 512
    lstm_layers: int = 2
    codebook_size: int = 4096
    backbone_dim: int = 768
    intermediate_dim: int = 2304
    num_layers: int = 12
    num_bandwidths: int = 4  # adanorm_num_embeddings (len(bandwidths) in the authors' config)
    n_fft: int = 1280
    bandwidth_id: int = 0  # the condition used at inference (the authors' README and infer.py: tensor([0]))

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for sizes the architecture cannot take."""
        if self.backbone_dim % 32:
            raise ValueError(f"backbone_dim must be a multiple of 32 (GroupNorm groups), got {self.backbone_dim}")
        if self.n_fft <= self.hop_length or (self.n_fft - self.hop_length) % 2:
            raise ValueError(f"n_fft must exceed hop {self.hop_length} by an even number, got {self.n_fft}")
        if not 0 <= self.bandwidth_id < self.num_bandwidths:
            raise ValueError(f"bandwidth_id must lie in [0, {self.num_bandwidths}), got {self.bandwidth_id}")


#: The released "medium-speech-75token" codec (config ``wavtokenizer_mediumdata_frame75_3s_nq1_code4096_dim512_
#: kmeans200_attn.yaml``: dowmsamples [8, 5, 4, 2], vq_bins 4096, backbone 512 -> 768 x 12, intermediate 2304,
#: adanorm 4, head n_fft 1280 hop 320 padding "same").
MEDIUM_SPEECH_75TOKEN = WavTokenizerConfig()
#: Test config: the released hop / n_fft / sample rate (75 tokens/s) with tiny widths.
TINY = WavTokenizerConfig(n_filters=2, dimension=8, codebook_size=16, backbone_dim=32, intermediate_dim=48,
                          num_layers=2)


class WavTokenizer(Codec):
    """WavTokenizer codec: ``encoder`` (SEANet) -> ``quantizer`` (one codebook) -> tokens; tokens -> codebook
    features -> ``backbone`` (Vocos, conditioned on ``config.bandwidth_id``) -> ``head`` (iSTFT) -> waveform.

    encode: wav (T,) / (B, T) float at 24 kHz -> codes (1, n) / (B, 1, n) int64, n = ceil(T / 320).
    decode: codes (1, n) / (B, 1, n) -> wav (n * 320,) / (B, n * 320) float32.
    """

    n_quant = 1

    def __init__(self, config: WavTokenizerConfig = MEDIUM_SPEECH_75TOKEN):
        super().__init__()
        config.validate()
        self.config = config
        self.sample_rate, self.hop_length = config.sample_rate, config.hop_length
        self.codebook_size = config.codebook_size
        self.encoder = SEANetEncoder(1, config.dimension, config.n_filters, config.ratios, config.lstm_layers)
        self.quantizer = Codebook(config.codebook_size, config.dimension)
        self.backbone = VocosBackbone(config.dimension, config.backbone_dim, config.intermediate_dim,
                                      config.num_layers, config.num_bandwidths)
        self.head = ISTFTHead(config.backbone_dim, config.n_fft, config.hop_length)

    @torch.no_grad()
    def encode(self, wav: Tensor, sample_rate: int | None = None) -> Tensor:
        """wav (T,) or (B, T) float at ``sample_rate`` (must equal 24000 when given) -> codes (1, n) or (B, 1, n)
        int64, n = ceil(T / hop)."""
        if sample_rate is not None and sample_rate != self.sample_rate:
            raise ValueError(f"sample_rate must be {self.sample_rate} (resample first), got {sample_rate}")
        if isinstance(wav, Tensor) and wav.shape[-1:] == (0,):
            raise ValueError("wav must have at least one sample")
        return super().encode(wav)

    def latents(self, wav: Tensor) -> Tensor:
        """wav (B, T) float -> encoder latents (B, dimension, ceil(T / hop)) float32 (before quantisation)."""
        return self.encoder(wav[:, None].to(self.quantizer.embed.dtype))

    def _encode(self, wav: Tensor) -> Tensor:
        return self.quantizer.encode(self.latents(wav))[:, None]

    def features_to_wav(self, features: Tensor, bandwidth_id: int | None = None) -> Tensor:
        """features (B, dimension, n) float32 -> wav (B, n * hop) float32 (the authors' ``decode``)."""
        bw = self.config.bandwidth_id if bandwidth_id is None else bandwidth_id
        if not 0 <= bw < self.config.num_bandwidths:
            raise ValueError(f"bandwidth_id must lie in [0, {self.config.num_bandwidths}), got {bw}")
        cond = torch.tensor([bw], device=features.device)
        return self.head(self.backbone(features, cond))

    def _decode(self, codes: Tensor) -> Tensor:
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 0, device=codes.device)
        return self.features_to_wav(self.quantizer.decode(codes[:, 0]))


# ----------------------------------------------------------------------------------------------------------------
# Released checkpoint
# ----------------------------------------------------------------------------------------------------------------
_ENCODER = "feature_extractor.encodec.encoder."
_CODEBOOK = "feature_extractor.encodec.quantizer.vq.layers.0._codebook."
_KEEP = ("backbone.", "head.")
# Training-only entries of the authors' Lightning module ``decoder.experiment.WavTokenizer``.
_DROP_PREFIXES = (
    "feature_extractor.encodec.decoder.",  # EnCodec's SEANet decoder: built and saved, never used by WavTokenizer
    "multiperioddisc.", "multiresddisc.", "dac.", "dacdiscriminator.",  # GAN discriminators
    "melspec_loss.", "disc_loss.", "gen_loss.", "feat_matching_loss.",  # loss modules (mel filterbank buffers)
)
_DROP_CODEBOOK = ("inited", "cluster_size", "embed_avg")  # k-means-init flag and EMA statistics (training only)


def _weight_norm_name(key: str) -> str:
    # torch.nn.utils.parametrizations.weight_norm names the same pair original0 (g) / original1 (v)
    return key.replace(".parametrizations.weight.original0", ".weight_g").replace(
        ".parametrizations.weight.original1", ".weight_v")


def convert_wavtokenizer_checkpoint(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The released Lightning checkpoint's ``state_dict`` (or the authors' inference ``WavTokenizer`` module's) ->
    this module's state dict (tensors shared, not copied).

    ``feature_extractor.encodec.encoder.*`` -> ``encoder.*``; ``feature_extractor.encodec.quantizer.vq.layers.0.
    _codebook.embed`` -> ``quantizer.embed``; ``backbone.*`` and ``head.*`` unchanged. Dropped: the prefixes in
    ``_DROP_PREFIXES`` and the codebook's ``inited`` / ``cluster_size`` / ``embed_avg``. Any other key raises
    ``KeyError`` (a layout this converter does not know)."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith(_DROP_PREFIXES):
            continue
        if key.startswith(_ENCODER):
            out["encoder." + _weight_norm_name(key[len(_ENCODER):])] = value
        elif key.startswith(_CODEBOOK):
            leaf = key[len(_CODEBOOK):]
            if leaf == "embed":
                out["quantizer.embed"] = value
            elif leaf not in _DROP_CODEBOOK:
                unknown.append(key)
        elif key.startswith(_KEEP):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"state_dict has keys of no known WavTokenizer layout: {unknown[:8]}"
                       + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else ""))
    return out


def load_released(path: str | Path, config: WavTokenizerConfig = MEDIUM_SPEECH_75TOKEN) -> WavTokenizer:
    """Build the codec from the released checkpoint (``.ckpt`` / ``.pt`` read with ``weights_only=True``, or a
    ``.safetensors`` state dict) -> ``WavTokenizer`` in eval mode, loaded strictly.

    Never unpickles arbitrary objects. If the Lightning checkpoint holds globals outside torch's allowlist, extract
    its state dict once in a trusted environment (``torch.save(torch.load(p, weights_only=False)["state_dict"],
    "wavtokenizer_state_dict.pt")``, or save it as safetensors) and pass that file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd: dict = load_file(str(path))
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(f"path {path} holds objects outside torch's weights_only allowlist; extract its "
                             "state_dict once in a trusted environment (see load_released's docstring)") from e
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    model = WavTokenizer(config)
    model.load_state_dict(convert_wavtokenizer_checkpoint(sd), strict=True)
    return model.eval()
