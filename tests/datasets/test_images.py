"""Image datamodules on tiny generated copies of each format (IDX files, an ImageFolder tree)."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from PIL import Image
from zoo.datasets import images as I
from zoo.datasets.images import (
    FashionMNISTDataModule,
    ImageFolderDataModule,
    find_fashion_mnist,
    read_idx,
)


def make_idx_folder(folder, n_train=60, n_test=20, gz=True, seed=0):
    """Fashion-MNIST-format IDX files with random 28x28 images; labels cycle 0..9."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        I.write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        I.write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", (np.arange(n) % 10).astype(np.uint8))
    return folder


def make_image_folder(root, classes=("cat", "dog", "fox"), n_train=4, n_val=2, size=(20, 16)):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                arr = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def test_idx_round_trip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        I.write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    with pytest.raises(ValueError, match="uint8 IDX"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(ValueError, match="expected 5 bytes"):
        read_idx(tmp_path / "short.gz")


def test_find_fashion_mnist_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_fashion_mnist(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        find_fashion_mnist(tmp_path / "empty")
    monkeypatch.setattr(I, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "not_installed")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        find_fashion_mnist("debian")
    # auto falls back to the embedded subset when the package is absent
    assert find_fashion_mnist("auto")["train"][0].parent == I.EMBEDDED_FASHION_MNIST_DIR


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_datamodule_splits_and_shapes(tmp_path, gz):
    root = make_idx_folder(tmp_path / "fm", gz=gz)
    dm = FashionMNISTDataModule(root=str(root), val_fraction=0.2, batch_size=8, num_workers=0, image_size=32,
                                in_chans=3)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 50 and len(dm.val_set) == 10 and len(dm.test_set) == 20
    # stratified (6 per class -> 1 per class in val) and deterministic
    assert np.bincount(dm.val_set.labels, minlength=10).tolist() == [1] * 10
    dm2 = FashionMNISTDataModule(root=str(root), val_fraction=0.2, num_workers=0)
    dm2.setup("fit")
    np.testing.assert_array_equal(dm.val_set.images, dm2.val_set.images)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    xt, _ = next(iter(dm.test_dataloader()))
    assert xt.shape == (8, 3, 32, 32)
    cfg = dm.data_config
    assert cfg["input_size"] == (3, 32, 32) and cfg["mean"] == pytest.approx((0.2860,) * 3)
    # eval transform: pixel p -> (p/255 - mean)/std  (native size, grey)
    dm1 = FashionMNISTDataModule(root=str(root), num_workers=0, in_chans=1, batch_size=4)
    dm1.setup("test")
    xt, yt = next(iter(dm1.test_dataloader()))
    raw = torch.from_numpy(read_idx(dm1.files["test"][0])[:4].astype(np.float32)) / 255
    torch.testing.assert_close(xt[:, 0], (raw - 0.2860) / 0.3530, atol=1e-5, rtol=0)
    assert yt.tolist() == [0, 1, 2, 3]


def test_fashion_mnist_limits_and_embedded_subset():
    dm = FashionMNISTDataModule(source="embedded", max_train_samples=50, max_val_samples=20, max_test_samples=30,
                                num_workers=0)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (50, 20, 30)
    assert dm.dataset_name == "fashion_mnist_subset"
    full = FashionMNISTDataModule(source="embedded", num_workers=0)
    full.setup()
    assert len(full.train_set) + len(full.val_set) == 6000 and len(full.test_set) == 1000
    assert np.bincount(full.test_set.labels).tolist() == [100] * 10
    with pytest.raises(ValueError, match="val_fraction"):
        FashionMNISTDataModule(source="embedded", val_fraction=1.5)
    with pytest.raises(ValueError, match="in_chans"):
        FashionMNISTDataModule(source="embedded", in_chans=2)


def test_image_folder_datamodule(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    (root / "val" / "cat" / "notes.txt").write_text("ignored")
    dm = ImageFolderDataModule(str(root), image_size=16, batch_size=4, num_workers=0)
    assert dm.class_names == ("cat", "dog", "fox") and dm.num_classes == 3 and dm.dataset_name == "imgs"
    dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.val_set) == 6
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.int64
    dm.setup("test")  # no test/: val is the test set
    assert len(dm.test_set) == 6
    xv, _ = next(iter(dm.val_dataloader()))
    assert xv.shape == (4, 3, 16, 16)
    assert dm.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))  # ImageNet defaults
    grey = ImageFolderDataModule(str(root), image_size=16, in_chans=1, num_workers=0, batch_size=2)
    grey.setup("fit")
    assert next(iter(grey.val_dataloader()))[0].shape == (2, 1, 16, 16)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train/<class>"):
        ImageFolderDataModule(str(tmp_path / "missing"))
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolderDataModule(str(tmp_path / "empty"))
    root = make_image_folder(tmp_path / "imgs")
    (root / "val" / "wolf").mkdir()
    with pytest.raises(ValueError, match="wolf"):
        ImageFolderDataModule(str(root))


def test_data_config_from_model_pretrained_cfg(tmp_path):
    """With data_config_from='model', mean/std/size come from the attached model's pretrained config."""
    root = make_image_folder(tmp_path / "imgs")

    class _Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pretrained_cfg = {"input_size": (3, 24, 24), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
                                   "interpolation": "bilinear", "crop_pct": 1.0}

    class _Task:
        model = _Model()

    class _Trainer:
        lightning_module = _Task()

    dm = ImageFolderDataModule(str(root), num_workers=0, data_config_from="model")
    dm.trainer = _Trainer()  # type: ignore[assignment]
    assert dm.data_config["input_size"] == (3, 24, 24) and dm.data_config["mean"] == (0.5, 0.5, 0.5)
    dm2 = ImageFolderDataModule(str(root), num_workers=0, data_config_from="model", image_size=12, in_chans=1)
    dm2.trainer = _Trainer()  # type: ignore[assignment]
    assert dm2.data_config["input_size"] == (1, 12, 12) and dm2.data_config["mean"] == (0.5,)
