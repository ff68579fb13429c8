"""MoC attention speed: ``MoCAttention``'s routing + block-sparse Triton attention vs FlexAttention on the same
routing and vs dense attention (SDPA cuDNN), forward and forward+backward, at 32K / 64K / 180K tokens.

    python benchmarks/moc.py                                  # H200 / H100 rows (bf16)
    python benchmarks/moc.py --sizes 32768 65536 --out docs/benchmarks/moc-kernels.md
    python benchmarks/moc.py --device cpu --quick             # smoke test (tiny shapes, timings meaningless)
    python benchmarks/moc.py --deadline 60                    # skip rows once 60 s of wall time are used

Setting (the paper's Wan-2.1 plug-in, Appendix H): 12 heads of 128 (Wan-2.1-1.3B), chunk = one latent frame of 1560
tokens (480p), shots of 5 frames with the intra-shot link, top-k 3, causal routing, block 128. Both sparse peers are
timed end to end: ours = ``zoo.models.moc.moc_route`` + ``zoo.kernels.attention(..., backend="triton")``; flex =
the same ``moc_route`` + ``BlockMask`` construction from its lists (compiled ``create_block_mask``) + compiled
``flex_attention``. Dense = cuDNN SDPA over all tokens. The sparsity column is the fraction of (query, key) pairs
skipped (from the visited key blocks).
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from benchmarks.sparse import _compiled_flex, bench, fwd_bwd, safe  # noqa: E402
from zoo.kernels.attention import attention  # noqa: E402
from zoo.models.moc import content_chunks, moc_route  # noqa: E402


def layout_for(n: int, frame: int, shot_frames: int):
    frames = list(range(frame, n, frame))
    shots = list(range(frame * shot_frames, n, frame * shot_frames))
    return content_chunks(n, frame_bounds=frames, shot_bounds=shots)


def rows(a):
    dev, dt = a.device, a.dtype
    h, d = (2, 32) if dev == "cpu" else (12, 128)
    frame = 64 if dev == "cpu" else a.chunk
    bs = 16 if dev == "cpu" else 128
    be = "reference" if dev == "cpu" else "triton"
    t_start = time.perf_counter()
    for n in a.sizes:
        if a.deadline and time.perf_counter() - t_start > a.deadline:
            print(f"  skip N{n}: deadline", file=sys.stderr)
            yield [f"N{n}", "skipped (time budget)"] + [""] * 8
            continue
        lay = layout_for(n, frame, a.shot_frames)
        q, k, v = (torch.randn(1, h, n, d, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
        kw = dict(top_k=a.top_k, block_size=bs, shot_links=True, causal=True)

        def route():
            return moc_route(q, k, lay, **kw)

        def ours():
            return attention(q, k, v, moc_route(q, k, lay, **kw).mask, backend=be)

        def flex():
            from torch.nn.attention.flex_attention import flex_attention
            r = moc_route(q, k, lay, **kw)
            bm = r.mask.block_mask(1, h, h, n, n, dev, block_size=bs, compile=dev == "cuda")
            if dev == "cpu":
                return flex_attention(q.detach(), k.detach(), v.detach(), block_mask=bm)
            return _compiled_flex()(q, k, v, block_mask=bm)

        def dense():
            if dev == "cuda":
                from torch.nn.attention import SDPBackend, sdpa_kernel
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v)
            return F.scaled_dot_product_attention(q, k, v)

        r = route()
        qc = r.query_counts.double()
        sparsity = 1 - float((r.visited_keys.double() * qc).sum() / (h * n * n))
        name = f"N{n} chunk{frame} shot{a.shot_frames}f k{a.top_k} H{h} D{d}"
        with torch.no_grad():
            rt = safe(lambda: bench(route, dev, a.reps))
            of = safe(lambda: bench(ours, dev, a.reps))
            ff = safe(lambda: bench(flex, dev, a.reps))
            df = safe(lambda: bench(dense, dev, a.reps))
        ob = safe(lambda: bench(fwd_bwd(ours, (q, k, v)), dev, a.reps))
        fb = safe(lambda: bench(fwd_bwd(flex, (q, k, v)), dev, a.reps)) if dev == "cuda" else "n/a (cpu)"
        db = safe(lambda: bench(fwd_bwd(dense, (q, k, v)), dev, a.reps))

        def ratio(x, y):
            try:
                return f"{float(y) / float(x):.2f}x"
            except ValueError:
                return "n/a"

        yield [name, f"{sparsity:.3f}", rt, of, ff, df, ob, fb, db,
               f"{ratio(of, ff)} / {ratio(ob, fb)}"]
        del q, k, v, r
        if dev == "cuda":
            torch.cuda.empty_cache()


HEAD = ["row", "sparsity", "routing ms", "ours fwd ms", "flex fwd ms", "dense cuDNN fwd ms", "ours fwd+bwd ms",
        "flex fwd+bwd ms", "dense cuDNN fwd+bwd ms", "ours vs flex (fwd / fwd+bwd)"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    p.add_argument("--chunk", type=int, default=1560)
    p.add_argument("--shot-frames", type=int, default=5)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--deadline", type=float, default=0.0, help="skip remaining rows after this many seconds")
    p.add_argument("--out", default="")
    a = p.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available; use --device cpu --quick for a smoke test")
    a.dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    a.reps = 3 if a.quick else 10
    if a.sizes is None:
        a.sizes = [512] if a.device == "cpu" else [32768, 65536, 180000]
    lines = [f"# MoC attention benchmark, {datetime.date.today()}, "
             f"{torch.cuda.get_device_name() if a.device == 'cuda' else 'cpu'}, torch {torch.__version__}", "",
             "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    print("\n".join(lines[-2:]), flush=True)
    for row in rows(a):
        lines.append("| " + " | ".join(row) + " |")
        print(lines[-1], flush=True)
    if a.out:
        Path(a.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
