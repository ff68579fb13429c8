"""Accident-anticipation metrics exactly as the DSA / CRASH evaluation function computes them.

Re-implementation of ``evaluation_P_R80`` in Petrichor625/CRASH ``src/eval_tools.py`` (commit dbda454; the same
function as in UString / DSTA), vectorised over thresholds but with the same arithmetic, plus the video-level AP of
their ``main.py``. Inputs: per-frame accident probabilities ``scores (N, T)``, binary ``labels (N,)``, time of
accident ``toas (N,)`` in frames (negatives: T + 1), ``fps``.

What the function does (and :func:`evaluate_anticipation` repeats):

* positive videos are truncated to frames ``[0, int(toa))``, negatives keep all frames; ``min_pred`` is the smallest
  kept score;
* thresholds ``np.arange(max(min_pred, 0), 1, 0.001)``; at each, a positive is a true positive when any kept frame is
  >= the threshold; precision = TP / #videos with any kept frame >= threshold; recall = TP / #positives;
  time = 1 - mean(first crossing frame / toa) over the TPs; thresholds with no alarm or no TP are skipped;
* the arrays (length = total kept frames, zero-padded) are sorted by recall with numpy's default (unstable) argsort;
  per unique recall level (the lowest level is dropped: normally the zero padding) precision and time are the max
  over the level, except the highest level, which takes the first element of its block;
* AP: trapezoid over recall (plus P0 * R0); mTTA = mean time x total_seconds (T / fps, the clip length, not the
  toa); TTA@R80 = time at the recall closest to 0.8 x total_seconds; P@R80 = precision at the first recall >= 0.8.

numpy traps (see the fixture README): numpy 1.x compares ``pred >= Th`` in float32 (value-based casting of the
float64 threshold), numpy 2.x in float64. ``compare_dtype="auto"`` (default) reproduces the authors' numpy 1.20
run under any numpy (float32 scores compare in float32, float64 scores in float64); ``"float64"`` reproduces a
numpy 2 run on float32 scores. The top recall level's tie order
follows whatever ``np.argsort`` does, as in the original.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["AnticipationMetrics", "evaluate_anticipation", "video_ap"]


@dataclass
class AnticipationMetrics:
    """AP (frame-level, the papers' "AP"), mTTA and TTA@R80 in seconds, P@R80, video-level AP."""

    AP: float
    mTTA: float
    TTA_R80: float
    P_R80: float
    AP_video: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _inputs(scores, labels, toas) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores)
    if s.ndim != 2 or s.shape[0] == 0:
        raise ValueError(f"scores must be (N, T) per-frame probabilities, got shape {s.shape}")
    y = np.asarray(labels).reshape(-1)
    a = np.asarray(toas).reshape(-1)
    if y.shape[0] != s.shape[0] or a.shape[0] != s.shape[0]:
        raise ValueError(f"labels {y.shape} and toas {a.shape} must have one entry per video ({s.shape[0]})")
    if not np.all(np.isin(y, (0, 1))):
        raise ValueError("labels must be binary (0 = normal, 1 = accident)")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    if np.any(a[y > 0] < 1):
        raise ValueError("toas of positive videos must be >= 1 frame")
    return s, y, a


def video_ap(scores, labels, toas) -> float:
    """Video-level AP: sklearn ``average_precision_score`` of ``max(scores[i, :int(toa_i)])`` (as the authors'
    ``test_eval``; negatives' toa = T + 1 covers the whole clip)."""
    from sklearn.metrics import average_precision_score

    s, y, a = _inputs(scores, labels, toas)
    vid = [float(np.max(p[: int(t)])) for p, t in zip(s, a)]
    return float(average_precision_score(y, vid))


def evaluate_anticipation(scores, labels, toas, fps: float = 20.0, *, compare_dtype: str = "auto",
                          return_internals: bool = False):
    """The authors' ``evaluation_P_R80`` + video AP. Returns :class:`AnticipationMetrics` (and a dict of internals:
    ``min_pred``, ``n_thresholds``, ``new_Recall``, ``new_Precision``, ``new_Time`` with ``return_internals``)."""
    if compare_dtype not in ("auto", "float32", "float64"):
        raise ValueError(f"compare_dtype must be 'auto' (numpy 1.x, the authors'), 'float32' or 'float64', "
                         f"got {compare_dtype!r}")
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    s, y, a = _inputs(scores, labels, toas)
    if compare_dtype == "auto":  # numpy 1.x value-based casting: a float64 scalar threshold takes the array's dtype
        cmp = np.float32 if s.dtype == np.float32 else np.float64
    else:
        cmp = np.float32 if compare_dtype == "float32" else np.float64
    kept = [s[i, : int(a[i])] if y[i] > 0 else s[i, :] for i in range(len(s))]
    if any(k.size == 0 for k in kept):
        raise ValueError("every video needs at least one scored frame before its toa")
    min_pred = min(float(np.min(k)) for k in kept)
    n_frames = sum(k.size for k in kept)
    total_seconds = s.shape[1] / fps
    ths = np.arange(max(min_pred, 0), 1.0, 0.001)
    thc = ths.astype(cmp)
    n_th = ths.size

    tp = np.zeros(n_th)
    alarms = np.zeros(n_th)
    time = np.zeros(n_th)
    counter = np.zeros(n_th)
    for i, k in enumerate(kept):
        kc = k.astype(cmp)
        # any frame >= Th  <=>  max >= Th; first crossing = first index where the running max >= Th
        alarm = kc.max() >= thc
        alarms += alarm
        prod = (k * y[i]).astype(cmp)  # the authors test pred * label >= Th (negatives: 0 >= Th)
        run = np.maximum.accumulate(prod)
        hit = run[-1] >= thc
        first = np.searchsorted(run, thc, side="left")
        tp += hit
        time = np.where(hit, time + first / float(a[i]), time)
        counter += hit
    n_pos = float(np.sum(y))
    rows = []  # (precision, recall, time) of the thresholds the authors count
    overflow = False  # the authors' function would write past its arrays (IndexError)
    for j in range(n_th):
        if alarms[j] == 0:
            continue
        if len(rows) >= n_frames:
            overflow = True  # a write at index n_frames
        if n_pos == 0 or counter[j] == 0:
            continue  # a partial write of zeros (TP = 0), the same as the padding
        rows.append((tp[j] / alarms[j], tp[j] / n_pos, 1 - time[j] / counter[j]))
    cnt = len(rows)
    # The authors size the arrays by the number of kept frames (zero padding). Where their function raises
    # IndexError (more counted thresholds than frames: tiny sets) the arrays grow here, keeping one zero row.
    size = cnt + 1 if overflow else n_frames
    precision, recall, ttime = np.zeros(size), np.zeros(size), np.zeros(size)
    if cnt:
        precision[:cnt], recall[:cnt], ttime[:cnt] = np.asarray(rows).T
    order = np.argsort(recall)
    precision, recall, ttime = precision[order], recall[order], ttime[order]
    _, rep = np.unique(recall, return_index=True)
    rep = rep[1:]
    if rep.size == 0:
        raise ValueError("degenerate input: a single recall level (no positive detected at any threshold)")
    new_time = np.zeros(rep.size)
    new_prec = np.zeros(rep.size)
    for i in range(rep.size - 1):
        new_time[i] = np.max(ttime[rep[i]: rep[i + 1]])
        new_prec[i] = np.max(precision[rep[i]: rep[i + 1]])
    new_time[-1] = ttime[rep[-1]]
    new_prec[-1] = precision[rep[-1]]
    new_rec = recall[rep]
    ap = 0.0
    if new_rec[0] != 0:
        ap += new_prec[0] * (new_rec[0] - 0)
    for i in range(1, new_prec.size):
        ap += (new_prec[i - 1] + new_prec[i]) * (new_rec[i] - new_rec[i - 1]) / 2
    mtta = np.mean(new_time) * total_seconds
    srt = np.argsort(new_rec)
    sort_time, sort_rec = new_time[srt], np.sort(new_rec)
    above = np.where(new_rec >= 0.8)[0]
    p_r80 = float(new_prec[above[0]]) if above.size else float("nan")
    tta_r80 = sort_time[np.argmin(np.abs(sort_rec - 0.8))] * total_seconds
    m = AnticipationMetrics(AP=float(ap), mTTA=float(mtta), TTA_R80=float(tta_r80), P_R80=p_r80,
                            AP_video=video_ap(s, y, a))
    if return_internals:
        return m, {"min_pred": min_pred, "n_thresholds": cnt, "new_Recall": new_rec, "new_Precision": new_prec,
                   "new_Time": new_time, "total_seconds": total_seconds, "n_frames_used": n_frames}
    return m
