#!/usr/bin/env bash
# H200 diagnosis (device tool): why did the transducer's first training step not finish in 7 minutes on the GPU
# with auto -> Triton (batch 5, 2026-11-29), while it trains at 1.6 s/step on 2 CPU cores? Times one forward and
# backward of the small transducer per attention backend on a fixed random batch, printing Triton's autotuning
# choices and a Python stack every 30 s while a step runs, so the stuck kernel/config shows up in the log.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TRITON_PRINT_AUTOTUNING=1
timeout ${T_DIAG:-240} python3 - <<'PY'
import faulthandler, sys, time
import torch
import zoo
import zoo.models.transducer as tt

faulthandler.dump_traceback_later(30, repeat=True, file=sys.stderr)
dev = torch.device("cuda")
# Suspects, timed alone first: fp32 inputs (the transducer trains in fp32; our kernels then use IEEE dots built from
# FMAs, slow to compile per autotune config; `auto` now sends fp32 on CUDA to SDPA) and a value head dim unlike the
# query/key one (64 vs 32: relative position features are appended to q and k only; no benchmark row covers it).
from zoo.kernels import KeyPadding, SlidingWindow, attention
for dtype in (torch.bfloat16, torch.float32):
    for dv in (64, 32):
        q, k = (torch.randn(4, 4, 300, 64, device=dev, dtype=dtype, requires_grad=True) for _ in range(2))
        v = torch.randn(4, 4, 300, dv, device=dev, dtype=dtype, requires_grad=True)
        mask = SlidingWindow(10, 2) & KeyPadding(torch.tensor([300, 250, 200, 100], device=dev, dtype=torch.int32))
        t0 = time.perf_counter()
        attention(q, k, v, mask, backend="triton").float().sum().backward()
        torch.cuda.synchronize()
        print(f"attention {dtype} D64 Dv{dv} window+padding fwd+bwd (first call, with tuning): "
              f"{time.perf_counter() - t0:.2f} s", flush=True)
for backend in ("auto", "sdpa", "flex", "triton"):
    tt.ATTENTION_BACKEND = backend
    torch.manual_seed(0)
    m = zoo.create_model("transformer_transducer_small", vocab_size=29, audio_left=10, audio_right=2).to(dev)
    audio = torch.randn(4, 48000, device=dev) * 0.1
    lens = torch.tensor([48000, 40000, 30000, 20000], device=dev)
    tg = torch.randint(1, 29, (4, 20), device=dev)
    tl = torch.tensor([20, 18, 12, 8], device=dev)
    for i in range(3):
        t0 = time.perf_counter()
        m(audio, lens, tg, tl)["loss"].backward()
        torch.cuda.synchronize()
        print(f"{backend} step {i}: {time.perf_counter() - t0:.3f} s", flush=True)
PY
echo "rc=$?"
