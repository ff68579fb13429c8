"""Transformer Transducer: shapes, masks, relative attention vs reference math, loss, decoders, streaming == full,
exportable encoder step."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import zoo
from zoo.models.transducer import AudioEncoderStep, extend_key, extend_query, rnnt_loss


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add overhead
    yield
    torch.set_num_threads(n)


def _model(**kw):
    torch.manual_seed(0)
    args = dict(vocab_size=12, d_model=32, num_heads=2, head_dim=16, ffn_dim=64, pos_dim=16, audio_layers=3,
                label_layers=2, joint_dim=32, dropout=0.0, n_mels=32, audio_left=4, audio_right=1, label_left=2,
                max_symbols_per_frame=3)
    args.update(kw)
    m = zoo.create_model("transformer_transducer_small", **args).eval()
    with torch.no_grad():  # a random model whose outputs depend on the input: a mix of blanks and labels
        m.joint_out.weight.mul_(6)
        m.audio_proj.weight.mul_(3)
        m.joint_out.bias[0] += 3.0
    return m


def _audio(n=2, seconds=(1.2, 0.9), seed=1):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([int(s * 16000) for s in seconds[:n]])
    return torch.randn(n, int(lens.max()), generator=g) * 0.1, lens


def test_registry_and_param_counts():
    assert {"transformer_transducer", "transformer_transducer_small"} <= set(zoo.list_models("transformer_transducer*"))
    small = zoo.create_model("transformer_transducer_small", vocab_size=29)
    assert 1e6 < sum(p.numel() for p in small.parameters()) < 3e6


def test_relative_attention_matches_transformer_xl_math():
    torch.manual_seed(0)
    b, h, n, d, p = 2, 3, 7, 8, 6
    q, k = torch.randn(b, h, n, d, dtype=torch.float64), torch.randn(b, h, n, d, dtype=torch.float64)
    u, w, w_r = (torch.randn(h, d, dtype=torch.float64), torch.randn(h, d, dtype=torch.float64),
                 torch.randn(h, d, p, dtype=torch.float64))
    pos = torch.arange(100, 100 + n)  # absolute offsets must not matter
    got = extend_query(q, pos, u, w, w_r) @ extend_key(k, pos, p).transpose(-1, -2)
    rel = (pos[:, None] - pos[None, :]).double()  # i - j
    omega = torch.exp(torch.arange(p // 2, dtype=torch.float64) * (-2 * math.log(10000.0) / p))
    s = torch.cat([torch.sin(rel[..., None] * omega), torch.cos(rel[..., None] * omega)], -1)  # (n, n, p)
    r = torch.einsum("ijp,hdp->hijd", s, w_r)  # W_r s(i-j)
    ref = (q + u[None, :, None]) @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q + w[None, :, None], r)
    torch.testing.assert_close(got, ref)


def test_shapes_loss_and_grad():
    m = _model().train()
    audio, lens = _audio()
    enc, t = m.encode_audio(audio, lens)
    assert enc.shape == (2, int(t.max()), 32) and t.tolist() == m.frontend.num_frames(lens).tolist()
    assert t[0] == ((int(lens[0]) - 512) // 160 + 1 - 4) // 3 + 1
    tg, tl = torch.randint(1, 12, (2, 5)), torch.tensor([5, 3])
    out = m(audio, lens, tg, tl)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="logits"):
        rnnt_loss(torch.zeros(2, 3, 4), tg, t, tl)


def test_bf16_autocast_forward_and_backward():
    """Under autocast the fp32 position biases must not leave q in fp32 while k, v are bf16 (found on the H200)."""
    m = _model().train()
    audio, lens = _audio()
    tg, tl = torch.randint(1, 12, (2, 5)), torch.tensor([5, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(audio, lens, tg, tl)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_limited_context_and_padding():
    m = _model(audio_left=2, audio_right=1)
    audio, lens = _audio()
    x, t = m.features(audio, lens)
    with torch.no_grad():
        y = m.audio_encoder(x, t, 2, 1)
        x2 = x.clone()
        x2[0, 0] += 3.0 * torch.randn(x.shape[-1]) # input frame 0 is seen (through 3 layers of left 2) by output frames <= 6 only
        y2 = m.audio_encoder(x2, t, 2, 1)
        assert (y2[0, 6] - y[0, 6]).abs().max() > 1e-4
        torch.testing.assert_close(y2[0, 7: int(t[0])], y[0, 7: int(t[0])], atol=0, rtol=0)
        # padded batch == each utterance alone
        y1 = m.audio_encoder(x[1:, : int(t[1])], t[1:], 2, 1)
        torch.testing.assert_close(y[1:, : int(t[1])], y1, atol=1e-5, rtol=1e-5)
        lab = m.encode_labels(torch.tensor([[3, 4, 5, 6], [3, 4, 0, 0]]), torch.tensor([4, 2]))
        lab1 = m.encode_labels(torch.tensor([[3, 4]]), torch.tensor([2]))
        torch.testing.assert_close(lab[1:, :3], lab1, atol=1e-5, rtol=1e-5)


def test_greedy_equals_beam1_and_beam_runs():
    m = _model()
    audio, lens = _audio()
    g = m.greedy_search(audio, lens)
    assert any(len(x) > 0 for x in g)
    assert m.beam_search(audio, lens, beam=1) == g
    b = m.beam_search(audio[:1], lens[:1], beam=3)
    assert isinstance(b[0], list) and all(0 < i < 12 for i in b[0])
    with pytest.raises(ValueError):
        m.beam_search(audio, lens, beam=0)


@pytest.mark.parametrize("left,right", [(4, 1), (2, 0), (-1, 2)])
def test_streaming_equals_full(left, right):
    m = _model(audio_left=left, audio_right=right)
    audio, lens = _audio(seconds=(1.5, 1.0))
    full = m.greedy_search(audio, lens)
    assert len(full[0]) > 0
    for b in range(2):
        a = audio[b, : int(lens[b])]
        for chunk in (160, 1234, 4800, a.numel()):
            sd = m.streaming_decoder()
            emitted = []
            for i in range(0, a.numel(), chunk):
                emitted += sd.accept(a[i: i + chunk])
            emitted += sd.finish()
            assert emitted == sd.tokens == full[b], (b, chunk)
    with pytest.raises(ValueError, match="right"):
        m.streaming_decoder(right=-1)


def test_export_encoder_step(tmp_path):
    m = _model(audio_left=4, audio_right=1)
    audio, lens = _audio(n=1, seconds=(1.5,))
    chunk = 3
    step = AudioEncoderStep(m, chunk, 4, 1).eval()
    with torch.no_grad():
        x, t = m.features(audio, lens)
        full = m.audio_encoder(x, t, 4, 1)
        cache, outs = step.init_cache(), []
        n = (int(t[0]) // chunk) * chunk
        for s in range(0, n, chunk):
            y, *cache = step(x[:, s: s + chunk], torch.tensor(s), *cache)
            outs.append(y)
        lag = 1 * len(m.audio_encoder.layers)
        torch.testing.assert_close(torch.cat(outs, 1)[:, lag:], full[:, : n - lag], atol=1e-5, rtol=1e-5)
    ex = (x[:, 6:9], torch.tensor(6), *step.init_cache())
    ep = torch.export.export(step, ex)
    path = tmp_path / "step.pt2"
    torch.export.save(ep, str(path))
    got = torch.export.load(str(path)).module()(*ex)
    with torch.no_grad():
        ref = step(*ex)
    for a_, b_ in zip(got, ref):
        torch.testing.assert_close(a_, b_)


def test_export_encoder_step_to_pte_matches_eager(tmp_path):
    """The streaming audio-encoder step (chunk + cached left context) runs in the ExecuTorch runtime."""
    pytest.importorskip("executorch", reason="executorch (the `mobile` extra) is not installed")
    from zoo.export import find_flatc

    if find_flatc() is None:
        pytest.skip("flatc not found (Debian package flatbuffers-compiler)")
    m = _model(audio_left=4, audio_right=1).eval()
    step = AudioEncoderStep(m, 3, 4, 1).eval()
    torch.manual_seed(0)
    ex = (torch.randn(1, 3, m.d_model), torch.tensor(6), *step.init_cache())
    report = zoo.export(step, ex, tmp_path / "step.pte", format="pte")
    assert report.path.read_bytes()[4:8] == b"ET12"
    assert report.ok and report.max_abs_diff < 1e-4


PUBLISHED = Path(__file__).resolve().parents[2] / "hub" / "zoo-models" / "transformer_transducer_small.offline_speech"
CLIP = Path(__file__).resolve().parents[1] / "fixtures" / "speech" / "1001-0-0002.flac"


def test_published_weights_transcribe_real_speech(offline_hub):
    """Registry tag -> sha256-checked offline load; the weights transcribe a held-out human prompt, streaming and
    full-utterance decoding agree, and random weights do not come close."""
    offline_hub("transformer_transducer_small.offline_speech")
    import soundfile as sf
    from torchmetrics.functional.text import char_error_rate

    from zoo import hub
    from zoo.tasks.asr import CharTokenizer

    source = zoo.model_entry("transformer_transducer_small").pretrained["offline_speech"]
    assert source.sha256 == hub.sha256_file(PUBLISHED / "model.safetensors")
    model = zoo.create_model("transformer_transducer_small", pretrained="transformer_transducer_small.offline_speech")
    tok = CharTokenizer.load(PUBLISHED)
    wav, sr = sf.read(str(CLIP), dtype="float32")
    assert sr == 16000
    audio, lens = torch.from_numpy(wav)[None], torch.tensor([len(wav)])
    ref = "please enter the conference pin number"
    with torch.no_grad():
        full = model.greedy_search(audio, lens, left=10, right=2)[0]
    sd = model.streaming_decoder(left=10, right=2)
    for i in range(0, len(wav), 4800):
        sd.accept(audio[0, i: i + 4800])
    sd.finish()
    assert sd.tokens == full
    cer = float(char_error_rate(tok.decode(full), ref))
    assert cer < 0.5, (tok.decode(full), cer)
    torch.manual_seed(0)
    random_model = zoo.create_model("transformer_transducer_small", vocab_size=29).eval()
    with torch.no_grad():
        rand = random_model.greedy_search(audio, lens, left=10, right=2)[0]
    assert float(char_error_rate(tok.decode(rand), ref)) > 0.8
