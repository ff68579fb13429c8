"""CRASH parity with the authors' code (reference fixture config A: x_dim 256, T 24, B 3, random weights), the
authors' metric function, streaming == full forward, the real-DFT export path and export of the streaming step."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import zoo
from zoo.metrics.anticipation import evaluate_anticipation
from zoo.models.crash import CRASH, CRASHStreamStep, SpectralGating, fixture_state_dict


@pytest.fixture(scope="module")
def ref(reference_root):
    from safetensors.torch import load_file

    d = reference_root / "crash"
    if not (d / "crash_a.json").is_file():
        pytest.skip(f"CRASH fixture missing in {d}")
    facts = json.loads((d / "crash_a.json").read_text())
    return facts, load_file(str(d / "crash_a_io.safetensors")), d


def _model(facts, **kw) -> CRASH:
    m = zoo.create_model("crash", x_dim=facts["config"]["x_dim"], fps=facts["config"]["fps"], **kw)
    m.load_state_dict(fixture_state_dict(facts, m), strict=True)
    return m.eval()


@pytest.fixture(scope="module")
def det(ref):
    """Deterministic run (mc_dropout off), with intermediates, losses and gradients."""
    facts, io, _ = ref
    m = _model(facts, mc_dropout=False)
    x = io["x_uint8"].float() / 32
    out = m(x, return_intermediates=True)
    losses = m.loss(out, io["y"], io["toa"])
    losses["total_loss"].backward()
    return m, out, losses


def _d(a, b) -> float:
    return float((a.detach().double() - b.double()).abs().max())


def test_param_counts_and_layout(ref):
    facts, _, _ = ref
    m = zoo.create_model("crash", x_dim=256)
    assert sum(p.numel() for p in m.parameters()) == facts["param_count"] == 15_198_806
    sd = m.state_dict()
    assert len(sd) == facts["state_dict_num_keys"] == 105
    assert sum(v.numel() for v in sd.values()) == facts["state_dict_numel"]
    assert {r["name"]: tuple(r["shape"]) for r in facts["weight_recipe"]} == {k: tuple(v.shape) for k, v in sd.items()}
    assert sum(p.numel() for p in zoo.create_model("crash").parameters()) == 17_164_886


def test_fixture_weights_regenerate(ref):
    facts, _, _ = ref
    m = _model(facts)
    for k, v in m.state_dict().items():
        if k.endswith("pos_encoding"):  # the sinusoid table: float sin/cos may differ by an ulp across CPUs
            continue
        assert hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() == facts["weight_sha256"][k], k


def test_fixture_parity_outputs(ref, det):
    _, io, _ = ref
    _, out, _ = det
    for k in ["logits", "hidden", "aux_logits", "aux_embed", "frame_embed", "ofa_weights", "ofa_out", "fft_out",
              "fft_phi_out", "gru_h_out"]:
        assert _d(out[k], io[k]) < 1e-5, k
    assert _d(CRASH.scores(out["logits"]), io["probs"]) < 1e-5
    gi = out["gru_h_in"]
    assert _d(gi[:2], io["gru_h_in"][:2]) < 1e-5
    assert _d(gi[2:].log(), io["gru_h_in"][2:].log()) < 1e-4  # TFA outputs ~1/512: compare in log space


def test_fixture_parity_losses_and_grads(ref, det):
    _, io, _ = ref
    m, _, losses = det
    for k, r in [("frame_loss", "frame_loss"), ("cross_entropy", "loss_cross_entropy"), ("auxloss", "loss_aux"),
                 ("log", "loss_log"), ("total_loss", "loss_total")]:
        assert _d(losses[k], io[r]) < 1e-4, k
    params = dict(m.named_parameters())
    names = [k[5:] for k in io if k.startswith("grad.")]
    assert len(names) == 18
    for n in names:
        g = io["grad." + n]
        assert _d(params[n].grad, g) < 1e-4 * max(1.0, float(g.abs().max())), n
    unused = [n for n, p in params.items() if p.grad is None and p.numel()]
    assert sorted(unused) == sorted(ref[0]["checks"]["params_without_grad"])  # the TFA's dead `fc` layers


def test_tfa_probes(ref, det):
    _, io, _ = ref
    m = det[0]
    with torch.no_grad():
        for p in ("10", "3"):
            assert _d(m.RSD(io[f"tfa_probe{p}_in"]).log(), io[f"tfa_probe{p}_out"].log()) < 1e-4


def test_per_video_anticipation_weight(ref, det):
    facts, io, _ = ref
    _, out, _ = det
    m = _model(facts, mc_dropout=False, anticipation_weight="video")
    losses = m.loss({k: v.detach() for k, v in out.items()}, io["y"], io["toa"])
    assert abs(float(losses["cross_entropy"]) - facts["losses_if_toa_shape_B"]["cross_entropy"]) < 1e-4
    assert abs(float(losses["total_loss"]) - facts["losses_if_toa_shape_B"]["total_loss"]) < 1e-4


def test_seeded_mc_dropout(ref):
    facts, io, _ = ref
    m = _model(facts)  # authors' default: dropout active at eval
    x = io["x_uint8"].float() / 32
    if not torch.__version__.startswith("2.11"):
        pytest.skip("seeded draws match only on the fixture's torch build")
    torch.manual_seed(facts["config"]["dropout_seed"])
    with torch.no_grad():
        out = m(x)
        losses = m.loss(out, io["y"], io["toa"])
    assert _d(out["logits"], io["seeded_logits"]) < 1e-5
    assert _d(out["aux_logits"], io["seeded_aux_logits"]) < 1e-5
    assert _d(losses["total_loss"], io["seeded_loss_total"]) < 1e-4
    # a private generator gives reproducible draws without touching the global RNG
    with torch.no_grad():
        a = m(x, generator=torch.Generator().manual_seed(7))["logits"]
        b = m(x, generator=torch.Generator().manual_seed(7))["logits"]
    assert torch.equal(a, b)


def test_streaming_equals_full(ref):
    facts, io, _ = ref
    m = _model(facts, mc_dropout=False)
    x = io["x_uint8"].float() / 32
    with torch.no_grad():
        full = m(x)["logits"]
        state, steps = m.init_state(x.shape[0]), []
        for t in range(x.shape[1]):  # 24 frames: the 10-slot ring buffer wraps twice
            logits, state = m.forward_step(state, x[:, t])
            steps.append(logits)
    assert _d(torch.stack(steps, 1), full) < 1e-5
    assert _d(torch.stack(steps, 1), io["logits"]) < 1e-5
    assert int(state["t"]) == x.shape[1]


def test_real_dft_equals_fft():
    torch.manual_seed(0)
    for red in (16, 2):  # the authors' x0.5 gate and a working channel attention
        g = SpectralGating(3, ca_reduction=red)
        torch.nn.init.normal_(g.complex_weight)
        z = torch.randn(5, 512)
        with torch.no_grad():
            a = g(z)
            g.dft = "matmul"
            b = g(z)
        assert a.abs().max() > 0.1
        assert _d(a, b) < 1e-5


def test_dsa_baseline_and_fixed_quirks():
    m = zoo.create_model("crash_dsa", x_dim=32).eval()
    assert not hasattr(m, "RSD") and not hasattr(m, "fftblock")
    x = torch.rand(2, 6, 5, 32)
    with torch.no_grad():
        out = m(x)
        st = m.init_state(2)
        steps = []
        for t in range(6):
            m.mc_dropout = False
            lg, st = m.forward_step(st, x[:, t])
            steps.append(lg)
        assert _d(torch.stack(steps, 1), m(x)["logits"]) < 1e-5
    assert out["logits"].shape == (2, 6, 2)
    fixed = zoo.create_model("crash", x_dim=32, mc_dropout=False, ca_reduction=2).eval()
    assert fixed.fftblock.channel_attention.fc1.weight.shape == (3, 12)
    with torch.no_grad():
        assert torch.equal(fixed(x)["logits"], fixed(x)["logits"])  # deterministic at eval


def test_bad_inputs():
    m = zoo.create_model("crash", x_dim=32)
    with pytest.raises(ValueError, match="x must be"):
        m(torch.rand(2, 4, 32))
    with pytest.raises(ValueError, match="h_dim"):
        CRASH(x_dim=32, h_dim=256)
    with pytest.raises(ValueError, match="n_layers"):
        CRASH(x_dim=32, n_layers=1)
    with pytest.raises(ValueError, match="anticipation_weight"):
        CRASH(x_dim=32, anticipation_weight="frame")


# ------------------------------------------------------------------------------------------------ metrics
@pytest.fixture(scope="module")
def metric_set(ref):
    from safetensors.numpy import load_file

    facts, _, d = ref
    return facts["metrics"], load_file(str(d / "crash_a_metrics.safetensors"))


@pytest.mark.parametrize("compare_dtype", ["auto", "float64"])  # numpy 1.x (the authors') and numpy 2.x semantics
def test_metrics_fixture(metric_set, compare_dtype):
    want, d = metric_set
    m, internals = evaluate_anticipation(d["scores"], d["labels"], d["toas"], fps=want["fps"],
                                         compare_dtype=compare_dtype, return_internals=True)
    for k in ("AP", "mTTA", "TTA_R80", "P_R80", "AP_video"):
        assert abs(getattr(m, k) - want[k]) < 1e-12, k
    wi = want["internals"]
    assert internals["min_pred"] == wi["min_pred"]
    assert internals["n_thresholds"] == wi["n_thresholds_counted"]
    for k in ("new_Recall", "new_Precision", "new_Time"):
        assert np.abs(internals[k] - np.asarray(wi[k])).max() < 1e-12, k


def _literal_metrics(all_pred, labels, toas, fps):
    """A line-by-line restatement of the authors' threshold loop (slow), for the vectorised version."""
    kept = [all_pred[i, : int(toas[i])] if labels[i] > 0 else all_pred[i] for i in range(len(labels))]
    min_pred = min(k.min() for k in kept)
    n = sum(len(k) for k in kept)
    prec, rec, tim = np.zeros(n), np.zeros(n), np.zeros(n)
    c = 0
    for th in np.arange(max(min_pred, 0), 1.0, 0.001):
        th = np.float64(th).astype(all_pred.dtype)
        tp = alarm = time = cnt = 0.0
        for i, k in enumerate(kept):
            hits = np.nonzero(k * labels[i] >= th)[0]
            if len(hits):
                tp += 1
                time += hits[0] / float(toas[i])
                cnt += 1
            alarm += float((k >= th).any())
        if alarm == 0:
            continue
        prec[c] = tp / alarm
        rec[c] = tp / np.sum(labels)
        if cnt == 0:
            continue
        tim[c] = 1 - time / cnt
        c += 1
    o = np.argsort(rec)
    prec, rec, tim = prec[o], rec[o], tim[o]
    rep = np.unique(rec, return_index=True)[1][1:]
    nt = np.array([tim[rep[i]: rep[i + 1]].max() for i in range(len(rep) - 1)] + [tim[rep[-1]]])
    npr = np.array([prec[rep[i]: rep[i + 1]].max() for i in range(len(rep) - 1)] + [prec[rep[-1]]])
    nr = rec[rep]
    ap = npr[0] * nr[0] + sum((npr[i - 1] + npr[i]) * (nr[i] - nr[i - 1]) / 2 for i in range(1, len(nr)))
    secs = all_pred.shape[1] / fps
    return ap, nt.mean() * secs, nt[np.argmin(np.abs(nr - 0.8))] * secs, npr[np.nonzero(nr >= 0.8)[0][0]]


def test_metrics_match_literal_loop():
    rng = np.random.default_rng(3)
    n, t = 16, 100  # more kept frames than thresholds (else the authors' function raises IndexError)
    labels = (np.arange(n) % 2).astype(np.float32)
    toas = np.where(labels > 0, rng.integers(5, t, n), t + 1)
    scores = rng.uniform(0.05, 0.9, (n, t)).astype(np.float32)
    scores[labels > 0] += np.linspace(0, 0.09, t, dtype=np.float32)
    got = evaluate_anticipation(scores, labels, toas, fps=10.0)
    want = _literal_metrics(scores, labels, toas, 10.0)
    for a, b in zip((got.AP, got.mTTA, got.TTA_R80, got.P_R80), want):
        assert abs(a - b) < 1e-12


def test_metrics_bad_inputs():
    with pytest.raises(ValueError, match="scores"):
        evaluate_anticipation(np.zeros(5), np.zeros(5), np.zeros(5))
    with pytest.raises(ValueError, match="binary"):
        evaluate_anticipation(np.zeros((2, 3)), np.array([0, 2]), np.array([4, 4]))


# ------------------------------------------------------------------------------------------------ export
def _step_inputs(m: CRASH, x_dim: int):
    torch.manual_seed(1)
    st = m.init_state(1)
    return st["h"].uniform_(), torch.rand(10, 2, 1, 512), torch.tensor(4), torch.rand(1, 20, x_dim)


def test_export_stream_step_pt2(tmp_path):
    from zoo.export import export

    m = zoo.create_model("crash", x_dim=64).eval()
    rep = export(CRASHStreamStep(m), _step_inputs(m, 64), tmp_path / "crash_step.pt2", "pt2", reparameterize=False)
    assert rep.ok and rep.max_abs_diff < 1e-5


@pytest.mark.slow
def test_export_stream_step_pte(tmp_path):
    pytest.importorskip("executorch")
    from zoo.export import export

    m = zoo.create_model("crash", x_dim=64).eval()
    rep = export(CRASHStreamStep(m, dft="matmul"), _step_inputs(m, 64), tmp_path / "crash_step.pte", "pte",
                 reparameterize=False)
    assert rep.ok and rep.max_abs_diff < 1e-5


# ------------------------------------------------------------------------------------------------ task
def test_task_fast_dev_run(tmp_path):
    import lightning as L

    from zoo.datasets.accident import AccidentDataModule
    from zoo.tasks.anticipation import AccidentAnticipationTask

    dm = AccidentDataModule(str(tmp_path / "scenes"), "scenes", batch_size=4, build_offline=True, scene_preset="tiny")
    task = AccidentAnticipationTask("crash", model_args={"x_dim": 64, "fps": 10.0}, eval_seed=0)
    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, gradient_clip_val=10.0, default_root_dir=str(tmp_path))
    trainer.fit(task, datamodule=dm)
    losses = [float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/loss")]
    assert losses and all(np.isfinite(losses))
    trainer.test(task, datamodule=dm, verbose=False)
    info = task.model_card_info()
    assert info["task"] == "accident-anticipation" and info["recipe"]["mc_dropout"] is True
