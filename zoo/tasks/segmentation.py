"""Semantic segmentation task: per-pixel cross-entropy (+ the model's own auxiliary losses), mIoU and pixel accuracy.

Works with any model mapping images (B, C, H, W) to logits (B, num_classes, h, w) (upsampled bilinearly to the
label size when h, w differ). Models with auxiliary losses (ClustViT's cluster loss) expose
``forward_train(x) -> {"seg_logits": ..., ...}`` and ``auxiliary_losses(out, target) -> {name: weighted loss}``;
the task adds them to the loss and logs each one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from zoo.tasks.base import ZooTask

__all__ = ["SemanticSegmentationTask", "overlay"]


def overlay(image: torch.Tensor, labels: torch.Tensor, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a class map over an image. image (3, H, W) float in [-1, 1] (or uint8), labels (H, W) int ->
    (H, W, 3) uint8; label 255 (ignore) is left uncoloured."""
    img = image.detach().float().cpu()
    if img.min() < 0 or img.max() <= 1.0:
        img = (img * 127.5 + 127.5) if img.min() < 0 else img * 255
    img = img.clamp(0, 255).permute(1, 2, 0).numpy()
    lab = labels.detach().cpu().numpy().astype(np.int64)
    col = colours[np.clip(lab, 0, len(colours) - 1)].astype(np.float32)
    mix = np.where((lab == 255)[..., None], img, (1 - alpha) * img + alpha * col)
    return np.clip(np.rint(mix), 0, 255).astype(np.uint8)


class SemanticSegmentationTask(ZooTask):
    """Segment images ``(B, 3, H, W) float32`` into ``num_classes`` per-pixel labels ``(B, H, W) int64``.

    Args (beyond :class:`ZooTask`'s):
        num_classes: label count; defaults to ``model_args["num_classes"]`` (the two must agree).
        ignore_index: label excluded from loss and metrics (default 255).
        avg_non_ignore: average the CE over non-ignored pixels; False (mmseg's default, the authors' setting)
            divides by all pixels.
        aux_weight: multiplies the model's ``auxiliary_losses`` (their own weights, e.g. ClustViT's 0.1, apply
            first); 0 turns them off.
        prediction_dir: when set (or ``$ZOO_PREDICTIONS_DIR``), ``test`` writes coloured PNG overlays
            ``<index>.png`` (image | prediction | ground truth) of the first ``max_predictions`` test images.

    Logs ``train/loss``, ``train/ce``, ``train/<aux>``; ``val|test/loss``, ``val|test/miou`` (torchmetrics
    ``MulticlassJaccardIndex``, macro over classes), ``val|test/pixel_acc`` (micro accuracy), ignoring
    ``ignore_index``.
    """

    def __init__(
        self,
        model: str,
        model_args: dict | None = None,
        pretrained: bool | str = False,
        optimizer: dict | None = None,
        scheduler: dict | None = None,
        num_classes: int | None = None,
        ignore_index: int = 255,
        avg_non_ignore: bool = False,
        aux_weight: float = 1.0,
        prediction_dir: str | None = None,
        max_predictions: int = 16,
    ):
        args = dict(model_args or {})
        if num_classes is None:
            num_classes = args.get("num_classes")
        if num_classes is None:
            raise ValueError("num_classes is required: pass num_classes or model_args.num_classes")
        if "num_classes" in args and int(args["num_classes"]) != int(num_classes):
            raise ValueError(f"num_classes={num_classes} disagrees with model_args.num_classes={args['num_classes']}")
        if aux_weight < 0:
            raise ValueError(f"aux_weight must be >= 0, got {aux_weight}")
        if "num_classes" not in args:
            model_args = {**args, "num_classes": int(num_classes)}
        super().__init__(model, model_args, pretrained, optimizer, scheduler)
        self.num_classes = int(num_classes)
        self.prediction_dir = prediction_dir
        kw = dict(num_classes=self.num_classes, ignore_index=ignore_index)
        self.val_miou = MulticlassJaccardIndex(average="macro", **kw)
        self.test_miou = MulticlassJaccardIndex(average="macro", **kw)
        self.val_acc = MulticlassAccuracy(average="micro", **kw)
        self.test_acc = MulticlassAccuracy(average="micro", **kw)
        self._saved = 0

    def on_fit_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        n = getattr(dm, "num_classes", None)
        if n is not None and int(n) != self.num_classes:
            raise ValueError(f"the datamodule has {n} classes but the task/model was built for {self.num_classes}")

    # ------------------------------------------------------------------ helpers
    def _upsample(self, logits: torch.Tensor, size) -> torch.Tensor:
        if logits.shape[-2:] != tuple(size):
            logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        return logits.float()

    def _ce(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y, ignore_index=self.hparams.ignore_index, reduction="none")
        if self.hparams.avg_non_ignore:
            return loss.sum() / (y != self.hparams.ignore_index).sum().clamp(min=1)
        return loss.mean()

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        fwd = getattr(self.model, "forward_train", None)
        out = fwd(x) if callable(fwd) else {"seg_logits": self.model(x)}
        logits = self._upsample(out["seg_logits"], y.shape[-2:])
        ce = self._ce(logits, y)
        metrics: dict[str, Any] = {"ce": ce}
        loss = ce
        aux_fn = getattr(self.model, "auxiliary_losses", None)
        if callable(aux_fn) and self.hparams.aux_weight > 0:
            for name, value in aux_fn(out, y).items():
                loss = loss + self.hparams.aux_weight * value
                metrics[name] = value
        metrics["loss"] = loss
        self.log_metrics("train", metrics, batch_size=x.shape[0], prog_bar=("loss",))
        return loss

    def step(self, batch: Any, stage: str) -> torch.Tensor:
        """Validation / test step: CE loss, mIoU, pixel accuracy (and overlays on test when asked)."""
        x, y = batch
        logits = self._upsample(self.model(x), y.shape[-2:])
        loss = self._ce(logits, y)
        pred = logits.argmax(1)
        miou, acc = (self.val_miou, self.val_acc) if stage == "val" else (self.test_miou, self.test_acc)
        miou(pred, y)
        acc(pred, y)
        self.log_metrics(stage, {"loss": loss, "miou": miou, "pixel_acc": acc}, batch_size=x.shape[0],
                         prog_bar=("miou",))
        if stage == "test":
            self._save_overlays(x, pred, y)
        return loss

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Predicted class maps ``(B, H, W) int64``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model(x).argmax(1)

    def _save_overlays(self, x: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> None:
        folder = self.prediction_dir or os.environ.get("ZOO_PREDICTIONS_DIR")
        if not folder or self._saved >= self.hparams.max_predictions or self.global_rank != 0:
            return
        from PIL import Image

        from zoo.datasets.clustvit_segmentation import palette

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        cols = palette(self.num_classes)
        for i in range(x.shape[0]):
            if self._saved >= self.hparams.max_predictions:
                break
            img = overlay(x[i], x.new_full(y[i].shape, 255, dtype=torch.long), cols, alpha=0.0)
            row = np.concatenate([img, overlay(x[i], pred[i], cols), overlay(x[i], y[i], cols)], axis=1)
            Image.fromarray(row).save(out / f"{self._saved:04d}.png")
            self._saved += 1

    def on_test_epoch_start(self) -> None:
        self._saved = 0

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        hp = self.hparams
        info["recipe"].update({"loss": "cross-entropy" + (" + model auxiliary losses" if hp.aux_weight else ""),
                               "ignore_index": hp.ignore_index, "avg_non_ignore": hp.avg_non_ignore,
                               "aux_weight": hp.aux_weight})
        info["task"] = "semantic-segmentation"
        return info
