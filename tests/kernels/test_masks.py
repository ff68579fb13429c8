"""Mask value objects: semantics against a brute-force reading of the contract, composition, producers, validation."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from zoo.kernels import (
    BlockSparse,
    Causal,
    KeyPadding,
    MaskSpec,
    SlidingWindow,
    Varlen,
    attention,
)
from zoo.kernels.attention.masks import as_spec

I32 = torch.int32


def brute(spec: MaskSpec, b: int, hq: int, hkv: int, nq: int, nk: int) -> torch.Tensor:
    """(B, Hq, Nq, Nk) visibility by looping over every (b, h, i, j) and reading the contract literally."""
    out = torch.zeros(b, hq, nq, nk, dtype=torch.bool)
    if spec.cu_seqlens_q is not None:
        cq, ck = spec.cu_seqlens_q.tolist(), spec.cu_seqlens_k.tolist()
        seqs = [(cq[s], cq[s + 1], ck[s], ck[s + 1]) for s in range(len(cq) - 1)]
    else:
        seqs = None
    for bb in range(b):
        for h in range(hq):
            for gi in range(nq):
                for gj in range(nk):
                    if seqs is None:
                        i, j, lq, lk = gi, gj, nq, nk
                    else:
                        hit = [s for s in seqs if s[0] <= gi < s[1] and s[2] <= gj < s[3]]
                        if not hit:
                            continue
                        q0, q1, k0, k1 = hit[0]
                        i, j, lq, lk = gi - q0, gj - k0, q1 - q0, k1 - k0
                    off = lk - lq
                    ok = True
                    if spec.causal:
                        ok &= j <= i + off
                    if spec.window_left != -1:
                        ok &= j >= i + off - spec.window_left
                    if spec.window_right != -1:
                        ok &= j <= i + off + spec.window_right
                    if spec.seqlens_k is not None:
                        ok &= gj < int(spec.seqlens_k[bb])
                    if spec.block_indices is not None:
                        bs = spec.block_size
                        hb = spec.block_indices.shape[1]
                        hh = h if hb == hq else h // (hq // hkv)
                        n = int(spec.block_counts[bb, hh, gi // bs])
                        ok &= (gj // bs) in spec.block_indices[bb, hh, gi // bs, :n].tolist()
                    out[bb, h, gi, gj] = ok
    return out


def _block_sparse(b, hb, nq, nk, bs, maxb, seed=0):
    g = torch.Generator().manual_seed(seed)
    nqb, nkb = math.ceil(nq / bs), math.ceil(nk / bs)
    idx = torch.stack([torch.randperm(nkb, generator=g)[:maxb] for _ in range(b * hb * nqb)]).view(b, hb, nqb, -1)
    cnt = torch.randint(0, idx.shape[-1] + 1, (b, hb, nqb), generator=g)
    return BlockSparse(idx.to(I32), cnt.to(I32), bs)


CASES = {
    "causal": (lambda: Causal(), 2, 7, 11),
    "causal_nq_gt_nk": (lambda: Causal(), 1, 11, 6),
    "window": (lambda: SlidingWindow(3, 1), 2, 9, 12),
    "window_left_only": (lambda: SlidingWindow(2, -1), 1, 9, 9),
    "window_right_only": (lambda: SlidingWindow(-1, 2), 1, 9, 7),
    "causal_window": (lambda: Causal() & SlidingWindow(4, 3), 1, 10, 10),
    "padding": (lambda: KeyPadding(torch.tensor([0, 5], dtype=I32)), 2, 6, 8),
    "padding_causal_window": (lambda: KeyPadding(torch.tensor([3, 8], dtype=I32)) & Causal() & SlidingWindow(2, 0),
                              2, 8, 8),
    "varlen": (lambda: Varlen(torch.tensor([0, 3, 3, 9], dtype=I32), torch.tensor([0, 5, 6, 10], dtype=I32)),
               1, 9, 10),
    "varlen_causal_window": (lambda: Varlen(torch.tensor([0, 4, 9], dtype=I32), torch.tensor([0, 2, 10], dtype=I32))
                             & Causal() & SlidingWindow(2, -1), 1, 9, 10),
    "blocksparse": (lambda: _block_sparse(2, 2, 10, 13, 4, 3), 2, 10, 13),
    "blocksparse_causal_padding": (lambda: _block_sparse(2, 4, 10, 10, 4, 2, seed=1) & Causal()
                                   & KeyPadding(torch.tensor([7, 10], dtype=I32)), 2, 10, 10),
    "blocksparse_varlen": (lambda: _block_sparse(1, 2, 9, 10, 4, 2, seed=2)
                           & Varlen(torch.tensor([0, 4, 9], dtype=I32), torch.tensor([0, 6, 10], dtype=I32)), 1, 9, 10),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_matches_contract(name):
    make, b, nq, nk = CASES[name]
    spec = make().to_spec()
    hq, hkv = 4, 2
    want = brute(spec, b, hq, hkv, nq, nk)
    got = spec.dense(b, hq, hkv, nq, nk).expand(b, hq, nq, nk)
    assert torch.equal(got, want)
    # chunked rows agree with the full mask
    part = spec.dense(b, hq, hkv, nq, nk, q_rows=(2, nq - 1)).expand(b, hq, nq - 3, nk)
    assert torch.equal(part, want[:, :, 2 : nq - 1])


@pytest.mark.parametrize("name", sorted(CASES))
def test_mask_mod_matches_dense(name):
    from torch.nn.attention.flex_attention import create_mask

    make, b, nq, nk = CASES[name]
    spec = make().to_spec()
    hq, hkv = 4, 2
    want = spec.dense(b, hq, hkv, nq, nk).expand(b, hq, nq, nk)
    got = create_mask(spec.mask_mod(hq, hkv, nq, nk), b, hq, nq, nk, device="cpu")
    assert torch.equal(got, want)


def test_block_mask_from_spec():
    spec = (Causal() & SlidingWindow(16, -1)).to_spec()
    bm = spec.block_mask(1, 2, 2, 64, 64, block_size=16)
    assert bm.shape[-2:] == (64, 64)
    dense = bm.to_dense()  # (B, H, q blocks, k blocks), broadcast over B and H
    assert dense.shape[-2:] == (4, 4)
    assert dense[0, 0].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]


def test_composition_normal_form():
    s = (Causal() & SlidingWindow(5, 3)).to_spec()
    assert (s.causal, s.window_left, s.window_right) == (True, 5, -1)
    s = SlidingWindow(4, 0).to_spec()
    assert (s.causal, s.window_left, s.window_right) == (True, 4, -1)
    s = (SlidingWindow(4, 7) & SlidingWindow(-1, 2)).to_spec()
    assert (s.causal, s.window_left, s.window_right) == (False, 4, 2)
    s = (Causal() & Causal()).to_spec()
    assert s.is_causal_only and s.kind == "causal"
    a, b = KeyPadding(torch.tensor([3, 9], dtype=I32)), KeyPadding(torch.tensor([5, 2], dtype=I32))
    assert (a & b).seqlens_k.tolist() == [3, 2]
    cu = torch.tensor([0, 2, 5], dtype=I32)
    v1 = Varlen(cu, cu)
    assert (v1 & Varlen(cu.clone(), cu.clone()) & Causal()).kind == "varlen"
    assert as_spec(None) is None and as_spec(SlidingWindow()) is None
    assert SlidingWindow(1, 2) == SlidingWindow(1, 2) and Causal() == Causal()


def test_kernel_kwargs_and_kinds():
    bs = _block_sparse(1, 2, 8, 8, 4, 2)
    kw = (bs & Causal() & KeyPadding(torch.tensor([6], dtype=I32))).kernel_kwargs()
    assert set(kw) == {"causal", "window_left", "window_right", "seqlens_k", "cu_seqlens_q", "cu_seqlens_k",
                       "max_seqlen_q", "max_seqlen_k", "block_indices", "block_counts", "block_size"}
    assert kw["causal"] and kw["block_size"] == 4 and kw["seqlens_k"].tolist() == [6]
    v = Varlen(torch.tensor([0, 3, 10], dtype=I32), torch.tensor([0, 4, 6], dtype=I32))
    assert (v.max_seqlen_q, v.max_seqlen_k) == (7, 4)
    assert v.kernel_kwargs()["max_seqlen_q"] == 7
    kinds = [Causal(), KeyPadding(torch.tensor([1], dtype=I32)), SlidingWindow(1, 1), v, bs]
    assert [m.to_spec().kind for m in kinds] == ["causal", "padding", "window", "varlen", "blocksparse"]


# --------------------------------------------------------------------------------------------------- validation
def test_errors_window():
    with pytest.raises(ValueError, match="left"):
        SlidingWindow(-2, 0)
    with pytest.raises(ValueError, match="right"):
        SlidingWindow(0, -5)
    with pytest.raises(TypeError, match="left"):
        SlidingWindow(1.5, 0)


def test_errors_key_padding():
    with pytest.raises(TypeError, match="lengths.*int32"):
        KeyPadding(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="lengths"):
        KeyPadding(torch.tensor([[1, 2]], dtype=I32))
    with pytest.raises(ValueError, match="lengths must be >= 0"):
        KeyPadding(torch.tensor([1, -1], dtype=I32))
    with pytest.raises(TypeError, match="lengths"):
        KeyPadding([1, 2])
    q = torch.randn(2, 2, 4, 8)
    with pytest.raises(ValueError, match="lengths must be <= Nk=4"):
        attention(q, q, q, KeyPadding(torch.tensor([1, 5], dtype=I32)))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        attention(q, q, q, KeyPadding(torch.tensor([1, 2, 3], dtype=I32)))


def test_errors_varlen():
    ok = torch.tensor([0, 2, 5], dtype=I32)
    with pytest.raises(TypeError, match="cu_seqlens_q must have dtype torch.int32"):
        Varlen(ok.long(), ok)
    with pytest.raises(ValueError, match="cu_seqlens_k must be non-decreasing"):
        Varlen(ok, torch.tensor([0, 4, 3], dtype=I32))
    with pytest.raises(ValueError, match="cu_seqlens_q must start at 0"):
        Varlen(torch.tensor([1, 2, 5], dtype=I32), ok)
    with pytest.raises(ValueError, match="same shape"):
        Varlen(ok, torch.tensor([0, 5], dtype=I32))
    with pytest.raises(ValueError, match="max_seqlen_q=2 is smaller"):
        Varlen(ok, ok, max_seqlen_q=2)
    with pytest.raises(ValueError, match="at least 2"):
        Varlen(ok[:1], ok[:1])
    with pytest.raises(ValueError, match="different cu_seqlens"):
        Varlen(ok, ok) & Varlen(ok, torch.tensor([0, 1, 5], dtype=I32))
    with pytest.raises(ValueError, match="KeyPadding cannot be combined with Varlen"):
        Varlen(ok, ok) & KeyPadding(torch.tensor([5], dtype=I32))
    q = torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match=r"cu_seqlens_q\[-1\]=5 must equal .* q.shape\[2\]=6"):
        attention(torch.randn(1, 2, 6, 8), q, q, Varlen(ok, ok))
    with pytest.raises(ValueError, match="batch 1"):
        attention(torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8), Varlen(ok, ok))
    # wrong device: specs built directly skip the data checks; the device check runs at call time
    spec = MaskSpec(cu_seqlens_q=ok.to("meta"), cu_seqlens_k=ok.to("meta"))
    with pytest.raises(ValueError, match="cu_seqlens_q is on meta but q is on cpu"):
        attention(q, q, q, spec)


def test_errors_block_sparse():
    idx = torch.zeros(1, 2, 3, 2, dtype=I32)
    idx[..., 1] = 1
    cnt = torch.ones(1, 2, 3, dtype=I32)
    with pytest.raises(TypeError, match="block_indices must have dtype torch.int32"):
        BlockSparse(idx.long(), cnt, 4)
    with pytest.raises(ValueError, match="block_counts must have shape"):
        BlockSparse(idx, cnt[:, :1], 4)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        BlockSparse(idx, cnt, 0)
    with pytest.raises(ValueError, match="block_counts must lie in"):
        BlockSparse(idx, cnt + 2, 4)
    bad = idx.clone()
    bad[0, 0, 0, 0] = -1
    with pytest.raises(ValueError, match="block_indices must be >= 0"):
        BlockSparse(bad, cnt, 4)
    dup = torch.zeros_like(idx)
    with pytest.raises(ValueError, match="must not repeat"):
        BlockSparse(dup, cnt + 1, 4)
    BlockSparse(dup, cnt, 4)  # a repeated entry beyond the count is never read: fine
    m = BlockSparse(idx, cnt + 1, 4)
    q = torch.randn(1, 2, 12, 8)
    attention(q, q, q, m)
    with pytest.raises(ValueError, match=r"block_indices must be < ceil\(Nk / block_size\) = 1"):
        attention(q, torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8), m)
    with pytest.raises(ValueError, match=r"ceil\(Nq / block_size\) = 4"):
        attention(torch.randn(1, 2, 16, 8), q, q, m)
    with pytest.raises(ValueError, match="block_indices.shape\\[1\\] must be Hq=8 or Hkv=4"):
        attention(torch.randn(1, 8, 12, 8), torch.randn(1, 4, 12, 8), torch.randn(1, 4, 12, 8), m)
    with pytest.raises(ValueError, match="BlockSparse & BlockSparse"):
        m & m


def test_block_sparse_trusted_same_spec_without_value_checks():
    """BlockSparse.trusted (lists valid by construction, e.g. NSA's selection) gives the MaskSpec the checked
    constructor gives, skips only the value checks (host copies of the lists: a device sync) and keeps the
    dtype / shape / block-size checks and the call-time bound check."""
    idx = torch.tensor([[[[0, 2], [1, 0], [2, 1]]]], dtype=I32)  # (1, 1, 3, 2)
    cnt = torch.tensor([[[1, 2, 2]]], dtype=I32)
    checked, trusted = BlockSparse(idx, cnt, 4).to_spec(), BlockSparse.trusted(idx, cnt, 4, max_index=2).to_spec()
    for f in dataclasses.fields(MaskSpec):
        a, b = getattr(checked, f.name), getattr(trusted, f.name)
        assert (a is b) if isinstance(a, torch.Tensor) else a == b, f.name
    assert BlockSparse.trusted(idx, cnt, 4).to_spec()._max_block_index == -1  # unknown unless given
    q = torch.randn(1, 1, 12, 8)
    torch.testing.assert_close(attention(q, q, q, BlockSparse.trusted(idx, cnt, 4, max_index=2) & Causal()),
                               attention(q, q, q, BlockSparse(idx, cnt, 4) & Causal()))
    BlockSparse.trusted(idx, cnt + 5, 4)  # out-of-range counts: not looked at
    BlockSparse.trusted(idx.to("meta"), cnt.to("meta"), 4)  # nothing read from the device
    with pytest.raises(NotImplementedError):
        BlockSparse(idx.to("meta"), cnt.to("meta"), 4)
    with pytest.raises(TypeError, match="block_indices must have dtype torch.int32"):
        BlockSparse.trusted(idx.long(), cnt, 4)
    with pytest.raises(ValueError, match="block_counts must have shape"):
        BlockSparse.trusted(idx, cnt[:, :, :1], 4)
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        BlockSparse.trusted(idx, cnt, 0)
    with pytest.raises(ValueError, match="max_index must be an int >= -1"):
        BlockSparse.trusted(idx, cnt, 4, max_index=-2)
    with pytest.raises(ValueError, match=r"block_indices must be < ceil\(Nk / block_size\) = 2"):
        attention(q, q[:, :, :8], q[:, :, :8], BlockSparse.trusted(idx, cnt, 4, max_index=2))


def test_as_spec_rejects_other_objects():
    with pytest.raises(TypeError, match="mask must be a zoo.kernels mask object"):
        attention(torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8),
                  torch.ones(2, 2, dtype=torch.bool))
