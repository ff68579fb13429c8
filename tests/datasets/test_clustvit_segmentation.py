"""Segmentation data (Fashion-MNIST mosaics, ADE20K / SUIM folder readers) and the segmentation task."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("skimage")

from zoo.datasets.clustvit_segmentation import (  # noqa: E402
    MOSAIC_CLASSES,
    SUIM_COLOURS,
    FashionMosaicDataModule,
    SegmentationFolder,
    SegmentationFolderDataModule,
)


@pytest.fixture(scope="module")
def mosaics():
    dm = FashionMosaicDataModule(image_size=64, num_train=8, num_val=4, num_test=8, batch_size=4, num_workers=0)
    dm.setup()
    return dm


def test_mosaic_deterministic_and_labels(mosaics):
    dm = mosaics
    assert dm.num_classes == len(MOSAIC_CLASSES) == 11
    a, la = dm.test_set.render(3)
    b, lb = dm.test_set.render(3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    other = FashionMosaicDataModule(image_size=64, num_test=8, num_workers=0, seed=1)
    other.setup()
    assert not np.array_equal(other.test_set.render(3)[0], a)
    x, y = dm.test_set[3]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    assert y.shape == (64, 64) and y.dtype == torch.int64
    labels = torch.cat([dm.test_set[i][1].flatten() for i in range(8)])
    assert labels.min() == 0 and labels.max() <= 10 and len(labels.unique()) >= 4
    # train / val items come from the training file (disjoint), test items from the test file
    assert len(dm.train_set.items) + len(dm.val_set.items) == 6000 and len(dm.test_set.items) == 1000
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 64, 64)


def test_mosaic_prerender_cache(tmp_path):
    kw = dict(image_size=48, num_train=6, num_val=2, num_test=3, num_workers=0, prerender=True, cache_dir=str(tmp_path))
    dm = FashionMosaicDataModule(**kw)
    dm.setup()
    assert len(list(tmp_path.glob("*.npz"))) == 3
    img, lab = dm.test_set.render(2)
    assert np.array_equal(dm.test_set.cache[0][2], img) and np.array_equal(dm.test_set.cache[1][2], lab)
    again = FashionMosaicDataModule(**kw)
    again.setup()
    assert torch.equal(again.test_set[2][1], dm.test_set[2][1])


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_ade20k_reader(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("training", "validation"):
        for i in range(2):
            _write(tmp_path / "images" / split / f"ADE_{i}.jpg", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
            ann = rng.integers(0, 151, (40, 48)).astype(np.uint8)
            ann[0, 0], ann[0, 1] = 0, 150
            _write(tmp_path / "annotations" / split / f"ADE_{i}.png", ann)
    ds = SegmentationFolder(tmp_path, "ade20k", "validation")
    x, y = ds[0]
    ann = np.asarray(Image.open(tmp_path / "annotations" / "validation" / "ADE_0.png"))
    assert x.shape == (3, 40, 48) and y[0, 0] == 255 and y[0, 1] == 149
    assert torch.equal(y[ann > 0], torch.from_numpy(ann[ann > 0].astype(np.int64) - 1))
    dm = SegmentationFolderDataModule(str(tmp_path), "ade20k", image_size=32, batch_size=2, num_workers=0)
    dm.setup()
    xb, yb = next(iter(dm.test_dataloader()))
    assert dm.num_classes == 150 and xb.shape == (2, 3, 32, 32) and yb.shape == (2, 32, 32)


def test_suim_reader(tmp_path):
    colours = list(SUIM_COLOURS)
    mask = np.zeros((32, 32, 3), np.uint8)
    for j, c in enumerate(colours):
        mask[:, 4 * j:4 * j + 4] = c
    mask[0, 0] = (250, 3, 240)  # near-binary colours from lossy saving still map by thresholds
    _write(tmp_path / "TEST" / "images" / "d_r_1_.jpg", np.full((32, 32, 3), 100, np.uint8))
    _write(tmp_path / "TEST" / "masks" / "d_r_1_.bmp", mask)
    _, y = SegmentationFolder(tmp_path, "suim", "TEST")[0]
    for j, c in enumerate(colours):
        assert (y[1:, 4 * j:4 * j + 4] == SUIM_COLOURS[c]).all()
    assert y[0, 0] == SUIM_COLOURS[(255, 0, 255)]
    with pytest.raises(FileNotFoundError):
        SegmentationFolder(tmp_path, "suim", "train_val")


def test_segmentation_task_step_and_overlays(tmp_path, mosaics):
    from zoo.tasks.segmentation import SemanticSegmentationTask

    task = SemanticSegmentationTask("clustvit_t", {"num_classes": 11, "img_size": 64, "num_layers": 4},
                                    prediction_dir=str(tmp_path / "png"), max_predictions=3)
    x, y = next(iter(mosaics.train_dataloader()))
    task.log = lambda *a, **k: None  # no trainer attached
    loss = task.training_step((x, y), 0)
    loss.backward()
    assert torch.isfinite(loss)
    task.eval()
    with torch.no_grad():
        task.step((x, y), "test")
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    assert Image.open(tmp_path / "png" / "0000.png").size == (64 * 3, 64)
    assert 0 <= task.test_miou.compute() <= 1
    with pytest.raises(ValueError, match="num_classes"):
        SemanticSegmentationTask("clustvit_t", {"num_classes": 11}, num_classes=5)
