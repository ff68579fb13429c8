"""NSA: execution on zoo.kernels.attention (Triton, interpreter on CPU) vs the dense-mask oracle."""
import importlib
import math

import pytest
import torch

from zoo.kernels import BlockSparse, Causal, attention
from zoo.kernels.nsa import PRESETS, BlockCompressor, NSAAttention, NSAConfig, nsa, nsa_reference, nsa_select
from zoo.kernels.nsa.importance import block_importance, block_importance_supported

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


@pytest.mark.parametrize("b,hk,g,t,d,causal,dtype,cfg,j_range", [
    (1, 2, 3, 75, 32, True, torch.float32, (8, 4, 16), 24),
    (2, 1, 1, 130, 64, False, torch.float16, (8, 4, 32), 2048),
    (1, 1, 16, 50, 128, True, torch.float16, (8, 4, 16), 5),
    (1, 1, 3, 100, 64, False, torch.float32, (8, 4, 64), 7),
    (1, 2, 1, 90, 32, True, torch.float16, (8, 4, 64), 2048),
    (1, 1, 2, 150, 16, True, torch.float32, (12, 5, 16), 16),  # d does not divide l': R = 5 blocks per tile of 16
    (1, 1, 2, 120, 16, True, torch.float32, (16, 16, 16), 16),  # VideoNSA-like l = d = l': one block per column
])
def test_block_importance_kernel_matches_torch(b, hk, g, t, d, causal, dtype, cfg, j_range):
    """Kernel (per-block sums folded onto selection blocks in-kernel) == psum_torch @ overlap_matrix; work split
    along Nc (j_range) and ragged last blocks included."""
    l, st, sel_len = cfg
    cfg = NSAConfig(cmp_len=l, cmp_stride=st, sel_len=sel_len, sel_count=2, window=12, init_blocks=1, local_blocks=1)
    q, kc, lse, scale = _select_inputs(b, hk, g, t, d, causal, dtype, cfg, seed=t + g, transposed=g == 3)
    assert block_importance_supported(q, l, st, sel_len)
    got = block_importance(q, kc, lse, cmp_len=l, cmp_stride=st, sel_len=sel_len, causal=causal, scale=scale,
                           heads_kv=hk, j_range=j_range)
    psum = nsa_op.block_prob_sums_torch(q, kc, lse, cfg, causal, scale, hk)
    ns = math.ceil(t / sel_len)
    want = psum @ nsa_op.overlap_matrix(kc.shape[2], ns, cfg)
    assert got.shape == want.shape == (b, hk, ns, ns) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if causal:  # selection blocks no query of the block can reach stay exactly 0
        assert (got[want == 0] == 0).all() and (want == 0).any()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("sel", [(3, 1, 1), (5, 2, 2), (4, 0, 1), (40, 3, 2)])  # (n, init_blocks, local_blocks)
def test_selection_sizes_match_the_selected_lists(sel, causal):
    """The host-side (top-k width, longest list) equal what the device computes; the list widths come from them."""
    cfg = NSAConfig(cmp_len=8, cmp_stride=4, sel_len=16, window=12, sel_count=sel[0], init_blocks=sel[1],
                    local_blocks=sel[2])
    for ns in (1, 2, 3, 5, 9):
        n = torch.arange(ns)[:, None]
        s = torch.arange(ns)[None, :]
        forced = (s < cfg.init_blocks) | ((s <= n) & (s > n - cfg.local_blocks))
        if causal:
            forced &= s <= n
        cand = ~forced & ((s < n) if causal else torch.ones_like(forced))
        budget = (cfg.sel_count - forced.sum(1)).clamp(min=0)
        counts = forced.sum(1) + torch.minimum(budget, cand.sum(1))
        assert nsa_op.selection_sizes(ns, cfg, causal) == (min(int(budget.max()), ns), max(1, int(counts.max())))
        mask = nsa_op._topk_lists(torch.rand(2, 1, ns, ns), cfg, causal)
        assert mask.block_indices.shape[-1] == max(1, int(counts.max()))
        assert torch.equal(mask.block_counts, counts.to(torch.int32).expand(2, 1, ns))


def test_forward_runs_without_reading_device_values(monkeypatch):
    """On the meta device any host read of tensor data (int(t.max()), .item(), BlockSparse's checks) raises: the
    selection and the whole forward (torch paths of the two NSA kernels, reference attention) never sync."""
    cfg = NSAConfig(cmp_len=8, cmp_stride=4, sel_len=16, sel_count=3, window=12, init_blocks=1, local_blocks=1)
    q, kc, lse = torch.empty(1, 4, 100, 16, device="meta"), torch.empty(1, 2, 24, 16, device="meta"), \
        torch.empty(1, 4, 100, device="meta")
    for causal in (True, False):
        mask = nsa_select(q, kc, lse, cfg, causal, 0.25, 2, use_kernel=False)
        assert mask.block_indices.shape == (1, 2, 7, nsa_op.selection_sizes(7, cfg, causal)[1])
    with pytest.raises(NotImplementedError):  # the checked constructor does read the lists
        BlockSparse(mask.block_indices, mask.block_counts, 16)
    monkeypatch.setattr(nsa_op, "block_importance_supported", lambda *a: False)
    monkeypatch.setattr(nsa_op, "_gate_kernel_ok", lambda *a: False)
    q, k, gates = (torch.empty(2, h, 96, x, device="meta") for h, x in ((4, 16), (2, 16), (4, 3)))
    for causal in (True, False):
        o = nsa(q, k, k, gates, causal=causal, backend="reference", **SMALL)
        assert o.shape == (2, 4, 96, 16) and o.device.type == "meta"


def test_select_and_nsa_same_with_and_without_kernel(monkeypatch):
    cfg = NSAConfig(cmp_len=8, cmp_stride=4, sel_len=16, sel_count=3, window=12, init_blocks=1, local_blocks=1)
    for causal in (True, False):
        q, kc, lse, scale = _select_inputs(1, 2, 2, 120, 32, causal, torch.float32, cfg, seed=3)
        a = nsa_select(q, kc, lse, cfg, causal, scale, 2, use_kernel=True)
        r = nsa_select(q, kc, lse, cfg, causal, scale, 2, use_kernel=False)
        assert torch.equal(a.block_counts, r.block_counts) and torch.equal(a.block_indices, r.block_indices)
        checked = BlockSparse(a.block_indices, a.block_counts, 16)  # valid lists: the checks pass
        assert checked.to_spec()._max_block_index <= a.to_spec()._max_block_index == math.ceil(120 / 16) - 1
    q, k, v, gates = _inputs(4, 2, 70, d=32, seed=1)
    o = nsa(q, k, v, gates, backend="triton", **{**SMALL, "sel_count": 3})
    monkeypatch.setattr(nsa_op, "block_importance_supported", lambda *a: False)
    torch.testing.assert_close(nsa(q, k, v, gates, backend="triton", **{**SMALL, "sel_count": 3}), o,
                               atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("layout", ["bhtd_batch2", "bthd_batch2"])
def test_compressed_branch_reads_q_in_place(layout, monkeypatch):
    """The residue groups are strided views of q (no copy) for (B, H, T, D) and (B, T, H, D) storage, B > 1; the
    branch output, gated output (fused with the residue layout) and gradients equal the oracle. Reference backend:
    the layout logic is backend-independent (the Triton kernels take the same strided views in the tests above)."""
    g = torch.Generator().manual_seed(5)
    b, h, hk, t, d = 2, 4, 2, 48, 16
    if layout == "bhtd_batch2":
        q = torch.randn(b, h, t, d, generator=g)
    else:
        q = torch.randn(b, t, h, d, generator=g).transpose(1, 2)
    q.requires_grad_(True)
    k, v = (torch.randn(b, hk, t, d, generator=g, requires_grad=True) for _ in range(2))
    gates = torch.rand(b, h, t, 3, generator=g, requires_grad=True)
    seen = []
    real = nsa_op.attention

    def spy(qq, *a, **kw):
        seen.append(qq)
        return real(qq, *a, **kw)

    monkeypatch.setattr(nsa_op, "attention", spy)
    o, (o_cmp, _, _) = nsa(q, k, v, gates, backend="reference", return_branches=True, **SMALL)
    cmp_calls = seen[:2]  # 8 / 4 -> residues {0, 1, 2} and {3}: two calls, then the selected and window branches
    assert len(seen) == 4 and all(x.untyped_storage().data_ptr() == q.untyped_storage().data_ptr() for x in cmp_calls)
    r, (r_cmp, _, _) = nsa_reference(q, k, v, gates, return_branches=True, **SMALL)
    torch.testing.assert_close(o_cmp, r_cmp.float(), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(o, r, atol=2e-5, rtol=1e-4)
    grads = torch.autograd.grad(o.square().sum(), (q, k, v, gates))
    grads_ref = torch.autograd.grad(r.square().sum(), (q, k, v, gates))
    for a, e in zip(grads, grads_ref):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("residue,window", [(True, True), (True, False), (False, True)])
def test_gate_combine_kernel_matches_torch(residue, window, monkeypatch):
    """The fused gate pass (Triton, reading the compressed output from its residue groups) equals the torch passes,
    forward and backward (grads land in the parts' own layouts)."""
    g = torch.Generator().manual_seed(2)
    b, h, t, dv, st = 2, 3, 24, 16, 4
    gates = torch.rand(b, t, h, 3, generator=g).transpose(1, 2).requires_grad_(True)  # strided, as the module makes
    slc, win = (torch.randn(b, h, t, dv, generator=g, requires_grad=True) for _ in range(2))
    if residue:  # residues {0, 1, 2} in one call, {3} in another, as _compressed_branch returns them
        raw = [torch.randn(3, b * h, t // st, dv, generator=g, requires_grad=True),
               torch.randn(b, h, t // st, 1, dv, generator=g, requires_grad=True)]
        parts = [raw[0].view(3, b, h, t // st, dv).permute(1, 2, 3, 0, 4), raw[1]]
        args = (st, [(0, 3), (3, 4)])
    else:
        raw = [torch.randn(b, h, t, dv, generator=g, requires_grad=True)]
        parts, args = raw, (0, None)
    leaves = [gates, slc] + ([win] if window else []) + raw

    def run():
        o = nsa_op._GateCombine.apply(gates, slc, win if window else None, *args, *parts)
        return o, torch.autograd.grad((o * torch.arange(dv)).sum(), leaves)

    assert nsa_op._gate_kernel_ok(gates, slc, win, parts)
    o, grads = run()
    monkeypatch.setattr(nsa_op, "_gate_kernel_ok", lambda *a: False)
    o_ref, grads_ref = run()
    torch.testing.assert_close(o, o_ref, atol=1e-6, rtol=1e-6)
    for a, e in zip(grads, grads_ref):
        torch.testing.assert_close(a, e)
    full = torch.cat([parts[0], parts[1]], 3).reshape(b, h, t, dv) if residue else parts[0]
    want = gates[..., 0:1] * full + gates[..., 1:2] * slc + (gates[..., 2:3] * win if window else 0)
    torch.testing.assert_close(o, want, atol=1e-6, rtol=1e-6)


def test_record_stages_times_every_stage_of_the_call():
    q, k, v, gates = _inputs(2, 1, 64)
    with nsa_op.record_stages("cpu") as rec:
        nsa(q, k, v, gates, backend="reference", **SMALL)
    times = rec.times_ms()
    assert list(times) == list(nsa_op.STAGES) and all(x >= 0 for x in times.values())
    nsa(q, k, v, gates, backend="reference", **SMALL)  # outside the block: nothing recorded
    assert rec.times_ms() == times


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


def test_module_exports_with_torch_export():
    """torch.export traces the whole NSA layer (selection sizes are host arithmetic, not data-dependent reads) and
    the exported program gives the eager output."""
    m = NSAAttention(64, 4, 1, causal=True, compress="mean", cmp_len=32, cmp_stride=16, sel_len=64, sel_count=4,
                     window=64, backend="reference").eval()
    x = torch.randn(1, 256, 64)
    with torch.no_grad():
        ep = torch.export.export(m, (x,))
        torch.testing.assert_close(ep.module()(x), m(x))  # eager may take the Triton paths (interpreter)
