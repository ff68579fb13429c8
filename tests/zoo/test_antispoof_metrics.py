"""EER / DET / min t-DCF against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from zoo.metrics.antispoof import (
    ASVSPOOF2019_COST_MODEL,
    asv_error_rates,
    compute_eer,
    det_curve,
    min_tdcf,
    read_asv_scores,
    tdcf_curve,
)

BONA = [0.2, 0.4, 0.6, 0.8]
SPOOF = [0.1, 0.3, 0.5, 0.7]


def test_det_curve_interleaved():
    frr, far, thr = det_curve(BONA, SPOOF)
    # sorted: 0.1s 0.2b 0.3s 0.4b 0.5s 0.6b 0.7s 0.8b
    np.testing.assert_allclose(frr, [0, 0, .25, .25, .5, .5, .75, .75, 1])
    np.testing.assert_allclose(far, [1, .75, .75, .5, .5, .25, .25, 0, 0])
    np.testing.assert_allclose(thr, [0.099, .1, .2, .3, .4, .5, .6, .7, .8])


def test_eer_hand_cases():
    assert compute_eer(BONA, SPOOF) == pytest.approx((0.5, 0.4))
    eer, thr = compute_eer([2.0, 3.0], [0.0, 1.0])  # perfectly separated
    assert eer == 0.0 and 1.0 <= thr < 2.0
    assert compute_eer([0.0, 1.0], [2.0, 3.0])[0] == 1.0  # perfectly wrong
    # one of three bona fide below every spoof: frr 1/3 at far 0 -> nearest |frr - far| point (1/3, 1/3)
    assert compute_eer([-1.0, 5.0, 6.0], [1.0, 2.0, 3.0])[0] == pytest.approx(1 / 3)


def test_tdcf_hand_case():
    # Perfect ASV (no misses, no false alarms, every spoof missed by nothing): C1 = Ptar, C2 = Cfa_cm * Pspoof.
    curve, _ = tdcf_curve(BONA, SPOOF, pfa_asv=0.0, pmiss_asv=0.0, pmiss_spoof_asv=0.0)
    c1, c2 = ASVSPOOF2019_COST_MODEL["Ptar"], 10 * 0.05
    frr, far, _ = det_curve(BONA, SPOOF)
    np.testing.assert_allclose(curve, (c1 * frr + c2 * far) / min(c1, c2))
    assert curve.min() == pytest.approx(0.75)  # at (frr 0, far 0.75)
    perfect, _ = tdcf_curve([2.0, 3.0, 4.0], [0.0, 1.0], 0.0, 0.0, 0.0)
    assert perfect.min() == 0.0


def test_min_tdcf_with_asv_scores(tmp_path):
    tar, non, spf = np.array([3.0, 4.0, 5.0]), np.array([0.0, 1.0, 2.0]), np.array([2.5, 3.5])
    assert asv_error_rates(tar, non, spf, 3.0) == (0.0, 0.0, 0.5)
    # ASV EER threshold: 3.0 (first target) -> Pfa 0, Pmiss 0, Pmiss_spoof 0.5: C2 = 0.5 * 0.5 = 0.25 < C1 = 0.9405
    c1, c2 = ASVSPOOF2019_COST_MODEL["Ptar"], 0.25
    expected = min((c1 * r + c2 * a) / c2 for r, a in zip(*det_curve(BONA, SPOOF)[:2]))
    assert min_tdcf(BONA, SPOOF, tar, non, spf) == pytest.approx(expected)
    f = tmp_path / "asv.txt"
    f.write_text("bonafide target 3.0\nbonafide target 4.0\nbonafide nontarget 0.5\nA07 spoof 2.5\n")
    s = read_asv_scores(f)
    assert s["target"].tolist() == [3.0, 4.0] and s["spoof"].tolist() == [2.5]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="bonafide"):
        compute_eer([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        compute_eer([np.nan], [1.0])
    with pytest.raises(ValueError, match="soft"):
        tdcf_curve([1.0, 1.0], [0.0, 0.0], 0.0, 0.0, 0.0)
    f = tmp_path / "bad.txt"
    f.write_text("bonafide maybe 1.0\n")
    with pytest.raises(ValueError, match="target"):
        read_asv_scores(f)
