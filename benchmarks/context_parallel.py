"""Context-parallel attention speed: ring (zig-zag for causal) and Ulysses vs single-GPU attention.

One long sequence (B = 1, H heads, D head dim, bf16) is split over the R ranks of torchrun. Per row (N, mask,
scheme) the script times fwd and fwd+bwd (median over ``--iters`` after ``--warmup``) and reports TFLOP/s per GPU and
the scaling efficiency ``t_single / (R * t_cp)`` against ``attention()`` on one GPU with the whole sequence (rank 0,
when it fits in memory; ``n/a`` otherwise). FLOPs count the visible area: fwd = 4 * H * D * visible pairs,
fwd+bwd = 3.5x fwd (as benchmarks/attention.py). Masks: ``causal`` and ``document`` (causal within documents of
random lengths, global ``cu_seqlens``).

    # GPUs: NVLink multicast off (NCCL_NVLS_ENABLE=0, set here too if unset)
    NCCL_NVLS_ENABLE=0 torchrun --nproc-per-node 8 benchmarks/context_parallel.py \
        --seqlens 131072 262144 524288 --out docs/benchmarks/context_parallel-h200.md
    # CPU smoke test with gloo (spawns its own processes; also checks outputs against one-process attention)
    python benchmarks/context_parallel.py --device cpu --world 2 --quick
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # before NCCL initialises: keep NVLink multicast off

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from zoo.kernels import Causal, Varlen, attention
from zoo.kernels.context_parallel import ring_attention, shard, ulysses_attention


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqlens", type=int, nargs="+", default=[131072, 262144, 524288])
    p.add_argument("--masks", nargs="+", default=["causal", "document"], choices=["causal", "document"])
    p.add_argument("--schemes", nargs="+", default=["ring", "ulysses"], choices=["ring", "ulysses"])
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=None, help="GQA: k/v heads (default = --heads)")
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--backend", default="auto", help="attention() backend for every block")
    p.add_argument("--doc-mean", type=int, default=8192, help="mean document length of the document mask")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--no-single", action="store_true", help="skip the single-GPU baseline")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--world", type=int, default=2, help="--device cpu: processes to spawn (gloo)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    p.add_argument("--out", default=None, help="write the markdown table here (rank 0)")
    p.add_argument("--json", default=None, help="write the rows as JSON here (rank 0)")
    a = p.parse_args(argv)
    if a.quick:
        a.seqlens, a.heads, a.head_dim, a.doc_mean, a.warmup, a.iters = [256], 4, 16, 48, 1, 2
        if a.device == "cpu":
            a.dtype = "float32"
    return a


def doc_boundaries(n: int, mean: int, seed: int = 0) -> torch.Tensor:
    """(S+1,) int32 random document boundaries over n tokens, lengths uniform in [1, 2 * mean]."""
    g = torch.Generator().manual_seed(seed)
    cuts, pos = [0], 0
    while pos < n:
        pos = min(n, pos + int(torch.randint(1, 2 * mean + 1, (1,), generator=g)))
        cuts.append(pos)
    return torch.tensor(cuts, dtype=torch.int32)


def visible_pairs(n: int, mask: str, cu: torch.Tensor | None) -> int:
    if mask == "causal":
        return n * (n + 1) // 2
    lens = (cu[1:] - cu[:-1]).long()
    return int((lens * (lens + 1) // 2).sum())


def timed(fn, sync, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run(a, rank: int, world: int, device: torch.device) -> list[dict]:
    dtype = getattr(torch, a.dtype)
    hkv = a.kv_heads or a.heads

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()

    rows = []
    for n in a.seqlens:
        if n % (2 * world):
            raise ValueError(f"--seqlens {n} must be divisible by 2 * world = {2 * world}")
        g = torch.Generator().manual_seed(n)
        # built on CPU with one seed so every rank holds a shard of the same global tensors
        q = torch.randn(1, a.heads, n, a.head_dim, generator=g, dtype=torch.float32).to(dtype)
        k = torch.randn(1, hkv, n, a.head_dim, generator=g, dtype=torch.float32).to(dtype)
        v = torch.randn(1, hkv, n, a.head_dim, generator=g, dtype=torch.float32).to(dtype)
        for mask_name in a.masks:
            cu = doc_boundaries(n, a.doc_mean) if mask_name == "document" else None
            flops_f = 4.0 * a.heads * a.head_dim * visible_pairs(n, mask_name, cu)
            full_mask = Causal() if cu is None else Varlen(cu.to(device), cu.to(device)) & Causal()
            single = {"fwd": None, "fwdbwd": None}
            if rank == 0 and not a.no_single:
                try:
                    qs, ks, vs = (t.to(device).requires_grad_() for t in (q, k, v))
                    def one(qs=qs, ks=ks, vs=vs, m=full_mask):
                        return attention(qs, ks, vs, m, backend=a.backend)

                    def dev_sync():
                        if device.type == "cuda":
                            torch.cuda.synchronize(device)

                    single["fwd"] = timed(lambda one=one: one().sum(), dev_sync, a.warmup, a.iters)
                    single["fwdbwd"] = timed(lambda one=one: one().sum().backward(), dev_sync, a.warmup, a.iters)
                    ref = one().detach()
                    qs = ks = vs = one = None
                except torch.OutOfMemoryError:
                    single, ref = {"fwd": None, "fwdbwd": None}, None
                    torch.cuda.empty_cache()
            else:
                ref = None
            dist.barrier()
            for scheme in a.schemes:
                layout = "zigzag" if scheme == "ring" else "contiguous"
                ql, kl, vl = (shard(t, rank, world, layout).to(device).requires_grad_() for t in (q, k, v))
                if scheme == "ring":
                    def f(ql=ql, kl=kl, vl=vl, cu=cu, layout=layout):
                        return ring_attention(ql, kl, vl, causal=True, cu_seqlens=cu, layout=layout,
                                              backend=a.backend)
                else:
                    if a.heads % world or hkv % world:
                        rows.append({"N": n, "mask": mask_name, "scheme": scheme, "error": "heads % world != 0"})
                        continue

                    def f(ql=ql, kl=kl, vl=vl, m=full_mask, layout=layout):
                        return ulysses_attention(ql, kl, vl, m, layout=layout, backend=a.backend)
                row = {"N": n, "mask": mask_name, "scheme": scheme, "world": world, "layout": layout}
                try:
                    t_f = timed(lambda f=f: f().sum(), sync, a.warmup, a.iters)
                    t_fb = timed(lambda f=f: f().sum().backward(), sync, a.warmup, a.iters)
                    o = f().detach()
                except torch.OutOfMemoryError as e:
                    rows.append({**row, "error": f"OOM: {str(e).splitlines()[0]}"})
                    continue
                # correctness vs the single-device output (gathered to rank 0)
                outs = [torch.empty_like(o) for _ in range(world)] if world > 1 else [o]
                if world > 1:
                    dist.all_gather(outs, o.contiguous())
                if ref is not None:
                    full = _unshard(outs, layout)[0][None]
                    row["max_abs_err_vs_single"] = float((full.float() - ref.float()).abs().max())
                row.update(
                    fwd_ms=t_f * 1e3, fwdbwd_ms=t_fb * 1e3,
                    fwd_tflops_per_gpu=flops_f / t_f / world / 1e12,
                    fwdbwd_tflops_per_gpu=3.5 * flops_f / t_fb / world / 1e12,
                )
                if single["fwd"] is not None:
                    row.update(single_fwd_ms=single["fwd"] * 1e3, single_fwdbwd_ms=single["fwdbwd"] * 1e3,
                               eff_fwd=single["fwd"] / (world * t_f), eff_fwdbwd=single["fwdbwd"] / (world * t_fb))
                rows.append(row)
                ql = kl = vl = f = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def _unshard(outs: list[torch.Tensor], layout: str) -> list[torch.Tensor]:
    """Per-rank (1, H, n, D) outputs -> list of one (H, N, D) tensor in global order."""
    from zoo.kernels.context_parallel import contiguous_merge, zigzag_merge

    merged = zigzag_merge(outs, dim=2) if layout == "zigzag" else contiguous_merge(outs, dim=2)
    return [merged[0]]


def table(rows: list[dict], a, world: int, device: str) -> str:
    head = (f"Context-parallel attention, {world} x {device}, B=1, H={a.heads}, Hkv={a.kv_heads or a.heads}, "
            f"D={a.head_dim}, {a.dtype}, backend={a.backend}, NCCL_NVLS_ENABLE={os.environ.get('NCCL_NVLS_ENABLE')}"
            f", {datetime.date.today()}\n\n")
    cols = ["N", "mask", "scheme", "fwd ms", "fwd+bwd ms", "fwd TFLOP/s/GPU", "fwd+bwd TFLOP/s/GPU",
            "1-GPU fwd+bwd ms", "eff fwd", "eff fwd+bwd", "max err vs 1-GPU"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(x, f="{:.2f}"):
        return "n/a" if x is None else f.format(x)

    for r in rows:
        if "error" in r:
            out.append(f"| {r['N']} | {r['mask']} | {r['scheme']} | " + " | ".join([r["error"]] + [""] * 7) + " |")
            continue
        out.append("| " + " | ".join([
            str(r["N"]), r["mask"], f"{r['scheme']} ({r['layout']})", fmt(r["fwd_ms"]), fmt(r["fwdbwd_ms"]),
            fmt(r["fwd_tflops_per_gpu"], "{:.3g}"), fmt(r["fwdbwd_tflops_per_gpu"], "{:.3g}"),
            fmt(r.get("single_fwdbwd_ms")), fmt(r.get("eff_fwd"), "{:.0%}"), fmt(r.get("eff_fwdbwd"), "{:.0%}"),
            fmt(r.get("max_abs_err_vs_single"), "{:.1e}")]) + " |")
    return head + "\n".join(out) + "\n"


def _main_rank(rank: int, world: int, a, port: int | None) -> None:
    if a.device == "cpu":
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        torch.set_num_threads(1)
        dist.init_process_group("gloo", rank=rank, world_size=world)
        device = torch.device("cpu")
    else:
        if os.environ.get("NCCL_NVLS_ENABLE") != "0":
            raise RuntimeError("set NCCL_NVLS_ENABLE=0 (NVLink multicast must stay off on these machines)")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=device)
        rank, world = dist.get_rank(), dist.get_world_size()
    try:
        rows = run(a, rank, world, device)
        if rank == 0:
            md = table(rows, a, world, torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (gloo)")
            print(md)
            if a.out:
                Path(a.out).parent.mkdir(parents=True, exist_ok=True)
                Path(a.out).write_text(md)
            if a.json:
                Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
            if a.device == "cpu":
                bad = [r for r in rows if r.get("max_abs_err_vs_single", 0) > 1e-4 or "error" in r]
                if bad:
                    raise SystemExit(f"CPU smoke test: mismatch vs one-process attention: {bad}")
    finally:
        dist.destroy_process_group()


def main(argv=None) -> None:
    a = parse(argv)
    if a.device == "cpu":
        import torch.multiprocessing as mp

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(_main_rank, args=(a.world, a, port), nprocs=a.world, join=True)
    else:
        _main_rank(0, 0, a, None)


if __name__ == "__main__":
    main()
