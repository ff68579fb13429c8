"""NSA: execution on zoo.kernels.attention (Triton, interpreter on CPU) vs the dense-mask oracle."""
import pytest
import torch

from zoo.kernels import Causal, attention
from zoo.kernels.nsa import PRESETS, BlockCompressor, NSAAttention, NSAConfig, nsa, nsa_reference

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
