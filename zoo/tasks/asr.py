"""Speech recognition with a transducer: :class:`SpeechRecognitionTask` and the character tokenizer.

Batches come from :func:`zoo.datasets.librispeech.collate_speech` (``audio`` (B, S) float32, ``audio_lengths`` (B,),
``texts``). The task tokenizes, trains with the RNN-T loss (optionally sampling the attention context per step from
``train_contexts`` so one model serves full-context and streaming decoding), and in validation/test decodes greedily
and logs WER and CER (torchmetrics) for every entry of ``eval_contexts``. The tokenizer is stored in the task's
hyper-parameters (so in every checkpoint) and written as ``tokenizer.json`` next to a hub folder.
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import torch

from zoo.tasks.base import ZooTask

__all__ = ["CharTokenizer", "SpeechRecognitionTask", "DEFAULT_CHARS"]

DEFAULT_CHARS = " 'abcdefghijklmnopqrstuvwxyz"


class CharTokenizer:
    """Character tokenizer: id 0 is the blank, ids 1.. are ``chars``. Text is lower-cased and characters outside
    the vocabulary are dropped (runs of spaces collapse)."""

    def __init__(self, chars: str = DEFAULT_CHARS):
        if len(set(chars)) != len(chars) or not chars:
            raise ValueError(f"chars must be a non-empty string of distinct characters, got {chars!r}")
        self.chars = chars
        self._index = {c: i + 1 for i, c in enumerate(chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def blank(self) -> int:
        return 0

    def normalize(self, text: str) -> str:
        t = "".join(c for c in text.lower() if c in self._index)
        return re.sub(r"\s+", " ", t).strip()

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in self.normalize(text)]

    def decode(self, ids) -> str:
        return "".join(self.chars[i - 1] for i in ids if 0 < i <= len(self.chars))

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars, "blank": 0}

    @classmethod
    def from_dict(cls, d: dict | None) -> "CharTokenizer":
        if d is None:
            return cls()
        if d.get("type", "char") != "char":
            raise ValueError(f"unsupported tokenizer type {d.get('type')!r}; expected 'char'")
        return cls(d.get("chars", DEFAULT_CHARS))

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (a file path, or a folder to write it into)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        return cls.from_dict(json.loads(path.read_text()))


def _contexts(spec, what: str) -> dict[str, tuple[int, int]]:
    if spec is None:
        return {}
    if isinstance(spec, (list, tuple)):
        spec = {f"l{l}_r{r}" if l >= 0 or r >= 0 else "full": (l, r) for l, r in spec}
    if not isinstance(spec, dict):
        raise TypeError(f"{what} must be a dict name -> [left, right] or a list of [left, right], got {spec!r}")
    out = {}
    for name, lr in spec.items():
        if not (isinstance(lr, (list, tuple)) and len(lr) == 2 and all(isinstance(v, int) and v >= -1 for v in lr)):
            raise ValueError(f"{what}[{name!r}] must be [left, right] ints >= -1, got {lr!r}")
        out[str(name)] = (int(lr[0]), int(lr[1]))
    return out


class SpeechRecognitionTask(ZooTask):
    """RNN-T training of a registered transducer (default ``transformer_transducer_small``).

    Args:
        model, model_args, pretrained, optimizer, scheduler: see :class:`ZooTask`. ``vocab_size`` and ``blank`` are
            filled in from the tokenizer. Paper recipe: ``scheduler: {name: noam, warmup_steps: 4000,
            hold_steps: 26000, decay: exponential, decay_rate: 0.01, decay_steps: 170000}`` with Adam lr 2.5e-4.
        tokenizer: ``{"type": "char", "chars": ...}`` (default ``" 'a-z"``).
        train_contexts: audio ``[left, right]`` contexts to sample from per training step (None: the model's own).
        eval_contexts: ``{name: [left, right]}`` decoded in validation/test; metrics ``wer``/``cer`` for the first,
            ``wer_<name>``/``cer_<name>`` for every one.
        decode_val: greedy-decode in validation (WER/CER); off makes validation loss-only and fast.
        fused_loss: compute the joint + RNN-T loss with the fused Triton kernels (``zoo.kernels.rnnt``; no
            (B, T, U+1, V) logits in memory) instead of the materialised joint + torchaudio (CUDA only; the CPU
            falls back to the materialised path).
    """

    def __init__(self, model: str = "transformer_transducer_small", model_args: dict | None = None,
                 pretrained: bool | str = False, optimizer: dict | None = None, scheduler: dict | None = None,
                 tokenizer: dict | None = None, train_contexts: list | None = None,
                 eval_contexts: dict | list | None = None, decode_val: bool = True, fused_loss: bool = False):
        tok = CharTokenizer.from_dict(tokenizer)
        model_args = {**(model_args or {}), "vocab_size": tok.vocab_size, "blank": tok.blank}
        super().__init__(model, model_args, pretrained, optimizer, scheduler)
        self.tokenizer = tok
        self.train_contexts = list(_contexts(train_contexts, "train_contexts").values())
        self.eval_contexts = _contexts(eval_contexts, "eval_contexts") or {
            "model": (self.model.audio_left, self.model.audio_right)}
        self.decode_val = decode_val
        self.fused_loss = bool(fused_loss)
        from torchmetrics.text import CharErrorRate, WordErrorRate

        self.metrics = torch.nn.ModuleDict()
        for stage in ("val", "test"):
            for name in self.eval_contexts:
                self.metrics[f"{stage}_wer_{name}"] = WordErrorRate()
                self.metrics[f"{stage}_cer_{name}"] = CharErrorRate()

    def targets(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts -> padded targets (B, U_max) int32 and lengths (B,) int32 on the model's device."""
        ids = [self.tokenizer.encode(t) for t in texts]
        lengths = torch.tensor([len(i) for i in ids], dtype=torch.int32)
        tg = torch.zeros(len(ids), max(1, int(lengths.max()) if ids else 1), dtype=torch.int32)
        for b, i in enumerate(ids):
            tg[b, : len(i)] = torch.tensor(i, dtype=torch.int32)
        return tg.to(self.device), lengths.to(self.device)

    def transcribe(self, audio: torch.Tensor, audio_lengths: torch.Tensor, left: int | None = None,
                   right: int | None = None) -> list[str]:
        """Greedy transcripts of a padded batch."""
        was = self.model.training
        self.model.eval()
        ids = self.model.greedy_search(audio, audio_lengths, left=left, right=right)
        self.model.train(was)
        return [self.tokenizer.decode(i) for i in ids]

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        audio, lengths = batch["audio"], batch["audio_lengths"]
        tg, tl = self.targets(batch["texts"])
        left = right = None
        if stage == "train" and self.train_contexts:
            left, right = random.choice(self.train_contexts)
        out = self.model(audio, lengths, tg, tl, left=left, right=right, fused_loss=self.fused_loss)
        loss = out["loss"]
        bs = audio.shape[0]
        self.log_metrics(stage, {"loss": loss}, batch_size=bs, prog_bar=stage != "test")
        if stage in ("val", "test") and (self.decode_val or stage == "test"):
            refs = [self.tokenizer.normalize(t) for t in batch["texts"]]
            first = True
            for name, (l, r) in self.eval_contexts.items():
                hyps = self.transcribe(audio, lengths, l, r)
                wer, cer = self.metrics[f"{stage}_wer_{name}"], self.metrics[f"{stage}_cer_{name}"]
                wer.update(hyps, refs)
                cer.update(hyps, refs)
                logged = {f"wer_{name}": wer, f"cer_{name}": cer}
                if first:
                    logged.update({"wer": wer, "cer": cer})
                    first = False
                self.log_metrics(stage, logged, batch_size=bs, prog_bar=("wer", "cer"))
        return loss

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        info["recipe"]["tokenizer"] = self.tokenizer.to_dict()
        info["recipe"]["eval_contexts"] = {k: list(v) for k, v in self.eval_contexts.items()}
        if self.train_contexts:
            info["recipe"]["train_contexts"] = [list(c) for c in self.train_contexts]
        return info

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["tokenizer"] = self.tokenizer.to_dict()
