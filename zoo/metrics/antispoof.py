"""Spoofing-countermeasure metrics: DET curve, EER and the ASVspoof 2019 minimum tandem detection cost (min t-DCF).

Pure numpy functions. Convention (as the ASVspoof organisers' and the AASIST authors' scripts): *higher CM score =
more bona fide*; ``bonafide`` scores are the positive (target) class and ``spoof`` the negative class. A trial is
rejected when its score is <= the threshold. Rates are fractions in [0, 1]; callers multiply EER by 100 to report %.

t-DCF (Kinnunen et al., Odyssey 2018; ASVspoof 2019 evaluation plan) needs the ASV system's target / non-target /
spoof scores (the organisers' ``ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt``), read by
:func:`read_asv_scores`; without them only EER is defined.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = [
    "ASVSPOOF2019_COST_MODEL",
    "det_curve",
    "compute_eer",
    "asv_error_rates",
    "tdcf_curve",
    "min_tdcf",
    "read_asv_scores",
    "save_det_plot",
]

#: ASVspoof 2019 t-DCF cost model (evaluation plan; also clovaai/aasist evaluation.py).
ASVSPOOF2019_COST_MODEL: dict[str, float] = {
    "Pspoof": 0.05,
    "Ptar": (1 - 0.05) * 0.99,
    "Pnon": (1 - 0.05) * 0.01,
    "Cmiss_asv": 1.0,
    "Cfa_asv": 10.0,
    "Cmiss_cm": 1.0,
    "Cfa_cm": 10.0,
}


def _scores(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError(f"{name} must hold at least one score")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    return a


def det_curve(bonafide, spoof) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss (bona fide rejected) and false-alarm (spoof accepted) rates at every threshold.

    Args: bonafide (Nb,), spoof (Ns,) scores. Returns (frr, far, thresholds), each (Nb + Ns + 1,): the first point
    rejects nothing (frr 0, far 1), then the threshold walks up through the sorted scores.
    """
    b, s = _scores(bonafide, "bonafide"), _scores(spoof, "spoof")
    scores = np.concatenate([b, s])
    labels = np.concatenate([np.ones(b.size), np.zeros(s.size)])
    order = np.argsort(scores, kind="mergesort")
    labels = labels[order]
    n_bona_rejected = np.cumsum(labels)
    n_spoof_rejected = np.arange(1, scores.size + 1) - n_bona_rejected
    frr = np.concatenate([[0.0], n_bona_rejected / b.size])
    far = np.concatenate([[1.0], (s.size - n_spoof_rejected) / s.size])
    thresholds = np.concatenate([[scores[order[0]] - 0.001], scores[order]])
    return frr, far, thresholds


def compute_eer(bonafide, spoof) -> tuple[float, float]:
    """Equal error rate (fraction) and its threshold: the DET point where |frr - far| is smallest, EER = mean of the
    two rates there."""
    frr, far, thr = det_curve(bonafide, spoof)
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thr[i])


def asv_error_rates(target, nontarget, spoof, threshold: float) -> tuple[float, float, float]:
    """ASV false-alarm, miss and spoof-miss rates at ``threshold``: (Pfa_asv, Pmiss_asv, Pmiss_spoof_asv)."""
    t, n, s = _scores(target, "target"), _scores(nontarget, "nontarget"), _scores(spoof, "asv spoof")
    return float(np.mean(n >= threshold)), float(np.mean(t < threshold)), float(np.mean(s < threshold))


def tdcf_curve(bonafide, spoof, pfa_asv: float, pmiss_asv: float, pmiss_spoof_asv: float,
               cost_model: Mapping[str, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Normalised t-DCF at every CM threshold for a fixed ASV operating point.

    t-DCF(s) = (C1 * Pmiss_cm(s) + C2 * Pfa_cm(s)) / min(C1, C2) with
    C1 = Ptar (Cmiss_cm - Cmiss_asv Pmiss_asv) - Pnon Cfa_asv Pfa_asv and C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv).
    Returns (tdcf_norm, thresholds).
    """
    cm = dict(ASVSPOOF2019_COST_MODEL if cost_model is None else cost_model)
    if min(cm["Cfa_asv"], cm["Cmiss_asv"], cm["Cfa_cm"], cm["Cmiss_cm"]) < 0:
        raise ValueError(f"cost_model costs must be >= 0, got {cm}")
    if min(cm["Ptar"], cm["Pnon"], cm["Pspoof"]) < 0 or abs(cm["Ptar"] + cm["Pnon"] + cm["Pspoof"] - 1) > 1e-10:
        raise ValueError(f"cost_model priors Ptar + Pnon + Pspoof must be >= 0 and sum to 1, got {cm}")
    for name, v in (("pfa_asv", pfa_asv), ("pmiss_asv", pmiss_asv), ("pmiss_spoof_asv", pmiss_spoof_asv)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name} must be a rate in [0, 1], got {v}")
    b, s = _scores(bonafide, "bonafide"), _scores(spoof, "spoof")
    if np.unique(np.concatenate([b, s])).size < 3:
        raise ValueError("t-DCF needs soft CM scores (at least 3 distinct values), not hard decisions")
    pmiss_cm, pfa_cm, thr = det_curve(b, s)
    c1 = cm["Ptar"] * (cm["Cmiss_cm"] - cm["Cmiss_asv"] * pmiss_asv) - cm["Pnon"] * cm["Cfa_asv"] * pfa_asv
    c2 = cm["Cfa_cm"] * cm["Pspoof"] * (1 - pmiss_spoof_asv)
    if c1 <= 0 or c2 <= 0:
        raise ValueError(f"t-DCF weights must be positive (C1={c1:.4g}, C2={c2:.4g}); check the ASV error rates")
    return (c1 * pmiss_cm + c2 * pfa_cm) / min(c1, c2), thr


def min_tdcf(bonafide, spoof, asv_target, asv_nontarget, asv_spoof,
             cost_model: Mapping[str, float] | None = None) -> float:
    """Minimum normalised t-DCF (ASVspoof 2019): the ASV threshold is fixed at the ASV system's own EER point."""
    _, asv_thr = compute_eer(asv_target, asv_nontarget)
    pfa, pmiss, pmiss_spoof = asv_error_rates(asv_target, asv_nontarget, asv_spoof, asv_thr)
    curve, _ = tdcf_curve(bonafide, spoof, pfa, pmiss, pmiss_spoof, cost_model)
    return float(curve.min())


def read_asv_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Read an organisers' ASV score file (lines ``SOURCE KEY SCORE``, KEY in target / nontarget / spoof) ->
    ``{"target": (N,), "nontarget": (M,), "spoof": (K,)}``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ASV score file {path} not found")
    out: dict[str, list[float]] = {"target": [], "nontarget": [], "spoof": []}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[1] not in out:
            raise ValueError(f"{path}:{n}: expected 'SOURCE target|nontarget|spoof SCORE', got {line!r}")
        out[parts[1]].append(float(parts[2]))
    for k, v in out.items():
        if not v:
            raise ValueError(f"{path}: no {k!r} trials")
    return {k: np.asarray(v) for k, v in out.items()}


def save_det_plot(curves: Mapping[str, tuple], path: str | Path, title: str = "DET curve") -> Path | None:
    """Plot DET curves (probit axes) of ``{label: (bonafide_scores, spoof_scores)}`` to ``path`` (png/pdf).

    Returns the path, or None (with a printed message) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("save_det_plot: matplotlib is not installed; skipping the DET plot (pip install matplotlib)")
        return None
    from statistics import NormalDist

    probit = np.vectorize(NormalDist().inv_cdf)
    eps = 1e-4
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (b, s) in curves.items():
        frr, far, _ = det_curve(b, s)
        eer, _ = compute_eer(b, s)
        ax.plot(probit(np.clip(far, eps, 1 - eps)), probit(np.clip(frr, eps, 1 - eps)),
                label=f"{label} (EER {100 * eer:.2f}%)")
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(probit(ticks), [f"{100 * t:g}" for t in ticks])
    lim = probit(np.array([0.0005, 0.99]))
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.plot(lim, lim, "k:", lw=0.8)
    ax.set_xlabel("spoof accepted (false alarm) %")
    ax.set_ylabel("bona fide rejected (miss) %")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
