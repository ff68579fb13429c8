"""GLA speed: ours (``zoo.kernels.gla``, chunk / recurrent) vs fla-core ``chunk_gla`` / ``fused_recurrent_gla``.

Rows (issue 4): B8 T4096 H16 K=V=128 and B1 T32768 H16 K=V=128, forward and forward+backward, bf16 q/k/v, fp32 log
gates, fp32 initial state. Timing: ``triton.testing.do_bench`` median on CUDA (wall-clock median on CPU).
fla-core uses the (B, T, H, K) layout; its inputs are made in that layout so no transpose is timed.

    python benchmarks/gla.py                         # H200: every row, fla-core when importable
    python benchmarks/gla.py --device cpu --quick    # smoke test without a GPU (tiny shapes, PyTorch fallback)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from benchmarks.profile_table import kernel_table  # noqa: E402
from zoo.kernels.gla import gla  # noqa: E402

ROWS = [  # (B, T, H, K, V)
    (8, 4096, 16, 128, 128),
    (1, 32768, 16, 128, 128),
]
QUICK_CPU_ROWS = [(1, 64, 2, 16, 16), (1, 128, 2, 32, 32)]


def _fla():
    try:
        from fla.ops.gla import chunk_gla, fused_recurrent_gla

        return chunk_gla, fused_recurrent_gla
    except Exception as e:  # noqa: BLE001 - optional peer
        return f"fla-core not importable: {type(e).__name__}"


def _bench(fn, device, quick, label=""):
    """Median ms; the first (compiling, autotuning) call is timed apart and printed to stderr."""
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    print(f"  [{time.strftime('%H:%M:%S')}] first call {label}: {time.perf_counter() - t0:.1f} s", file=sys.stderr,
          flush=True)
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=10 if quick else 25, rep=50 if quick else 200)
    times = []
    for _ in range(2 if quick else 5):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _make(b, t, h, kd, vd, device, dtype, head_first):
    shape_k = (b, h, t, kd) if head_first else (b, t, h, kd)
    shape_v = (b, h, t, vd) if head_first else (b, t, h, vd)
    q = torch.randn(shape_k, device=device, dtype=dtype)
    k = torch.randn(shape_k, device=device, dtype=dtype) * kd ** -0.5
    v = torch.randn(shape_v, device=device, dtype=dtype)
    g = F.logsigmoid(torch.randn(shape_k, device=device, dtype=torch.float32)) / 16
    s0 = torch.randn(b, h, kd, vd, device=device, dtype=torch.float32) * 0.02
    return q, k, v, g, s0


def _fwd_bwd(call, inputs):
    def run():
        leaves = [x.requires_grad_() for x in inputs]
        o, s = call(*leaves)
        (o.float().sum() + s.sum()).backward()
        for x in leaves:
            x.grad = None
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="short timing (and tiny shapes on CPU)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--out", default="", help="also write the table (markdown) here, rewritten after every row")
    ap.add_argument("--profile", action="store_true", help="also print a kernel-time table of ours chunk (stderr)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if device.type == "cuda" else torch.float32
    rows = QUICK_CPU_ROWS if device.type == "cpu" else ROWS
    fla = _fla() if device.type == "cuda" else "fla-core runs on CUDA only"
    lines = []

    def emit(line):
        print(line, flush=True)
        lines.append(line)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")

    import triton

    emit(f"# GLA benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: torch {torch.__version__}, "
         f"triton {triton.__version__}, device {device}"
         f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, dtype {dtype}")
    if isinstance(fla, str):
        emit(f"# peer: {fla}")
    emit("| shape | pass | ours chunk (ms) | ours recurrent (ms) | fla chunk_gla (ms) | fla fused_recurrent_gla (ms) "
         "| fla chunk / ours chunk |")
    emit("|---|---|---|---|---|---|---|")
    for b, t, h, kd, vd in rows:
        ours_in = _make(b, t, h, kd, vd, device, dtype, head_first=True)
        fla_in = _make(b, t, h, kd, vd, device, dtype, head_first=False)
        for pass_ in ("fwd", "fwd+bwd"):
            res = {}
            for mode in ("chunk", "recurrent"):
                def call(q, k, v, g, s0, mode=mode):
                    return gla(q, k, v, g, initial_state=s0, output_final_state=True, mode=mode)
                fn = _fwd_bwd(call, ours_in) if pass_ == "fwd+bwd" else (lambda call=call, xs=ours_in: call(*xs))
                try:
                    res[f"ours {mode}"] = _bench(fn, device, args.quick, f"ours {mode} {pass_}")
                except Exception as e:  # noqa: BLE001 - report and continue
                    res[f"ours {mode}"] = f"error: {type(e).__name__}: {e}"[:80]
            for name, idx in (("fla chunk", 0), ("fla recurrent", 1)):
                if isinstance(fla, str):
                    res[name] = "n/a"
                    continue

                def call(q, k, v, g, s0, f=fla[idx]):
                    return f(q, k, v, g, initial_state=s0, output_final_state=True)
                fn = _fwd_bwd(call, fla_in) if pass_ == "fwd+bwd" else (lambda call=call, xs=fla_in: call(*xs))
                try:
                    res[name] = _bench(fn, device, args.quick, f"{name} {pass_}")
                except Exception as e:  # noqa: BLE001
                    res[name] = f"error: {type(e).__name__}: {e}"[:80]
            oc, fc = res["ours chunk"], res["fla chunk"]
            ratio = f"{fc / oc:.2f}x" if isinstance(oc, float) and isinstance(fc, float) else "—"
            cells = [f"{x:.4f}" if isinstance(x, float) else x for x in
                     (res["ours chunk"], res["ours recurrent"], res["fla chunk"], res["fla recurrent"])]
            emit(f"| B{b} T{t} H{h} K{kd} V{vd} | {pass_} | " + " | ".join(cells) + f" | {ratio} |")
            if args.profile:
                def chunk(q, k, v, g, s0):
                    return gla(q, k, v, g, initial_state=s0, output_final_state=True, mode="chunk")
                fn = _fwd_bwd(chunk, ours_in) if pass_ == "fwd+bwd" else (lambda: chunk(*ours_in))
                print(f"  profile, ours chunk {pass_}: " + kernel_table(fn, str(device)), file=sys.stderr)


if __name__ == "__main__":
    main()
