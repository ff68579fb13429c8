"""ClustViT vs the same ViT (Segmenter head, equal weights for the shared parts, equal input): img/s and GFLOPs.

    python benchmarks/clustvit.py --device cuda --sizes t,b --res 512 --batch 32 --dtype bf16      # GPU rows
    OMP_NUM_THREADS=2 python benchmarks/clustvit.py --device cpu --sizes t --res 512 --batch 1 --threads 2
    python benchmarks/clustvit.py --device cuda --pretrained hub/zoo-models/clustvit_t.fmnist_mosaic --res 256

How many tokens get merged decides ClustViT's speed. Untrained clusterers merge arbitrarily, so for the random-weight
rows the clusterer's "keep" logit is shifted (bisection on the benchmark batch) until a chosen share of the patch
tokens is merged (``--merge`` list, e.g. 0.5 = half the patches replaced by k cluster tokens). The paper's ADE20K
ViT-B k3 ip3 ratio of 473 / 321 GFLOPs implies ~45 % merged. ``--pretrained`` runs a trained ClustViT (with the
plain ViT of the same size, random weights: speed does not depend on weights) on Fashion-MNIST mosaic test images
with its own clustering.

GFLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of the benchmark batch, divided by the batch
(matmul / conv / attention FLOPs = 2 x MACs; the padded batch is counted as run). img/s: median of ``--iters`` timed
forwards after warm-up, CUDA events on the GPU. Attention backends: every one of ``--backends`` is timed for both
models and the fastest reported with its name.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import zoo
from zoo.models.clustvit import ClustViTSegmenter


def set_backend(model: torch.nn.Module, backend: str) -> None:
    """Attention backend of every layer (backbone and head)."""
    for m in model.modules():
        if hasattr(m, "backend") and hasattr(m, "num_heads"):
            m.backend = backend


@torch.no_grad()
def calibrate_merge(model: ClustViTSegmenter, x: torch.Tensor, merge: float) -> float:
    """Shift the clusterer's keep logit so that ``merge`` of the batch's patch tokens get a cluster id; returns the
    reached share. Only the clusterer's last bias changes."""
    bb = model.backbone
    t, _ = bb.embed(x)
    for layer in bb.layers[:bb.ip]:
        t = layer(t)
    logits = bb.cluster_logits(t[:, 1:]).float()
    bias = bb.clusterer.net[2].bias
    base = bias.detach().clone()
    lo, hi = -200.0, 200.0
    for _ in range(40):
        mid = (lo + hi) / 2
        shifted = logits.clone()
        shifted[..., 0] += mid
        share = (shifted.argmax(-1) != 0).float().mean().item()
        if share > merge:
            lo = mid
        else:
            hi = mid
    off = (lo + hi) / 2
    bias.copy_(base)
    bias[0] += off
    ids = bb.cluster_logits(t[:, 1:]).argmax(-1)
    if ids.unique().numel() <= 1:  # a one-id batch would be skipped: make sure >= 2 ids remain
        bias[0] = base[0] + off + 1e-3
    return (bb.cluster_logits(t[:, 1:]).argmax(-1) != 0).float().mean().item()


@torch.no_grad()
def count_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False)
    with fc:
        model(x)
    return fc.get_total_flops() / 1e9 / x.shape[0]


@torch.no_grad()
def time_forward(model: torch.nn.Module, x: torch.Tensor, iters: int, warmup: int) -> float:
    """Median seconds per forward."""
    for _ in range(warmup):
        model(x)
    times = []
    if x.is_cuda:
        torch.cuda.synchronize()
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            model(x)
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _mosaic_batch(n: int, size: int) -> torch.Tensor:
    from zoo.datasets.clustvit_segmentation import FashionMosaicDataModule

    dm = FashionMosaicDataModule(image_size=size, num_test=n, num_workers=0)
    dm.setup()
    return torch.stack([dm.test_set[i][0] for i in range(n)])


def run(args, on_row=None) -> list[dict]:
    """Every (size, merge) row of the table; ``on_row(rows)`` is called after each one (partial tables survive a
    time limit)."""
    dev = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.device == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for size in args.sizes.split(","):
        torch.manual_seed(0)
        if args.pretrained:
            clust = zoo.create_model(f"clustvit_{size}", pretrained=args.pretrained)
            vit = ClustViTSegmenter(**{**_shared_args(clust), "ip": None})
            vit.load_state_dict({k: v for k, v in clust.state_dict().items()
                                 if not k.startswith(("backbone.clusterer", "backbone.expand_mlp"))}, strict=True)
            x = _mosaic_batch(args.batch, args.res)
            merges = [None]
        else:
            over = {"img_size": args.res, "num_classes": args.num_classes}
            vit = zoo.create_model(f"segmenter_vit_{size}" if size in ("t", "b") else f"clustvit_{size}",
                                   **({**over, "ip": None} if size not in ("t", "b") else over))
            clust = zoo.create_model(f"clustvit_{size}", **over)
            clust.load_state_dict(vit.state_dict(), strict=False)  # same ViT + head weights
            x = (torch.rand(args.batch, 3, args.res, args.res, generator=gen) * 2 - 1)
            merges = [float(m) for m in args.merge.split(",")]
        vit, clust = vit.eval().to(dev), clust.eval().to(dev)
        x = x.to(dev)
        base = clust.backbone.clusterer.net[2].bias.detach().clone()
        amp = torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32)
        with amp:
            gf_vit = count_gflops(vit, x[:1] if args.flops_batch1 else x)
            t_vit, b_vit = _best(vit, x, [("padded", b) for b in args.backends.split(",")], args)
        for merge in merges:
            with torch.no_grad():
                clust.backbone.clusterer.net[2].bias.copy_(base)
            with amp:
                if merge is not None:
                    calibrate_merge(clust, x, merge)
                _, _, info = clust.backbone(x, return_info=True)
                merged = 1.0 - info.kept_counts.float().mean().item() / info.ids.shape[1]
                gf_cl = count_gflops(clust, x[:1] if args.flops_batch1 else x)
                t_cl, b_cl = _best(clust, x, _variants(args), args)
            row = dict(size=size.upper(), device=args.device, res=args.res, batch=args.batch, dtype=args.dtype,
                       merged_share=round(merged, 3), target_merge=merge, skipped=info.skipped,
                       seq_len=info.seq_len, tokens=info.ids.shape[1] + 1,
                       vit_img_s=args.batch / t_vit, clustvit_img_s=args.batch / t_cl,
                       speedup=t_vit / t_cl, vit_gflops=gf_vit, clustvit_gflops=gf_cl, gflops_ratio=gf_vit / gf_cl,
                       vit_backend=b_vit, clustvit_backend=b_cl, weights="trained " + args.pretrained
                       if args.pretrained else "random, calibrated merge")
            rows.append(row)
            print(json.dumps(row), flush=True)
            if on_row is not None:
                on_row(rows)
    return rows


def _shared_args(m: ClustViTSegmenter) -> dict:
    bb = m.backbone
    return dict(num_classes=m.num_classes, img_size=list(bb.img_size), embed_dims=bb.embed_dims,
                num_layers=bb.num_layers, num_heads=bb.layers[0].attn.num_heads,
                head_layers=len(m.decode_head.layers))


def _variants(args) -> list[tuple[str, str]]:
    """ClustViT (token layout, attention backend) pairs to time: the padded layout with every backend, the packed
    (Varlen) layout with ``--packed-backends``."""
    out = [("padded", b) for b in args.backends.split(",")]
    if args.packed_backends:
        out += [("packed", b) for b in args.packed_backends.split(",")]
    return out


def _best(model, x, variants, args) -> tuple[float, str]:
    best = (float("inf"), "")
    timings = {}
    for layout, b in variants:
        set_backend(model, b)
        model.backbone.token_layout = layout
        try:
            from zoo.kernels.attention.dispatch import reset_flex_shape_budget

            reset_flex_shape_budget()
            t = time_forward(model, x, args.iters, args.warmup)
        except Exception as e:  # noqa: BLE001 - a backend that cannot run this case is skipped, and said so
            print(f"{layout}/{b}: {type(e).__name__}: {str(e)[:200]}", file=sys.stderr)
            continue
        name = b if not hasattr(model.backbone, "clusterer") else f"{layout}/{b}"
        timings[name] = round(x.shape[0] / t, 2)
        if t < best[0]:
            best = (t, name)
    print(f"img/s by variant: {timings}", file=sys.stderr, flush=True)
    set_backend(model, "auto")
    model.backbone.token_layout = "padded"
    return best


def to_markdown(rows: list[dict]) -> str:
    head = ("| size | device | input | batch | dtype | weights | merged | seq (of) | ViT img/s | ClustViT img/s | "
            "speed-up | ViT GFLOPs | ClustViT GFLOPs | GFLOPs ratio | backends (ViT / ClustViT) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {r['size']} | {r['device']} | {r['res']}² | {r['batch']} | {r['dtype']} | {r['weights']} | "
        f"{100 * r['merged_share']:.0f} % | {r['seq_len']} ({r['tokens']}) | {r['vit_img_s']:.1f} | "
        f"{r['clustvit_img_s']:.1f} | **{r['speedup']:.2f}×** | {r['vit_gflops']:.2f} | {r['clustvit_gflops']:.2f} | "
        f"{r['gflops_ratio']:.2f}× | {r['vit_backend']} / {r['clustvit_backend']} |"
        for r in rows]
    return head + "\n".join(lines) + "\n"


def header(args) -> str:
    if args.device == "cuda" and torch.cuda.is_available():
        card = torch.cuda.get_device_name()
    else:
        card = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return (f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {card}; torch {torch.__version__}; "
            f"command: `python benchmarks/clustvit.py {' '.join(sys.argv[1:])}`\n\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="t,b")
    p.add_argument("--res", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dtype", default="bf16", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--merge", default="0.45,0.65", help="shares of patch tokens merged (random-weight rows)")
    p.add_argument("--num-classes", type=int, default=150)
    p.add_argument("--pretrained", default=None, help="a trained ClustViT (folder or tag); size from --sizes")
    p.add_argument("--backends", default="auto,sdpa,triton", help="attention backends to time; the fastest wins")
    p.add_argument("--packed-backends", default="", help="backends for ClustViT's packed (Varlen) layout, e.g. triton")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--flops-batch1", action="store_true", help="count FLOPs on the first image only")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    args = p.parse_args(argv)

    def save(rows: list[dict]) -> None:
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        if args.md:
            Path(args.md).parent.mkdir(parents=True, exist_ok=True)
            Path(args.md).write_text(header(args) + to_markdown(rows))

    rows = run(args, on_row=save)
    print(header(args) + to_markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
