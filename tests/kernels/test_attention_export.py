"""torch.export / torch.compile / torch.library behaviour of zoo.kernels.attention.

Exported graphs must hold only aten ops (ExecuTorch cannot carry the zoo:: custom ops); torch.compile must see the
Triton path as one zoo::attention node with working fake and autograd registrations.
"""
from __future__ import annotations

import pytest
import torch
from zoo.kernels import (
    BlockSparse,
    Causal,
    KeyPadding,
    MultiheadAttention,
    SlidingWindow,
    Varlen,
    attention,
)
from zoo.kernels.attention.masks import as_spec
from zoo.kernels.attention.op import triton_attention, triton_available

I32 = torch.int32
HAS_TRITON = triton_available(torch.device("cpu"))


def _masks():
    idx = torch.tensor([[0, 1], [1, 0]], dtype=I32).view(1, 1, 2, 2).expand(2, 2, 2, 2).contiguous()
    cnt = torch.tensor([1, 2], dtype=I32).view(1, 1, 2).expand(2, 2, 2).contiguous()  # 2 blocks of 16 = N 32
    return {
        "none": None,
        "causal": Causal(),
        "sliding_causal": Causal() & SlidingWindow(4, -1),
        "limited_context": SlidingWindow(4, 2) & KeyPadding(torch.tensor([10, 32], dtype=I32)),
        "blocksparse": BlockSparse(idx, cnt, 16),
    }


class Block(torch.nn.Module):
    def __init__(self, mask, backend="auto"):
        super().__init__()
        self.mask = mask
        self.mha = MultiheadAttention(64, 4, num_kv_heads=2, backend=backend)

    def forward(self, x):
        return self.mha(x, mask=self.mask)


def _ops(gm) -> set[str]:
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("backend", ["auto", "triton", "flex", "sdpa", "reference"])
@pytest.mark.parametrize("name", ["none", "causal", "sliding_causal", "limited_context", "blocksparse"])
def test_export_has_only_aten_ops(name, backend):
    torch.manual_seed(0)
    m = Block(_masks()[name], backend).eval()
    x = torch.randn(2, 32, 64)
    ep = torch.export.export(m, (x,))
    ops = _ops(ep.graph_module)
    assert not [o for o in ops if "zoo" in o], ops
    assert all(o.startswith(("aten.", "<built-in")) for o in ops), ops
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("strict", [False, True])
def test_export_varlen_function(strict):
    cu = torch.tensor([0, 5, 12], dtype=I32)

    class F(torch.nn.Module):
        def forward(self, q, k, v):
            return attention(q, k, v, Varlen(cu, cu) & Causal(), backend="triton")

    q = torch.randn(1, 2, 12, 16)
    ep = torch.export.export(F(), (q, q, q), strict=strict)
    assert not [o for o in _ops(ep.graph_module) if "zoo" in o]
    torch.testing.assert_close(ep.module()(q, q, q), attention(q, q, q, Varlen(cu, cu) & Causal(), backend="reference"))


def test_compile_sees_one_custom_op():
    """zoo::attention (forward) and zoo::attention_backward are single nodes for torch.compile (fake impls work)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def f(q, k, v, lens):
        return triton_attention(q, k, v, as_spec(Causal() & KeyPadding(lens)), 0.25)

    q = torch.randn(2, 2, 9, 16, requires_grad=True)
    k = torch.randn(2, 1, 9, 16, requires_grad=True)
    v = torch.randn(2, 1, 9, 16, requires_grad=True)
    lens = torch.tensor([4, 9], dtype=I32)
    out = torch.compile(f, backend=capture, fullgraph=True)(q, k, v, lens)
    assert any("zoo.attention" in o for g in graphs for o in _ops(g))
    want = attention(q, k, v, Causal() & KeyPadding(lens), scale=0.25, backend="reference")
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.skipif(not HAS_TRITON, reason="Triton kernels not importable or TRITON_INTERPRET unset")
def test_compile_public_api_triton_fullgraph():
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    def f(q, k, v):
        return attention(q, k, v, Causal() & SlidingWindow(3, -1), backend="triton")

    q = torch.randn(1, 2, 8, 16)
    out = torch.compile(f, backend=capture, fullgraph=True)(q, q, q)
    assert any("zoo.attention" in o for g in graphs for o in _ops(g))
    torch.testing.assert_close(out, attention(q, q, q, Causal() & SlidingWindow(3, -1), backend="reference"),
                               atol=1e-5, rtol=1e-5)


def test_opcheck_registrations():
    q = torch.randn(1, 2, 6, 16, requires_grad=True)
    k = torch.randn(1, 1, 7, 16, requires_grad=True)
    v = torch.randn(1, 1, 7, 8, requires_grad=True)
    lens = torch.tensor([5], dtype=I32)
    args = (q, k, v, 0.25, True, 2, -1, lens, None, None, 0, 0, None, None, 0, True)
    torch.library.opcheck(torch.ops.zoo.attention.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


@pytest.mark.parametrize("kernels", ["fallback", "triton"])
def test_custom_op_matches_reference(kernels, monkeypatch):
    """zoo::attention and its backward (incl. the lse gradient) agree with the reference; "fallback" forces the
    kernel-less path (reference math inside the op, analytic backward), which runs wherever Triton cannot."""
    from zoo.kernels.attention import op

    if kernels == "fallback":
        monkeypatch.setattr(op, "triton_available", lambda device: False)
    elif not HAS_TRITON:
        pytest.skip("Triton kernels not importable or TRITON_INTERPRET unset")
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 6, 16, generator=g, requires_grad=True)
    k = torch.randn(1, 2, 7, 16, generator=g, requires_grad=True)
    v = torch.randn(1, 2, 7, 8, generator=g, requires_grad=True)
    mask = Causal() & KeyPadding(torch.tensor([3], dtype=I32))
    w = torch.randn(1, 4, 6, generator=g)

    def run(fn):
        o, lse = fn()
        loss = o.square().sum() + (torch.where(torch.isfinite(lse), lse, 0) * w).sum()
        return (o, lse) + torch.autograd.grad(loss, (q, k, v))

    got = run(lambda: triton_attention(q, k, v, as_spec(mask), 0.25, return_lse=True))
    want = run(lambda: attention(q, k, v, mask, scale=0.25, backend="reference", return_lse=True))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)
