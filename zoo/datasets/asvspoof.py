"""ASVspoof 2019 LA reader (and anything written in its layout, e.g. ``zoo.datasets.spoof_speech``).

Layout under ``root`` (as distributed in LA.zip, and as ``python -m zoo.datasets.spoof_speech prepare`` writes)::

    ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt   # "SPEAKER UTT - SYSTEM KEY" per line
    ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.dev.trl.txt
    ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt
    ASVspoof2019_LA_{train,dev,eval}/flac/UTT.flac                 # 16 kHz mono FLAC

KEY is ``bonafide`` or ``spoof``; labels follow the AASIST authors: bona fide = 1, spoof = 0. Waveforms are brought
to a fixed 64,600 samples by *repeating* short clips (never zero padding): a random crop in training, the first
64,600 samples in evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "ProtocolEntry",
    "SUBSETS",
    "read_protocol",
    "protocol_path",
    "audio_dir",
    "repeat_pad",
    "random_crop_pad",
    "ASVspoofDataset",
    "ASVspoofDataModule",
]

NB_SAMP = 64600
SAMPLE_RATE = 16000
SUBSETS = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
BONAFIDE, SPOOF = 1, 0


@dataclass(frozen=True)
class ProtocolEntry:
    """One protocol line: ``speaker utt - system key``; ``label`` is 1 for bona fide, 0 for spoof."""

    speaker: str
    utt: str
    system: str
    key: str

    @property
    def label(self) -> int:
        return BONAFIDE if self.key == "bonafide" else SPOOF


def read_protocol(path: str | Path) -> list[ProtocolEntry]:
    """Parse an ASVspoof 2019 CM protocol file (5 whitespace-separated fields per line; blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"protocol file {path} not found")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 5:
            raise ValueError(f"{path}:{n}: expected 5 fields 'SPEAKER UTT - SYSTEM KEY', got {line!r}")
        spk, utt, _, system, key = parts
        if key not in ("bonafide", "spoof"):
            raise ValueError(f"{path}:{n}: key must be 'bonafide' or 'spoof', got {key!r}")
        entries.append(ProtocolEntry(spk, utt, system, key))
    if not entries:
        raise ValueError(f"protocol file {path} is empty")
    return entries


def protocol_path(root: str | Path, subset: str, track: str = "LA") -> Path:
    """``root/ASVspoof2019_{track}_cm_protocols/ASVspoof2019.{track}.cm.{train.trn|dev.trl|eval.trl}.txt``."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    return Path(root) / f"ASVspoof2019_{track}_cm_protocols" / f"ASVspoof2019.{track}.cm.{SUBSETS[subset]}.txt"


def audio_dir(root: str | Path, subset: str, track: str = "LA") -> Path:
    """``root/ASVspoof2019_{track}_{subset}/flac``."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    return Path(root) / f"ASVspoof2019_{track}_{subset}" / "flac"


def repeat_pad(x: np.ndarray, n: int = NB_SAMP) -> np.ndarray:
    """First ``n`` samples of ``x`` (1-D), tiling ``x`` when it is shorter (evaluation, as the authors' ``pad``)."""
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 1-D waveform, got shape {x.shape}")
    if x.shape[0] >= n:
        return x[:n]
    return np.tile(x, n // x.shape[0] + 1)[:n]


def random_crop_pad(x: np.ndarray, n: int = NB_SAMP, rng: np.random.Generator | None = None) -> np.ndarray:
    """A random ``n``-sample crop of ``x``, tiling first when it is shorter (training, the authors' ``pad_random``;
    unlike theirs it does not crash on a clip of exactly ``n`` samples)."""
    if x.ndim != 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty 1-D waveform, got shape {x.shape}")
    if x.shape[0] < n:
        return np.tile(x, n // x.shape[0] + 1)[:n]
    rng = rng if rng is not None else np.random.default_rng()
    start = int(rng.integers(0, x.shape[0] - n + 1))
    return x[start : start + n]


class ASVspoofDataset(Dataset):
    """One subset of an ASVspoof-2019-layout corpus. Item: ``(waveform (nb_samp,) float32, label int64)``
    (bona fide = 1). ``train=True`` takes random crops; otherwise the first ``nb_samp`` samples.

    Args:
        root: corpus root (holding ``ASVspoof2019_LA_cm_protocols``).
        subset: ``"train"``, ``"dev"`` or ``"eval"``.
        train: random crop (True) or deterministic first-``nb_samp`` (False).
        nb_samp: fixed length (64,600 in every AASIST recipe).
        limit: keep only the first ``limit`` protocol lines (smoke runs).
        seed: seed of the crop generator (reseeded per worker).
    """

    def __init__(self, root: str | Path, subset: str, train: bool = False, nb_samp: int = NB_SAMP,
                 limit: int | None = None, track: str = "LA", seed: int = 0):
        self.root = Path(root)
        self.entries = read_protocol(protocol_path(root, subset, track))
        if limit is not None:
            if limit <= 0:
                raise ValueError(f"limit must be positive, got {limit}")
            self.entries = self.entries[:limit]
        self.audio_dir = audio_dir(root, subset, track)
        if not self.audio_dir.is_dir():
            raise FileNotFoundError(f"audio folder {self.audio_dir} not found")
        self.subset, self.train, self.nb_samp = subset, bool(train), int(nb_samp)
        self.seed = int(seed)
        self._rng: np.random.Generator | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64 labels in protocol order."""
        return np.array([e.label for e in self.entries], dtype=np.int64)

    def load(self, index: int) -> np.ndarray:
        """The full waveform of item ``index`` as float32 (L,) at 16 kHz."""
        import soundfile as sf

        e = self.entries[index]
        path = self.audio_dir / f"{e.utt}.flac"
        x, sr = sf.read(str(path), dtype="float32", always_2d=False)
        if sr != SAMPLE_RATE:
            raise ValueError(f"{path}: expected {SAMPLE_RATE} Hz audio, got {sr} Hz")
        if x.ndim == 2:
            x = x.mean(axis=1)
        return x

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x = self.load(index)
        if self.train:
            if self._rng is None:
                info = torch.utils.data.get_worker_info()
                self._rng = np.random.default_rng([self.seed, info.id if info else 0, torch.initial_seed() % 2**31])
            x = random_crop_pad(x, self.nb_samp, self._rng)
        else:
            x = repeat_pad(x, self.nb_samp)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.entries[index].label


class ASVspoofDataModule:
    """Placeholder replaced below by the Lightning version (kept import-light for model-only users)."""


try:
    import lightning as L

    class ASVspoofDataModule(L.LightningDataModule):  # type: ignore[no-redef]
        """LightningDataModule over an ASVspoof-2019-LA-layout corpus: train (random crops, shuffled, drop_last),
        val (``val_subset``, default dev) and test (``test_subset``, default eval), batches of
        ``(x (B, 64600) float32, y (B,) int64)`` with bona fide = 1.

        Args:
            root: corpus root (ASVspoof 2019 LA, or ``data/spoof_speech`` from ``zoo.datasets.spoof_speech``).
            batch_size: 24 in the authors' recipe. num_workers: DataLoader workers.
            nb_samp: fixed waveform length. limit_train / limit_val / limit_test: first N protocol lines only.
            dataset_name: name recorded in model cards (default "ASVspoof 2019 LA").
            build_offline: when ``root`` holds no corpus, build the offline ``spoof_speech`` corpus there first
                (``zoo.datasets.spoof_speech.prepare``, from installed Debian packages; under a minute on 2 cores).
        """

        def __init__(self, root: str = "data/ASVspoof2019_LA", batch_size: int = 24, num_workers: int = 4,
                     nb_samp: int = NB_SAMP, val_subset: str = "dev", test_subset: str = "eval",
                     limit_train: int | None = None, limit_val: int | None = None, limit_test: int | None = None,
                     dataset_name: str = "ASVspoof 2019 LA", seed: int = 0, pin_memory: bool = True,
                     build_offline: bool = False):
            super().__init__()
            self.save_hyperparameters()
            self.root = Path(root)
            self.batch_size = int(batch_size)
            self.dataset_name = dataset_name
            if not build_offline and not self._has_corpus():
                raise FileNotFoundError(
                    f"{self.root} is not an ASVspoof 2019 LA folder (no ASVspoof2019_LA_cm_protocols/). Download LA "
                    "from https://datashare.ed.ac.uk/handle/10283/3336 or build the offline task with "
                    "`python -m zoo.datasets.spoof_speech prepare --out data/spoof_speech`."
                )
            self.train_set = self.val_set = self.test_set = None

        def _has_corpus(self) -> bool:
            return protocol_path(self.root, "train").parent.is_dir()

        def prepare_data(self) -> None:
            if self.hparams.build_offline and not self._has_corpus():
                from zoo.datasets.spoof_speech import prepare

                print(f"building the offline spoof_speech corpus in {self.root} (first run only)")
                prepare(self.root, seed=self.hparams.seed, verbose=False)

        def setup(self, stage: str | None = None) -> None:
            hp = self.hparams
            if stage in (None, "fit") and self.train_set is None:
                self.train_set = ASVspoofDataset(self.root, "train", True, hp.nb_samp, hp.limit_train, seed=hp.seed)
            if stage in (None, "fit", "validate") and self.val_set is None:
                self.val_set = ASVspoofDataset(self.root, hp.val_subset, False, hp.nb_samp, hp.limit_val)
            if stage in (None, "test", "predict") and self.test_set is None:
                self.test_set = ASVspoofDataset(self.root, hp.test_subset, False, hp.nb_samp, hp.limit_test)

        def _loader(self, ds, shuffle: bool) -> DataLoader:
            nw = int(self.hparams.num_workers)
            return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, drop_last=shuffle,
                              num_workers=nw, persistent_workers=nw > 0,
                              pin_memory=bool(self.hparams.pin_memory) and torch.cuda.is_available())

        def train_dataloader(self) -> DataLoader:
            return self._loader(self.train_set, True)

        def val_dataloader(self) -> DataLoader:
            return self._loader(self.val_set, False)

        def test_dataloader(self) -> DataLoader:
            return self._loader(self.test_set, False)

        def predict_dataloader(self) -> DataLoader:
            return self._loader(self.test_set, False)

        def card_info(self) -> dict[str, Any]:
            """Facts for the model card recipe."""
            info: dict[str, Any] = {"nb_samp": self.hparams.nb_samp, "test_subset": self.hparams.test_subset,
                                    "padding": "repeat (tile), random crop in training"}
            for name, ds in (("train", self.train_set), ("test", self.test_set)):
                if ds is not None:
                    lab = ds.labels
                    info[f"{name}_bonafide"] = int(lab.sum())
                    info[f"{name}_spoof"] = int(len(lab) - lab.sum())
            return info

except ImportError:  # pragma: no cover - lightning is a core dependency; the dataset works without it
    pass
