"""The synthetic multi-shot video task of MoC (zoo.datasets.moc_video)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets.moc_video import CLASSES, MOTIONS, MultiShotVideoDataset, SceneConfig, item_box, vocab


@pytest.fixture(scope="module")
def ds():
    g = np.random.default_rng(0)
    images = np.zeros((20, 28, 28), np.uint8)
    images[:, 6:22, 8:20] = 255  # bright block items on black, like Fashion-MNIST
    labels = g.integers(0, 10, 20)
    tex = [np.full((64, 64, 3), 0.5, np.float32), np.zeros((64, 64, 3), np.float32)]
    return MultiShotVideoDataset(images, labels, num_scenes=6, seed=3, textures=tex)


def test_item_shapes_and_determinism(ds):
    a, b = ds[2], ds[2]
    c = ds.cfg
    assert a["video"].shape == (3, c.frames, c.size, c.size) and a["video"].abs().max() <= 1
    assert a["context"].shape == (c.text_len, c.text_dim) and a["text_shot"].shape == (c.text_len,)
    assert a["shots"].tolist() == [s for s in range(c.shots) for _ in range(c.frames_per_shot)]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(ds[1]["video"], a["video"])
    with pytest.raises(IndexError):
        ds[6]


def test_captions_match_the_video(ds):
    c = ds.cfg
    words = vocab(c)
    x = ds[0]
    ctx, ts = x["context"], x["text_shot"]
    for s in range(c.shots):
        toks = ctx[ts == s]
        assert toks.shape[0] == 6
        for slot in range(2):
            w = [words[int(t[: len(words)].argmax())] for t in toks[3 * slot: 3 * slot + 3]]
            assert w[0] == f"item-{chr(65 + int(x['entity'][s, slot]))}"
            assert w[1] == CLASSES[int(x["classes"][s, slot])]
            assert w[2] == MOTIONS[int(x["motion"][s, slot])]
            assert (toks[3 * slot: 3 * slot + 3, len(words) + 1 + slot] == 1).all()  # role = slot
            # the item is where the caption says: its crop is brighter than the background around
            for t in range(c.frames_per_shot):
                y, xx = item_box(c, slot, int(x["motion"][s, slot]), t)
                frame = (x["video"][:, s * c.frames_per_shot + t] + 1) / 2
                crop = frame[:, y:y + c.item, xx:xx + c.item]
                assert crop.mean() > frame.mean()
    # entities recur across shots (8 appearances of a cast of 3)
    assert len(set(x["entity"].flatten().tolist())) <= c.cast


def test_item_box_inside_frame():
    c = SceneConfig()
    for slot in range(2):
        for m in range(3):
            for t in range(c.frames_per_shot):
                y, x = item_box(c, slot, m, t)
                assert 0 <= y and y + c.item <= c.size and 0 <= x and x + c.item <= c.size
    y0, _ = item_box(c, 0, 0, 0)
    y1, _ = item_box(c, 0, 0, c.frames_per_shot - 1)
    assert y1 < y0  # "up" moves up


def test_bad_inputs():
    with pytest.raises(ValueError, match="images"):
        MultiShotVideoDataset(np.zeros((3, 27, 28), np.uint8), np.zeros(3), 2, textures=[np.zeros((64, 64, 3))])
