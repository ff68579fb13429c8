"""Speech anti-spoofing task (AASIST family): weighted cross-entropy, EER / min t-DCF, score files and DET plots.

Batches are ``(x (B, L) float32 waveforms, y (B,) int64)`` with bona fide = 1, spoof = 0 (the AASIST authors'
convention, see ``zoo.datasets.asvspoof``). Models return ``(embedding, logits)`` or logits; the detection score is
the raw bona-fide logit ``logits[:, 1]``.

Recipe of the authors (config/AASIST.conf): Adam lr 1e-4, betas (0.9, 0.999), weight decay 1e-4 on all parameters,
per-step cosine annealing to 5e-6 (``min_lr_ratio: 0.05``), batch 24, 100 epochs, CE weights [0.1, 0.9], SWA.
SWA: use Lightning's callback in the trainer config, e.g.::

    trainer:
      callbacks:
        - class_path: lightning.pytorch.callbacks.StochasticWeightAveraging
          init_args: {swa_lrs: 5.0e-6, swa_epoch_start: 0.6, annealing_epochs: 1}

(The authors average only the epochs whose dev EER improved, then recompute BN statistics; Lightning averages every
epoch after ``swa_epoch_start`` and also recomputes BN statistics at the end of fit.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.metrics.antispoof import compute_eer, min_tdcf, read_asv_scores, save_det_plot
from zoo.tasks.base import ZooTask

__all__ = ["AntiSpoofingTask"]

_DEFAULT_OPTIMIZER = {"name": "adam", "lr": 1e-4, "weight_decay": 1e-4, "betas": [0.9, 0.999],
                      "filter_bias_and_bn": False}
_DEFAULT_SCHEDULER = {"name": "cosine", "min_lr_ratio": 0.05}


class AntiSpoofingTask(ZooTask):
    """Bona fide vs spoof classification of waveforms ``(B, L) float32``; labels ``(B,) int64``, bona fide = 1.

    Args (beyond :class:`ZooTask`'s; optimizer / scheduler default to the authors' Adam + cosine recipe):
        class_weights: cross-entropy weights [spoof, bona fide]; the authors use [0.1, 0.9].
        freq_aug: the authors' sinc-channel masking augmentation (AASIST models only; off in their configs).
        asv_scores: optional organisers' ASV score file (``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``);
            when given, val/test also log ``min_tdcf`` (ASVspoof 2019 cost model).
        ssl_weights: for ``aasist_scalable`` only: a torchaudio-layout wav2vec2 state dict for the frozen front end,
            as a ``.safetensors`` path, a folder holding ``model.safetensors`` or a hub id ``hf-hub:org/name``.
        output_dir: where test writes ``scores_test_<tag>.txt`` (the authors' ``UTT SYSTEM KEY SCORE`` lines) and the
            DET plot ``det_test_<tag>.png``; tag = model name (+ ``_pretrained``). Default: the trainer's log dir, else
            its ``default_root_dir`` (the working directory under eval.py).

    Logs ``train/loss``, ``train/acc``, ``{val,test}/loss``, ``{val,test}/eer`` (percent, as the authors report),
    ``{val,test}/min_tdcf`` (with ``asv_scores``). ``last_metrics`` holds the latest epoch's EER / t-DCF.
    """

    def __init__(self, model: str = "aasist_l", model_args: dict | None = None, pretrained: bool | str = False,
                 optimizer: dict | None = None, scheduler: dict | None = None,
                 class_weights: list[float] | None = None, freq_aug: bool = False, asv_scores: str | None = None,
                 ssl_weights: str | None = None, output_dir: str | None = None):
        optimizer = dict(_DEFAULT_OPTIMIZER) if optimizer is None else optimizer
        scheduler = dict(_DEFAULT_SCHEDULER) if scheduler is None else scheduler
        super().__init__(model, model_args, pretrained, optimizer, scheduler)
        weights = [0.1, 0.9] if class_weights is None else list(class_weights)
        if len(weights) != 2 or min(weights) < 0:
            raise ValueError(f"class_weights must be two non-negative floats [spoof, bona fide], got {class_weights}")
        self.register_buffer("class_weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self._asv = read_asv_scores(asv_scores) if asv_scores else None
        if ssl_weights:
            self._load_ssl(ssl_weights)
        self._scores: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
        self._labels: dict[str, list[torch.Tensor]] = {"val": [], "test": []}
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ model plumbing
    def _load_ssl(self, spec: str) -> None:
        from safetensors.torch import load_file

        if not hasattr(self.model, "load_ssl_state_dict"):
            raise ValueError(f"ssl_weights is only for models with an SSL front end (aasist_scalable), not {self.hparams.model}")
        path = Path(spec)
        if path.is_dir():
            path = path / "model.safetensors"
        if not path.exists():
            from huggingface_hub import hf_hub_download

            from zoo.hub import parse_hub_id

            repo_id, rev = parse_hub_id(spec)
            path = Path(hf_hub_download(repo_id, "model.safetensors", revision=rev))
        if path.suffix != ".safetensors":
            raise ValueError(f"ssl_weights must be a .safetensors file, a folder or a hub id, got {spec!r}")
        self.model.load_ssl_state_dict(load_file(str(path)))

    def _logits(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.hparams.freq_aug and "freq_aug" in self.model.forward.__code__.co_varnames:
            out = self.model(x, freq_aug=True)
        else:
            out = self.model(x)
        return (out[1] if isinstance(out, (tuple, list)) else out).float()

    def _check(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise TypeError("AntiSpoofingTask batches must be (x (B, L) float32, y (B,) int64)")
        x, y = batch[0], batch[1]
        if x.dim() != 2:
            raise ValueError(f"x must be waveforms (B, L), got shape {tuple(x.shape)}")
        return x, y.long().view(-1)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = self._check(batch)
        logits = self._logits(x, train=True)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_metrics("train", {"loss": loss, "acc": acc}, batch_size=x.shape[0], prog_bar=("loss",))
        return loss

    def step(self, batch: Any, stage: str) -> torch.Tensor:
        """Validation / test step (``ZooTask`` routes ``validation_step`` and ``test_step`` here)."""
        x, y = self._check(batch)
        logits = self._logits(x, train=False)
        loss = F.cross_entropy(logits, y, weight=self.class_weights)
        self._scores[stage].append(logits[:, 1].detach().cpu())
        self._labels[stage].append(y.detach().cpu())
        self.log_metrics(stage, {"loss": loss}, batch_size=x.shape[0])
        return loss

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> torch.Tensor:
        """Bona-fide scores ``(B,) float32`` (the raw logit of class 1)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self._logits(x, train=False)[:, 1]

    # ------------------------------------------------------------------ epoch-level metrics
    def _gather(self, stage: str) -> tuple[np.ndarray, np.ndarray]:
        scores = torch.cat(self._scores[stage]) if self._scores[stage] else torch.empty(0)
        labels = torch.cat(self._labels[stage]) if self._labels[stage] else torch.empty(0, dtype=torch.long)
        self._scores[stage], self._labels[stage] = [], []
        if self.trainer is not None and self.trainer.world_size > 1:
            # Equal-length shards are the DistributedSampler's contract.
            scores = self.all_gather(scores.to(self.device)).reshape(-1).cpu()
            labels = self.all_gather(labels.to(self.device)).reshape(-1).cpu()
        return scores.numpy().astype(np.float64), labels.numpy()

    def _epoch_end(self, stage: str) -> None:
        scores, labels = self._gather(stage)
        if self.trainer is not None and self.trainer.sanity_checking:
            return
        bona, spoof = scores[labels == 1], scores[labels == 0]
        if bona.size == 0 or spoof.size == 0:
            print(f"[AntiSpoofingTask] {stage}: need both bona fide and spoof trials for EER "
                  f"(got {bona.size} / {spoof.size}); skipping")
            return
        eer, thr = compute_eer(bona, spoof)
        metrics = {"eer": 100.0 * eer}
        if self._asv is not None:
            metrics["min_tdcf"] = min_tdcf(bona, spoof, self._asv["target"], self._asv["nontarget"], self._asv["spoof"])
        self.last_metrics = {f"{stage}/{k}": float(v) for k, v in metrics.items()}
        self.last_metrics[f"{stage}/eer_threshold"] = float(thr)
        self.log_metrics(stage, {k: torch.tensor(v, dtype=torch.float32) for k, v in metrics.items()},
                         prog_bar=("eer",), on_step=False, on_epoch=True)
        if stage == "test":
            self._write_outputs(scores, labels, bona, spoof)

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")


    def _write_outputs(self, scores: np.ndarray, labels: np.ndarray, bona: np.ndarray, spoof: np.ndarray) -> None:
        if self.trainer is not None and not self.trainer.is_global_zero:
            return
        out = self.output_dir()
        out.mkdir(parents=True, exist_ok=True)
        dm = getattr(self.trainer, "datamodule", None)
        entries = getattr(getattr(dm, "test_set", None), "entries", None)
        lines = []
        for i, (s, y) in enumerate(zip(scores, labels)):
            if entries is not None and len(entries) == len(scores):
                e = entries[i]
                lines.append(f"{e.utt} {e.system} {e.key} {s:.6f}")
            else:
                lines.append(f"{i} - {'bonafide' if y == 1 else 'spoof'} {s:.6f}")
        tag = str(self.hparams.model).replace("/", "_") + ("_pretrained" if self.hparams.pretrained else "")
        (out / f"scores_test_{tag}.txt").write_text("\n".join(lines) + "\n")
        name = str(self.hparams.model) + (" (pretrained)" if self.hparams.pretrained else "")
        plot = save_det_plot({name: (bona, spoof)}, out / f"det_test_{tag}.png", title=f"DET: {name}")
        if plot is not None:
            print(f"[AntiSpoofingTask] DET curve saved to {plot}")

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        info["recipe"].update({"loss": "weighted cross-entropy", "class_weights": self.class_weights.tolist(),
                               "score": "logits[:, 1] (bona fide)", "freq_aug": bool(self.hparams.freq_aug)})
        info["task"] = "audio-anti-spoofing"
        return info
