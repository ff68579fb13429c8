"""Time the zoo's Triton attention kernels against SDPA (flash, cuDNN) on one GPU; prints markdown rows + JSON.

    python benchmarks/attention_triton_tune.py [--out results.json] [--quick]

Shapes follow issue 3: dense full/causal D64/D128 at B8 H16 N2048 and B2 H16 N8192; sliding causal window 512 at
B1 H16 N32768 D128; block-sparse 1024-token chunk routing (own chunk causal + 3 earlier chunks) at B1 H16 N65536
D128. bf16. FLOPs: 4·B·H·Sq·Sk·D × visible fraction (exact pair count for window / chunk routing; ½ for causal as
in the peer table); fwd+bwd = 3.5× fwd.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from zoo.kernels.attention.triton_bwd import _attn_bwd_dkdv_kernel, _attn_bwd_dq_kernel, attention_bwd
from zoo.kernels.attention.triton_fwd import _attn_fwd_kernel, attention_fwd

RESULTS = []


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100)


def record(workload, impl, ms, flops, **extra):
    tf = flops / ms * 1e-9 if flops else None
    RESULTS.append(dict(workload=workload, impl=impl, ms=round(ms, 4), tflops=round(tf, 1) if tf else None, **extra))
    print(f"| {workload} | {impl} | {ms:.4f} | {tf:.1f} |" if tf else f"| {workload} | {impl} | {ms:.4f} | — |",
          flush=True)


def best(kernel):
    c = getattr(kernel, "best_config", None)
    return None if c is None else f"{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']} w{c.num_warps} s{c.num_stages}"


def qkv(B, H, N, D, Hkv=None):
    g = torch.Generator(device="cuda").manual_seed(0)
    Hkv = Hkv or H
    mk = lambda h: torch.randn(B, h, N, D, device="cuda", dtype=torch.bfloat16, generator=g)  # noqa: E731
    return mk(H), mk(Hkv), mk(Hkv)


def dense(B, H, N, D, causal, do_bwd):
    q, k, v = qkv(B, H, N, D)
    scale = D ** -0.5
    name = f"dense {'causal' if causal else 'non-causal'} fwd, B{B} H{H} N{N} D{D}"
    flops = 4 * B * H * N * N * D * (0.5 if causal else 1.0)
    o, lse = attention_fwd(q, k, v, scale=scale, causal=causal)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    err = (o.float() - ref.float()).abs().max().item()
    record(name, "zoo triton", bench(lambda: attention_fwd(q, k, v, scale=scale, causal=causal)), flops,
           max_err_vs_cudnn=err, config=best(_attn_fwd_kernel))
    for label, be in (("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
        with sdpa_kernel(be):
            record(name, label, bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                                                              scale=scale)), flops)
    if not do_bwd:
        return
    name = name.replace("fwd,", "fwd+bwd,")
    do = torch.randn_like(q)

    def zoo_fb():
        o, lse = attention_fwd(q, k, v, scale=scale, causal=causal)
        attention_bwd(do, q, k, v, o, lse, scale=scale, causal=causal)

    zoo_fb()
    ms = bench(zoo_fb)
    o, lse = attention_fwd(q, k, v, scale=scale, causal=causal)
    ms_b = bench(lambda: attention_bwd(do, q, k, v, o, lse, scale=scale, causal=causal))
    dq, dk, dv = attention_bwd(do, q, k, v, o, lse, scale=scale, causal=causal)
    qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal, scale=scale).backward(do)
    errs = [(a.float() - b.grad.float()).abs().max().item() for a, b in ((dq, qr), (dk, kr), (dv, vr))]
    record(name, "zoo triton", ms, 3.5 * flops, bwd_only_ms=round(ms_b, 4),
           bwd_tflops=round(2.5 * flops / ms_b * 1e-9, 1),
           max_grad_err_vs_cudnn=errs, config_dkdv=best(_attn_bwd_dkdv_kernel), config_dq=best(_attn_bwd_dq_kernel))
    for label, be in (("SDPA flash", SDPBackend.FLASH_ATTENTION), ("SDPA cuDNN", SDPBackend.CUDNN_ATTENTION)):
        qr, kr, vr = (t.detach().clone().requires_grad_() for t in (q, k, v))

        def sd_fb():
            with sdpa_kernel(be):
                F.scaled_dot_product_attention(qr, kr, vr, is_causal=causal, scale=scale).backward(do)

        record(name, label, bench(sd_fb), 3.5 * flops)


def window(B, H, N, D, W):
    q, k, v = qkv(B, H, N, D)
    scale = D ** -0.5
    i = torch.arange(N, dtype=torch.float64)
    pairs = torch.minimum(i + 1, torch.tensor(W + 1.0)).sum().item()
    flops = 4 * B * H * pairs * D
    kw = dict(scale=scale, causal=True, window_left=W)
    name = f"sliding-window causal W={W} fwd, B{B} H{H} N{N} D{D}"
    record(name, "zoo triton", bench(lambda: attention_fwd(q, k, v, **kw)), flops, config=best(_attn_fwd_kernel))
    # spot check of the last 1024 query rows against SDPA with an explicit mask
    o, lse = attention_fwd(q, k, v, **kw)
    qs = q[:, :, -1024:]
    ks, vs = k[:, :, -1024 - W:], v[:, :, -1024 - W:]
    ii = torch.arange(1024, device="cuda")[:, None] + W
    jj = torch.arange(1024 + W, device="cuda")[None, :]
    m = (jj <= ii) & (jj >= ii - W)
    ref = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=m, scale=scale)
    RESULTS[-1]["max_err_tail_vs_sdpa_mask"] = (o[:, :, -1024:].float() - ref.float()).abs().max().item()
    do = torch.randn_like(q)

    def fb():
        o, lse = attention_fwd(q, k, v, **kw)
        attention_bwd(do, q, k, v, o, lse, **kw)

    fb()
    record(name.replace("fwd,", "fwd+bwd,"), "zoo triton", bench(fb), 3.5 * flops,
           config_dkdv=best(_attn_bwd_dkdv_kernel), config_dq=best(_attn_bwd_dq_kernel))


def chunks(B, H, N, D, chunk=1024, prev=3):
    q, k, v = qkv(B, H, N, D)
    scale = D ** -0.5
    nb = N // chunk
    idx = torch.full((B, H, nb, prev + 1), -1, dtype=torch.int32, device="cuda")
    for c in range(nb):
        sel = list(range(max(0, c - prev), c + 1))
        idx[:, :, c, :len(sel)] = torch.tensor(sel, dtype=torch.int32, device="cuda")
    cnt = (idx >= 0).sum(-1, dtype=torch.int32)
    pairs = sum(min(c, prev) * chunk * chunk + chunk * (chunk + 1) / 2 for c in range(nb))
    flops = 4 * B * H * pairs * D
    kw = dict(scale=scale, causal=True, block_indices=idx, block_counts=cnt, block_size=chunk)
    name = f"chunk routing {chunk}, own causal + {prev} earlier, fwd, B{B} H{H} N{N} D{D}"
    record(name, "zoo triton", bench(lambda: attention_fwd(q, k, v, **kw)), flops, config=best(_attn_fwd_kernel))
    do = torch.randn_like(q)

    def fb():
        o, lse = attention_fwd(q, k, v, **kw)
        attention_bwd(do, q, k, v, o, lse, **kw)

    fb()
    record(name.replace("fwd,", "fwd+bwd,"), "zoo triton", bench(fb), 3.5 * flops,
           config_dkdv=best(_attn_bwd_dkdv_kernel), config_dq=best(_attn_bwd_dq_kernel))
    # equivalence with the same mask expressed as a window (chunk-aligned), on a 4-chunk slice
    s = 8 * chunk
    qs, ks, vs = q[:, :, :s].contiguous(), k[:, :, :s].contiguous(), v[:, :, :s].contiguous()
    o1, _ = attention_fwd(qs, ks, vs, scale=scale, causal=True, block_indices=idx[:, :, :8].contiguous(),
                          block_counts=cnt[:, :, :8].contiguous(), block_size=chunk)
    ii = torch.arange(s, device="cuda")[:, None]
    jj = torch.arange(s, device="cuda")[None, :]
    m = (jj <= ii) & (jj // chunk >= ii // chunk - prev)
    ref = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=m, scale=scale)
    RESULTS[-2]["max_err_8chunks_vs_sdpa_mask"] = (o1.float() - ref.float()).abs().max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--only", default=None, help="comma-separated job numbers (0-9) to run")
    args = ap.parse_args()
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    print("| workload | impl | ms | TFLOP/s |\n|---|---|---|---|", flush=True)
    t0 = time.time()
    jobs = [lambda: dense(2, 16, 8192, 128, False, False), lambda: dense(2, 16, 8192, 128, True, True),
            lambda: window(1, 16, 32768, 128, 512), lambda: chunks(1, 16, 65536, 128),
            lambda: dense(8, 16, 2048, 128, False, False), lambda: dense(8, 16, 2048, 128, True, False),
            lambda: dense(8, 16, 2048, 64, False, False), lambda: dense(8, 16, 2048, 64, True, False),
            lambda: dense(2, 16, 8192, 64, False, True), lambda: dense(2, 16, 8192, 64, True, False)]
    if args.only:
        jobs = [jobs[int(i)] for i in args.only.split(",")]
    for job in jobs:
        try:
            job()
        except Exception as exc:  # keep going: partial numbers are still useful
            print("FAILED:", type(exc).__name__, str(exc)[:500], flush=True)
        print(f"# elapsed {time.time() - t0:.0f}s", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(dict(device=torch.cuda.get_device_name(), torch=torch.__version__,
                                                      triton=triton.__version__, results=RESULTS), indent=1))


if __name__ == "__main__":
    main()
