"""MoC: routed block-sparse execution (Triton, interpreter on CPU) vs the dense-mask oracle; top_k = all = dense."""
import pytest
import torch

from zoo.kernels import Varlen, attention
from zoo.kernels.moc import MoCAttention, moc_attention, moc_reference

CU = torch.tensor([0, 13, 30, 31, 52, 70], dtype=torch.int32)  # unaligned chunks, one of length 1


def _qkv(h=2, hk=1, n=70, d=16, b=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, x, n, d, generator=g, requires_grad=True) for x in (h, hk, hk)]


def _grads(fn, ts):
    for t in ts:
        t.grad = None
    o = fn()
    (o * torch.linspace(-1, 1, o.shape[-1])).square().sum().backward()
    return o.detach(), [t.grad.clone() for t in ts]


def test_topk_all_equals_dense():
    q, k, v = _qkv(n=70)
    o = moc_attention(q, k, v, CU, top_k=5, block_size=16, backend="reference")
    torch.testing.assert_close(o, attention(q, k, v, backend="reference"), atol=1e-5, rtol=1e-5)
    seq = torch.tensor([0, 30, 70], dtype=torch.int32)
    o = moc_attention(q, k, v, CU, top_k=5, block_size=16, cu_seqlens=seq, backend="reference")
    torch.testing.assert_close(o, attention(q, k, v, Varlen(seq, seq), backend="reference"), atol=1e-5, rtol=1e-5)


def test_topk_all_causal_routing_equals_chunk_causal_dense():
    q, k, v = _qkv(n=64)
    cu = torch.tensor([0, 16, 32, 48, 64], dtype=torch.int32)  # block-aligned: the rule is exact chunk causality
    o = moc_attention(q, k, v, cu, top_k=4, block_size=16, causal_routing=True, backend="triton")
    c = torch.arange(64) // 16
    m = c[None, :] <= c[:, None]
    s = (q @ k.transpose(-1, -2)) / 4.0
    ref = torch.softmax(s.masked_fill(~m, float("-inf")), -1) @ v
    torch.testing.assert_close(o, ref, atol=1e-5, rtol=1e-5)


CASES = {
    "plain": dict(),
    "anchors": dict(anchors=torch.arange(70) % 9 == 0),
    "causal": dict(causal_routing=True),
    "varlen_anchors_causal": dict(cu_seqlens=torch.tensor([0, 30, 70], dtype=torch.int32),
                                  anchors=(torch.arange(70) < 4) | (torch.arange(70) >= 66), causal_routing=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_moc_matches_reference(case):
    kw = CASES[case]
    q, k, v = _qkv()
    o, g = _grads(lambda: moc_attention(q, k, v, CU, top_k=1, block_size=16, backend="triton", **kw), (q, k, v))
    r, gr = _grads(lambda: moc_reference(q, k, v, CU, top_k=1, block_size=16, **kw), (q, k, v))
    torch.testing.assert_close(o, r, atol=2e-5, rtol=1e-4)
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-4)
    dense = attention(q, k, v, backend="reference")
    assert (o - dense).abs().max() > 1e-3  # routing actually removed context


def test_batch_and_module():
    q, k, v = _qkv(h=4, hk=2, n=70, b=2)
    o = moc_attention(q, k, v, CU, top_k=2, block_size=16, backend="reference")
    torch.testing.assert_close(o, moc_reference(q, k, v, CU, top_k=2, block_size=16), atol=1e-5, rtol=1e-5)
    m = MoCAttention(32, 4, 2, top_k=1, block_size=16, backend="reference")
    assert m(torch.randn(2, 70, 32), CU).shape == (2, 70, 32)


def test_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="chunk_cu_seqlens"):
        moc_attention(q, k, v, torch.tensor([0, 10, 60], dtype=torch.int32), top_k=1)
    with pytest.raises(ValueError, match="strictly increasing"):
        moc_attention(q, k, v, torch.tensor([0, 10, 10, 70], dtype=torch.int32), top_k=1)
    with pytest.raises(ValueError, match="chunk boundary"):
        moc_attention(q, k, v, CU, top_k=1, cu_seqlens=torch.tensor([0, 20, 70], dtype=torch.int32))
    with pytest.raises(TypeError, match="anchors"):
        moc_attention(q, k, v, CU, top_k=1, anchors=torch.zeros(70))
    with pytest.raises(ValueError, match="every token"):
        moc_attention(q, k, v, CU, top_k=1, anchors=torch.ones(70, dtype=torch.bool))
    with pytest.raises(ValueError, match="top_k"):
        moc_attention(q, k, v, CU, top_k=-1)
    with pytest.raises(TypeError, match="chunk_cu_seqlens"):
        moc_attention(q, k, v, [0, 70], top_k=1)
    with pytest.raises(ValueError, match="multiple"):
        moc_attention(torch.randn(1, 3, 70, 16), torch.randn(1, 2, 70, 16), torch.randn(1, 2, 70, 16), CU, top_k=1)
