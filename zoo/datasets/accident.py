"""Accident-anticipation feature datasets: DAD, CCD and A3D readers (UString / DSTA layout) and the zoo's offline
rendered-scenes task, with a LightningDataModule.

Every reader yields ``(x (T, 20, D) float32, y one-hot (2,) float32, toa (1,) float32)``: slot 0 = full-frame
feature, slots 1..19 = object features; ``toa`` in frames, ``n_frames + 1`` for negatives (the authors' convention).

* DAD: 100 frames at 20 fps; toa fixed at frame 90; ``vgg16_features/{training,testing}/*.npz`` with keys ``data``,
  ``labels``, ``det``, ``ID``.
* CCD: 50 frames at 10 fps; toa = first positive frame of ``videos/Crash-1500.txt``, clamped to [1, 49];
  ``vgg16_features/{train,test}.txt`` ("file label") and npz files as DAD's.
* A3D: 100 frames at 20 fps; toa = first positive frame of ``frame_labels/<clip>.txt``, at least 1;
  ``vgg16_features/{train,test}.txt``, npz key ``features``.

Differences from the authors' loaders, on purpose: the test loader keeps every video (theirs uses ``drop_last=True``
and silently drops up to batch-1 videos), and model selection uses a validation split carved from the training
split (``val_fraction``), never the test split (their "final model" is the best test AP).

The rendered offline task (``dataset="scenes"``, :func:`build_scenes`): dashcam-like frames (sky, grass, a road in
perspective with moving lane marks, vehicles as textured boxes whose size grows with nearness); in positive videos two
vehicles' trajectories converge and collide at a known frame (the toa); hard negatives are near misses (the same
convergence, offset so the boxes never touch) and plain traffic. Features come from
:mod:`zoo.datasets.accident_features` with the renderer's boxes as the detector and a seeded random VGG-16 (no
pretrained weights offline), written in the CCD layout (``videos/Crash-1500.txt`` annotations), so the CCD reader
reads it.

    python -m zoo.datasets.accident build-scenes --out data/accident_scenes [--preset cpu|gpu] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["DATASETS", "VideoEntry", "AccidentFeatures", "read_dad", "read_ccd", "read_a3d", "render_scene",
           "build_scenes", "SCENE_PRESETS", "AccidentDataModule", "main"]

#: per-dataset frame counts and frame rates (the authors' loaders)
DATASETS: dict[str, dict[str, Any]] = {
    "dad": {"n_frames": 100, "fps": 20.0},
    "ccd": {"n_frames": 50, "fps": 10.0},
    "a3d": {"n_frames": 100, "fps": 20.0},
}


@dataclass(frozen=True)
class VideoEntry:
    """One video: its feature file, label (1 = accident), toa in frames (n_frames + 1 for negatives), id."""

    path: Path
    label: int
    toa: float
    vid: str
    key: str = "data"  # npz key of the features (A3D: "features")


# ----------------------------------------------------------------------------------------------------------------
# Readers
# ----------------------------------------------------------------------------------------------------------------
def _npz_label_id(path: Path) -> tuple[int, str]:
    with np.load(path) as z:
        lab = int(np.asarray(z["labels"])[1] > 0)
        vid = str(z["ID"]) if "ID" in z.files else path.stem
    return lab, vid


def read_dad(root: str | Path, phase: str = "training", n_frames: int = 100) -> list[VideoEntry]:
    """DAD: ``root/vgg16_features/{training,testing}/*.npz`` (sorted); positives' toa is frame 90."""
    folder = Path(root) / "vgg16_features" / phase
    if not folder.is_dir():
        raise FileNotFoundError(f"DAD folder {folder} not found (expected vgg16_features/{{training,testing}}/*.npz)")
    out = []
    for p in sorted(folder.glob("*.npz")):
        lab, vid = _npz_label_id(p)
        out.append(VideoEntry(p, lab, 90.0 if lab else float(n_frames + 1), vid))
    return out


def _read_list(root: Path, phase: str) -> list[tuple[str, int]]:
    lst = root / "vgg16_features" / f"{phase}.txt"
    if not lst.is_file():
        raise FileNotFoundError(f"list file {lst} not found")
    rows = []
    for line in lst.read_text().splitlines():
        if line.strip():
            name, lab = line.split()
            rows.append((name, int(lab)))
    return rows


def read_ccd_annotations(path: str | Path, n_frames: int = 50) -> dict[str, int]:
    """``Crash-1500.txt``: ``vid,[l0,l1,...],startframe,youtube_id,lighting,weather,ego_involve`` per line -> toa =
    first frame labelled 1, clamped to [1, n_frames - 1]."""
    toas = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        vid, rest = line.strip().split(",[", 1)
        labels = [int(v) for v in rest.split("],", 1)[0].split(",")]
        if sum(labels) == 0:
            raise ValueError(f"{path}: video {vid} has no positive frame")
        toas[vid] = min(max(1, labels.index(1)), n_frames - 1)
    return toas


def read_ccd(root: str | Path, phase: str = "train", n_frames: int = 50) -> list[VideoEntry]:
    """CCD: ``root/vgg16_features/{phase}.txt`` ("file label", file relative to vgg16_features), npz ``ID`` keys
    into ``root/videos/Crash-1500.txt``."""
    root = Path(root)
    toas = read_ccd_annotations(root / "videos" / "Crash-1500.txt", n_frames)
    out = []
    for name, lab in _read_list(root, phase):
        p = root / "vgg16_features" / name
        flab, vid = _npz_label_id(p)
        if flab != int(lab > 0):
            raise ValueError(f"{p}: label {flab} in the npz but {lab} in {phase}.txt")
        if lab > 0 and vid not in toas:
            raise ValueError(f"{p}: positive video {vid!r} has no annotation in Crash-1500.txt")
        out.append(VideoEntry(p, int(lab > 0), float(toas[vid]) if lab > 0 else float(n_frames + 1), vid))
    return out


def read_a3d(root: str | Path, phase: str = "train", n_frames: int = 100) -> list[VideoEntry]:
    """A3D: ``root/vgg16_features/{phase}.txt`` ("positive/<clip>.npz 1"), npz key ``features``; toa = first
    positive frame of ``root/frame_labels/<clip>.txt`` ("frame label" lines), at least 1. A clip id ending in a
    one-character part (``<clip>_1``) reads the labels of ``<clip>``."""
    root = Path(root)
    out = []
    for name, lab in _read_list(root, phase):
        clip = name.split("/")[1].split(".npz")[0] if "/" in name else Path(name).stem
        if lab > 0:
            base = clip if len(clip.split("_")[-1]) > 1 else clip[:-2]
            labs = [int(line.split()[1]) for line in (root / "frame_labels" / f"{base}.txt").read_text().splitlines()
                    if line.strip()]
            if 1 not in labs:
                raise ValueError(f"frame_labels/{base}.txt has no positive frame")
            toa = float(max(1, labs.index(1)))
        else:
            toa = float(n_frames + 1)
        out.append(VideoEntry(root / "vgg16_features" / name, int(lab > 0), toa, clip, key="features"))
    return out


class AccidentFeatures(Dataset):
    """Map-style dataset over :class:`VideoEntry` rows -> ``(x (T, 20, D) float32, y (2,) float32, toa (1,)
    float32)``. ``cache=True`` keeps every loaded array in memory (small sets, the rendered task)."""

    def __init__(self, entries: list[VideoEntry], cache: bool = False):
        if not entries:
            raise ValueError("no videos")
        self.entries = list(entries)
        self.cache = cache
        self._mem: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        return np.array([e.label for e in self.entries])

    def load(self, i: int) -> np.ndarray:
        if i in self._mem:
            return self._mem[i]
        e = self.entries[i]
        with np.load(e.path) as z:
            x = np.asarray(z[e.key])
        if self.cache:
            self._mem[i] = x
        return x

    def __getitem__(self, i: int):
        e = self.entries[i]
        x = torch.from_numpy(np.asarray(self.load(i), dtype=np.float32))
        y = torch.tensor([1.0 - e.label, float(e.label)])
        return x, y, torch.tensor([e.toa], dtype=torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Rendered offline scenes
# ----------------------------------------------------------------------------------------------------------------
SCENE_PRESETS: dict[str, dict[str, Any]] = {
    # CPU embedded default: tiny VGG (channels / 16, fc 256), 64 px frames, 32 px crops
    "cpu": {"n_train": 64, "n_val": 16, "n_test": 32, "n_frames": 30, "fps": 10.0, "size": 64, "crop_size": 32,
            "width_div": 16, "fc_dim": 256},
    # GPU suite: full-width VGG-16 trunk, fc 1024, 112 px frames, 64 px crops
    "gpu": {"n_train": 512, "n_val": 96, "n_test": 160, "n_frames": 50, "fps": 10.0, "size": 112, "crop_size": 64,
            "width_div": 1, "fc_dim": 1024},
    # tests: a handful of videos
    "tiny": {"n_train": 8, "n_val": 4, "n_test": 6, "n_frames": 12, "fps": 10.0, "size": 48, "crop_size": 32,
             "width_div": 16, "fc_dim": 64},
}


def _screen(xl: torch.Tensor, s: torch.Tensor, size: int, horizon: float) -> tuple[torch.Tensor, ...]:
    """(lateral position, nearness in (0, 1]) -> box centre x, bottom y, width, height in pixels."""
    yb = horizon + (size - horizon) * s
    cx = size / 2 + xl * size * 0.45 * s
    w = size * 0.24 * s + 1.5
    return cx, yb, w, 0.7 * w


def render_scene(kind: str, n_frames: int, size: int, rng: np.random.Generator, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, list[torch.Tensor], int]:
    """One clip. kind: "crash" | "near_miss" | "normal". Returns frames (T, 3, S, S) float in [0, 1], per-frame boxes
    (K_t, 4) xyxy pixels (visible vehicles, nearest first) and the collision frame (crash; else -1)."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(int(rng.integers(2**31)))
    t = torch.arange(n_frames, dtype=torch.float32, device=dev)
    horizon = size * rng.uniform(0.3, 0.4)
    yy, xx = torch.meshgrid(torch.arange(size, device=dev, dtype=torch.float32) + 0.5,
                            torch.arange(size, device=dev, dtype=torch.float32) + 0.5, indexing="ij")
    # background: sky gradient, grass, road trapezoid with moving dashed centre line
    sky = torch.tensor(rng.uniform([0.45, 0.6, 0.8], [0.65, 0.8, 1.0]), dtype=torch.float32, device=dev)
    grass = torch.tensor(rng.uniform([0.15, 0.35, 0.1], [0.3, 0.55, 0.2]), dtype=torch.float32, device=dev)
    road = float(rng.uniform(0.25, 0.45))
    s_pix = ((yy - horizon) / (size - horizon)).clamp(min=0)
    on_road = (yy > horizon) & ((xx - size / 2).abs() < size * 0.47 * s_pix + 0.5)
    bg = torch.where((yy <= horizon)[None], sky.view(3, 1, 1) * (0.8 + 0.2 * yy / size)[None], grass.view(3, 1, 1)
                     * (0.85 + 0.3 * torch.rand(1, size, size, generator=gen, device=dev)))
    bg = torch.where(on_road[None], torch.full_like(bg, road), bg)
    speed = rng.uniform(0.6, 1.4)
    phase = (torch.log(s_pix.clamp(min=1e-3))[None] * 6.0 + t.view(-1, 1, 1) * 0.5 * speed) % 2.0  # (T, S, S)
    dash = on_road[None] & ((xx - size / 2).abs() < 0.6 + 0.02 * size * s_pix)[None] & (phase < 1.0)
    frames = bg[None].repeat(n_frames, 1, 1, 1)
    frames = torch.where(dash[:, None], torch.full_like(frames, 0.9), frames)

    # vehicles: (lateral x, nearness s) move linearly; crash pair meets at frame toa
    tracks: list[tuple[torch.Tensor, torch.Tensor]] = []
    toa = -1
    if kind in ("crash", "near_miss"):
        toa = int(rng.integers(int(0.55 * n_frames), int(0.85 * n_frames)))
        xc, sc = rng.uniform(-0.5, 0.5), rng.uniform(0.45, 0.85)
        va = np.array([rng.choice([-1, 1]) * rng.uniform(0.6, 1.2), rng.uniform(-0.2, 0.4)]) / n_frames * 1.5
        vb = np.array([-np.sign(va[0]) * rng.uniform(0.3, 1.0), rng.uniform(0.2, 0.7)]) / n_frames * 1.5
        offset = 0.0
        if kind == "near_miss":  # same approach, but shifted so the boxes never touch
            offset = float(rng.choice([-1, 1]) * rng.uniform(0.55, 0.8))
        for v, off in ((va, 0.0), (vb, offset)):
            dt = (t - toa).clamp(max=0.0) if kind == "crash" else (t - toa)  # crash: both stop at the impact
            xl = xc + off + float(v[0]) * dt
            s = (sc + float(v[1]) * dt).clamp(0.05, 1.2)
            if kind == "crash":
                jit = torch.from_numpy(rng.normal(0, 0.01, n_frames)).float().to(dev) * (t >= toa)
                xl = xl + jit
            tracks.append((xl, s))
    for _ in range(int(rng.integers(1, 4))):  # background traffic in lanes
        lane = float(rng.choice([-0.6, -0.2, 0.25, 0.6]))
        s0, vs = rng.uniform(0.1, 0.8), rng.uniform(-0.3, 0.3) / n_frames
        tracks.append((torch.full_like(t, lane) + torch.from_numpy(rng.normal(0, 0.01, n_frames)).float().to(dev),
                       (s0 + vs * t).clamp(0.05, 1.0)))

    boxes: list[list[tuple[float, np.ndarray]]] = [[] for _ in range(n_frames)]
    order = sorted(range(len(tracks)), key=lambda i: float(tracks[i][1].mean()))  # far first (painter's order)
    for i in order:
        xl, s = tracks[i]
        cx, yb, w, h = _screen(xl, s, size, horizon)
        x1, x2, y1, y2 = cx - w / 2, cx + w / 2, yb - h, yb
        col = torch.tensor(rng.uniform(0.05, 1.0, 3), dtype=torch.float32, device=dev)
        inside = ((xx[None] >= x1.view(-1, 1, 1)) & (xx[None] < x2.view(-1, 1, 1)) & (yy[None] >= y1.view(-1, 1, 1))
                  & (yy[None] < y2.view(-1, 1, 1)))  # (T, S, S)
        rel_y = (yy[None] - y1.view(-1, 1, 1)) / h.view(-1, 1, 1)
        rel_x = (xx[None] - x1.view(-1, 1, 1)) / w.view(-1, 1, 1)
        body = col.view(1, 3, 1, 1) * (0.75 + 0.25 * torch.cos(rel_x * 12.0))[:, None]
        window = (rel_y < 0.4) & (rel_x > 0.15) & (rel_x < 0.85)
        wheels = (rel_y > 0.85) & ((rel_x < 0.25) | (rel_x > 0.75))
        paint = torch.where(window[:, None], torch.full_like(body, 0.12), body)
        paint = torch.where(wheels[:, None], torch.full_like(body, 0.03), paint)
        frames = torch.where(inside[:, None], paint, frames)
        vis = ((x2 > 0) & (x1 < size) & (y2 > horizon) & (y1 < size)).cpu().numpy()
        xyxy = torch.stack([x1, y1, x2, y2], 1).clamp(0, size).cpu().numpy()
        s_np = s.cpu().numpy()
        for k in np.nonzero(vis)[0]:
            boxes[k].append((float(s_np[k]), xyxy[k]))
    frames = (frames + 0.03 * torch.randn(frames.shape, generator=gen, device=dev)).clamp(0, 1)
    per_frame = []
    for k in range(n_frames):
        bs = [b for _, b in sorted(boxes[k], key=lambda p: -p[0])]
        per_frame.append(torch.from_numpy(np.stack(bs)).to(dev) if bs else torch.zeros(0, 4, device=dev))
    return frames, per_frame, toa


def build_scenes(out: str | Path, preset: str = "cpu", device: str = "cpu", seed: int = 0,
                 dtype: str = "float16", verbose: bool = True, **overrides: Any) -> Path:
    """Render the offline task, extract features, write the CCD layout under ``out``; returns ``out``.

    Splits train / val / test; per split 40 % crashes, 30 % near misses, 30 % normal traffic. ``meta.json`` records
    the settings and timings. Features are stored as ``dtype`` (float16 halves the size; readers cast to float32).
    """
    from zoo.datasets.accident_features import FeatureExtractor, VGG16Features, save_npz

    if preset not in SCENE_PRESETS:
        raise ValueError(f"preset must be one of {sorted(SCENE_PRESETS)}, got {preset!r}")
    cfg = {**SCENE_PRESETS[preset], **overrides}
    out = Path(out)
    t0 = time.perf_counter()
    half = device != "cpu" and torch.cuda.is_available()
    ext = FeatureExtractor(None, VGG16Features(cfg["width_div"], cfg["fc_dim"], seed=seed), frame_size=cfg["size"],
                           crop_size=cfg["crop_size"], device=device, dtype=torch.bfloat16 if half else torch.float32)
    rng = np.random.default_rng(seed)
    n_frames = int(cfg["n_frames"])
    anno, counts, t_render, t_feat = [], {}, 0.0, 0.0
    for split in ("train", "val", "test"):
        n = int(cfg[f"n_{split}"])
        kinds = ["crash"] * round(0.4 * n) + ["near_miss"] * round(0.3 * n)
        kinds += ["normal"] * (n - len(kinds))
        rng.shuffle(kinds)
        lines = []
        for i, kind in enumerate(kinds):
            vid = f"{split}_{i:05d}"
            a = time.perf_counter()
            frames, boxes, toa = render_scene(kind, n_frames, cfg["size"], rng, device)
            b = time.perf_counter()
            data, det = ext(frames, boxes)
            t_render, t_feat = t_render + b - a, t_feat + time.perf_counter() - b
            lab = int(kind == "crash")
            save_npz(out / "vgg16_features" / split / f"{vid}.npz", data, lab, det, vid, np.dtype(dtype))
            lines.append(f"{split}/{vid}.npz {lab}")
            if lab:
                labels = [0] * n_frames
                for k in range(toa, n_frames):
                    labels[k] = 1
                anno.append(f"{vid},[{','.join(map(str, labels))}],0,rendered,day,clear,0")
            counts[f"{split}_{kind}"] = counts.get(f"{split}_{kind}", 0) + 1
        (out / "vgg16_features" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        if verbose:
            print(f"[scenes] {split}: {n} videos ({time.perf_counter() - t0:.1f}s)")
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "videos" / "Crash-1500.txt").write_text("\n".join(anno) + "\n")
    meta = {"preset": preset, "seed": seed, "device": device, "dtype": dtype, **cfg, "x_dim": cfg["fc_dim"],
            "counts": counts, "seconds_render": round(t_render, 2), "seconds_features": round(t_feat, 2),
            "seconds_total": round(time.perf_counter() - t0, 2),
            "feature_net": f"VGG-16 (channels/{cfg['width_div']}, fc {cfg['fc_dim']}), seeded random weights",
            "detector": "renderer's ground-truth boxes (nearest first, at most 19)"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def read_scenes(root: str | Path, phase: str) -> list[VideoEntry]:
    """The rendered task (CCD layout; frame count and fps from ``meta.json``)."""
    meta = json.loads((Path(root) / "meta.json").read_text())
    return read_ccd(root, phase, n_frames=int(meta["n_frames"]))


# ----------------------------------------------------------------------------------------------------------------
# DataModule
# ----------------------------------------------------------------------------------------------------------------
def _split_val(entries: list[VideoEntry], frac: float, seed: int) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Stratified, seeded validation split carved from the training split."""
    rng = np.random.default_rng(seed)
    val_idx: set[int] = set()
    for lab in (0, 1):
        idx = [i for i, e in enumerate(entries) if e.label == lab]
        k = int(round(frac * len(idx)))
        val_idx.update(rng.permutation(idx)[:k].tolist())
    return ([e for i, e in enumerate(entries) if i not in val_idx], [e for i, e in enumerate(entries) if i in val_idx])


try:
    import lightning as L

    class AccidentDataModule(L.LightningDataModule):
        """DAD / CCD / A3D features or the rendered offline task; batches ``(x (B, T, 20, D), y (B, 2), toa (B, 1))``.

        Args:
            root: dataset root (see the module table); for ``dataset="scenes"`` the folder :func:`build_scenes`
                writes (built there first when missing and ``build_offline``).
            dataset: "dad" | "ccd" | "a3d" | "scenes".
            val_fraction: stratified share of the training split held out for model selection (scenes: its own
                val split). batch_size: 10 in the authors' recipe. limit_*: first N videos only.
            scene_preset / scene_overrides / scene_device: :func:`build_scenes` settings (device "auto": CUDA when
                available). Under ``fast_dev_run`` a missing scene folder is replaced by a tiny one built in
                ``<root>_fast_dev_run`` (same feature width), so smoke runs take seconds.
            cache: keep loaded arrays in memory (default: only for scenes).
        """

        def __init__(self, root: str = "data/accident_scenes", dataset: str = "scenes", batch_size: int = 10,
                     eval_batch_size: int | None = None, num_workers: int = 0, val_fraction: float = 0.1,
                     seed: int = 0, limit_train: int | None = None, limit_val: int | None = None,
                     limit_test: int | None = None, build_offline: bool = False, scene_preset: str = "cpu",
                     scene_overrides: dict | None = None, scene_device: str = "auto", cache: bool | None = None):
            super().__init__()
            if dataset not in ("dad", "ccd", "a3d", "scenes"):
                raise ValueError(f"dataset must be 'dad', 'ccd', 'a3d' or 'scenes', got {dataset!r}")
            self.save_hyperparameters()
            self.root = Path(root)
            self.batch_size = int(batch_size)
            self.dataset_name = {"dad": "DAD", "ccd": "CCD", "a3d": "A3D", "scenes": "accident_scenes"}[dataset]
            self.train_set = self.val_set = self.test_set = None

        @property
        def fps(self) -> float:
            if self.hparams.dataset == "scenes":
                return float(json.loads((self.root / "meta.json").read_text())["fps"])
            return float(DATASETS[self.hparams.dataset]["fps"])

        def _fast_dev_run(self) -> bool:
            trainer = getattr(self, "trainer", None)
            return bool(trainer is not None and getattr(trainer, "fast_dev_run", False))

        def prepare_data(self) -> None:
            hp = self.hparams
            if hp.dataset != "scenes" or (self.root / "meta.json").is_file():
                return
            over = dict(hp.scene_overrides or {})
            preset = hp.scene_preset
            if self._fast_dev_run():
                # a smoke run: a tiny set with the preset's feature width (the model's x_dim), in its own folder
                over.setdefault("fc_dim", SCENE_PRESETS[preset]["fc_dim"])
                preset = "tiny"
                self.root = self.root.with_name(self.root.name + "_fast_dev_run")
                if (self.root / "meta.json").is_file():
                    return
            elif not hp.build_offline:
                raise FileNotFoundError(f"{self.root} holds no rendered scenes: run `python -m "
                                        f"zoo.datasets.accident build-scenes --out {self.root}` or set build_offline")
            device = hp.scene_device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            print(f"[AccidentDataModule] rendering the offline scenes ({preset}) into {self.root} (first run only)")
            build_scenes(self.root, preset, device, hp.seed, **over)

        def _entries(self, phase: str) -> list[VideoEntry]:
            hp, r = self.hparams, self.root
            if hp.dataset == "scenes":
                return read_scenes(r, phase)
            n = DATASETS[hp.dataset]["n_frames"]
            reader = {"dad": read_dad, "ccd": read_ccd, "a3d": read_a3d}[hp.dataset]
            names = {"dad": ("training", "testing")}.get(hp.dataset, ("train", "test"))
            return reader(r, names[0] if phase == "train" else names[1], n)

        def setup(self, stage: str | None = None) -> None:
            hp = self.hparams
            if self.train_set is not None:
                return
            if hp.dataset == "scenes" and not (self.root / "meta.json").is_file():
                self.prepare_data()
            cache = hp.dataset == "scenes" if hp.cache is None else bool(hp.cache)
            if hp.dataset == "scenes":
                train, val = self._entries("train"), self._entries("val")
            else:
                train, val = _split_val(self._entries("train"), hp.val_fraction, hp.seed)
            test = self._entries("test")
            lim = lambda e, n: e[:n] if n else e  # noqa: E731
            self.train_set = AccidentFeatures(lim(train, hp.limit_train), cache)
            self.val_set = AccidentFeatures(lim(val, hp.limit_val), cache)
            self.test_set = AccidentFeatures(lim(test, hp.limit_test), cache)

        def _loader(self, ds, train: bool) -> DataLoader:
            bs = self.batch_size if train else int(self.hparams.eval_batch_size or self.batch_size)
            nw = int(self.hparams.num_workers)
            return DataLoader(ds, batch_size=bs, shuffle=train, drop_last=train and len(ds) > bs, num_workers=nw,
                              persistent_workers=nw > 0)

        def train_dataloader(self) -> DataLoader:
            return self._loader(self.train_set, True)

        def val_dataloader(self) -> DataLoader:
            return self._loader(self.val_set, False)  # every video (no drop_last)

        def test_dataloader(self) -> DataLoader:
            return self._loader(self.test_set, False)  # every video (the authors drop the last partial batch)

        def predict_dataloader(self) -> DataLoader:
            return self._loader(self.test_set, False)

        def card_info(self) -> dict[str, Any]:
            info: dict[str, Any] = {"dataset_key": self.hparams.dataset, "fps": self.fps,
                                    "model_selection": "validation split"}
            for name, ds in (("train", self.train_set), ("val", self.val_set), ("test", self.test_set)):
                if ds is not None:
                    info[f"{name}_videos"] = len(ds)
                    info[f"{name}_positives"] = int(ds.labels.sum())
            return info

except ImportError:  # pragma: no cover - lightning is a core dependency
    pass


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m zoo.datasets.accident")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-scenes", help="render the offline accident task and extract its features")
    b.add_argument("--out", default="data/accident_scenes")
    b.add_argument("--preset", default="cpu", choices=sorted(SCENE_PRESETS))
    b.add_argument("--device", default="cpu")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override preset entries")
    a = p.parse_args(argv)
    over = {}
    for kv in a.set:
        k, v = kv.split("=", 1)
        over[k] = type(SCENE_PRESETS[a.preset][k])(v) if k in SCENE_PRESETS[a.preset] else v
    out = build_scenes(a.out, a.preset, a.device, a.seed, **over)
    print(json.dumps(json.loads((out / "meta.json").read_text()), indent=1))


if __name__ == "__main__":
    main()
