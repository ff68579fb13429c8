"""VideoNSA: the released attention layer against the fixture made by running the authors' module (lmms-eval and
ms-swift copies), the Triton kernels against their PyTorch oracles (interpreter), the clean mode, and the full VLM
on a tiny random Qwen2.5-VL config (needs the ``videonsa`` extra)."""
from __future__ import annotations

import pytest
import torch

from zoo.models.videonsa import (
    VideoNSAAttention,
    VideoNSADecoderLayer,
    compressed_attention,
    mean_pool_blocks,
    mrope_cos_sin,
    released_topk,
    selected_attention,
    vision_token_mask,
)

FIX = "videonsa"
CFG = dict(block_counts=4, window_size=64, backend="reference")  # Config A of the fixture


@pytest.fixture(scope="module")
def fx(reference_root):
    from safetensors import safe_open

    d = reference_root / FIX
    if not d.is_dir():
        pytest.skip(f"{d} missing")
    io = safe_open(str(d / "videonsa_h448_io.safetensors"), "pt")
    sd = safe_open(str(d / "videonsa_h448_state_dict.safetensors"), "pt")
    return io, {k: sd.get_tensor(k) for k in sd.keys()}


def _inputs(io, bsz, x="attn.x"):
    pid = io.get_tensor("position_ids")[:, :bsz]
    cos, sin = mrope_cos_sin(io.get_tensor("cos")[:, :bsz], io.get_tensor("sin")[:, :bsz], [2, 3, 3])
    return io.get_tensor(x)[:bsz], (cos, sin), pid


def _attn(sd, **kw):
    m = VideoNSAAttention(448, 28, 4, 16, **{**CFG, "early_exit": False, **kw}).eval()
    m.load_state_dict({k[len("self_attn."):]: v for k, v in sd.items() if k.startswith("self_attn.")}, strict=True)
    return m


def _layer(sd, **kw):
    m = VideoNSADecoderLayer(448, 28, 4, 1184, 16, 1e-6, **{**CFG, "early_exit": False, **kw}).eval()
    m.load_state_dict(sd, strict=True)
    return m


def _close(ours, ref, tol=1e-5):
    err = (ours.float() - ref.float()).abs().max().item()
    assert err < tol, err
    return err


def test_token_typing(fx):
    io, _ = fx
    pid = io.get_tensor("position_ids")
    assert torch.equal(vision_token_mask(pid, 2, 640), io.get_tensor("is_vision").bool())
    assert not vision_token_mask(pid[0], 2, 640).any() and not vision_token_mask(None, 2, 640).any()


def test_released_attention_lmms_eval_batch2(fx):
    """Every recorded tensor of the evaluation copy (b2 row 0 equals b1 bit for bit in the fixture)."""
    io, sd = fx
    m = _attn(sd)
    m.record_parts = True
    x, pe, pid = _inputs(io, 2)
    with torch.no_grad():
        out = m(x, pe, pid)
    p = m.last_parts
    assert torch.equal(p["block_indices"], io.get_tensor("b2.attn.block_indices"))
    _close(out, io.get_tensor("b2.attn.output"))
    _close(p["nsa_out"].transpose(1, 2), io.get_tensor("b2.attn.nsa_out"))
    _close(p["dense_out"].transpose(1, 2), io.get_tensor("b2.attn.dense_out"))
    for c, name in enumerate(("g_cmp", "g_slc", "g_swa")):
        _close(p["gates"][..., c], io.get_tensor(f"b2.attn.{name}")[:, :, :28])
    one = lambda t: t[:1]  # noqa: E731
    checks = {  # ours (row 0, (B, H, L, D) -> (B, L, H, D)) vs b1 tensors
        "b1.attn.nsa_q": one(p["nsa_q"]).transpose(1, 2),
        "b1.attn.nsa_k": one(p["nsa_k"]).transpose(1, 2), "b1.attn.nsa_v": one(p["nsa_v"]).transpose(1, 2),
        "b1.attn.k_cmp": one(p["k_cmp"]).transpose(1, 2), "b1.attn.v_cmp": one(p["v_cmp"]).transpose(1, 2),
        "b1.attn.o_cmp": one(p["o_cmp"]).transpose(1, 2), "b1.attn.lse_cmp": one(p["lse_cmp"]),
        "b1.attn.o_slc": one(p["o_slc"]).transpose(1, 2), "b1.attn.o_swa": one(p["o_swa"]).transpose(1, 2),
        "b1.attn.nsa_out64": one(p["nsa_out64"]).transpose(1, 2),
    }
    for key, ours in checks.items():
        _close(ours, io.get_tensor(key))
    with torch.no_grad():
        logits = m.gate_logits(x[:1])
        q, k, v = m.project(x[:1], pe[0][:1], pe[1][:1])
    _close(logits, io.get_tensor("b1.attn.gate_logits"), 2e-5)  # logits up to |11|
    _close(q, io.get_tensor("b1.attn.q_rope"))
    _close(k, io.get_tensor("b1.attn.k_rope"))
    _close(v, io.get_tensor("b1.attn.v"))
    vis = p["is_vision"][:1, None, :, None]
    _close((q * ~vis).transpose(1, 2), io.get_tensor("b1.attn.dense_q"))
    pre = (p["nsa_out"] + p["dense_out"])[:1].transpose(1, 2).reshape(1, 640, 448)
    _close(pre, io.get_tensor("b1.attn.pre_o_proj"))


def test_released_attention_ms_swift(fx):
    """The training copy: its top-k reads other (head, token) query vectors; ~40 % of the indices differ."""
    io, sd = fx
    m = _attn(sd, selection="ms-swift")
    m.record_parts = True
    x, pe, pid = _inputs(io, 1)
    with torch.no_grad():
        out = m(x, pe, pid)
    bi = m.last_parts["block_indices"]
    assert torch.equal(bi, io.get_tensor("b1.attn.swift.block_indices"))
    assert (bi != io.get_tensor("b1.attn.block_indices")).float().mean() > 0.3
    _close(out, io.get_tensor("b1.attn.swift.output"))
    _close(m.last_parts["nsa_out"].transpose(1, 2), io.get_tensor("b1.attn.swift.nsa_out"))


def test_decoder_layer(fx):
    io, sd = fx
    m = _layer(sd)
    x, pe, pid = _inputs(io, 1, "layer.x")
    with torch.no_grad():
        out = m(x, pe, pid)
    _close(out, io.get_tensor("b1.layer.output"))


@pytest.mark.slow
@pytest.mark.parametrize("selection", ["lmms-eval", "ms-swift"])
def test_decoder_layer_batch2(fx, selection):
    io, sd = fx
    m = _layer(sd, selection=selection)
    x, pe, pid = _inputs(io, 2, "layer.x")
    with torch.no_grad():
        out = m(x, pe, pid)
    sw = ".swift" if selection == "ms-swift" else ""
    _close(out, io.get_tensor(f"b2.layer{sw}.output"))
    am = _attn(sd, selection=selection)
    x, pe, pid = _inputs(io, 2)
    with torch.no_grad():
        _close(am(x, pe, pid), io.get_tensor(f"b2.attn{sw}.output"))


def test_early_exits_and_errors(fx):
    io, sd = fx
    m = _attn(sd, early_exit=True)
    x, pe, pid = _inputs(io, 1)
    text_pid = pid[:, :, :130].clone()
    text_pid[:] = torch.arange(130)  # all text -> pure dense causal
    with torch.no_grad():
        o = m(x[:, :130], (pe[0][:, :130], pe[1][:, :130]), text_pid)
        q, k, v = m.project(x[:, :130], pe[0][:, :130], pe[1][:, :130])
        ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(7, 1),
                                                               v.repeat_interleave(7, 1), is_causal=True)
    _close(o, m.o_proj(ref.transpose(1, 2).reshape(1, 130, -1)))
    with pytest.raises(ValueError, match="mode"):
        VideoNSAAttention(448, 28, 4, mode="x")
    with pytest.raises(ValueError, match="padded_heads"):
        VideoNSAAttention(448, 28, 4, padded_heads=32)


def test_clean_mode_routes_vision_to_nsa(fx):
    """Clean routing: vision rows = zoo NSA (no head padding, Qwen pairing), text rows = dense causal."""
    from zoo.kernels.nsa import nsa_reference

    io, sd = fx
    m = _attn(sd, mode="clean")
    x, pe, pid = _inputs(io, 1)
    n = 160
    x, pe, pid = x[:, :n], (pe[0][:, :n], pe[1][:, :n]), pid[:, :, :n]
    with torch.no_grad():
        o = m(x, pe, pid)
        q, k, v = m.project(x, *pe)
        gates = m.gate_logits(x).sigmoid().permute(0, 2, 1, 3)
        o_nsa = nsa_reference(q, k, v, gates, causal=True, config="videonsa", sel_count=4, window=64)
        o_den = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(7, 1),
                                                                 v.repeat_interleave(7, 1), is_causal=True)
        vis = vision_token_mask(pid, 1, n)[:, None, :, None]
        ref = m.o_proj(torch.where(vis, o_nsa, o_den).transpose(1, 2).reshape(1, n, -1))
    _close(o, ref, 1e-4)


def test_triton_kernels_match_torch():
    """Top-k (both read layouts, exact ties, two candidate chunks) and selection under the interpreter, on a few
    tokens (the interpreter runs ~0.3 s per program)."""
    from zoo.models._videonsa_triton import selected_attention_triton, topk_triton

    g = torch.Generator().manual_seed(0)
    b, p, hk, n, d, bs = 1, 16, 1, 300, 16, 16
    q = torch.randn(b, p, n, d, generator=g)
    q[:, :, 280:285] = 0  # text-like rows: every earlier block ties
    k, v = torch.randn(b, hk, n, d, generator=g), torch.randn(b, hk, n, d, generator=g)
    kc, vc = mean_pool_blocks(k, bs), mean_pool_blocks(v, bs)
    _, lse = compressed_attention(q, kc, vc, bs, "reference")
    lr = lse.contiguous().view(b, n, p)
    rng = (280, 287)  # tokens of block 17: two candidate chunks of 16 blocks
    for qr in (q.transpose(1, 2), q.contiguous().view(b, n, p, d)):
        ref = released_topk(qr, kc, lr, 4, bs)
        out = topk_triton(qr, kc, lr, 4, bs, token_range=rng)
        assert torch.equal(out[:, rng[0]:rng[1]], ref[:, rng[0]:rng[1]])
    o_ref = selected_attention(q, k, v, ref, bs)
    o = selected_attention_triton(q, k, v, ref, bs, token_range=(0, 4))
    _close(o[:, :, :4], o_ref[:, :, :4])
    o = selected_attention_triton(q, k, v, ref, bs, token_range=rng)
    _close(o[:, :, rng[0]:rng[1]], o_ref[:, :, rng[0]:rng[1]])


@pytest.mark.gpu
def test_gpu_triton_backend_bf16(fx):
    """On CUDA: the Triton path in bf16 against the fp32 fixture (bf16 tolerance); indices may flip near ties."""
    io, sd = fx
    m = _attn(sd, backend="triton").cuda().to(torch.bfloat16)
    m.record_parts = True
    x, (cos, sin), pid = _inputs(io, 2)
    with torch.no_grad():
        out = m(x.cuda().bfloat16(), (cos.cuda().bfloat16(), sin.cuda().bfloat16()), pid.cuda())
    ref = io.get_tensor("b2.attn.output")
    err = (out.float().cpu() - ref).abs()
    assert err.mean() < 0.01 and err.max() < 0.3, (err.mean(), err.max())  # bf16; near-tie index flips move rows
    same = (m.last_parts["block_indices"].cpu() == io.get_tensor("b2.attn.block_indices")).float().mean().item()
    assert same > 0.9, same
    m32 = _attn(sd, backend="triton").cuda()
    m32.record_parts = True
    with torch.no_grad():
        out32 = m32(x.cuda(), (cos.cuda(), sin.cuda()), pid.cuda())
    assert (out32.cpu() - ref).abs().max() < 1e-3  # fp32 (IEEE dots in our kernels; tf32 nowhere)
    idx_ok = (m32.last_parts["block_indices"].cpu() == io.get_tensor("b2.attn.block_indices")).all(-1)
    assert idx_ok.float().mean() > 0.99


# ---------------------------------------------------------------------------------------------------- full VLM (tiny)
@pytest.fixture(scope="module")
def tiny_vlm():
    pytest.importorskip("transformers")
    from zoo.models._videonsa_hf import TINY_CONFIG, build_videonsa

    torch.manual_seed(0)
    return build_videonsa(TINY_CONFIG, block_counts=2, window_size=64, backend="reference")


def _video_batch(t=4, h=8, w=8):
    g = torch.Generator().manual_seed(1)
    pv = torch.randn(t * h * w, 3 * 2 * 14 * 14, generator=g)
    n = t * h * w // 4
    ids = torch.tensor([[1, 2, 3, 502] + [501] * n + [503, 5, 6, 7]])
    mm = (ids == 501).long() * 2
    return dict(input_ids=ids, pixel_values_videos=pv, video_grid_thw=torch.tensor([[t, h, w]]),
                mm_token_type_ids=mm, second_per_grid_ts=torch.tensor([1.0]))


def test_tiny_vlm_prefill_nsa_decode_dense(tiny_vlm):
    """Prefill types the video tokens as vision and runs the mixed NSA layer; decoding steps are dense over the
    cache (the released behaviour)."""
    import zoo.models.videonsa as V

    layers = tiny_vlm.nsa_layers()
    assert all(isinstance(a, V.VideoNSAAttention) for a in layers) and len(layers) == 2
    calls = {"nsa": 0, "dense_cache": 0}
    orig = V.released_nsa

    def spy(*a, **k):
        calls["nsa"] += 1
        return orig(*a, **k)

    orig_dense = V.VideoNSAAttention._dense

    def spy_dense(self, q, k, v, mask, causal=True):
        if k.shape[2] != q.shape[2]:
            calls["dense_cache"] += 1
        return orig_dense(self, q, k, v, mask, causal)

    V.released_nsa, V.VideoNSAAttention._dense = spy, spy_dense
    layers[0].record_parts = True
    try:
        with torch.no_grad():
            out = tiny_vlm.generate(**_video_batch(), max_new_tokens=3, do_sample=False)
    finally:
        V.released_nsa, V.VideoNSAAttention._dense = orig, orig_dense
        layers[0].record_parts = False
    assert out.shape == (1, 72 + 3)
    assert calls["nsa"] == 2 and calls["dense_cache"] == 2 * 2
    vis = layers[0].last_parts["is_vision"][0]
    # 62 of 64 video tokens typed vision: the first one and (t, h, w) = (2, 2, 2) sit on the t = h = w diagonal
    assert vis[4:68].sum() == 62 and not vis[:4].any() and not vis[68:].any()
    assert not vis[4] and not vis[4 + 16 + 2 * 4 + 2]


def test_tiny_vlm_loads_released_shards_strictly(tiny_vlm, tmp_path):
    """A released-layout checkpoint (legacy key names ``model.layers.*`` / ``visual.*``, sharded, with the gate
    MLPs) loads strictly and reproduces the logits; a missing gate tensor raises."""
    import json

    from safetensors.torch import save_file

    from zoo.models._videonsa_hf import load_released

    sd = tiny_vlm.state_dict()
    legacy = {}
    for k, v in sd.items():
        k2 = k.replace("model.language_model.", "model.").replace("model.visual.", "visual.")
        legacy[k2] = v.clone().contiguous()
    assert any("g_proj_1" in k for k in legacy)
    keys = sorted(legacy)
    half = len(keys) // 2
    shards = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for name, ks in shards.items():
        save_file({k: legacy[k] for k in ks}, str(tmp_path / name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {k: n for n, ks in shards.items() for k in ks}}))
    (tmp_path / "config.json").write_text(tiny_vlm.config.to_json_string())
    m = load_released(tmp_path, dtype=torch.float32, block_counts=2, window_size=64, backend="reference")
    batch = _video_batch()
    with torch.no_grad():
        torch.testing.assert_close(m(**batch).logits, tiny_vlm(**batch).logits, rtol=1e-5, atol=1e-5)
    bad = {k: v for k, v in legacy.items() if k in shards["model-00002-of-00002.safetensors"]}
    bad.pop(next(k for k in bad if "g_proj" in k or "self_attn" in k))
    save_file(bad, str(tmp_path / "model-00002-of-00002.safetensors"))
    with pytest.raises(RuntimeError, match="missing"):
        load_released(tmp_path, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------- video input, demo
def test_sample_plan_follows_the_eval_wrapper():
    from zoo.videonsa_cli import sample_plan, smart_resize

    idx, (h, w) = sample_plan(300, 30.0, 480, 640, fps=2.0, max_frames=32)  # 10 s at 30 fps -> 20 frames at 2 fps
    assert len(idx) == 20 and idx[0] == 0 and idx[-1] == 299 and h % 28 == 0 and w % 28 == 0
    idx, _ = sample_plan(3000, 30.0, 480, 640, fps=2.0, max_frames=32)  # 200 frames wanted -> capped to 32
    assert len(idx) == 32
    idx, _ = sample_plan(7, 30.0, 64, 64, fps=2.0)  # 0.5 frames wanted -> at least 4
    assert len(idx) == 4
    assert smart_resize(480, 640, max_pixels=256 * 28 * 28)[0] * smart_resize(480, 640, max_pixels=256 * 28 * 28)[
        1] <= 256 * 28 * 28


def test_decode_video_with_pyav(tmp_path):
    av = pytest.importorskip("av")
    import numpy as np

    from zoo.videonsa_cli import decode_video

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(30):
            img = np.full((64, 96, 3), i * 8, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    frames, sfps = decode_video(path, fps=2.0, max_frames=32, min_pixels=28 * 28 * 4)
    assert frames.shape[0] == 6 and frames.dtype == torch.uint8 and frames.shape[2] % 28 == 0
    assert abs(sfps - 2.0) < 1e-6
    assert frames[-1].float().mean() > frames[0].float().mean()  # sampled across the clip, in order
    import argparse

    from zoo.videonsa_cli import add_parser

    sub = argparse.ArgumentParser().add_subparsers(dest="command")
    add_parser(sub)
    ns = sub.choices["video-qa"].parse_args([str(path), "-q", "what?", "--plan", "--min-pixels", "3136"])
    assert ns.fn(ns) == 0


def test_needle_video_qa_batch_and_tiny_vlm():
    from zoo.datasets.video_qa import ANSWERS, load_frames, make_batch
    from zoo.models.videonsa import TinyVideoVLM

    frames = load_frames("test", "embedded")
    b = make_batch(frames, 6, 5, torch.Generator().manual_seed(0))
    assert b["frames"].shape == (6, 5, 1, 28, 28) and b["question"].shape == (6, 4)
    assert ((b["answer"] >= 0) & (b["answer"] < ANSWERS)).all()
    n_needles = (b["needle_pos"] >= 0).sum(1)
    count_q = b["qtype"] == 2
    assert ((b["answer"][count_q] - 4) <= n_needles[count_q]).all()
    for mode in ("dense", "clean"):
        torch.manual_seed(0)
        m = TinyVideoVLM(attention=mode, dim=64, depth=1, heads=4, kv_heads=2, mlp=64, vit_dim=32, vit_depth=1,
                         block_counts=2, window_size=64)
        out = m(b["frames"], b["question"])
        assert out.shape == (6, 16)
        out.sum().backward()
        assert m.layers[0].self_attn.q_proj.weight.grad is not None


def test_transformers_rope_index_reproduces_the_fixture_positions(tiny_vlm, fx):
    """transformers' get_rope_index (the VLM's) gives the fixture's M-RoPE ids, so the token typing of the full model
    matches the released one, including the int cast of second_per_grid_t = 0.5 (all temporal ids 0)."""
    io, _ = fx
    ids = io.get_tensor("input_ids")
    pid, delta = tiny_vlm.model.get_rope_index(ids, mm_token_type_ids=(ids == 151656).long() * 2,
                                               video_grid_thw=io.get_tensor("video_grid_thw"),
                                               second_per_grid_ts=io.get_tensor("second_per_grid_ts"))
    assert torch.equal(pid, io.get_tensor("position_ids"))
    assert torch.equal(delta.view(-1), io.get_tensor("rope_deltas").view(-1))
