"""Text-to-video generation task (MoC / Wan-style DiTs): rectified-flow training, Euler + CFG sampling, metrics.

Objective (Wan 2.1 / SD3 flow matching): x_σ = (1 - σ) x₀ + σ ε, the model predicts the velocity v = ε - x₀ at
timestep t = 1000 σ. Sampling integrates dx/dσ = v from σ = 1 to 0 with Euler steps over a shifted schedule
σ' = s σ / (1 + (s - 1) σ) and classifier-free guidance v = v_∅ + g (v_c - v_∅) (∅ = zero text embeddings, the
caption dropout used in training).

Metrics that need no downloaded model (:class:`VideoMetrics`), from the zoo's Fashion-MNIST classifier
``repnext_m0.fmnist`` on generated frames of the multi-shot task (``zoo.datasets.moc_video``):
- text alignment: accuracy of the classifier on the crops where the caption puts each item (class named in the
  shot's caption), over all frames (crops cleaned by :meth:`VideoMetrics.clean`; the real videos score 0.79, the
  ceiling of this proxy);
- identity consistency: cosine similarity of the classifier features of the same cast member's crops in different
  shots (mean over scenes, entities, shot pairs); ``identity_class_agreement``: how often its predicted class agrees;
- frame FD: Fréchet distance between classifier features of generated and real frames (grey, 64 x 64).

Batches are the dicts of ``MultiShotVideoDataset`` (video, context, text_shot, shots, classes, entity, motion).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zoo.tasks.base import ZooTask

__all__ = ["VideoGenTask", "VideoMetrics", "flow_matching_loss", "frechet_distance", "sample_euler", "save_video_strip",
           "shift_sigmas"]


def shift_sigmas(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """(steps + 1,) σ from 1 to 0, shifted by σ' = s σ / (1 + (s - 1) σ) (Wan's flow shift)."""
    s = torch.linspace(1.0, 0.0, steps + 1, device=device)
    return shift * s / (1 + (shift - 1) * s)


def flow_matching_loss(model, x0: torch.Tensor, context: torch.Tensor, *, shots=None, text_shot=None,
                       p_uncond: float = 0.1, shift: float = 1.0, generator=None) -> torch.Tensor:
    """Rectified-flow MSE on the velocity for a batch x0 (B, C, F, H, W); σ ~ U(0, 1) shifted; caption dropout
    ``p_uncond`` (zero context) for classifier-free guidance."""
    b = x0.shape[0]
    sigma = torch.rand(b, device=x0.device, generator=generator)
    sigma = shift * sigma / (1 + (shift - 1) * sigma)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    s = sigma.view(b, 1, 1, 1, 1).to(x0.dtype)
    xt = (1 - s) * x0 + s * noise
    if p_uncond > 0:
        keep = (torch.rand(b, device=x0.device, generator=generator) >= p_uncond).to(context.dtype)
        context = context * keep.view(b, 1, 1)
    v = model(xt, sigma * 1000, context, shots=shots, text_shot=text_shot)
    return F.mse_loss(v.float(), (noise - x0).float())


@torch.no_grad()
def sample_euler(model, context: torch.Tensor, shape: tuple[int, ...], *, steps: int = 20, guidance: float = 3.0,
                 shift: float = 1.0, shots=None, text_shot=None, generator=None, dtype=None) -> torch.Tensor:
    """Euler sampler with classifier-free guidance: context (B, L, text_dim), shape (B, C, F, H, W) -> x₀ fp32."""
    dev = context.device
    x = torch.randn(shape, device=dev, generator=generator)
    sig = shift_sigmas(steps, shift, dev)
    b = shape[0]
    null = torch.zeros_like(context)
    for i in range(steps):
        t = sig[i].expand(b) * 1000
        xin = x.to(dtype) if dtype is not None else x
        if guidance == 1.0:
            v = model(xin, t, context, shots=shots, text_shot=text_shot).float()
        else:
            ts = None if text_shot is None else torch.cat([text_shot, text_shot])
            both = model(torch.cat([xin, xin]), torch.cat([t, t]), torch.cat([context, null]), shots=shots,
                         text_shot=ts).float()
            vc, vu = both.chunk(2)
            v = vu + guidance * (vc - vu)
        x = x + (sig[i + 1] - sig[i]) * v
    return x


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)  # (scipy >= 1.16 dropped disp=)
    covmean = covmean[0] if isinstance(covmean, tuple) else covmean
    if not np.isfinite(covmean).all():
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


class VideoMetrics:
    """Classifier-based proxies for the multi-shot task (see module docstring).

    classifier: a Fashion-MNIST classifier with ``forward_features`` / ``forward_head(pre_logits=True)``
    (``zoo.create_model("repnext_m0.fmnist", pretrained=...)``), input 1 x 64 x 64, normalised by mean / std.
    """

    def __init__(self, classifier, scene_cfg, mean: float = 0.286, std: float = 0.353, input_size: int = 64):
        self.clf = classifier.eval()
        self.cfg, self.mean, self.std, self.size = scene_cfg, mean, std, input_size

    @torch.no_grad()
    def _features(self, gray: torch.Tensor):
        """gray (N, h, w) in [0, 1] -> (features (N, D), logits (N, 10)) fp32, in chunks."""
        p = next(self.clf.parameters())
        feats, logits = [], []
        for i in range(0, gray.shape[0], 512):
            g = gray[i:i + 512, None].to(p.device, p.dtype)
            g = F.interpolate(g, size=(self.size, self.size), mode="bilinear", align_corners=False)
            f = self.clf.forward_head(self.clf.forward_features((g - self.mean) / self.std), pre_logits=True)
            feats.append(f.float().cpu())
            logits.append(self.clf.forward_head(self.clf.forward_features((g - self.mean) / self.std)).float().cpu())
        return torch.cat(feats), torch.cat(logits)

    def crops(self, video: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """video (B, 3, F, S, S) in [-1, 1], motion (B, shots, 2) -> grey crops (B, shots, 2, frames_per_shot, i, i)."""
        from zoo.datasets.moc_video import item_box

        c = self.cfg
        gray = ((video.float().clamp(-1, 1) + 1) / 2).mean(1)  # (B, F, S, S)
        out = torch.zeros(video.shape[0], c.shots, 2, c.frames_per_shot, c.item, c.item)
        for b in range(video.shape[0]):
            for s in range(c.shots):
                for slot in range(2):
                    for t in range(c.frames_per_shot):
                        y, x = item_box(c, slot, int(motion[b, s, slot]), t)
                        out[b, s, slot, t] = gray[b, s * c.frames_per_shot + t, y:y + c.item, x:x + c.item]
        return out

    @staticmethod
    def clean(crops: torch.Tensor) -> torch.Tensor:
        """Background removal for the classifier (trained on items on black): subtract the median of each crop's
        border ring and rescale its maximum to 1. (N, i, i) -> (N, i, i) in [0, 1]."""
        ring = torch.cat([crops[:, 0], crops[:, -1], crops[:, :, 0], crops[:, :, -1]], 1).median(1).values
        mx = crops.flatten(1).max(1).values
        return ((crops - ring[:, None, None]) / (mx - ring).clamp(min=1e-3)[:, None, None]).clamp(0, 1)

    def item_scores(self, video, batch) -> dict[str, Any]:
        """Per-crop predictions and features for text alignment / identity."""
        cr = self.crops(video, batch["motion"])
        b, s, two, t, i, _ = cr.shape
        feats, logits = self._features(self.clean(cr.reshape(-1, i, i)))
        return {"feats": feats.view(b, s, two, t, -1), "pred": logits.argmax(-1).view(b, s, two, t)}

    def frame_features(self, video: torch.Tensor) -> torch.Tensor:
        gray = ((video.float().clamp(-1, 1) + 1) / 2).mean(1)
        return self._features(gray.flatten(0, 1))[0]

    def compute(self, video: torch.Tensor, batch: dict, real_frame_feats: torch.Tensor | None = None) -> dict[str, float]:
        """All metrics for generated (or real) videos (B, 3, F, S, S) of ``batch``'s captions."""
        sc = self.item_scores(video, batch)
        classes = batch["classes"].cpu()
        align = (sc["pred"] == classes[..., None]).float().mean().item()
        feats = F.normalize(sc["feats"].mean(3), dim=-1)  # (B, shots, 2, D), one vector per appearance
        majority = torch.mode(sc["pred"], dim=-1).values  # (B, shots, 2)
        sims, agree = [], []
        ent = batch["entity"].cpu()
        for b in range(video.shape[0]):
            apps: dict[int, list[tuple[int, int]]] = {}
            for s in range(ent.shape[1]):
                for slot in range(2):
                    apps.setdefault(int(ent[b, s, slot]), []).append((s, slot))
            for lst in apps.values():
                for x in range(len(lst)):
                    for y in range(x + 1, len(lst)):
                        (s1, p1), (s2, p2) = lst[x], lst[y]
                        sims.append(float(feats[b, s1, p1] @ feats[b, s2, p2]))
                        agree.append(float(majority[b, s1, p1] == majority[b, s2, p2]))
        out = {"text_alignment": align, "identity_cosine": float(np.mean(sims)) if sims else float("nan"),
               "identity_class_agreement": float(np.mean(agree)) if agree else float("nan")}
        if real_frame_feats is not None:
            out["frame_fd"] = frechet_distance(self.frame_features(video).numpy().astype(np.float64),
                                               real_frame_feats.numpy().astype(np.float64))
        return out


def save_video_strip(video: torch.Tensor, path: str | Path, scale: int = 3, fps: int = 4) -> list[Path]:
    """Render videos (B, 3, F, H, W) in [-1, 1]: ``path.png`` (rows = videos, columns = frames) and ``path.gif``
    (rows = videos, animated over frames). Returns the written paths."""
    from PIL import Image

    v = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
    b, f, h, w, _ = v.shape
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = v.transpose(0, 2, 1, 3, 4).reshape(b * h, f * w, 3)
    png = path.with_suffix(".png")
    Image.fromarray(grid).resize((f * w * scale, b * h * scale), Image.Resampling.NEAREST).save(png)
    frames = [Image.fromarray(v[:, t].reshape(b * h, w, 3)).resize((w * scale, b * h * scale),
                                                                    Image.Resampling.NEAREST) for t in range(f)]
    gif = path.with_suffix(".gif")
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return [png, gif]


class VideoGenTask(ZooTask):
    """Rectified-flow training of a text-to-video DiT (``moc_dit_small`` by default) on multi-shot scenes.

    Args (beyond :class:`ZooTask`'s): p_uncond (caption dropout), train_shift / sample_shift (flow shifts),
    sample_steps, guidance (CFG scale), classifier (folder or tag of the Fashion-MNIST classifier for the test
    metrics; None: loss only), output_dir (where test writes the sample strips ``samples.png`` / ``samples.gif``;
    default ``$ZOO_PREDICTIONS_DIR``, else the trainer's log dir).
    Logs ``train/loss``, ``val/loss``, ``test/loss`` and, with a classifier, ``test/text_alignment``,
    ``test/identity_cosine``, ``test/identity_class_agreement``, ``test/frame_fd``; MoC models also log
    ``train/sparsity``.
    """

    def __init__(self, model: str = "moc_dit_small", model_args: dict | None = None, pretrained: bool | str = False,
                 optimizer: dict | None = None, scheduler: dict | None = None, p_uncond: float = 0.1,
                 train_shift: float = 1.0, sample_shift: float = 1.0, sample_steps: int = 20, guidance: float = 3.0,
                 classifier: str | None = "hub/zoo-models/repnext_m0.fmnist", output_dir: str | None = None):
        optimizer = {"name": "adamw", "lr": 3e-4, "weight_decay": 0.01} if optimizer is None else optimizer
        scheduler = {"name": "constant", "warmup_steps": 100} if scheduler is None else scheduler
        super().__init__(model, model_args, pretrained, optimizer, scheduler)
        self._test: list[tuple[torch.Tensor, dict]] = []
        self.last_metrics: dict[str, float] = {}

    def _loss(self, batch: dict) -> torch.Tensor:
        return flow_matching_loss(self.model, batch["video"], batch["context"], shots=batch["shots"][0],
                                  text_shot=batch["text_shot"], p_uncond=self.hparams.p_uncond if self.training else 0,
                                  shift=self.hparams.train_shift)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        logs = {"loss": loss}
        stats = self.model.moc_stats() if hasattr(self.model, "moc_stats") else {}
        if stats:
            logs["sparsity"] = torch.tensor(stats["sparsity"])
        self.log_metrics("train", logs, batch_size=batch["video"].shape[0], prog_bar=("loss",))
        return loss

    def step(self, batch: dict, stage: str) -> torch.Tensor:
        loss = self._loss(batch)
        self.log_metrics(stage, {"loss": loss}, batch_size=batch["video"].shape[0])
        if stage == "test" and self.hparams.classifier:
            self._test.append((self.sample(batch).cpu(), {k: v.cpu() for k, v in batch.items()}))
        return loss

    def sample(self, batch: dict, generator=None) -> torch.Tensor:
        """Generated videos (B, C, F, H, W) for ``batch``'s captions."""
        return sample_euler(self.model, batch["context"], tuple(batch["video"].shape),
                            steps=self.hparams.sample_steps, guidance=self.hparams.guidance,
                            shift=self.hparams.sample_shift, shots=batch["shots"][0], text_shot=batch["text_shot"],
                            generator=generator)

    def on_test_epoch_end(self) -> None:
        if not self._test:
            return
        import zoo
        from zoo.datasets.moc_video import SceneConfig

        gen = torch.cat([g for g, _ in self._test])
        batch = {k: torch.cat([bt[k] for _, bt in self._test]) for k in ("video", "classes", "entity", "motion")}
        self._test = []
        v = batch["video"]
        cfg = SceneConfig(shots=batch["classes"].shape[1], frames_per_shot=v.shape[2] // batch["classes"].shape[1],
                          size=v.shape[-1])
        clf = zoo.create_model("repnext_m0", pretrained=self.hparams.classifier).to(self.device)
        metrics = VideoMetrics(clf, cfg)
        m = metrics.compute(gen, batch, real_frame_feats=metrics.frame_features(v))
        self.last_metrics = m
        self.log_metrics("test", {k: torch.tensor(val) for k, val in m.items()}, batch_size=v.shape[0])
        out = (self.hparams.output_dir or os.environ.get("ZOO_PREDICTIONS_DIR")
               or (self.trainer.log_dir if self.trainer is not None else None))
        if out:  # under eval.py without a log dir: no strips (never litter the working directory)
            save_video_strip(gen[:8], Path(out) / "samples")

    def model_card_info(self) -> dict[str, Any]:
        info = super().model_card_info()
        info["objective"] = "rectified flow (velocity), Euler sampler with classifier-free guidance"
        return info
