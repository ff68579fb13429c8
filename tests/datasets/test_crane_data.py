"""Crane data: MVTec-AD and VisA readers on small generated copies, synthetic anomalies with masks, the offline
Fashion-MNIST zero-shot sets, the evaluation loop and overlays."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets.crane_data import (
    MVTecAD,
    VisA,
    fashion_anomaly_sets,
    synthetic_anomalies,
    write_tiny_mvtec,
    write_tiny_visa,
)


def test_mvtec_reader(tmp_path):
    root = write_tiny_mvtec(tmp_path / "mvtec", categories=("bottle", "screw"), n=2, size=20)
    test = MVTecAD(root, split="test", image_size=28)
    assert len(test) == 8 and test.categories == ["bottle", "screw"]
    labels = [int(test[i]["label"]) for i in range(len(test))]
    assert sorted(labels) == [0] * 4 + [1] * 4
    item = next(test[i] for i in range(len(test)) if test[i]["label"] == 1)
    assert item["image"].shape == (3, 28, 28) and item["mask"].shape == (28, 28)
    assert 0 < item["mask"].sum() < 28 * 28 and set(item["mask"].unique().tolist()) <= {0.0, 1.0}
    good = next(test[i] for i in range(len(test)) if test[i]["label"] == 0)
    assert good["mask"].sum() == 0
    assert len(MVTecAD(root, categories=["screw"], split="train", image_size=28)) == 2
    with pytest.raises(ValueError):
        MVTecAD(root, split="val")


def test_visa_reader(tmp_path):
    root = write_tiny_visa(tmp_path / "visa", categories=("candle", "pcb1"), n=2, size=20)
    test = VisA(root, split="test", image_size=24)
    assert len(test) == 8 and test.categories == ["candle", "pcb1"]
    anom = [test[i] for i in range(len(test)) if test[i]["label"] == 1]
    assert len(anom) == 4 and all(a["mask"].sum() > 0 for a in anom)
    assert len(VisA(root, categories=["pcb1"], split="train", image_size=24)) == 2


def test_synthetic_anomalies_have_masks():
    pytest.importorskip("skimage")  # extra `crane`
    rng = np.random.default_rng(0)
    imgs = rng.uniform(0.2, 0.8, (12, 28, 28)).astype(np.float32)
    out, masks, kinds = synthetic_anomalies(imgs, seed=1)
    assert out.shape == imgs.shape and masks.dtype == bool
    assert set(kinds) <= {"paste", "scratch", "texture"} and len(set(kinds)) >= 2
    for o, i, m in zip(out, imgs, masks):
        assert m.sum() >= 3
        assert np.abs(o - i)[~m].max() < 0.35  # changes stay near the mask (anti-aliased scratch edges)


def test_fashion_sets_split_classes():
    pytest.importorskip("skimage")  # extra `crane`
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (200, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 20)
    names = [f"c{i}" for i in range(10)]
    train, test = fashion_anomaly_sets(images, labels, names, image_size=40, per_class=6)
    assert set(train.cats) == {f"c{i}" for i in range(5)} and set(test.cats) == {f"c{i}" for i in range(5, 10)}
    assert len(train) == 30 and train.images.shape == (30, 3, 40, 40) and train.masks.shape == (30, 40, 40)
    assert int(train.labels.sum()) == 15
    assert bool(((train.masks.flatten(1).sum(1) > 0) == train.labels.bool()).all())


def test_evaluate_and_overlays(tmp_path):
    pytest.importorskip("skimage")  # extra `crane`
    import zoo
    from zoo.tasks.anomaly import evaluate

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    _, test = fashion_anomaly_sets(images, np.repeat(np.arange(10), 4), [f"c{i}" for i in range(10)],
                                   image_size=40, per_class=4)
    torch.manual_seed(0)
    model = zoo.create_model("crane_tiny").eval()
    res = evaluate(lambda x, c: model(x), test, batch_size=8, overlay_dir=tmp_path / "ov")
    assert set(res["per_category"]) == {f"c{i}" for i in range(5, 10)}
    assert {"image_auroc", "pixel_auroc", "pixel_aupro"} <= set(res["mean"])
    assert len(list((tmp_path / "ov").glob("*.png"))) >= 5


def test_lightning_task_trains_prompts_and_tests(tmp_path):
    pytest.importorskip("skimage")  # extra `crane`
    import lightning as L
    from torch.utils.data import DataLoader

    from zoo.tasks.anomaly import AnomalyDetectionTask

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    train, test = fashion_anomaly_sets(images, np.repeat(np.arange(10), 4), [f"c{i}" for i in range(10)],
                                       image_size=40, per_class=4)
    torch.manual_seed(0)
    task = AnomalyDetectionTask("crane_tiny", output_dir=str(tmp_path), overlays=1)
    before = task.model.prompt_learner.ctx_pos.detach().clone()
    clip_before = task.model.clip.visual.proj.detach().clone()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.fit(task, DataLoader(train, batch_size=4, shuffle=True))
    assert not torch.equal(before, task.model.prompt_learner.ctx_pos)  # prompts trained
    assert torch.equal(clip_before, task.model.clip.visual.proj)  # backbone frozen
    trainer.test(task, DataLoader(test, batch_size=8))
    assert (tmp_path / "metrics_test.md").is_file() and "mean" in (tmp_path / "metrics_test.md").read_text()
    assert list((tmp_path / "overlays").glob("*.png"))
