"""Pretrained loading without network: fail fast (one connection attempt, no retry storm), fall back to the
published folder that ships in the source tree with a one-line notice, and otherwise an error that names the tag,
the repo id and both fixes."""
from __future__ import annotations

import logging

import pytest
import torch

import zoo
from zoo import hub

TAG = "repnext_m0.fmnist"


def _published_weights_present():
    if not (hub.SOURCE_HUB_DIR / "zoo-models" / TAG / "model.safetensors").is_file():
        pytest.skip(f"hub/zoo-models/{TAG} is not in this checkout")


def test_unreachable_hub_loads_the_source_tree_copy_after_one_attempt(no_network, caplog):
    _published_weights_present()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        model = zoo.create_model(TAG, pretrained=True)
    assert len(no_network) == 1, f"expected one connection attempt, got {no_network}"
    notices = [r.getMessage() for r in caplog.records if r.name == "zoo"]
    assert len(notices) == 1 and "cannot be reached" in notices[0] and TAG in notices[0] and "\n" not in notices[0]
    reference = hub.load_pretrained("repnext_m0", hub.SOURCE_HUB_DIR / "zoo-models" / TAG)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_offline_flag_never_touches_the_network(no_network, monkeypatch, caplog):
    _published_weights_present()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="zoo"):
        zoo.create_model(TAG, pretrained=True)
    assert no_network == []
    assert any("HF_HUB_OFFLINE is set" in r.getMessage() for r in caplog.records)


def test_without_a_source_tree_copy_the_error_names_tag_repo_and_fixes(no_network, tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "SOURCE_HUB_DIR", tmp_path / "no_hub_folders")
    with pytest.raises(hub.HubUnavailableError) as info:
        zoo.create_model(TAG, pretrained=True)
    msg = str(info.value)
    for part in (TAG, "zoo-models/repnext_m0.fmnist", "python -m zoo cache", "pretrained='<folder>'", "cannot be reached"):
        assert part in msg, (part, msg)
    assert len(no_network) == 1


def test_cached_weights_win_over_the_source_tree(no_network, tmp_path, monkeypatch, caplog):
    _published_weights_present()
    hub.cache_folder(hub.SOURCE_HUB_DIR / "zoo-models" / TAG, f"zoo-models/{TAG}", cache_dir=tmp_path / "hf" / "hub")
    monkeypatch.setattr(hub, "SOURCE_HUB_DIR", tmp_path / "no_hub_folders")
    with caplog.at_level(logging.WARNING, logger="zoo"):
        zoo.create_model(TAG, pretrained=True)
    assert not [r for r in caplog.records if r.name == "zoo"]
