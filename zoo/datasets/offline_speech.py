"""An offline speech-recognition corpus in LibriSpeech layout, built from installed Debian packages.

    python -m zoo.datasets.offline_speech prepare --out data/offline_speech [--espeak-voices en-us,en-gb] [--no-espeak]

Sources (see :mod:`zoo.datasets.debian_speech`): ``asterisk-core-sounds-en-wav`` (+ its transcripts in
``asterisk-core-sounds-en``): ~560 transcribed prompts of one human speaker, 8 kHz, resampled to 16 kHz;
``pocketsphinx-testdata``: 11 transcribed 16 kHz utterances (other speakers, train only); optionally ``espeak-ng``
renderings of the *train* texts (synthetic speech, train only).

Split by prompt text (hash of the normalised transcript): a text is in exactly one of train / dev / test, so the
held-out human prompts are unseen sentences. Layout::

    <out>/{train,dev,test}/<speaker>/0/<speaker>-0-<nnnn>.flac + <speaker>-0.trans.txt   (16 kHz 16-bit FLAC)
    <out>/manifest.tsv   utt_id  split  source  original-id  text

Speakers: 1001 asterisk (Allison), 1002 pocketsphinx, 2001+ espeak-ng voices.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from zoo.datasets.debian_speech import (
    MissingPackageError,
    SpeechItem,
    read_asterisk_prompts,
    read_pocketsphinx,
)

__all__ = ["split_of", "prepare", "main", "SAMPLE_RATE"]

SAMPLE_RATE = 16000


def split_of(text: str, dev_fraction: float = 0.06, test_fraction: float = 0.12) -> str:
    """Deterministic split of a normalised text: ``"test"``, ``"dev"`` or ``"train"`` (md5 of the text)."""
    h = int(hashlib.md5(text.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_fraction else ("dev" if h < test_fraction + dev_fraction else "train")


def _load(item: SpeechItem) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio

    if item.path.suffix == ".raw":
        audio = np.fromfile(item.path, dtype="<i2").astype(np.float32) / 32768.0
        sr = 16000
    else:
        audio, sr = sf.read(str(item.path), dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), sr, SAMPLE_RATE).numpy()
    return audio


def _espeak(text: str, voice: str, tmp: Path) -> np.ndarray:
    import soundfile as sf
    import torch
    import torchaudio

    out = tmp / "e.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(out), text], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    audio, sr = sf.read(str(out), dtype="float32", always_2d=True)
    audio = torch.from_numpy(audio.mean(axis=1))
    return torchaudio.functional.resample(audio, sr, SAMPLE_RATE).numpy() * 0.7


class _Writer:
    def __init__(self, out: Path):
        self.out, self.count, self.trans, self.manifest = out, defaultdict(int), defaultdict(list), []

    def add(self, split: str, speaker: int, audio: np.ndarray, text: str, source: str, orig: str) -> None:
        import soundfile as sf

        n = self.count[(split, speaker)]
        self.count[(split, speaker)] += 1
        utt = f"{speaker}-0-{n:04d}"
        d = self.out / split / str(speaker) / "0"
        d.mkdir(parents=True, exist_ok=True)
        sf.write(str(d / f"{utt}.flac"), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
        self.trans[(split, speaker)].append(f"{utt} {text.upper()}")
        self.manifest.append(f"{utt}\t{split}\t{source}\t{orig}\t{text}")

    def close(self) -> None:
        for (split, speaker), lines in self.trans.items():
            (self.out / split / str(speaker) / "0" / f"{speaker}-0.trans.txt").write_text("\n".join(lines) + "\n")
        (self.out / "manifest.tsv").write_text("utt_id\tsplit\tsource\toriginal\ttext\n" + "\n".join(self.manifest)
                                               + "\n")


def prepare(out: str | Path, espeak_voices: tuple[str, ...] = ("en-us",), max_seconds: float = 20.0,
            overwrite: bool = False) -> dict:
    """Build the corpus under ``out``; returns counts per split and source. Raises :class:`MissingPackageError`
    naming the Debian packages when they are not installed."""
    out = Path(out)
    asterisk = read_asterisk_prompts()
    try:
        sphinx = read_pocketsphinx()
    except MissingPackageError:
        print("note: pocketsphinx-testdata is not installed; continuing without it", file=sys.stderr)
        sphinx = []
    if espeak_voices and shutil.which("espeak-ng") is None:
        raise MissingPackageError("espeak-ng not found: install the Debian package espeak-ng or pass --no-espeak")
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise FileExistsError(f"{out} exists and is not empty; pass --overwrite to rebuild it")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    w = _Writer(out)
    stats: dict = defaultdict(int)
    train_texts = set()
    for it in asterisk:
        audio = _load(it)
        if audio.size / SAMPLE_RATE > max_seconds:
            continue
        split = split_of(it.normalized)
        if split == "train":
            train_texts.add(it.normalized)
        w.add(split, 1001, audio, it.normalized, "asterisk", it.utt_id)
        stats[f"{split}/asterisk"] += 1
    for it in sphinx:
        w.add("train", 1002, _load(it), it.normalized, "pocketsphinx", it.utt_id)
        stats["train/pocketsphinx"] += 1
        train_texts.add(it.normalized)
    with tempfile.TemporaryDirectory() as tmp:
        for vi, voice in enumerate(espeak_voices):
            for text in sorted(train_texts):
                audio = _espeak(text, voice, Path(tmp))
                if audio.size / SAMPLE_RATE <= max_seconds:
                    w.add("train", 2001 + vi, audio, text, f"espeak-ng:{voice}", "")
                    stats[f"train/espeak-ng:{voice}"] += 1
    w.close()
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    stats["bytes"] = size
    return dict(stats)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zoo.datasets.offline_speech", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build the LibriSpeech-layout corpus from installed Debian packages")
    p.add_argument("--out", default="data/offline_speech")
    p.add_argument("--espeak-voices", default="en-us", help="comma-separated espeak-ng voices for train texts")
    p.add_argument("--no-espeak", action="store_true")
    p.add_argument("--max-seconds", type=float, default=20.0)
    p.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    voices = () if a.no_espeak else tuple(v for v in a.espeak_voices.split(",") if v)
    try:
        stats = prepare(a.out, voices, a.max_seconds, a.overwrite)
    except MissingPackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k, v in sorted(stats.items()):
        print(f"{k}\t{v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
