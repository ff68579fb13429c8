"""Triton attention forward/backward against a float64 PyTorch oracle, over every mask kind.

On a machine without CUDA the kernels run under the Triton CPU interpreter (TRITON_INTERPRET=1, set here before the
kernel modules are imported; fp32/fp16 only, since the interpreter computes bf16 wrongly). With CUDA they run
compiled, and the `gpu`-marked test adds bf16.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

_CPU = not torch.cuda.is_available()
if _CPU and os.environ.get("TRITON_INTERPRET") != "1":
    if any(name.endswith("kernels.attention.triton_common") for name in sys.modules):
        pytest.skip("Triton attention kernels were imported without TRITON_INTERPRET=1 and there is no CUDA; "
                    "set TRITON_INTERPRET=1 before anything imports them", allow_module_level=True)
    os.environ["TRITON_INTERPRET"] = "1"

triton = pytest.importorskip("triton")

try:
    from zoo.kernels.attention import triton_bwd, triton_common, triton_fwd
except ImportError:  # source checkout whose zoo/__init__ does not yet extend its path
    import zoo

    zoo.__path__.append(str(Path(__file__).resolve().parents[2]))
    from zoo.kernels.attention import triton_bwd, triton_common, triton_fwd

if _CPU and not triton_common.INTERPRET:
    pytest.skip("Triton attention kernels were compiled for a GPU but there is no CUDA", allow_module_level=True)

DEV = "cpu" if _CPU else "cuda"
attention_fwd = triton_fwd.attention_fwd
attention_bwd = triton_bwd.attention_bwd


# ---------------------------------------------------------------------------------------------------------------
# oracle
# ---------------------------------------------------------------------------------------------------------------
def dense_mask(B, H, Nq, Nk, *, causal=False, window_left=-1, window_right=-1, seqlens_k=None, cu_seqlens_q=None,
               cu_seqlens_k=None, block_indices=None, block_counts=None, block_size=0, **_):
    """(B, H, Nq, Nk) bool visibility, straight from the mask semantics."""

    def one(Lq, Lk, kv_len):
        i = torch.arange(Lq)[:, None]
        j = torch.arange(Lk)[None, :]
        off = Lk - Lq
        ok = (j < kv_len) & (i >= 0)
        if causal:
            ok &= j <= i + off
        if window_left >= 0:
            ok &= j >= i + off - window_left
        if window_right >= 0:
            ok &= j <= i + off + window_right
        return ok

    m = torch.zeros(B, H, Nq, Nk, dtype=torch.bool)
    if cu_seqlens_q is not None:
        cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
        for s in range(len(cq) - 1):
            Lq, Lk = cq[s + 1] - cq[s], ck[s + 1] - ck[s]
            kv = Lk if seqlens_k is None else min(Lk, int(seqlens_k[s]))
            m[:, :, cq[s]:cq[s + 1], ck[s]:ck[s + 1]] = one(Lq, Lk, kv)
        return m
    for b in range(B):
        m[b] = one(Nq, Nk, Nk if seqlens_k is None else min(Nk, int(seqlens_k[b])))
    if block_indices is not None:
        bs, Hb = block_size, block_indices.shape[1]
        sp = torch.zeros_like(m)
        for b in range(B):
            for h in range(H):
                hb = h * Hb // H
                for qb in range(block_indices.shape[2]):
                    for t in range(int(block_counts[b, hb, qb])):
                        kb = int(block_indices[b, hb, qb, t])
                        sp[b, h, qb * bs:(qb + 1) * bs, kb * bs:(kb + 1) * bs] = True
        m &= sp
    return m


def oracle(q, k, v, do, mask, scale):
    """float64 o, lse, dq, dk, dv for a boolean mask (B, Hq, Nq, Nk); empty rows: o 0, lse -inf, zero grads."""
    q, k, v, do = (t.detach().cpu().double() for t in (q, k, v, do))
    mask = mask.cpu()
    g = q.shape[1] // k.shape[1]
    kr, vr = k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
    s = (q @ kr.transpose(-1, -2) * scale).masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, -1)
    p = torch.where(mask, torch.exp(s - torch.nan_to_num(lse, neginf=0.0)[..., None]), torch.zeros_like(s))
    o = p @ vr
    dv = p.transpose(-1, -2) @ do
    ds = p * (do @ vr.transpose(-1, -2) - (o * do).sum(-1, keepdim=True))
    dq = ds @ kr * scale
    dk = ds.transpose(-1, -2) @ q * scale
    B, Hkv, Nk, _ = k.shape
    dk = dk.view(B, Hkv, g, Nk, -1).sum(2)
    dv = dv.view(B, Hkv, g, Nk, -1).sum(2)
    return o, lse, dq, dk, dv


def _close(name, got, ref, tol):
    got = got.detach().cpu().double()
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all() or name == "lse", f"{name}: non-finite values"
    scale = max(1.0, ref.abs().max().item())
    err = (got - ref).abs().max().item()
    assert err <= tol * scale, f"{name}: max abs err {err:.3e} > {tol * scale:.3e}"


TOL = {torch.float32: 2e-4, torch.float16: 1.5e-2, torch.bfloat16: 6e-2}


def run_case(B, H, Hkv, Nq, Nk, D, Dv, dtype, mask_kw, *, strided=False, seed=0, device=DEV):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=gen)
    k = torch.randn(B, Hkv, Nk, D, generator=gen)
    v = torch.randn(B, Hkv, Nk, Dv, generator=gen)
    do = torch.randn(B, H, Nq, Dv, generator=gen)
    q, k, v, do = (t.to(dtype) for t in (q, k, v, do))  # oracle sees the rounded inputs
    if strided:  # (B, N, H, D) storage seen as (B, H, N, D)
        dev_q, dev_k, dev_v = (t.transpose(1, 2).contiguous().to(device).transpose(1, 2) for t in (q, k, v))
        assert not dev_q.is_contiguous()
    else:
        dev_q, dev_k, dev_v = (t.to(device) for t in (q, k, v))
    kw = {key: (val.to(device) if isinstance(val, torch.Tensor) else val) for key, val in mask_kw.items()}
    scale = D ** -0.5
    o, lse = attention_fwd(dev_q, dev_k, dev_v, scale=scale, **kw)
    assert o.dtype == dtype and lse.dtype == torch.float32
    mask = dense_mask(B, H, Nq, Nk, **mask_kw)
    ro, rlse, rdq, rdk, rdv = oracle(q, k, v, do, mask, scale)
    tol = TOL[dtype]
    _close("o", o, ro, tol)
    empty = torch.isinf(rlse)
    assert torch.equal(torch.isneginf(lse.cpu()), empty), "lse must be -inf exactly on rows with nothing visible"
    _close("lse", torch.where(empty, 0.0, lse.cpu().double()), torch.where(empty, 0.0, rlse), tol)
    dq, dk, dv = attention_bwd(do.to(device), dev_q, dev_k, dev_v, o, lse, scale=scale, **kw)
    assert (dq.dtype, dk.dtype, dv.dtype) == (dtype,) * 3
    _close("dq", dq, rdq, tol)
    _close("dk", dk, rdk, tol)
    _close("dv", dv, rdv, tol)
    return mask


def _sparse_lists(B, Hb, Nq, Nk, bs, max_blocks, seed, causal_ok=False):
    """Random block lists with unused trailing entries set to -1 and some empty rows."""
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-Nq // bs), -(-Nk // bs)
    idx = torch.full((B, Hb, nqb, max_blocks), -1, dtype=torch.int32)
    cnt = torch.zeros(B, Hb, nqb, dtype=torch.int32)
    for b in range(B):
        for h in range(Hb):
            for qb in range(nqb):
                c = int(torch.randint(0, min(max_blocks, nkb) + 1, (1,), generator=gen))
                sel = torch.randperm(nkb, generator=gen)[:c].sort().values
                idx[b, h, qb, :c] = sel.to(torch.int32)
                cnt[b, h, qb] = c
    return idx, cnt


def _cu(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.int32)


# (id, B, H, Hkv, Nq, Nk, D, Dv, dtype, mask kwargs)
CASES = [
    ("full", 2, 2, 2, 45, 45, 32, 32, torch.float32, {}),
    ("full_cross_gqa7_fp16", 1, 7, 1, 19, 33, 64, 64, torch.float16, {}),
    ("causal_nq<nk_gqa2", 1, 4, 2, 37, 53, 64, 64, torch.float32, dict(causal=True)),
    ("causal_nq>nk_empty_rows", 1, 2, 1, 60, 40, 32, 32, torch.float32, dict(causal=True)),
    ("window_both_d80_dv64", 1, 2, 2, 70, 70, 80, 64, torch.float32, dict(window_left=7, window_right=5)),
    ("causal_window_gqa8_fp16", 1, 8, 1, 50, 50, 32, 32, torch.float16, dict(causal=True, window_left=10)),
    ("right_window_only", 1, 2, 1, 30, 47, 32, 32, torch.float32, dict(window_right=3)),
    ("padding", 2, 2, 1, 41, 50, 64, 64, torch.float32, dict(seqlens_k=torch.tensor([30, 0], dtype=torch.int32))),
    ("padding_window_d128_fp16", 2, 2, 2, 33, 44, 128, 128, torch.float16,
     dict(seqlens_k=torch.tensor([44, 20], dtype=torch.int32), window_left=6, window_right=3)),
    ("varlen", 1, 2, 1, 63, 80, 32, 32, torch.float32,
     dict(cu_seqlens_q=_cu([17, 33, 13]), cu_seqlens_k=_cu([30, 22, 28]), max_seqlen_q=33, max_seqlen_k=30)),
    ("varlen_causal_fp16", 1, 4, 2, 63, 60, 64, 64, torch.float16,
     dict(cu_seqlens_q=_cu([17, 33, 13]), cu_seqlens_k=_cu([30, 22, 8]), max_seqlen_q=33, max_seqlen_k=30,
          causal=True)),
    ("varlen_window_padding", 1, 2, 2, 63, 80, 32, 32, torch.float32,
     dict(cu_seqlens_q=_cu([17, 33, 13]), cu_seqlens_k=_cu([30, 22, 28]), window_left=5, window_right=2,
          seqlens_k=torch.tensor([25, 22, 3], dtype=torch.int32))),
    ("sparse_per_qhead_bs16", 1, 4, 2, 75, 75, 32, 32, torch.float32,
     dict(block_size=16, **dict(zip(("block_indices", "block_counts"), _sparse_lists(1, 4, 75, 75, 16, 3, 1))))),
    ("sparse_per_kvgroup_causal_fp16", 2, 4, 2, 64, 64, 64, 64, torch.float16,
     dict(block_size=16, causal=True,
          **dict(zip(("block_indices", "block_counts"), _sparse_lists(2, 2, 64, 64, 16, 4, 2))))),
    ("sparse_causal_bs32_cross", 1, 2, 2, 40, 64, 32, 32, torch.float32,
     dict(block_size=32, causal=True,
          **dict(zip(("block_indices", "block_counts"), _sparse_lists(1, 2, 40, 64, 32, 2, 3))))),
    ("sparse_causal_window_gqa2", 1, 4, 2, 70, 70, 32, 32, torch.float32,
     dict(block_size=32, causal=True, window_left=20,
          **dict(zip(("block_indices", "block_counts"), _sparse_lists(1, 2, 70, 70, 32, 3, 4))))),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_against_oracle(case):
    _, B, H, Hkv, Nq, Nk, D, Dv, dtype, kw = case
    run_case(B, H, Hkv, Nq, Nk, D, Dv, dtype, kw)


def test_strided_input_and_empty_rows_are_zero():
    kw = dict(seqlens_k=torch.tensor([0], dtype=torch.int32))
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(1, 2, 20, 32, generator=gen).transpose(1, 2).contiguous().transpose(1, 2) for _ in range(3))
    q, k, v = (t.to(DEV) for t in (q, k, v))
    o, lse = attention_fwd(q, k, v, scale=0.2, seqlens_k=kw["seqlens_k"].to(DEV))
    assert torch.equal(o.cpu(), torch.zeros_like(o.cpu())) and torch.isneginf(lse).all()
    dq, dk, dv = attention_bwd(torch.ones_like(o), q, k, v, o, lse, scale=0.2, seqlens_k=kw["seqlens_k"].to(DEV))
    for t in (dq, dk, dv):
        assert torch.equal(t.cpu(), torch.zeros_like(t.cpu()))
    run_case(1, 2, 1, 29, 31, 32, 32, torch.float32, dict(causal=True), strided=True)


def test_bad_input():
    q = torch.randn(1, 4, 8, 32, device=DEV)
    k = torch.randn(1, 2, 8, 32, device=DEV)
    with pytest.raises(ValueError, match="k head dim"):
        attention_fwd(q, k[..., :16], k[..., :16], scale=1.0)
    with pytest.raises(ValueError, match="multiple"):
        attention_fwd(q, torch.randn(1, 3, 8, 32, device=DEV), torch.randn(1, 3, 8, 32, device=DEV), scale=1.0)
    with pytest.raises(ValueError, match="dtype"):
        attention_fwd(q, k.half(), k.half(), scale=1.0)
    with pytest.raises(ValueError, match="head dim"):
        big = torch.randn(1, 2, 8, 300, device=DEV)
        attention_fwd(torch.randn(1, 4, 8, 300, device=DEV), big, big, scale=1.0)
    with pytest.raises(ValueError, match="seqlens_k"):
        attention_fwd(q, k, k, scale=1.0, seqlens_k=torch.tensor([1, 2], dtype=torch.int32, device=DEV))
    with pytest.raises(ValueError, match="block_size"):
        idx = torch.zeros(1, 4, 1, 1, dtype=torch.int32, device=DEV)
        attention_fwd(q, k, k, scale=1.0, block_indices=idx, block_counts=idx[..., 0], block_size=24)
    with pytest.raises(NotImplementedError, match="varlen"):
        cu = torch.tensor([0, 8], dtype=torch.int32, device=DEV)
        idx = torch.zeros(1, 4, 1, 1, dtype=torch.int32, device=DEV)
        attention_fwd(q, k, k, scale=1.0, cu_seqlens_q=cu, cu_seqlens_k=cu, block_indices=idx,
                      block_counts=idx[..., 0], block_size=16)
    o, lse = attention_fwd(q, k, k, scale=1.0)
    with pytest.raises(ValueError, match="do"):
        attention_bwd(o[:, :, :4], q, k, k, o, lse, scale=1.0)


_GPU_LARGE = [
    ("large_causal_gqa2_bf16", 2, 4, 2, 300, 257, 128, 128, torch.bfloat16, dict(causal=True)),
    ("large_window_d96_fp16", 1, 4, 1, 517, 517, 96, 96, torch.float16, dict(window_left=100, window_right=30)),
    ("large_causal_d256_bf16", 1, 2, 2, 400, 400, 256, 256, torch.bfloat16, dict(causal=True)),
    ("large_sparse128_causal_fp16", 1, 4, 2, 512, 512, 64, 64, torch.float16,
     dict(block_size=128, causal=True,
          **dict(zip(("block_indices", "block_counts"), _sparse_lists(1, 2, 512, 512, 128, 3, 7))))),
    ("large_padding_causal_fp32", 1, 2, 1, 384, 400, 64, 64, torch.float32,
     dict(causal=True, seqlens_k=torch.tensor([333], dtype=torch.int32))),
]
_GPU_CASES = [(c[0] + "_bf16",) + c[1:8] + (torch.bfloat16,) + c[9:] for c in CASES[::2]] + _GPU_LARGE


@pytest.mark.gpu
@pytest.mark.skipif(_CPU, reason="needs CUDA")
@pytest.mark.parametrize("case", _GPU_CASES, ids=[c[0] for c in _GPU_CASES])
def test_gpu(case, monkeypatch):
    """bf16 (wrong in the interpreter) and shapes large enough for the GPU tile configs and the unmasked path."""
    monkeypatch.setenv("ZOO_ATTN_TRITON_SINGLE_CONFIG", "1")  # one compile per variant instead of autotuning
    _, B, H, Hkv, Nq, Nk, D, Dv, dtype, kw = case
    run_case(B, H, Hkv, Nq, Nk, D, Dv, dtype, kw, seed=11)


@pytest.mark.parametrize("r", range(16))
def test_every_alignment_offset(r):
    """Tile-boundary logic: alignment offsets and window edges in every residue modulo the 16-wide test tiles
    (windows wide enough that some tiles take the unmasked path)."""
    run_case(1, 1, 1, 23, 23 + r, 16, 16, torch.float32, dict(causal=True))
    run_case(1, 1, 1, 70 - r, 64, 16, 16, torch.float32, dict(window_left=20 + r, window_right=(3 * r) % 16 + 12))
    run_case(1, 1, 1, 70 - r, 64, 16, 16, torch.float32, dict(window_left=25, window_right=14))
    run_case(1, 1, 1, 40, 40 + r, 16, 16, torch.float32, dict(causal=True, window_left=33 + (5 * r) % 16))


# ---------------------------------------------------------------------------------------------------------------
# block-sparse dk/dv: long transposed lists split across programs (fp32 atomics)
# ---------------------------------------------------------------------------------------------------------------
def _skewed_lists(B, Hb, Nq, Nk, bs, seed):
    """Every query block lists key block 0 (one very long transposed list) plus up to two random others."""
    gen = torch.Generator().manual_seed(seed)
    nqb, nkb = -(-Nq // bs), -(-Nk // bs)
    idx = torch.full((B, Hb, nqb, 3), -1, dtype=torch.int32)
    cnt = torch.zeros(B, Hb, nqb, dtype=torch.int32)
    for b in range(B):
        for h in range(Hb):
            for qb in range(nqb):
                extra = torch.randperm(nkb - 1, generator=gen)[:int(torch.randint(0, 3, (1,), generator=gen))] + 1
                sel = torch.cat([torch.zeros(1, dtype=torch.long), extra]).sort().values
                idx[b, h, qb, :len(sel)] = sel.to(torch.int32)
                cnt[b, h, qb] = len(sel)
    return dict(block_size=bs, block_indices=idx, block_counts=cnt)


def _spy_dkdv(monkeypatch):
    """Record (launcher, grid with 16-wide tiles) of every dk/dv launch."""
    calls = []
    for name in ("_attn_bwd_dkdv_kernel", "_attn_bwd_dkdv_split_kernel"):
        kernel = getattr(triton_bwd, name)

        def run(*args, _name=name, _run=kernel.run, **kwargs):
            calls.append((_name, kwargs["grid"]({"BLOCK_M": 16, "BLOCK_N": 16})))
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", run)
    return calls


_GPU_ONLY = [pytest.mark.gpu, pytest.mark.skipif(_CPU, reason="needs CUDA")]
# (B, H, Hkv, Hb, N, D, block_size, dtype, causal): Hb = Hkv shares one list per KV group, Hb = Hq one per query head.
# On a GPU, autotuning runs the split kernel several times: wrong results there mean a missing reset_to_zero.
_SPLIT_CASES = [
    pytest.param(2, 4, 2, 2, 75, 32, 16, torch.float32, False, id="hb=hkv_gqa2"),
    pytest.param(1, 4, 2, 4, 75, 32, 16, torch.float32, True, id="hb=hq_gqa2_causal"),
    pytest.param(1, 4, 1, 1, 64, 32, 16, torch.float16, False, id="hb=hkv_gqa4_fp16"),
    pytest.param(1, 8, 2, 2, 1000, 128, 64, torch.bfloat16, True, id="gpu_bs64_d128_bf16", marks=_GPU_ONLY),
]
_SPLIT_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("B, H, Hkv, Hb, N, D, bs, dtype, causal", _SPLIT_CASES)
def test_dkdv_split_long_lists(B, H, Hkv, Hb, N, D, bs, dtype, causal, monkeypatch):
    """SEG = 2 entries: key block 0 (in every list) is split over several programs that add atomically, short lists
    keep one program with a plain store; equals the oracle and the unsplit path."""
    mask_kw = dict(causal=causal, **_skewed_lists(B, Hb, N, N, bs, seed=Hb))
    calls = _spy_dkdv(monkeypatch)
    monkeypatch.setattr(triton_bwd, "DKDV_SEGMENT_ROWS", 2 * bs)
    monkeypatch.setattr(triton_bwd, "DKDV_MEAN_FACTOR", 0)
    nqb = -(-N // bs)
    nseg = -(-nqb // 2)
    assert triton_bwd.dkdv_segments(nqb, bs) == (2, nseg) and nseg > 1
    run_case(B, H, Hkv, N, N, D, D, dtype, mask_kw, seed=3)
    assert calls == [("_attn_bwd_dkdv_split_kernel", (-(-N // 16), B * Hkv, nseg))]
    # the unsplit path on the same inputs
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(B, h, N, D, generator=gen).to(dtype).to(DEV) for h in (H, Hkv, Hkv))
    do = torch.randn(B, H, N, D, generator=gen).to(dtype).to(DEV)
    kw = {key: (val.to(DEV) if isinstance(val, torch.Tensor) else val) for key, val in mask_kw.items()}
    o, lse = attention_fwd(q, k, v, scale=0.2, **kw)
    split = attention_bwd(do, q, k, v, o, lse, scale=0.2, **kw)
    monkeypatch.setattr(triton_bwd, "DKDV_SEGMENT_ROWS", 2048)
    whole = attention_bwd(do, q, k, v, o, lse, scale=0.2, **kw)
    assert [c[1][2] for c in calls[1:]] == [nseg, 1]
    for name, a, b in zip(("dq", "dk", "dv"), split, whole):
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, rtol=_SPLIT_TOL[dtype], atol=_SPLIT_TOL[dtype], msg=name)


def test_dkdv_split_off_in_deterministic_mode(monkeypatch):
    """torch.use_deterministic_algorithms(True): one program per key tile, plain stores, whatever the list length."""
    calls = _spy_dkdv(monkeypatch)
    monkeypatch.setattr(triton_bwd, "DKDV_SEGMENT_ROWS", 16)
    monkeypatch.setattr(triton_bwd, "DKDV_MEAN_FACTOR", 0)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        assert triton_bwd.dkdv_segments(5, 16) == (1, 1)
        run_case(1, 2, 1, 70, 70, 32, 32, torch.float32, _skewed_lists(1, 1, 70, 70, 16, seed=9))
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert calls == [("_attn_bwd_dkdv_kernel", (5, 1, 1))]
    assert triton_bwd.dkdv_segments(5, 16) == (1, 5)


def test_dkdv_segment_sizes():
    """SEG = 2048 query rows per segment by default; lists of at most one segment, or no lists, do not split."""
    assert triton_bwd.DKDV_SEGMENT_ROWS == 2048
    assert triton_bwd.dkdv_segments(1024, 64) == (32, 32)  # NSA at T65536, blocks of 64
    assert triton_bwd.dkdv_segments(32, 64) == (1, 1)
    assert triton_bwd.dkdv_segments(33, 64) == (32, 2)
    assert triton_bwd.dkdv_segments(64, 4096) == (1, 64)
    assert triton_bwd.dkdv_segments(0, 0) == (1, 1)
    # the mean list length bound (lists of width 45 over 512 key blocks, MoC-like) raises SEG: 2 * 45 = 90
    assert triton_bwd.dkdv_segments(512, 128, 45, 512) == (90, 6)
    assert triton_bwd.dkdv_segments(1024, 64, 16, 1024) == (32, 32)  # NSA: the row rule already gives 32


# ---------------------------------------------------------------------------------------------------------------
# head packing (PACK_GQA_HEADS): block-sparse lists shared by a KV group, PACK query heads per fwd / dq program
# ---------------------------------------------------------------------------------------------------------------
def _spy_fwd_dq(monkeypatch):
    """Record (kernel, PACK, grid) of every fwd / dq launch (the interpreter's single config, no pruning)."""
    calls = []
    for mod, name in ((triton_fwd, "_attn_fwd_kernel"), (triton_bwd, "_attn_bwd_dq_kernel")):
        kernel = getattr(mod, name)

        def run(*args, _name=name, _kernel=kernel, _run=kernel.run, **kwargs):
            assert len(_kernel.configs) == 1
            calls.append((_name, kwargs["PACK"], kwargs["grid"](_kernel.configs[0].kwargs)))
            return _run(*args, **kwargs)

        monkeypatch.setattr(kernel, "run", run)
    return calls


def _tiles(monkeypatch, block_m):
    """The interpreter's single fwd / dq config (not pruned: one config skips autotuning) with BLOCK_M rows."""
    for kernel in (triton_fwd._attn_fwd_kernel, triton_bwd._attn_bwd_dq_kernel):
        monkeypatch.setattr(kernel, "configs", [triton.Config({"BLOCK_M": block_m, "BLOCK_N": 16}, num_warps=4,
                                                              num_stages=1)])


def _run_all(B, H, Hkv, Nq, Nk, D, dtype, kw, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Nq, D, generator=gen).to(dtype).to(DEV)
    k, v = (torch.randn(B, Hkv, Nk, D, generator=gen).to(dtype).to(DEV) for _ in range(2))
    do = torch.randn(B, H, Nq, D, generator=gen).to(dtype).to(DEV)
    kw = {key: (val.to(DEV) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
    o, lse = attention_fwd(q, k, v, scale=D ** -0.5, **kw)
    return (o, lse) + tuple(attention_bwd(do, q, k, v, o, lse, scale=D ** -0.5, **kw))


# (B, H, Hkv, Nq, Nk, D, block_size, dtype, causal, PACK, packed tile rows): ragged Nq; rows per head = block (the
# GPU's layout, tiles of PACK x 16 rows) or < block (16-row tiles: several position tiles per query block); GROUP 4
# at block 64 packs 2 of the group's 4 heads.
_PACK_CASES = [
    pytest.param(1, 4, 2, 45, 45, 32, 16, torch.float32, True, 2, 32, id="gqa2_bs16_causal_fp32"),
    pytest.param(2, 4, 1, 70, 64, 32, 32, torch.float16, False, 4, 16, id="gqa4_bs32_nq>nk_fp16"),
    pytest.param(1, 4, 1, 50, 64, 16, 16, torch.float16, True, 4, 64, id="gqa4_bs16_causal_nq<nk_fp16"),
    pytest.param(1, 8, 2, 100, 128, 16, 64, torch.float32, False, 2, 16, id="gqa4_pack2_bs64_fp32"),
    # NSA's selected branch on a GPU: block 64, GROUP 16 -> PACK 2, 128-row tiles, bf16
    pytest.param(1, 32, 2, 1000, 1000, 128, 64, torch.bfloat16, True, 2, 128, id="gpu_nsa_gqa16_bs64_d128_bf16",
                 marks=_GPU_ONLY),
]
_PACK_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("B, H, Hkv, Nq, Nk, D, bs, dtype, causal, pack, rows", _PACK_CASES)
def test_head_packing(B, H, Hkv, Nq, Nk, D, bs, dtype, causal, pack, rows, monkeypatch):
    """Switch on, lists shared by the KV group: fwd and dq launch with PACK heads per program; o, lse, dq, dk, dv
    equal the oracle and the unpacked path."""
    mask_kw = dict(causal=causal, block_size=bs,
                   **dict(zip(("block_indices", "block_counts"), _sparse_lists(B, Hkv, Nq, Nk, bs, 3, seed=pack))))
    calls = _spy_fwd_dq(monkeypatch)
    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", True)
    _tiles(monkeypatch, rows)
    run_case(B, H, Hkv, Nq, Nk, D, D, dtype, mask_kw, seed=5)
    grid = (-(-Nq // (rows // pack)), B * H // pack)
    assert calls == [("_attn_fwd_kernel", pack, grid), ("_attn_bwd_dq_kernel", pack, grid)]
    packed = _run_all(B, H, Hkv, Nq, Nk, D, dtype, mask_kw, seed=6)
    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", False)
    _tiles(monkeypatch, 16)
    plain = _run_all(B, H, Hkv, Nq, Nk, D, dtype, mask_kw, seed=6)
    assert [c[1] for c in calls[2:]] == [pack, pack, 1, 1]
    for name, a, b in zip(("o", "lse", "dq", "dk", "dv"), packed, plain):
        torch.testing.assert_close(a, b, rtol=_PACK_TOL[dtype], atol=_PACK_TOL[dtype], msg=name)


def test_head_packing_off_or_not_applicable_keeps_one_head(monkeypatch):
    """Switch off: PACK = 1 and the usual grid; switch on (the default), lists per query head (Hb = Hq) or dense
    masks also keep PACK = 1."""
    assert triton_common.PACK_GQA_HEADS is True
    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", False)
    calls = _spy_fwd_dq(monkeypatch)
    def lists(hb):
        idx, cnt = _sparse_lists(1, hb, 40, 40, 16, 2, 1)
        return dict(block_size=16, block_indices=idx, block_counts=cnt)

    shared, per_head = lists(1), lists(4)
    run_case(1, 4, 1, 40, 40, 16, 16, torch.float32, shared)
    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", True)
    run_case(1, 4, 1, 40, 40, 16, 16, torch.float32, per_head)
    run_case(1, 4, 1, 40, 40, 16, 16, torch.float32, dict(causal=True))
    grid = (3, 4)
    assert calls == [("_attn_fwd_kernel", 1, grid), ("_attn_bwd_dq_kernel", 1, grid)] * 3


def test_head_packing_choice_and_tiles(monkeypatch):
    """PACK = largest power of two dividing GROUP, at most 128 // block_size; the GPU prune keeps only the tallest
    tiles of PACK x (rows <= block) (NSA: block 64, GROUP 16 -> PACK 2, BLOCK_M 128)."""
    def ma(hb, bs):
        idx = torch.zeros(1, hb, 1, 1, dtype=torch.int32)
        return triton_common.MaskArgs(False, -1, -1, None, None, None, 1, 1, idx, idx[..., 0], bs)

    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", True)
    pack = triton_common.pack_heads
    assert pack(ma(4, 64), 64, 4) == 2 and pack(ma(4, 32), 64, 4) == 4 and pack(ma(4, 16), 64, 4) == 8
    assert pack(ma(1, 16), 6, 1) == 2 and pack(ma(1, 16), 3, 1) == 1 and pack(ma(2, 128), 8, 2) == 1
    assert pack(ma(64, 64), 64, 4) == 1 and pack(ma(4, 64), 4, 4) == 1
    monkeypatch.setattr(triton_common, "PACK_GQA_HEADS", False)
    assert pack(ma(4, 64), 64, 4) == 1
    monkeypatch.setattr(triton_common, "INTERPRET", False)
    for fast, key in ((triton_fwd._FWD_FAST, "fwd"), (triton_bwd._DQ_FAST, "dq")):
        configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in fast]
        args = dict(BLOCK_SIZE=64, BLOCK_D=128, BLOCK_DV=128, IS_FP32=False)
        got = triton_common.prune_configs(configs, args, dict(PACK=2), fast, [], [])
        assert got and {c.kwargs["BLOCK_M"] for c in got} == {128} and all(c.kwargs["BLOCK_N"] <= 64 for c in got), key
        assert {c.kwargs["BLOCK_M"] for c in triton_common.prune_configs(configs, args, {}, fast, [], [])} == {64}


# ---------------------------------------------------------------------------------------------------------------
# block-sparse dq inside the dk/dv kernel (ATOMIC_DQ: one kernel, fp32 atomics) against the two-kernel path
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, split", [("sparse_per_qhead_bs16", False), ("sparse_causal_window_gqa2", True)])
def test_atomic_dq_matches_two_kernel_path(name, split, monkeypatch):
    _, B, H, Hkv, Nq, Nk, D, Dv, dtype, kw = next(c for c in CASES if c[0] == name)
    if split:  # long lists also split over programs: DQ and DK/DV both take atomic adds
        monkeypatch.setattr(triton_bwd, "DKDV_SEGMENT_ROWS", 2 * kw["block_size"])
        monkeypatch.setattr(triton_bwd, "DKDV_MEAN_FACTOR", 0)
    monkeypatch.delenv("ZOO_ATTN_ATOMIC_DQ", raising=False)
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(B, h, Nq if h == H else Nk, D, generator=gen).to(dtype).to(DEV) for h in (H, Hkv, Hkv))
    do = torch.randn(B, H, Nq, Dv, generator=gen).to(dtype).to(DEV)
    kw = {key: (val.to(DEV) if isinstance(val, torch.Tensor) else val) for key, val in kw.items()}
    o, lse = attention_fwd(q, k, v, scale=0.2, **kw)
    two = attention_bwd(do, q, k, v, o, lse, scale=0.2, **kw)
    dq_calls = []
    dq_run = triton_bwd._attn_bwd_dq_kernel.run
    monkeypatch.setattr(triton_bwd._attn_bwd_dq_kernel, "run", lambda *a, **k_: dq_calls.append(1) or dq_run(*a, **k_))
    monkeypatch.setattr(triton_bwd, "ATOMIC_DQ_DEFAULT", True)
    one = attention_bwd(do, q, k, v, o, lse, scale=0.2, **kw)
    assert dq_calls == []  # no second kernel
    for name, a, b in zip(("dq", "dk", "dv"), one, two):
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)
