"""LibriSpeech-layout speech corpora: ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter (lines ``<utt-id> TRANSCRIPT``). Audio is read with soundfile.

- :func:`scan_librispeech`: ``[(utt_id, path, text)]`` of one split folder.
- :class:`LibriSpeechDataset`: items ``{"audio": (S,) float32 at sample_rate, "text": str, "utt_id": str}``.
- :func:`collate_speech`: zero-padded ``audio`` (B, S) float32, ``audio_lengths`` (B,) int64, ``texts``, ``utt_ids``.
- :class:`LengthBucketBatchSampler`: batches of similar duration (sorted, cut by ``batch_size`` and
  ``max_batch_seconds``, batch order shuffled per epoch), so little padding.
- :class:`SpeechDataModule`: train / val / test splits of one root (``train``, ``dev``, ``test`` by default).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = ["scan_librispeech", "LibriSpeechDataset", "collate_speech", "LengthBucketBatchSampler", "SpeechDataModule",
           "AUDIO_EXTENSIONS"]

AUDIO_EXTENSIONS = (".flac", ".wav")


def scan_librispeech(split_dir: str | Path) -> list[tuple[str, Path, str]]:
    """All transcribed utterances under ``split_dir`` (any depth of ``*.trans.txt``), sorted by utterance id.

    Raises ``FileNotFoundError`` when the folder is missing and ``ValueError`` when a transcript line names an
    utterance with no audio file or no ``*.trans.txt`` exists.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise FileNotFoundError(f"LibriSpeech split folder {split_dir} does not exist")
    items = []
    trans = sorted(split_dir.rglob("*.trans.txt"))
    if not trans:
        raise ValueError(f"no *.trans.txt transcript files under {split_dir} (expected speaker/chapter/ layout)")
    for t in trans:
        for line in t.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            utt, _, text = line.partition(" ")
            path = next((t.parent / f"{utt}{e}" for e in AUDIO_EXTENSIONS if (t.parent / f"{utt}{e}").is_file()), None)
            if path is None:
                raise ValueError(f"{t}: utterance {utt!r} has no audio file ({'/'.join(AUDIO_EXTENSIONS)})")
            items.append((utt, path, text.strip()))
    return sorted(items)


class LibriSpeechDataset(Dataset):
    """One split of a LibriSpeech-layout corpus.

    Args:
        root: the split folder (``.../train-clean-100`` or ``data/offline_speech/train``).
        sample_rate: output rate; files at other rates are resampled.
        max_seconds: drop utterances longer than this (None keeps all).
    """

    def __init__(self, root: str | Path, sample_rate: int = 16000, max_seconds: float | None = None):
        import soundfile as sf

        self.sample_rate = sample_rate
        items = scan_librispeech(root)
        self.items, self.durations = [], []
        for utt, path, text in items:
            info = sf.info(str(path))
            dur = info.frames / info.samplerate
            if max_seconds is None or dur <= max_seconds:
                self.items.append((utt, path, text))
                self.durations.append(dur)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        import soundfile as sf

        utt, path, text = self.items[i]
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        audio = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
        if sr != self.sample_rate:
            import torchaudio

            audio = torchaudio.functional.resample(audio, sr, self.sample_rate)
        return {"audio": audio, "text": text, "utt_id": utt}


def collate_speech(batch: Sequence[dict]) -> dict:
    """Pad a list of dataset items: ``audio`` (B, S_max) float32 (zeros), ``audio_lengths`` (B,) int64, ``texts``,
    ``utt_ids``."""
    lengths = torch.tensor([b["audio"].numel() for b in batch], dtype=torch.int64)
    audio = torch.zeros(len(batch), int(lengths.max()) if len(batch) else 0)
    for i, b in enumerate(batch):
        audio[i, : b["audio"].numel()] = b["audio"]
    return {"audio": audio, "audio_lengths": lengths, "texts": [b["text"] for b in batch],
            "utt_ids": [b["utt_id"] for b in batch]}


class LengthBucketBatchSampler(Sampler):
    """Batches of indices with similar ``durations``: sort by duration, cut into batches of at most ``batch_size``
    items and ``max_batch_seconds`` of padded audio (longest x count), shuffle the batch order (seeded, new per
    epoch) when ``shuffle``."""

    def __init__(self, durations: Sequence[float], batch_size: int, max_batch_seconds: float | None = None,
                 shuffle: bool = True, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(durations)), key=lambda i: durations[i])
        self.batches, cur = [], []
        for i in order:
            longest = max([durations[j] for j in cur] + [durations[i]])
            if cur and (len(cur) >= batch_size or
                        (max_batch_seconds is not None and longest * (len(cur) + 1) > max_batch_seconds)):
                self.batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            self.batches.append(cur)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        batches = list(self.batches)
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(batches)
            self.epoch += 1
        return iter(batches)


class SpeechDataModule(L.LightningDataModule):
    """Train/val/test loaders over a LibriSpeech-layout root.

    Args:
        root: corpus folder holding the split folders.
        train_split, val_split, test_split: split folder names (a test split that does not exist is skipped).
        batch_size, max_batch_seconds: bucketing limits; max_seconds: drop longer training utterances.
        sample_rate: audio rate given to the model; num_workers: DataLoader workers.
        build_offline: when ``root`` does not exist, build the offline corpus there first
            (``zoo.datasets.offline_speech.prepare``, from installed Debian packages; about a minute on 2 cores).
    """

    def __init__(self, root: str = "data/offline_speech", train_split: str = "train", val_split: str = "dev",
                 test_split: str | None = "test", batch_size: int = 16, max_batch_seconds: float | None = 120.0,
                 max_seconds: float | None = 12.0, sample_rate: int = 16000, num_workers: int = 0, seed: int = 0,
                 build_offline: bool = False):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)

    def prepare_data(self) -> None:
        if self.hparams.build_offline and not self.root.is_dir():
            from zoo.datasets.offline_speech import prepare

            print(f"building the offline speech corpus in {self.root} (first run only)")
            prepare(self.root)

    def _ds(self, split: str, max_seconds=None) -> LibriSpeechDataset:
        return LibriSpeechDataset(self.root / split, self.hparams.sample_rate, max_seconds)

    def setup(self, stage: str | None = None) -> None:
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"speech corpus {self.root} not found; build the offline one with "
                "`python -m zoo.datasets.offline_speech prepare --out data/offline_speech`"
            )
        h = self.hparams
        if stage in (None, "fit"):
            self.train_ds = self._ds(h.train_split, h.max_seconds)
        if stage in (None, "fit", "validate"):
            self.val_ds = self._ds(h.val_split)
        if stage in (None, "test") and h.test_split and (self.root / h.test_split).is_dir():
            self.test_ds = self._ds(h.test_split)

    def _loader(self, ds: LibriSpeechDataset, shuffle: bool) -> DataLoader:
        h = self.hparams
        sampler = LengthBucketBatchSampler(ds.durations, h.batch_size, h.max_batch_seconds, shuffle, h.seed)
        return DataLoader(ds, batch_sampler=sampler, collate_fn=collate_speech, num_workers=h.num_workers,
                          persistent_workers=h.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_ds, True)

    def val_dataloader(self):
        return self._loader(self.val_ds, False)

    def test_dataloader(self):
        if not hasattr(self, "test_ds"):
            return self._loader(self.val_ds, False)
        return self._loader(self.test_ds, False)
