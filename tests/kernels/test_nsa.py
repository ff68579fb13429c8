"""NSA: execution on zoo.kernels.attention (Triton, interpreter on CPU) vs the dense-mask oracle."""
import importlib
import math

import pytest
import torch

from zoo.kernels import Causal, attention
from zoo.kernels.nsa import PRESETS, BlockCompressor, NSAAttention, NSAConfig, nsa, nsa_reference, nsa_select
from zoo.kernels.nsa.importance import block_prob_sums, block_prob_sums_supported

nsa_op = importlib.import_module("zoo.kernels.nsa.op")  # zoo.kernels.nsa.nsa is the function, not the module

SMALL = dict(cmp_len=8, cmp_stride=4, sel_len=16, sel_count=2, window=12, init_blocks=1, local_blocks=1)


def _inputs(h, hk, t, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, x, t, d, generator=g, requires_grad=True) for x in (h, hk, hk))
    gates = torch.rand(1, h, t, 3, generator=g, requires_grad=True)
    return q, k, v, gates


def test_selected_branch_all_blocks_equals_dense_causal():
    q, k, v, gates = _inputs(2, 1, 64)
    _, (_, o_slc, _) = nsa(q, k, v, gates, backend="triton", return_branches=True, **{**SMALL, "sel_count": 4})
    torch.testing.assert_close(o_slc, attention(q, k, v, Causal(), backend="reference"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("h,hk,t,causal,mlp", [(2, 2, 75, True, False), (7, 1, 40, True, True),
                                                (2, 1, 64, False, True)])
def test_nsa_matches_reference(h, hk, t, causal, mlp):
    q, k, v, gates = _inputs(h, hk, t)
    torch.manual_seed(0)
    comp = BlockCompressor(8, 16) if mlp else None
    params = [q, k, v, gates] + (list(comp.parameters()) if mlp else [])

    def run(fn, **kw):
        for p in params:
            p.grad = None
        o = fn(q, k, v, gates, causal=causal, compressor=comp, **SMALL, **kw)
        o.square().sum().backward()
        return o.detach(), [p.grad.clone() for p in params]

    o, g = run(nsa, backend="triton")
    r, gr = run(nsa_reference)
    torch.testing.assert_close(o, r, atol=2e-5, rtol=1e-4)
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def _select_inputs(b, hk, g, t, d, causal, dtype, cfg, seed, transposed=False):
    """q (B, Hq, T, D), kc (B, Hkv, Nc, D) in dtype and the compressed branch's lse (fp32, -inf where nothing is
    visible; non-causal: the first rows forced to -inf)."""
    gen = torch.Generator().manual_seed(seed)
    if transposed:  # (B, T, H, D) storage, as the module produces it
        q = torch.randn(b, t, hk * g, d, generator=gen).to(dtype).transpose(1, 2)
    else:
        q = torch.randn(b, hk * g, t, d, generator=gen).to(dtype)
    nc = (t - cfg.cmp_len) // cfg.cmp_stride + 1
    kc = torch.randn(b, hk, nc, d, generator=gen).to(dtype)
    scale = 1 / math.sqrt(d)
    s = torch.einsum("bhtd,bhjd->bhtj", q.float(), kc.float().repeat_interleave(g, 1)) * scale
    if causal:
        jend = torch.arange(nc) * cfg.cmp_stride + cfg.cmp_len - 1
        s = s.masked_fill(jend > torch.arange(t)[:, None], float("-inf"))
    lse = torch.logsumexp(s, -1)
    if not causal:
        lse[:, :, :3] = float("-inf")
    return q, kc, lse, scale


@pytest.mark.parametrize("b,hk,g,t,d,causal,dtype,sel_len,j_range", [
    (1, 2, 3, 75, 32, True, torch.float32, 16, 24),
    (2, 1, 1, 130, 64, False, torch.float16, 32, 2048),
    (1, 1, 16, 50, 128, True, torch.float16, 16, 5),
    (1, 1, 3, 100, 64, False, torch.float32, 64, 7),
    (1, 2, 1, 90, 32, True, torch.float16, 64, 2048),
])
def test_block_prob_sums_kernel_matches_torch(b, hk, g, t, d, causal, dtype, sel_len, j_range):
    cfg = NSAConfig(cmp_len=8, cmp_stride=4, sel_len=sel_len, sel_count=2, window=12, init_blocks=1, local_blocks=1)
    q, kc, lse, scale = _select_inputs(b, hk, g, t, d, causal, dtype, cfg, seed=t + g, transposed=g == 3)
    assert block_prob_sums_supported(q, sel_len)
    got = block_prob_sums(q, kc, lse, cmp_len=8, cmp_stride=4, sel_len=sel_len, causal=causal, scale=scale,
                          heads_kv=hk, j_range=j_range)
    want = nsa_op.block_prob_sums_torch(q, kc, lse, cfg, causal, scale, hk)
    assert got.shape == want.shape == (b, hk, math.ceil(t / sel_len), kc.shape[2]) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if causal:  # blocks no query of the block can see stay exactly 0
        t_last = torch.clamp(torch.arange(1, got.shape[2] + 1) * sel_len, max=t) - 1
        hidden = torch.arange(kc.shape[2]) * 4 + 7 > t_last[:, None]
        assert (got[:, :, hidden] == 0).all()


def test_select_and_nsa_same_with_and_without_kernel(monkeypatch):
    cfg = NSAConfig(cmp_len=8, cmp_stride=4, sel_len=16, sel_count=3, window=12, init_blocks=1, local_blocks=1)
    for causal in (True, False):
        q, kc, lse, scale = _select_inputs(1, 2, 2, 120, 32, causal, torch.float32, cfg, seed=3)
        a = nsa_select(q, kc, lse, cfg, causal, scale, 2, use_kernel=True)
        r = nsa_select(q, kc, lse, cfg, causal, scale, 2, use_kernel=False)
        assert torch.equal(a.block_counts, r.block_counts) and torch.equal(a.block_indices, r.block_indices)
    q, k, v, gates = _inputs(4, 2, 70, d=32, seed=1)
    o = nsa(q, k, v, gates, backend="triton", **{**SMALL, "sel_count": 3})
    monkeypatch.setattr(nsa_op, "block_prob_sums_supported", lambda *a: False)
    torch.testing.assert_close(nsa(q, k, v, gates, backend="triton", **{**SMALL, "sel_count": 3}), o,
                               atol=1e-6, rtol=1e-6)


def test_module_and_presets():
    assert PRESETS["paper"] == NSAConfig(32, 16, 64, 16, 512, 1, 2)
    assert PRESETS["videonsa"].sel_count == 32 and PRESETS["videonsa"].window == 256
    m = NSAAttention(32, 4, 2, backend="reference", **SMALL)
    x = torch.randn(1, 40, 32, requires_grad=True)
    m(x).sum().backward()
    assert m.k_compress.fc1.weight.grad is not None and m.g_proj.weight.grad is not None
    m2 = NSAAttention(32, 4, 1, config="videonsa", compress="mean", causal=False, backend="reference",
                      cmp_len=16, cmp_stride=16, sel_len=16, sel_count=2, window=8)
    assert m2(torch.randn(1, 40, 32)).shape == (1, 40, 32)


def test_errors():
    q, k, v, gates = _inputs(2, 1, 32)
    with pytest.raises(ValueError, match="gates"):
        nsa(q, k, v, gates[..., :2])
    with pytest.raises(ValueError, match="multiple"):
        nsa(q, torch.randn(1, 3, 32, 16), torch.randn(1, 3, 32, 16), gates)
    with pytest.raises(ValueError, match="config"):
        nsa(q, k, v, gates, config="nope")
    with pytest.raises(ValueError, match="cmp_stride"):
        nsa(q, k, v, gates, cmp_len=8, cmp_stride=16)
    with pytest.raises(ValueError, match="sel_count"):
        NSAConfig(sel_count=2, init_blocks=1, local_blocks=2)
    with pytest.raises(ValueError, match="sdpa"):
        nsa(q, k, v, gates, backend="sdpa")
    with pytest.raises(TypeError, match="compressor"):
        nsa(q, k, v, gates, compressor=3, **SMALL)
    with pytest.raises(ValueError, match="compress"):
        NSAAttention(32, 4, compress="max")
