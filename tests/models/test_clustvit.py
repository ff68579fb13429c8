"""ClustViT parity with the authors' code (fixture A: tiny ViT, k 3, ip 2, 5 classes, made with mmseg 1.2.2), the
skip / empty-compact branches, slide inference, pos-embed resize, losses, parameter counts of T/S/B/L, the mmseg and
timm converters, the static export form and zoo.export."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import zoo
from zoo.models.clustvit import (
    PARAM_COUNTS,
    ClustViT,
    ClustViTSegmenter,
    clust_loss,
    clustvit_config_from_state_dict,
    convert_checkpoint,
    convert_timm_vit,
    get_clusters,
    load_timm_vit_,
    pseudo_cluster_labels,
    segmentation_ce,
)

CFG_A = dict(num_classes=5, img_size=128, embed_dims=192, num_layers=6, num_heads=3, num_clusters=3, ip=2,
             cluster_mlp_size=96, head_layers=2, head_heads=3)
CASES = ("skip_id0", "skip_idk", "no_kept")


def _max(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.fixture(scope="module")
def fixture_a(reference_root):
    d = reference_root / "clustvit"
    if not (d / "clustvit_a_io.safetensors").is_file():
        pytest.skip("ClustViT fixture missing")
    sd = load_file(str(d / "clustvit_a_state_dict.safetensors"))
    io = load_file(str(d / "clustvit_a_io.safetensors"))
    meta = json.loads((d / "clustvit_a.json").read_text())
    return sd, io, meta


def _model(sd, dtype=torch.float32, **kw) -> ClustViTSegmenter:
    m = ClustViTSegmenter(**{**CFG_A, **kw})
    m.load_state_dict(convert_checkpoint({"state_dict": sd, "meta": {}}), strict=True)
    return m.to(dtype).eval()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 5e-5)])
def test_main_parity(fixture_a, dtype, tol):
    sd, io, meta = fixture_a
    m = _model(sd, dtype)
    x = io["inputs"].to(dtype)
    with torch.no_grad():
        outs, clust, info = m.backbone(x, return_info=True)
        head = m.decode_head(outs[-1])
        seg = m(x)
    assert torch.equal(info.ids, io["main.cluster_ids"])
    assert info.kept_counts.tolist() == io["main.kept_counts"].tolist() == meta["cases"]["main"]["kept_counts"]
    assert not info.skipped and info.seq_len == meta["cases"]["main"]["merged_len"] == 42
    assert _max(clust, io["main.clust_logits"]) < 1e-4
    assert _max(outs[-1], io["main.backbone_out"]) < 1e-4
    assert _max(head, io["main.decode_head_logits"]) < tol
    assert _max(seg, io["main.seg_logits"]) < tol
    assert torch.equal(seg.argmax(1), io["main.pred_sem_seg"])


def test_merged_sequence_and_layers(fixture_a):
    """Our merged order is [CLS, k clusters, kept..., pad]; the official one [CLS, kept..., pad, k clusters]."""
    sd, io, _ = fixture_a
    m = _model(sd, torch.float64)
    x = io["inputs"].double()
    seen = {}
    hooks = [layer.register_forward_hook(lambda mod, a, out, i=i: seen.__setitem__(i, (a[0], a[1], out)))
             for i, layer in enumerate(m.backbone.layers)]
    with torch.no_grad():
        m.backbone(x)
    for h in hooks:
        h.remove()
    k, kept = 3, io["main.kept_counts"]
    valid = torch.arange(38)[None] < kept[:, None]  # (3, 38) kept slots, padding excluded

    def official(t):
        return torch.cat([t[:, :1], t[:, 1 + k:], t[:, 1:1 + k]], dim=1)

    seq, mask, _ = seen[2]
    assert mask.lengths.tolist() == (1 + k + kept).tolist()
    ref_mask = io["main.merged_padding_mask"]
    ours_mask = torch.cat([torch.zeros(3, 1, dtype=torch.bool), ~valid, torch.zeros(3, k, dtype=torch.bool)], 1)
    assert torch.equal(ours_mask, ref_mask)
    assert _max(official(seq), io["main.merged_sequence"]) < 1e-5
    assert _max(seen[1][2], io["main.pre_cluster_sequence"]) < 1e-5
    for i in range(6):
        out = seen[i][2]
        ref = io[f"main.layer{i}_out"]
        if i < 2:
            assert out.shape == (3, 65, 192) and _max(out, ref) < 1e-4
            continue
        out = official(out)
        keep = torch.cat([torch.ones(3, 1, dtype=torch.bool), valid, torch.ones(3, k, dtype=torch.bool)], 1)
        assert _max(out[keep], ref[keep]) < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_skip_and_empty_cases(fixture_a, case):
    sd, io, meta = fixture_a
    sd = dict(sd)
    sd["backbone.clusterer.net.2.bias"] = io[f"{case}.clusterer_bias"]
    m = _model(sd, torch.float64)
    with torch.no_grad():
        outs, clust, info = m.backbone(io["inputs"].double(), return_info=True)
        head = m.decode_head(outs[-1])
    assert torch.equal(info.ids, io[f"{case}.cluster_ids"])
    assert info.kept_counts.tolist() == meta["cases"][case]["kept_counts"]
    assert info.skipped == meta["cases"][case]["skipped"]
    if case == "no_kept":
        assert info.seq_len == 4
    assert _max(outs[-1], io[f"{case}.backbone_out"]) < 1e-5
    assert _max(head, io[f"{case}.decode_head_logits"]) < 2e-5  # fixture fp32 noise: 5.7e-6 on main
    # the static export form gives the same output, skip decision included
    m.reparameterize()
    with torch.no_grad():
        assert _max(m.backbone(io["inputs"].double())[0][-1], outs[-1]) < 1e-9


def test_slide_inference(fixture_a):
    sd, io, meta = fixture_a
    m = _model(sd, torch.float64)
    counts = []
    orig = m.backbone.forward

    def spy(x, return_info=False):
        o, c, info = orig(x, return_info=True)
        counts.append(info.kept_counts.tolist())
        return (o, c, info) if return_info else (o, c)

    m.backbone.forward = spy
    seg = m.slide_inference(io["slide.inputs"].double(), crop=128, stride=96)
    assert len(counts) == 4
    assert counts == [w["kept_counts"] for w in meta["cases"]["slide"]["per_window"]]
    assert _max(seg, io["slide.seg_logits"]) < 1e-5
    assert torch.equal(seg.argmax(1), io["slide.pred_sem_seg"])


def test_multi_output_and_resize(fixture_a):
    sd, io, _ = fixture_a
    bb = ClustViT(img_size=128, embed_dims=192, num_layers=6, num_heads=3, num_clusters=3, ip=2,
                  cluster_mlp_size=96, out_indices=[1, 3, 5]).double().eval()
    bb.load_state_dict({k[9:]: v for k, v in sd.items() if k.startswith("backbone.")}, strict=True)
    with torch.no_grad():
        outs, _ = bb(io["inputs"].double())
        for o, n in zip(outs, (1, 3, 5)):
            assert _max(o, io[f"backbone.out{n}"]) < 1e-5
        outs, clust = bb(io["resized.inputs"].double())
        for o, n in zip(outs, (1, 3, 5)):
            assert o.shape == (3, 192, 7, 8) and _max(o, io[f"resized.out{n}"]) < 1e-5
        assert _max(clust, io["resized.clust_logits_returned"][0]) < 1e-5


def test_losses(fixture_a):
    sd, io, meta = fixture_a
    gt = io["gt_sem_seg"]
    assert torch.equal(get_clusters(gt, 16), io["loss.get_clusters"])
    assert torch.equal(pseudo_cluster_labels(gt, 3), io["loss.pseudo_cluster_labels"])
    clust = io["main.clust_logits_returned"][0]
    w1 = clust_loss(clust, gt, 3).item()
    assert abs(w1 - meta["losses"]["clust_loss_w1"]) / w1 < 1e-5
    m = _model(sd)
    out = m.forward_train(io["inputs"])
    aux = m.auxiliary_losses(out, gt)["clust_ce"].item()
    assert abs(aux - meta["losses"]["aux_0_clust_ce_loss"]) / aux < 1e-5
    ce = segmentation_ce(out["seg_logits"], gt).item()
    assert abs(ce - meta["losses"]["decode.loss_ce"]) / ce < 1e-5
    pred = F_up(out["seg_logits"], gt).argmax(1)
    valid = gt != 255
    acc = 100 * (pred[valid] == gt[valid]).float().mean().item()
    assert abs(acc - meta["losses"]["decode.acc_seg"]) < 1e-3


def F_up(logits, gt):
    return torch.nn.functional.interpolate(logits, size=gt.shape[-2:], mode="bilinear", align_corners=False)


def test_param_counts_fixture(fixture_a):
    _, _, meta = fixture_a
    m = ClustViTSegmenter(**CFG_A)
    pc = meta["param_counts"]
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert n(m) == pc["segmentor"] and n(m.backbone) == pc["backbone"] and n(m.decode_head) == pc["decode_head"]
    assert n(m.backbone.clusterer) == pc["clusterer"] and n(m.backbone.expand_mlp) == pc["regenerator"]


@pytest.mark.parametrize("variant", ["t", "s", "b", "l"])
def test_param_counts_variants(variant):
    with torch.device("meta"):
        m = zoo.create_model(f"clustvit_{variant}")
    n = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    c = PARAM_COUNTS[variant]
    assert n(m.backbone.clusterer) == c["clusterer"]
    assert n(m.backbone.expand_mlp) == c["regenerator"]
    assert n(m.backbone) - c["clusterer"] - c["regenerator"] == c["vit"]
    assert n(m) == c["segmentor"]
    with torch.device("meta"):
        base = zoo.create_model(f"segmenter_vit_{variant}") if variant in ("t", "b") else None
    if base is not None:
        assert n(base.backbone) == c["vit"]


def test_converter_and_config(fixture_a):
    sd, _, meta = fixture_a
    ckpt = {"state_dict": {**sd, "data_preprocessor.mean": torch.zeros(3, 1, 1)}, "meta": {"epoch": 1}}
    conv = convert_checkpoint(ckpt)
    assert list(conv) == list(sd) and len(conv) == 118
    args = clustvit_config_from_state_dict(conv)
    assert args == dict(embed_dims=192, num_layers=6, num_heads=3, img_size=128, num_classes=5, head_layers=2,
                        cluster_mlp_size=96, num_clusters=3)
    m = ClustViTSegmenter(**args, ip=2)
    m.load_state_dict(conv, strict=True)
    with pytest.raises(ValueError, match="unexpected key"):
        convert_checkpoint({"state_dict": {**sd, "neck.x": torch.zeros(1)}})
    # a released-layout (ViT-T, 150 classes, 512) state dict round-trips strictly through the converter
    with torch.device("meta"):
        t = zoo.create_model("clustvit_t")
    shapes = {k: tuple(v.shape) for k, v in t.state_dict().items()}
    assert len(shapes) == 190
    assert shapes["backbone.pos_embed"] == (1, 1025, 192)
    assert shapes["backbone.clusterer.net.0.weight"] == (774, 192)
    assert [k for k in t.state_dict()][:3] == ["backbone.cls_token", "backbone.pos_embed",
                                               "backbone.patch_embed.projection.weight"]


def test_converter_file(tmp_path, fixture_a):
    sd, io, _ = fixture_a
    p = tmp_path / "iter_80000.pth"
    torch.save({"state_dict": sd, "meta": {}}, p)
    m = ClustViTSegmenter(**CFG_A)
    m.load_state_dict(convert_checkpoint(p), strict=True)
    m.eval()
    with torch.no_grad():
        assert _max(m(io["inputs"]), io["main.seg_logits"]) < 5e-5


def test_timm_init():
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)
    bb = ClustViT(img_size=128, embed_dims=192, num_layers=2, num_heads=3, ip=1)
    left = load_timm_vit_(bb, vit.state_dict())
    assert left == sorted(k for k in bb.state_dict() if k.startswith(("clusterer.", "expand_mlp.")))
    conv = convert_timm_vit(vit.state_dict(), (8, 8))
    assert torch.equal(bb.layers[1].attn.attn.in_proj_weight, vit.blocks[1].attn.qkv.weight)
    assert conv["pos_embed"].shape == (1, 65, 192)
    # with the clusterer off (ip=None) the backbone is timm's ViT: same tokens before the final norm
    plain = ClustViT(img_size=224, embed_dims=192, num_layers=2, num_heads=3, ip=None).eval()
    load_timm_vit_(plain, {k: v for k, v in vit.state_dict().items() if k != "patch_embed.proj.bias"})
    vit.patch_embed.proj.bias.data.zero_()
    vit.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ours = plain(x)[0][-1].flatten(2).transpose(1, 2)
        ref = vit.forward_features(x)[:, 1:]
    assert _max(ours, ref) < 1e-4


def test_static_equals_dynamic_random():
    torch.manual_seed(0)
    m = ClustViTSegmenter(**{**CFG_A, "num_layers": 4}).eval()
    with torch.no_grad():
        m.backbone.clusterer.net[2].weight.mul_(50)
    x = torch.randn(3, 3, 96, 112)
    with torch.no_grad():
        dyn = m(x)
        _, _, info = m.backbone(x, return_info=True)
        assert not info.skipped and len(set(info.kept_counts.tolist())) > 1
        m.reparameterize()
        stat = m(x)
    assert _max(dyn, stat) < 1e-5


def test_plain_baseline_and_train_step():
    m = ClustViTSegmenter(**{**CFG_A, "ip": None})
    assert not hasattr(m.backbone, "clusterer")
    x, gt = torch.randn(2, 3, 64, 64), torch.randint(0, 5, (2, 64, 64))
    out = m.forward_train(x)
    assert out["clust_logits"] is None and m.auxiliary_losses(out, gt) == {}
    c = ClustViTSegmenter(**{**CFG_A, "num_layers": 3}).train()
    out = c.forward_train(x)
    loss = segmentation_ce(out["seg_logits"], gt) + sum(c.auxiliary_losses(out, gt).values())
    loss.backward()
    assert c.backbone.clusterer.net[0].weight.grad.abs().sum() > 0
    assert c.backbone.layers[0].attn.attn.in_proj_weight.grad is not None


def test_bad_args():
    with pytest.raises(ValueError, match="ip"):
        ClustViT(img_size=64, embed_dims=64, num_layers=2, num_heads=2, ip=2)
    with pytest.raises(ValueError, match="x must be"):
        ClustViT(img_size=64, embed_dims=64, num_layers=2, num_heads=2, ip=1)(torch.randn(3, 64, 64))


def test_export_pt2(tmp_path, fixture_a):
    from zoo.export import export

    sd, io, _ = fixture_a
    m = _model(sd)
    rep = export(m, (io["inputs"],), tmp_path / "clustvit_a.pt2", format="pt2", atol=1e-4)
    assert rep.ok and rep.max_abs_diff < 1e-4


@pytest.mark.slow
def test_export_pte(tmp_path, fixture_a):
    from zoo.export import export, find_flatc

    pytest.importorskip("executorch")
    if find_flatc() is None:
        pytest.skip("flatc missing")
    sd, io, _ = fixture_a
    rep = export(_model(sd), (io["inputs"],), tmp_path / "clustvit_a.pte", format="pte", atol=1e-4)
    assert rep.ok


@pytest.mark.parametrize("case", ["main", "no_kept"])
def test_packed_layout_equals_padded(fixture_a, case):
    """token_layout='packed' (Varlen, no padded queries) gives the padded form's outputs."""
    sd, io, _ = fixture_a
    sd = dict(sd)
    if case != "main":
        sd["backbone.clusterer.net.2.bias"] = io[f"{case}.clusterer_bias"]
    padded = _model(sd, torch.float64)
    packed = _model(sd, torch.float64, token_layout="packed")
    x = io["inputs"].double()
    with torch.no_grad():
        a, b = padded(x), packed(x)
        _, _, info = packed.backbone(x, return_info=True)
    assert _max(a, b) < 1e-9
    assert info.kept_counts.tolist() == io[f"{case}.kept_counts"].tolist()
    ref = io["main.seg_logits"] if case == "main" else None
    if ref is not None:
        assert _max(b, ref) < 2e-5
    with pytest.raises(ValueError, match="token_layout"):
        ClustViTSegmenter(**CFG_A, token_layout="ragged")
