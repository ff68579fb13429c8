"""Image LightningDataModules: ImageNet-style folders and Fashion-MNIST (raw IDX files, offline).

Both build their transforms from a timm data config (``timm.data.resolve_data_config`` + ``create_transform``):
explicit arguments (``image_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``) win; otherwise, with
``data_config_from="model"``, the attached model's pretrained config (timm ``pretrained_cfg`` or the zoo registry's
``input_spec``) is used; otherwise the dataset's own defaults (Fashion-MNIST statistics at 28 px; ImageNet's for
folders).
"""
from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "EMBEDDED_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "ArrayImageDataset",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "find_fashion_mnist",
    "read_idx",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
EMBEDDED_FASHION_MNIST_DIR = Path(__file__).resolve().parent / "data" / "fashion_mnist_subset"
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def default_num_workers() -> int:
    """``min(4, cpu count)``: the DataLoader workers used when ``num_workers`` is not given."""
    return min(4, os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw): uint8 images ``(N, H, W)`` or labels ``(N,)``.

    Raises ``ValueError`` on a bad magic number or a truncated file.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: not an IDX file (too short)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise ValueError(f"{path}: not a uint8 IDX file of 1 or 3 dims (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    offset = 4 + 4 * ndim
    count = int(np.prod(shape))
    if len(data) - offset != count:
        raise ValueError(f"{path}: expected {count} bytes of data for shape {shape}, found {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array ``(N,)`` or ``(N, H, W)`` as an IDX file (gzipped when ``path`` ends in ``.gz``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim not in (1, 3):
        raise ValueError(f"array must be 1-D (labels) or 3-D (images), got shape {array.shape}")
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as f:  # mtime=0: byte-identical reruns
            f.write(header + array.tobytes())
    else:
        path.write_bytes(header + array.tobytes())


def _find_idx(folder: Path, stem: str) -> Path | None:
    for d in (folder, folder / "FashionMNIST" / "raw", folder / "raw"):
        for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def find_fashion_mnist(source: str | os.PathLike = "auto") -> dict[str, tuple[Path, Path]]:
    """Locate the four Fashion-MNIST IDX files.

    Args:
        source: ``"auto"`` (the Debian package if installed, else the subset embedded in the repo), ``"debian"``
            (package ``dataset-fashion-mnist``: ``/usr/share/datasets/fashion-mnist``), ``"embedded"`` (6,000 train +
            1,000 test images shipped in ``zoo/datasets/data/fashion_mnist_subset``) or a folder holding
            ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (also under ``FashionMNIST/raw/``).
    Returns:
        ``{"train": (images, labels), "test": (images, labels)}`` paths.
    """
    src = str(source)
    if src == "auto":
        folder = DEBIAN_FASHION_MNIST_DIR if _find_idx(DEBIAN_FASHION_MNIST_DIR, _IDX_FILES["train"][0]) else (
            EMBEDDED_FASHION_MNIST_DIR
        )
    elif src == "debian":
        folder = DEBIAN_FASHION_MNIST_DIR
        if not _find_idx(folder, _IDX_FILES["train"][0]):
            raise FileNotFoundError(
                f"Fashion-MNIST not found at {folder}: install the Debian package dataset-fashion-mnist "
                "(apt-get install dataset-fashion-mnist), pass a folder with the IDX files, or use source='embedded'"
            )
    elif src == "embedded":
        folder = EMBEDDED_FASHION_MNIST_DIR
    else:
        folder = Path(src).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"Fashion-MNIST folder {folder} does not exist; source must be 'auto', 'debian', 'embedded' or a folder"
            )
    out: dict[str, tuple[Path, Path]] = {}
    missing = []
    for split, stems in _IDX_FILES.items():
        paths = [_find_idx(folder, s) for s in stems]
        missing += [s + "[.gz]" for s, p in zip(stems, paths) if p is None]
        if all(paths):
            out[split] = (paths[0], paths[1])  # type: ignore[assignment]
    if missing:
        hint = (
            "; the embedded subset is made by `python zoo/datasets/make_fashion_mnist_subset.py`"
            if folder == EMBEDDED_FASHION_MNIST_DIR
            else "; the Debian package dataset-fashion-mnist provides them (apt-get install dataset-fashion-mnist)"
        )
        raise FileNotFoundError(f"Fashion-MNIST IDX files missing in {folder}: {missing}{hint}")
    return out


# ---------------------------------------------------------------------------------------------------- datasets
class ArrayImageDataset(Dataset):
    """Images from a uint8 array ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` + int labels ``(N,)``, as PIL + transform.

    ``rgb=True`` converts grey images to 3 identical channels. Returns ``(transform(img), int label)``.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None, rgb: bool = False):
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        self.images, self.labels, self.transform, self.rgb = images, np.asarray(labels, dtype=np.int64), transform, rgb

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])
        if self.rgb and img.mode != "RGB":
            img = img.convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.labels[i])


class _FileImageDataset(Dataset):
    """``(path, label)`` samples read with PIL, converted to RGB or L, then ``transform``."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable | None, mode: str):
        self.samples, self.transform, self.mode = list(samples), transform, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as im:
            img = im.convert(self.mode)
        return (self.transform(img) if self.transform else img), label


# ---------------------------------------------------------------------------------------------------- base module
class _ImageDataModule(L.LightningDataModule):
    """Shared loader + transform plumbing. Subclasses fill ``train_set``/``val_set``/``test_set`` in ``setup``."""

    dataset_name = "images"
    _native: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        data_config_from: str = "dataset",
        train_aug: str = "pad_crop",
        crop_padding: int | None = None,
        scale: Sequence[float] = (0.35, 1.0),
        hflip: float = 0.5,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        drop_last: bool = True,
    ):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (grey) or 3 (RGB), got {in_chans}")
        if data_config_from not in ("dataset", "model"):
            raise ValueError(f"data_config_from must be 'dataset' or 'model', got {data_config_from!r}")
        if train_aug not in ("pad_crop", "rrc", "none"):
            raise ValueError(f"train_aug must be 'pad_crop', 'rrc' or 'none', got {train_aug!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = default_num_workers() if num_workers is None else int(num_workers)
        self.in_chans = in_chans
        self.train_set = self.val_set = self.test_set = None
        self._data_config: dict[str, Any] | None = None

    # -------------------------------------------------------------- transforms
    def _model_pretrained_cfg(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        task = getattr(trainer, "lightning_module", None) if trainer is not None else None
        model = getattr(task, "model", None)
        if model is None:
            return {}
        cfg = dict(getattr(model, "pretrained_cfg", None) or {})
        if not cfg:
            arch = (getattr(model, "zoo_config", None) or {}).get("architecture")
            if arch:
                from zoo.registry import model_entry

                try:
                    spec = model_entry(arch).input_spec
                except KeyError:
                    spec = {}
                cfg = {k: spec[k] for k in ("mean", "std", "interpolation", "crop_pct") if k in spec}
                if "shape" in spec:
                    cfg["input_size"] = tuple(spec["shape"])
        return cfg

    @property
    def data_config(self) -> dict[str, Any]:
        """The resolved timm data config: ``input_size (C, H, W)``, ``mean``, ``std``, ``interpolation``,
        ``crop_pct``, ``crop_mode``."""
        if self._data_config is None:
            self._data_config = self._resolve_data_config()
        return self._data_config

    def _resolve_data_config(self) -> dict[str, Any]:
        from timm.data import resolve_data_config

        hp = self.hparams
        base = dict(self._native)
        if hp.data_config_from == "model":
            model_cfg = self._model_pretrained_cfg()
            base.update({k: v for k, v in model_cfg.items() if v is not None})
        c = self.in_chans
        base["mean"] = _fit_chans(base.get("mean"), c)
        base["std"] = _fit_chans(base.get("std"), c)
        if "input_size" in base:
            base["input_size"] = (c, *tuple(base["input_size"])[-2:])
        args: dict[str, Any] = {"in_chans": c}
        if hp.image_size is not None:
            args["input_size"] = (c, int(hp.image_size), int(hp.image_size))
        for k in ("mean", "std"):
            if hp[k] is not None:
                args[k] = tuple(float(v) for v in hp[k])
        if hp.interpolation:
            args["interpolation"] = hp.interpolation
        if hp.crop_pct:
            args["crop_pct"] = float(hp.crop_pct)
        cfg = resolve_data_config(args=args, pretrained_cfg=base)
        cfg["mean"], cfg["std"] = _fit_chans(cfg["mean"], c), _fit_chans(cfg["std"], c)
        return cfg

    def eval_transform(self) -> Callable:
        """timm eval transform (resize to ``input_size / crop_pct``, centre crop, tensor, normalise)."""
        from timm.data import create_transform

        cfg = self.data_config
        return create_transform(
            cfg["input_size"], is_training=False, interpolation=cfg["interpolation"], mean=cfg["mean"],
            std=cfg["std"], crop_pct=cfg["crop_pct"], crop_mode=cfg["crop_mode"],
        )

    def train_transform(self) -> Callable:
        """Training transform: ``pad_crop`` = random crop with padding at the native size + flip, then the eval
        transform; ``rrc`` = timm's RandomResizedCrop(scale) + flip; ``none`` = the eval transform."""
        from timm.data import create_transform
        from torchvision import transforms as T

        hp, cfg = self.hparams, self.data_config
        if hp.train_aug == "none":
            return self.eval_transform()
        if hp.train_aug == "rrc":
            return create_transform(
                cfg["input_size"], is_training=True, scale=tuple(hp.scale), hflip=hp.hflip, color_jitter=0.0,
                interpolation=cfg["interpolation"], mean=cfg["mean"], std=cfg["std"],
            )
        native = self._native.get("input_size")
        side = native[-1] if native else cfg["input_size"][-1]
        pad = hp.crop_padding if hp.crop_padding is not None else max(1, side // 7)
        aug = [T.RandomCrop(side, padding=pad, padding_mode="constant") if native else T.RandomCrop(
            side, padding=pad, pad_if_needed=True)]
        if hp.hflip > 0:
            aug.append(T.RandomHorizontalFlip(hp.hflip))
        return T.Compose([*aug, self.eval_transform()])

    def card_info(self) -> dict[str, Any]:
        """Data facts for the model card's recipe section."""
        cfg = self.data_config
        return {
            "input_size": list(cfg["input_size"]),
            "mean": [round(float(v), 4) for v in cfg["mean"]],
            "std": [round(float(v), 4) for v in cfg["std"]],
            "interpolation": cfg["interpolation"],
            "train_aug": self.hparams.train_aug,
        }

    # -------------------------------------------------------------- loaders
    def _loader(self, ds: Dataset | None, train: bool) -> DataLoader:
        if ds is None:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for a dataloader")
        workers = self.num_workers
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            num_workers=workers,
            pin_memory=self.hparams.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.hparams.persistent_workers and workers > 0,
            drop_last=train and self.hparams.drop_last and len(ds) > self.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)


def _fit_chans(values: Sequence[float] | None, chans: int) -> tuple[float, ...] | None:
    """Adapt a per-channel statistic to ``chans`` channels (RGB -> grey: mean of the three; grey -> RGB: repeat)."""
    if values is None:
        return None
    v = tuple(float(x) for x in values)
    if len(v) == chans:
        return v
    if len(v) == 1:
        return v * chans
    if chans == 1:
        return (sum(v) / len(v),)
    raise ValueError(f"cannot adapt {len(v)} channel statistics to {chans} channels")


def _stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic per-class split of indices into (train, val)."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_val = round(len(idx) * val_fraction)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(val_idx))


def _limit(idx: np.ndarray, labels: np.ndarray, n: int | None) -> np.ndarray:
    """Keep at most ``n`` indices, balanced across classes (deterministic)."""
    if n is None or n >= len(idx):
        return idx
    classes = np.unique(labels[idx])
    per = max(1, n // len(classes))
    keep = np.concatenate([idx[labels[idx] == c][:per] for c in classes])
    return np.sort(keep)[:n]


# ---------------------------------------------------------------------------------------------------- Fashion-MNIST
class FashionMNISTDataModule(_ImageDataModule):
    """Fashion-MNIST from raw IDX files: 28x28 grey images, 10 classes.

    Batches: ``x`` float32 ``(B, in_chans, image_size, image_size)`` normalised, ``y`` int64 ``(B,)``.

    Args:
        root: a folder with the IDX files (wins over ``source``).
        source: ``"auto"`` (Debian package if installed, else the embedded subset), ``"debian"``, ``"embedded"``.
            See :func:`find_fashion_mnist`.
        val_fraction: share of the training file held out for validation (stratified, seeded by ``split_seed``);
            test is always the official test file.
        max_train_samples / max_val_samples / max_test_samples: class-balanced caps (smoke runs).
        in_chans: 3 (grey replicated to RGB, default) or 1.
        image_size: resize side (default 28); other args as the base: batch_size, num_workers, mean/std (default
            Fashion-MNIST statistics), train_aug (default ``pad_crop``: random crop with 4 px padding + flip).
    """

    dataset_name = "fashion_mnist"
    num_classes = 10
    class_names = FASHION_MNIST_CLASSES
    _native: ClassVar[dict[str, Any]] = {"input_size": (1, 28, 28), "mean": FASHION_MNIST_MEAN, "std": FASHION_MNIST_STD,
               "interpolation": "bilinear", "crop_pct": 1.0}

    def __init__(
        self,
        root: str | None = None,
        source: str = "auto",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        max_train_samples: int | None = None,
        max_val_samples: int | None = None,
        max_test_samples: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        data_config_from: str = "dataset",
        train_aug: str = "pad_crop",
        crop_padding: int | None = None,
        scale: Sequence[float] = (0.35, 1.0),
        hflip: float = 0.5,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        drop_last: bool = True,
    ):
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        super().__init__(
            batch_size, eval_batch_size, num_workers, image_size, in_chans, mean, std, interpolation, crop_pct,
            data_config_from, train_aug, crop_padding, scale, hflip, pin_memory, persistent_workers, drop_last,
        )
        self.save_hyperparameters()
        if source not in ("auto", "debian", "embedded") and root is None:
            root = source  # a path given as source
        self.files = find_fashion_mnist(root if root is not None else source)
        self.dataset_name = "fashion_mnist" if self._is_full() else "fashion_mnist_subset"

    def _is_full(self) -> bool:
        with gzip.open(self.files["train"][1]) if self.files["train"][1].suffix == ".gz" else open(
            self.files["train"][1], "rb"
        ) as f:
            n = struct.unpack(">I", f.read(8)[4:8])[0]
        return n == 60000

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        rgb = self.in_chans == 3
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = read_idx(self.files["train"][0]), read_idx(self.files["train"][1])
            if len(images) != len(labels):
                raise ValueError(f"{self.files['train']}: {len(images)} images but {len(labels)} labels")
            tr, va = _stratified_split(labels, hp.val_fraction, hp.split_seed)
            tr, va = _limit(tr, labels, hp.max_train_samples), _limit(va, labels, hp.max_val_samples)
            self.train_set = ArrayImageDataset(images[tr], labels[tr], self.train_transform(), rgb)
            self.val_set = ArrayImageDataset(images[va], labels[va], self.eval_transform(), rgb) if len(va) else None
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = read_idx(self.files["test"][0]), read_idx(self.files["test"][1])
            te = _limit(np.arange(len(labels)), labels, hp.max_test_samples)
            self.test_set = ArrayImageDataset(images[te], labels[te], self.eval_transform(), rgb)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, False) if self.val_set is not None else []


# ---------------------------------------------------------------------------------------------------- folders
def _scan_class_folders(split_dir: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list, dict[str, int]]:
    """``[(path, label)]`` from ``split_dir/<class>/*.<img ext>``; classes sorted unless ``class_to_idx`` is given."""
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if class_to_idx is None:
        class_to_idx = {c: i for i, c in enumerate(classes)}
    else:
        unknown = sorted(set(classes) - set(class_to_idx))
        if unknown:
            raise ValueError(f"{split_dir}: class folders {unknown} are not in the training classes")
    samples = [
        (str(p), class_to_idx[c])
        for c in classes
        for p in sorted((split_dir / c).rglob("*"))
        if p.suffix.lower() in _IMG_EXTENSIONS and p.is_file()
    ]
    return samples, class_to_idx


class ImageFolderDataModule(_ImageDataModule):
    """ImageNet-style folders: ``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg`` (and optional ``test/``;
    without it the test stage uses ``val/``). Class indices are the sorted training class folder names.

    Batches: ``x`` float32 ``(B, in_chans, H, W)``, ``y`` int64 ``(B,)``. Defaults: ImageNet mean/std, 224 px,
    crop_pct 0.875, bicubic, ``train_aug="rrc"`` (timm RandomResizedCrop + flip); ``data_config_from="model"``
    takes mean/std/size from the model's pretrained config when it has one.
    """

    dataset_name = "image_folder"

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str | None = "test",
        dataset_name: str | None = None,
        max_train_samples: int | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        data_config_from: str = "model",
        train_aug: str = "rrc",
        crop_padding: int | None = None,
        scale: Sequence[float] = (0.08, 1.0),
        hflip: float = 0.5,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        drop_last: bool = True,
    ):
        super().__init__(
            batch_size, eval_batch_size, num_workers, image_size, in_chans, mean, std, interpolation, crop_pct,
            data_config_from, train_aug, crop_padding, scale, hflip, pin_memory, persistent_workers, drop_last,
        )
        self.save_hyperparameters()
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        self._native = {"input_size": None, "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
                        "interpolation": "bicubic", "crop_pct": 0.875}
        self._native = {k: v for k, v in self._native.items() if v is not None}
        self.root = Path(root).expanduser()
        train_dir = self.root / train_split
        if not train_dir.is_dir():
            raise FileNotFoundError(
                f"ImageFolderDataModule: {train_dir} not found; expected {self.root}/{train_split}/<class>/*.jpg and "
                f"{self.root}/{val_split}/<class>/*.jpg"
            )
        self.train_samples, self.class_to_idx = _scan_class_folders(train_dir)
        if not self.train_samples:
            raise FileNotFoundError(f"ImageFolderDataModule: no images ({', '.join(_IMG_EXTENSIONS)}) under {train_dir}")
        self.class_names = tuple(self.class_to_idx)
        self.num_classes = len(self.class_names)
        self.dataset_name = dataset_name or self.root.name
        val_dir = self.root / val_split
        self.val_samples = _scan_class_folders(val_dir, self.class_to_idx)[0] if val_dir.is_dir() else []
        test_dir = self.root / test_split if test_split else None
        self.test_samples = (
            _scan_class_folders(test_dir, self.class_to_idx)[0] if test_dir is not None and test_dir.is_dir()
            else self.val_samples
        )

    def setup(self, stage: str | None = None) -> None:
        mode = "RGB" if self.in_chans == 3 else "L"
        if self.train_set is None:
            samples = self.train_samples
            n = self.hparams.max_train_samples
            if n is not None:
                samples = samples[:: max(1, len(samples) // n)][:n]
            self.train_set = _FileImageDataset(samples, self.train_transform(), mode)
            self.val_set = _FileImageDataset(self.val_samples, self.eval_transform(), mode) if self.val_samples else None
        if self.test_set is None and self.test_samples:
            self.test_set = _FileImageDataset(self.test_samples, self.eval_transform(), mode)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader(self.val_set, False) if self.val_set is not None else []

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise FileNotFoundError(f"ImageFolderDataModule: no test/ or val/ images under {self.root}")
        return self._loader(self.test_set, False)
