"""Semantic-segmentation data for ClustViT (any segmentation model): the offline Fashion-MNIST mosaic task and
readers for the authors' datasets (ADE20K, SUIM) in their usual folder layouts.

Batches are ``(x, y)``: ``x`` float32 (B, 3, H, W) RGB scaled to [-1, 1] (the authors' mean = std = 127.5), ``y``
int64 (B, H, W) labels, 255 = ignore.

Fashion-MNIST mosaics (``FashionMosaicDataModule``, 11 classes): 2-6 real Fashion-MNIST items, each scaled and
tinted, placed at random (they may overlap; a later item covers an earlier one) on a random crop of a real texture
photograph from scikit-image (``skimage.data``: brick, grass, gravel; bundled with the package, no download),
tinted. Label = item class + 1 where the item's ink is (grey level >= ``ink_threshold``), 0 (background)
elsewhere. Train and validation items come from the Fashion-MNIST training file (disjoint, 90 / 10 split), test
items from the test file. Every image is a pure function of ``(seed, split, index)``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from zoo.datasets.images import FASHION_MNIST_CLASSES, find_fashion_mnist, read_idx

__all__ = [
    "ADE20K_LAYOUT",
    "FashionMosaic",
    "FashionMosaicDataModule",
    "MOSAIC_CLASSES",
    "SegmentationFolder",
    "SegmentationFolderDataModule",
    "SUIM_COLOURS",
    "load_textures",
    "palette",
    "to_input",
]

IGNORE_INDEX = 255
MOSAIC_CLASSES = ("background",) + tuple(FASHION_MNIST_CLASSES)
TEXTURES = ("brick", "grass", "gravel")
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
ADE20K_LAYOUT = {"training": "train", "validation": "val"}
# SUIM colour code (Islam et al. 2020): RGB mask colours -> class index.
SUIM_COLOURS = {
    (0, 0, 0): 0,        # background / waterbody
    (0, 0, 255): 1,      # human divers
    (0, 255, 0): 2,      # plants / sea-grass
    (0, 255, 255): 3,    # wrecks / ruins
    (255, 0, 0): 4,      # robots
    (255, 0, 255): 5,    # reefs / invertebrates
    (255, 255, 0): 6,    # fish / vertebrates
    (255, 255, 255): 7,  # sea-floor / rocks
}


def to_input(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) in [-1, 1] ((x - 127.5) / 127.5, the authors' preprocessing)."""
    return (torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1) - 127.5) / 127.5


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 colours for overlays (class 0 black, then well-separated hues)."""
    rng = np.random.default_rng(12345)
    cols = rng.integers(40, 256, (max(num_classes, 1), 3)).astype(np.uint8)
    cols[0] = 0
    return cols


def load_textures(names: Sequence[str] = TEXTURES) -> list[np.ndarray]:
    """Grey texture photographs (H, W) uint8 from scikit-image's bundled samples."""
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - environment
        raise ImportError("the Fashion-MNIST mosaics need scikit-image (pip install scikit-image)") from e
    out = []
    for n in names:
        img = np.asarray(getattr(data, n)())
        if img.ndim == 3:
            img = img[..., :3].mean(-1).astype(np.uint8)
        out.append(img)
    return out


class FashionMosaic(Dataset):
    """Deterministic mosaic images; sample ``i`` of split ``split`` is drawn from
    ``np.random.default_rng([seed, split_id, i])``. Returns (x (3, S, S) float32, y (S, S) int64)."""

    def __init__(self, items: np.ndarray, labels: np.ndarray, textures: Sequence[np.ndarray], size: int,
                 length: int, seed: int, split: str, min_items: int = 2, max_items: int = 6,
                 scale: tuple[float, float] = (0.25, 0.55), ink_threshold: int = 40, hflip: bool = False,
                 cache: tuple[np.ndarray, np.ndarray] | None = None):
        if len(items) == 0:
            raise ValueError("no Fashion-MNIST items to draw from")
        if not 1 <= min_items <= max_items:
            raise ValueError(f"need 1 <= min_items <= max_items, got {min_items}, {max_items}")
        self.items, self.labels, self.textures = items, labels.astype(np.int64), list(textures)
        self.size, self.length, self.seed, self.split = int(size), int(length), int(seed), split
        self.min_items, self.max_items, self.scale = min_items, max_items, scale
        self.ink_threshold, self.hflip = ink_threshold, hflip
        self.cache = cache  # pre-rendered (images (N, S, S, 3), labels (N, S, S)), see render_all

    def render_all(self, workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Every sample rendered once ((N, S, S, 3) uint8, (N, S, S) uint8), in ``workers`` processes."""
        if workers > 1:
            import multiprocessing as mp

            with mp.get_context("fork").Pool(workers) as pool:
                out = pool.map(self.render, range(self.length), chunksize=max(1, self.length // (4 * workers)))
        else:
            out = [self.render(i) for i in range(self.length)]
        return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])

    def __len__(self) -> int:
        return self.length

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (S, S, 3), labels uint8 (S, S)) of sample ``i``."""
        s = self.size
        rng = np.random.default_rng([self.seed, _SPLIT_ID[self.split], i])
        tex = self.textures[rng.integers(len(self.textures))]
        crop = int(rng.integers(s // 2, min(tex.shape) + 1))
        y0, x0 = rng.integers(0, tex.shape[0] - crop + 1), rng.integers(0, tex.shape[1] - crop + 1)
        bg = Image.fromarray(tex[y0:y0 + crop, x0:x0 + crop]).resize((s, s), Image.BILINEAR)
        bg = np.asarray(bg, dtype=np.float32) / 255.0
        tint = rng.uniform(0.35, 1.0, 3).astype(np.float32)
        img = bg[..., None] * tint * 255.0
        lab = np.zeros((s, s), dtype=np.uint8)
        for _ in range(int(rng.integers(self.min_items, self.max_items + 1))):
            j = int(rng.integers(len(self.items)))
            side = max(8, int(round(s * rng.uniform(*self.scale))))
            item = np.asarray(Image.fromarray(self.items[j]).resize((side, side), Image.BILINEAR), np.float32)
            if rng.random() < 0.5:
                item = item[:, ::-1]
            top, left = int(rng.integers(0, s - side + 1)), int(rng.integers(0, s - side + 1))
            colour = rng.uniform(0, 255, 3).astype(np.float32)
            alpha = (item / 255.0)[..., None]
            region = img[top:top + side, left:left + side]
            img[top:top + side, left:left + side] = region * (1 - alpha) + colour * alpha
            ink = item >= self.ink_threshold
            lab[top:top + side, left:left + side][ink] = self.labels[j] + 1
        img = img + rng.normal(0, 4.0, img.shape).astype(np.float32)
        return np.clip(np.rint(img), 0, 255).astype(np.uint8), lab

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(i)
        img, lab = (self.cache[0][i], self.cache[1][i]) if self.cache is not None else self.render(i)
        if self.hflip and np.random.random() < 0.5:  # training augmentation only (worker RNG)
            img, lab = img[:, ::-1], lab[:, ::-1]
        return to_input(img), torch.from_numpy(np.ascontiguousarray(lab)).long()


def _num_workers(n: int | None) -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1)) if n is None else int(n)


class _SegDataModule(L.LightningDataModule):
    """Loader plumbing shared by the segmentation data modules."""

    dataset_name = "segmentation"
    num_classes = 0
    class_names: tuple[str, ...] = ()

    def _loader(self, ds, shuffle: bool, batch: int) -> DataLoader:
        nw = _num_workers(self.hparams.num_workers)
        return DataLoader(ds, batch_size=batch, shuffle=shuffle, num_workers=nw, drop_last=shuffle,
                          persistent_workers=nw > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.hparams.eval_batch_size or self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.hparams.eval_batch_size or self.hparams.batch_size)

    @property
    def data_config(self) -> dict[str, Any]:
        """The normalisation the batches carry (for the model card)."""
        return {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "input_range": "[-1, 1]", "channel_order": "RGB"}

    def card_info(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "class_names": list(self.class_names)}


class FashionMosaicDataModule(_SegDataModule):
    """Fashion-MNIST mosaics on scikit-image textures (11 classes; see the module docstring).

    Args:
        source: Fashion-MNIST IDX folder or ``"embedded"`` / ``"auto"`` / ``"debian"`` (``find_fashion_mnist``).
        image_size: mosaic side in pixels (a multiple of 16 for ViTs).
        num_train / num_val / num_test: images per split (generated on the fly, deterministic).
        seed: the generation seed; min_items / max_items / scale: items per image and their side as a share of the
            image. batch_size / eval_batch_size / num_workers: loaders. hflip: random flips of training images.
        prerender: render every split once at setup (in ``os.cpu_count()`` processes) and train from memory (GPU
            runs, where rendering on the fly would starve the GPU); off: render per sample in the loader workers.
        cache_dir: with ``prerender``, keep the rendered splits as ``.npz`` files here and reuse them (two runs on
            the same mosaics render once).
    """

    dataset_name = "fmnist_mosaic"
    num_classes = len(MOSAIC_CLASSES)
    class_names = MOSAIC_CLASSES

    def __init__(self, source: str = "embedded", image_size: int = 128, num_train: int = 4000, num_val: int = 200,
                 num_test: int = 500, seed: int = 0, min_items: int = 2, max_items: int = 6,
                 scale: Sequence[float] = (0.25, 0.55), batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int | None = None, hflip: bool = True, prerender: bool = False,
                 cache_dir: str | None = None):
        super().__init__()
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {image_size}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        files = find_fashion_mnist(hp.source)
        tr_x, tr_y = read_idx(files["train"][0]), read_idx(files["train"][1])
        te_x, te_y = read_idx(files["test"][0]), read_idx(files["test"][1])
        perm = np.random.default_rng([hp.seed, 99]).permutation(len(tr_y))
        n_val = max(1, len(tr_y) // 10)
        va_idx, tr_idx = perm[:n_val], perm[n_val:]
        tex = load_textures()
        kw = dict(textures=tex, size=hp.image_size, seed=hp.seed, min_items=hp.min_items, max_items=hp.max_items,
                  scale=tuple(hp.scale))
        self.train_set = FashionMosaic(tr_x[tr_idx], tr_y[tr_idx], length=hp.num_train, split="train",
                                       hflip=hp.hflip, **kw)
        self.val_set = FashionMosaic(tr_x[va_idx], tr_y[va_idx], length=hp.num_val, split="val", **kw)
        self.test_set = FashionMosaic(te_x, te_y, length=hp.num_test, split="test", **kw)
        if hp.prerender:
            workers = max(1, (os.cpu_count() or 1))
            for ds in (self.train_set, self.val_set, self.test_set):
                path = None
                if hp.cache_dir:
                    name = (f"mosaic_{ds.split}_s{hp.seed}_{hp.image_size}px_n{ds.length}_"
                            f"i{hp.min_items}-{hp.max_items}_sc{hp.scale[0]}-{hp.scale[1]}.npz")
                    path = Path(hp.cache_dir) / name
                if path is not None and path.is_file():
                    with np.load(path) as z:
                        ds.cache = (z["images"], z["labels"])
                    continue
                ds.cache = ds.render_all(workers)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.savez(path, images=ds.cache[0], labels=ds.cache[1])

    def card_info(self) -> dict[str, Any]:
        hp = self.hparams
        return {**super().card_info(), "image_size": hp.image_size, "num_train": hp.num_train,
                "num_test": hp.num_test, "seed": hp.seed, "textures": list(TEXTURES)}


# ------------------------------------------------------------------------------------------------ folder readers
class SegmentationFolder(Dataset):
    """(image, mask) file pairs -> (x (3, H, W) float32 in [-1, 1], y (H, W) int64).

    layout ``"ade20k"``: ``images/<split>/*.jpg`` + ``annotations/<split>/*.png`` (split ``training`` |
    ``validation``), labels 1..150, 0 = "other" -> 255 (``reduce_zero_label``). layout ``"suim"``:
    ``<split>/images/*.jpg`` + ``<split>/masks/*.bmp`` (split ``train_val`` | ``TEST``), RGB colour masks mapped
    with :data:`SUIM_COLOURS` (each channel thresholded at 128). ``size``: resize (image bilinear, mask nearest)
    to ``size`` x ``size`` when given.
    """

    def __init__(self, root: str | os.PathLike, layout: str, split: str, size: int | None = None,
                 hflip: bool = False):
        root = Path(root)
        if layout == "ade20k":
            img_dir, ann_dir, ann_ext = root / "images" / split, root / "annotations" / split, ".png"
        elif layout == "suim":
            img_dir, ann_dir, ann_ext = root / split / "images", root / split / "masks", ".bmp"
        else:
            raise ValueError(f"layout must be 'ade20k' or 'suim', got {layout!r}")
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise FileNotFoundError(f"{layout} split {split!r}: expected {img_dir} and {ann_dir}")
        imgs = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        self.pairs = []
        for p in imgs:
            a = ann_dir / (p.stem + ann_ext)
            if not a.is_file():
                raise FileNotFoundError(f"no annotation {a} for {p}")
            self.pairs.append((p, a))
        if not self.pairs:
            raise FileNotFoundError(f"no images in {img_dir}")
        self.layout, self.size, self.hflip = layout, size, hflip

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 (H, W, 3), labels uint8 (H, W))."""
        p, a = self.pairs[i]
        with Image.open(p) as im:
            img = im.convert("RGB")
        with Image.open(a) as am:
            ann = am.convert("RGB") if self.layout == "suim" else am.convert("L")
        if self.size:
            img = img.resize((self.size, self.size), Image.BILINEAR)
            ann = ann.resize((self.size, self.size), Image.NEAREST)
        img, ann = np.asarray(img), np.asarray(ann)
        if self.layout == "ade20k":
            lab = ann.astype(np.int16) - 1
            lab[lab < 0] = IGNORE_INDEX
            lab = lab.astype(np.uint8)
        else:
            bits = (ann >= 128).astype(np.uint8)
            code = {(r // 255, g // 255, b // 255): c for (r, g, b), c in SUIM_COLOURS.items()}
            lut = np.zeros(8, np.uint8)
            for (r, g, b), c in code.items():
                lut[r * 4 + g * 2 + b] = c
            lab = lut[bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]]
        return img, lab

    def __getitem__(self, i: int):
        img, lab = self.read(i)
        if self.hflip and np.random.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
        return to_input(img), torch.from_numpy(np.ascontiguousarray(lab)).long()


class SegmentationFolderDataModule(_SegDataModule):
    """ADE20K (150 classes) or SUIM (8 colour-coded classes) from their folders; validation = test split.

    Args: root, layout (``"ade20k"`` | ``"suim"``), image_size (resize, default 512), batch sizes, workers.
    """

    def __init__(self, root: str, layout: str = "ade20k", image_size: int | None = 512, batch_size: int = 8,
                 eval_batch_size: int | None = None, num_workers: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.dataset_name = layout
        self.num_classes = 150 if layout == "ade20k" else len(SUIM_COLOURS)
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train, test = ("training", "validation") if hp.layout == "ade20k" else ("train_val", "TEST")
        self.train_set = SegmentationFolder(hp.root, hp.layout, train, hp.image_size, hflip=True)
        self.val_set = self.test_set = SegmentationFolder(hp.root, hp.layout, test, hp.image_size)
