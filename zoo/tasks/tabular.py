"""Meta-training task for tabular in-context classifiers (Orion-BiX) on synthetic prior episodes."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from zoo.tasks.base import ZooTask, build_optimizer

__all__ = ["TabularICLTask"]


class TabularICLTask(ZooTask):
    """Cross-entropy on the test rows of prior episodes (stage-1 style meta-training).

    Batches are dicts from :class:`zoo.datasets.tabular_prior.TabularPriorDataModule`: ``X`` (B, T, F) float,
    ``y`` (B, T) int64 labels of every row, ``train_sizes`` (B,) context sizes. The model runs in train mode with
    per-table context sizes (KeyPadding in the ICL attention) and the loss covers rows ``>= train_sizes[b]``.
    Recipe defaults follow the released stage 1: AdamW lr 1e-4, cosine with 2 % warm-up; gradient clipping
    (``gradient_clip_val: 1.0``) is a trainer option in the YAML.

    ``time_budget_s``: for runs bounded by wall time (``trainer.max_time``): :meth:`progress` is the larger of the
    step fraction (``max_steps``) and the elapsed fraction of ``time_budget_s``, and the cosine schedule (after its
    ``warmup_steps``) follows it, so the learning rate anneals by the end of the budget whatever the step rate; the
    prior's curriculum reads the same progress.
    """

    def __init__(self, model: str = "orion_bix_small", model_args: dict | None = None, pretrained: bool | str = False,
                 optimizer: dict | None = None, scheduler: dict | None = None, time_budget_s: float | None = None):
        super().__init__(model, model_args, pretrained,
                         optimizer or {"name": "adamw", "lr": 1e-4, "weight_decay": 0.0},
                         scheduler or {"name": "cosine", "warmup_steps": 0})
        if time_budget_s is not None and not time_budget_s > 0:
            raise ValueError(f"time_budget_s must be None or > 0, got {time_budget_s!r}")
        self.time_budget_s = time_budget_s
        self._t0: float | None = None

    def on_train_start(self) -> None:
        self._t0 = time.monotonic()

    def progress(self) -> float:
        """Fraction of the run done, in [0, 1]: max(steps / max_steps, elapsed / time_budget_s)."""
        trainer = self._trainer
        p = 0.0
        if trainer is not None and (getattr(trainer, "max_steps", -1) or -1) > 0:
            p = trainer.global_step / trainer.max_steps
        if self.time_budget_s and self._t0 is not None:
            p = max(p, (time.monotonic() - self._t0) / self.time_budget_s)
        return min(1.0, p)

    def configure_optimizers(self):
        if self.time_budget_s is None:
            return super().configure_optimizers()
        cfg = dict(self.hparams.get("scheduler") or {})
        if str(cfg.get("name", "cosine")).lower() != "cosine":
            raise ValueError("time_budget_s works with the cosine scheduler only")
        warmup, min_ratio = int(cfg.get("warmup_steps", 0)), float(cfg.get("min_lr_ratio", 0.0))
        opt = build_optimizer(self.optimizer_module(), self.hparams.get("optimizer"))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * self.progress()))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": LambdaLR(opt, factor), "interval": "step",
                                                   "frequency": 1}}

    def step(self, batch, stage: str):
        X, y, ts = batch["X"], batch["y"], batch["train_sizes"]
        if X.dim() != 3 or y.shape != X.shape[:2] or ts.shape != X.shape[:1]:
            raise ValueError(f"batch must hold X (B, T, F), y (B, T), train_sizes (B,); got {X.shape}, {y.shape}, "
                             f"{ts.shape}")
        n_ctx = int(ts.max())
        was_training = self.model.training
        self.model.train()  # the train-mode forward gives max_classes logits for every row
        with torch.set_grad_enabled(stage == "train"):
            logits = self.model(X, y[:, :n_ctx].float(), train_sizes=ts)  # (B, T, C)
        if not was_training:
            self.model.eval()
        rows = torch.arange(X.shape[1], device=X.device)[None, :]
        test = rows >= ts[:, None]
        loss = F.cross_entropy(logits[test].float(), y[test])
        acc = (logits[test].argmax(-1) == y[test]).float().mean()
        # reference: always predicting each table's most frequent train class (what a model ignoring the rows gets)
        n_cls = logits.shape[-1]
        counts = F.one_hot(y.clamp(0, n_cls - 1), n_cls).mul((~test)[..., None]).sum(1)  # (B, C)
        majority = counts.argmax(-1)[:, None].expand_as(y)
        acc_majority = (majority[test] == y[test]).float().mean()
        self.log_metrics(stage, {"loss": loss, "acc": acc, "acc_majority": acc_majority}, batch_size=X.shape[0],
                         prog_bar=("loss", "acc"))
        return loss
