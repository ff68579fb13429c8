"""Video question answering with a small video LM (the VideoNSA demo): cross-entropy over the answer vocabulary,
accuracy overall and per question type."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.tasks.base import ZooTask

__all__ = ["VideoQATask"]

QTYPES = ("first", "last", "count")


class VideoQATask(ZooTask):
    """Answer a question about a video: batches are dicts with ``frames`` (B, F, 1, H, W) float32, ``question``
    (B, Lq) int64, ``answer`` (B,) int64 and optionally ``qtype`` (B,) int64 (0 first, 1 last, 2 count; see
    ``zoo.datasets.video_qa``). The model maps (frames, question) -> answer logits (B, A).

    Logs ``<stage>/loss``, ``<stage>/acc`` and ``<stage>/acc_<qtype>`` (val / test)."""

    def step(self, batch, stage: str) -> torch.Tensor:
        logits = self.model(batch["frames"], batch["question"])
        loss = F.cross_entropy(logits.float(), batch["answer"])
        ok = (logits.argmax(-1) == batch["answer"]).float()
        metrics = {"loss": loss, "acc": ok.mean()}
        if stage != "train" and "qtype" in batch:
            for i, name in enumerate(QTYPES):
                m = batch["qtype"] == i
                if bool(m.any()):
                    metrics[f"acc_{name}"] = ok[m].mean()
        self.log_metrics(stage, metrics, batch_size=len(ok))
        return loss
