#!/usr/bin/env bash
# ClustViT vs the same ViT: GPU rows of the speed table (T and B at 512², batch 32, bf16; trained ClustViT-T at 256²) -> docs/benchmarks/clustvit.md
# limit: 150
# The speed rows of suite clustvit without its training: random-weight T/B with the merge calibrated to 45 % / 65 %
# of patch tokens, then the published clustvit_t.fmnist_mosaic weights on real mosaics. Each table is rewritten after
# every row, so a time limit leaves the rows measured so far. The 2-CPU-core rows run off the GPU machine:
#   OMP_NUM_THREADS=2 python benchmarks/clustvit.py --device cpu --sizes t,b --res 512 --batch 1 --dtype fp32 --threads 2 --backends sdpa --iters 5 --warmup 2
set -uo pipefail
PY=${PY:-python3}
ART=${ART:-/tmp/clustvit_speed_art}
mkdir -p "$ART"
BENCH=(--device cuda --sizes t,b --res 512 --batch 32 --dtype bf16 --merge 0.45,0.65 --backends sdpa,triton --packed-backends triton --iters 10 --warmup 3)
TRAINED=(--device cuda --sizes t --res 256 --batch 32 --dtype bf16 --backends sdpa,triton --packed-backends triton --iters 10 --warmup 3 --pretrained hub/zoo-models/clustvit_t.fmnist_mosaic)
if [ "${SMOKE:-0}" = 1 ]; then
    BENCH=(--device cpu --sizes t --res 64 --batch 2 --dtype fp32 --merge 0.5 --backends sdpa --packed-backends sdpa --iters 2 --warmup 1)
    TRAINED=(--device cpu --sizes t --res 64 --batch 2 --dtype fp32 --backends sdpa --iters 2 --warmup 1 --pretrained hub/zoo-models/clustvit_t.fmnist_mosaic)
fi
nvidia-smi -L 2>/dev/null || true
rc=0
$PY benchmarks/clustvit.py "${BENCH[@]}" --json "$ART/bench_gpu.json" --md "$ART/bench_gpu.md" || rc=$?
$PY benchmarks/clustvit.py "${TRAINED[@]}" --json "$ART/bench_trained.json" --md "$ART/bench_trained.md" || rc=$?
exit $rc
