"""Accident datasets for CRASH: DAD / CCD / A3D readers on small generated copies of their layouts, the feature
extractor (random-weight detector + VGG-16) on a short generated video, the rendered offline scenes and the
DataModule (validation split from training, every test video kept)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.datasets.accident import (AccidentDataModule, AccidentFeatures, build_scenes, read_a3d, read_ccd, read_dad,
                                   read_scenes, render_scene)
from zoo.datasets.accident_features import FeatureExtractor, VGG16Features, save_npz, torchvision_detector

D = 8


def _npz(path: Path, t: int, label: int, vid: str, key: str = "data") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.full((t, 20, D), float(label) + 0.5, np.float32)}
    if key == "data":
        arrays.update(labels=np.array([1 - label, label], np.float32), det=np.zeros((t, 19, 6), np.float32),
                      ID=np.array(vid))
    np.savez(path, **arrays)


def test_read_dad(tmp_path):
    for phase, n in (("training", 5), ("testing", 3)):
        for i in range(n):
            _npz(tmp_path / "vgg16_features" / phase / f"b{i:03d}.npz", 100, int(i % 2 == 0), f"{phase}_{i}")
    tr = read_dad(tmp_path, "training")
    assert [e.label for e in tr] == [1, 0, 1, 0, 1]
    assert [e.toa for e in tr] == [90.0, 101.0, 90.0, 101.0, 90.0]  # fixed toa 90; negatives n_frames + 1
    x, y, toa = AccidentFeatures(tr)[0]
    assert x.shape == (100, 20, D) and x.dtype == torch.float32
    assert y.tolist() == [0.0, 1.0] and toa.shape == (1,) and float(toa) == 90.0
    with pytest.raises(FileNotFoundError):
        read_dad(tmp_path, "validation")


def test_read_ccd(tmp_path):
    feats = tmp_path / "vgg16_features"
    rows, anno = [], []
    for i, (lab, first) in enumerate([(1, 0), (1, 30), (1, 55), (0, None)]):
        vid = f"{i:06d}"
        _npz(feats / "positive" / f"{vid}.npz" if lab else feats / "negative" / f"{vid}.npz", 50, lab, vid)
        rows.append(f"{'positive' if lab else 'negative'}/{vid}.npz {lab}")
        if lab:
            labels = [0] * 50
            for k in range(min(first, 49), 50):
                labels[k] = 1
            anno.append(f"{vid},[{','.join(map(str, labels))}],285,youtube_id,Day,Normal,No")
    (feats / "train.txt").write_text("\n".join(rows) + "\n")
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "Crash-1500.txt").write_text("\n".join(anno) + "\n")
    e = read_ccd(tmp_path, "train")
    assert [x.toa for x in e] == [1.0, 30.0, 49.0, 51.0]  # clamped to [1, 49]; negative 50 + 1


def test_read_a3d(tmp_path):
    feats = tmp_path / "vgg16_features"
    _npz(feats / "positive" / "clip_a_1.npz", 100, 1, "clip_a_1", key="features")
    _npz(feats / "positive" / "clip_bx.npz", 100, 1, "clip_bx", key="features")
    _npz(feats / "negative" / "clip_c.npz", 100, 0, "clip_c", key="features")
    (feats / "train.txt").write_text("positive/clip_a_1.npz 1\npositive/clip_bx.npz 1\nnegative/clip_c.npz 0\n")
    (tmp_path / "frame_labels").mkdir()
    (tmp_path / "frame_labels" / "clip_a.txt").write_text("".join(f"{i} {int(i >= 40)}\n" for i in range(100)))
    (tmp_path / "frame_labels" / "clip_bx.txt").write_text("".join(f"{i} 1\n" for i in range(100)))
    e = read_a3d(tmp_path, "train")
    assert [x.toa for x in e] == [40.0, 1.0, 101.0]  # "_1" suffix reads clip_a's labels; toa >= 1
    x, y, _ = AccidentFeatures(e)[2]
    assert x.shape == (100, 20, D) and y.tolist() == [1.0, 0.0]


def test_extractor_random_weights_on_generated_video(tmp_path):
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 4).view(4, 1, 1, 1)
    frames = (torch.rand(4, 3, 96, 128) * 0.3 + t * 0.5).clamp(0, 1)  # a short "video"
    det = torchvision_detector("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None, min_size=96)
    ext = FeatureExtractor(det, VGG16Features(width_div=16, fc_dim=32, seed=1), frame_size=64, crop_size=32)
    data, boxes = ext(frames)
    assert data.shape == (4, 20, 32) and boxes.shape == (4, 19, 6)
    n = (np.abs(data[:, 1:]).sum(-1) > 0).sum(1)
    k = (boxes[:, :, 2] > boxes[:, :, 0]).sum(1)
    assert np.all(n <= k)  # filled slots only where a box was found; the rest stay zero
    assert np.abs(data[:, 0]).sum() > 0
    save_npz(tmp_path / "v.npz", data, 1, boxes, "vid0")
    with np.load(tmp_path / "v.npz") as z:
        assert z["data"].shape == (4, 20, 32) and z["labels"].tolist() == [0.0, 1.0] and str(z["ID"]) == "vid0"
    # given boxes bypass the detector
    given = [torch.tensor([[0, 0, 40.0, 30]])] * 4
    data2, _ = FeatureExtractor(None, VGG16Features(16, 32, seed=1), 64, 32)(frames, given)
    assert (np.abs(data2[:, 1]).sum(-1) > 0).all() and (data2[:, 2:] == 0).all()


@pytest.mark.slow  # builds two full VGG-16s (~25 s on one core)
def test_vgg16_layout_matches_torchvision():
    from torchvision.models import vgg16

    ours = {k: v.shape for k, v in VGG16Features().state_dict().items()}
    ref = {k: v.shape for k, v in vgg16().state_dict().items() if not k.startswith("classifier.6")}
    assert ours == ref


def test_render_scene_kinds():
    rng = np.random.default_rng(0)
    f, boxes, toa = render_scene("crash", 20, 48, rng)
    assert f.shape == (20, 3, 48, 48) and 0 <= float(f.min()) and float(f.max()) <= 1
    assert 10 <= toa < 18 and len(boxes) == 20 and all(b.shape[1] == 4 for b in boxes)
    _, _, toa_n = render_scene("near_miss", 20, 48, rng)
    _, _, toa_0 = render_scene("normal", 20, 48, rng)
    assert toa_0 == -1 and toa_n > 0


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    build_scenes(root, "tiny", verbose=False)
    return root


def test_scenes_layout_and_datamodule(scenes):
    meta = json.loads((scenes / "meta.json").read_text())
    tr = read_scenes(scenes, "train")
    assert len(tr) == meta["n_train"] and {e.label for e in tr} == {0, 1}
    assert all(1 <= e.toa <= meta["n_frames"] - 1 for e in tr if e.label)
    dm = AccidentDataModule(str(scenes), "scenes", batch_size=4)
    dm.setup("fit")
    x, y, toa = next(iter(dm.train_dataloader()))
    assert x.shape == (4, meta["n_frames"], 20, meta["fc_dim"]) and y.shape == (4, 2) and toa.shape == (4, 1)
    test_batches = list(dm.test_dataloader())
    assert sum(len(b[0]) for b in test_batches) == meta["n_test"]  # every test video kept (no drop_last)
    assert dm.fps == meta["fps"]


def test_datamodule_val_split_from_training(tmp_path):
    for phase, n in (("training", 20), ("testing", 7)):
        for i in range(n):
            _npz(tmp_path / "vgg16_features" / phase / f"b{i:03d}.npz", 100, int(i % 3 == 0), f"{phase}_{i}")
    dm = AccidentDataModule(str(tmp_path), "dad", batch_size=4, val_fraction=0.25)
    dm.setup()
    tr = {e.vid for e in dm.train_set.entries}
    va = {e.vid for e in dm.val_set.entries}
    assert not tr & va and len(tr) + len(va) == 20 and len(va) == 5
    assert dm.val_set.labels.sum() >= 1  # stratified
    assert len(dm.test_set) == 7 and sum(len(b[0]) for b in dm.test_dataloader()) == 7
    with pytest.raises(ValueError, match="dataset"):
        AccidentDataModule(str(tmp_path), "kitti")
