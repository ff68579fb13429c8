"""Meta-training task for tabular in-context classifiers (Orion-BiX) on synthetic prior episodes."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.tasks.base import ZooTask

__all__ = ["TabularICLTask"]


class TabularICLTask(ZooTask):
    """Cross-entropy on the test rows of prior episodes (stage-1 style meta-training).

    Batches are dicts from :class:`zoo.datasets.tabular_prior.TabularPriorDataModule`: ``X`` (B, T, F) float,
    ``y`` (B, T) int64 labels of every row, ``train_sizes`` (B,) context sizes. The model runs in train mode with
    per-table context sizes (KeyPadding in the ICL attention) and the loss covers rows ``>= train_sizes[b]``.
    Recipe defaults follow the released stage 1: AdamW lr 1e-4, cosine with 2 % warm-up; gradient clipping
    (``gradient_clip_val: 1.0``) is a trainer option in the YAML.
    """

    def __init__(self, model: str = "orion_bix_small", model_args: dict | None = None, pretrained: bool | str = False,
                 optimizer: dict | None = None, scheduler: dict | None = None):
        super().__init__(model, model_args, pretrained,
                         optimizer or {"name": "adamw", "lr": 1e-4, "weight_decay": 0.0},
                         scheduler or {"name": "cosine", "warmup_steps": 0})

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
