"""Batched torch prior (zoo.datasets.tabular_prior.sample_batch_torch): shapes, labels, curriculum, determinism,
learnable tables, the data module's on-device draw and the task's time-budget schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.datasets.tabular_prior import TabularPriorDataModule, TorchPriorConfig, sample_batch_torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CFG = TorchPriorConfig(batch_size=8, min_features=2, max_features=12, min_rows=24, max_rows=96, start_rows=32,
                       start_features=4, max_cells=1 << 20)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_batch_shapes_labels_and_train_classes():
    g = _gen(0)
    for progress in (0.0, 0.3, 1.0):
        for _ in range(3):
            b = sample_batch_torch(g, CFG, progress)
            X, y, ts = b["X"], b["y"], b["train_sizes"]
            B, T, F = X.shape
            assert 1 <= B <= 8 and 24 <= T <= 96 and 2 <= F <= 12
            assert X.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (B, T)
            assert torch.isfinite(X).all() and X.abs().max() <= CFG.clip
            assert ((ts >= 2) & (ts <= T - 1)).all()
            assert (y >= 0).all() and (y < CFG.max_classes).all()
            for i in range(B):
                tr = y[i, : ts[i]].unique()
                assert len(tr) >= 2 and tr.tolist() == list(range(len(tr)))  # train labels are 0..C_train-1
                mu = X[i, : ts[i]].mean(0)
                assert mu.abs().max() < 1e-3 or X[i].abs().max() >= CFG.clip - 1e-3  # z-scored on the train rows


def test_curriculum_and_cell_budget():
    g = _gen(1)
    early = [CFG.shape_at(0.0, g) for _ in range(200)]
    late = [CFG.shape_at(1.0, g) for _ in range(200)]
    assert max(t for _, t, _ in early) <= 32 and max(f for _, _, f in early) <= 4
    assert max(t for _, t, _ in late) > 64 and max(f for _, _, f in late) > 8
    small = TorchPriorConfig(batch_size=64, max_rows=512, max_cells=4096, curriculum=0.0)
    for _ in range(50):
        B, T, F = small.shape_at(1.0, g)
        assert B == max(1, min(64, 4096 // (T * (F + 4))))
    with pytest.raises(ValueError):
        TorchPriorConfig(min_rows=2).validate()


def test_deterministic_per_seed():
    a, b = sample_batch_torch(_gen(5), CFG, 1.0), sample_batch_torch(_gen(5), CFG, 1.0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = sample_batch_torch(_gen(6), CFG, 1.0)
    assert a["X"].shape != c["X"].shape or not torch.equal(a["X"], c["X"])


def test_tables_are_learnable_and_varied():
    """Logistic regression beats the majority class on average (the prior carries signal), classes 2..10 occur,
    and some features are categorical (few integer codes before z-scoring)."""
    from sklearn.linear_model import LogisticRegression

    b = sample_batch_torch(_gen(2), TorchPriorConfig(p_categorical=0.5), shape=(24, 200, 6))
    gains, n_cls, few = [], [], []
    for i in range(24):
        X, y, n = b["X"][i].numpy(), b["y"][i].numpy(), int(b["train_sizes"][i])
        maj = (y[n:] == np.bincount(y[:n]).argmax()).mean()
        lr = LogisticRegression(max_iter=300).fit(X[:n], y[:n]).score(X[n:], y[n:])
        gains.append(lr - maj)
        n_cls.append(len(np.unique(y)))
        few += [len(np.unique(X[:, j])) <= 10 for j in range(6)]
    assert np.mean(gains) > 0.1, gains
    assert min(n_cls) == 2 and max(n_cls) >= 6
    assert any(few) and not all(few)


def test_datamodule_draws_on_transfer_and_task_step():
    pytest.importorskip("lightning")
    from zoo.tasks.tabular import TabularICLTask

    dm = TabularPriorDataModule(backend="torch", batch_size=2, steps_per_epoch=2, val_batches=1, min_rows=24,
                                max_rows=32, max_features=4, start_rows=24, start_features=4)
    items = list(dm.train_dataloader())
    assert len(items) == 2 and set(items[0]) == {"prior_seed"}
    batch = dm.on_after_batch_transfer(items[0])
    again = dm.on_after_batch_transfer(items[0])
    assert torch.equal(batch["X"], again["X"])
    val = list(dm.val_dataloader())
    assert len(val) == 1 and val[0]["X"].dim() == 3
    task = TabularICLTask(model="orion_bix_small", model_args={"icl_num_blocks": 1}, time_budget_s=10.0)
    task.log_metrics = lambda *a, **k: None  # no trainer attached
    loss = task.step(batch, "train")
    assert torch.isfinite(loss)
    loss.backward()
    # time-budget cosine: progress follows the wall clock
    opt_cfg = task.configure_optimizers()
    sched = opt_cfg["lr_scheduler"]["scheduler"]
    assert task.progress() == 0.0
    task._t0 = __import__("time").monotonic() - 10.0
    assert task.progress() == 1.0
    opt_cfg["optimizer"].step()
    sched.step()
    assert sched.get_last_lr()[0] < 1e-6
    with pytest.raises(ValueError, match="backend"):
        TabularPriorDataModule(backend="jax")
