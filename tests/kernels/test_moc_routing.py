"""moc_routing on its own: the routed visibility equals the oracle's dense mask on random ragged cases, and the
routing issues no device->host sync when the boundaries are given on the host (GPU)."""
import pytest
import torch

from zoo.kernels.moc import moc_routing, op
from zoo.kernels.moc.reference import moc_dense_mask


def _case(seed):
    g = torch.Generator().manual_seed(seed)

    def r(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    n = r(20, 120)
    cuts = torch.randperm(n - 1, generator=g)[: r(1, 9)] + 1
    cb = torch.cat([torch.tensor([0, n]), cuts]).unique()
    kw = dict(causal_routing=bool(r(0, 2)), top_k=r(0, cb.numel() + 1), block_size=[1, 5, 8, 16][r(0, 4)])
    if r(0, 2):  # packed sequences on chunk boundaries
        inner = cb[1:-1]
        kw["cu_seqlens"] = torch.cat([torch.tensor([0, n]), inner[torch.randperm(inner.numel(), generator=g)[:2]]])
        kw["cu_seqlens"] = kw["cu_seqlens"].unique().to(torch.int32)
    if r(0, 2):
        a = torch.rand(n, generator=g) < [0.1, 0.5][r(0, 2)]
        c = r(0, cb.numel() - 1)
        a[cb[c]:cb[c + 1]] = bool(r(0, 2))  # sometimes a chunk with no routed key
        a[r(0, n)] = False
        kw["anchors"] = a
    hkv = r(1, 3)
    b = 1 if "cu_seqlens" in kw else r(1, 3)
    q = torch.randn(b, hkv * r(1, 3), n, 8, generator=g)
    k = torch.randn(b, hkv, n, 8, generator=g)
    return q, k, cb.to(torch.int32), kw


def _visibility(r, b, hq, n, anchors, bs):
    """(B, Hq, N, N) bool from a MoCRouting: block lists + key padding in the layout, plus the anchors."""
    spec = r.mask.to_spec()
    S, Lq, Lk = r.num_seqs, r.len_q, r.len_k
    bi, bc = spec.block_indices.long(), spec.block_counts.long()
    nkb = -(-Lk // bs)
    assert bi.shape[-1] >= int(bc.max())
    used = torch.arange(bi.shape[-1]) < bc[..., None]
    table = torch.zeros(*bi.shape[:-1], nkb + 1, dtype=torch.bool).scatter_(-1, torch.where(used, bi, nkb), True)
    qi = torch.arange(n) if r.q_index is None else r.q_index
    ki = torch.arange(n) if r.k_index is None else r.k_index
    vis = torch.zeros(b, hq, n, n, dtype=torch.bool)
    for bb in range(b):
        for s in range(S):
            qt, kt = qi.view(S, Lq)[s], ki.view(S, Lk)[s]
            pq, pk = (qt < n).nonzero().flatten(), (kt < n).nonzero().flatten()
            pk = pk[pk < int(r.lengths_k[bb * S + s])]
            m = table[bb * S + s][:, pq // bs][:, :, pk // bs]
            vis[bb][:, qt[pq][:, None], kt[pk][None, :]] = m
            if r.a_index is not None:
                at = r.a_index.view(S, r.len_a)[s]
                vis[bb][:, qt[pq][:, None], at[at < n][None, :]] = True
    return vis


@pytest.mark.parametrize("seed", range(60))
def test_routing_visibility_matches_oracle(seed):
    q, k, cu, kw = _case(seed)
    r = moc_routing(q, k, cu, **kw)
    got = _visibility(r, q.shape[0], q.shape[1], q.shape[2], kw.get("anchors"), kw["block_size"])
    assert torch.equal(got, moc_dense_mask(q, k, cu, **kw))


def test_chunk_key_sums_in_slices(monkeypatch):
    """Chunk key sums accumulate fp32 slices of k (bounded memory): equal to a one-shot fp64 sum per chunk, for any
    slice length, bf16 keys included; routing with 7-token slices equals routing with the default."""
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 50, 8, generator=g).to(torch.bfloat16)
    chunk = torch.sort(torch.randint(0, 6, (50,), generator=g)).values
    ref = torch.zeros(2, 3, 6, 8, dtype=torch.float64).index_add_(2, chunk, k.double())
    for slice_len in (7, 50, 8192):
        monkeypatch.setattr(op, "KEY_SUM_SLICE", slice_len)
        got = op.chunk_key_sums(k, chunk, 6)
        assert got.dtype == torch.float32 and got.shape == (2, 3, 6, 8)
        torch.testing.assert_close(got.double(), ref, rtol=1e-6, atol=1e-5)
    q, k, cu, kw = _case(3)
    monkeypatch.setattr(op, "KEY_SUM_SLICE", 8192)
    whole = moc_routing(q, k, cu, **kw).mask.to_spec()
    monkeypatch.setattr(op, "KEY_SUM_SLICE", 7)
    sliced = moc_routing(q, k, cu, **kw).mask.to_spec()
    assert torch.equal(whole.block_indices, sliced.block_indices)
    assert torch.equal(whole.block_counts, sliced.block_counts)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_routing_no_device_sync():
    n = 4096
    q, k = torch.randn(1, 4, n, 64, device="cuda"), torch.randn(1, 2, n, 64, device="cuda")
    cu = torch.arange(0, n + 1, 512, dtype=torch.int32)  # boundaries on the host
    kw = dict(top_k=2, block_size=128, anchors=torch.arange(n) % 50 == 0,
              cu_seqlens=torch.tensor([0, 1024, n], dtype=torch.int32), causal_routing=True)
    ref = moc_routing(q, k, cu, **kw)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        r = moc_routing(q, k, cu, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(r.mask.to_spec().block_counts, ref.mask.to_spec().block_counts)
