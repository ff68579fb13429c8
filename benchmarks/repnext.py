"""CPU batch-1 latency of RepNeXt (training form vs official fuse vs full fuse) and timm's RepViT, in one run.

    python benchmarks/repnext.py [--runs 50] [--warmup 10] [--threads 2] [--out docs/benchmarks/repnext_cpu.md]

Models are timed round-robin (one forward of each per round) so that load changes on a shared machine hit all rows
alike; the table reports the median, the minimum and the 10th-90th percentile per model. Weights are random (latency does not
depend on them); BatchNorm statistics are randomised so that fusion does real work.
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn

try:
    import zoo  # noqa: F401
except ImportError:  # run from a source checkout without installing: the repo root holds zoo/
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_candidates(include_merged: bool = True) -> list[tuple[str, str, nn.Module]]:
    """(model, form, module) rows, all in eval mode."""
    import timm
    from timm.utils import reparameterize_model

    import zoo

    rows = []
    for name in ("repnext_m0", "repnext_m1"):
        torch.manual_seed(0)
        base = _randomize_bn(zoo.create_model(name)).eval()
        rows.append((name, "training form", base))
        rows.append((name, "official fuse", copy.deepcopy(base).fuse(level="official")))
        rows.append((name, "full fuse", copy.deepcopy(base).fuse(level="full")))
        if include_merged and name == "repnext_m0":
            # Only exact when every 1x11 bias is zero (never the case for trained weights): shows what the
            # single-11x11 form would cost, not a deployable option for released checkpoints.
            merged = copy.deepcopy(base)
            with torch.no_grad():
                for mod in merged.modules():
                    if type(mod).__name__ == "ChunkConv":
                        mod.conv_l[0].bias.zero_()
            rows.append((name, "full fuse + 11x11 merge (1x11 bias zeroed)",
                         merged.fuse(level="full", merge_large_kernel=True)))
    for name in ("repvit_m0_9", "repvit_m1_0"):
        torch.manual_seed(0)
        base = _randomize_bn(timm.create_model(name)).eval()
        rows.append((name, "training form", base))
        rows.append((name, "reparameterize_model", reparameterize_model(base)))
    return rows


def _time_rows(rows, runs: int, warmup: int, threads: int, size: int) -> str:
    """Time every candidate with ``threads`` torch threads; returns a markdown section."""
    torch.set_num_threads(threads)
    x = torch.randn(1, 3, size, size)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times: list[list[float]] = [[] for _ in rows]
    with torch.inference_mode():
        for _ in range(warmup):
            for _, _, m in rows:
                m(x)
        for _ in range(runs):
            for i, (_, _, m) in enumerate(rows):
                t0 = time.perf_counter()
                m(x)
                times[i].append((time.perf_counter() - t0) * 1e3)
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    medians = [statistics.median(t) for t in times]
    train_median = {name: med for (name, form, _), med in zip(rows, medians) if form == "training form"}
    lines = [
        "| model | form | params | median ms | min ms | p10-p90 ms | speed-up vs training form (median) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (name, form, m), med, t in zip(rows, medians, times):
        q = statistics.quantiles(t, n=10, method="inclusive")
        lines.append(f"| {name} | {form} | {_params(m) / 1e6:.3f}M | {med:.2f} | {min(t):.2f} | {q[0]:.2f}-{q[-1]:.2f} | "
                     f"{train_median[name] / med:.2f}x |")
    return "\n".join([
        f"## torch threads: {threads}",
        "",
        f"1-minute load average before/after: {load_before:.1f} / {load_after:.1f}",
        "",
        *lines,
        "",
    ])


def run(runs: int = 50, warmup: int = 10, threads=(2,), size: int = 224, include_merged: bool = True) -> str:
    """Time every candidate for each thread count; returns the markdown report."""
    import timm

    rows = build_candidates(include_merged)
    sections = [_time_rows(rows, runs, warmup, t, size) for t in threads]
    header = [
        "# RepNeXt CPU latency (batch 1)",
        "",
        f"- date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {_cpu_name()} ({os.cpu_count()} logical cores visible)",
        f"- torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}",
        f"- input 1x3x{size}x{size} float32, `torch.inference_mode()`, eager; {warmup} warm-up rounds, median of "
        f"{runs} rounds, models timed round-robin",
        "- a loaded machine inflates absolute numbers (with 2 threads on 2 busy cores, OpenMP barrier waits dominate);"
        " compare rows within one section",
        f"- command: `python benchmarks/repnext.py --threads {' '.join(map(str, threads))} --runs {runs} "
        f"--warmup {warmup} --out docs/benchmarks/repnext_cpu.md`",
        "",
    ]
    return "\n".join(header + sections)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[2], help="one section per thread count")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--no-merged", action="store_true", help="skip the 11x11-merge illustration row")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    if args.runs < 2 or args.warmup < 0 or min(args.threads) < 1:
        raise ValueError("--runs must be >= 2, --warmup >= 0, --threads >= 1")
    report = run(args.runs, args.warmup, tuple(args.threads), args.size, not args.no_merged)
    print(report)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
