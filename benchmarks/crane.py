"""Crane inference speed: images/s on the GPU (bf16) and ms/image on CPU cores, eager vs torch.compile vs
torch.export, for the vision path with cached text features (``Crane.for_export()``), random weights.

    python benchmarks/crane.py --device cuda --model crane_vit_l14_336 --res 518 --batch 8 --dtype bf16
    python benchmarks/crane.py --device cpu --threads 2 --model crane_tiny --res 40 --batch 1 --dtype fp32

Prints a markdown table; ``--json`` / ``--md`` write it. Also ``--export-pt2 PATH`` checks a ``.pt2`` round trip
(``zoo.export``) at the benchmarked size and reports its parity and size.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import zoo

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _time(fn, x, iters: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn(x)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="crane_vit_l14_336")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--res", type=int, default=518)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--modes", default="eager,compiled,exported")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (CPU rows)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    p.add_argument("--export-pt2", default=None, help="also zoo.export a .pt2 here (fp32) and report parity")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = DTYPES[a.dtype]
    with torch.device(a.device if a.device.startswith("cuda") else "cpu"):
        model = zoo.create_model(a.model, image_size=a.res)
    model = model.for_export().to(a.device)
    x32 = torch.randn(a.batch, 3, a.res, a.res, device=a.device)
    rows = []
    if a.export_pt2:
        from zoo.export import export

        rep = export(model, x32, a.export_pt2, "pt2", atol=1e-3)
        rows.append({"model": a.model, "mode": "export .pt2 (fp32)", "device": a.device, "res": a.res,
                     "batch": a.batch, "parity_max_abs_diff": rep.max_abs_diff,
                     "file_mb": round(rep.file_size / 1e6, 1), "export_s": round(rep.export_seconds, 1)})
        Path(a.export_pt2).unlink(missing_ok=True)
    model = model.to(dtype)
    x = x32.to(dtype)
    for mode in a.modes.split(","):
        t0 = time.perf_counter()
        if mode == "eager":
            fn = model
        elif mode == "compiled":
            fn = torch.compile(model)
        elif mode == "exported":
            fn = torch.export.export(model, (x,)).module()
        else:
            raise ValueError(f"unknown mode {mode!r}")
        with torch.no_grad():
            fn(x)
            setup = time.perf_counter() - t0
            sec = _time(fn, x, a.iters, a.warmup, a.device)
        rows.append({"model": a.model, "mode": mode, "device": a.device, "dtype": a.dtype, "res": a.res,
                     "batch": a.batch, "threads": torch.get_num_threads(), "images_per_s": round(a.batch / sec, 2),
                     "ms_per_image": round(1000 * sec / a.batch, 2), "setup_s": round(setup, 1)})
    card = torch.cuda.get_device_name() if a.device.startswith("cuda") else platform.processor() or "cpu"
    for r in rows:
        r["card"] = card
        r["torch"] = torch.__version__
    keys = sorted({k for r in rows for k in r}, key=lambda k: list(rows[0]).index(k) if k in rows[0] else 99)
    md = "| " + " | ".join(keys) + " |\n" + "|---" * len(keys) + "|\n" + "\n".join(
        "| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows)
    print(md)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    if a.md:
        Path(a.md).write_text(md + "\n")
    return rows


if __name__ == "__main__":
    main()
