"""ZooTask plumbing: optimizer/scheduler construction from recipe dicts, hparams, logging, checkpoint rebuild info,
and the image-classification task's loss/metrics."""
from __future__ import annotations

import itertools
import math

import lightning as L
import pytest
import torch
from torch import nn

import zoo
from zoo.registry import _REGISTRY, register_model
from zoo.tasks import ImageClassificationTask, ZooTask, build_lr_lambda, build_optimizer


class _TinyNet(nn.Module):
    """(B, C, H, W) -> (B, K); with ``distillation`` train-mode forward returns two heads (like RepNeXt)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, width: int = 8, distillation: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)
        self.head_dist = nn.Linear(width, num_classes) if distillation else None

    def forward(self, x):
        f = self.bn(self.conv(x)).relu().mean((2, 3))
        if self.head_dist is None:
            return self.head(f)
        a, b = self.head(f), self.head_dist(f)
        return (a, b) if self.training else (a + b) / 2


if "zoo_test_tinynet" not in _REGISTRY:

    @register_model(paper="none", task="image-classification", license="mit")
    def zoo_test_tinynet(num_classes: int = 10, in_chans: int = 3, width: int = 8, distillation: bool = False):
        """Tiny CNN for task/CLI tests."""
        return _TinyNet(num_classes, in_chans, width, distillation)


# ------------------------------------------------------------------------------------------------ optimizer
def test_build_optimizer_adamw_with_betas_and_no_decay_on_bias_and_norm():
    m = _TinyNet()
    opt = build_optimizer(m, {"name": "adamw", "lr": 2e-3, "weight_decay": 0.1, "betas": [0.8, 0.9]})
    assert isinstance(opt, torch.optim.AdamW)
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 0.1]  # timm puts biases and norm weights in a no-decay group
    assert all(g["lr"] == 2e-3 and g["betas"] == (0.8, 0.9) for g in opt.param_groups)
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == len(list(m.parameters()))


def test_build_optimizer_sgd_and_errors():
    opt = build_optimizer(_TinyNet(), {"opt": "sgd", "lr": 0.1, "momentum": 0.5, "nesterov": True})
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ValueError, match="lr"):
        build_optimizer(_TinyNet(), {"name": "adamw"})
    with pytest.raises(ValueError, match="unknown"):
        build_optimizer(_TinyNet(), {"name": "not_an_optimizer", "lr": 1.0})
    with pytest.raises(TypeError):
        build_optimizer(_TinyNet(), "adamw")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ schedulers
def test_cosine_with_warmup_epochs():
    f = build_lr_lambda({"name": "cosine", "warmup_epochs": 2, "min_lr_ratio": 0.1}, total_steps=100, steps_per_epoch=10)
    assert f(0) == pytest.approx(1 / 20)
    assert f(19) == pytest.approx(1.0)
    assert f(20) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    vals = [f(s) for s in range(20, 101)]
    assert all(a >= b for a, b in itertools.pairwise(vals))


def test_constant_noam_none():
    c = build_lr_lambda({"name": "constant", "warmup_steps": 4}, 100)
    assert [c(s) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    n = build_lr_lambda({"name": "noam", "warmup_steps": 10, "hold_steps": 10}, 1000)
    assert n(9) == pytest.approx(1.0) and n(15) == 1.0 and n(19) == 1.0
    assert n(80) == pytest.approx(math.sqrt(20 / 80))
    e = build_lr_lambda({"name": "noam", "warmup_steps": 0, "hold_steps": 10, "decay": "exponential",
                         "decay_rate": 0.5, "decay_steps": 10, "min_lr_ratio": 0.1}, 1000)
    assert e(20) == pytest.approx(0.5) and e(30) == pytest.approx(0.25) and e(900) == pytest.approx(0.1)
    assert build_lr_lambda({"name": "none"}, 100) is None


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"name": "linear"}, "one of"),
        ({"name": "cosine", "warmup_steps": 1, "warmup_epochs": 1}, "either"),
        ({"name": "cosine", "hold_steps": 3}, "unknown option"),
        ({"name": "noam", "decay": "step"}, "decay"),
        ({"name": "cosine", "min_lr_ratio": 2}, "min_lr_ratio"),
    ],
)
def test_scheduler_errors(cfg, match):
    with pytest.raises(ValueError, match=match):
        build_lr_lambda(cfg, 100, 10)


def test_warmup_epochs_need_epoch_length():
    with pytest.raises(ValueError, match="warmup_steps"):
        build_lr_lambda({"name": "cosine", "warmup_epochs": 1}, 100, None)


def test_task_rejects_bad_recipe_at_construction():
    with pytest.raises(ValueError):
        ImageClassificationTask("zoo_test_tinynet", {"num_classes": 3}, scheduler={"name": "linear"})
    with pytest.raises(ValueError, match="num_classes"):
        ImageClassificationTask("zoo_test_tinynet")
    with pytest.raises(ValueError, match="disagrees"):
        ImageClassificationTask("zoo_test_tinynet", {"num_classes": 3}, num_classes=4)
    with pytest.raises(TypeError):
        ZooTask(123)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ task in a trainer
def _loader(n=32, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.arange(n) % k
    x[:, 0] += y[:, None, None].float() * 2  # learnable signal
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def _trainer(tmp_path, **kw):
    return L.Trainer(default_root_dir=tmp_path, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, enable_checkpointing=False, **kw)


def test_scheduler_steps_per_optimizer_step_and_hparams(tmp_path):
    task = ImageClassificationTask(
        "zoo_test_tinynet", {"num_classes": 3}, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9},
        scheduler={"name": "cosine", "warmup_epochs": 1, "min_lr_ratio": 0.0}, label_smoothing=0.1,
    )
    # save_hyperparameters() in the base records the subclass's own args too
    assert task.hparams.label_smoothing == 0.1 and task.hparams.model == "zoo_test_tinynet"
    assert task.model.zoo_config == {"architecture": "zoo_test_tinynet", "args": {"num_classes": 3}}
    trainer = _trainer(tmp_path, max_epochs=2, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=_loader())
    sched = trainer.lr_scheduler_configs[0]
    assert sched.interval == "step" and trainer.global_step == 8
    assert sched.scheduler.last_epoch == 8  # stepped once per optimizer step
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine end


def test_metrics_logged_with_stage_prefix_and_match_manual(tmp_path):
    torch.manual_seed(0)
    task = ImageClassificationTask("zoo_test_tinynet", {"num_classes": 3}, optimizer={"name": "adamw", "lr": 1e-2})
    trainer = _trainer(tmp_path, max_epochs=2)
    trainer.fit(task, train_dataloaders=_loader(), val_dataloaders=_loader(seed=1))
    logged = trainer.callback_metrics
    for key in ("train/loss", "train/acc1", "val/loss", "val/acc1", "val/acc5"):
        assert key in logged, sorted(logged)
    out = trainer.test(task, dataloaders=_loader(seed=2), verbose=False)[0]
    assert set(out) == {"test/loss", "test/acc1", "test/acc5"}
    # recompute acc1 by hand
    task.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in _loader(seed=2):
            correct += (task(x).argmax(-1) == y).sum().item()
            total += len(y)
    assert out["test/acc1"] == pytest.approx(correct / total)
    assert out["test/acc5"] == pytest.approx(1.0)  # top-5 of 3 classes


def test_distillation_tuple_outputs_and_mixup(tmp_path):
    for mode in ("mean", "both"):
        task = ImageClassificationTask(
            "zoo_test_tinynet", {"num_classes": 4, "distillation": True}, distillation_loss=mode,
            mixup_alpha=0.2, cutmix_alpha=1.0, label_smoothing=0.1,
        )
        assert task.mixup is not None
        out = task.model.train()(torch.randn(6, 3, 8, 8))
        assert isinstance(out, tuple)
        loss, logits = task._loss(out, torch.tensor([0, 1, 2, 3, 0, 1]))
        assert loss.ndim == 0 and logits.shape == (6, 4)
        trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0)
        trainer.fit(task, train_dataloaders=_loader(n=30, k=4))  # odd last batch (6) is fine; mixup needs even
        assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_zoo_config_in_checkpoint_and_card_info(tmp_path):
    task = ImageClassificationTask("zoo_test_tinynet", {"num_classes": 3, "width": 4}, label_smoothing=0.2)
    trainer = _trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    trainer.fit(task, train_dataloaders=_loader())
    path = tmp_path / "x.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    zc = ckpt["zoo_config"]
    assert zc["task"] == "zoo.tasks.classification.ImageClassificationTask"
    assert zc["model"] == {"architecture": "zoo_test_tinynet", "args": {"num_classes": 3, "width": 4}}
    assert zc["init_args"]["label_smoothing"] == 0.2
    info = task.model_card_info()
    assert info["recipe"]["label_smoothing"] == 0.2 and info["recipe"]["max_epochs"] == 1
    assert info["recipe"]["optimizer"]["name"] == "adamw"

    from zoo.cli import load_task_from_checkpoint

    rebuilt, _ = load_task_from_checkpoint(path)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(rebuilt(x), task.eval()(x))


def test_log_metrics_rejects_unknown_stage():
    task = ImageClassificationTask("zoo_test_tinynet", {"num_classes": 3})
    with pytest.raises(ValueError, match="stage"):
        task.log_metrics("training", {"loss": torch.tensor(1.0)})
    assert zoo.model_entry("zoo_test_tinynet").task == "image-classification"
