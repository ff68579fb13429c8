"""VideoNSA's scaling claim at small scale: a tiny VLM (frame ViT + few-layer LM) trained from scratch on synthetic
long-video QA (``zoo.datasets.video_qa``: Fashion-MNIST frames with 2-3 needle items; which came first / last, how
many times), once with dense attention and once with VideoNSA attention (clean routing: vision rows on
``zoo.kernels.nsa`` with mean compression over 64, top-k blocks of 64, a causal window; text rows dense), at equal
steps. Then accuracy and prefill time against video length, including lengths beyond the training length.

    python benchmarks/videonsa_demo.py --budget 60 --out-dir runs/videonsa_demo      # GPU, ~2 x 60 s + eval
    python benchmarks/videonsa_demo.py --device cpu --smoke                           # seconds, tiny sizes
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_header import emit_report, run_header  # noqa: E402

from zoo.datasets.video_qa import ANSWERS, VOCAB, load_frames, make_batch  # noqa: E402
from zoo.models.videonsa import TinyVideoVLM  # noqa: E402

QNAMES = ("first", "last", "count")


def build(args, attention: str) -> TinyVideoVLM:
    torch.manual_seed(args.seed)
    return TinyVideoVLM(vocab_size=VOCAB, num_answers=ANSWERS, dim=args.dim, depth=args.depth, heads=args.heads,
                        kv_heads=args.kv_heads, mlp=args.mlp, vit_dim=args.vit_dim, attention=attention,
                        block_counts=args.block_counts, window_size=args.window, backend="auto")


def train(model, frames, args, device, steps: int | None, budget: float):
    """AdamW + warmup/cosine, bf16 autocast on CUDA. Runs ``steps`` steps (stopping early past 2 x ``budget``
    seconds, which the table then shows as unequal steps), or as many as fit in ``budget`` seconds when steps is
    None. Returns (steps done, seconds, losses)."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05, betas=(0.9, 0.95))
    total = args.max_steps  # the same schedule (a function of the step) for both runs
    warm = max(1, min(100, total // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))))
    g = torch.Generator().manual_seed(args.seed)
    losses, t0, n = [], time.time(), 0
    amp = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    while True:
        if steps is not None and (n >= steps or time.time() - t0 > 2 * budget):  # equal steps, capped at 2x time
            break
        if steps is None and (time.time() - t0 > budget or n >= args.max_steps):
            break
        b = make_batch(frames, args.batch, args.frames, g, device)
        with amp:
            logits = model(b["frames"], b["question"])
        loss = F.cross_entropy(logits.float(), b["answer"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        n += 1
        if n % 50 == 0:
            print(f"  step {n} loss {sum(losses[-50:]) / 50:.3f} ({time.time() - t0:.0f} s)", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n, time.time() - t0, losses


@torch.no_grad()
def evaluate(model, frames, args, device, num_frames: int):
    """Accuracy (overall and per question type) on ``args.eval_samples`` test videos of ``num_frames`` frames, and
    the prefill time of one video (ms, median of 3)."""
    model.eval()
    g = torch.Generator().manual_seed(args.seed + 1000 + num_frames)
    correct = torch.zeros(3)
    count = torch.zeros(3)
    bs = max(1, min(args.batch, args.eval_tokens // (num_frames * 16)))
    amp = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    done = 0
    while done < args.eval_samples:
        b = make_batch(frames, min(bs, args.eval_samples - done), num_frames, g, device)
        with amp:
            pred = model(b["frames"], b["question"]).argmax(-1)
        ok = (pred == b["answer"]).float().cpu()
        for q in range(3):
            m = b["qtype"].cpu() == q
            correct[q] += ok[m].sum()
            count[q] += m.sum()
        done += len(ok)
    one = make_batch(frames, 1, num_frames, g, device)
    ts = []
    for _ in range(4):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with amp:
            model(one["frames"], one["question"])
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(1e3 * (time.perf_counter() - t0))
    per = (correct / count.clamp(min=1)).tolist()
    return {"acc": float(correct.sum() / count.sum()), **{f"acc_{n}": a for n, a in zip(QNAMES, per)},
            "prefill_ms": sorted(ts[1:])[1], "tokens": 4 + num_frames * 16 + 1}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget", type=float, default=60.0, help="seconds of dense training; NSA gets the same steps")
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--frames", type=int, default=64, help="training video length (16 tokens per frame)")
    ap.add_argument("--eval-frames", default="64,128,256,512")
    ap.add_argument("--eval-samples", type=int, default=512)
    ap.add_argument("--eval-tokens", type=int, default=65536, help="tokens per evaluation batch")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--mlp", type=int, default=1408)
    ap.add_argument("--vit-dim", type=int, default=192)
    ap.add_argument("--block-counts", type=int, default=4)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--source", default="auto", help="Fashion-MNIST location (auto / embedded / debian / folder)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny model and sizes (CPU smoke run)")
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    if args.smoke:
        args.budget, args.max_steps, args.frames, args.eval_frames = 5.0, 4, 8, "8,16"
        args.eval_samples, args.batch, args.dim, args.depth, args.heads, args.kv_heads = 8, 4, 64, 2, 4, 2
        args.mlp, args.vit_dim = 128, 32
    device = torch.device(args.device)
    tr = {c: v.to(device) for c, v in load_frames("train", args.source).items()}
    te = {c: v.to(device) for c, v in load_frames("test", args.source).items()}
    lengths = [int(x) for x in args.eval_frames.split(",")]
    results: dict[str, dict] = {}
    steps = None
    for name, mode in (("dense", "dense"), ("videonsa", "clean")):
        model = build(args, mode)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {params / 1e6:.1f}M parameters, training", flush=True)
        n, secs, losses = train(model, tr, args, device, steps, args.budget)
        steps = n if steps is None else steps
        tail = losses[-20:]
        res = {"params": params, "steps": n, "train_s": secs, "final_loss": sum(tail) / max(1, len(tail)), "eval": {}}
        for f in lengths:
            try:
                res["eval"][f] = evaluate(model, te, args, device, f)
            except torch.cuda.OutOfMemoryError:
                res["eval"][f] = {"acc": float("nan"), "prefill_ms": float("nan"), "tokens": 4 + 16 * f + 1}
            print(f"  {f} frames: {res['eval'][f]}", flush=True)
        results[name] = res
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    lines = [run_header("benchmarks/videonsa_demo.py: tiny VLM, synthetic needle video QA, dense vs VideoNSA", device,
                        f", train {args.frames} frames ({4 + 16 * args.frames + 1} tokens), batch {args.batch}, "
                        f"{results['dense']['steps']} / {results['videonsa']['steps']} steps, "
                        f"block_counts {args.block_counts}, "
                        f"window {args.window}"), ""]
    lines += ["| model | params | steps | train s | final loss |", "|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['params'] / 1e6:.1f}M | {r['steps']} | {r['train_s']:.0f} | "
                     f"{r['final_loss']:.3f} |")
    lines += ["", "| frames | tokens | dense acc | VideoNSA acc | dense first/last/count | VideoNSA first/last/count | "
              "dense prefill ms | VideoNSA prefill ms |", "|---|---|---|---|---|---|---|---|"]
    for f in lengths:
        d, s = results["dense"]["eval"][f], results["videonsa"]["eval"][f]
        per = lambda r: "/".join(f"{r.get('acc_' + q, float('nan')):.2f}" for q in QNAMES)  # noqa: E731
        mark = " (train)" if f == args.frames else ""
        lines.append(f"| {f}{mark} | {d['tokens']} | {d['acc']:.3f} | {s['acc']:.3f} | {per(d)} | {per(s)} | "
                     f"{d['prefill_ms']:.1f} | {s['prefill_ms']:.1f} |")
    lines.append("")
    lines.append("Chance: first/last 0.25; count answers 0-3 (mostly 0 or 1).")
    out = Path(args.out_dir) if args.out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "videonsa_demo.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    emit_report(lines, str(out / "videonsa_demo.md") if out else None)


if __name__ == "__main__":
    main()
