"""Synthetic tabular prior (zoo.datasets.tabular_prior) and the meta-training task."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets.tabular_prior import PriorConfig, TabularPriorDataModule, TabularPriorDataset, sample_batch

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one intra-op thread is faster (far faster on a busy machine)
    yield
    torch.set_num_threads(n)


CFG = PriorConfig(batch_size=3, min_features=2, max_features=6, min_rows=24, max_rows=40, max_classes=10)


def test_batch_shapes_labels_and_fractions():
    rng = np.random.default_rng(0)
    for _ in range(4):
        b = sample_batch(rng, CFG)
        X, y, ts = b["X"], b["y"], b["train_sizes"]
        B, T, F = X.shape
        assert B == 3 and 24 <= T <= 40 and 2 <= F <= 6
        assert X.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (B, T)
        assert torch.isfinite(X).all() and X.abs().max() <= CFG.clip
        assert ((ts >= 2) & (ts <= T - 1)).all()
        assert (ts >= int(0.1 * T) - 1).all() and (ts <= round(0.9 * T) + 1).all()
        assert (y >= 0).all() and (y < CFG.max_classes).all()
        for i in range(B):
            tr = y[i, : ts[i]]
            assert len(tr.unique()) >= 2
            # labels are contiguous over the train rows: 0..C_train-1
            assert set(tr.tolist()) == set(range(len(tr.unique())))


def test_mixture_covers_trees_categoricals_and_many_classes():
    cfg = PriorConfig(batch_size=16, min_features=4, max_features=4, min_rows=64, max_rows=64, p_categorical=0.5)
    b = sample_batch(np.random.default_rng(1), cfg)
    n_cls = [len(b["y"][i].unique()) for i in range(16)]
    assert max(n_cls) > 3
    # categorical features hold few distinct integer codes
    few = [len(b["X"][i, :, j].unique()) <= 10 for i in range(16) for j in range(4)]
    assert any(few) and not all(few)


def test_determinism_and_worker_seeding():
    ds = TabularPriorDataset(CFG, seed=5, num_batches=2)
    a, b = list(ds), list(TabularPriorDataset(CFG, seed=5, num_batches=2))
    assert all(torch.equal(x["X"], y["X"]) for x, y in zip(a, b))  # same seed: same stream
    again = list(ds)[0]["X"]  # a second pass (next epoch, persistent workers) draws fresh tables
    assert again.shape != a[0]["X"].shape or not torch.equal(again, a[0]["X"])
    other = list(TabularPriorDataset(CFG, seed=5, num_batches=2, rank=1))
    x0, x1 = a[0]["X"], other[0]["X"]
    assert x0.shape != x1.shape or not torch.equal(x0, x1)  # ranks draw different streams
    loader = torch.utils.data.DataLoader(TabularPriorDataset(CFG, seed=5, num_batches=4), batch_size=None,
                                         num_workers=2)
    got = list(loader)
    assert len(got) == 4
    shapes = [tuple(g["X"].shape) for g in got]
    # the two workers draw different streams (their first batches differ)
    assert shapes[0] != shapes[1] or not torch.equal(got[0]["X"], got[1]["X"])


def test_datamodule_and_task_step():
    pytest.importorskip("lightning")
    from zoo.tasks.tabular import TabularICLTask

    torch.manual_seed(0)
    dm = TabularPriorDataModule(batch_size=2, steps_per_epoch=2, val_batches=1, min_rows=24, max_rows=32,
                                max_features=4)
    batch = next(iter(dm.train_dataloader()))
    assert len(list(dm.val_dataloader())) == 1
    task = TabularICLTask(model="orion_bix_small", model_args={"icl_num_blocks": 1})
    task.log_metrics = lambda *a, **k: None  # no trainer attached
    loss = task.step(batch, "train")
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in task.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="batch must hold"):
        task.step({"X": batch["X"], "y": batch["y"][:, :3], "train_sizes": batch["train_sizes"]}, "train")
    with pytest.raises(ValueError):
        PriorConfig(min_rows=2).validate()
