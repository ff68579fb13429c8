"""Synthetic long-video question answering from real images (the VideoNSA demo task).

A "video" is F Fashion-MNIST frames (28 x 28, grey). Background frames show everyday clothes (T-shirt, trouser,
pullover, dress, coat, shirt); K = 2 or 3 "needle" frames at random times show footwear or bags (sandal, sneaker, bag,
ankle boot). Three question types, each four tokens ``[BOS, type, class-or-pad, SEP]``:

- ``first``: which needle item appeared first?  -> answer = needle class (0..3)
- ``last``:  which needle item appeared last?   -> answer = needle class (0..3)
- ``count``: how many times did item c appear?  -> answer = 4 + count (0..3)

So answering needs finding 2-3 frames among F and reading their order or counting them; F can grow past the
training length at test time. Images come from the embedded Fashion-MNIST subset (``zoo/datasets/data/
fashion_mnist_subset``, or the Debian package when present); train and test videos draw from the train and test images.

``make_batch`` builds whole batches with tensor ops on any device (fast on a GPU); ``NeedleVideoQADataset`` /
``VideoQADataModule`` wrap it for Lightning (``zoo.tasks.video_lm.VideoQATask``).
"""
from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.datasets.images import FASHION_MNIST_MEAN, FASHION_MNIST_STD, find_fashion_mnist, read_idx

__all__ = ["ANSWERS", "BACKGROUND", "NEEDLES", "NeedleVideoQADataset", "QUESTION_LEN", "VideoQADataModule",
           "load_frames", "make_batch"]

BACKGROUND = (0, 1, 2, 3, 4, 6)
NEEDLES = (5, 7, 8, 9)
BOS, SEP, PAD = 1, 2, 3
QTYPES = {"first": 4, "last": 5, "count": 6}
CLASS_TOKEN0 = 8  # needle class i -> token 8 + i
QUESTION_LEN = 4
VOCAB = 16
ANSWERS = 8  # 0..3 needle classes, 4..7 counts 0..3


def load_frames(split: str = "train", source: str = "auto") -> dict[int, torch.Tensor]:
    """Fashion-MNIST images by class: {class: (N, 28, 28) uint8}, from ``find_fashion_mnist(source)``."""
    files = find_fashion_mnist(source)
    key = "train" if split == "train" else "test"
    imgs, labels = (read_idx(p) for p in files[key])
    return {c: torch.from_numpy(np.ascontiguousarray(imgs[labels == c])) for c in range(10)}


def make_batch(frames: dict[int, torch.Tensor], batch: int, num_frames: int, generator: torch.Generator,
               device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """A batch of videos and questions.

    Returns ``frames`` (B, F, 1, 28, 28) float32 normalised, ``question`` (B, 4) int64, ``answer`` (B,) int64,
    ``qtype`` (B,) int64 (0 first, 1 last, 2 count), ``needle_pos`` (B, 3) int64 (-1 when fewer needles).
    ``frames`` maps class -> (N, 28, 28) uint8 on ``device``."""
    if num_frames < 3:
        raise ValueError(f"num_frames must be >= 3, got {num_frames}")
    g = generator
    bg_pool = torch.cat([frames[c] for c in BACKGROUND])
    idx = torch.randint(len(bg_pool), (batch, num_frames), generator=g)
    video = bg_pool[idx.to(bg_pool.device)].clone()  # (B, F, 28, 28)
    k = torch.randint(2, 4, (batch,), generator=g)  # 2 or 3 needles
    pos = torch.rand(batch, num_frames, generator=g).argsort(1)[:, :3].sort(1).values  # distinct, in time order
    ncls = torch.randint(len(NEEDLES), (batch, 3), generator=g)
    for j in range(3):
        for ci, c in enumerate(NEEDLES):
            sel = ((ncls[:, j] == ci) & (j < k)).nonzero().flatten()
            if len(sel):
                pick = torch.randint(len(frames[c]), (len(sel),), generator=g)
                video[sel.to(video.device), pos[sel, j].to(video.device)] = frames[c][pick.to(video.device)]
    qtype = torch.randint(3, (batch,), generator=g)
    qcls = torch.randint(len(NEEDLES), (batch,), generator=g)
    present = torch.arange(3)[None] < k[:, None]
    last_cls = ncls.gather(1, (k - 1)[:, None]).squeeze(1)
    count = ((ncls == qcls[:, None]) & present).sum(1)
    answer = torch.where(qtype == 0, ncls[:, 0], torch.where(qtype == 1, last_cls, 4 + count))
    qtok = torch.tensor([QTYPES["first"], QTYPES["last"], QTYPES["count"]])[qtype]
    ctok = torch.where(qtype == 2, CLASS_TOKEN0 + qcls, torch.full_like(qcls, PAD))
    question = torch.stack([torch.full_like(qtok, BOS), qtok, ctok, torch.full_like(qtok, SEP)], 1)
    x = (video.float() / 255.0 - FASHION_MNIST_MEAN[0]) / FASHION_MNIST_STD[0]
    return {"frames": x[:, :, None].to(device), "question": question.to(device), "answer": answer.to(device),
            "qtype": qtype.to(device), "needle_pos": torch.where(present, pos, -1).to(device)}


class NeedleVideoQADataset(Dataset):
    """``size`` samples of :func:`make_batch` (one video each), reproducible: sample i uses seed ``seed + i``."""

    def __init__(self, frames: dict[int, torch.Tensor], size: int, num_frames: int, seed: int = 0):
        self.frames, self.size, self.num_frames, self.seed = frames, size, num_frames, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        b = make_batch(self.frames, 1, self.num_frames, torch.Generator().manual_seed(self.seed + i))
        return {k: v[0] for k, v in b.items()}


class VideoQADataModule(L.LightningDataModule):
    """Needle video QA: train / val / test videos of ``num_frames`` (test: ``test_frames``, may be longer).

    Args: num_frames, test_frames (default num_frames), train_size / val_size / test_size samples, batch_size,
    num_workers, source (Fashion-MNIST location, see :func:`zoo.datasets.images.find_fashion_mnist`), seed."""

    dataset_name = "needle_video_qa"

    def __init__(self, num_frames: int = 64, test_frames: int | None = None, train_size: int = 20000,
                 val_size: int = 512, test_size: int = 512, batch_size: int = 16, num_workers: int = 0,
                 source: str = "auto", seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.num_frames, self.test_frames = num_frames, test_frames or num_frames
        self.sizes = (train_size, val_size, test_size)
        self.batch_size, self.num_workers, self.source, self.seed = batch_size, num_workers, source, seed
        self._sets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._sets:
            return
        train, test = load_frames("train", self.source), load_frames("test", self.source)
        self._sets = {
            "train": NeedleVideoQADataset(train, self.sizes[0], self.num_frames, self.seed),
            "val": NeedleVideoQADataset(test, self.sizes[1], self.num_frames, self.seed + 10_000_000),
            "test": NeedleVideoQADataset(test, self.sizes[2], self.test_frames, self.seed + 20_000_000),
        }

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(self._sets[split], batch_size=self.batch_size, shuffle=split == "train",
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def card_info(self) -> dict[str, Any]:
        return {"dataset": self.dataset_name, "num_frames": self.num_frames, "test_frames": self.test_frames}
