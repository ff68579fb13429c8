"""Sparse attention speed: MoC vs FlexAttention (same routed BlockMask), NSA vs dense causal SDPA (cuDNN) and fla-core.

    python benchmarks/sparse.py                         # H200 rows of issue 4 (bf16)
    python benchmarks/sparse.py --only moc --quick      # subset (regex on the row name), shorter timing
    python benchmarks/sparse.py --out docs/benchmarks/sparse-h200.md
    python benchmarks/sparse.py --device cpu --quick    # smoke test without a GPU (tiny shapes, timings meaningless)
    python benchmarks/sparse.py --only nsa --breakdown  # + per-stage forward times of ours (CUDA events)

MoC rows time end to end: ours = routing (``moc_routing``) + block-sparse Triton attention (``moc_attention``);
flex = the same routing + ``BlockMask`` construction from it (``create_block_mask``, compiled) + compiled
``flex_attention`` on the same layout. NSA rows: ours = ``nsa(backend="triton")`` (mean compression, three branches,
gates) vs SDPA cuDNN dense causal (K/V repeated to Hq) and fla-core ``parallel_nsa`` (cmp + slc, when importable and
its head ratio allows: Hq/Hkv a power of two >= 16). ``--breakdown``: per NSA row, the median time of each stage of
one forward (``zoo.kernels.nsa.op.record_stages``: CUDA events around the stages ``nsa`` itself runs; wall time on
CPU), their sum and the end-to-end forward time, as a second table.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from benchmarks.profile_table import kernel_table  # noqa: E402
from zoo.kernels.moc import moc_attention, moc_routing  # noqa: E402
from zoo.kernels.nsa import nsa  # noqa: E402
from zoo.kernels.nsa.op import record_stages  # noqa: E402


def bench(fn, device, reps):
    """Median wall time in ms (CUDA synchronised). The first (compiling, autotuning) call is timed apart, to stderr."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    fn()
    sync()
    print(f"  [{time.strftime('%H:%M:%S')}] first call {getattr(fn, '__qualname__', fn)}: "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    med = sorted(ts)[len(ts) // 2]
    print(f"  median {med:.2f} ms", file=sys.stderr, flush=True)  # in the log even if the row is cut by a limit
    return med


def fwd_bwd(f, ts):
    def run():
        for t in ts:
            t.grad = None
        f().float().sum().backward()
    return run


def safe(fn):
    try:
        return f"{fn():.2f}"
    except Exception as e:  # noqa: BLE001 - one failing peer must not stop the table
        return f"n/a ({type(e).__name__}: {str(e).splitlines()[0][:60]})"


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    """Compiled flex_attention, static shapes: a new length recompiles (tens of seconds, a first call) instead of
    falling back to a dynamic-shape kernel that ran ~15x slower per token at N180000 (H200, 2026-11-29)."""
    from torch.nn.attention.flex_attention import flex_attention
    return torch.compile(flex_attention, dynamic=False)


def moc_rows(a):
    dev, dt = a.device, a.dtype
    sizes = [(2048, 256, 3)] if dev == "cpu" else [(65536, 1024, 3), (65536, 1560, 5), (180000, 1560, 5)]
    if a.rows:
        sizes = [x for x in sizes if re.search(a.rows, f"N{x[0]} chunk{x[1]} k{x[2]}")]
    h, d = (2, 32) if dev == "cpu" else (16, 128)
    be = "triton" if dev == "cuda" else "reference"
    for n, chunk, k in sizes:
        q, kk, v = (torch.randn(1, h, n, d, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
        cu = torch.arange(0, n + chunk, chunk).clamp(max=n).unique().to(torch.int32)
        kw = dict(top_k=k, block_size=64 if dev == "cpu" else 128)

        def ours():
            return moc_attention(q, kk, v, cu, backend=be, **kw)

        def flex():
            from torch.nn.attention.flex_attention import flex_attention
            r = moc_routing(q, kk, cu, **kw)
            bm = r.mask.block_mask(1, h, h, n, n, dev, block_size=kw["block_size"], compile=dev == "cuda")
            fn = _compiled_flex() if dev == "cuda" else flex_attention
            if dev == "cpu":  # FlexAttention refuses CPU inputs that require grad
                return fn(q.detach(), kk.detach(), v.detach(), block_mask=bm)
            return fn(q, kk, v, block_mask=bm)

        def route():
            return moc_routing(q, kk, cu, **kw)

        name = f"moc N{n} chunk{chunk} k{k} H{h} D{d}"
        with torch.no_grad():
            row = [name, safe(lambda: bench(route, dev, a.reps)), safe(lambda: bench(ours, dev, a.reps)),
                   safe(lambda: bench(flex, dev, a.reps))]
        row += [safe(lambda: bench(fwd_bwd(ours, (q, kk, v)), dev, a.reps)),
                safe(lambda: bench(fwd_bwd(flex, (q, kk, v)), dev, a.reps)) if dev == "cuda" else "n/a (cpu)"]
        if a.profile:
            print(f"  profile, ours fwd+bwd, {name}: " + kernel_table(fwd_bwd(ours, (q, kk, v)), dev), file=sys.stderr)
        yield row


def nsa_rows(a):
    dev, dt = a.device, a.dtype
    sizes = [512] if dev == "cpu" else [16384, 65536]
    if a.rows:
        sizes = [t for t in sizes if re.search(a.rows, f"T{t}")]
    hq, hkv, d = (4, 1, 32) if dev == "cpu" else (64, 4, 128)
    be = "triton" if dev == "cuda" else "reference"
    cfg = dict(config="paper") if dev == "cuda" else dict(cmp_len=32, cmp_stride=16, sel_len=64, sel_count=4, window=64)
    for t in sizes:
        q = torch.randn(1, hq, t, d, device=dev, dtype=dt, requires_grad=True)
        k, v = (torch.randn(1, hkv, t, d, device=dev, dtype=dt, requires_grad=True) for _ in range(2))
        g = torch.rand(1, hq, t, 3, device=dev, dtype=dt, requires_grad=True)

        def ours():
            return nsa(q, k, v, g, backend=be, **cfg)

        def dense():
            from torch.nn.attention import SDPBackend, sdpa_kernel
            kr, vr = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
            ctx = sdpa_kernel(SDPBackend.CUDNN_ATTENTION) if dev == "cuda" else sdpa_kernel(SDPBackend.MATH)
            with ctx:
                return torch.nn.functional.scaled_dot_product_attention(q, kr, vr, is_causal=True)

        def fla():
            from fla.ops.nsa import parallel_nsa
            gg = g.transpose(1, 2)
            return parallel_nsa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), gg[..., 0].contiguous(),
                                gg[..., 1].contiguous(), None, block_counts=16, block_size=64)

        name = f"nsa T{t} Hq{hq} Hkv{hkv} D{d}"
        with torch.no_grad():
            row = [name, safe(lambda: bench(ours, dev, a.reps)), safe(lambda: bench(dense, dev, a.reps)),
                   safe(lambda: bench(fla, dev, a.reps))]
        row += [safe(lambda: bench(fwd_bwd(ours, (q, k, v, g)), dev, a.reps)),
                safe(lambda: bench(fwd_bwd(dense, (q, k, v)), dev, a.reps)),
                safe(lambda: bench(fwd_bwd(fla, (q, k, v, g)), dev, a.reps))]
        if a.profile:
            print(f"  profile, ours fwd+bwd, {name}: " + kernel_table(fwd_bwd(ours, (q, k, v, g)), dev), file=sys.stderr)
        if a.breakdown:
            try:
                with torch.no_grad():
                    a.extra += breakdown_rows(name, ours, dev, a.reps)
            except Exception as e:  # noqa: BLE001 - the timing table still gets written
                a.extra.append(f"| {name} | n/a ({type(e).__name__}: {str(e).splitlines()[0][:80]}) | | |")
        yield row


def breakdown_rows(name, fn, device, reps):
    """Table rows ``| name | stage | ms | % of sum |``: median per stage over ``reps`` forward calls (``fn`` is warm:
    the row timed it first), then the sum of the stages and the end-to-end forward (wall clock, synchronised)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    per, total = {}, []
    for _ in range(reps):
        with record_stages(device) as rec:
            t0 = time.perf_counter()
            fn()
            sync()
            total.append((time.perf_counter() - t0) * 1e3)
        for stage, ms in rec.times_ms().items():
            per.setdefault(stage, []).append(ms)
    med = {stage: sorted(v)[len(v) // 2] for stage, v in per.items()}
    s = sum(med.values())
    rows = [f"| {name} | {stage} | {ms:.3f} | {100 * ms / s:.1f} |" for stage, ms in med.items()]
    rows += [f"| {name} | sum of stages | {s:.3f} | 100.0 |",
             f"| {name} | end to end (wall) | {sorted(total)[len(total) // 2]:.3f} | |"]
    print(f"  breakdown {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()), file=sys.stderr, flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", default="", help="regex on the table (moc, nsa)")
    p.add_argument("--rows", default="", help="regex on row sizes, e.g. 'N180000|T65536'")
    p.add_argument("--out", default="")
    p.add_argument("--profile", action="store_true", help="also print a kernel-time table of ours per row (stderr)")
    p.add_argument("--breakdown", action="store_true",
                   help="NSA rows: also time each stage of one forward of ours (CUDA events), as a second table")
    p.add_argument("--no-pack-gqa-heads", action="store_true",
                   help="turn off head packing for block-sparse lists shared by a KV group (on by default; see "
                        "docs/kernels/attention.md), to measure what it brings")
    a = p.parse_args(argv)
    if a.no_pack_gqa_heads:
        from zoo.kernels.attention import triton_common
        triton_common.PACK_GQA_HEADS = False
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available; use --device cpu --quick for a smoke test")
    a.dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    a.reps = 3 if a.quick else 10
    a.extra = []  # breakdown rows, printed after the tables
    lines = [f"# sparse attention benchmark, {datetime.date.today()}, "
             f"{torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'}, torch {torch.__version__}"
             + (", GQA head packing off" if a.no_pack_gqa_heads else ""), ""]
    tables = [("moc", ["row", "routing ms", "ours fwd ms", "flex fwd ms (routing+mask+attn)", "ours fwd+bwd ms",
                       "flex fwd+bwd ms"], moc_rows),
              ("nsa", ["row", "ours fwd ms", "sdpa-cudnn dense causal fwd ms", "fla parallel_nsa fwd ms",
                       "ours fwd+bwd ms", "sdpa-cudnn fwd+bwd ms", "fla fwd+bwd ms"], nsa_rows)]
    for key, head, gen in tables:
        if a.only and not re.search(a.only, key):
            continue
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        print(lines[-2], flush=True)
        for row in gen(a):
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
        lines.append("")
    if a.extra:
        lines += ["| nsa row | stage (forward) | ms | % of sum |", "|---|---|---|---|", *a.extra, ""]
        print("\n".join(lines[-len(a.extra) - 3:]), flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
