"""Transformer Transducer (Zhang et al., arXiv:2002.02562): streamable speech recognition with Transformer audio and
label encoders, a joint network and the RNN-T loss.

Reads top-down: relative positions and the one attention helper, layers, encoders, the model, the RNN-T loss,
decoding (greedy, beam, streaming), the exportable streaming step, configs and registry entries. Google released no
code or weights, so there is no checkpoint converter.

Relative positions (Transformer-XL) without an additive bias: the position term ``(q_i + w) . W_r s(i - j)`` with
sinusoidal ``s`` is a sum of ``sin/cos(omega (i - j))``, and ``sin(a - b)``, ``cos(a - b)`` expand into products of a
function of ``i`` and a function of ``j``. So the score ``(q_i + u) . k_j + (q_i + w) . W_r s(i - j)`` is *exactly*
the dot product of an extended query ``[q_i + u, rot_i(W_r^T (q_i + w))]`` with an extended key
``[k_j, cos(omega j), sin(omega j)]`` (:func:`extend_query`, :func:`extend_key`), and ``zoo.kernels.attention`` runs
it with ``D = head_dim + pos_dim`` for q/k and ``Dv = head_dim`` for v. Positions are absolute frame indices, so keys
can be cached across streaming chunks; the scores depend only on ``i - j``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.kernels import KeyPadding, SlidingWindow, attention
from zoo.registry import PretrainedSource, register_model

__all__ = [
    "TransformerTransducer",
    "StreamingDecoder",
    "AudioEncoderStep",
    "rnnt_loss",
    "extend_query",
    "extend_key",
    "relative_attention",
    "transformer_transducer",
    "transformer_transducer_small",
]


# ------------------------------------------------------------------------------------------- relative positions
def _angles(positions: torch.Tensor, pos_dim: int) -> torch.Tensor:
    """(N,) int positions -> (N, pos_dim // 2) float64 angles ``p * omega_k``, omega_k = 10000^(-2k / pos_dim)."""
    k = torch.arange(pos_dim // 2, device=positions.device, dtype=torch.float64)
    omega = torch.exp(k * (-2.0 * math.log(10000.0) / pos_dim))
    return positions.to(torch.float64)[:, None] * omega[None, :]


def extend_key(k: torch.Tensor, positions: torch.Tensor, pos_dim: int) -> torch.Tensor:
    """Keys with their position features: (B, H, N, Dh) + (N,) positions -> (B, H, N, Dh + pos_dim)."""
    a = _angles(positions, pos_dim)
    feat = torch.cat([torch.cos(a), torch.sin(a)], dim=-1).to(k.dtype)
    return torch.cat([k, feat.expand(k.shape[0], k.shape[1], -1, -1)], dim=-1)


def extend_query(
    q: torch.Tensor, positions: torch.Tensor, u: torch.Tensor, w: torch.Tensor, w_r: torch.Tensor
) -> torch.Tensor:
    """Transformer-XL query: (B, H, N, Dh) -> (B, H, N, Dh + P) so that ``extend_query . extend_key`` equals
    ``(q_i + u) . k_j + (q_i + w) . W_r s(i - j)`` with ``s(d) = [sin(omega d), cos(omega d)]``.

    u, w: (H, Dh) content / position biases. w_r: (H, Dh, P) per-head projection of the P-dim sinusoid.
    """
    p = w_r.shape[-1]
    coef = torch.einsum("bhnd,hdp->bhnp", q + w[None, :, None, :], w_r)  # coefficients of s(i - j)
    a_sin, a_cos = coef[..., : p // 2], coef[..., p // 2:]
    ang = _angles(positions, p)
    sin_i, cos_i = torch.sin(ang).to(q.dtype), torch.cos(ang).to(q.dtype)
    # sin(x-y) = sin x cos y - cos x sin y; cos(x-y) = cos x cos y + sin x sin y, grouped by cos(y), sin(y).
    q_pos = torch.cat([a_sin * sin_i + a_cos * cos_i, a_cos * sin_i - a_sin * cos_i], dim=-1)
    return torch.cat([q + u[None, :, None, :], q_pos], dim=-1)


ATTENTION_BACKEND = "auto"  # zoo.kernels.attention backend (benchmarks switch it: "sdpa", "triton", ...)


def relative_attention(q_ext, k_ext, v, mask, head_dim: int) -> torch.Tensor:
    """The one place attention is called: (B, H, Nq, Dh+P), (B, H, Nk, Dh+P), (B, H, Nk, Dh) -> (B, H, Nq, Dh).

    Scores are scaled by ``1 / sqrt(head_dim)`` (content and position terms alike, as in Transformer-XL).
    q and k follow v's dtype: under autocast the fp32 biases u, w would otherwise promote bf16 queries to fp32.
    """
    q_ext, k_ext = q_ext.to(v.dtype), k_ext.to(v.dtype)
    return attention(q_ext, k_ext, v, mask, scale=head_dim ** -0.5, backend=ATTENTION_BACKEND)


def context_mask(left: int, right: int, lengths: torch.Tensor | None):
    """``SlidingWindow(left, right) & KeyPadding(lengths)`` (either part omitted when it is the identity)."""
    win = None if (left < 0 and right < 0) else SlidingWindow(left, right)
    pad = None if lengths is None else KeyPadding(lengths.to(torch.int32))
    if win is not None and pad is not None:
        return win & pad
    return win if win is not None else pad


def _logaddexp(a: float, b: float) -> float:
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b))) if m > -math.inf else m


# ------------------------------------------------------------------------------------------------------- layers
class RelMultiHeadAttention(nn.Module):
    """Multi-head self-attention with Transformer-XL relative positions (folded into the head dim, see module doc)."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int, pos_dim: int, dropout: float):
        super().__init__()
        if pos_dim % 2:
            raise ValueError(f"pos_dim must be even, got {pos_dim}")
        self.h, self.dh, self.p = num_heads, head_dim, pos_dim
        self.q = nn.Linear(d_model, num_heads * head_dim)
        self.kv = nn.Linear(d_model, 2 * num_heads * head_dim)
        self.pos = nn.Linear(pos_dim, num_heads * head_dim, bias=False)  # W_r
        self.u = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.w = nn.Parameter(torch.zeros(num_heads, head_dim))
        self.out = nn.Linear(num_heads * head_dim, d_model)
        self.drop = nn.Dropout(dropout)

    def _w_r(self) -> torch.Tensor:
        return self.pos.weight.view(self.h, self.dh, self.p)

    def query(self, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, N, d_model) normalised input -> extended queries (B, H, N, Dh + P)."""
        b, n, _ = h.shape
        q = self.q(h).view(b, n, self.h, self.dh).transpose(1, 2)
        return extend_query(q, positions, self.u, self.w, self._w_r())

    def key_value(self, h: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, d_model) normalised input -> extended keys (B, H, N, Dh + P), values (B, H, N, Dh)."""
        b, n, _ = h.shape
        k, v = self.kv(h).view(b, n, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        return extend_key(k, positions, self.p), v

    def attend(self, q_ext, k_ext, v, mask) -> torch.Tensor:
        """Attention + output dense + dropout: -> (B, Nq, d_model)."""
        o = relative_attention(q_ext, k_ext, v, mask, self.dh)
        b, _, n, _ = o.shape
        return self.drop(self.out(o.transpose(1, 2).reshape(b, n, self.h * self.dh)))


class TransducerLayer(nn.Module):
    """Pre-LayerNorm Transformer layer (paper Fig. 2): LN -> MHA -> dense -> dropout -> residual;
    LN -> dense-ReLU-dropout-dense-dropout -> residual. The residual adds the layer input (standard pre-LN)."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int, ffn_dim: int, pos_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = RelMultiHeadAttention(d_model, num_heads, head_dim, pos_dim, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model), nn.Dropout(dropout)
        )

    def kv(self, x: torch.Tensor, positions: torch.Tensor):
        """Keys/values of layer inputs x (B, N, d_model) at absolute ``positions`` (N,)."""
        return self.attn.key_value(self.norm1(x), positions)

    def forward_q(self, x_q: torch.Tensor, q_pos: torch.Tensor, k_ext, v, mask) -> torch.Tensor:
        """Outputs for query rows ``x_q`` (B, Nq, d) given (possibly cached) keys/values."""
        x = x_q + self.attn.attend(self.attn.query(self.norm1(x_q), q_pos), k_ext, v, mask)
        return x + self.ffn(self.norm2(x))

    def forward(self, x: torch.Tensor, mask, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, d_model) -> (B, N, d_model); ``mask`` a zoo.kernels mask over (N, N)."""
        if positions is None:
            positions = torch.arange(x.shape[1], device=x.device)
        k, v = self.kv(x, positions)
        return self.forward_q(x, positions, k, v, mask)


class TransformerStack(nn.Module):
    """Identical layers + final LayerNorm, with limited left/right context per layer (-1 = unbounded)."""

    def __init__(self, num_layers, d_model, num_heads, head_dim, ffn_dim, pos_dim, dropout):
        super().__init__()
        self.layers = nn.ModuleList(
            TransducerLayer(d_model, num_heads, head_dim, ffn_dim, pos_dim, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None, left: int, right: int) -> torch.Tensor:
        """x (B, N, d) with valid lengths (B,) -> (B, N, d); rows past a length are padding (garbage)."""
        mask = context_mask(left, right, lengths)
        pos = torch.arange(x.shape[1], device=x.device)
        for layer in self.layers:
            x = layer(x, mask, pos)
        return self.norm(x)


# ------------------------------------------------------------------------------------------------ audio frontend
class LogMelFrontend(nn.Module):
    """16 kHz audio -> log-mel (32 ms window, 10 ms hop, ``center=False`` so chunked audio gives identical frames) ->
    ``stack`` frames stacked with stride ``stride`` (paper: 128 mels x 4 at 30 ms = 512-d). SpecAugment (frequency
    and time masking, no time warp) in training; masked bins are set to zero power (silence)."""

    def __init__(self, sample_rate=16000, n_mels=128, win_ms=32.0, hop_ms=10.0, stack=4, stride=3,
                 freq_masks=2, freq_mask_param=50, time_masks=10, time_mask_param=30, time_mask_p=1.0):
        super().__init__()
        import torchaudio

        self.win = int(round(sample_rate * win_ms / 1000))
        self.hop = int(round(sample_rate * hop_ms / 1000))
        self.n_mels, self.stack, self.stride = n_mels, stack, stride
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=self.win, win_length=self.win, hop_length=self.hop, n_mels=n_mels,
            center=False, power=2.0,
        )
        self.freq_masks = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(freq_mask_param, iid_masks=True) for _ in range(freq_masks)
        )
        self.time_masks = nn.ModuleList(
            torchaudio.transforms.TimeMasking(time_mask_param, iid_masks=True, p=time_mask_p) for _ in range(time_masks)
        )

    @property
    def out_dim(self) -> int:
        return self.n_mels * self.stack

    def num_mel_frames(self, samples: torch.Tensor) -> torch.Tensor:
        return torch.where(samples >= self.win, (samples - self.win) // self.hop + 1, torch.zeros_like(samples))

    def num_frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Stacked output frames for ``samples`` audio samples (int tensor)."""
        m = self.num_mel_frames(samples)
        return torch.where(m >= self.stack, (m - self.stack) // self.stride + 1, torch.zeros_like(m))

    def log_mel(self, audio: torch.Tensor, specaugment: bool = False) -> torch.Tensor:
        """(B, S) float -> (B, M, n_mels) log-mel."""
        p = self.mel(audio)  # (B, n_mels, M)
        if specaugment and p.shape[-1] > 0:
            p = p.unsqueeze(1)
            for m in self.freq_masks:
                p = m(p, 0.0)
            for m in self.time_masks:
                p = m(p, 0.0)
            p = p.squeeze(1)
        return torch.log(p + 1e-6).transpose(1, 2)

    def stack_frames(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, M, n_mels) -> (B, T, stack * n_mels): frame t = mel frames [stride t, stride t + stack)."""
        if mel.shape[1] < self.stack:
            return mel.new_zeros(mel.shape[0], 0, self.out_dim)
        x = mel.unfold(1, self.stack, self.stride)  # (B, T, n_mels, stack)
        return x.transpose(2, 3).reshape(x.shape[0], x.shape[1], self.out_dim)

    def forward(self, audio: torch.Tensor, lengths: torch.Tensor, specaugment: bool = False):
        """(B, S) audio, (B,) sample counts -> ((B, T, stack * n_mels), (B,) frame counts)."""
        return self.stack_frames(self.log_mel(audio, specaugment)), self.num_frames(lengths)


# -------------------------------------------------------------------------------------------------------- model
@dataclass
class _LabelState:
    """One hypothesis on the label side: emitted tokens, per-layer key/value caches, projected label output."""

    tokens: tuple
    caches: list = field(default_factory=list)  # per layer (k_ext (1,H,n,D+P), v (1,H,n,D)), last `label_left` pos
    proj: torch.Tensor | None = None  # (joint_dim,) label_proj of the label encoder output at the last position
    fed: int = 0  # positions fed so far (start symbol included)


class TransformerTransducer(nn.Module):
    """Transformer Transducer: audio encoder + label encoder (identical Transformer layers with relative positions
    and limited context), joint network ``Linear(tanh(A(audio) + L(label)))`` over the vocabulary incl. blank.

    Args:
        vocab_size: output units incl. blank (index ``blank``). The label encoder embeds the same ids; the
            start-of-sequence input is ``blank``.
        d_model, num_heads, head_dim, ffn_dim, pos_dim: layer widths (attention inner width = heads x head_dim;
            pos_dim = width of the relative sinusoid).
        audio_layers, label_layers: depths (paper 18 / 2).
        joint_dim: width of the joint network.
        audio_left, audio_right: per-layer audio context in frames (-1 = unbounded: full attention).
        label_left: per-layer label context (-1 = all previous labels).
        n_mels, stack, stride, sample_rate: frontend; specaugment: dict of LogMelFrontend masking args.
    """

    def __init__(self, vocab_size: int = 32, d_model: int = 512, num_heads: int = 8, head_dim: int = 64,
                 ffn_dim: int = 2048, pos_dim: int = 64, audio_layers: int = 18, label_layers: int = 2,
                 joint_dim: int = 512, dropout: float = 0.1, audio_left: int = -1, audio_right: int = -1,
                 label_left: int = -1, blank: int = 0, sample_rate: int = 16000, n_mels: int = 128, stack: int = 4,
                 stride: int = 3, specaugment: dict | None = None, max_symbols_per_frame: int = 8):
        super().__init__()
        if not 0 <= blank < vocab_size:
            raise ValueError(f"blank must be in [0, vocab_size={vocab_size}), got {blank}")
        for name, v in (("audio_left", audio_left), ("audio_right", audio_right), ("label_left", label_left)):
            if not isinstance(v, int) or v < -1:
                raise ValueError(f"{name} must be an int >= 0 or -1 (unbounded), got {v!r}")
        self.vocab_size, self.blank, self.d_model = vocab_size, blank, d_model
        self.audio_left, self.audio_right, self.label_left = audio_left, audio_right, label_left
        self.max_symbols_per_frame = max_symbols_per_frame
        self.sample_rate = sample_rate
        self.frontend = LogMelFrontend(sample_rate=sample_rate, n_mels=n_mels, stack=stack, stride=stride,
                                       **(specaugment or {}))
        self.input_norm = nn.LayerNorm(self.frontend.out_dim)
        self.input_proj = nn.Linear(self.frontend.out_dim, d_model)
        self.input_drop = nn.Dropout(dropout)
        args = (d_model, num_heads, head_dim, ffn_dim, pos_dim, dropout)
        self.audio_encoder = TransformerStack(audio_layers, *args)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.label_encoder = TransformerStack(label_layers, *args)
        self.audio_proj = nn.Linear(d_model, joint_dim)
        self.label_proj = nn.Linear(d_model, joint_dim, bias=False)
        self.joint_out = nn.Linear(joint_dim, vocab_size)

    # ---------------------------------------------------------------------------------------------- encoders
    def _context(self, left, right):
        return self.audio_left if left is None else left, self.audio_right if right is None else right

    def features(self, audio: torch.Tensor, audio_lengths: torch.Tensor):
        """(B, S) float audio at ``sample_rate``, (B,) int lengths -> projected frames (B, T, d_model), (B,) int."""
        if audio.dim() != 2:
            raise ValueError(f"audio must be (B, S), got shape {tuple(audio.shape)}")
        x, lengths = self.frontend(audio, audio_lengths, specaugment=self.training)
        return self.input_drop(self.input_proj(self.input_norm(x))), lengths

    def encode_audio(self, audio, audio_lengths, left: int | None = None, right: int | None = None):
        """Audio encoder output (B, T, d_model) and frame counts (B,) int64, under left/right context per layer
        (defaults: the model's ``audio_left`` / ``audio_right``)."""
        x, lengths = self.features(audio, audio_lengths)
        left, right = self._context(left, right)
        return self.audio_encoder(x, lengths, left, right), lengths

    def encode_labels(self, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """(B, U) int targets (no blanks), (B,) lengths -> (B, U + 1, d_model): position u sees labels < u
        (blank-prefixed, causal with ``label_left`` previous labels per layer)."""
        y = F.pad(targets.long(), (1, 0), value=self.blank)
        left = self.label_left
        x = self.embed(y)
        mask = SlidingWindow(left, 0) & KeyPadding((target_lengths + 1).to(torch.int32))
        pos = torch.arange(x.shape[1], device=x.device)
        for layer in self.label_encoder.layers:
            x = layer(x, mask, pos)
        return self.label_encoder.norm(x)

    def joint(self, audio_enc: torch.Tensor, label_enc: torch.Tensor) -> torch.Tensor:
        """(B, T, d), (B, U + 1, d) -> logits (B, T, U + 1, vocab)."""
        a = self.audio_proj(audio_enc).unsqueeze(2)
        lab = self.label_proj(label_enc).unsqueeze(1)
        return self.joint_out(torch.tanh(a + lab))

    def forward(self, audio, audio_lengths, targets, target_lengths, left=None, right=None,
                fused_loss: bool = False) -> dict:
        """Training step: audio (B, S) float, audio_lengths (B,), targets (B, U) int (padded), target_lengths (B,).

        Returns ``{"loss": mean RNN-T loss (scalar fp32), "logit_lengths": (B,)}``. See :func:`rnnt_loss` for memory.
        ``fused_loss``: joint + loss in one Triton kernel set (``zoo.kernels.rnnt.fused_rnnt_loss``), never
        materialising the (B, T, U+1, V) logits; same loss and gradients (falls back to this path off CUDA).
        """
        enc, lengths = self.encode_audio(audio, audio_lengths, left, right)
        lab = self.encode_labels(targets, target_lengths)
        if fused_loss:
            from zoo.kernels.rnnt import fused_rnnt_loss

            loss = fused_rnnt_loss(self.audio_proj(enc), self.label_proj(lab), self.joint_out.weight,
                                   self.joint_out.bias, targets, lengths, target_lengths, blank=self.blank)
            return {"loss": loss, "logit_lengths": lengths}
        logits = self.joint(enc, lab)
        loss = rnnt_loss(logits, targets, lengths, target_lengths, blank=self.blank)
        return {"loss": loss, "logit_lengths": lengths}

    # ------------------------------------------------------------------------------------- label-side stepping
    def _label_start(self) -> _LabelState:
        """Label state after feeding the start symbol (blank) at position 0."""
        return self._label_step(_LabelState(tokens=(), caches=[None] * len(self.label_encoder.layers)), self.blank)

    def _label_step(self, state: _LabelState, token: int) -> _LabelState:
        """Feed one label id at the next position, with cached keys/values of the last ``label_left`` positions."""
        dev = self.embed.weight.device
        pos = torch.tensor([state.fed], device=dev)
        x = self.embed(torch.tensor([[token]], device=dev))
        caches = []
        for layer, cache in zip(self.label_encoder.layers, state.caches):
            k, v = layer.kv(x, pos)
            if cache is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            x = layer.forward_q(x, pos, k, v, None)  # the cache holds exactly the visible keys
            keep = k.shape[2] if self.label_left < 0 else self.label_left
            caches.append((k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]))
        proj = self.label_proj(self.label_encoder.norm(x))[0, 0]
        tokens = state.tokens + (token,) if state.fed > 0 else state.tokens
        return _LabelState(tokens=tokens, caches=caches, proj=proj, fed=state.fed + 1)

    def _log_probs(self, a_t: torch.Tensor, state: _LabelState) -> torch.Tensor:
        return torch.log_softmax(self.joint_out(torch.tanh(a_t + state.proj)).float(), dim=-1)

    def _greedy_advance(self, state: _LabelState, a: torch.Tensor, max_symbols: int) -> _LabelState:
        """Greedy RNN-T over projected audio frames ``a`` (T, joint_dim) from label state ``state``."""
        for t in range(a.shape[0]):
            for _ in range(max_symbols):
                k = int(self.joint_out(torch.tanh(a[t] + state.proj)).argmax())
                if k == self.blank:
                    break
                state = self._label_step(state, k)
        return state

    # --------------------------------------------------------------------------------------------- decoding
    @torch.no_grad()
    def greedy_search(self, audio, audio_lengths, left=None, right=None, max_symbols: int | None = None):
        """Greedy decoding of a batch: -> list of token-id lists (blank removed)."""
        enc, lengths = self.encode_audio(audio, audio_lengths, left, right)
        return self.greedy_from_encoder(enc, lengths, max_symbols)

    @torch.no_grad()
    def greedy_from_encoder(self, enc, lengths, max_symbols: int | None = None) -> list[list[int]]:
        """Greedy decoding from audio-encoder output (B, T, d) and lengths (B,)."""
        ms = self.max_symbols_per_frame if max_symbols is None else max_symbols
        a = self.audio_proj(enc)
        out = []
        for b in range(enc.shape[0]):
            st = self._greedy_advance(self._label_start(), a[b, : int(lengths[b])], ms)
            out.append(list(st.tokens))
        return out

    @torch.no_grad()
    def beam_search(self, audio, audio_lengths, beam: int = 4, left=None, right=None,
                    max_symbols: int | None = None) -> list[list[int]]:
        """Time-synchronous beam search with prefix merging (hypotheses with equal label sequences at the same
        frame are merged by log-add). Up to ``max_symbols`` labels per frame; ``beam=1`` equals greedy."""
        if not isinstance(beam, int) or beam < 1:
            raise ValueError(f"beam must be an int >= 1, got {beam!r}")
        enc, lengths = self.encode_audio(audio, audio_lengths, left, right)
        ms = self.max_symbols_per_frame if max_symbols is None else max_symbols
        a = self.audio_proj(enc)
        return [self._beam_one(a[b, : int(lengths[b])], beam, ms) for b in range(enc.shape[0])]

    def _beam_one(self, a: torch.Tensor, beam: int, max_symbols: int) -> list[int]:
        hyps = {(): (0.0, self._label_start())}  # tokens -> (log prob, label state), at the start of frame t
        for t in range(a.shape[0]):
            done: dict = {}  # hypotheses that consumed frame t (emitted blank), by tokens
            active = hyps  # hypotheses that may still emit labels at frame t
            for _ in range(max_symbols):
                pool: dict = {(toks, None): (lp, st) for toks, (lp, st) in done.items()}
                for toks, (lp, st) in active.items():
                    logp = self._log_probs(a[t], st)
                    key = (toks, None)  # blank: same prefix after frame t -> merge (prefix merging)
                    lb = lp + float(logp[self.blank])
                    pool[key] = (_logaddexp(pool[key][0], lb), st) if key in pool else (lb, st)
                    top = torch.topk(logp, min(beam + 1, logp.numel()))
                    for v, k in zip(top.values.tolist(), top.indices.tolist()):
                        if k != self.blank:
                            pool[(toks + (k,), k)] = (lp + v, st)
                best = sorted(pool.items(), key=lambda kv: -kv[1][0])[:beam]
                done = {toks: v for (toks, k), v in best if k is None}
                active = {toks: (lp, self._label_step(st, k)) for (toks, k), (lp, st) in best if k is not None}
                if not active:
                    break
            for toks, (lp, st) in active.items():  # max_symbols reached: carry over to the next frame
                done[toks] = (_logaddexp(done[toks][0], lp), st) if toks in done else (lp, st)
            hyps = done
        return list(max(hyps.items(), key=lambda kv: kv[1][0])[0])

    def streaming_decoder(self, left: int | None = None, right: int | None = None, **kw) -> "StreamingDecoder":
        """A :class:`StreamingDecoder` over this model (eval mode, no grad)."""
        return StreamingDecoder(self, left=left, right=right, **kw)


# ---------------------------------------------------------------------------------------------------- RNN-T loss
def rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor,
              blank: int = 0, reduction: str = "mean", clamp: float = -1.0) -> torch.Tensor:
    """RNN-T loss via ``torchaudio.functional.rnnt_loss`` (logits cast to fp32, targets/lengths to int32).

    logits (B, T, U + 1, V) raw joint outputs; targets (B, U); lengths (B,). "mean" = mean of per-utterance losses.

    Memory: the logits hold B*T*(U+1)*V*4 bytes and torchaudio keeps a same-size gradient from the forward, so the
    loss needs 2 x B*T*(U+1)*V*4 bytes (plus the joint's tanh activations, B*T*(U+1)*joint_dim*4). For the configs:
    - ``transformer_transducer_small`` on offline_speech (batch 16, <= 5.5 s -> T <= 183, U <= 90, V 29):
      16*183*91*29*4 = 31 MB logits, 62 MB with the gradient; joint activations (joint_dim 256) 273 MB.
    - paper size on LibriSpeech (per-core batch 16, 16.7 s -> T 556, U 300 graphemes, V ~ 30):
      16*556*301*30*4 = 321 MB logits, 643 MB with the gradient (joint activations at joint_dim 1024: 11 GB).
    """
    import torchaudio

    if logits.dim() != 4:
        raise ValueError(f"logits must be (B, T, U+1, V), got shape {tuple(logits.shape)}")
    return torchaudio.functional.rnnt_loss(
        logits.float(), targets.to(torch.int32).contiguous(), logit_lengths.to(torch.int32),
        target_lengths.to(torch.int32), blank=blank, reduction=reduction, clamp=clamp,
    )


# ----------------------------------------------------------------------------------------------- streaming decode
class StreamingDecoder:
    """Chunk-by-chunk greedy decoding of one utterance with cached left context per layer.

    ``accept(chunk)`` takes 1-D float audio (any number of samples) and returns the tokens emitted so far by this
    call; ``finish()`` flushes the look-ahead. The emitted token sequence equals ``model.greedy_search`` on the whole
    utterance under the same (left, right) masks: each layer's output at frame t is computed once all its inputs in
    ``[t - left, t + right]`` exist, from cached keys/values of the last ``left`` frames (``right`` must be >= 0).
    Latency: ``right * audio_layers`` frames of look-ahead plus the chunk.
    """

    def __init__(self, model: TransformerTransducer, left: int | None = None, right: int | None = None,
                 max_symbols: int | None = None):
        self.model = model
        self.left, self.right = model._context(left, right)
        if self.right < 0:
            raise ValueError("streaming needs a bounded right context (right >= 0); full attention is not streamable")
        self.max_symbols = model.max_symbols_per_frame if max_symbols is None else max_symbols
        fe = model.frontend
        self.p = next(model.parameters())
        self._samples = self.p.new_zeros(0)
        self._mel = self.p.new_zeros(0, fe.n_mels)
        self._frames_in = 0  # stacked frames fed to layer 0
        n = len(model.audio_encoder.layers)
        self._done = [0] * n  # outputs computed per layer
        self._avail = [0] * n  # inputs received per layer
        self._pending = [None] * n  # inputs [done, avail)
        self._kv = [None] * n  # (k_ext, v, first position) of inputs [max(0, done-left), avail)
        self._label = model._label_start()
        self._finished = False

    @property
    def tokens(self) -> list[int]:
        return list(self._label.tokens)

    @torch.no_grad()
    def accept(self, chunk: torch.Tensor) -> list[int]:
        """Feed a 1-D chunk of audio samples; returns newly emitted token ids."""
        if self._finished:
            raise RuntimeError("finish() was called; create a new StreamingDecoder for the next utterance")
        if chunk.dim() != 1:
            raise ValueError(f"chunk must be 1-D audio samples, got shape {tuple(chunk.shape)}")
        self._samples = torch.cat([self._samples, chunk.to(self._samples)])
        return self._run(final=False)

    @torch.no_grad()
    def finish(self) -> list[int]:
        """End of utterance: compute the frames that waited for right context; returns newly emitted tokens."""
        if self._finished:
            return []
        out = self._run(final=True)
        self._finished = True
        return out

    def _new_frames(self) -> torch.Tensor:
        fe = self.model.frontend
        n_mel = int(fe.num_mel_frames(torch.tensor(self._samples.numel())))
        if n_mel > 0:
            used = n_mel * fe.hop
            mel = fe.log_mel(self._samples[: used - fe.hop + fe.win][None])[0]
            self._mel = torch.cat([self._mel, mel])
            self._samples = self._samples[used:]
        n_st = (self._mel.shape[0] - fe.stack) // fe.stride + 1 if self._mel.shape[0] >= fe.stack else 0
        if n_st == 0:
            return self._mel.new_zeros(0, fe.out_dim)
        x = fe.stack_frames(self._mel[None])[0, :n_st]
        self._mel = self._mel[n_st * fe.stride:]
        m = self.model
        return m.input_proj(m.input_norm(x))

    def _run(self, final: bool) -> list[int]:
        m = self.model
        before = len(self._label.tokens)
        x_new = self._new_frames()[None]  # (1, n, d)
        L, R = self.left, self.right
        for li, layer in enumerate(m.audio_encoder.layers):
            n_new = x_new.shape[1]
            if n_new:
                pos = torch.arange(self._avail[li], self._avail[li] + n_new, device=x_new.device)
                k, v = layer.kv(x_new, pos)
                if self._kv[li] is None:
                    self._kv[li] = (k, v, 0)
                    self._pending[li] = x_new
                else:
                    k0, v0, s = self._kv[li]
                    self._kv[li] = (torch.cat([k0, k], 2), torch.cat([v0, v], 2), s)
                    self._pending[li] = torch.cat([self._pending[li], x_new], 1)
                self._avail[li] += n_new
            q0, avail = self._done[li], self._avail[li]
            q1 = avail if final else max(q0, avail - R)
            if q1 <= q0:
                x_new = x_new[:, :0]
                continue
            k_all, v_all, s = self._kv[li]
            k0 = 0 if L < 0 else max(0, q0 - L)
            k1 = min(avail, q1 + R)
            keys, vals = k_all[:, :, k0 - s:k1 - s], v_all[:, :, k0 - s:k1 - s]
            nq, nk = q1 - q0, k1 - k0
            off = nk - nq
            left_w = -1 if L < 0 else off - (q0 - k0) + L
            right_w = q0 - k0 + R - off
            mask = SlidingWindow(left_w, right_w)
            x_q = self._pending[li][:, :nq]
            x_new = layer.forward_q(x_q, torch.arange(q0, q1, device=x_q.device), keys, vals, mask)
            self._pending[li] = self._pending[li][:, nq:]
            self._done[li] = q1
            if L >= 0:  # keep keys of positions >= q1 - L only
                cut = max(0, q1 - L) - s
                if cut > 0:
                    self._kv[li] = (k_all[:, :, cut:], v_all[:, :, cut:], s + cut)
        if x_new.shape[1]:
            a = m.audio_proj(m.audio_encoder.norm(x_new))[0]
            self._label = m._greedy_advance(self._label, a, self.max_symbols)
        return list(self._label.tokens[before:])


# ---------------------------------------------------------------------------------------- exportable encoder step
class AudioEncoderStep(nn.Module):
    """Fixed-shape streaming step of the audio encoder, for ``torch.export``: ``chunk`` new projected frames in,
    ``chunk`` encoder frames out, with per-layer caches as explicit tensors.

    Every layer lags ``right`` frames behind the one below: at step s (``start = s * chunk``), layer l computes
    positions ``[start - right (l + 1), ... + chunk)``. Positions < 0 (warm-up) are invalid: their keys are masked by
    reversing the key/query order (positions live in the features, so order does not matter) and ``KeyPadding``
    on the count of valid keys. Outputs of the last layer are positions ``start - right * layers + [0, chunk)``;
    the caller drops negative ones. End-of-utterance flushing is left to :class:`StreamingDecoder`.

    forward(x (1, chunk, d_model), start () int64, k_cache (layers, 1, H, left + right, Dh + P),
    v_cache (layers, 1, H, left + right, Dh), x_cache (layers, 1, right, d_model)) -> (y, k_cache, v_cache, x_cache).
    """

    def __init__(self, model: TransformerTransducer, chunk: int, left: int, right: int):
        super().__init__()
        if left < 0 or right < 0 or chunk < 1:
            raise ValueError(f"need left >= 0, right >= 0, chunk >= 1; got {left}, {right}, {chunk}")
        self.enc, self.chunk, self.left, self.right = model.audio_encoder, chunk, left, right
        a = model.audio_encoder.layers[0].attn
        self.h, self.dh, self.p, self.d = a.h, a.dh, a.p, model.d_model

    def init_cache(self, dtype=torch.float32, device=None):
        n, L, R = len(self.enc.layers), self.left, self.right
        return (torch.zeros(n, 1, self.h, L + R, self.dh + self.p, dtype=dtype, device=device),
                torch.zeros(n, 1, self.h, L + R, self.dh, dtype=dtype, device=device),
                torch.zeros(n, 1, R, self.d, dtype=dtype, device=device))

    def forward(self, x, start, k_cache, v_cache, x_cache):
        C, L, R = self.chunk, self.left, self.right
        ks, vs, xs = [], [], []
        for li, layer in enumerate(self.enc.layers):
            p0 = start - R * (li + 1)  # first query position of this layer
            new_pos = p0 + R + torch.arange(C, device=x.device)
            k_new, v_new = layer.kv(x, new_pos)
            k = torch.cat([k_cache[li], k_new], 2)  # positions [p0 - L, p0 + R + C)
            v = torch.cat([v_cache[li], v_new], 2)
            xq_all = torch.cat([x_cache[li], x], 1)  # inputs at positions [p0, p0 + R + C)
            xq = xq_all[:, :C]
            q_pos = p0 + torch.arange(C, device=x.device)
            n_valid = torch.clamp(p0 + C + R, min=0, max=L + C + R).to(torch.int32).reshape(1)
            qn = layer.norm1(xq)
            q_ext = layer.attn.query(qn, q_pos).flip(2)
            mask = SlidingWindow(L + R, 0) & KeyPadding(n_valid, max_length=L + C + R)
            o = relative_attention(q_ext, k.flip(2), v.flip(2), mask, self.dh).flip(2)
            att = layer.attn.out(o.transpose(1, 2).reshape(1, C, self.h * self.dh))
            h = xq + att
            y = h + layer.ffn(layer.norm2(h))
            ks.append(k[:, :, C:])
            vs.append(v[:, :, C:])
            xs.append(xq_all[:, C:])
            x = y
        return self.enc.norm(x), torch.stack(ks), torch.stack(vs), torch.stack(xs)


# ------------------------------------------------------------------------------------------------------ configs
# Paper Table 1 (from secondary sources, the PDF table could not be read here): 512-d input features/embedding,
# dense layers 2048 and 1024, 8 heads of 64, dropout 0.1; 18 audio + 2 label layers; 139M parameters (Conformer
# paper). A 1024-wide residual stream with 8x64 attention and a 2048 FFN is the reading that gives ~139M; see
# docs/models/transducer.md for the count.
_VARIANTS = {
    "paper": dict(d_model=1024, num_heads=8, head_dim=64, ffn_dim=2048, pos_dim=64, audio_layers=18, label_layers=2,
                  joint_dim=1024, dropout=0.1,
                  specaugment=dict(freq_masks=2, freq_mask_param=50, time_masks=10, time_mask_param=30)),
    "small": dict(d_model=144, num_heads=4, head_dim=32, ffn_dim=576, pos_dim=32, audio_layers=6, label_layers=1,
                  joint_dim=160, dropout=0.1,
                  specaugment=dict(freq_masks=2, freq_mask_param=27, time_masks=2, time_mask_param=20,
                                   time_mask_p=0.1)),
}

_INPUT_SPEC = {"shape": ("S",), "dtype": "float32", "sample_rate": 16000, "lengths": "(B,) int64 sample counts"}
_PAPER = "arXiv:2002.02562"
_TITLE = "Transformer Transducer: A Streamable Speech Recognition Model with Transformer Encoders and RNN-T Loss"


@register_model(paper=_PAPER, title=_TITLE, task="speech-recognition", license="apache-2.0", input_spec=_INPUT_SPEC)
def transformer_transducer(**kwargs) -> nn.Module:
    """Transformer Transducer at the paper's size (18 audio + 2 label layers, ~139M parameters with a grapheme
    vocabulary). kwargs override constructor args (e.g. ``vocab_size``, ``audio_left=10, audio_right=2``)."""
    return TransformerTransducer(**{**_VARIANTS["paper"], **kwargs})


@register_model(
    paper=_PAPER, title=_TITLE, task="speech-recognition", license="apache-2.0", input_spec=_INPUT_SPEC,
    pretrained={
        # Trained by the zoo on the offline speech corpus (`python -m zoo.datasets.offline_speech prepare`):
        # held-out human prompts, greedy decoding; character tokenizer in the folder's tokenizer.json.
        "offline_speech": PretrainedSource(
            repo_id="zoo-models/transformer_transducer_small.offline_speech", dataset="offline_speech",
            sha256="2a672cd4f76d449be35989f9d367207bdcfdcaf9c4e64ea4cede3cd60d116a77",
            metrics={"cer_full": 0.5308, "wer_full": 0.7752, "cer_l10_r2": 0.5338,
                     "wer_l10_r2": 0.8154}),
    },
)
def transformer_transducer_small(**kwargs) -> nn.Module:
    """Small Transformer Transducer (6 audio + 1 label layers, d_model 144, ~1.6M parameters) that trains on
    2 CPU cores. kwargs override constructor args."""
    return TransformerTransducer(**{**_VARIANTS["small"], **kwargs})
