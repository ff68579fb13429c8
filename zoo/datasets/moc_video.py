"""Synthetic multi-shot videos from real images, for the MoC video DiT (no downloads).

A scene = ``shots`` shots of ``frames_per_shot`` frames (``size`` x ``size`` RGB, pixel space). A scene has a cast
of ``cast`` entities, each one real Fashion-MNIST item (the embedded subset) with its own tint; every shot shows
two cast members (left / right column) moving up, down or standing still over a background cut from a real image
bundled with scikit-image (brick, grass, gravel, coffee, chelsea, astronaut, rocket, hubble), a new background per
shot (hard cuts). With 8 appearances of 3 entities per scene, entities recur across shots: keeping an entity's
identity across cuts is the long-range dependency MoC's routing has to carry.

Captions (a frozen one-hot "text encoder", ``text_dim`` = 32): a global caption naming the cast ``[id, class]``
and one local caption per shot ``[id_l, class_l, motion_l, id_r, class_r, motion_r]``; every token is
one-hot(vocabulary) + one-hot(role: global / left / right). ``text_shot`` gives the shot a token captions
(-1 = global). Item positions follow from the caption, so generated frames can be cropped where an item must be
and classified (``item_box``).

Why pixel space: 32x32x3 frames keep 16-frame scenes at 1,024 tokens with patch (1, 4, 4), which trains in about a
minute on one GPU; a learned autoencoder would add its own training run and its own errors to the metrics.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.datasets.images import find_fashion_mnist, read_idx

__all__ = ["CLASSES", "MOTIONS", "SceneConfig", "MultiShotVideoDataset", "MultiShotVideoDataModule", "item_box",
           "load_textures", "vocab"]

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
MOTIONS = ("up", "down", "still")
TEXTURES = ("brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "rocket", "hubble_deep_field")


@dataclass(frozen=True)
class SceneConfig:
    """Scene geometry. Defaults: 4 shots x 4 frames of 32 x 32 RGB, items 14 x 14, a cast of 3, 32 text tokens."""

    shots: int = 4
    frames_per_shot: int = 4
    size: int = 32
    item: int = 14
    cast: int = 3
    text_len: int = 32
    text_dim: int = 32

    @property
    def frames(self) -> int:
        return self.shots * self.frames_per_shot


def vocab(cfg: SceneConfig) -> list[str]:
    """Caption vocabulary: entity ids, class names, motions."""
    return [f"item-{chr(65 + i)}" for i in range(cfg.cast)] + list(CLASSES) + list(MOTIONS)


def item_box(cfg: SceneConfig, slot: int, motion: int, t: int) -> tuple[int, int]:
    """Top-left (y, x) of the item in column ``slot`` (0 left, 1 right) with ``motion`` at frame ``t`` of its shot."""
    lo, hi = 1, cfg.size - cfg.item - 1
    frac = t / max(cfg.frames_per_shot - 1, 1)
    y = {0: hi - (hi - lo) * frac, 1: lo + (hi - lo) * frac, 2: (lo + hi) / 2}[motion]
    half = cfg.size // 2
    x = slot * half + (half - cfg.item) // 2
    return int(round(y)), x


def load_textures(size: int = 128) -> list[np.ndarray]:
    """Real images bundled with scikit-image (no download), as (size, size, 3) float32 in [0, 1]."""
    import skimage.data
    from PIL import Image

    out = []
    for name in TEXTURES:
        img = getattr(skimage.data, name)().astype(np.float32) / 255.0
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        s = min(img.shape[:2])
        img = img[:s, :s, :3]
        small = Image.fromarray((img * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BOX)
        out.append(np.asarray(small, dtype=np.float32) / 255.0)
    return out


class MultiShotVideoDataset(Dataset):
    """``num_scenes`` deterministic scenes (scene i drawn from seed + i). Items are dicts of tensors:

    video (3, F, S, S) float32 in [-1, 1]; context (text_len, text_dim) float32; text_shot (text_len,) int64;
    shots (F,) int64 shot of each frame; classes / entity / motion (shots, 2) int64 per shot and slot (class of the
    item, cast index, motion index); cast_classes (cast,) int64.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_scenes: int, seed: int = 0,
                 cfg: SceneConfig | None = None, textures: list[np.ndarray] | None = None):
        self.cfg = cfg or SceneConfig()
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ValueError(f"images must be (N, 28, 28) with N labels, got {images.shape} / {len(labels)}")
        if self.cfg.item % 2 or 28 % (28 // self.cfg.item):
            raise ValueError(f"item size must divide 28 evenly (14 or 28), got {self.cfg.item}")
        f = 28 // self.cfg.item
        self.items = images.reshape(-1, self.cfg.item, f, self.cfg.item, f).mean((2, 4)).astype(np.float32) / 255.0
        self.labels = labels.astype(np.int64)
        self.num_scenes, self.seed = int(num_scenes), int(seed)
        self.textures = textures if textures is not None else load_textures()
        self.words = vocab(self.cfg)
        if len(self.words) + 3 > self.cfg.text_dim:
            raise ValueError(f"text_dim {self.cfg.text_dim} too small for {len(self.words)} words + 3 roles")

    def __len__(self) -> int:
        return self.num_scenes

    def _token(self, word: str, role: int) -> np.ndarray:
        v = np.zeros(self.cfg.text_dim, np.float32)
        v[self.words.index(word)] = 1.0
        v[len(self.words) + role] = 1.0
        return v

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.num_scenes:
            raise IndexError(i)
        c = self.cfg
        rng = np.random.default_rng(self.seed * 1_000_003 + i)
        cast = rng.choice(len(self.items), c.cast, replace=False)
        tints = rng.uniform(0.6, 1.0, (c.cast, 3)).astype(np.float32)
        video = np.zeros((c.frames, c.size, c.size, 3), np.float32)
        classes = np.zeros((c.shots, 2), np.int64)
        entity = np.zeros((c.shots, 2), np.int64)
        motion = rng.integers(0, len(MOTIONS), (c.shots, 2))
        tokens, text_shot = [], []
        for e in range(c.cast):
            tokens += [self._token(f"item-{chr(65 + e)}", 0), self._token(CLASSES[self.labels[cast[e]]], 0)]
            text_shot += [-1, -1]
        for s in range(c.shots):
            entity[s] = rng.choice(c.cast, 2, replace=False)
            tex = self.textures[rng.integers(len(self.textures))]
            y0, x0 = rng.integers(0, tex.shape[0] - c.size, 2)
            bg = 0.05 + 0.3 * tex[y0:y0 + c.size, x0:x0 + c.size]
            for slot in range(2):
                e = entity[s, slot]
                classes[s, slot] = self.labels[cast[e]]
                tokens += [self._token(f"item-{chr(65 + e)}", 1 + slot),
                           self._token(CLASSES[classes[s, slot]], 1 + slot),
                           self._token(MOTIONS[motion[s, slot]], 1 + slot)]
                text_shot += [s] * 3
            for t in range(c.frames_per_shot):
                frame = bg.copy()
                for slot in range(2):
                    e = entity[s, slot]
                    y, x = item_box(c, slot, int(motion[s, slot]), t)
                    a = self.items[cast[e]][..., None]
                    region = frame[y:y + c.item, x:x + c.item]
                    frame[y:y + c.item, x:x + c.item] = region * (1 - a) + a * tints[e]
                video[s * c.frames_per_shot + t] = frame
        ctx = np.zeros((c.text_len, c.text_dim), np.float32)
        tshot = np.full(c.text_len, -1, np.int64)
        if len(tokens) > c.text_len:
            raise ValueError(f"text_len {c.text_len} < caption length {len(tokens)}")
        ctx[: len(tokens)] = np.stack(tokens)
        tshot[: len(tokens)] = text_shot
        return {
            "video": torch.from_numpy(video).permute(3, 0, 1, 2) * 2 - 1,
            "context": torch.from_numpy(ctx),
            "text_shot": torch.from_numpy(tshot),
            "shots": torch.arange(c.shots).repeat_interleave(c.frames_per_shot),
            "classes": torch.from_numpy(classes),
            "entity": torch.from_numpy(entity),
            "motion": torch.from_numpy(motion.astype(np.int64)),
            "cast_classes": torch.from_numpy(self.labels[cast]),
        }


class MultiShotVideoDataModule(L.LightningDataModule):
    """Train / val / test scenes from the Fashion-MNIST train split (train scenes) and test split (val / test
    scenes: unseen items). Args: num_train, num_val, num_test scenes; batch_size; num_workers; seed; scene config
    fields (shots, frames_per_shot, size, cast); source (``find_fashion_mnist``)."""

    def __init__(self, num_train: int = 20000, num_val: int = 64, num_test: int = 64, batch_size: int = 16,
                 num_workers: int = 0, seed: int = 0, shots: int = 4, frames_per_shot: int = 4, size: int = 32,
                 cast: int = 3, source: str = "auto"):
        super().__init__()
        self.save_hyperparameters()
        self.cfg = SceneConfig(shots=shots, frames_per_shot=frames_per_shot, size=size, cast=cast)
        self._ds: dict[str, MultiShotVideoDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self._ds:
            return
        hp = self.hparams
        files = find_fashion_mnist(hp.source)
        tex = load_textures()
        tr = [read_idx(p) for p in files["train"]]
        te = [read_idx(p) for p in files["test"]]
        self._ds = {
            "train": MultiShotVideoDataset(tr[0], tr[1], hp.num_train, hp.seed, self.cfg, tex),
            "val": MultiShotVideoDataset(te[0], te[1], hp.num_val, hp.seed + 1, self.cfg, tex),
            "test": MultiShotVideoDataset(te[0], te[1], hp.num_test, hp.seed + 2, self.cfg, tex),
        }

    def dataset(self, split: str) -> MultiShotVideoDataset:
        self.setup()
        return self._ds[split]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.hparams.batch_size, shuffle=shuffle,
                          num_workers=self.hparams.num_workers, drop_last=shuffle,
                          persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)

    def card_info(self) -> dict:
        return {"dataset": "multi_shot_fmnist", "scene": asdict(self.cfg)}
