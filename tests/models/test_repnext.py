"""RepNeXt: parity with the authors' code (fixture), parameter counts, reparameterisation, timm API, export,
checkpoint conversion."""
from __future__ import annotations

import argparse
import copy

import pytest
import torch
import torch.nn as nn

import zoo
from zoo.models.repnext import RepNext, convert_checkpoint

safetensors_torch = pytest.importorskip("safetensors.torch")

TRAIN_PARAMS = {"repnext_m0": 2_716_480, "repnext_m1": 5_323_316, "repnext_m2": 7_049_082,
                "repnext_m3": 8_466_560, "repnext_m4": 14_080_480, "repnext_m5": 22_708_860}
FUSED_PARAMS = {"repnext_m0": 2_333_200, "repnext_m1": 4_829_560, "repnext_m2": 6_473_200,
                "repnext_m3": 7_818_920, "repnext_m4": 13_342_120, "repnext_m5": 21_737_560}
STATE_KEYS = {"repnext_m0": 671, "repnext_m1": 1022, "repnext_m2": 1022, "repnext_m3": 944, "repnext_m4": 1646,
              "repnext_m5": 2114}
FUSED_KEYS_M0 = 283
TOL = 1e-4


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics/affines so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def fixture_dir(reference_root):
    path = reference_root / "repnext"
    if not path.is_dir():
        pytest.skip(f"missing {path}")
    return path


@pytest.fixture(scope="module")
def io(fixture_dir):
    return safetensors_torch.load_file(str(fixture_dir / "repnext_m0_io.safetensors"))


@pytest.fixture(scope="module")
def m0(fixture_dir):
    sd = safetensors_torch.load_file(str(fixture_dir / "repnext_m0_state_dict.safetensors"))
    model = zoo.create_model("repnext_m0", distillation=True)
    model.load_state_dict(convert_checkpoint(sd), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def m0_outputs(m0, io):
    out = {}
    with torch.inference_mode():
        x = m0.stem(io["input"])
        out["feat_stem"] = x
        for i, stage in enumerate(m0.stages):
            x = stage(x)
            out[f"feat_stage{i}"] = x
        out["pooled"] = m0.forward_head(x, pre_logits=True)
        out["logits_head"] = m0.head.head(out["pooled"])
        out["logits_head_dist"] = m0.head.head_dist(out["pooled"])
        out["logits"] = m0(io["input"])
    return out


# ------------------------------------------------------------------------------------------------ fixture parity


@pytest.mark.parametrize("name", ["feat_stem", "feat_stage0", "feat_stage1", "feat_stage2", "feat_stage3", "pooled",
                                  "logits_head", "logits_head_dist", "logits"])
def test_fixture_parity(m0_outputs, io, name):
    got, want = m0_outputs[name], io[name]
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < TOL


def test_fixture_official_fuse(m0, io):
    fused = copy.deepcopy(m0).fuse(level="official")
    sd = fused.state_dict()
    assert len(sd) == FUSED_KEYS_M0
    assert n_params(fused) == FUSED_PARAMS["repnext_m0"]
    assert "head.weight" in sd and "stages.0.blocks.0.token_mixer.conv_s.weight" in sd
    assert "stages.0.blocks.0.norm.running_var" in sd and "stages.0.blocks.0.token_mixer.conv_l.1.bias" in sd
    with torch.inference_mode():
        assert (fused(io["input"]) - io["logits_fused"]).abs().max().item() < TOL
    # an official-fused state dict loads strictly into a model fused the same way
    other = zoo.create_model("repnext_m0").eval().fuse(level="official")
    other.load_state_dict(convert_checkpoint(sd), strict=True)


def test_fixture_full_fuse_and_timm_reparameterize(m0, io):
    from timm.utils import reparameterize_model

    full = copy.deepcopy(m0).fuse(level="full")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in full.modules())
    timm_fused = reparameterize_model(m0)  # calls fuse() on children: the "full" level
    assert timm_fused.state_dict().keys() == full.state_dict().keys()
    with torch.inference_mode():
        a, b = full(io["input"]), timm_fused(io["input"])
    assert (a - io["logits"]).abs().max().item() < TOL
    assert (b - io["logits"]).abs().max().item() < TOL
    # "full" after "official" reaches the same model; fusing again is a no-op
    again = copy.deepcopy(m0).fuse(level="official").fuse(level="full").fuse()
    assert again.state_dict().keys() == full.state_dict().keys()


# ------------------------------------------------------------------------------------------ parameter/key counts


@pytest.mark.parametrize("name", list(TRAIN_PARAMS))
def test_param_counts(name):
    with torch.device("meta"):
        model = zoo.create_model(name)
        assert n_params(model) == TRAIN_PARAMS[name]
        assert len(model.state_dict()) == STATE_KEYS[name]
        model.fuse(level="official")
        assert n_params(model) == FUSED_PARAMS[name]


def test_registry_entries():
    assert zoo.list_models("repnext*") == [f"repnext_m{i}" for i in range(6)]
    assert "repnext_m0.fmnist" in zoo.list_pretrained("repnext*")
    entry = zoo.model_entry("repnext_m0")
    assert entry.paper == "arXiv:2406.16004" and entry.license == "apache-2.0"
    assert entry.input_spec["shape"] == (3, 224, 224) and entry.input_spec["interpolation"] == "bicubic"
    assert entry.pretrained["fmnist"].overrides == {"num_classes": 10, "in_chans": 1}


# ------------------------------------------------------------------------------------ reparameterisation (M0/M1)


@pytest.mark.parametrize("name", ["repnext_m0", "repnext_m1"])
def test_full_fuse_parity_small_input(name):
    torch.manual_seed(0)
    model = randomize_bn(zoo.create_model(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        for level in ("official", "full"):
            fused = copy.deepcopy(model).fuse(level=level)
            assert (fused(x) - ref).abs().max().item() < TOL, level


def test_merge_large_kernel_only_where_exact():
    torch.manual_seed(0)
    model = randomize_bn(RepNext(embed_dim=(16, 32), depth=(2, 1), num_classes=5)).eval()
    blocks = [b for b in model.modules() if type(b).__name__ == "MetaNeXtBlock"]
    with torch.no_grad():
        blocks[0].token_mixer.conv_l[0].bias.zero_()  # exact case: 1x11 without bias
    x = torch.randn(2, 3, 64, 64)
    fused = copy.deepcopy(model).fuse(level="full", merge_large_kernel=True)
    merged = [b.token_mixer.conv_l for b in fused.modules() if type(b).__name__ == "MetaNeXtBlock"]
    assert isinstance(merged[0], nn.Conv2d) and merged[0].kernel_size == (11, 11)
    assert all(isinstance(c, nn.Sequential) for c in merged[1:])  # biased 1x11: not a single conv, left alone
    with torch.inference_mode():
        assert (fused(x) - model(x)).abs().max().item() < TOL


def test_fuse_level_validation():
    with pytest.raises(ValueError, match="level"):
        zoo.create_model("repnext_m0").fuse(level="more")


def test_export_fused():
    torch.manual_seed(0)
    model = randomize_bn(zoo.create_model("repnext_m0", num_classes=10)).eval().fuse()
    x = torch.randn(1, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    with torch.inference_mode():
        assert (ep.module()(x) - model(x)).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------------------------------- timm API


def test_timm_registration():
    import timm

    assert timm.create_model("repnext_m0").__class__ is RepNext
    assert type(timm.create_model("repvit_m1_0")).__module__ == "timm.models.repvit"
    assert set(f"repnext_m{i}" for i in range(6)) <= set(timm.list_models("repnext*"))


def test_features_only_and_intermediates():
    import timm

    x = torch.randn(1, 3, 64, 64)
    shapes = [(1, 40, 16, 16), (1, 80, 8, 8), (1, 160, 4, 4), (1, 320, 2, 2)]
    for feats_model in (zoo.create_model("repnext_m0", features_only=True),
                        timm.create_model("repnext_m0", features_only=True)):
        feats_model.eval()
        assert feats_model.feature_info.reduction() == [4, 8, 16, 32]
        assert feats_model.feature_info.module_name() == ["stages.0", "stages.1", "stages.2", "stages.3"]
        with torch.inference_mode():
            assert [tuple(f.shape) for f in feats_model(x)] == shapes
    model = zoo.create_model("repnext_m0").eval()
    with torch.inference_mode():
        final, inter = model.forward_intermediates(x)
        assert [tuple(t.shape) for t in inter] == shapes and torch.equal(final, inter[-1])
        only = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
        assert [tuple(t.shape) for t in only] == shapes[1:3]
        assert torch.equal(only[0], inter[1])
        last = model.forward_intermediates(x, indices=1, stop_early=True, intermediates_only=True)
        assert torch.equal(last[0], inter[-1])


def test_head_api_and_distillation():
    model = zoo.create_model("repnext_m0", distillation=True, drop_rate=0.1)
    assert model.pretrained_cfg["interpolation"] == "bicubic" and model.default_cfg is model.pretrained_cfg
    x = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(x)
    assert isinstance(out, tuple) and len(out) == 2 and out[0].shape == (2, 1000)
    model.eval()
    with torch.inference_mode():
        feats = model.forward_features(x)
        assert feats.shape == (2, 320, 2, 2)
        assert model.forward_head(feats, pre_logits=True).shape == (2, 320)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.get_classifier().head.linear.out_features == 7
    with torch.inference_mode():
        assert model(x).shape == (2, 7)
    model.reset_classifier(0)
    with torch.inference_mode():
        assert model(x).shape == (2, 320)


def test_in_chans_one():
    model = zoo.create_model("repnext_m0", in_chans=1, num_classes=10).eval()
    assert model.stem.stem[0].conv.in_channels == 1
    with torch.inference_mode():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="embed_dim"):
        RepNext(embed_dim=(40, 60), depth=(1, 1))
    with pytest.raises(ValueError, match="in_chans"):
        RepNext(in_chans=0, embed_dim=(8,), depth=(1,))


# ------------------------------------------------------------------------------------------------------ converter


def test_convert_release_checkpoint(tmp_path):
    model = zoo.create_model("repnext_m0", num_classes=4)
    sd = model.state_dict()
    ckpt = {"model": {f"module.{k}": v for k, v in sd.items()}, "epoch": 299, "args": argparse.Namespace(lr=1e-3),
            "model_ema": dict(sd)}
    path = tmp_path / "repnext_m0_distill_300e.pth"
    torch.save(ckpt, path)
    converted = convert_checkpoint(path)
    assert list(converted) == list(sd)
    fresh = zoo.create_model("repnext_m0", num_classes=4)
    fresh.load_state_dict(converted, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in sd.items())
    assert list(convert_checkpoint(path, use_ema=True)) == list(sd)


def test_convert_rejects_torchscript_and_foreign(tmp_path):
    path = tmp_path / "repnext_m0_distill_300e_fused.pt"
    torch.jit.save(torch.jit.trace(nn.Conv2d(1, 1, 1), torch.randn(1, 1, 2, 2)), str(path))
    with pytest.raises(ValueError, match="TorchScript"):
        convert_checkpoint(path)
    with pytest.raises(ValueError, match="RepNeXt"):
        convert_checkpoint({"model": {"fc.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match="no such file"):
        convert_checkpoint(tmp_path / "missing.pth")
