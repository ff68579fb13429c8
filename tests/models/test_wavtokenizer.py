"""WavTokenizer codec: the released checkpoint's layout converts and loads strictly (tiny config with values, the
released medium config by key set and shapes on the meta device), encode / decode shapes and the 75 Hz frame rate,
the "same"-padded iSTFT against a direct numpy overlap-add, weight norm against torch's, clear input errors.

The released layout is derived here by hand from the authors' module tree (jishengpeng/WavTokenizer @ 5cf440d:
``decoder.experiment.WavTokenizer`` = ``feature_extractor`` (EncodecFeatures -> ``encodec`` = EncodecModel with
SEANet ``encoder`` / ``decoder`` and ``quantizer``), ``backbone``, ``head`` and the training-only discriminators and
loss modules), independently of zoo/models/wavtokenizer.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoo.models.wavtokenizer import (
    MEDIUM_SPEECH_75TOKEN,
    TINY,
    Codebook,
    SConv1d,
    WavTokenizer,
    WNConv1d,
    convert_wavtokenizer_checkpoint,
    istft_same,
    load_released,
)

FE = "feature_extractor.encodec."


def _wn(prefix: str, c_out: int, c_in: int, k: int, transpose: bool = False) -> dict[str, tuple]:
    # torch.nn.utils.weight_norm(dim=0): g keeps dim 0 of the weight; ConvTranspose1d weights are (C_in, C_out, k)
    w = (c_in, c_out, k) if transpose else (c_out, c_in, k)
    return {f"{prefix}.weight_g": (w[0], 1, 1), f"{prefix}.weight_v": w, f"{prefix}.bias": (c_out,)}


def _res(prefix: str, dim: int) -> dict[str, tuple]:
    return (_wn(f"{prefix}.block.1.conv.conv", dim // 2, dim, 3) | _wn(f"{prefix}.block.3.conv.conv", dim, dim // 2, 1)
            | _wn(f"{prefix}.shortcut.conv.conv", dim, dim, 1))


def _lstm(prefix: str, dim: int, layers: int) -> dict[str, tuple]:
    out = {}
    for i in range(layers):
        out |= {f"{prefix}.lstm.weight_ih_l{i}": (4 * dim, dim), f"{prefix}.lstm.weight_hh_l{i}": (4 * dim, dim),
                f"{prefix}.lstm.bias_ih_l{i}": (4 * dim,), f"{prefix}.lstm.bias_hh_l{i}": (4 * dim,)}
    return out


def released_layout(cfg) -> dict[str, tuple]:
    """Key -> shape of the authors' Lightning module state dict for ``cfg`` (encoder, quantizer, backbone, head and
    EnCodec's unused SEANet decoder complete; discriminators / loss modules by representative keys only)."""
    nf, d, ratios = cfg.n_filters, cfg.dimension, cfg.ratios
    e = f"{FE}encoder.model"
    sd = _wn(f"{e}.0.conv.conv", nf, 1, 7)
    i, w = 1, nf
    for r in reversed(ratios):  # residual block, ELU, strided conv per ratio
        sd |= _res(f"{e}.{i}", w) | _wn(f"{e}.{i + 2}.conv.conv", 2 * w, w, 2 * r)
        i, w = i + 3, 2 * w
    sd |= _lstm(f"{e}.{i}", w, cfg.lstm_layers) | _wn(f"{e}.{i + 2}.conv.conv", d, w, 7)  # LSTM, ELU, conv
    # EnCodec's SEANet decoder (upstream hard-codes ratios (8, 5, 4, 2)); saved, never used by WavTokenizer
    dec, w = f"{FE}decoder.model", nf * 2 ** len(ratios)
    sd |= _wn(f"{dec}.0.conv.conv", w, d, 7) | _lstm(f"{dec}.1", w, cfg.lstm_layers)
    i = 2
    for r in ratios:
        sd |= _wn(f"{dec}.{i + 1}.convtr.convtr", w // 2, w, 2 * r, transpose=True) | _res(f"{dec}.{i + 2}", w // 2)
        i, w = i + 3, w // 2
    sd |= _wn(f"{dec}.{i + 1}.conv.conv", 1, nf, 7)
    cb = f"{FE}quantizer.vq.layers.0._codebook"
    sd |= {f"{cb}.inited": (1,), f"{cb}.cluster_size": (cfg.codebook_size,),
           f"{cb}.embed": (cfg.codebook_size, d), f"{cb}.embed_avg": (cfg.codebook_size, d)}
    h, n_bw = cfg.backbone_dim, cfg.num_bandwidths
    sd |= {"backbone.embed.weight": (h, d, 7), "backbone.embed.bias": (h,),
           "backbone.norm.scale.weight": (n_bw, h), "backbone.norm.shift.weight": (n_bw, h)}
    for j in (0, 1, 3, 4):
        for n in ("norm1", "norm2"):
            sd |= {f"backbone.pos_net.{j}.{n}.weight": (h,), f"backbone.pos_net.{j}.{n}.bias": (h,)}
        for n in ("conv1", "conv2"):
            sd |= {f"backbone.pos_net.{j}.{n}.weight": (h, h, 3), f"backbone.pos_net.{j}.{n}.bias": (h,)}
    sd |= {"backbone.pos_net.2.norm.weight": (h,), "backbone.pos_net.2.norm.bias": (h,)}
    for n in ("q", "k", "v", "proj_out"):
        sd |= {f"backbone.pos_net.2.{n}.weight": (h, h, 1), f"backbone.pos_net.2.{n}.bias": (h,)}
    sd |= {"backbone.pos_net.5.weight": (h,), "backbone.pos_net.5.bias": (h,)}
    for j in range(cfg.num_layers):
        b = f"backbone.convnext.{j}"
        sd |= {f"{b}.dwconv.weight": (h, 1, 7), f"{b}.dwconv.bias": (h,), f"{b}.norm.scale.weight": (n_bw, h),
               f"{b}.norm.shift.weight": (n_bw, h), f"{b}.pwconv1.weight": (cfg.intermediate_dim, h),
               f"{b}.pwconv1.bias": (cfg.intermediate_dim,), f"{b}.pwconv2.weight": (h, cfg.intermediate_dim),
               f"{b}.pwconv2.bias": (h,), f"{b}.gamma": (h,)}
    sd |= {"backbone.final_layer_norm.weight": (h,), "backbone.final_layer_norm.bias": (h,),
           "head.out.weight": (cfg.n_fft + 2, h), "head.out.bias": (cfg.n_fft + 2,), "head.istft.window": (cfg.n_fft,)}
    sd |= {"multiperioddisc.discriminators.0.convs.0.weight_g": (32, 1, 1, 1),
           "multiperioddisc.discriminators.0.emb.weight": (n_bw, 1024),
           "multiresddisc.discriminators.0.convs.0.weight_v": (32, 1, 3, 9),
           "dac.discriminators.0.convs.0.weight_v": (32, 1, 5, 1),
           "dacdiscriminator.discriminator.discriminators.0.convs.0.weight_v": (32, 1, 5, 1),
           "melspec_loss.mel_spec.spectrogram.window": (1024,),
           "melspec_loss.mel_spec.mel_scale.fb": (513, 100)}
    return sd


def _released_state_dict(cfg, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if device == "meta":
        return {k: torch.empty(s, device="meta") for k, s in released_layout(cfg).items()}
    sd = {k: torch.randn(s, generator=g) * 0.2 for k, s in released_layout(cfg).items()}
    sd[f"{FE}quantizer.vq.layers.0._codebook.inited"] = torch.ones(1)
    sd["head.istft.window"] = torch.hann_window(cfg.n_fft)
    for k in sd:
        if k.startswith(FE) and k.endswith("weight_g"):  # realistic magnitudes: g = ||v|| per output channel
            sd[k] = sd[k[: -len("weight_g")] + "weight_v"].flatten(1).norm(dim=1).view(sd[k].shape)
    return sd


@pytest.fixture(scope="module")
def tiny():
    m = WavTokenizer(TINY)
    m.load_state_dict(convert_wavtokenizer_checkpoint(_released_state_dict(TINY)), strict=True)
    return m.eval()


# ---------------------------------------------------------------------------------------------------------------
# (a) released layout -> strict load
# ---------------------------------------------------------------------------------------------------------------
def test_tiny_released_layout_loads_strictly():
    sd = _released_state_dict(TINY)
    conv = convert_wavtokenizer_checkpoint(sd)
    m = WavTokenizer(TINY)
    res = m.load_state_dict(conv, strict=True)
    assert not res.missing_keys and not res.unexpected_keys
    assert torch.equal(m.quantizer.embed, sd[f"{FE}quantizer.vq.layers.0._codebook.embed"])
    assert torch.equal(m.encoder.model[13].lstm.weight_hh_l1, sd[f"{FE}encoder.model.13.lstm.weight_hh_l1"])
    assert torch.equal(m.backbone.convnext[1].norm.scale.weight, sd["backbone.convnext.1.norm.scale.weight"])
    dropped = set(sd) - {k for k in sd if k.startswith((f"{FE}encoder.", "backbone.", "head."))}
    assert len(conv) == len(sd) - len(dropped) + 1  # + quantizer.embed
    assert not any(k.startswith(("multi", "dac", "melspec", "feature_extractor")) for k in conv)


def test_medium_released_layout_keys_and_shapes():
    sd = _released_state_dict(MEDIUM_SPEECH_75TOKEN, device="meta")
    # spot checks of the released sizes, written out (not derived)
    assert sd[f"{FE}encoder.model.12.conv.conv.weight_v"].shape == (512, 256, 16)
    assert sd[f"{FE}encoder.model.15.conv.conv.weight_v"].shape == (512, 512, 7)
    assert sd[f"{FE}encoder.model.13.lstm.weight_ih_l1"].shape == (2048, 512)
    assert sd[f"{FE}quantizer.vq.layers.0._codebook.embed"].shape == (4096, 512)
    assert sd["backbone.convnext.11.pwconv1.weight"].shape == (2304, 768)
    assert sd["head.out.weight"].shape == (1282, 768)
    conv = convert_wavtokenizer_checkpoint(sd)
    with torch.device("meta"):
        m = WavTokenizer(MEDIUM_SPEECH_75TOKEN)
    want = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in conv.items()} == want
    res = m.load_state_dict(conv, strict=True, assign=True)
    assert not res.missing_keys and not res.unexpected_keys
    n_params = sum(v.numel() for k, v in conv.items() if k != "head.istft.window")
    assert n_params == 73_847_298  # inference tensors of the released layout, codebook included


def test_converter_rejects_unknown_keys_and_maps_parametrizations():
    sd = _released_state_dict(TINY)
    with pytest.raises(KeyError, match="no known WavTokenizer layout"):
        convert_wavtokenizer_checkpoint({**sd, "model.something": torch.zeros(1)})
    # torch's newer parametrized weight norm stores the same pair under other names
    key = f"{FE}encoder.model.0.conv.conv"
    renamed = {k.replace(f"{key}.weight_g", f"{key}.parametrizations.weight.original0")
               .replace(f"{key}.weight_v", f"{key}.parametrizations.weight.original1"): v for k, v in sd.items()}
    assert convert_wavtokenizer_checkpoint(renamed).keys() == convert_wavtokenizer_checkpoint(sd).keys()


class _NotAllowlisted:
    pass


def test_load_released_reads_weights_only(tmp_path):
    sd = _released_state_dict(TINY)
    path = tmp_path / "wavtokenizer.ckpt"
    torch.save({"state_dict": sd, "epoch": 3, "hyper_parameters": {"sample_rate": 24000}}, path)
    m = load_released(path, TINY)
    assert not m.training and torch.equal(m.quantizer.embed, sd[f"{FE}quantizer.vq.layers.0._codebook.embed"])
    torch.save({"state_dict": sd, "extra": _NotAllowlisted()}, path)
    with pytest.raises(ValueError, match="weights_only allowlist"):
        load_released(path, TINY)


# ---------------------------------------------------------------------------------------------------------------
# (b) shapes and frame rate
# ---------------------------------------------------------------------------------------------------------------
def test_encode_decode_shapes_and_frame_rate(tiny):
    assert tiny.frame_rate == 75 and tiny.hop_length == 320 and tiny.sample_rate == 24000
    wav = 0.1 * torch.randn(2, 24000, generator=torch.Generator().manual_seed(1))
    codes = tiny.encode(wav, sample_rate=24000)
    assert codes.shape == (2, 1, 75) and codes.dtype == torch.int64
    assert int(codes.min()) >= 0 and int(codes.max()) < TINY.codebook_size
    out = tiny.decode(codes)
    assert out.shape == (2, 24000) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # ceil(T / 320) frames for lengths that are not multiples of the hop (and shorter than the padding)
    for t in (1, 5, 321, 1000):
        assert tiny.encode(wav[0, :t]).shape == (1, math.ceil(t / 320))
    # batched = one at a time; unbatched (T,) -> (1, n)
    assert torch.equal(tiny.encode(wav[1]), codes[1])
    assert torch.allclose(tiny.decode(codes[1]), out[1], atol=1e-5)
    assert tiny.decode(codes[:, :, :0]).shape == (2, 0)


def test_quantizer_picks_nearest_code():
    g = torch.Generator().manual_seed(2)
    cb = Codebook(64, 8)
    cb.embed.copy_(torch.randn(64, 8, generator=g))
    z = torch.randn(3, 8, 50, generator=g)
    codes = cb.encode(z)
    brute = torch.cdist(z.transpose(1, 2), cb.embed[None]).argmin(-1)  # (3, 50)
    assert codes.shape == (3, 50) and len(codes.unique()) > 20
    assert torch.equal(codes, brute)
    assert torch.equal(cb.decode(codes), cb.embed[codes].transpose(1, 2))


# ---------------------------------------------------------------------------------------------------------------
# (c) numerics against independent formulas
# ---------------------------------------------------------------------------------------------------------------
def _istft_same_numpy(spec: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Direct per-frame overlap-add of windowed inverse DFTs, divided by the summed squared window, centre cut."""
    n_frames = spec.shape[-1]
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    total = (n_frames - 1) * hop + n_fft
    y, env = np.zeros(total), np.zeros(total)
    k = np.arange(n_fft // 2 + 1)
    for t in range(n_frames):
        # real inverse DFT of a one-sided spectrum, written out (the DC and Nyquist sines vanish)
        c = np.full(n_fft // 2 + 1, 2.0)
        c[0] = c[-1] = 1.0
        x = np.arange(n_fft)[:, None]
        frame = (c * (spec[:, t].real * np.cos(2 * np.pi * k * x / n_fft)
                      - spec[:, t].imag * np.sin(2 * np.pi * k * x / n_fft))).sum(1) / n_fft
        y[t * hop : t * hop + n_fft] += frame * win
        env[t * hop : t * hop + n_fft] += win**2
    pad = (n_fft - hop) // 2
    return y[pad : total - pad] / env[pad : total - pad]


@pytest.mark.parametrize("n_fft,hop,n", [(16, 4, 7), (1280, 320, 3)])
def test_istft_same_matches_direct_overlap_add(n_fft, hop, n):
    g = torch.Generator().manual_seed(3)
    spec = torch.complex(torch.randn(1, n_fft // 2 + 1, n, generator=g, dtype=torch.float64),
                         torch.randn(1, n_fft // 2 + 1, n, generator=g, dtype=torch.float64))
    ours = istft_same(spec, n_fft, hop, torch.hann_window(n_fft, dtype=torch.float64))[0].numpy()
    ref = _istft_same_numpy(spec[0].numpy(), n_fft, hop)
    assert ours.shape == (n * hop,)
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_encoder_conv_padding_rule():
    """EnCodec's non-causal rule, numbers written out: kernel 10, stride 5 -> 5 padded samples, 3 left / 2 right,
    plus 4 on the right so that T = 11 reaches a full last window (ceil(11 / 5) = 3 frames)."""
    conv = SConv1d(1, 1, 10, stride=5)
    x = torch.randn(1, 1, 11, generator=torch.Generator().manual_seed(5))
    want = F.conv1d(F.pad(x, (3, 2 + 4), mode="reflect"), conv.conv.conv.weight(), conv.conv.conv.bias, stride=5)
    got = conv(x)
    assert got.shape == (1, 1, 3)
    assert torch.allclose(got, want, atol=1e-6)


def test_weight_norm_equals_torch_weight_norm_and_formula():
    g = torch.Generator().manual_seed(4)
    conv = torch.nn.Conv1d(3, 5, 4, stride=2, dilation=1)
    ref = torch.nn.utils.parametrizations.weight_norm(conv)
    v = torch.randn(5, 3, 4, generator=g)
    gain = torch.rand(5, 1, 1, generator=g) + 0.5
    with torch.no_grad():
        ref.parametrizations.weight.original0.copy_(gain)
        ref.parametrizations.weight.original1.copy_(v)
    ours = WNConv1d(3, 5, 4, stride=2)
    ours.load_state_dict({"weight_g": gain, "weight_v": v, "bias": conv.bias.detach()})
    x = torch.randn(2, 3, 21, generator=g)
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    w = gain * v / np.sqrt((v.double() ** 2).sum((1, 2), keepdim=True)).float()
    assert torch.allclose(ours.weight(), w, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# (d) input errors
# ---------------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(tiny):
    wav = torch.zeros(1, 640)
    with pytest.raises(ValueError, match="sample_rate must be 24000"):
        tiny.encode(wav, sample_rate=16000)
    with pytest.raises(ValueError, match="wav must be a float tensor"):
        tiny.encode(torch.zeros(1, 1, 640))
    with pytest.raises(ValueError, match="wav must be a float tensor"):
        tiny.encode(torch.zeros(1, 640, dtype=torch.int16))
    with pytest.raises(ValueError, match="wav must have at least one sample"):
        tiny.encode(torch.zeros(1, 0))
    with pytest.raises(ValueError, match="codes must be"):
        tiny.decode(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        tiny.decode(torch.full((1, 1, 3), 16))
    with pytest.raises(ValueError, match="bandwidth_id must lie"):
        tiny.features_to_wav(torch.zeros(1, TINY.dimension, 2), bandwidth_id=4)
    with pytest.raises(ValueError, match="backbone_dim must be a multiple of 32"):
        WavTokenizer(TINY.__class__(backbone_dim=48))


def test_tts_codec_folder_loads_a_wavtokenizer(tmp_path):
    """``codec.json`` naming WavTokenizer (the form ``python -m zoo tts --codec DIR`` reads) rebuilds the same codec."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    from zoo.tts_cli import load_codec

    torch.manual_seed(0)
    codec = WavTokenizer(TINY).eval()
    (tmp_path / "codec.json").write_text(json.dumps({"class": "WavTokenizer", "args": dataclasses.asdict(TINY)}))
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, str(tmp_path / "codec.safetensors"))
    loaded = load_codec(tmp_path)
    codes = torch.randint(0, TINY.codebook_size, (1, 1, 5))
    torch.testing.assert_close(loaded.decode(codes), codec.decode(codes), rtol=0, atol=0)
    (tmp_path / "codec.json").write_text(json.dumps({"class": "EnCodec", "args": {}}))
    with pytest.raises(ValueError, match="unknown codec class 'EnCodec'"):
        load_codec(tmp_path)
