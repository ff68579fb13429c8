"""zoo.kernels.attention: every backend against the fp64 reference, outputs and gradients, on CPU.

Triton runs under TRITON_INTERPRET=1 (tests/conftest.py sets it when there is no GPU); fp32 and fp16 only (the
interpreter computes bf16 wrongly). FlexAttention has no CPU backward, so it is checked forward (and lse) only.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zoo.kernels import (
    BlockSparse,
    Causal,
    KeyPadding,
    MultiheadAttention,
    SlidingWindow,
    Varlen,
    attention,
)
from zoo.kernels.attention import dispatch
from zoo.kernels.attention.backends import Case, unsupported_reason
from zoo.kernels.attention.masks import as_spec
from zoo.kernels.attention.op import triton_available
from zoo.kernels.attention.reference import reference_attention

I32 = torch.int32
CPU = torch.device("cpu")
HAS_TRITON = triton_available(CPU)
GRAD_BACKENDS = ["reference", "sdpa"] + (["triton"] if HAS_TRITON else [])
ALL_BACKENDS = GRAD_BACKENDS + ["flex"]
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="Triton kernels not importable or TRITON_INTERPRET unset")


# ------------------------------------------------------------------------------------------------------ helpers
def make_qkv(b, hq, hkv, nq, nk, d, dv=None, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    dv = d if dv is None else dv
    q = torch.randn(b, hq, nq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, nk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, nk, dv, generator=g, dtype=torch.float64)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _lengths(b, nk, g):
    return torch.randint(0, nk + 1, (b,), generator=g).to(I32)


def _cu(total, nseq, g):
    cuts = torch.sort(torch.randint(0, total + 1, (nseq - 1,), generator=g)).values
    return torch.cat([torch.zeros(1, dtype=torch.long), cuts, torch.tensor([total])]).to(I32)


def _block_sparse(b, hb, nq, nk, bs, g, max_blocks=3):
    nqb, nkb = math.ceil(nq / bs), math.ceil(nk / bs)
    mb = min(max_blocks, nkb)
    idx = torch.stack([torch.randperm(nkb, generator=g)[:mb] for _ in range(b * hb * nqb)]).view(b, hb, nqb, mb)
    cnt = torch.randint(0, mb + 1, (b, hb, nqb), generator=g)
    return BlockSparse(idx.to(I32), cnt.to(I32), bs)


MASK_KINDS = ["none", "causal", "window", "causal_window", "padding", "padding_causal_window", "varlen",
              "varlen_causal", "varlen_window", "blocksparse", "blocksparse_causal", "blocksparse_padding",
              "blocksparse_varlen"]


def make_mask(kind, b, hq, hkv, nq, nk, seed=0, bs=16, window=(5, 2)):
    """Mask of a given kind for q (b, hq, nq) / k (b, hkv, nk); varlen kinds need b == 1."""
    g = torch.Generator().manual_seed(seed)
    parts = kind.split("_")
    m = None

    def add(x):
        nonlocal m
        m = x if m is None else (m & x)

    for p in parts:
        if p == "none":
            pass
        elif p == "causal":
            add(Causal())
        elif p == "window":
            add(SlidingWindow(*window))
        elif p == "padding":
            add(KeyPadding(_lengths(b, nk, g)))
        elif p == "varlen":
            nseq = 3
            add(Varlen(_cu(nq, nseq, g), _cu(nk, nseq, g)))
        elif p == "blocksparse":
            hb = hkv if seed % 2 else hq
            add(_block_sparse(b, hb, nq, nk, bs, g))
        else:  # pragma: no cover
            raise ValueError(kind)
    return m


def tol(dtype):
    return {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 4e-3}[dtype]


def check_against_reference(backend, q, k, v, mask, *, grad=True, lse=False, scale=None):
    """Run ``backend`` and the fp64 reference; compare o (and lse) and, with grad, dq/dk/dv."""
    dtype = q.dtype
    q64, k64, v64 = (t.detach().double().requires_grad_(grad) for t in (q, k, v))
    qb, kb, vb = (t.detach().clone().requires_grad_(grad) for t in (q, k, v))
    spec = as_spec(mask)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    ro, rl = reference_attention(q64, k64, v64, spec, sc, True)
    ctx = torch.enable_grad() if grad else torch.no_grad()
    with ctx:
        out = attention(qb, kb, vb, mask, backend=backend, return_lse=lse, scale=scale)
    o, l = out if lse else (out, None)
    assert o.dtype == dtype and o.shape == ro.shape
    assert not torch.isnan(o).any(), f"{backend}: NaN in output"
    t = tol(dtype)
    scale_o = max(1.0, ro.abs().max().item())
    torch.testing.assert_close(o.double(), ro.detach(), atol=t * scale_o, rtol=t * 10)
    if lse:
        assert l.shape == rl.shape
        fin = torch.isfinite(rl)
        assert torch.equal(torch.isfinite(l), fin), f"{backend}: lse -inf pattern differs"
        torch.testing.assert_close(l.double()[fin], rl.detach()[fin], atol=t * 10, rtol=t * 10)
    if not grad:
        return
    g = torch.Generator().manual_seed(123)
    do = torch.randn(ro.shape, generator=g, dtype=torch.float64)
    rg = torch.autograd.grad(ro, (q64, k64, v64), do)
    bg = torch.autograd.grad(o, (qb, kb, vb), do.to(dtype))
    for name, a, b in zip(("dq", "dk", "dv"), bg, rg):
        assert not torch.isnan(a).any(), f"{backend}: NaN in {name}"
        s = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a.double(), b, atol=t * 4 * s, rtol=t * 40, msg=lambda m, n=name: f"{backend} {n}: {m}")


def shapes_for(kind):
    return (1, 4, 2, 45, 53) if "varlen" in kind else (2, 4, 2, 37, 45)


# --------------------------------------------------------------------------------------------- backend x mask
@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_backend_matches_reference_with_grads(backend, kind):
    b, hq, hkv, nq, nk = shapes_for(kind)
    q, k, v = make_qkv(b, hq, hkv, nq, nk, 32, seed=1)
    mask = make_mask(kind, b, hq, hkv, nq, nk, seed=len(kind))
    if backend == "triton" and kind == "blocksparse_varlen":
        pytest.skip("the Triton kernels do not combine BlockSparse with Varlen (auto falls back)")
    check_against_reference(backend, q, k, v, mask)


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_flex_forward_matches_reference(kind):
    b, hq, hkv, nq, nk = shapes_for(kind)
    q, k, v = make_qkv(b, hq, hkv, nq, nk, 32, seed=2)
    mask = make_mask(kind, b, hq, hkv, nq, nk, seed=len(kind))
    check_against_reference("flex", q, k, v, mask, grad=False, lse=True)


@pytest.mark.parametrize("d", [32, 64, 96, 128])
@pytest.mark.parametrize("ratio", [1, 2, 8])
@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_gqa_and_head_dims(backend, ratio, d):
    hkv = 1
    q, k, v = make_qkv(1, hkv * ratio, hkv, 19, 27, d, seed=d + ratio)
    check_against_reference(backend, q, k, v, Causal() & SlidingWindow(9, -1))


@pytest.mark.parametrize("backend", ["sdpa", "flex"] + (["triton"] if HAS_TRITON else []))
def test_gqa_head_dims_other(backend):
    """Head dims 80 / 48 and a value dim that differs from the key dim."""
    for d, dv in ((80, 80), (48, 32)):
        q, k, v = make_qkv(1, 4, 2, 20, 24, d, dv, seed=d)
        check_against_reference(backend, q, k, v, SlidingWindow(3, 4), grad=backend != "flex")


@pytest.mark.parametrize("backend", ["sdpa"] + (["triton"] if HAS_TRITON else []))
@pytest.mark.parametrize("kind", ["causal", "padding_causal_window", "varlen_causal", "blocksparse"])
def test_fp16(backend, kind):
    b, hq, hkv, nq, nk = shapes_for(kind)
    q, k, v = make_qkv(b, hq, hkv, nq, nk, 64, dtype=torch.float16, seed=5)
    check_against_reference(backend, q, k, v, make_mask(kind, b, hq, hkv, nq, nk, seed=3))


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_fp64(backend):
    q, k, v = make_qkv(2, 4, 2, 9, 11, 16, dtype=torch.float64)
    check_against_reference(backend, q, k, v, Causal() & KeyPadding(torch.tensor([4, 11], dtype=I32)))


# ----------------------------------------------------------------------------------------------- empty rows
def _empty_row_masks(b, nq, nk, hq):
    idx = torch.zeros(b, hq, math.ceil(nq / 16), 1, dtype=I32)
    cnt = torch.zeros(b, hq, math.ceil(nq / 16), dtype=I32)
    cnt[:, :, 0] = 1
    return {
        "padding_zero": KeyPadding(torch.tensor([0, 7], dtype=I32)),
        "causal_nq_gt_nk": Causal(),  # Nq > Nk: the first Nq - Nk rows see nothing (bottom-right alignment)
        "window_right_of_end": SlidingWindow(0, -1) & SlidingWindow(-1, 0) & KeyPadding(torch.tensor([3, 3], dtype=I32)),
        "blocksparse_zero_count": BlockSparse(idx, cnt, 16),
    }


@pytest.mark.parametrize("name", ["padding_zero", "causal_nq_gt_nk", "window_right_of_end", "blocksparse_zero_count"])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_empty_rows_are_zero_with_zero_grad(backend, name):
    b, hq, hkv, nq, nk = 2, 2, 1, 33, 20
    mask = _empty_row_masks(b, nq, nk, hq)[name]
    q, k, v = make_qkv(b, hq, hkv, nq, nk, 32, seed=7)
    spec = as_spec(mask)
    empty = ~spec.dense(b, hq, hkv, nq, nk).expand(b, hq, nq, nk).any(-1)
    assert empty.any()
    grad = backend != "flex"
    check_against_reference(backend, q, k, v, mask, grad=grad, lse=backend != "sdpa")
    qb = q.clone().requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        o = attention(qb, k, v, mask, backend=backend)
    assert torch.all(o[empty] == 0)
    if grad:
        (o.square().sum()).backward()
        assert torch.isfinite(qb.grad).all() and torch.all(qb.grad[empty] == 0)


def test_all_rows_empty():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16)
    for backend in ALL_BACKENDS:
        o, lse = (attention(q, k, v, KeyPadding(torch.tensor([0], dtype=I32)), backend=backend, return_lse=True)
                  if backend != "sdpa" else (attention(q, k, v, KeyPadding(torch.tensor([0], dtype=I32)),
                                                       backend=backend), None))
        assert torch.all(o == 0), backend
        if lse is not None:
            assert torch.all(lse == float("-inf")), backend


# ---------------------------------------------------------------------------------------------------- lse
@pytest.mark.parametrize("backend", ["reference"] + (["triton"] if HAS_TRITON else []))
@pytest.mark.parametrize("kind", ["causal_window", "padding", "varlen_causal", "blocksparse_causal"])
def test_lse_and_its_gradient(backend, kind):
    b, hq, hkv, nq, nk = (1, 4, 2, 29, 35) if "varlen" in kind else (2, 2, 1, 21, 30)
    q, k, v = make_qkv(b, hq, hkv, nq, nk, 32, seed=11)
    mask = make_mask(kind, b, hq, hkv, nq, nk, seed=4)
    check_against_reference(backend, q, k, v, mask, lse=True)
    # gradient flowing through lse (how partial attentions are merged): compare with the fp64 reference
    q64, k64, v64 = (t.double().requires_grad_(True) for t in (q, k, v))
    qb, kb, vb = (t.clone().requires_grad_(True) for t in (q, k, v))
    g = torch.Generator().manual_seed(5)
    wo = torch.randn(q.shape[:3] + (v.shape[-1],), generator=g, dtype=torch.float64)
    wl = torch.randn(q.shape[:3], generator=g, dtype=torch.float64)

    def loss(o, lse):
        return (o.double() * wo).sum() + (torch.where(torch.isfinite(lse), lse.double(), 0) * wl).sum()

    ro, rl = reference_attention(q64, k64, v64, as_spec(mask), 1 / math.sqrt(32), True)
    rg = torch.autograd.grad(loss(ro, rl), (q64, k64, v64))
    o, lse = attention(qb, kb, vb, mask, backend=backend, return_lse=True)
    bg = torch.autograd.grad(loss(o, lse), (qb, kb, vb))
    for a, r in zip(bg, rg):
        torch.testing.assert_close(a.double(), r, atol=1e-4 * max(1.0, r.abs().max().item()), rtol=1e-3)


def test_scale_argument():
    q, k, v = make_qkv(1, 2, 2, 10, 10, 32)
    for backend in ALL_BACKENDS:
        check_against_reference(backend, q, k, v, Causal(), scale=0.3, grad=backend != "flex")
    a = attention(q, k, v, backend="reference")
    b = attention(q, k, v, backend="reference", scale=1 / math.sqrt(32))
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_non_contiguous_inputs(backend):
    """(B, N, H, D) projections viewed as (B, H, N, D) without a copy."""
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 10, 4, 32, generator=g).transpose(1, 2)
    k = torch.randn(2, 12, 2, 32, generator=g).transpose(1, 2)
    v = torch.randn(2, 12, 2, 32, generator=g).transpose(1, 2)
    assert not q.is_contiguous()
    check_against_reference(backend, q, k, v, Causal(), grad=backend != "flex")


# ------------------------------------------------------------------------------------------- input errors
def test_errors_shapes_and_types():
    q, k, v = make_qkv(2, 4, 2, 8, 9, 16)
    with pytest.raises(ValueError, match=r"q must be 4-D \(B, Hq, Nq, D\)"):
        attention(q[0], k, v)
    with pytest.raises(TypeError, match="k must be a torch.Tensor"):
        attention(q, k.numpy(), v)
    with pytest.raises(ValueError, match="q has Hq=4 heads, which must be a multiple of k's Hkv=3"):
        attention(q, k[:, :1].expand(2, 3, 9, 16), v[:, :1].expand(2, 3, 9, 16))
    with pytest.raises(ValueError, match="k must have batch 2"):
        attention(q, k[:1], v[:1])
    with pytest.raises(ValueError, match="k must have head dim 16"):
        attention(q, k[..., :8], v)
    with pytest.raises(ValueError, match=r"v must match k in \(B, Hkv, Nk\)"):
        attention(q, k, v[:, :, :5])
    with pytest.raises(TypeError, match="k has dtype torch.float16 but q has torch.float32"):
        attention(q, k.half(), v)
    with pytest.raises(TypeError, match="v must be float16, bfloat16, float32 or float64"):
        attention(q, k, v.long())
    with pytest.raises(ValueError, match="v is on meta but q is on cpu"):
        attention(q, k, v.to("meta"))
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        attention(q, k, v, backend="cudnn")
    with pytest.raises(TypeError, match="scale must be a Python float"):
        attention(q, k, v, scale=torch.tensor(0.1))
    with pytest.raises(ValueError, match="scale must be finite"):
        attention(q, k, v, scale=float("nan"))
    with pytest.raises(TypeError, match="return_lse must be a bool"):
        attention(q, k, v, return_lse=1)


def test_errors_backend_capabilities():
    q, k, v = make_qkv(1, 2, 2, 8, 8, 16)
    with pytest.raises(ValueError, match="backend='sdpa' cannot run this case: SDPA does not return the log-sum-exp"):
        attention(q, k, v, backend="sdpa", return_lse=True)
    qg = q.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="FlexAttention has no backward on CPU"):
        attention(qg, k, v, backend="flex")
    if HAS_TRITON:
        with pytest.raises(ValueError, match="float64"):
            attention(q.double(), k.double(), v.double(), backend="triton")
        with pytest.raises(ValueError, match="bfloat16 is computed wrongly by the Triton interpreter"):
            attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), backend="triton")
        big = make_qkv(1, 1, 1, 4, 4, 320)
        with pytest.raises(ValueError, match="head dims up to 256, got head dim of q/k = 320"):
            attention(*big, backend="triton")
        m = BlockSparse(torch.zeros(1, 2, 1, 1, dtype=I32), torch.ones(1, 2, 1, dtype=I32), 8)
        with pytest.raises(ValueError, match="power of two >= 16"):
            attention(q, k, v, m, backend="triton")
    else:
        with pytest.raises(ValueError, match="backend='triton' cannot run this case"):
            attention(q, k, v, backend="triton")


# ------------------------------------------------------------------------------------------------- dispatch
def _case(device="cpu", kind="none", dtype=torch.float16, d=64, lse=False, grad=False, exporting=False, n=1024,
          varlen=False, bs=0):
    return Case(device=torch.device(device), dtype=dtype, batch=2, heads_q=8, heads_kv=8, nq=n, nk=n, head_dim=d,
                head_dim_v=d, kind=kind, varlen=varlen, block_size=bs, return_lse=lse, needs_grad=grad,
                exporting=exporting)


def test_auto_dispatch_rules():
    assert dispatch.choose_backend(_case()) == "sdpa"
    assert dispatch.choose_backend(_case(kind="window", grad=True)) == "sdpa"
    assert dispatch.choose_backend(_case(lse=True)) == "reference"  # sdpa has no lse; flex none on CPU table
    assert dispatch.choose_backend(_case(device="cuda", kind="window", exporting=True)) == "sdpa"
    assert dispatch.choose_backend(_case(device="cuda", kind="none", exporting=True, lse=True)) == "reference"
    # CUDA without a GPU here: triton is unavailable, so masked cases fall back to flex, never to triton
    c = _case(device="cuda", kind="varlen", varlen=True)
    assert dispatch.choose_backend(c) in ("triton", "flex")
    assert unsupported_reason(dispatch.choose_backend(c), c) is None
    assert dispatch.case_key(_case(device="cuda", kind="causal", d=128, n=8192)) == (
        "cuda", "causal", "fp16", "d<=128", "medium")


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    device=st.sampled_from(["cpu", "cuda"]),
    kind=st.sampled_from(["none", "causal", "padding", "window", "varlen", "blocksparse"]),
    dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32, torch.float64]),
    d=st.sampled_from([16, 32, 64, 80, 128, 256, 512]),
    lse=st.booleans(), grad=st.booleans(), exporting=st.booleans(), bs=st.sampled_from([8, 64]),
)
def test_auto_never_picks_an_unsupported_backend(device, kind, dtype, d, lse, grad, exporting, bs):
    c = _case(device, kind, dtype, d, lse, grad, exporting, varlen=kind == "varlen", bs=bs if kind == "blocksparse" else 0)
    chosen = dispatch.choose_backend(c)
    assert unsupported_reason(chosen, c) is None
    if exporting:
        assert chosen in ("sdpa", "reference")


def test_auto_gives_flex_a_budget_of_shapes(monkeypatch):
    """Compiled Flex recompiles per shape: once the budget is spent, new shapes go to the next backend."""
    monkeypatch.setattr(dispatch, "unsupported_reason", lambda backend, case: None)  # as on a GPU
    dispatch.reset_flex_shape_budget()
    dispatch._choose.cache_clear()
    dispatch._choose_without_flex.cache_clear()
    try:
        cases = [_case(device="cuda", kind="window", grad=True, n=3000 + i)
                 for i in range(dispatch.FLEX_SHAPE_BUDGET + 3)]
        chosen = [dispatch.choose_backend(c) for c in cases]
        budget = dispatch.FLEX_SHAPE_BUDGET
        assert chosen == ["flex"] * budget + ["triton"] * 3
        assert dispatch.choose_backend(cases[0]) == "flex"  # a shape already compiled keeps its backend
        assert dispatch.choose_backend(_case(device="cuda", kind="blocksparse", n=5000, bs=64)) == "triton"
        # fp32 on CUDA never goes to our IEEE-dot kernels while SDPA can take the case
        for kind in ("none", "causal", "padding", "window", "varlen"):
            assert dispatch.choose_backend(_case(device="cuda", kind=kind, dtype=torch.float32, n=6000)) == "sdpa"
        # measured full-size rows: varlen at N32768 -> ours; sliding window there -> ours for inference only
        big = dict(device="cuda", n=32768, d=128, dtype=torch.bfloat16)
        assert dispatch.case_key(_case(kind="varlen", **big))[-1] == "large"
        assert dispatch.choose_backend(_case(kind="varlen", varlen=True, grad=True, **big)) == "triton"
        assert dispatch.choose_backend(_case(kind="window", grad=False, **big)) == "triton"
        dispatch.reset_flex_shape_budget()
        assert dispatch.choose_backend(_case(kind="window", grad=True, **big)) == "flex"
    finally:
        dispatch.reset_flex_shape_budget()
        dispatch._choose.cache_clear()
        dispatch._choose_without_flex.cache_clear()


def test_auto_runs_and_update_table(tmp_path):
    q, k, v = make_qkv(1, 2, 2, 12, 12, 16)
    check_against_reference("auto", q, k, v, Causal() & SlidingWindow(3, 0))
    check_against_reference("auto", q, k, v, Causal(), lse=True)
    saved = dispatch.table()
    try:
        dispatch.update_table({"cpu|window|*|*|*": ["reference"]})
        assert dispatch.choose_backend(_case(kind="window")) == "reference"
        dispatch.update_table(json.loads(json.dumps({"cpu|window|fp16|d<=64|small": "sdpa"})))
        assert dispatch.choose_backend(_case(kind="window", n=64)) == "sdpa"
        with pytest.raises(ValueError, match="5 parts"):
            dispatch.update_table({"cpu|window": ["sdpa"]})
    finally:
        dispatch._TABLE.clear()
        dispatch.update_table(saved)


# ------------------------------------------------------------------------------------- MultiheadAttention
def test_multihead_attention_module():
    torch.manual_seed(0)
    mha = MultiheadAttention(64, 8, num_kv_heads=2, backend="reference")
    x = torch.randn(2, 11, 64)
    y = mha(x, mask=Causal())
    assert y.shape == (2, 11, 64)
    q = mha.q_proj(x).view(2, 11, 8, 8).transpose(1, 2)
    k = mha.k_proj(x).view(2, 11, 2, 8).transpose(1, 2)
    v = mha.v_proj(x).view(2, 11, 2, 8).transpose(1, 2)
    want = mha.out_proj(reference_attention(q, k, v, as_spec(Causal()), 8**-0.5).transpose(1, 2).reshape(2, 11, 64))
    torch.testing.assert_close(y, want)
    mha.backend = "auto"
    torch.testing.assert_close(mha(x, mask=Causal()), want, atol=1e-5, rtol=1e-5)
    # cross-attention with separate key / value widths
    cross = MultiheadAttention(32, 4, kdim=24, vdim=40, qkv_bias=False, out_bias=False)
    assert cross.q_proj.bias is None and cross.out_proj.bias is None
    out = cross(torch.randn(2, 5, 32), context=(torch.randn(2, 7, 24), torch.randn(2, 7, 40)),
                mask=KeyPadding(torch.tensor([3, 7], dtype=I32)))
    assert out.shape == (2, 5, 32)
    out.sum().backward()
    assert cross.k_proj.weight.grad is not None
    with pytest.raises(ValueError, match="num_kv_heads=3 must divide num_heads=8"):
        MultiheadAttention(64, 8, num_kv_heads=3)
    with pytest.raises(ValueError, match="dim=60 must be a positive multiple of num_heads=8"):
        MultiheadAttention(60, 8)
    with pytest.raises(ValueError, match=r"x must have shape \(B, N, 64\)"):
        mha(torch.randn(2, 11, 32))
    with pytest.raises(ValueError, match="context must be"):
        cross(torch.randn(2, 5, 32), context=torch.randn(2, 7, 32))


# ------------------------------------------------------------------------------------ randomized sweeps
MASK_PARTS = st.fixed_dictionaries({
    "causal": st.booleans(),
    "window": st.one_of(st.none(), st.tuples(st.integers(-1, 12), st.integers(-1, 12))),
    "padding": st.booleans(),
    "varlen": st.booleans(),
    "blocksparse": st.booleans(),
})


def _draw_case(data, backends, max_n=48):
    backend = data.draw(st.sampled_from(backends), label="backend")
    parts = data.draw(MASK_PARTS, label="mask")
    ratio = data.draw(st.sampled_from([1, 2, 8]), label="gqa")
    hkv = 1 if ratio == 8 else data.draw(st.integers(1, 2), label="hkv")
    d = data.draw(st.sampled_from([16, 32, 64]), label="d")
    nq = data.draw(st.integers(1, max_n), label="nq")
    nk = data.draw(st.integers(1, max_n), label="nk")
    b = 1 if parts["varlen"] or ratio == 8 else data.draw(st.integers(1, 2), label="b")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    if backend == "triton" and parts["varlen"] and parts["blocksparse"]:
        parts["blocksparse"] = False
    if parts["varlen"]:
        parts["padding"] = False
    g = torch.Generator().manual_seed(seed)
    m = None
    pieces = []
    if parts["causal"]:
        pieces.append(Causal())
    if parts["window"] is not None:
        pieces.append(SlidingWindow(*parts["window"]))
    if parts["padding"]:
        pieces.append(KeyPadding(_lengths(b, nk, g)))
    if parts["varlen"]:
        nseq = int(torch.randint(1, 4, (1,), generator=g))
        pieces.append(Varlen(_cu(nq, nseq, g), _cu(nk, nseq, g)))
    if parts["blocksparse"]:
        bs = 16
        hb = hkv if seed % 2 else hkv * ratio
        pieces.append(_block_sparse(b, hb, nq, nk, bs, g))
    for p in pieces:
        m = p if m is None else (m & p)
    q, k, v = make_qkv(b, hkv * ratio, hkv, nq, nk, d, seed=seed)
    return backend, q, k, v, m


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_sweep_cheap_backends(data):
    backend, q, k, v, m = _draw_case(data, ["reference", "sdpa", "flex", "auto"])
    check_against_reference(backend, q, k, v, m, grad=backend != "flex", lse=backend in ("flex", "reference"))


@needs_triton
@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_sweep_triton(data):
    backend, q, k, v, m = _draw_case(data, ["triton"], max_n=32)
    if data.draw(st.booleans(), label="fp16"):
        q, k, v = q.half(), k.half(), v.half()
    check_against_reference(backend, q, k, v, m, lse=data.draw(st.booleans(), label="lse"))
