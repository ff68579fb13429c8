"""Fused RNN-T joint + loss (zoo.kernels.rnnt, Triton) vs the materialised joint + torchaudio ``rnnt_loss``.

    python benchmarks/transducer_loss.py                       # B16 T250 U80 V1024, joint 512, on the GPU
    python benchmarks/transducer_loss.py --out docs/benchmarks/transducer-loss-h200.md --json r.json
    python benchmarks/transducer_loss.py --smoke               # tiny CPU run under the Triton interpreter

Per row, the same inputs: a = audio_proj(enc) (B, T, J), l = label_proj(labels) (B, U+1, J), W (V, J), bias (V,).
- ``torchaudio``: ``logits = tanh(a[:, :, None] + l[:, None]) @ W.T + bias`` in the input dtype (the bf16 rows: as
  under bf16 autocast), cast to fp32 (rnnt_loss rejects bf16), ``torchaudio.functional.rnnt_loss``; fp32 rows with
  TF32 matmuls allowed.
- ``fused``: ``fused_rnnt_loss`` (bf16 rows: bf16 tensor-core operands; fp32 rows: tf32).
Time: fwd+bwd (loss.backward() to a, l, W, bias), ``triton.testing.do_bench`` median. Extra peak memory: peak
allocated during one fwd+bwd minus what was allocated before it (inputs, parameters), against the fp32 logits
tensor B*T*(U+1)*V*4 bytes. Agreement: fused (exact fp32 "ieee" dots) vs torchaudio (fp32, no TF32), loss and
gradients, max relative error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a source checkout

from benchmarks.run_header import emit_report, run_header  # noqa: E402
from zoo.kernels.rnnt import fused_rnnt_loss, rnnt_joint_loss_reference  # noqa: E402


def make_inputs(b, t, u, j, v, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, t, j, generator=g).to(device, dtype).requires_grad_()
    lab = torch.randn(b, u + 1, j, generator=g).to(device, dtype).requires_grad_()
    w = (torch.randn(v, j, generator=g) * j ** -0.5).to(device).requires_grad_()
    bias = (0.1 * torch.randn(v, generator=g)).to(device).requires_grad_()
    y = torch.randint(1, v, (b, u), generator=g).to(device, torch.int32)
    tlen = torch.randint(int(0.8 * t), t + 1, (b,), generator=g).to(device, torch.int32)
    tlen[0] = t
    ulen = torch.randint(int(0.8 * u), u + 1, (b,), generator=g).to(device, torch.int32)
    ulen[0] = u
    return a, lab, w, bias, y, tlen, ulen


def torchaudio_step(a, lab, w, bias, y, tlen, ulen):
    """The transducer's own path: joint in the input dtype, fp32 logits, torchaudio."""
    import torchaudio

    logits = torch.nn.functional.linear(torch.tanh(a[:, :, None] + lab[:, None]), w.to(a.dtype), bias.to(a.dtype))
    return torchaudio.functional.rnnt_loss(logits.float(), y, tlen, ulen, blank=0, reduction="mean")


def fused_step(a, lab, w, bias, y, tlen, ulen, precision=None):
    return fused_rnnt_loss(a, lab, w, bias, y, tlen, ulen, blank=0, reduction="mean", precision=precision)


def fwd_bwd(fn, ins):
    def run():
        for x in ins[:4]:
            x.grad = None
        fn(*ins).backward()
    return run


def extra_peak_bytes(run, device) -> float:
    if device.type != "cuda":
        return float("nan")
    run()  # warm (compile, autotune, allocator)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - base)


def time_ms(run, device) -> float:
    if device.type != "cuda":
        import time

        t0 = time.perf_counter()
        run()
        return (time.perf_counter() - t0) * 1e3
    import triton

    return float(triton.testing.do_bench(run, warmup=25, rep=100))


def agreement(b, t, u, j, v, device) -> dict:
    """Max relative errors of loss and gradients: fused with exact fp32 dots vs the fp32 torchaudio path."""
    ins = make_inputs(b, t, u, j, v, device, torch.float32, seed=1)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        ref = rnnt_joint_loss_reference(*ins, blank=0, reduction="none")
        gr = torch.autograd.grad(ref.sum(), ins[:4])
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    got = fused_rnnt_loss(*ins, blank=0, reduction="none", precision="ieee")
    gg = torch.autograd.grad(got.sum(), ins[:4])
    out = {"loss": ((got - ref).abs().max() / ref.abs().max()).item()}
    for name, x, r in zip(("d_a", "d_l", "d_W", "d_bias"), gg, gr):
        out[name] = ((x - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="16,250,80,512,1024", help="B,T,U,J,V")
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (Triton interpreter)")
    ap.add_argument("--variants", default="", help="extra fused rows with other tiles, e.g. '512x32' = "
                    "ZOO_RNNT_BJ=512 ZOO_RNNT_BV=32 (joint columns kept in registers x vocabulary chunk)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    b, t, u, j, v = (2, 6, 3, 16, 12) if args.smoke else map(int, args.shape.split(","))
    dtypes = ["float32"] if args.smoke else args.dtypes.split(",")
    torch.backends.cuda.matmul.allow_tf32 = True
    logits_bytes = b * t * (u + 1) * v * 4
    lines = [f"# {run_header('RNN-T joint + loss', device)}", "",
             f"Shape B{b} T{t} U{u} joint {j} V{v}: fp32 logits tensor {logits_bytes / 1e9:.3f} GB. "
             "fwd+bwd to a, l, W, bias; extra peak = peak during one fwd+bwd minus memory allocated before it.", "",
             "| inputs | impl | fwd+bwd ms | extra peak GB | extra peak / logits | time / torchaudio |",
             "|---|---|---|---|---|---|"]
    res = {"shape": dict(B=b, T=t, U=u, J=j, V=v), "logits_bytes": logits_bytes, "rows": []}
    for dt in dtypes:
        dtype = getattr(torch, dt)
        ins = make_inputs(b, t, u, j, v, device, dtype)
        row = {}
        impls = [("torchaudio", torchaudio_step, None), ("fused", fused_step, None)]
        for var in filter(None, args.variants.split(",")):
            bj, bv = var.split("x")
            impls.append((f"fused BJ{bj} BV{bv}", fused_step, {"ZOO_RNNT_BJ": bj, "ZOO_RNNT_BV": bv}))
        for name, fn, env in impls:
            old_env = {k: os.environ.get(k) for k in (env or {})}
            os.environ.update(env or {})
            run = fwd_bwd(fn, ins)
            try:
                mem = extra_peak_bytes(run, device)
                ms = time_ms(run, device)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: reported in the table
                print(f"{dt} {name}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                ms, mem = float("nan"), float("nan")
            for k, val in old_env.items():
                if val is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = val
            row[name] = {"ms": ms, "extra_peak_bytes": mem}
            print(f"{dt} {name}: {ms:.3f} ms, extra peak {mem / 1e9:.3f} GB", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        for name in row:
            r = row[name]
            lines.append(f"| {dt} | {name} | {r['ms']:.3f} | {r['extra_peak_bytes'] / 1e9:.3f} | "
                         f"{r['extra_peak_bytes'] / logits_bytes:.2f}× | {r['ms'] / row['torchaudio']['ms']:.2f}× |")
        res["rows"].append({"dtype": dt, **row})
        del ins
    sb, st, su, sj, sv = (2, 6, 3, 16, 12) if args.smoke else (4, 120, 40, j, v)
    agr = agreement(sb, st, su, sj, sv, device)
    res["agreement"] = {"shape": [sb, st, su, sj, sv], **agr}
    lines += ["", f"Agreement, fused (exact fp32 dots) vs torchaudio (fp32), B{sb} T{st} U{su} J{sj} V{sv}, "
              "max |diff| / max |ref|: " + ", ".join(f"{k} {x:.1e}" for k, x in agr.items())]
    emit_report(lines, args.out)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
