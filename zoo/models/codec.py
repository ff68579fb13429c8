"""Audio codecs for token-based speech models: the ``Codec`` interface and an offline log-mel vector-quantised codec
(``MelVQCodec``). WavTokenizer (Ji et al., arXiv:2408.16532; the codec of the released Lina-Speech models) implements
the same interface in ``zoo.models.wavtokenizer``.

A codec maps a waveform to discrete tokens and back:

    codes = codec.encode(wav)      # wav (T,) or (B, T) float32 at codec.sample_rate -> (Q, n) / (B, Q, n) int64
    wav = codec.decode(codes)      # (Q, n) / (B, Q, n) -> (n * hop_length,) / (B, n * hop_length) float32

``frame_rate = sample_rate / hop_length`` tokens per second per codebook, ``n_quant`` codebooks of
``codebook_size`` codes.

``MelVQCodec`` needs no downloaded weights: log-mel frames (normalised per channel) are quantised by a residual
k-means codebook fitted on the training audio (:meth:`MelVQCodec.fit`); decoding inverts the mel filterbank with
torchaudio's ``InverseMelScale`` and recovers phase with Griffin-Lim. It is a low-quality codec whose ceiling is
measured (benchmarks/lina_speech.py), enough to train and evaluate a TTS model end to end offline.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Codec", "MelVQCodec", "kmeans"]


class Codec(nn.Module):
    """Interface of a waveform <-> token codec. Subclasses set ``sample_rate``, ``hop_length``, ``n_quant``,
    ``codebook_size`` and implement :meth:`encode` / :meth:`decode` on batched input."""

    sample_rate: int
    hop_length: int
    n_quant: int
    codebook_size: int

    @property
    def frame_rate(self) -> float:
        """Token frames per second."""
        return self.sample_rate / self.hop_length

    def _encode(self, wav: Tensor) -> Tensor:  # (B, T) -> (B, Q, n)
        raise NotImplementedError

    def _decode(self, codes: Tensor) -> Tensor:  # (B, Q, n) -> (B, n * hop)
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, wav: Tensor) -> Tensor:
        """wav (T,) or (B, T) float at ``sample_rate`` -> codes (Q, n) or (B, Q, n) int64, n = ceil(T / hop)."""
        if not isinstance(wav, Tensor) or wav.dim() not in (1, 2) or not wav.is_floating_point():
            raise ValueError(f"wav must be a float tensor (T,) or (B, T), got {getattr(wav, 'shape', type(wav))}")
        one = wav.dim() == 1
        codes = self._encode(wav[None] if one else wav)
        return codes[0] if one else codes

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (Q, n) or (B, Q, n) int -> wav (n * hop,) or (B, n * hop) float32."""
        if not isinstance(codes, Tensor) or codes.dim() not in (2, 3) or codes.shape[-2] != self.n_quant:
            raise ValueError(f"codes must be (Q={self.n_quant}, n) or (B, Q, n), got {getattr(codes, 'shape', None)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        one = codes.dim() == 2
        wav = self._decode((codes[None] if one else codes).long())
        return wav[0] if one else wav


# ----------------------------------------------------------------------------------------------------------------
# Offline mel-VQ codec
# ----------------------------------------------------------------------------------------------------------------
def kmeans(x: Tensor, k: int, iters: int = 20, generator: torch.Generator | None = None,
           chunk: int = 65536) -> Tensor:
    """Lloyd's k-means on x (N, D) float32 -> centroids (k, D). Initialised from k random rows; an empty cluster
    is re-seeded with a random row."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means needs at least k={k} vectors, got {n}")
    c = x[torch.randperm(n, generator=generator)[:k]].clone()
    for _ in range(iters):
        assign = _nearest(x, c, chunk)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        empty = counts == 0
        c = sums / counts.clamp_min(1)[:, None]
        if empty.any():
            c[empty] = x[torch.randint(0, n, (int(empty.sum()),), generator=generator)]
    return c


def _nearest(x: Tensor, c: Tensor, chunk: int = 65536) -> Tensor:
    c2 = (c * c).sum(-1)
    out = []
    for i in range(0, x.shape[0], chunk):
        xi = x[i : i + chunk]
        out.append((c2[None] - 2 * xi @ c.T).argmin(-1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


class MelVQCodec(Codec):
    """Log-mel frames, per-channel normalised, residual vector-quantised with ``n_quant`` k-means codebooks.

    Buffers (saved in ``codec.safetensors``): ``codebooks`` (Q, K, n_mels), ``mean`` / ``std`` (n_mels,) of the
    log-mel features. Decoding: de-normalise, ``exp``, ``InverseMelScale`` (least squares, clamped >= 0), then
    ``griffin_lim_iters`` Griffin-Lim iterations (momentum 0.99) to a waveform.
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 80,
                 n_quant: int = 2, codebook_size: int = 512, f_max: float | None = None, griffin_lim_iters: int = 32):
        super().__init__()
        import torchaudio

        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.n_quant, self.codebook_size, self.griffin_lim_iters = n_quant, codebook_size, griffin_lim_iters
        f_max = f_max or sample_rate / 2
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length,
                                                        n_mels=n_mels, f_max=f_max, power=1.0, center=True)
        self.inv_mel = torchaudio.transforms.InverseMelScale(n_fft // 2 + 1, n_mels, sample_rate, f_max=f_max)
        self.register_buffer("codebooks", torch.zeros(n_quant, codebook_size, n_mels))
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON) to rebuild this codec."""
        return dict(sample_rate=self.sample_rate, n_fft=self.n_fft, hop_length=self.hop_length, n_mels=self.n_mels,
                    n_quant=self.n_quant, codebook_size=self.codebook_size,
                    griffin_lim_iters=self.griffin_lim_iters)

    def state_dict(self, *args, **kw):  # only the fitted buffers (the transforms' windows / filterbanks are derived)
        sd = super().state_dict(*args, **kw)
        return {k: v for k, v in sd.items() if k.split(".")[-1] in ("codebooks", "mean", "std") and "." not in k}

    def load_state_dict(self, sd, strict: bool = True, assign: bool = False):
        want = {"codebooks", "mean", "std"}
        if strict and set(sd) != want:
            raise KeyError(f"MelVQCodec state dict must have keys {sorted(want)}, got {sorted(sd)}")
        for k in want & set(sd):
            getattr(self, k).copy_(sd[k])

    def features(self, wav: Tensor) -> Tensor:
        """wav (B, T) -> normalised log-mel (B, n, n_mels), n = T // hop + 1 frames cut to ceil(T / hop)."""
        n = math.ceil(wav.shape[-1] / self.hop_length)
        m = self.mel(wav.float())[..., :n]  # (B, M, n)
        return ((torch.log(m.clamp_min(1e-5)).transpose(1, 2)) - self.mean) / self.std

    def quantize(self, feats: Tensor) -> Tensor:
        """Residual VQ of (N, n_mels) -> codes (Q, N)."""
        r, out = feats, []
        for q in range(self.n_quant):
            idx = _nearest(r, self.codebooks[q])
            out.append(idx)
            r = r - self.codebooks[q][idx]
        return torch.stack(out, 0)

    def dequantize(self, codes: Tensor) -> Tensor:
        """codes (B, Q, n) -> normalised log-mel (B, n, n_mels)."""
        return sum(self.codebooks[q][codes[:, q]] for q in range(self.n_quant))

    def _encode(self, wav: Tensor) -> Tensor:
        f = self.features(wav)
        b, n, m = f.shape
        return self.quantize(f.reshape(-1, m)).reshape(self.n_quant, b, n).transpose(0, 1)

    def mel_to_wav(self, logmel: Tensor, n_iter: int | None = None) -> Tensor:
        """Normalised log-mel (B, n, n_mels) -> wav (B, n * hop) by inverse mel + Griffin-Lim."""
        import torchaudio

        n = logmel.shape[1]
        short = math.ceil(self.n_fft / self.hop_length) + 1 - n
        if short > 0:  # Griffin-Lim's STFT needs a few frames: pad with silence, cut afterwards
            pad = ((math.log(1e-5) - self.mean) / self.std).expand(logmel.shape[0], short, -1)
            return self.mel_to_wav(torch.cat([logmel, pad.to(logmel)], 1), n_iter)[:, : n * self.hop_length]
        mel = torch.exp(logmel * self.std + self.mean).transpose(1, 2)  # (B, M, n) magnitudes
        spec = self.inv_mel(mel).clamp_min(0)
        spec = torch.cat([spec, spec[..., -1:]], -1)  # n + 1 centred frames span n * hop samples
        gl = torchaudio.transforms.GriffinLim(n_fft=self.n_fft, hop_length=self.hop_length, power=1.0,
                                              n_iter=n_iter or self.griffin_lim_iters, momentum=0.99,
                                              length=logmel.shape[1] * self.hop_length).to(spec.device)
        with torch.random.fork_rng(devices=[]):  # Griffin-Lim's random initial phase: reproducible audio
            torch.manual_seed(0)
            return gl(spec)

    def _decode(self, codes: Tensor) -> Tensor:
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 0)
        return self.mel_to_wav(self.dequantize(codes))

    @classmethod
    def fit(cls, wavs: list[Tensor], max_frames: int = 200_000, iters: int = 20, seed: int = 0,
            **kw: Any) -> "MelVQCodec":
        """Fit the normalisation and the residual k-means codebooks on training waveforms (each (T,) at
        ``sample_rate``), from at most ``max_frames`` random frames."""
        codec = cls(**kw)
        g = torch.Generator().manual_seed(seed)
        feats = torch.cat([codec.features(w[None])[0] for w in wavs], 0)  # normalised with mean 0 / std 1 (init)
        if feats.shape[0] > max_frames:
            feats = feats[torch.randperm(feats.shape[0], generator=g)[:max_frames]]
        codec.mean.copy_(feats.mean(0))
        codec.std.copy_(feats.std(0).clamp_min(1e-3))
        r = (feats - codec.mean) / codec.std
        for q in range(codec.n_quant):
            codec.codebooks[q] = kmeans(r, codec.codebook_size, iters, g)
            r = r - codec.codebooks[q][_nearest(r, codec.codebooks[q])]
        return codec
