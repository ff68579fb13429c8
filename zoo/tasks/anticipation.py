"""Traffic-accident anticipation task (CRASH / DSA family): the model's own multi-task loss, the authors' metrics.

Batches are ``(x (B, T, 20, D) float32, y (B, 2) one-hot float32, toa (B, 1) float32)`` from
:class:`zoo.datasets.accident.AccidentDataModule`. The model (``crash``, ``crash_dsa``) returns per-frame logits and
computes its loss (:meth:`zoo.models.crash.CRASH.loss`: exponential anticipation loss / rho_1^2 + video CE / rho_2^2 +
log(rho_1 rho_2); its rho parameters live in the model). Validation / test compute, over every video, the authors'
``evaluation_P_R80`` (:func:`zoo.metrics.anticipation.evaluate_anticipation`): AP, mTTA, TTA@R80, P@R80 and the
video-level AP. Select checkpoints on ``val/AP``, never on the test split.

Authors' recipe (main.py / run_train_test.sh): Adam lr 1.2e-4, batch 10, 80 epochs, ReduceLROnPlateau(0.5,
patience 5) on the training loss, gradient clipping 10 (``trainer.gradient_clip_val: 10``).

With the model's ``mc_dropout`` quirk on (the default) evaluation is stochastic, as in the authors' code;
``eval_seed`` draws it from a private generator reseeded at every evaluation epoch (reproducible numbers).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from zoo.metrics.anticipation import evaluate_anticipation
from zoo.tasks.base import ZooTask

__all__ = ["AccidentAnticipationTask"]

_DEFAULT_OPTIMIZER = {"name": "adam", "lr": 1.2e-4, "weight_decay": 0.0}
_DEFAULT_SCHEDULER = {"name": "none"}


class AccidentAnticipationTask(ZooTask):
    """Per-frame accident probability from feature videos.

    Args (beyond :class:`ZooTask`'s):
        eval_seed: seed of the MC-dropout draws at validation / test (None: the global RNG, as the authors).
        compare_dtype: threshold comparison of the metric ("auto" = the authors' numpy 1.x behaviour).

    Logs ``train/loss`` (+ ``train/frame_loss``, ``train/aux_loss``, ``train/rho_1``, ``train/rho_2``),
    ``{val,test}/loss`` and ``{val,test}/{AP,mTTA,TTA_R80,P_R80,AP_video}``; ``last_metrics`` keeps the latest.
    """

    def __init__(self, model: str = "crash", model_args: dict | None = None, pretrained: bool | str = False,
                 optimizer: dict | None = None, scheduler: dict | None = None, eval_seed: int | None = 0,
                 compare_dtype: str = "auto"):
        optimizer = dict(_DEFAULT_OPTIMIZER) if optimizer is None else optimizer
        scheduler = dict(_DEFAULT_SCHEDULER) if scheduler is None else scheduler
        super().__init__(model, model_args, pretrained, optimizer, scheduler)
        if not hasattr(self.model, "loss"):
            raise ValueError(f"model {model!r} has no loss(out, y, toa); use crash or crash_dsa")
        self._buf: dict[str, list[tuple[torch.Tensor, ...]]] = {"val": [], "test": []}
        self._gen: torch.Generator | None = None
        self.last_metrics: dict[str, float] = {}

    @staticmethod
    def _check(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 3:
            raise TypeError("AccidentAnticipationTask batches must be (x (B, T, S, D), y (B, 2), toa (B, 1))")
        x, y, toa = batch[0], batch[1], batch[2]
        if x.dim() != 4:
            raise ValueError(f"x must be (B, T, 1 + N_obj, D), got {tuple(x.shape)}")
        return x.float(), y.float(), toa.float()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, toa = self._check(batch)
        out = self.model(x)
        losses = self.model.loss(out, y, toa)
        self.log_metrics("train", {"loss": losses["total_loss"], "frame_loss": losses["cross_entropy"],
                                   "aux_loss": losses["auxloss"], "rho_1": self.model.rho_1.detach(),
                                   "rho_2": self.model.rho_2.detach()}, batch_size=x.shape[0], prog_bar=("loss",))
        return losses["total_loss"]

    def _start_eval(self) -> None:
        seed = self.hparams.eval_seed
        self._gen = None
        if seed is not None:
            self._gen = torch.Generator(device=self.device).manual_seed(int(seed))

    def on_validation_epoch_start(self) -> None:
        self._start_eval()

    def on_test_epoch_start(self) -> None:
        self._start_eval()

    def step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y, toa = self._check(batch)
        out = self.model(x, generator=self._gen)
        losses = self.model.loss(out, y, toa)
        probs = self.model.scores(out["logits"])
        self._buf[stage].append((probs.detach().cpu(), y[:, 1].detach().cpu(), toa.reshape(-1).detach().cpu()))
        self.log_metrics(stage, {"loss": losses["total_loss"]}, batch_size=x.shape[0])
        return losses["total_loss"]

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """P(accident) per frame (B, T)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.model.scores(self.model(x.float(), generator=self._gen)["logits"])

    def _epoch_end(self, stage: str) -> None:
        buf, self._buf[stage] = self._buf[stage], []
        if not buf or (self.trainer is not None and self.trainer.sanity_checking):
            return
        probs = torch.cat([b[0] for b in buf]).numpy().astype(np.float32)
        labels = torch.cat([b[1] for b in buf]).numpy()
        toas = torch.cat([b[2] for b in buf]).numpy()
        if labels.sum() == 0 or labels.sum() == len(labels):
            print(f"[AccidentAnticipationTask] {stage}: need positive and negative videos; skipping metrics")
            return
        try:
            m = evaluate_anticipation(probs, labels, toas, fps=float(self.model.fps),
                                      compare_dtype=self.hparams.compare_dtype)
        except ValueError as e:  # e.g. no positive ever crosses a threshold (untrained model)
            print(f"[AccidentAnticipationTask] {stage}: metrics undefined ({e})")
            return
        vals = m.as_dict()
        self.last_metrics = {f"{stage}/{k}": float(v) for k, v in vals.items()}
        self.log_metrics(stage, {k: torch.tensor(float(v)) for k, v in vals.items()}, prog_bar=("AP",),
                         on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        m = self.model
        info["recipe"].update({"loss": "CRASH multi-task (exp. anticipation CE / rho1^2 + video CE / rho2^2 + "
                                       "log rho1 rho2)", "mc_dropout": bool(getattr(m, "mc_dropout", False)),
                               "anticipation_weight": getattr(m, "anticipation_weight", None),
                               "fps": float(getattr(m, "fps", 0.0)), "eval_seed": self.hparams.eval_seed})
        info["task"] = "accident-anticipation"
        return info
