"""The RepNeXt-M0 Fashion-MNIST weights the zoo publishes (hub/zoo-models/repnext_m0.fmnist): they load through the
registry tag from an HF cache with HF_HUB_OFFLINE=1 (sha256 checked) and classify the shipped real test images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import zoo
from zoo import hub

FOLDER = Path(__file__).resolve().parents[2] / "hub" / "zoo-models" / "repnext_m0.fmnist"


def test_registry_tag_loads_offline_and_classifies_real_images(offline_hub):
    offline_hub("repnext_m0.fmnist")
    model = zoo.create_model("repnext_m0.fmnist", pretrained=True)
    assert not model.training and model.zoo_config["args"] == {"num_classes": 10, "in_chans": 1}

    from zoo.datasets.images import FashionMNISTDataModule

    cfg = json.loads((FOLDER / "config.json").read_text())["pretrained_cfg"]
    dm = FashionMNISTDataModule(source="embedded", in_chans=1, image_size=cfg["shape"][-1], eval_batch_size=250,
                                num_workers=0)
    dm.setup("test")
    correct = total = 0
    with torch.inference_mode():
        for x, y in dm.test_dataloader():
            correct += (model(x).argmax(-1) == y).sum().item()
            total += len(y)
    # 93.4% on the official 10,000-image test split; the shipped 1,000-image subset is drawn from it.
    assert total == 1000 and correct / total > 0.90


def test_sha256_mismatch_is_refused(offline_hub, monkeypatch):
    offline_hub("repnext_m0.fmnist")
    import dataclasses

    entry = zoo.model_entry("repnext_m0")
    bad = dataclasses.replace(entry.pretrained["fmnist"], sha256="0" * 64)
    with pytest.raises(Exception, match="sha256"):
        hub.load_pretrained("repnext_m0", bad)
