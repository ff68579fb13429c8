"""train.py / eval.py end to end on a generated Fashion-MNIST-format dataset with a tiny registered model:
fit + best/last checkpoints + results.json, resume from last, eval from the checkpoint (metrics.json equal to the
trainer's test metrics), the hub folder written by --card-out and eval.py --pretrained on that folder."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from zoo.datasets import images as I

from zoo.registry import _REGISTRY, register_model

ROOT = Path(__file__).resolve().parents[2]


class _TinyCLINet(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.bn(self.conv(x)).relu().mean((2, 3)))


if "zoo_test_clinet" not in _REGISTRY:

    @register_model(paper="none", task="image-classification", license="mit")
    def zoo_test_clinet(num_classes: int = 10, in_chans: int = 1, width: int = 8):
        """Tiny CNN for CLI tests: (B, in_chans, H, W) -> (B, num_classes)."""
        return _TinyCLINet(num_classes, in_chans, width)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A generated IDX dataset + config, trained for 1 epoch by train.py (in-process)."""
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "fm"
    data.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 80), ("t10k", 30)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        imgs = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        imgs[np.arange(n), labels * 2, :] = 255  # a learnable stripe per class
        I.write_idx(data / f"{prefix}-images-idx3-ubyte.gz", imgs)
        I.write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", labels)
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "default_root_dir": str(tmp / "run"),
                    "log_every_n_steps": 1, "enable_model_summary": False},
        "checkpoint": {"monitor": "val/acc1", "mode": "max"},
        "model": {"class_path": "zoo.tasks.classification.ImageClassificationTask",
                  "init_args": {"model": "zoo_test_clinet", "model_args": {"num_classes": 10, "in_chans": 1},
                                "label_smoothing": 0.1, "optimizer": {"name": "adamw", "lr": 0.01},
                                "scheduler": {"name": "cosine", "warmup_steps": 2}}},
        "data": {"class_path": "zoo.datasets.images.FashionMNISTDataModule",
                 "init_args": {"root": str(data), "val_fraction": 0.25, "in_chans": 1, "batch_size": 16,
                               "num_workers": 0}},
    }
    cfg_path = tmp / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    from zoo.cli import train

    results = train(["--config", str(cfg_path)])
    return tmp, cfg_path, results


def test_train_writes_checkpoints_logs_and_results(run):
    tmp, _, results = run
    rdir = tmp / "run"
    on_disk = json.loads((rdir / "results.json").read_text())
    assert on_disk["best_checkpoint"] == results["best_checkpoint"]
    assert Path(results["best_checkpoint"]).parent == rdir / "checkpoints"
    assert (rdir / "checkpoints" / "last.ckpt").is_file()
    assert results["monitor"] == "val/acc1" and results["epochs_trained"] == 1
    assert set(results["test"]) == {"test/loss", "test/acc1", "test/acc5"}
    assert results["val"]["val/acc1"] == pytest.approx(results["best_score"])
    assert (rdir / "version_0" / "metrics.csv").is_file() and (rdir / "version_0" / "config.yaml").is_file()
    ckpt = torch.load(results["best_checkpoint"], map_location="cpu", weights_only=True)
    zc = ckpt["zoo_config"]
    assert zc["datamodule"]["class_path"] == "zoo.datasets.images.FashionMNISTDataModule"
    assert zc["model"]["architecture"] == "zoo_test_clinet"
    assert zc["card"]["dataset"] == "fashion_mnist_subset" or zc["card"]["dataset"]


def test_eval_from_checkpoint_matches_trainer_test(run, capsys):
    _, _, results = run
    from zoo.cli import evaluate

    metrics = evaluate(["--ckpt", results["best_checkpoint"], "--accelerator", "cpu"])
    out = Path(results["best_checkpoint"]).parent / "metrics.json"
    assert json.loads(out.read_text()) == metrics
    assert metrics.keys() == results["test"].keys()
    for k in metrics:
        assert metrics[k] == pytest.approx(results["test"][k], abs=1e-6)
    assert "test/acc1" in capsys.readouterr().out  # the printed table


def test_resume_from_last(run, monkeypatch):
    tmp, cfg_path, first = run
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", str(cfg_path), "--trainer.max_epochs=2",
                                      "--ckpt_path", "last", "--test_after_fit", "false"])
    runpy.run_path(str(ROOT / "train.py"), run_name="__main__")  # the 3-line wrapper
    res = json.loads((tmp / "run" / "results.json").read_text())
    assert res["epochs_trained"] == 2 and res["global_step"] == 2 * first["global_step"]
    assert (tmp / "run" / "version_1").is_dir()


def test_eval_card_out_and_pretrained_folder(run, tmp_path):
    _, cfg_path, results = run
    hub = pytest.importorskip("zoo.hub")
    if not hasattr(hub, "save_pretrained"):
        pytest.skip("zoo.hub.save_pretrained not available yet")
    from zoo.cli import evaluate

    card = tmp_path / "hub" / "zoo-test" / "tiny.fm"
    m32 = evaluate(["--ckpt", results["best_checkpoint"], "--out", str(tmp_path / "e1"), "--card-out", str(card),
                    "--card-dtype", "float16", "--accelerator", "cpu"])
    assert {p.name for p in card.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    m16 = json.loads((tmp_path / "e1" / "metrics_float16.json").read_text())
    assert "test/acc1" in (card / "README.md").read_text() or "acc1" in (card / "README.md").read_text()
    m_pre = evaluate(["--pretrained", str(card), "--config", str(cfg_path), "--out", str(tmp_path / "e2.json"),
                      "--accelerator", "cpu"])
    assert json.loads((tmp_path / "e2.json").read_text()) == m_pre
    for k in m_pre:  # the published fp16 weights give the metrics the card reports
        assert m_pre[k] == pytest.approx(m16[k], abs=1e-4)
    assert m32["test/acc1"] == pytest.approx(m16["test/acc1"], abs=0.05)


def test_main_dispatch_and_bad_eval_args(tmp_path):
    from zoo import cli

    with pytest.raises(SystemExit):
        cli.main(["eval"])  # neither --ckpt nor --pretrained
    with pytest.raises(FileNotFoundError):
        cli.evaluate(["--ckpt", str(tmp_path / "missing.ckpt")])
    with pytest.raises(ValueError, match="--config"):
        cli.evaluate(["--pretrained", str(tmp_path)])
