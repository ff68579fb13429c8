"""Image classification task: cross-entropy (label smoothing, mixup/cutmix) + top-1/top-5 accuracy."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from zoo.tasks.base import ZooTask

__all__ = ["ImageClassificationTask"]


class ImageClassificationTask(ZooTask):
    """Classify images ``(B, C, H, W) float32`` into ``num_classes`` labels ``(B,) int64``.

    Args (beyond :class:`ZooTask`'s):
        num_classes: label count; defaults to ``model_args["num_classes"]`` (required one way or the other, and the
            two must agree).
        label_smoothing: cross-entropy smoothing (also used by mixup's soft targets).
        mixup_alpha, cutmix_alpha, mixup_prob, mixup_switch_prob: ``timm.data.Mixup`` settings; off when both alphas
            are 0.
        distillation_loss: for models whose train-mode forward returns a tuple ``(head, head_dist)`` (RepNeXt with
            ``distillation=True``): ``"mean"`` averages the logits before the loss, ``"both"`` averages the two losses.
            Eval-mode forward must return one tensor (RepNeXt averages the heads itself); a tuple there is averaged.

    Logs ``train/loss``, ``train/acc1`` (without mixup), ``val/loss``, ``val/acc1``, ``val/acc5`` and the same for
    test. Accuracies are torchmetrics ``MulticlassAccuracy(average="micro")``, synced across ranks.
    """

    def __init__(
        self,
        model: str,
        model_args: dict | None = None,
        pretrained: bool | str = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        distillation_loss: str = "mean",
    ):
        args = dict(model_args or {})
        if num_classes is None:
            num_classes = args.get("num_classes")
        if num_classes is None:
            raise ValueError("num_classes is required: pass num_classes or model_args.num_classes")
        if "num_classes" in args and int(args["num_classes"]) != int(num_classes):
            raise ValueError(f"num_classes={num_classes} disagrees with model_args.num_classes={args['num_classes']}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if distillation_loss not in ("mean", "both"):
            raise ValueError(f"distillation_loss must be 'mean' or 'both', got {distillation_loss!r}")
        if "num_classes" not in args:
            model_args = {**args, "num_classes": int(num_classes)}
        super().__init__(model, model_args, pretrained, optimizer, scheduler)
        self.num_classes = int(num_classes)
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                switch_prob=mixup_switch_prob,
                label_smoothing=label_smoothing,
                num_classes=self.num_classes,
            )
        top5 = min(5, self.num_classes)
        self.train_acc1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_acc1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average="micro")
        self.test_acc1 = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average="micro")

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if n is not None and int(n) != self.num_classes:
            raise ValueError(f"the datamodule has {n} classes but the task/model was built for {self.num_classes}")

    def _loss(self, out: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, logits used for metrics). ``target`` is class indices ``(B,)`` or soft targets ``(B, K)``."""
        smoothing = self.hparams.label_smoothing if target.ndim == 1 else 0.0  # mixup targets are already smoothed
        if isinstance(out, (tuple, list)):
            logits = torch.stack([o.float() for o in out]).mean(0)
            if self.hparams.distillation_loss == "both":
                losses = [F.cross_entropy(o.float(), target, label_smoothing=smoothing) for o in out]
                return torch.stack(losses).mean(), logits
            return F.cross_entropy(logits, target, label_smoothing=smoothing), logits
        logits = out.float()
        return F.cross_entropy(logits, target, label_smoothing=smoothing), logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        target = y
        if self.mixup is not None:
            if x.shape[0] % 2:  # timm's Mixup needs an even batch; drop one sample from an odd last batch
                x, y = x[:-1], y[:-1]
            x, target = self.mixup(x, y)
        loss, logits = self._loss(self.model(x), target)
        metrics: dict[str, Any] = {"loss": loss}
        if self.mixup is None:
            self.train_acc1(logits.detach(), y)
            metrics["acc1"] = self.train_acc1
        self.log_metrics("train", metrics, batch_size=x.shape[0], prog_bar=("loss",))
        return loss

    def step(self, batch: Any, stage: str) -> torch.Tensor:
        """Validation / test step (``ZooTask`` routes ``validation_step`` and ``test_step`` here)."""
        x, y = batch
        out = self.model(x)
        loss, logits = self._loss(out, y)
        acc1, acc5 = (self.val_acc1, self.val_acc5) if stage == "val" else (self.test_acc1, self.test_acc5)
        acc1(logits, y)
        acc5(logits, y)
        self.log_metrics(stage, {"loss": loss, "acc1": acc1, "acc5": acc5}, batch_size=x.shape[0], prog_bar=("acc1",))
        return loss

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Class probabilities ``(B, num_classes) float32``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = torch.stack([o.float() for o in out]).mean(0)
        return out.float().softmax(-1)

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        hp = self.hparams
        info["recipe"].update(
            {
                "loss": "cross-entropy",
                "label_smoothing": hp.label_smoothing,
                "mixup_alpha": hp.mixup_alpha,
                "cutmix_alpha": hp.cutmix_alpha,
            }
        )
        info["task"] = "image-classification"
        return info
