"""CPU batch-1 latency of AASIST / AASIST-L per 4-second clip (64,600 samples): eager vs exported (.pt2, .pte).

    python benchmarks/aasist.py [--runs 10] [--threads 2] [--out docs/benchmarks/aasist_cpu.md] [--no-pte]

Loads the authors' weights from hub/zoo-models/<arch>.asvspoof2019 when present (random init otherwise), exports
with ``zoo.export`` (which checks exported-vs-eager parity) and times each artefact.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

import zoo
from zoo.export import export

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, x, runs: int, warmup: int = 2) -> float:
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn(x)
            ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "aasist_cpu.md"))
    p.add_argument("--no-pte", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 64600) * 0.1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("aasist", "aasist_l"):
            folder = ROOT / "hub" / "zoo-models" / f"{arch}.asvspoof2019"
            model = zoo.create_model(arch, pretrained=str(folder)) if folder.is_dir() else zoo.create_model(arch)
            model.eval()
            eager = _time(lambda t: model(t), x, args.runs)
            rows.append((arch, "eager", eager, "-", "-"))
            rep = export(model, x, Path(tmp) / f"{arch}.pt2", "pt2")
            prog = torch.export.load(str(rep.path)).module()
            rows.append((arch, ".pt2 (torch.export)", _time(prog, x, args.runs), f"{rep.max_abs_diff:.2e}",
                         f"{rep.file_size / 1e6:.2f} MB"))
            print(rows[-2:], flush=True)
            if not args.no_pte:
                try:
                    rep = export(model, x, Path(tmp) / f"{arch}.pte", "pte")
                    from executorch.runtime import Runtime

                    method = Runtime.get().load_program(str(rep.path)).load_method("forward")
                    rows.append((arch, ".pte (ExecuTorch XNNPACK)", _time(lambda t: method.execute([t]), x, args.runs),
                                 f"{rep.max_abs_diff:.2e}", f"{rep.file_size / 1e6:.2f} MB"))
                except Exception as e:  # noqa: BLE001 - report, keep the other numbers
                    rows.append((arch, ".pte (ExecuTorch XNNPACK)", float("nan"), f"failed: {type(e).__name__}: {e}"[:120], "-"))
                print(rows[-1], flush=True)
    lines = [
        "# AASIST / AASIST-L CPU latency (batch 1, one 4.04 s clip = 64,600 samples)", "",
        f"`python benchmarks/aasist.py --runs {args.runs} --threads {args.threads}`; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {args.threads} threads, median of {args.runs} runs. Weights: the "
        "authors' (hub/zoo-models/*.asvspoof2019). Max |diff| = exported vs eager outputs (embedding and logits).", "",
        "Note: measured on a shared 2-core machine under load from other jobs; treat absolute numbers as rough.", "",
        "| model | runtime | latency ms | max abs diff vs eager | file |", "|---|---|---|---|---|",
    ] + [f"| {a} | {r} | {t:.1f} | {d} | {s} |" for a, r, t, d, s in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
