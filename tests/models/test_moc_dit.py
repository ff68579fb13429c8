"""MoC (arXiv:2508.21058) on the Wan 2.1 DiT: layout, routing invariants, links, causality, drop-off / drop-in,
FLOPs counting, the MoCAttention module, the DiT, the zero-shot switch and the Wan converters."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.models.moc import (
    MoCAttention,
    MoCLayout,
    WanDiT,
    apply_rope,
    content_chunks,
    convert_checkpoint,
    convert_wan_diffusers,
    frame_layout,
    moc_dense_visibility,
    moc_flops,
    moc_route,
    rope_3d_tables,
)

TINY = dict(in_dim=3, out_dim=3, dim=32, ffn_dim=64, freq_dim=16, text_dim=8, num_heads=2, num_layers=2,
            patch_size=(1, 2, 2), text_len=6, moc_block_size=16)


def _qk(b=1, h=2, n=128, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, n, d, generator=g), torch.randn(b, h, n, d, generator=g)


def _chunk_of(layout: MoCLayout, n: int) -> torch.Tensor:
    return torch.bucketize(torch.arange(n), layout.chunk_cu[1:], right=True)


# ---------------------------------------------------------------------------------------------------- layout
def test_content_chunks_union_of_boundaries_and_shots():
    lay = content_chunks(100, frame_bounds=[20, 40, 60, 80], shot_bounds=[50], caption_bounds=[(90, 100, 1)])
    assert lay.chunk_cu.tolist() == [0, 20, 40, 50, 60, 80, 90, 100]  # variable length, the cut splits a frame
    assert lay.chunk_shot.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert lay.chunk_text.tolist() == [False] * 6 + [True]
    split = content_chunks(100, frame_bounds=[40], max_chunk=25)
    assert split.chunk_cu.tolist() == [0, 20, 40, 60, 80, 100]
    with pytest.raises(ValueError, match="frame_bounds"):
        content_chunks(10, frame_bounds=[11])
    with pytest.raises(ValueError, match="caption span"):
        content_chunks(10, caption_bounds=[(5, 5, 0)])


def test_frame_layout():
    lay = frame_layout(6, 16, shot_frames=[2, 4])
    assert lay.chunk_cu.tolist() == list(range(0, 97, 16))
    assert lay.chunk_shot.tolist() == [0, 0, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="shot_frames"):
        frame_layout(6, 16, shot_frames=[2, 3])


# ---------------------------------------------------------------------------------------------------- routing
def test_routing_invariants_links_and_topk_choice():
    n, bs = 128, 16
    lay = frame_layout(8, 16, shot_frames=[2, 3, 3])  # chunks = frames of 16 tokens, 3 shots
    q, k = _qk(n=n)
    r = moc_route(q, k, lay, top_k=2, block_size=bs)
    sel, routed = r.selected[0], r.routed[0]  # (H, nqb, C)
    shot = lay.chunk_shot
    for qb in range(n // bs):
        own = qb  # block = frame
        assert sel[:, qb, own].all()
        assert sel[:, qb, shot == shot[own]].all()  # intra-shot link
        cand = (shot != shot[own])
        assert (routed[:, qb] <= cand).all()  # links never use the budget
        assert (routed[:, qb].sum(-1) == 2).all()
        # top-k = the two best candidates by mean query . mean key
        qbar = q[0, :, qb * bs:(qb + 1) * bs].mean(1)
        kbar = torch.stack([k[0, :, a:b].mean(1) for a, b in zip(lay.chunk_cu[:-1], lay.chunk_cu[1:])], 1)
        s = torch.einsum("hd,hcd->hc", qbar, kbar).masked_fill(~cand, -math.inf)
        best = s.topk(2, -1).indices
        assert routed[:, qb].gather(-1, best).all()
    # visibility = exactly the tokens of the selected chunks (block = chunk here)
    vis = moc_dense_visibility(r, n)[0]
    ch = _chunk_of(lay, n)
    expect = sel[:, ch // 1][:, :, ch] if False else sel[:, torch.arange(n) // bs][:, :, ch]
    assert torch.equal(vis, expect)


def test_no_shot_links_only_own_chunk():
    lay = frame_layout(8, 16, shot_frames=[4, 4])
    q, k = _qk()
    r = moc_route(q, k, lay, top_k=1, block_size=16, shot_links=False)
    assert (r.selected[0].sum(-1) == 2).all()  # own frame + 1 routed


def test_causal_routing_is_a_dag():
    lay = frame_layout(8, 16)
    q, k = _qk()
    r = moc_route(q, k, lay, top_k=3, block_size=16, causal=True, shot_links=False)
    for qb in range(8):
        idx = r.routed[0, :, qb].nonzero()[:, 1]
        assert (idx < qb).all()  # only earlier chunks
        assert (r.routed[0, :, qb].sum(-1) == min(3, qb)).all()
    # with causal routing and top_k >= C, each frame sees exactly itself and all earlier frames (block-causal)
    r = moc_route(q, k, lay, top_k=8, block_size=16, causal=True, shot_links=False)
    vis = moc_dense_visibility(r, 128)[0, 0]
    f = torch.arange(128) // 16
    assert torch.equal(vis, f[None, :] <= f[:, None])


def test_text_links_every_query_sees_all_text():
    # MMDiT-style stream: global caption (0:8), video frames 8:72, a local caption of shot 1 at 72:80
    lay = content_chunks(80, frame_bounds=list(range(8, 72, 16)), shot_bounds=[8, 40],
                         caption_bounds=[(0, 8, -1), (72, 80, 1)])
    q, k = _qk(n=80)
    r = moc_route(q, k, lay, top_k=1, block_size=8)
    vis = moc_dense_visibility(r, 80)[0]
    text = torch.zeros(80, dtype=torch.bool)
    text[:8] = text[72:] = True
    assert vis[:, :, text].all()
    assert not r.routed[0][..., lay.chunk_text].any()  # text never routed (always linked)


def test_topk_all_equals_dense_attention():
    lay = frame_layout(4, 16)
    att = MoCAttention(16, 2, top_k=4, block_size=16, backend="reference")
    x = torch.randn(2, 64, 16)
    y = att(x, layout=lay)
    att.set_mode("dense")
    torch.testing.assert_close(y, att(x, layout=lay), atol=1e-5, rtol=1e-5)
    assert att.stats()["sparsity"] == pytest.approx(0.0)


def test_moc_attention_matches_masked_reference_and_stats():
    torch.manual_seed(0)
    lay = frame_layout(8, 16, shot_frames=[4, 4])
    att = MoCAttention(32, 2, top_k=1, block_size=16, causal=True, backend="reference")
    x = torch.randn(1, 128, 32)
    y = att(x, layout=lay)
    r = att.last_route
    b, n = 1, 128
    q = att.norm_q(att.q(x)).view(b, n, 2, 16).transpose(1, 2)
    k = att.norm_k(att.k(x)).view(b, n, 2, 16).transpose(1, 2)
    v = att.v(x).view(b, n, 2, 16).transpose(1, 2)
    vis = moc_dense_visibility(r, n)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=vis)
    torch.testing.assert_close(y, att.o(ref.transpose(1, 2).reshape(b, n, 32)), atol=1e-5, rtol=1e-5)
    st = att.stats()
    assert st["sparsity"] == pytest.approx(1 - vis.float().mean().item())
    assert st["flops_attn"] == pytest.approx(4 * 16 * vis.sum().item())
    assert st["flops_dense"] == pytest.approx(4 * 16 * 2 * n * n)


def test_drop_off_and_drop_in():
    lay = frame_layout(16, 16)
    q, k = _qk(n=256)
    g = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(20):
        r = moc_route(q, k, lay, top_k=3, block_size=16, drop_off=1.0, generator=g)
        counts.add(int(r.routed[0, 0, 5].sum()))
    assert counts <= {0, 1, 2, 3} and min(counts) < 3  # floor(p*k) chunks dropped, p ~ U(0, 1)
    r = moc_route(q, k, lay, top_k=1, block_size=16, causal=True, shot_links=False, drop_in=30.0, generator=g)
    n_routed = r.routed[0].sum(-1)
    assert (n_routed[:, 10] > 1).all()  # extra random chunks
    assert all((r.routed[0, :, qb].nonzero()[:, 1] < qb).all() for qb in range(16))  # drop-in respects causality
    with pytest.raises(ValueError, match="drop_off"):
        moc_route(q, k, lay, top_k=1, drop_off=2.0)


def test_route_errors():
    q, k = _qk()
    with pytest.raises(ValueError, match="chunk_cu"):
        moc_route(q, k, frame_layout(4, 16), top_k=1)
    with pytest.raises(ValueError, match="top_k"):
        moc_route(q, k, frame_layout(8, 16), top_k=-1)
    with pytest.raises(TypeError, match="MoCLayout"):
        moc_route(q, k, torch.arange(3), top_k=1)
    att = MoCAttention(16, 2)
    with pytest.raises(ValueError, match="layout"):
        att(torch.randn(1, 16, 16))
    with pytest.raises(ValueError, match="mode"):
        att.set_mode("sparse")


def test_flops_formula():
    f = moc_flops(180_000, 128, 36, 5, 1024)  # the paper's worked example: dense 1.66e13
    assert f["dense"] == pytest.approx(1.66e13, rel=0.01)
    assert f["moc"] == pytest.approx(180_000 * 128 * (1 + 2 * 36 + 4 * 5 * 1024))
    # with the intra-shot link counted (8 shots of 22.5K tokens) the paper's ~85 % sparsity regime
    g = moc_flops(180_000, 128, 36, 5, 1024, linked_tokens=22_500)
    assert 0.8 < 1 - g["moc"] / g["dense"] < 0.9
    # Eq. 6: the saving grows linearly with L at fixed chunking
    assert moc_flops(360_000, 128, 36, 5, 1024)["ratio"] == pytest.approx(2 * f["ratio"], rel=1e-3)


# ---------------------------------------------------------------------------------------------------- RoPE
def test_rope_split_and_relative():
    cos, sin = rope_3d_tables(128, (3, 4, 5))
    assert cos.shape == (60, 64)
    # Wan: 22 complex pairs for time, 21 for height, 21 for width; time angles constant over (h, w)
    ang = torch.atan2(sin, cos).view(3, 4, 5, 64)
    assert torch.allclose(ang[:, 0, 0, :22], ang[:, 3, 4, :22])
    assert torch.allclose(ang[0, :, 0, 22:43], ang[2, :, 4, 22:43])
    q, k = torch.randn(1, 1, 60, 128), torch.randn(1, 1, 60, 128)
    torch.testing.assert_close(apply_rope(q, cos, sin).norm(dim=-1), q.norm(dim=-1))
    cos1, sin1 = rope_3d_tables(128, (1, 1, 8))
    a = torch.randn(128).expand(1, 1, 8, 128)
    ra = apply_rope(a, cos1, sin1)[0, 0]
    assert torch.allclose(ra[1] @ ra[3], ra[4] @ ra[6], atol=1e-4)  # depends on the offset only


# ---------------------------------------------------------------------------------------------------- DiT
def _inputs(b=2, f=4, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 3, f, s, s, generator=g), torch.rand(b, generator=g) * 1000,
            torch.randn(b, 6, 8, generator=g))


def test_dit_forward_and_zero_shot_switch():
    torch.manual_seed(0)
    m = zoo.create_model("moc_dit_small", **TINY)
    for p in m.head.parameters():
        torch.nn.init.normal_(p, std=0.1)  # the zero-initialised head would hide differences
    x, t, c = _inputs()
    shots = [0, 0, 1, 1]
    y_dense = m(x, t, c, shots=shots)
    assert y_dense.shape == x.shape
    m.set_attention("moc", top_k=4, backend="reference")  # top_k >= chunks: MoC == dense
    torch.testing.assert_close(m(x, t, c, shots=shots), y_dense, atol=1e-4, rtol=1e-4)
    m.set_attention("moc", top_k=1, causal=True)  # sparse: differs, but is a valid MoC forward
    y = m(x, t, c, shots=shots)
    assert not torch.allclose(y, y_dense, atol=1e-4)
    assert 0 < m.moc_stats()["sparsity"] < 1
    # the same weights load strictly into a model built with attention="moc" (load-time switch)
    m2 = zoo.create_model("moc_dit_small", **{**TINY, "attention": "moc", "moc_top_k": 1, "moc_causal": True,
                                              "moc_backend": "reference"})
    m2.load_state_dict(m.state_dict(), strict=True)
    torch.testing.assert_close(m2(x, t, c, shots=shots), y)
    m.set_attention("dense")
    torch.testing.assert_close(m(x, t, c, shots=shots), y_dense)
    with pytest.raises(ValueError, match="MoC option"):
        m.set_attention("moc", top_q=3)


def test_dit_local_prompts_and_errors():
    m = zoo.create_model("moc_dit_small", **TINY)
    for p in m.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, t, c = _inputs()
    ts = torch.tensor([[-1, -1, 0, 0, 1, 1]] * 2)
    y = m(x, t, c, shots=[0, 0, 1, 1], text_shot=ts)
    c2 = c.clone()
    c2[:, 4:] += 1.0  # change only shot 1's caption
    y2 = m(x, t, c2, shots=[0, 0, 1, 1], text_shot=ts)
    # frames of shot 0 do not see shot 1's caption in cross-attention (self-attention mixes after the first block)
    m1 = zoo.create_model("moc_dit_small", **{**TINY, "num_layers": 1})
    for p in m1.head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    z, z2 = m1(x, t, c, shots=[0, 0, 1, 1], text_shot=ts), m1(x, t, c2, shots=[0, 0, 1, 1], text_shot=ts)
    assert not torch.allclose(y, y2)
    assert not torch.allclose(z[:, :, 2:], z2[:, :, 2:])
    with pytest.raises(ValueError, match="x must be"):
        m(torch.randn(1, 4, 4, 8, 8), t[:1], c[:1])
    with pytest.raises(ValueError, match="multiples"):
        m(torch.randn(1, 3, 4, 7, 8), t[:1], c[:1])
    with pytest.raises(ValueError, match="shots"):
        m.set_attention("moc")
        m(x, t, c, shots=[1, 0, 0, 0])


def test_wan_1_3b_parameter_count():
    with torch.device("meta"):
        m = zoo.create_model("wan21_t2v_1_3b")
    assert sum(p.numel() for p in m.parameters()) == 1_418_996_800


# diffusers WanTransformer3DModel names for one block and the globals, written out independently of the converter.
def _to_diffusers(key: str) -> str:
    glob = {"patch_embedding.weight": "patch_embedding.weight", "patch_embedding.bias": "patch_embedding.bias",
            "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
            "text_embedding.0.bias": "condition_embedder.text_embedder.linear_1.bias",
            "text_embedding.2.weight": "condition_embedder.text_embedder.linear_2.weight",
            "text_embedding.2.bias": "condition_embedder.text_embedder.linear_2.bias",
            "time_embedding.0.weight": "condition_embedder.time_embedder.linear_1.weight",
            "time_embedding.0.bias": "condition_embedder.time_embedder.linear_1.bias",
            "time_embedding.2.weight": "condition_embedder.time_embedder.linear_2.weight",
            "time_embedding.2.bias": "condition_embedder.time_embedder.linear_2.bias",
            "time_projection.1.weight": "condition_embedder.time_proj.weight",
            "time_projection.1.bias": "condition_embedder.time_proj.bias",
            "head.head.weight": "proj_out.weight", "head.head.bias": "proj_out.bias",
            "head.modulation": "scale_shift_table"}
    if key in glob:
        return glob[key]
    pre, i, rest = key.split(".", 2)
    block = {"modulation": "scale_shift_table", "norm3.weight": "norm2.weight", "norm3.bias": "norm2.bias",
             "ffn.0.weight": "ffn.net.0.proj.weight", "ffn.0.bias": "ffn.net.0.proj.bias",
             "ffn.2.weight": "ffn.net.2.weight", "ffn.2.bias": "ffn.net.2.bias"}
    if rest in block:
        return f"blocks.{i}.{block[rest]}"
    attn, name = rest.split(".", 1)
    a = {"self_attn": "attn1", "cross_attn": "attn2"}[attn]
    sub, p = name.split(".")
    sub = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0", "norm_q": "norm_q", "norm_k": "norm_k"}[sub]
    return f"blocks.{i}.{a}.{sub}.{p}"


def test_wan_converter_diffusers_and_original(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = WanDiT(**{k: v for k, v in TINY.items()})
    for p in src.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sd = src.state_dict()
    diff = {_to_diffusers(k): v.clone() for k, v in sd.items()}
    assert "blocks.0.attn1.to_out.0.weight" in diff and "blocks.1.norm2.bias" in diff
    dst = WanDiT(**TINY)
    dst.load_state_dict(convert_wan_diffusers(diff), strict=True)
    x, t, c = _inputs()
    torch.testing.assert_close(dst(x, t, c), src(x, t, c))
    # original layout passes through; files load through convert_checkpoint
    assert convert_wan_diffusers(sd).keys() == sd.keys()
    save_file(diff, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    dst2 = WanDiT(**TINY)
    dst2.load_state_dict(convert_checkpoint(str(tmp_path)), strict=True)
    torch.testing.assert_close(dst2(x, t, c), src(x, t, c))
    with pytest.raises(ValueError, match="image-conditioned"):
        convert_wan_diffusers({"condition_embedder.image_embedder.norm1.weight": torch.zeros(1)})


def test_flow_matching_loss_and_sampler():
    from zoo.tasks.video_gen import flow_matching_loss, sample_euler, shift_sigmas

    torch.manual_seed(0)
    m = zoo.create_model("moc_dit_small", **{**TINY, "attention": "moc", "moc_backend": "reference"})
    x, t, c = _inputs()
    loss = flow_matching_loss(m, x, c, shots=[0, 0, 1, 1])
    loss.backward()
    assert torch.isfinite(loss) and m.blocks[0].self_attn.q.weight.grad is not None
    s = shift_sigmas(4, 3.0)
    assert s[0] == 1 and s[-1] == 0 and (s[1:] < s[:-1]).all()
    out = sample_euler(m, c, tuple(x.shape), steps=2, guidance=2.0, shots=[0, 0, 1, 1])
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.gpu
def test_gpu_triton_route_matches_masked_sdpa_and_dit_trains():
    """On CUDA: the route's lists through the Triton block-sparse kernels (fwd + bwd, bf16) match SDPA with the
    dense mask; the small DiT runs a bf16 training step in MoC mode. (The same check passed under
    TRITON_INTERPRET=1 on CPU: fwd 4e-7, grads <= 6e-6 in fp32.)"""
    dev = "cuda"
    torch.manual_seed(0)
    lay = frame_layout(16, 64, shot_frames=[4, 4, 8])
    q, k, v = (torch.randn(2, 4, 1024, 64, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    r = moc_route(q, k, lay, top_k=3, block_size=64, causal=True, drop_off=0.5, drop_in=1.0)
    from zoo.kernels.attention import attention

    o = attention(q, k, v, r.mask, backend="triton")
    o.float().square().sum().backward()
    g = [x.grad.float().clone() for x in (q, k, v)]
    for x in (q, k, v):
        x.grad = None
    o2 = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=moc_dense_visibility(r, 1024))
    o2.square().sum().backward()
    assert (o.float() - o2).abs().max() < 3e-2
    for a, x in zip(g, (q, k, v)):
        assert (a - x.grad.float()).abs().max() / x.grad.float().abs().max() < 3e-2
    m = zoo.create_model("moc_dit_small", attention="moc", moc_causal=True).to(dev)
    from zoo.tasks.video_gen import flow_matching_loss

    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = flow_matching_loss(m, torch.randn(2, 3, 16, 32, 32, device=dev), torch.randn(2, 32, 32, device=dev),
                                  shots=torch.arange(16) // 4)
    loss.backward()
    assert torch.isfinite(loss) and 0.3 < m.moc_stats()["sparsity"] < 0.7


@pytest.mark.parametrize("seed", range(6))
def test_list_width_bounds_the_lists_on_random_layouts(seed):
    """Random variable chunks / shots / captions / block sizes: the host-sized lists never cut a visited block, and
    the block lists equal the blocks touched by the selected chunks."""
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(100, 300, (1,), generator=g))
    frames = sorted(set(torch.randint(1, n, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist()))
    shots = frames[:: int(torch.randint(1, 4, (1,), generator=g))]
    caps = [(0, 5, -1)] if seed % 2 else []
    lay = content_chunks(n, frame_bounds=frames, shot_bounds=shots, caption_bounds=caps)
    bs = [8, 16, 32][seed % 3]
    q, k = _qk(n=n, seed=seed)
    r = moc_route(q, k, lay, top_k=2, block_size=bs, causal=bool(seed % 2), drop_in=3.0, generator=g)
    width = r.mask.block_indices.shape[-1]
    assert int(r.mask.block_counts.max()) <= width
    ch = _chunk_of(lay, n)
    nb = -(-n // bs)
    touched = torch.zeros(lay.num_chunks, nb, dtype=torch.bool)
    touched[ch, torch.arange(n) // bs] = True
    expect = (r.selected.float() @ touched.float()) > 0  # (B, H, nqb, nkb)
    lists = torch.zeros(*expect.shape[:-1], nb + 1, dtype=torch.bool)
    valid = torch.arange(width) < r.mask.block_counts[..., None]
    lists.scatter_(-1, torch.where(valid, r.mask.block_indices.long(), nb), True)
    assert torch.equal(lists[..., :nb], expect)
    # own shot always fully visible (shots of the block's own visual chunks)
    for qb in range(nb):
        own = set(ch[qb * bs:(qb + 1) * bs].tolist())
        own_shots = {int(lay.chunk_shot[c]) for c in own if not lay.chunk_text[c]}
        for c in range(lay.num_chunks):
            if not lay.chunk_text[c] and int(lay.chunk_shot[c]) in own_shots or lay.chunk_text[c]:
                assert r.selected[0, :, qb, c].all()
