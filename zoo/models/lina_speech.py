"""Lina-Speech (Lemerle et al., arXiv:2410.23320): text-to-speech on gated linear attention, initial-state tuning.

Text ids -> embedding -> non-causal rotary Transformer text encoder. Audio codec tokens (+3 special-token shift,
MusicGen delay pattern) -> summed per-codebook embeddings -> ``AttentiveGLA``: N GLA blocks ("encoder" stack), one
position-aware ("blind") cross-attention to the text encodings added residually, N more GLA blocks ("decoder"
stack) -> per-codebook logits heads -> next audio token. A codec (``zoo.models.codec``) turns tokens into audio.

The file reads top-down: token conventions (delay pattern, character tokenizer), layers (short convolution, GLA
token mixer, SwiGLU, mixing block, rotary self-attention, text encoder, convolutional positions, blind
cross-attention), ``AttentiveGLA``, the model ``LinaSpeech`` (teacher-forced forward, step decoding, sampling,
streaming), initial-state tuning (``InitialStates``), the exportable per-step decoder, configs, registry entries and
the converter for the authors' checkpoints.

A re-implementation of theodorblackbird/lina-speech (commit 7be703a, ``model/modeling_lina.py``, ``model/gla.py``,
``model/crossatt.py``, ``model/base_blocks.py``, ``model/encoder.py``) that keeps the authors' parameter names, so
their state dicts load strictly (tests/models/test_lina_speech.py checks the fixture to 1e-5). GLA runs on
``zoo.kernels.gla`` (chunk mode for training and prefill, recurrent mode per step), the cross-attention on
``zoo.kernels.attention`` in training. Decoding states are explicit tuples (no in-place cache), which makes the
per-step decoder exportable. Two documented departures from upstream, neither changing any output the authors'
code can produce:
- upstream builds the ``pos_net`` decoding slot with the decoder's sizes, which crashes when ``d_blind != d_model``
  (fixture fix F1); here every slot has its own block's sizes.
- a short convolution's prefill uses its incoming cache as left context (upstream restarts from zeros); caches are
  zero before every upstream prefill, so outputs agree, and chunked prefill becomes exact.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.kernels.attention import KeyPadding
from zoo.kernels.attention import attention as zoo_attention
from zoo.kernels.gla import gla
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "PAD", "BOS_AUDIO", "EOS_AUDIO", "N_SPECIAL",
    "delay_pattern", "undelay_pattern", "CharTokenizer",
    "ShortConvolution", "GatedLinearAttention", "SwiGLU", "MixingBlock", "SelfAttention", "TextEncoder", "ConvPos",
    "BlindCrossAttention", "AttentiveGLA", "LinaSpeech", "LinaOutput", "InitialStates", "LinaStepDecoder",
    "collate", "convert_checkpoint", "lina_speech", "lina_speech_tiny", "lina_speech_small",
]

PAD, BOS_AUDIO, EOS_AUDIO = 0, 1, 2  # audio token ids after the +3 shift: 0 pad, 1 start ("head"), 2 stop ("tail")
N_SPECIAL = 3


# ----------------------------------------------------------------------------------------------------------------
# Token conventions
# ----------------------------------------------------------------------------------------------------------------
def delay_pattern(codes: Tensor, head: int = BOS_AUDIO, tail: int = EOS_AUDIO) -> Tensor:
    """MusicGen delay pattern. codes (Q, T) int -> (Q, T + Q + 1) int64: codebook i shifted right by i + 1 behind
    ``head`` tokens and followed by ``tail`` tokens ([a,b] -> [1,a,b,2] for one codebook)."""
    if codes.dim() != 2:
        raise ValueError(f"codes must be (Q, T), got shape {tuple(codes.shape)}")
    q, t = codes.shape
    out = torch.full((q, t + q + 1), tail, dtype=torch.long, device=codes.device)
    for i in range(q):
        out[i, : i + 1] = head
        out[i, i + 1 : i + 1 + t] = codes[i]
    return out


def undelay_pattern(delayed: Tensor) -> Tensor:
    """Inverse of :func:`delay_pattern` on (Q, ..., T + Q + 1) -> (Q, ..., T)."""
    q, n = delayed.shape[0], delayed.shape[-1]
    if n < q + 1:
        raise ValueError(f"delayed sequence of length {n} is shorter than Q + 1 = {q + 1}")
    return torch.stack([delayed[i, ..., i + 1 : n - q + i] for i in range(q)], 0)


class CharTokenizer:
    """The zoo's text tokenizer for Lina models it trains: lowercase characters, ids 0 [PAD], 1 [BOS], 2 [EOS],
    3 space (the ids the authors' ``bpe256.json`` gives these four), then letters, digits and punctuation.
    Unknown characters are dropped. ``encode(text)`` -> list of ints wrapped in BOS/EOS."""

    ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'\"-()&/%$+éèàç"

    def __init__(self) -> None:
        self.vocab = {" ": 3, **{c: i + 4 for i, c in enumerate(self.ALPHABET)}}
        self.size = 256

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        ids = [self.vocab[c] for c in " ".join(text.lower().split()) if c in self.vocab]
        return [1, *ids, 2]


def _silu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


# ----------------------------------------------------------------------------------------------------------------
# GLA block (fla's GatedLinearAttention layer as Lina uses it, on zoo.kernels.gla)
# ----------------------------------------------------------------------------------------------------------------
class ShortConvolution(nn.Module):
    """Causal depthwise convolution (kernel ``size``, no bias) + SiLU over (B, T, C). ``weight`` (C, 1, size).

    ``forward(x, cache=None)`` -> (y, new cache). The cache (B, C, size) holds the last ``size`` inputs; a step
    (T = 1) is ``silu(sum(cache * w))`` after shifting x in, as fla's ``ShortConvolution.step``."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.channels, self.size = channels, size
        self.weight = nn.Parameter(torch.empty(channels, 1, size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor, cache: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, t, c = x.shape
        xt = x.transpose(1, 2)
        if cache is None:
            cache = xt.new_zeros(b, c, self.size)
        full = torch.cat([cache.to(xt.dtype).expand(b, c, self.size), xt], dim=-1)  # (B, C, size + T)
        if t == 1:
            y = (full[..., 1:] * self.weight[:, 0]).sum(-1, keepdim=True)
        else:
            y = F.conv1d(full[..., 1:], self.weight, groups=c)
        return _silu(y).transpose(1, 2), full[..., -self.size :]


class _RMSNormSwishGate(nn.Module):
    """``rmsnorm(x) * weight * swish(gate)`` over the last dim (fla's ``FusedRMSNormSwishGate``)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor, gate: Tensor) -> Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return (y * gate.float() * torch.sigmoid(gate.float())).to(x.dtype)


GLAState = tuple  # (conv_q (B, K, 4), conv_k (B, K, 4), conv_v (B, V, 4), S (B, H, Kh, Vh)) or (S,) without conv


class GatedLinearAttention(nn.Module):
    """GLA token mixer with Lina's key names: q/k/v/g projections (key_dim = d * expand_k, value_dim = d * expand_v),
    forget gate ``logsigmoid(gk_proj(x)) / 16`` per key channel, optional causal short convolutions on q, k, v,
    per-head RMSNorm times swish(g), ``o_proj``.

    ``forward(x (B, T, d), state=None, initial_state=None, need_state=False, mode=None)`` -> (y (B, T, d), new state
    or None). ``state`` is a full decoding state (see ``GLAState``); ``initial_state`` only an S0 (1 or B, H, Kh, Vh)
    (initial-state tuning), with conv caches starting at zero. ``mode``: ``"chunk"`` or ``"recurrent"``.
    """

    def __init__(self, hidden_size: int, num_heads: int, expand_k: float = 1.0, expand_v: float = 2.0,
                 use_short_conv: bool = True, conv_size: int = 4, gate_low_rank_dim: int = 16,
                 gate_logit_normalizer: float = 16, clamp_min: float | None = None, norm_eps: float = 1e-5,
                 mode: str = "chunk"):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.key_dim, self.value_dim = int(hidden_size * expand_k), int(hidden_size * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(f"key_dim {self.key_dim} and value_dim {self.value_dim} must divide by heads {num_heads}")
        self.head_qk_dim, self.head_v_dim = self.key_dim // num_heads, self.value_dim // num_heads
        self.gate_logit_normalizer, self.clamp_min, self.mode = gate_logit_normalizer, clamp_min, mode
        self.use_short_conv, self.conv_size = use_short_conv, conv_size
        self.q_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.k_proj = nn.Linear(hidden_size, self.key_dim, bias=False)
        self.v_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.g_proj = nn.Linear(hidden_size, self.value_dim, bias=False)
        self.gk_proj = nn.Sequential(nn.Linear(hidden_size, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, self.key_dim, bias=True))
        self.o_proj = nn.Linear(self.value_dim, hidden_size, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(self.key_dim, conv_size)
            self.k_conv1d = ShortConvolution(self.key_dim, conv_size)
            self.v_conv1d = ShortConvolution(self.value_dim, conv_size)
        self.g_norm_swish_gate = _RMSNormSwishGate(self.head_v_dim, eps=norm_eps)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=2 ** -2.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def zero_state(self, batch_size: int, device=None, dtype=torch.float32) -> GLAState:
        """An all-zero decoding state for ``batch_size`` sequences."""
        s = torch.zeros(batch_size, self.num_heads, self.head_qk_dim, self.head_v_dim, device=device, dtype=dtype)
        if not self.use_short_conv:
            return (s,)
        z = lambda c: torch.zeros(batch_size, c, self.conv_size, device=device, dtype=dtype)  # noqa: E731
        return (z(self.key_dim), z(self.key_dim), z(self.value_dim), s)

    def forward(self, x: Tensor, state: GLAState | None = None, initial_state: Tensor | None = None,
                need_state: bool = False, mode: str | None = None) -> tuple[Tensor, GLAState | None]:
        b, t, _ = x.shape
        h = self.num_heads
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        new_conv: tuple = ()
        if self.use_short_conv:
            cq, ck, cv = state[:3] if state is not None else (None, None, None)
            q, cq = self.q_conv1d(q, cq)
            k, ck = self.k_conv1d(k, ck)
            v, cv = self.v_conv1d(v, cv)
            new_conv = (cq, ck, cv)
        s0 = state[-1] if state is not None else initial_state
        heads = lambda y, d: y.reshape(b, t, h, d).transpose(1, 2)  # noqa: E731
        gk = F.logsigmoid(self.gk_proj(x).float()) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        mode = mode or self.mode
        o, s = gla(heads(q, self.head_qk_dim), heads(k, self.head_qk_dim), heads(v, self.head_v_dim),
                   heads(gk, self.head_qk_dim), initial_state=s0, output_final_state=need_state or state is not None,
                   mode="recurrent" if mode in ("recurrent", "fused_recurrent") else "chunk")
        o = self.g_norm_swish_gate(o.transpose(1, 2), self.g_proj(x).reshape(b, t, h, self.head_v_dim))
        y = self.o_proj(o.reshape(b, t, self.value_dim))
        return y, ((*new_conv, s) if s is not None else None)


class SwiGLU(nn.Module):
    """``p_out(silu(gate) * x)`` with ``gate, x = p_in(x).chunk(2)``, hidden 4d // 3."""

    def __init__(self, d_model: int):
        super().__init__()
        hidden = d_model * 4 // 3
        self.p_in = nn.Linear(d_model, hidden * 2)
        self.p_out = nn.Linear(hidden, d_model)

    def forward(self, x: Tensor) -> Tensor:
        gate, y = self.p_in(x).chunk(2, dim=-1)
        return self.p_out(F.silu(gate) * y)


class MixingBlock(nn.Module):
    """Pre-norm block: ``x + tmix(norm1(x))``, then ``x + cmix(norm2(x))``, then dropout. ``tmix`` returns
    (y, state) pairs for GLA (states threaded through ``forward(x, **kw)``) or a tensor for self-attention."""

    def __init__(self, tmix: nn.Module, cmix: nn.Module, dim: int, dropout: float = 0.0):
        super().__init__()
        self.tmix, self.cmix = tmix, cmix
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, **kw: Any):
        y = self.tmix(self.norm1(x), **kw)
        st = None
        if isinstance(y, tuple):
            y, st = y
        x = y + x
        x = self.drop(self.cmix(self.norm2(x)) + x)
        return (x, st) if isinstance(self.tmix, GatedLinearAttention) else x


def _gla_block(d: int, heads: int, dropout: float, **gla_kw: Any) -> MixingBlock:
    return MixingBlock(GatedLinearAttention(d, heads, **gla_kw), SwiGLU(d), d, dropout)


# ----------------------------------------------------------------------------------------------------------------
# Text encoder
# ----------------------------------------------------------------------------------------------------------------
class _Rotary(nn.Module):
    """Rotary embedding on the first ``dim`` channels of each head, interleaved pairs (rotary-embedding-torch
    layout). ``freqs`` (dim / 2,) is a non-trainable parameter (it is in the authors' state dict)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        f = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(f, requires_grad=False)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        n = x.shape[-2]
        pos = torch.arange(n, device=x.device, dtype=self.freqs.dtype) + offset
        ang = (pos[:, None] * self.freqs[None]).repeat_interleave(2, dim=-1)  # (n, rot)
        rot = ang.shape[-1]
        xr, rest = x[..., :rot], x[..., rot:]
        pairs = xr.unflatten(-1, (rot // 2, 2))
        half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        out = xr * ang.cos().to(x.dtype) + half * ang.sin().to(x.dtype)
        return torch.cat([out, rest], dim=-1)


class SelfAttention(nn.Module):
    """Non-causal multi-head self-attention, fused ``qkv`` projection, optional rotary (on half the head dim)."""

    def __init__(self, dim: int, heads: int, rotary: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rotary = _Rotary((dim // heads) // 2) if rotary else None

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = (y.reshape(b, n, self.heads, d // self.heads).transpose(1, 2) for y in self.qkv(x).chunk(3, -1))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        if mask is None:
            y = zoo_attention(q, k, v)
        else:  # dense (B, 1, n, n) bool mask, the authors' (padding | identity)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return y.transpose(1, 2).reshape(b, n, d)


class TextEncoder(nn.Module):
    """``n_layers`` pre-norm rotary Transformer blocks (``sa.{i}.tmix`` / ``.cmix`` SwiGLU). x (B, J, d);
    mask (B, J, J) bool, True = attend (each position also always sees itself)."""

    def __init__(self, dim: int, heads: int, n_layers: int = 4, dropout: float = 0.1, rotary: bool = True):
        super().__init__()
        self.sa = nn.ModuleList([MixingBlock(SelfAttention(dim, heads, rotary), SwiGLU(dim), dim, dropout)
                                 for _ in range(n_layers)])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=x.device)
            mask = (mask | eye)[:, None]
        for block in self.sa:
            x = block(x, mask=mask)
        return x


# ----------------------------------------------------------------------------------------------------------------
# Position-aware ("blind") cross-attention
# ----------------------------------------------------------------------------------------------------------------
class ConvPos(nn.Module):
    """Learned positions ``embed`` (max_seq_len, dim) followed by a depthwise Conv1d (kernel 31, 'same' padding)
    across positions. positions (B, J) int -> (B, J, dim)."""

    def __init__(self, dim: int, max_seq_len: int = 2000, kernel_size: int = 31):
        super().__init__()
        self.embed = nn.Embedding(max_seq_len, dim)
        self.dw_conv = nn.Conv1d(dim, dim, kernel_size, groups=dim, padding="same")

    def forward(self, pos: Tensor) -> Tensor:
        return self.dw_conv(self.embed(pos).transpose(1, 2)).transpose(1, 2)


class SinPos(nn.Module):
    """Sinusoidal positions: ``sin(p * 10000^(-2i/dim))`` and the same shifted by pi/2 (cos), concatenated."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, pos: Tensor) -> Tensor:
        e = 2 * torch.arange(self.dim // 2, device=pos.device) / self.dim
        p = pos[..., None].float() * torch.pow(10000, -e)
        return torch.sin(torch.cat((p, p + math.pi / 2), dim=-1))


def _softmax_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Explicit single-head attention (the authors' eval path): masked scores filled with -finfo.max."""
    w = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        w = w.masked_fill(~mask, -torch.finfo(w.dtype).max)
    w = torch.softmax(w, dim=-1)
    return w @ v, w


class TextContext(NamedTuple):
    """Text side of the cross-attention, computed once per utterance: keys, values (B, J, d), positions (1, J, d_pos),
    text lengths (B,) int32 (None = no padding)."""

    k: Tensor
    v: Tensor
    pos: Tensor
    lengths: Tensor | None


class BlindCrossAttention(nn.Module):
    """Single-head position-aware cross-attention (Small-E / Lina "blind" attention).

    Stage 1: audio queries attend over text keys and gather *position embeddings* of the text (``pos_embed``);
    stage 2: that vector, after the GLA block ``pos_net`` (recurrent over audio time: monotonic progress), attends
    over the position embeddings and gathers the text *values*. q, k, v are LayerNorm'ed linear projections.
    Returns (out (B, n, d), attention maps (B, 2, n, J) or None, pos_net state or None).
    """

    def __init__(self, d_model: int, pos_net: MixingBlock, pos_dim: int, dropout: float = 0.0,
                 pos_type: str = "convolutional"):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.pos_net = pos_net
        if pos_type == "convolutional":
            self.pos_embed = ConvPos(pos_dim)
        elif pos_type == "sinusoidal":
            self.pos_embed = SinPos(pos_dim)
        else:
            raise ValueError(f"pos_type must be 'convolutional' or 'sinusoidal', got {pos_type!r}")
        self.ln_q, self.ln_k, self.ln_v = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout_p = dropout

    def context(self, ctx: Tensor, lengths: Tensor | None = None) -> TextContext:
        """Precompute the text side. ctx (B, J, d) text encodings; lengths (B,) valid text tokens."""
        j = ctx.shape[1]
        pos = self.pos_embed(torch.arange(j, device=ctx.device)[None])
        return TextContext(self.ln_k(self.k(ctx)), self.ln_v(self.v(ctx)), pos.to(ctx.dtype),
                           None if lengths is None else lengths.to(torch.int32))

    def forward(self, x: Tensor, ctx: TextContext, mask: Tensor | None = None, state: GLAState | None = None,
                need_weights: bool = True, need_state: bool = False
                ) -> tuple[Tensor, Tensor | None, GLAState | None]:
        """x (B, n, d) audio stream; mask (B, n, J) bool (authors' dense cross-attention mask, eval path) or None."""
        q = self.ln_q(self.q(x))[:, None]
        k, v, pos = ctx.k[:, None], ctx.v[:, None], ctx.pos[:, None].expand(x.shape[0], 1, -1, -1)
        if need_weights or (self.training and self.dropout_p > 0):
            if mask is None and ctx.lengths is not None:  # decoding a padded batch of texts
                mask = (torch.arange(ctx.k.shape[1], device=x.device) < ctx.lengths[:, None].to(x.device))[:, None]
            m = None if mask is None else mask[:, None]
            p_drop = self.dropout_p if self.training else 0.0
            z, a1 = _softmax_attention(q, k, pos, m)
            if p_drop:
                z = F.dropout(a1, p_drop) @ pos
            z, st = self.pos_net(z[:, 0], state=state, need_state=need_state)
            y, a2 = _softmax_attention(z[:, None], pos, v, m)
            if p_drop:
                y = F.dropout(a2, p_drop) @ v
            return y[:, 0], torch.cat([a1, a2], dim=1), st
        km = None if ctx.lengths is None else KeyPadding(ctx.lengths)
        z = zoo_attention(q, k, pos.contiguous(), km)
        z, st = self.pos_net(z[:, 0], state=state, need_state=need_state)
        y = zoo_attention(z[:, None].contiguous(), pos.contiguous(), v, km)
        return y[:, 0], None, st


# ----------------------------------------------------------------------------------------------------------------
# AttentiveGLA
# ----------------------------------------------------------------------------------------------------------------
class AttentiveGLA(nn.Module):
    """``encoder`` (n_layer GLA blocks) -> ``cross_att`` (blind, residual) -> ``decoder`` (n_layer GLA blocks)."""

    def __init__(self, d_model: int, n_layer: int, heads: int, dropout_att: float = 0.0, dropout: float = 0.0,
                 d_blind: int | None = None, use_short_conv: bool = True, expand_k: float = 1.0,
                 expand_v: float = 2.0, pos_type: str = "convolutional"):
        super().__init__()
        kw = dict(use_short_conv=use_short_conv, expand_k=expand_k, expand_v=expand_v)
        self.encoder = nn.ModuleList([_gla_block(d_model, heads, dropout, **kw) for _ in range(n_layer)])
        self.decoder = nn.ModuleList([_gla_block(d_model, heads, dropout, **kw) for _ in range(n_layer)])
        d_blind = d_blind or d_model
        self.cross_att = BlindCrossAttention(d_model, _gla_block(d_blind, heads, dropout, **kw), d_blind,
                                             dropout_att, pos_type)

    @property
    def blocks(self) -> list[MixingBlock]:
        """The 2 * n_layer GLA blocks that initial-state tuning addresses: encoder then decoder."""
        return [*self.encoder, *self.decoder]

    def zero_state(self, batch_size: int, device=None) -> list[GLAState]:
        """Decoding state: one per GLA block (encoder, decoder), then the cross-attention's ``pos_net``."""
        return [b.tmix.zero_state(batch_size, device) for b in [*self.blocks, self.cross_att.pos_net]]

    def forward(self, x: Tensor, ctx: TextContext, mask: Tensor | None = None,
                init_state: Sequence[Tensor] | None = None, state: list[GLAState] | None = None,
                need_weights: bool = True, need_state: bool = False, mode: str | None = None):
        """x (B, n, d). ``init_state``: 2N S0 tensors (IST), or ``state``: a full decoding state (2N + 1 slots).
        Returns (y (B, n, d), attention (B, 2, n, J) or None, new state or None)."""
        blocks = self.blocks
        n_enc = len(self.encoder)
        new: list = [None] * (len(blocks) + 1)
        need = need_state or state is not None

        def run(i, blk, h):
            st = state[i] if state is not None else None
            s0 = init_state[i] if (init_state is not None and st is None) else None
            h, new[i] = blk(h, state=st, initial_state=s0, need_state=need, mode=mode)
            return h

        for i in range(n_enc):
            x = run(i, blocks[i], x)
        v, att, new[-1] = self.cross_att(x, ctx, mask, state=state[-1] if state is not None else None,
                                         need_weights=need_weights, need_state=need)
        x = x + v
        for i in range(n_enc, len(blocks)):
            x = run(i, blocks[i], x)
        return x, att, (new if need else None)


# ----------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------
class LinaOutput(NamedTuple):
    """Teacher-forced outputs: logits (B, n, Q, L) fp32, loss (scalar), att (B, 2, n, J) or None, the logits and
    targets the loss saw ((m, Q, L), (m, Q)), and the final decoding state (or None)."""

    logits: Tensor
    loss: Tensor
    att: Tensor | None
    masked_logits: Tensor
    masked_target: Tensor
    state: list | None


class _MultiEmbedding(nn.Module):
    """Q stacked embedding tables, ``weight`` (Q, n_emb, d) ~ N(0, 1). idx (Q, ...) -> (Q, ..., d)."""

    def __init__(self, n_level: int, n_emb: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_level, n_emb, d))

    def forward(self, idx: Tensor) -> Tensor:
        return torch.stack([F.embedding(idx[i], self.weight[i]) for i in range(idx.shape[0])], 0)


class _Heads(nn.Module):
    """Per-codebook output heads, ``weight`` (Q, L, d), no bias: (B, n, d) -> (B, n, Q, L)."""

    def __init__(self, q: int, n_out: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(q, n_out, d))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, y: Tensor) -> Tensor:
        return torch.einsum("bnd,qld->bnql", y, self.weight)


class LinaSpeech(nn.Module):
    """Lina-Speech (the authors' ``LinaModel`` + ``AttentiveGLA`` with blind cross-attention).

    Args:
        d_model, n_layer (GLA blocks per stack), heads, d_blind (``pos_net`` width), dropout, dropout_att,
        use_short_conv, expand_k, expand_v, pos_type: the ``AttentiveGLA`` arguments.
        n_quant: codebooks Q; n_codebook: codes per codebook; n_txt_vocab: text ids.
        txt_layers, txt_heads, txt_dropout, txt_rotary: the text encoder.
        frame_rate, sample_rate, codec: informational (which codec the tokens come from).

    Token layout: audio ids are codec codes + 3 (0 pad, 1 start, 2 stop), delayed per codebook
    (:func:`delay_pattern`); targets exclude PAD, so each head has n_codebook + 3 outputs.
    """

    def __init__(self, d_model: int = 1024, n_layer: int = 6, heads: int = 4, d_blind: int | None = 512,
                 dropout: float = 0.0, dropout_att: float = 0.0, use_short_conv: bool = True, expand_k: float = 1.0,
                 expand_v: float = 2.0, pos_type: str = "convolutional", n_quant: int = 1, n_codebook: int = 4096,
                 n_txt_vocab: int = 256, txt_layers: int = 4, txt_heads: int = 4, txt_dropout: float = 0.0,
                 txt_rotary: bool = True, frame_rate: float = 75.0, sample_rate: int = 24000,
                 codec: str = "wavtokenizer"):
        super().__init__()
        self.d_model, self.n_quant, self.n_codebook = d_model, n_quant, n_codebook
        self.n_special_token_in = self.n_special_token_out = N_SPECIAL
        self.n_target_vocab = n_codebook + N_SPECIAL
        self.frame_rate, self.sample_rate, self.codec = frame_rate, sample_rate, codec
        self.attentive_rnn = AttentiveGLA(d_model, n_layer, heads, dropout_att, dropout, d_blind, use_short_conv,
                                          expand_k, expand_v, pos_type)
        self.txt_encoder = TextEncoder(d_model, txt_heads, txt_layers, txt_dropout, txt_rotary)
        self.txt_embed = nn.Embedding(n_txt_vocab, d_model, padding_idx=0)
        self.rvq_embed = _MultiEmbedding(n_quant, n_codebook + N_SPECIAL, d_model)
        self.logits_head = _Heads(n_quant, self.n_target_vocab, d_model)

    # -- teacher forcing ------------------------------------------------------------------------------------------
    def encode_text(self, text_token: Tensor, encoder_mask: Tensor | None = None,
                    text_lengths: Tensor | None = None) -> TextContext:
        """text_token (B, J) int64 -> the cross-attention's text context."""
        if text_token.dim() != 2:
            raise ValueError(f"text_token must be (B, J) int64, got shape {tuple(text_token.shape)}")
        x = self.txt_encoder(self.txt_embed(text_token), mask=encoder_mask)
        return self.attentive_rnn.cross_att.context(x, text_lengths)

    def embed_audio(self, audio_token: Tensor) -> Tensor:
        """audio_token (B, n, Q) int64 -> summed codebook embeddings (B, n, d)."""
        return self.rvq_embed(audio_token.permute(2, 0, 1)).sum(0)

    def forward(self, text_token: Tensor, audio_token: Tensor, encoder_mask: Tensor | None = None,
                crossatt_mask: Tensor | None = None, logits_mask: Tensor | None = None,
                init_state: Sequence[Tensor] | None = None, need_weights: bool | None = None,
                need_state: bool = False, mode: str | None = None) -> LinaOutput:
        """Teacher-forced next-token prediction, as the authors' ``LinaModel.forward``.

        Args:
            text_token: (B, J) int64, PAD 0. audio_token: (B, n, Q) int64 (delayed, +3, PAD 0); the model reads
                ``audio_token[:, :-1]`` and predicts ``audio_token[:, 1:]``.
            encoder_mask: (B, J, J) bool; crossatt_mask: (B, n, J) bool (column 0 always True); built from the
                PAD positions when None. logits_mask: (B, n) bool, the audio positions counted in the loss
                (default: non-PAD audio); the loss is CE with ``ignore_index=1``.
            init_state: 2N initial states S0 (1 or B, H, K, V) (initial-state tuning), or None.
            need_weights: return both attention maps (default: in eval mode; training uses the fused kernel).
            mode: GLA kernel mode override (``"chunk"`` / ``"recurrent"``).
        """
        if audio_token.dim() != 3 or audio_token.shape[-1] != self.n_quant:
            raise ValueError(f"audio_token must be (B, n, {self.n_quant}) int64, got {tuple(audio_token.shape)}")
        x_mask = text_token != 0
        y_mask = audio_token[..., 0] != PAD
        if encoder_mask is None:
            encoder_mask = x_mask[:, None, :] & x_mask[:, :, None]
        if crossatt_mask is None:
            crossatt_mask = x_mask[:, None, :] & y_mask[:, :, None]
            crossatt_mask[:, :, 0] = True
        if logits_mask is None:
            logits_mask = y_mask
        need_weights = (not self.training) if need_weights is None else need_weights
        ctx = self.encode_text(text_token, encoder_mask, crossatt_mask[:, 0].sum(-1))
        y = self.embed_audio(audio_token)
        h, att, state = self.attentive_rnn(y[:, :-1], ctx, crossatt_mask[:, :-1], init_state=init_state,
                                           need_weights=need_weights, need_state=need_state, mode=mode)
        logits = self.logits_head(h).float()
        sel = logits_mask[:, 1:]
        masked_logits, masked_target = logits[sel], audio_token[:, 1:][sel]
        loss = F.cross_entropy(masked_logits.reshape(-1, logits.shape[-1]), masked_target.reshape(-1),
                               ignore_index=BOS_AUDIO)
        return LinaOutput(logits, loss, att, masked_logits, masked_target, state)

    # -- decoding -------------------------------------------------------------------------------------------------
    def step(self, token_embed: Tensor, ctx: TextContext, state: list[GLAState],
             need_weights: bool = True) -> tuple[Tensor, Tensor | None, list[GLAState]]:
        """One decoding step. token_embed (B, 1, d) -> (logits (B, Q, L) fp32, attention (B, 2, 1, J), state)."""
        h, att, state = self.attentive_rnn(token_embed, ctx, None, state=state, need_weights=need_weights,
                                           mode="recurrent")
        return self.logits_head(h)[:, 0].float(), att, state

    def initial_state(self, batch_size: int, init_state: Sequence[Tensor] | None = None,
                      device=None) -> list[GLAState]:
        """Zero decoding state with the 2N IST initial states (if any) placed in the recurrent slots."""
        state = self.attentive_rnn.zero_state(batch_size, device or self.txt_embed.weight.device)
        if init_state is not None:
            if len(init_state) != len(self.attentive_rnn.blocks):
                raise ValueError(f"init_state must hold {len(self.attentive_rnn.blocks)} tensors, got {len(init_state)}")
            for i, s0 in enumerate(init_state):
                state[i] = (*state[i][:-1], s0.float().expand_as(state[i][-1]).clone())
        return state

    @torch.no_grad()
    def generate_tokens(self, text_token: Tensor, max_len: int = 1000, top_k: int = 100, temperature: float = 1.0,
                        first_greedy_quant: int = 1, prompt: Tensor | None = None,
                        init_state: Sequence[Tensor] | None = None, force_max_len: bool = False,
                        generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor | None, Tensor]]:
        """Autoregressive decoding, one step per yield, as the authors' ``generate_batch``.

        text_token (J,) or (B, J) int64 (a batch may be right-padded with 0). Top-k / temperature sampling on the first ``first_greedy_quant``
        codebooks, greedy on the rest (``first_greedy_quant=0``: all greedy). Stops when every codebook of every
        sequence has emitted the stop token 2 (unless ``force_max_len``). ``prompt`` (Q, 1 or B, p) raw codec codes:
        their embeddings are forced as inputs for the first p steps (prompt continuation).
        Yields (tokens (B, Q) delayed ids, attention (B, 2, J) or None, stopped (B,) bool) per step.
        """
        if text_token.dim() == 1:
            text_token = text_token[None]
        b = text_token.shape[0]
        dev = self.txt_embed.weight.device
        text_token = text_token.to(dev)
        x_mask = text_token != 0
        if b > 1 and not bool(x_mask.all()):  # right-padded texts (PAD 0), masked as in training
            ctx = self.encode_text(text_token, x_mask[:, None, :] & x_mask[:, :, None], x_mask.sum(-1))
        else:
            ctx = self.encode_text(text_token)
        state = self.initial_state(b, init_state, dev)
        y = self.embed_audio(torch.full((b, 1, self.n_quant), BOS_AUDIO, dtype=torch.long, device=dev))
        p_emb = None
        if prompt is not None:
            prompt = prompt.to(dev)
            if prompt.shape[1] != b:
                prompt = prompt.expand(-1, b, -1)
            p_emb = self.embed_audio((prompt + N_SPECIAL).permute(1, 2, 0))
        stopped = torch.zeros(b, dtype=torch.bool, device=dev)
        for t in range(max_len):
            logits, att, state = self.step(y, ctx, state)
            toks = []
            for i in range(self.n_quant):
                li = logits[:, i]
                if i < first_greedy_quant:
                    toks.append(_topk_sample(li, top_k, temperature, generator))
                else:
                    toks.append(li.argmax(-1))
            tok = torch.stack(toks, 1)
            stopped |= (tok == EOS_AUDIO).all(1)
            yield tok, (att[:, :, 0] if att is not None else None), stopped.clone()
            if bool(stopped.all()) and not force_max_len:
                return
            if p_emb is not None and t < p_emb.shape[1]:
                y = p_emb[:, t : t + 1]
            else:
                y = self.embed_audio(tok[:, None])

    @torch.no_grad()
    def generate(self, text_token: Tensor, max_len: int = 1000, **kw: Any) -> list[Tensor]:
        """Decode and return per sequence the raw codec codes (Q, T) int64 (delay undone, special tokens cut at the
        first stop). Keyword arguments as :meth:`generate_tokens`."""
        steps = [tok for tok, _, _ in self.generate_tokens(text_token, max_len, **kw)]
        toks = torch.stack(steps, -1)  # (B, Q, T)
        return [_codes_from_delayed(toks[i], self.n_quant) for i in range(toks.shape[0])]

    @torch.no_grad()
    def stream(self, text_token: Tensor, codec: Any, chunk_frames: int = 25, lookback: int = 8,
               max_len: int = 1000, **kw: Any) -> Iterator[Tensor]:
        """Stream audio while tokens are produced: yields float32 waveform chunks (samples,) of about
        ``chunk_frames`` codec frames for one sentence. ``codec.decode(codes (Q, T)) -> wav`` decodes the new
        frames with ``lookback`` frames of left context, whose samples are dropped."""
        if text_token.dim() == 2 and text_token.shape[0] != 1:
            raise ValueError("stream() takes one sentence: text_token (J,) or (1, J)")
        q = self.n_quant
        delayed: list[Tensor] = []
        emitted = 0
        hop = codec.hop_length

        def flush(codes: Tensor, final: bool) -> Tensor | None:
            nonlocal emitted
            t = codes.shape[-1]
            if t <= emitted or (not final and t - emitted < chunk_frames):
                return None
            start = max(0, emitted - lookback)
            wav = codec.decode(codes[:, start:t])
            wav = wav[(emitted - start) * hop :]
            emitted = t
            return wav

        for tok, _, stopped in self.generate_tokens(text_token, max_len, **kw):
            delayed.append(tok[0])
            if bool(stopped[0]):
                break
            if len(delayed) >= q:  # some frames have all their codebooks
                wav = flush(_codes_from_delayed(torch.stack(delayed, -1), q, partial=True), False)
                if wav is not None:
                    yield wav
        codes = _codes_from_delayed(torch.stack(delayed, -1), q) if delayed else torch.zeros(q, 0, dtype=torch.long)
        wav = flush(codes, True)
        if wav is not None:
            yield wav


def _topk_sample(logits: Tensor, k: int, temperature: float, generator: torch.Generator | None) -> Tensor:
    """Top-k sampling at ``temperature`` on (B, L) logits -> (B,) int64 (k = 1 is greedy)."""
    if k <= 1:
        return logits.argmax(-1)
    kth = torch.topk(logits, min(k, logits.shape[-1]), dim=-1).values[:, -1:]
    z = (logits / temperature).masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(z, -1), 1, generator=generator)[:, 0]


def _codes_from_delayed(toks: Tensor, q: int, partial: bool = False) -> Tensor:
    """toks (Q, T) delayed ids emitted after the start token -> raw codes (Q, T') int64, cut at the first frame
    where codebook 0 stops; ids < 3 become 0. With ``partial``, only frames whose codebooks are all emitted."""
    full = torch.cat([torch.full((q, 1), BOS_AUDIO, dtype=toks.dtype, device=toks.device), toks], -1)
    if partial:
        n = full.shape[-1] - q
        codes = torch.stack([full[i, i + 1 : i + 1 + n] for i in range(q)], 0) if n > 0 else full[:, :0]
    else:
        full = torch.cat([full, torch.full((q, q + 1), EOS_AUDIO, dtype=toks.dtype, device=toks.device)], -1)
        codes = undelay_pattern(full)
    stop = (codes[0] == EOS_AUDIO).nonzero()
    if len(stop):
        codes = codes[:, : int(stop[0])]
    return (codes - N_SPECIAL).clamp_min(0).long()


# ----------------------------------------------------------------------------------------------------------------
# Initial-state tuning
# ----------------------------------------------------------------------------------------------------------------
class InitialStates(nn.Module):
    """Low-rank initial states S0 of the 2N GLA blocks (initial-state tuning, the authors' parameterisation).

    Parameters ``layer{i}_k`` (1, r, H, K, 1) ~ N(0, 1) and ``layer{i}_v`` (1, r, H, 1, V) ~ N(0, 1) * scale
    (rank r), or ``layer{i}`` (1, H, K, V) ~ N(0, 1) * scale (``rank=None``), keyed as the authors' speaker files.
    ``forward()`` -> list of S0 = scale * sum_r k (x) v, each (1, H, K, V) fp32 (full-rank: the tensor itself).
    """

    def __init__(self, model: LinaSpeech, rank: int | None = 1, scale: float = 0.02,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.rank, self.scale = rank, scale
        dev = model.txt_embed.weight.device
        self.n_layers = len(model.attentive_rnn.blocks)
        for i, blk in enumerate(model.attentive_rnn.blocks):
            t = blk.tmix
            h, k, v = t.num_heads, t.head_qk_dim, t.head_v_dim
            if rank is None:
                self.register_parameter(f"layer{i}", nn.Parameter(
                    torch.randn(1, h, k, v, generator=generator).to(dev) * scale))
            else:
                self.register_parameter(f"layer{i}_k", nn.Parameter(
                    torch.randn(1, rank, h, k, 1, generator=generator).to(dev)))
                self.register_parameter(f"layer{i}_v", nn.Parameter(
                    torch.randn(1, rank, h, 1, v, generator=generator).to(dev) * scale))

    def forward(self) -> list[Tensor]:
        if self.rank is None:
            return [getattr(self, f"layer{i}").float() for i in range(self.n_layers)]
        out = []
        for i in range(self.n_layers):
            k, v = getattr(self, f"layer{i}_k"), getattr(self, f"layer{i}_v")
            out.append((k.float() * v.float()).sum(1) * self.scale)  # (1, H, K, V)
        return out

    @classmethod
    def from_state_dict(cls, model: LinaSpeech, sd: dict[str, Tensor], scale: float = 0.02) -> "InitialStates":
        """Build from a speaker file's tensors (keys ``layer{i}_k``/``_v`` or ``layer{i}``), loaded strictly."""
        low_rank = "layer0_k" in sd
        rank = int(sd["layer0_k"].shape[1]) if low_rank else None
        m = cls(model, rank=rank, scale=scale)
        m.load_state_dict({k: v.to(model.txt_embed.weight.device) for k, v in sd.items()}, strict=True)
        return m


# ----------------------------------------------------------------------------------------------------------------
# Exportable per-step decoder
# ----------------------------------------------------------------------------------------------------------------
class LinaStepDecoder(nn.Module):
    """One decoding step with flat tensor inputs/outputs (``torch.export``-friendly), greedy.

    forward(tokens (B, Q) int64, k (B, J, d), v (B, J, d), pos (1, J, d_pos), *state) -> (next tokens (B, Q),
    logits (B, Q, L), *new state). The state is the flattened list of :meth:`LinaSpeech.initial_state` tuples
    (4 tensors per GLA block with short convolutions, 2N + 1 blocks).
    """

    def __init__(self, model: LinaSpeech):
        super().__init__()
        self.model = model
        self.slots = [len(s) for s in model.attentive_rnn.zero_state(1, "cpu")]

    def flatten(self, state: list[GLAState]) -> list[Tensor]:
        return [t for s in state for t in s]

    def unflatten(self, flat: Sequence[Tensor]) -> list[GLAState]:
        out, i = [], 0
        for n in self.slots:
            out.append(tuple(flat[i : i + n]))
            i += n
        return out

    def forward(self, tokens: Tensor, k: Tensor, v: Tensor, pos: Tensor, *state: Tensor):
        y = self.model.embed_audio(tokens[:, None])
        logits, _, new = self.model.step(y, TextContext(k, v, pos, None), self.unflatten(state), need_weights=True)
        return (logits.argmax(-1), logits, *self.flatten(new))


# ----------------------------------------------------------------------------------------------------------------
# Batching (the authors' collate)
# ----------------------------------------------------------------------------------------------------------------
def collate(items: Sequence[tuple[Sequence[int], Tensor]]) -> dict[str, Tensor]:
    """Batch (text ids, raw codes (Q, T)) pairs as the authors' ``simple_collate``: codes + 3 in the delay pattern,
    right-padded with 0; masks ``encoder_mask`` (B, J, J), ``crossatt_mask`` (B, n, J) (column 0 True), ``y_mask``."""
    texts = [torch.as_tensor(t, dtype=torch.long) for t, _ in items]
    audios = [delay_pattern(torch.as_tensor(c).long() + N_SPECIAL).T for _, c in items]
    x_len = torch.tensor([len(t) for t in texts])
    y_len = torch.tensor([len(a) for a in audios])
    text = nn.utils.rnn.pad_sequence(texts, batch_first=True)
    audio = nn.utils.rnn.pad_sequence(audios, batch_first=True)
    x_mask = torch.arange(text.shape[1])[None] < x_len[:, None]
    y_mask = torch.arange(audio.shape[1])[None] < y_len[:, None]
    cam = x_mask[:, None, :] & y_mask[:, :, None]
    cam[:, :, 0] = True
    return {"text_token": text, "audio_token": audio, "encoder_mask": x_mask[:, None, :] & x_mask[:, :, None],
            "crossatt_mask": cam, "y_mask": y_mask, "x_len": x_len, "y_len": y_len}


# ----------------------------------------------------------------------------------------------------------------
# Configs and registry
# ----------------------------------------------------------------------------------------------------------------
_VARIANTS: dict[str, dict[str, Any]] = {
    # The released GigaSpeech model (`lina_gla_gigaspeech_d1024l12_convblind_shortconv_lr2e-4`, 169M): sizes as
    # the fact sheet estimates them from the checkpoint name and parameter count; WavTokenizer 75 Hz, 4096 codes.
    "lina_speech": dict(d_model=1024, n_layer=6, heads=4, d_blind=512, n_quant=1, n_codebook=4096, txt_layers=4,
                        txt_heads=4, frame_rate=75.0, sample_rate=24000, codec="wavtokenizer"),
    # The fixture's config A (2 + 2 blocks, 64 codes): tests and smoke runs.
    "tiny": dict(d_model=64, n_layer=2, heads=2, d_blind=32, n_quant=1, n_codebook=64, txt_layers=2, txt_heads=2,
                 frame_rate=75.0, sample_rate=24000, codec="none"),
    # The zoo's small model on the offline mel-VQ codec (16 kHz, 62.5 frames/s, 512 codes).
    "small": dict(d_model=256, n_layer=3, heads=4, d_blind=128, n_quant=2, n_codebook=512, txt_layers=3,
                  txt_heads=4, dropout=0.05, frame_rate=62.5, sample_rate=16000, codec="melvq"),
}

_TITLE = "Lina-Speech: Gated Linear Attention and Initial-State Tuning for Multi-Sample Prompting Text-To-Speech"
_CITATION = ("Lemerle, Guichoux, Roebel, Obin. Lina-Speech: Gated Linear Attention is a Fast and Parameter-Efficient "
             "Learner for text-to-speech synthesis. arXiv:2410.23320, 2024.")
_INPUT_SPEC = {"text": "character ids (B, J) int64", "audio_tokens": "(B, n, Q) int64, codec codes + 3, delayed"}


@register_model(paper="arXiv:2410.23320", title=_TITLE, task="text-to-speech", license="cc-by-nc-sa-4.0",
                input_spec={**_INPUT_SPEC, "sample_rate": 24000}, citation=_CITATION)
def lina_speech(**kwargs: Any) -> LinaSpeech:
    """Lina-Speech at the released size (d 1024, 6 + 6 GLA blocks, WavTokenizer 4096 codes): ~197M params with
    txt_layers 4 (the released checkpoint has 169M; its text-encoder depth is in the HF config)."""
    return LinaSpeech(**{**_VARIANTS["lina_speech"], **kwargs})


@register_model(paper="arXiv:2410.23320", title=_TITLE + " (tiny test config)", task="text-to-speech",
                license="cc-by-nc-sa-4.0", input_spec=_INPUT_SPEC, citation=_CITATION)
def lina_speech_tiny(**kwargs: Any) -> LinaSpeech:
    """The reference fixture's config A: d 64, 2 + 2 GLA blocks, d_blind 32, one codebook of 64 codes (386,624)."""
    return LinaSpeech(**{**_VARIANTS["tiny"], **kwargs})


@register_model(paper="arXiv:2410.23320", title=_TITLE + " (zoo small, offline mel-VQ codec)",
                task="text-to-speech", license="cc-by-nc-sa-4.0", input_spec={**_INPUT_SPEC, "sample_rate": 16000},
                citation=_CITATION,
                pretrained={"lina_offline": PretrainedSource(repo_id="zoo-models/lina_speech_small.lina_offline",
                                                             dataset="lina_offline")})
def lina_speech_small(**kwargs: Any) -> LinaSpeech:
    """The zoo's small Lina (d 256, 3 + 3 GLA blocks) trained on the offline espeak-ng corpus with the mel-VQ codec."""
    return LinaSpeech(**{**_VARIANTS["small"], **kwargs})


# ----------------------------------------------------------------------------------------------------------------
# Converter
# ----------------------------------------------------------------------------------------------------------------
def convert_checkpoint(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The authors' checkpoint (``LinaModel.state_dict()``, or ``TrainLina``'s with a ``model.`` prefix, or a
    Lightning ``{"state_dict": ...}``) -> this module's state dict. Keys are the authors' own; only wrappers go."""
    sd = state_dict.get("state_dict", state_dict)
    out = {}
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            continue
        if k.startswith("model."):
            k = k[len("model."):]
        out[k] = v
    return out
