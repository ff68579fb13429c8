"""Context-parallel attention on CPU with gloo: ring (plain, causal contiguous / zig-zag, documents, GQA) and
Ulysses (plain, causal, documents, GQA, zig-zag) on 2 and 4 processes equal single-process reference attention in
outputs and gradients (fp32, 1e-5); merge_attention, the layouts and the error paths on their own."""
from __future__ import annotations

import os
import socket
import tempfile
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from zoo.kernels.attention import Causal, Varlen, attention
from zoo.kernels.context_parallel import (
    merge_attention,
    ring_attention,
    shard,
    ulysses_attention,
    zigzag_merge,
    zigzag_split,
)

N, D = 64, 16
DOCS = [0, 5, 23, 24, 40, 64]  # boundaries inside chunks, a 1-token document, one spanning several chunks
CASES = {
    # name: (scheme, layout, causal, docs, B, Hq, Hkv)
    "ring_plain": ("ring", "contiguous", False, False, 2, 2, 2),
    "ring_causal_contiguous": ("ring", "contiguous", True, False, 2, 2, 2),
    "ring_causal_zigzag": ("ring", "zigzag", True, False, 2, 2, 2),
    "ring_docs": ("ring", "contiguous", False, True, 1, 2, 2),
    "ring_docs_causal_contiguous": ("ring", "contiguous", True, True, 1, 2, 2),
    "ring_docs_causal_zigzag": ("ring", "zigzag", True, True, 1, 2, 2),
    "ring_gqa_causal_zigzag": ("ring", "zigzag", True, False, 1, 4, 2),
    "ulysses_plain": ("ulysses", "contiguous", False, False, 2, 4, 4),
    "ulysses_causal": ("ulysses", "contiguous", True, False, 2, 4, 4),
    "ulysses_docs_causal": ("ulysses", "contiguous", True, True, 1, 4, 4),
    "ulysses_causal_zigzag": ("ulysses", "zigzag", True, False, 1, 4, 4),
    "ulysses_gqa_causal": ("ulysses", "contiguous", True, False, 1, 8, 4),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_case(name: str, rank: int, world: int) -> None:
    scheme, layout, causal, use_docs, b, hq, hkv = CASES[name]
    g = torch.Generator().manual_seed(list(CASES).index(name))
    q = torch.randn(b, hq, N, D, generator=g)
    k = torch.randn(b, hkv, N, D, generator=g)
    v = torch.randn(b, hkv, N, D, generator=g)
    do = torch.randn(b, hq, N, D, generator=g)
    cu = torch.tensor(DOCS, dtype=torch.int32) if use_docs else None
    mask = None
    if use_docs:
        mask = Varlen(cu, cu) & Causal() if causal else Varlen(cu, cu)
    elif causal:
        mask = Causal()
    qr, kr, vr = (t.clone().requires_grad_() for t in (q, k, v))
    o_ref = attention(qr, kr, vr, mask, backend="reference")
    o_ref.backward(do)
    ql, kl, vl = (shard(t, rank, world, layout).requires_grad_() for t in (q, k, v))
    if scheme == "ring":
        o = ring_attention(ql, kl, vl, causal=causal, cu_seqlens=cu, layout=layout)
    else:
        o = ulysses_attention(ql, kl, vl, mask, layout=layout)
    o.backward(shard(do, rank, world, layout))
    for what, got, want in (("o", o, o_ref), ("dq", ql.grad, qr.grad), ("dk", kl.grad, kr.grad),
                            ("dv", vl.grad, vr.grad)):
        want = shard(want, rank, world, layout)
        err = (got - want).abs().max().item()
        assert err <= 1e-5, f"{name}: {what} differs from the reference by {err:.2e} on rank {rank}/{world}"


def _run_errors(rank: int, world: int) -> None:
    x = torch.randn(1, 2, 8, D)
    with pytest.raises(ValueError, match="divisible by the world size"):
        ulysses_attention(torch.randn(1, 3 if world == 2 else 2, 8, D), torch.randn(1, 3 if world == 2 else 2, 8, D),
                          torch.randn(1, 3 if world == 2 else 2, 8, D))
    with pytest.raises(ValueError, match="cu_seqlens"):
        ring_attention(x, x, x, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="same local tokens"):
        ring_attention(x, x[:, :, :4], x[:, :, :4])
    with pytest.raises(ValueError, match="even local length"):
        ring_attention(x[:, :, :7], x[:, :, :7], x[:, :, :7], causal=True, layout="zigzag")
    bad = torch.randn(1, 2, 8 + 2 * rank, D)  # ranks hold different shard lengths
    with pytest.raises(ValueError, match="shards differ across ranks"):
        ring_attention(bad, bad, bad)


def _worker(rank: int, world: int, port: int, outdir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    lines = []
    try:
        for name in [*CASES, "errors"]:
            try:
                _run_errors(rank, world) if name == "errors" else _run_case(name, rank, world)
                lines.append(f"{name}\tok")
            except Exception:  # noqa: BLE001 - reported per case by the parent test
                lines.append(f"{name}\t" + traceback.format_exc().replace("\n", " | "))
            dist.barrier()
    finally:
        Path(outdir, f"rank{rank}.tsv").write_text("\n".join(lines) + "\n")
        dist.destroy_process_group()


@pytest.fixture(scope="module", params=[2, 4], ids=["world2", "world4"])
def results(request):
    world = request.param
    with tempfile.TemporaryDirectory() as d:
        mp.spawn(_worker, args=(world, _free_port(), d), nprocs=world, join=True)
        out = {}
        for r in range(world):
            for line in Path(d, f"rank{r}.tsv").read_text().splitlines():
                name, status = line.split("\t", 1)
                if status != "ok":
                    out.setdefault(name, []).append(f"rank {r}: {status}")
                else:
                    out.setdefault(name, [])
        return out


@pytest.mark.parametrize("case", [*CASES, "errors"])
def test_context_parallel_matches_reference(results, case):
    assert case in results, f"{case} did not run"
    assert not results[case], "\n".join(results[case])


def test_merge_attention_equals_attention_over_union():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, D, generator=g) for _ in range(3))
    k2, v2 = torch.randn(2, 3, 7, D, generator=g), torch.randn(2, 3, 7, D, generator=g)
    o1, l1 = attention(q, k, v, backend="reference", return_lse=True)
    o2, l2 = attention(q, k2, v2, Causal(), backend="reference", return_lse=True)  # some rows see no key of k2
    assert torch.isneginf(l2).any()
    o, lse = merge_attention(o1, l1, o2, l2)
    keys = torch.cat([k, k2], 2)
    vals = torch.cat([v, v2], 2)
    s = (q @ keys.transpose(-1, -2)) / D**0.5
    vis = torch.cat([torch.ones(10, 10, dtype=torch.bool), torch.ones(10, 7, dtype=torch.bool).tril(-3)], 1)
    s = s.masked_fill(~vis, float("-inf"))
    torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(o, torch.softmax(s, -1) @ vals, atol=1e-5, rtol=1e-5)
    # both empty -> zeros, -inf, no NaN; merge is symmetric
    e = torch.full_like(l1, float("-inf"))
    oz, lz = merge_attention(torch.zeros_like(o1), e, torch.zeros_like(o1), e)
    assert torch.isneginf(lz).all() and not oz.isnan().any() and (oz == 0).all()
    ob, _ = merge_attention(o2, l2, o1, l1)
    torch.testing.assert_close(ob, o)
    with pytest.raises(ValueError, match="lse1/lse2"):
        merge_attention(o1, l1[..., :3], o2, l2)


def test_zigzag_layout_roundtrip_and_errors():
    x = torch.arange(16).reshape(1, 1, 16, 1)
    parts = zigzag_split(x, 4)
    assert parts[0].flatten().tolist() == [0, 1, 14, 15] and parts[3].flatten().tolist() == [6, 7, 8, 9]
    assert torch.equal(zigzag_merge(parts), x)
    with pytest.raises(ValueError, match="divisible by 2 \\* world"):
        zigzag_split(torch.zeros(1, 1, 12, 1), 4)
    with pytest.raises(ValueError, match="divisible by the world size"):
        shard(torch.zeros(1, 1, 10, 1), 0, 4)


def test_needs_initialised_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    x = torch.randn(1, 1, 4, D)
    with pytest.raises(RuntimeError, match="init_process_group"):
        ring_attention(x, x, x)
