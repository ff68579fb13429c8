"""AASIST / AASIST-L parity with the authors' code and weights; the zoo's AASIST-L spoof_speech weights load offline;
Scalable AASIST shapes, gradients, frozen front end."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import zoo
from zoo.models.aasist import ScalableAASIST, convert_checkpoint, sinc_band_pass

GOLDEN_SINE = {  # official code @ a04c986, logits (spoof, bona fide), hidden L2 norm; row 2 = reversed x 0.5
    "aasist": ((4.698488, -5.037317), 12.789288, (1.936876, -2.620909)),
    "aasist_l": ((6.401302, -5.689848), 13.349261, (5.083241, -4.634757)),
}
FILES = {"aasist": "AASIST.pth", "aasist_l": "AASIST-L.pth"}


def _sine() -> torch.Tensor:
    n = torch.arange(64600, dtype=torch.float64)
    x = (0.1 * torch.sin(2 * math.pi * 440 * n / 16000) + 0.05 * torch.sin(2 * math.pi * 1234 * n / 16000)).float()
    return torch.stack([x, 0.5 * x.flip(0)])


@pytest.fixture(scope="module", params=["aasist", "aasist_l"])
def official(request, reference_root):
    arch = request.param
    model = zoo.create_model(arch)
    model.load_state_dict(convert_checkpoint(reference_root / "aasist" / FILES[arch]), strict=True)
    return arch, model.eval()


def test_param_counts():
    assert sum(p.numel() for p in zoo.create_model("aasist").parameters()) == 297_866
    assert sum(p.numel() for p in zoo.create_model("aasist_l").parameters()) == 85_306


def test_state_dict_layout(reference_root):
    sd = convert_checkpoint(reference_root / "aasist" / "AASIST.pth")
    assert len(sd) == 229
    model = zoo.create_model("aasist")
    assert set(model.state_dict()) == set(sd)
    assert not any(k.startswith("conv_time") for k in model.state_dict())  # sinc filters: non-persistent buffer
    assert dict(model.named_buffers())["conv_time.band_pass"].shape == (70, 129)


def test_golden_sine(official):
    arch, model = official
    logits_ref, norm_ref, row2_ref = GOLDEN_SINE[arch]
    with torch.no_grad():
        hidden, logits = model(_sine())
    assert hidden.shape == (2, 160) and logits.shape == (2, 2)
    assert (logits[0] - torch.tensor(logits_ref)).abs().max() < 1e-4
    assert (logits[1] - torch.tensor(row2_ref)).abs().max() < 1e-4
    assert abs(hidden[0].norm().item() - norm_ref) < 1e-4


def test_fixture_parity(reference_root):
    from safetensors.torch import load_file

    ref = load_file(str(reference_root / "aasist" / "AASIST_input_a.safetensors"))
    model = zoo.create_model("aasist")
    model.load_state_dict(convert_checkpoint(reference_root / "aasist" / "AASIST.pth"), strict=True)
    model.eval()
    feats = {}
    model.encoder.register_forward_hook(lambda m, i, o: feats.__setitem__("enc", o))
    with torch.no_grad():
        hidden, logits = model(ref["input"])
    assert (logits - ref["logits"]).abs().max() < 1e-4
    assert (hidden - ref["last_hidden"]).abs().max() < 1e-4
    assert (feats["enc"] - ref["encoder_out"]).abs().max() < 1e-3
    assert (model.conv_time.band_pass - ref["sinc_band_pass"]).abs().max() < 1e-6
    assert torch.equal(sinc_band_pass(70, 129), model.conv_time.band_pass)


def test_hub_folder_loads(official):
    arch, model = official
    folder = Path(__file__).resolve().parents[2] / "hub" / "zoo-models" / f"{arch}.asvspoof2019"
    if not folder.is_dir():
        pytest.skip(f"{folder} not built (python scripts/convert_aasist.py)")
    hub_model = zoo.create_model(arch, pretrained=str(folder))
    for k, v in model.state_dict().items():
        assert torch.equal(v, hub_model.state_dict()[k]), k


def test_bad_input():
    model = zoo.create_model("aasist_l")
    with pytest.raises(ValueError, match="B, L"):
        model(torch.zeros(1, 1, 64600))


def test_train_step_and_freq_aug():
    torch.manual_seed(0)
    model = zoo.create_model("aasist_l").train()
    x = torch.randn(2, 16000) * 0.1  # any length works; short keeps the test fast
    _, logits = model(x, freq_aug=True)
    logits.sum().backward()
    assert model.out_layer.weight.grad is not None
    assert model.encoder[1][0].bn1.weight.grad is None  # the authors' dead bn1 (kept for the keys)


@pytest.fixture(scope="module")
def scalable():
    torch.manual_seed(0)
    return zoo.create_model("aasist_scalable", variant="small")


def test_scalable_shapes_grad_frozen(scalable):
    model = scalable.train()
    assert not model.ssl.training  # frozen front end stays in eval mode
    assert all(not p.requires_grad for p in model.ssl.parameters())
    x = torch.randn(2, 64600) * 0.1
    emb, logits = model(x)
    assert emb.shape == (2, 160) and logits.shape == (2, 2)
    logits[:, 1].sum().backward()
    assert all(p.grad is None for p in model.ssl.parameters())
    back = [p for n, p in model.named_parameters() if not n.startswith("ssl.")]
    assert all(p.grad is not None for p in back)
    model.zero_grad(set_to_none=True)
    # separate query projections for temporal and spectral nodes
    assert hasattr(model.hgat1[0], "to_q1") and hasattr(model.hgat1[0], "to_q2")


def test_scalable_eval_deterministic_and_ssl_load(scalable):
    model = scalable.eval()
    x = torch.randn(1, 32000) * 0.1
    with torch.no_grad():
        a = model(x)[1]
        model.load_ssl_state_dict({k: v.clone() for k, v in model.ssl.state_dict().items()})
        b = model(x)[1]
    assert torch.allclose(a, b)


def test_scalable_paper_config_size():
    with torch.device("meta"):
        model = ScalableAASIST(ssl="xlsr_300m")
    n_ssl = sum(p.numel() for p in model.ssl.parameters())
    assert 300e6 < n_ssl < 330e6  # XLS-R 300M architecture (~315M)
    assert model.trainable_parameters() < 1e6


def test_pte_export_of_the_authors_aasist_l(reference_root, tmp_path):
    """The authors' AASIST-L lowers to an ExecuTorch .pte (XNNPACK) whose output equals eager."""
    pytest.importorskip("executorch", reason="executorch (the `mobile` extra) is not installed")
    from zoo.export import find_flatc

    if find_flatc() is None:
        pytest.skip("flatc (Debian flatbuffers-compiler) is not installed")
    model = zoo.create_model("aasist_l")
    model.load_state_dict(convert_checkpoint(reference_root / "aasist" / FILES["aasist_l"]), strict=True)
    report = zoo.export(model.eval(), (_sine()[:1],), tmp_path / "aasist_l.pte", format="pte", atol=1e-4)
    assert report.max_abs_diff < 1e-4 and (tmp_path / "aasist_l.pte").stat().st_size > 100_000


SPOOF_SPEECH = Path(__file__).resolve().parents[2] / "hub" / "zoo-models" / "aasist_l.spoof_speech"


def test_spoof_speech_weights_load_offline(offline_hub):
    """Registry tag aasist_l.spoof_speech -> sha256-checked load from the offline cache; weights equal the file."""
    offline_hub("aasist_l.spoof_speech")
    from safetensors.torch import load_file

    from zoo import hub

    entry = zoo.model_entry("aasist_l")
    assert entry.default_tag == "asvspoof2019" and "aasist_l.spoof_speech" in zoo.list_pretrained("aasist_l*")
    source = entry.pretrained["spoof_speech"]
    assert source.repo_id == "zoo-models/aasist_l.spoof_speech" and source.dataset == "spoof_speech"
    assert source.sha256 == hub.sha256_file(SPOOF_SPEECH / "model.safetensors")

    model = zoo.create_model("aasist_l", pretrained="aasist_l.spoof_speech")
    assert not model.training and model.zoo_config == {"architecture": "aasist_l", "args": {}}
    sd, ref = model.state_dict(), load_file(str(SPOOF_SPEECH / "model.safetensors"))
    assert set(ref) == set(sd)
    for k, v in ref.items():
        assert torch.equal(v, sd[k]), k
    x = torch.cat([_sine(), torch.randn(2, 64600, generator=torch.Generator().manual_seed(0)) * 0.1])
    with torch.no_grad():
        hidden, logits = model(x)
    assert hidden.shape == (4, 160) and logits.shape == (4, 2)
    assert torch.isfinite(hidden).all() and torch.isfinite(logits).all()
    assert logits[:, 1].std() > 0  # scores depend on the input
