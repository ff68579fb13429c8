"""An offline text-to-speech corpus of codec tokens for Lina-Speech, built from installed Debian packages.

    python -m zoo.datasets.lina_speech prepare --out zoo/datasets/data/lina_offline

Text: English sentences from installed text sources (no download): the docstrings of the Python 3.11 standard
library (``/usr/lib/python3.11``, package ``libpython3.11-stdlib``) and the POD documentation of the Perl core
modules (``/usr/share/perl``, package ``perl-modules-5.36``), filtered to plain sentences of 5-16 words (letters
and ``' , ; : -`` only, capitalised, ending in a period) and deduplicated (~7,300 sentences). A sentence is held out
for test when the md5 of its text falls below ``test_fraction``.

Speech: every sentence is spoken once by ``espeak-ng`` in one of the training voices (chosen by hash), resampled
to 16 kHz; plus the ``asterisk-core-sounds-en-wav`` human prompts (one speaker, via
:mod:`zoo.datasets.debian_speech`) whose transcripts are plain text. A held-out voice (``ist_voice``, never in the
training split) speaks ``n_ist`` training sentences (its initial-state tuning set) and the test sentences (reference
audio for speaker similarity).

Codec: :class:`zoo.models.codec.MelVQCodec` fitted on the training audio. The artifact is small enough to commit /
carry to the GPU (which has no espeak-ng)::

    <out>/tokens.npz      codes int16 (Q, total frames), offsets int64 (N + 1,), text (N,) str, voice (N,) int16,
                          split (N,) int8 (0 train, 1 test, 2 ist), voices (V,) str
    <out>/codec.safetensors + codec.json   the fitted MelVQCodec
    <out>/README.md       provenance and counts
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["english_sentences", "prepare", "LinaTokens", "LinaSpeechDataModule", "synth_espeak", "main",
           "TRAIN_VOICES", "IST_VOICE", "SPLITS", "DEFAULT_DIR"]

SAMPLE_RATE = 16000
TRAIN_VOICES = ("en-us", "en-us+f3", "en-gb", "en-gb+f2", "en-gb-scotland", "en-029")
IST_VOICE = "en-us-nyc+f4"
SPLITS = {"train": 0, "test": 1, "ist": 2}
DEFAULT_DIR = Path(__file__).resolve().parent / "data" / "lina_offline"

_SENTENCE = re.compile(r"^[A-Z][a-z' ,;:\-]+[a-z]\.$")
_PY_DIR = Path("/usr/lib/python3.11")
_PERL_DIR = Path("/usr/share/perl")


def _sentences_of(text: str, min_words: int, max_words: int):
    text = re.sub(r"\s+", " ", text)
    for s in re.split(r"(?<=[.!?])\s+", text):
        s = s.strip()
        if min_words <= len(s.split()) <= max_words and _SENTENCE.match(s) and not re.search(r"\w_\w", s):
            yield s


def english_sentences(min_words: int = 5, max_words: int = 16, py_dir: Path = _PY_DIR,
                      perl_dir: Path = _PERL_DIR) -> list[str]:
    """Sorted, deduplicated plain English sentences from the installed Python stdlib docstrings and Perl POD."""
    out: set[str] = set()
    for f in sorted(py_dir.rglob("*.py")):
        if "/test" in str(f) or "idlelib" in str(f):
            continue
        try:
            tree = ast.parse(f.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
                doc = ast.get_docstring(node)
                if doc:
                    out.update(_sentences_of(doc, min_words, max_words))
    for f in sorted([*perl_dir.rglob("*.pod"), *perl_dir.rglob("*.pm")]):
        t = re.sub(r"[A-Z]<([^<>]*)>", r"\1", f.read_text(errors="ignore"))
        body = " ".join(ln for ln in t.splitlines() if ln and not ln.startswith((" ", "\t", "=")))
        out.update(_sentences_of(body, min_words, max_words))
    return sorted(out)


def _hash(text: str) -> float:
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF


def synth_espeak(text: str, voice: str, speed: int = 170) -> np.ndarray:
    """espeak-ng rendering of ``text`` in ``voice``, float32 mono at 16 kHz (peak 0.7 of full scale at most)."""
    import soundfile as sf
    import torchaudio

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "e.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        audio, sr = sf.read(str(out), dtype="float32", always_2d=True)
    wav = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), sr, SAMPLE_RATE)
    return (wav * 0.7).numpy()


def _asterisk() -> list[tuple[str, np.ndarray]]:
    from zoo.datasets.debian_speech import MissingPackageError, read_asterisk_prompts
    from zoo.datasets.offline_speech import _load

    try:
        items = read_asterisk_prompts()
    except MissingPackageError:
        return []
    out = []
    for it in items:
        text = it.normalized if hasattr(it, "normalized") else it.text
        if re.fullmatch(r"[a-z' ]+", text) and len(text.split()) >= 2:
            out.append((text, _load(it)))
    return out


def prepare(out: str | Path = DEFAULT_DIR, max_sentences: int | None = None, test_fraction: float = 0.03,
            voices: Sequence[str] = TRAIN_VOICES, ist_voice: str = IST_VOICE, n_ist: int = 64,
            human: bool = True, n_quant: int = 2, codebook_size: int = 512, log=print) -> Path:
    """Build the corpus (see the module docstring). Returns the output folder."""
    from safetensors.torch import save_file

    from zoo.models.codec import MelVQCodec

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sents = english_sentences()
    if max_sentences:  # a hash-ordered (not alphabetical) subset
        sents = sorted(sorted(sents, key=lambda x: _hash("pick:" + x))[:max_sentences])
    log(f"{len(sents)} sentences")
    rows: list[dict[str, Any]] = []
    voice_names = [*voices, ist_voice, "asterisk"]
    for i, s in enumerate(sents):
        split = "test" if _hash(s) < test_fraction else "train"
        v = int(_hash("voice:" + s) * len(voices)) % len(voices)
        rows.append(dict(text=s, voice=v, split=split, wav=synth_espeak(s, voices[v])))
        if i % 500 == 0:
            log(f"espeak {i}/{len(sents)}")
    train_texts = [r["text"] for r in rows if r["split"] == "train"]
    test_texts = [r["text"] for r in rows if r["split"] == "test"]
    vi = len(voices)
    for s in train_texts[:: max(1, len(train_texts) // n_ist)][:n_ist]:
        rows.append(dict(text=s, voice=vi, split="ist", wav=synth_espeak(s, ist_voice)))
    for s in test_texts:
        rows.append(dict(text=s, voice=vi, split="test", wav=synth_espeak(s, ist_voice)))
    if human:
        for text, wav in _asterisk():
            split = "test" if _hash(text) < test_fraction else "train"
            rows.append(dict(text=text, voice=vi + 1, split=split, wav=wav))
    log(f"{len(rows)} utterances; fitting the codec")
    codec = MelVQCodec.fit([torch.from_numpy(r["wav"]) for r in rows if r["split"] == "train"],
                           n_quant=n_quant, codebook_size=codebook_size)
    codes, offsets = [], [0]
    for r in rows:
        c = codec.encode(torch.from_numpy(r["wav"]))
        codes.append(c.numpy().astype(np.int16))
        offsets.append(offsets[-1] + c.shape[-1])
    np.savez_compressed(out / "tokens.npz", codes=np.concatenate(codes, axis=1), offsets=np.array(offsets),
                        text=np.array([r["text"] for r in rows]), voice=np.array([r["voice"] for r in rows], np.int16),
                        split=np.array([SPLITS[r["split"]] for r in rows], np.int8), voices=np.array(voice_names))
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(out / "codec.safetensors"))
    (out / "codec.json").write_text(json.dumps({"class": "MelVQCodec", "args": codec.config()}, indent=1) + "\n")
    counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    hours = offsets[-1] / codec.frame_rate / 3600
    (out / "README.md").write_text(
        "# lina_offline: codec tokens for Lina-Speech (built by `python -m zoo.datasets.lina_speech prepare`)\n\n"
        f"- sentences: {len(sents)} from the Python 3.11 stdlib docstrings and the Perl core POD (installed Debian "
        "packages libpython3.11-stdlib, perl-modules-5.36)\n"
        f"- espeak-ng voices (train): {', '.join(voices)}; held-out voice for IST: {ist_voice}; human: asterisk "
        "prompts (asterisk-core-sounds-en-wav)\n"
        f"- utterances: {counts} ({hours:.2f} h of audio, {offsets[-1]} frames)\n"
        f"- codec: MelVQCodec {json.dumps(codec.config())} fitted on the training audio\n")
    log(f"done: {counts}, {hours:.2f} h")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------
class LinaTokens(Dataset):
    """Items (text ids list[int], codes (Q, n) int64, voice id) of one split of a ``tokens.npz``.

    ``voices``: keep only these voice ids. ``max_frames``: crop longer utterances' audio (and drop them from
    training when ``drop_long``). ``limit``: first N items."""

    def __init__(self, root: str | Path = DEFAULT_DIR, split: str = "train", voices: Sequence[int] | None = None,
                 max_frames: int = 1000, limit: int | None = None):
        from zoo.models.lina_speech import CharTokenizer

        z = np.load(Path(root) / "tokens.npz")
        self.codes, self.offsets = z["codes"], z["offsets"]
        self.voice_names = [str(v) for v in z["voices"]]
        sel = np.nonzero(z["split"] == SPLITS[split])[0]
        if voices is not None:
            sel = sel[np.isin(z["voice"][sel], list(voices))]
        lens = self.offsets[sel + 1] - self.offsets[sel]
        sel = sel[lens <= max_frames]
        self.index = sel[:limit] if limit else sel
        self.text, self.voice = z["text"], z["voice"]
        self.tok = CharTokenizer()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        j = int(self.index[i])
        c = torch.from_numpy(self.codes[:, self.offsets[j] : self.offsets[j + 1]].astype(np.int64))
        return self.tok.encode(str(self.text[j])), c, int(self.voice[j])


def _synthetic(n: int, n_quant: int, codebook_size: int, seed: int = 0):
    """A tiny generated token corpus (smoke runs / tests): code sequences determined by the text."""
    from zoo.models.lina_speech import CharTokenizer

    g = torch.Generator().manual_seed(seed)
    tok = CharTokenizer()
    words = ["alpha", "beta", "gamma", "delta", "echo", "fox", "golf", "hotel"]
    items = []
    for _ in range(n):
        ws = [words[int(i)] for i in torch.randint(0, len(words), (3,), generator=g)]
        ids = tok.encode(" ".join(ws))
        codes = torch.tensor([[(t * 7 + q * 3) % codebook_size for t in ids[1:-1] for _ in range(2)]
                              for q in range(n_quant)])
        items.append((ids, codes, 0))
    return items


def _collate(items):
    from zoo.models.lina_speech import collate

    b = collate([(t, c) for t, c, _ in items])
    b["voice"] = torch.tensor([v for _, _, v in items])
    return b


try:
    import lightning as L

    class LinaSpeechDataModule(L.LightningDataModule):
        """Batches of :func:`zoo.models.lina_speech.collate` from ``<root>/tokens.npz``.

        Args: root (folder from :func:`prepare`), batch_size, max_frames (longer utterances skipped),
        num_workers, limit_train / limit_val (first N items), voices (voice ids to keep, default all training
        voices), synthetic (a generated toy corpus of this many items instead of ``root``; CI smoke runs),
        n_quant / codebook_size (of the synthetic corpus)."""

        def __init__(self, root: str = str(DEFAULT_DIR), batch_size: int = 32, max_frames: int = 600,
                     num_workers: int = 0, limit_train: int | None = None, limit_val: int | None = 64,
                     voices: list[int] | None = None, synthetic: int = 0, n_quant: int = 2,
                     codebook_size: int = 512):
            super().__init__()
            self.save_hyperparameters()

        def setup(self, stage: str | None = None) -> None:
            h = self.hparams
            if h.synthetic:
                items = _synthetic(h.synthetic, h.n_quant, h.codebook_size)
                cut = max(1, len(items) // 8)
                self.train_set, self.val_set = items[cut:], items[:cut]
                return
            self.train_set = LinaTokens(h.root, "train", h.voices, h.max_frames, h.limit_train)
            self.val_set = LinaTokens(h.root, "test", h.voices, h.max_frames, h.limit_val)

        def train_dataloader(self):
            return DataLoader(self.train_set, self.hparams.batch_size, shuffle=True, drop_last=True,
                              num_workers=self.hparams.num_workers, collate_fn=_collate)

        def val_dataloader(self):
            return DataLoader(self.val_set, self.hparams.batch_size, num_workers=self.hparams.num_workers,
                              collate_fn=_collate)

        def test_dataloader(self):
            return self.val_dataloader()
except ImportError:  # pragma: no cover - lightning is a training dependency only
    pass


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.datasets.lina_speech")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="build the espeak-ng + asterisk token corpus")
    pp.add_argument("--out", default=str(DEFAULT_DIR))
    pp.add_argument("--max-sentences", type=int, default=None)
    pp.add_argument("--n-ist", type=int, default=64)
    pp.add_argument("--no-human", action="store_true")
    ns = p.parse_args(argv)
    prepare(ns.out, ns.max_sentences, n_ist=ns.n_ist, human=not ns.no_human)
    return 0


if __name__ == "__main__":
    sys.exit(main())
