"""Anomaly-detection metrics exactly as the Crane / AnomalyCLIP / VAND code computes them (``utils/metrics.py``).

- image level: AUROC and AP (scikit-learn), F1-max (max finite F1 over ``precision_recall_curve``);
- pixel level: AUROC and AP through torchmetrics' binary ``AUROC`` / ``AveragePrecision``, F1-max as above;
- AUPRO: 200 thresholds ``arange(min, max, (max - min) / 200)``; per threshold the mean overlap of every connected
  ground-truth region (8-connectivity, as ``skimage.measure.label``) and the FPR over all normal pixels; keep the
  thresholds with FPR < 0.3, min-max normalise those FPRs to [0, 1] and integrate with the trapezoid rule. (A map that
  separates perfectly has all kept FPRs equal and gives NaN, as in the authors' code.)

Maps are (N, H, W) float, masks (N, H, W) {0, 1}; scores (N,), labels (N,).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

__all__ = ["f1_max", "image_metrics", "pixel_metrics", "aupro", "anomaly_metrics", "format_table"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def f1_max(gt, pr) -> float:
    """Max F1 over the precision-recall curve (non-finite F1 values dropped)."""
    from sklearn.metrics import precision_recall_curve

    p, r, _ = precision_recall_curve(_np(gt).ravel(), _np(pr).ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    return float(np.max(f1[np.isfinite(f1)]))


def image_metrics(labels, scores) -> dict[str, float]:
    """``image_auroc``, ``image_ap``, ``image_f1_max`` (fractions); 0.0 each when only one class is present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, s = _np(labels).astype(np.int64).ravel(), _np(scores).astype(np.float64).ravel()
    if len(np.unique(y)) < 2:
        return {"image_auroc": 0.0, "image_ap": 0.0, "image_f1_max": 0.0}
    return {"image_auroc": float(roc_auc_score(y, s)), "image_ap": float(average_precision_score(y, s)),
            "image_f1_max": f1_max(y, s)}


def aupro(masks, maps, max_step: int = 200, expect_fpr: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to FPR ``expect_fpr``, normalised (see module docstring)."""
    from scipy import ndimage
    from sklearn.metrics import auc

    masks = _np(masks).astype(bool)
    amaps = _np(maps).astype(np.float64)
    if masks.shape != amaps.shape or masks.ndim != 3:
        raise ValueError(f"masks and maps must both be (N, H, W), got {masks.shape} and {amaps.shape}")
    regions = []  # (image index, flat pixel indices) per connected region
    for i, m in enumerate(masks):
        lab, n = ndimage.label(m, structure=np.ones((3, 3), dtype=int))
        flat = lab.ravel()
        for k in range(1, n + 1):
            regions.append((i, np.flatnonzero(flat == k)))
    if not regions:
        raise ValueError("aupro needs at least one anomalous pixel")
    neg = ~masks
    n_neg = neg.sum()
    flat_maps = amaps.reshape(len(amaps), -1)
    lo, hi = amaps.min(), amaps.max()
    delta = (hi - lo) / max_step
    pros, fprs = [], []
    for th in np.arange(lo, hi, delta):
        binary = amaps > th
        pros.append(np.mean([(flat_maps[i, idx] > th).sum() / len(idx) for i, idx in regions]))
        fprs.append(np.logical_and(neg, binary).sum() / n_neg)
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < expect_fpr
    f = fprs[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = (f - f.min()) / (f.max() - f.min())
    return float(auc(f, pros[keep]))


def pixel_metrics(masks, maps, *, with_aupro: bool = True) -> dict[str, float]:
    """``pixel_auroc``, ``pixel_ap`` (torchmetrics, binary), ``pixel_f1_max``, ``pixel_aupro``."""
    from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

    gt = torch.as_tensor(_np(masks)).long()
    pr = torch.as_tensor(_np(maps)).float()
    if gt.unique().numel() < 2:
        return {"pixel_auroc": 0.0, "pixel_ap": 0.0, "pixel_f1_max": 0.0, "pixel_aupro": 0.0}
    out = {"pixel_auroc": BinaryAUROC()(pr, gt).item(), "pixel_ap": BinaryAveragePrecision()(pr, gt).item(),
           "pixel_f1_max": f1_max(gt.ravel(), pr.ravel())}
    if with_aupro:
        out["pixel_aupro"] = aupro(gt.numpy(), pr.numpy())
    return out


def anomaly_metrics(labels, scores, masks, maps, *, with_aupro: bool = True) -> dict[str, float]:
    """Image and pixel metrics of one category, as fractions."""
    return {**image_metrics(labels, scores), **pixel_metrics(masks, maps, with_aupro=with_aupro)}


def format_table(per_category: Mapping[str, Mapping[str, float]], *, percent: bool = True) -> str:
    """Markdown table: one row per category plus the mean row (values in percent by default)."""
    cats = list(per_category)
    if not cats:
        return ""
    cols = list(per_category[cats[0]])
    k = 100.0 if percent else 1.0
    lines = ["| category | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(f"{k * per_category[c][m]:.1f}" for m in cols) + " |")
    mean = {m: float(np.mean([per_category[c][m] for c in cats])) for m in cols}
    lines.append("| **mean** | " + " | ".join(f"{k * mean[m]:.1f}" for m in cols) + " |")
    return "\n".join(lines)
