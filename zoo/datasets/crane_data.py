"""Anomaly-detection data for Crane: MVTec-AD and VisA readers, and an offline anomaly set made from Fashion-MNIST.

Every dataset here yields dicts ``{"image": (3, S, S) float32 CLIP-normalised, "mask": (S, S) float32 {0, 1},
"label": int64 (1 = anomalous), "category": str}``.

- ``MVTecAD(root, categories, split)``: ``<category>/train/good/*.png``, ``<category>/test/<defect>/*.png``,
  ``<category>/ground_truth/<defect>/<name>_mask.png`` (``good`` has no masks).
- ``VisA(root, categories, split)``: ``split_csv/1cls.csv`` with columns ``object,split,label,image,mask`` (paths
  relative to ``root``; label ``normal`` / ``anomaly``).
- The authors' zero-shot protocol: train the prompts on one dataset's **test** split (it has masks), test on the
  other's test split (``MVTecAD(..., split="test")`` for both roles).
- ``synthetic_anomalies``: anomalies with pixel masks on real images (a patch pasted from another image, drawn
  scratches, a texture swap) using scikit-image's drawing routines; ``fashion_anomaly_sets`` builds the offline
  zero-shot task (train classes 0-4, test classes 5-9).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

__all__ = ["MVTecAD", "VisA", "TensorAnomalyDataset", "synthetic_anomalies", "fashion_anomaly_sets",
           "write_tiny_mvtec", "write_tiny_visa", "OPENAI_MEAN", "OPENAI_STD", "CraneDataModule"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".JPG", ".PNG")


def _load_image(path: Path, size: int) -> torch.Tensor:
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(3, 1, 1)


def _load_mask(path: Path | None, size: int) -> torch.Tensor:
    from PIL import Image

    if path is None:
        return torch.zeros(size, size)
    m = Image.open(path).convert("L").resize((size, size), Image.NEAREST)
    return torch.from_numpy((np.asarray(m) > 127).astype(np.float32))


class _FileAnomalyDataset(Dataset):
    def __init__(self, samples: list[tuple[Path, Path | None, int, str]], image_size: int):
        if not samples:
            raise ValueError("no images found")
        self.samples, self.image_size = samples, image_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        img, mask, label, cat = self.samples[i]
        return {"image": _load_image(img, self.image_size), "mask": _load_mask(mask, self.image_size),
                "label": torch.tensor(label), "category": cat}

    @property
    def categories(self) -> list[str]:
        return sorted({s[3] for s in self.samples})


class MVTecAD(_FileAnomalyDataset):
    """MVTec-AD layout reader (see module docstring). ``categories=None`` takes every folder with a ``test/``."""

    def __init__(self, root: str | Path, categories: Sequence[str] | None = None, split: str = "test",
                 image_size: int = 518):
        root = Path(root)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if not root.is_dir():
            raise FileNotFoundError(f"MVTec-AD root {root} does not exist")
        cats = list(categories) if categories else sorted(p.name for p in root.iterdir() if (p / "test").is_dir())
        samples = []
        for cat in cats:
            for defect_dir in sorted((root / cat / split).iterdir()):
                if not defect_dir.is_dir():
                    continue
                good = defect_dir.name == "good"
                for img in sorted(p for p in defect_dir.iterdir() if p.suffix in _IMG_EXT):
                    mask = None if good else root / cat / "ground_truth" / defect_dir.name / f"{img.stem}_mask.png"
                    if mask is not None and not mask.is_file():
                        raise FileNotFoundError(f"missing mask {mask} for {img}")
                    samples.append((img, mask, 0 if good else 1, cat))
        super().__init__(samples, image_size)


class VisA(_FileAnomalyDataset):
    """VisA reader through ``split_csv/1cls.csv`` (see module docstring)."""

    def __init__(self, root: str | Path, categories: Sequence[str] | None = None, split: str = "test",
                 image_size: int = 518):
        root = Path(root)
        table = root / "split_csv" / "1cls.csv"
        if not table.is_file():
            raise FileNotFoundError(f"{table} not found (VisA's split_csv/1cls.csv)")
        samples = []
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                if row["split"] != split or (categories and row["object"] not in categories):
                    continue
                label = 1 if row["label"] == "anomaly" else 0
                mask = root / row["mask"] if label and row.get("mask") else None
                samples.append((root / row["image"], mask, label, row["object"]))
        super().__init__(samples, image_size)


class TensorAnomalyDataset(Dataset):
    """In-memory set: images (N, 3, S, S) normalised, masks (N, S, S), labels (N,), categories (N,) str."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, categories: Sequence[str]):
        if not (len(images) == len(masks) == len(labels) == len(categories)):
            raise ValueError("images, masks, labels and categories must have the same length")
        self.images, self.masks, self.labels, self.cats = images, masks, labels, list(categories)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "mask": self.masks[i], "label": self.labels[i], "category": self.cats[i]}

    @property
    def categories(self) -> list[str]:
        return sorted(set(self.cats))


# --------------------------------------------------------------------------------------------------------------------
# Synthetic anomalies on real images
# --------------------------------------------------------------------------------------------------------------------
def _paste(img: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from skimage.draw import ellipse

    h, w = img.shape
    r, c = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    rr, cc = ellipse(r, c, rng.integers(2, h // 5 + 1), rng.integers(2, w // 5 + 1), shape=img.shape,
                     rotation=rng.uniform(0, np.pi))
    dy, dx = rng.integers(-h // 4, h // 4 + 1), rng.integers(-w // 4, w // 4 + 1)
    out, mask = img.copy(), np.zeros_like(img, dtype=bool)
    out[rr, cc] = np.clip(other[np.clip(rr + dy, 0, h - 1), np.clip(cc + dx, 0, w - 1)] * rng.uniform(0.6, 1.4), 0, 1)
    mask[rr, cc] = True
    return out, mask


def _scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from skimage.draw import line_aa

    h, w = img.shape
    out, mask = img.copy(), np.zeros_like(img, dtype=bool)
    for _ in range(rng.integers(1, 3)):
        r0, c0 = rng.integers(0, h), rng.integers(0, w)
        length, ang = rng.uniform(h / 4, h / 1.5), rng.uniform(0, np.pi)
        r1 = int(np.clip(r0 + length * np.sin(ang), 0, h - 1))
        c1 = int(np.clip(c0 + length * np.cos(ang), 0, w - 1))
        rr, cc, val = line_aa(r0, c0, r1, c1)
        ink = 1.0 if img[rr, cc].mean() < 0.5 else 0.0
        out[rr, cc] = out[rr, cc] * (1 - val) + ink * val
        mask[rr[val > 0.3], cc[val > 0.3]] = True
    return out, mask


def _texture(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    from skimage.draw import polygon

    h, w = img.shape
    cy, cx = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4)
    k = rng.integers(3, 7)
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = rng.uniform(2, h / 5, k)
    rr, cc = polygon(cy + rad * np.sin(ang), cx + rad * np.cos(ang), shape=img.shape)
    yy, xx = np.mgrid[0:h, 0:w]
    f, th = rng.uniform(0.5, 1.5), rng.uniform(0, np.pi)
    stripes = 0.5 + 0.5 * np.sign(np.sin(f * (yy * np.cos(th) + xx * np.sin(th))))
    out, mask = img.copy(), np.zeros_like(img, dtype=bool)
    out[rr, cc] = stripes[rr, cc] * rng.uniform(0.5, 1.0)
    mask[rr, cc] = True
    return out, mask


def synthetic_anomalies(images: np.ndarray, seed: int = 0, kinds: Sequence[str] = ("paste", "scratch", "texture")
                        ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Make one anomaly per grey image (N, H, W) float in [0, 1]: returns (images, masks bool, kind per image).
    ``paste``: an elliptic patch from another image; ``scratch``: anti-aliased lines; ``texture``: a polygon filled
    with a stripe texture. An empty mask (e.g. a scratch off the object) is redrawn."""
    rng = np.random.default_rng(seed)
    out, masks, used = np.empty_like(images), np.zeros(images.shape, dtype=bool), []
    for i, img in enumerate(images):
        for _ in range(10):
            kind = kinds[rng.integers(len(kinds))]
            if kind == "paste":
                a, m = _paste(img, images[rng.integers(len(images))], rng)
            elif kind == "scratch":
                a, m = _scratch(img, rng)
            elif kind == "texture":
                a, m = _texture(img, rng)
            else:
                raise ValueError(f"unknown anomaly kind {kind!r}")
            if m.sum() >= 3 and np.abs(a - img)[m].mean() > 0.05:
                break
        out[i], masks[i] = a, m
        used.append(kind)
    return out, masks, used


def _to_clip(grey: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(grey).float().unsqueeze(1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = x.expand(-1, 3, -1, -1)
    return (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)


def fashion_anomaly_sets(images: np.ndarray, labels: np.ndarray, class_names: Sequence[str], *, image_size: int,
                         train_classes: Sequence[int] = (0, 1, 2, 3, 4), test_classes: Sequence[int] = (5, 6, 7, 8, 9),
                         per_class: int = 100, anomaly_fraction: float = 0.5, seed: int = 0
                         ) -> tuple[TensorAnomalyDataset, TensorAnomalyDataset]:
    """The offline zero-shot task: Fashion-MNIST uint8 (N, 28, 28) -> (train set on ``train_classes``, test set on
    ``test_classes``), ``per_class`` images each, ``anomaly_fraction`` of them with a synthetic anomaly; images
    resized (bicubic) to ``image_size``, masks (nearest)."""
    rng = np.random.default_rng(seed)

    def build(classes: Sequence[int], s: int) -> TensorAnomalyDataset:
        idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
        grey = images[idx].astype(np.float32) / 255.0
        n_anom = int(round(anomaly_fraction * len(idx)))
        anom = rng.permutation(len(idx))[:n_anom]
        bad, masks, _ = synthetic_anomalies(grey[anom], seed=s)
        grey[anom] = bad
        full = np.zeros(grey.shape, dtype=bool)
        full[anom] = masks
        lab = np.zeros(len(idx), dtype=np.int64)
        lab[anom] = 1
        m = torch.from_numpy(full).float().unsqueeze(1)
        m = F.interpolate(m, size=(image_size, image_size), mode="nearest")[:, 0]
        cats = [class_names[int(c)] for c in labels[idx]]
        return TensorAnomalyDataset(_to_clip(grey, image_size), m, torch.from_numpy(lab), cats)

    return build(train_classes, seed + 1), build(test_classes, seed + 2)


# --------------------------------------------------------------------------------------------------------------------
# Tiny generated copies (tests, smoke runs)
# --------------------------------------------------------------------------------------------------------------------
def _save_png(arr: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_tiny_mvtec(root: str | Path, categories: Sequence[str] = ("bottle", "screw"), n: int = 3, size: int = 32,
                     seed: int = 0) -> Path:
    """A small MVTec-AD-layout tree: ``n`` train/good, ``n`` test/good and ``n`` test/crack images with masks."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for cat in categories:
        for split, defect in (("train", "good"), ("test", "good"), ("test", "crack")):
            for i in range(n):
                img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                _save_png(img, root / cat / split / defect / f"{i:03d}.png")
                if defect != "good":
                    mask = np.zeros((size, size), dtype=np.uint8)
                    mask[size // 4: size // 2, size // 4: size // 2] = 255
                    _save_png(mask, root / cat / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root


def write_tiny_visa(root: str | Path, categories: Sequence[str] = ("candle", "pcb1"), n: int = 2, size: int = 32,
                    seed: int = 0) -> Path:
    """A small VisA-layout tree with ``split_csv/1cls.csv``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for cat in categories:
        for split in ("train", "test"):
            for label in ("normal", "anomaly"):
                if split == "train" and label == "anomaly":
                    continue
                for i in range(n):
                    rel = f"{cat}/Data/Images/{label.capitalize()}/{split}_{i:03d}.JPG"
                    _save_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), root / rel)
                    mrel = ""
                    if label == "anomaly":
                        mrel = f"{cat}/Data/Masks/Anomaly/{split}_{i:03d}.png"
                        mask = np.zeros((size, size), dtype=np.uint8)
                        mask[:size // 3, :size // 3] = 255
                        _save_png(mask, root / mrel)
                    rows.append({"object": cat, "split": split, "label": label, "image": rel, "mask": mrel})
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["object", "split", "label", "image", "mask"])
        w.writeheader()
        w.writerows(rows)
    return root


# --------------------------------------------------------------------------------------------------------------------
# LightningDataModule
# --------------------------------------------------------------------------------------------------------------------
import lightning as L  # noqa: E402  (kept beside the only class that needs it)
from torch.utils.data import DataLoader  # noqa: E402

_FMNIST_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")


class CraneDataModule(L.LightningDataModule):
    """Zero-shot anomaly data: prompts train on one set, val/test run on another (the authors' protocol).

    Args:
        source: ``"fashion_synth"`` (the offline task: Fashion-MNIST test file shipped in the repo, synthetic
            anomalies; train classes 0-4, test classes 5-9), ``"mvtec_to_visa"`` (train on MVTec-AD's test split,
            test on VisA) or ``"visa_to_mvtec"``.
        mvtec_root / visa_root: dataset roots for the real protocols. image_size: S (518 for ViT-L/14@336).
        per_class: images per class for ``fashion_synth``. batch_size / eval_batch_size / num_workers: loaders.
    """

    def __init__(self, source: str = "fashion_synth", mvtec_root: str | None = None, visa_root: str | None = None,
                 image_size: int = 40, per_class: int = 100, batch_size: int = 8, eval_batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        if source not in ("fashion_synth", "mvtec_to_visa", "visa_to_mvtec"):
            raise ValueError(f"source must be fashion_synth, mvtec_to_visa or visa_to_mvtec, got {source!r}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.dataset_name = source
        self.train_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        if h.source == "fashion_synth":
            from zoo.datasets.images import find_fashion_mnist, read_idx

            files = find_fashion_mnist("embedded")
            x, y = read_idx(files["test"][0]), read_idx(files["test"][1])
            self.train_set, self.test_set = fashion_anomaly_sets(x, y, _FMNIST_NAMES, image_size=h.image_size,
                                                                 per_class=h.per_class, seed=h.seed)
        else:
            if not h.mvtec_root or not h.visa_root:
                raise ValueError(f"source {h.source!r} needs mvtec_root and visa_root")
            mv = MVTecAD(h.mvtec_root, split="test", image_size=h.image_size)
            vi = VisA(h.visa_root, split="test", image_size=h.image_size)
            self.train_set, self.test_set = (mv, vi) if h.source == "mvtec_to_visa" else (vi, mv)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.num_workers, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=self.hparams.eval_batch_size, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
