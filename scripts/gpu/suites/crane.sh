#!/usr/bin/env bash
# Crane offline zero-shot table (tiny CLIP pre-trained on Fashion-MNIST; Crane vs WinCLIP-style vs no E-Attn), hub folders clip_tiny.fmnist + crane_tiny.fmnist_synth, speed rows and a ViT-L .pt2 parity check.
# limit: 240
# Budget: ~150 s on one H200. Writes under $ART:
#   offline_zero_shot.md / .json        the zero-shot table (image AUROC/AP, pixel AUROC/AUPRO) -> docs/models/crane.md
#   hub/clip_tiny.fmnist/, hub/crane_tiny.fmnist_synth/   -> copy to hub/zoo-models/
#   overlays/<method>/*.png             input | anomaly map | ground truth outline (test classes 5-9)
#   bench_gpu.{json,md}                 crane_vit_l14_336 (random weights) 518 px bf16: eager / compiled / exported
#   export_vitl.{json,md}               zoo.export .pt2 of crane_vit_l14_336 (vision path, fp32, 518): parity + size
#   bench_cpu.{json,md}                 ms/image on 2 CPU cores: crane_tiny eager/compiled/exported, ViT-L eager
# Stages after the table are skipped when the elapsed time passes their guard (so the budget holds).
set -uo pipefail
PY=${PY:-python3}
ART=${ART:-/tmp/crane_art}
mkdir -p "$ART"
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
if [ "${SMOKE:-0}" = 1 ]; then
    $PY -m zoo.tasks.anomaly offline --out "$ART" --smoke --device cpu || exit 1
    $PY benchmarks/crane.py --device cpu --threads 2 --model crane_tiny --res 40 --batch 2 --dtype fp32 \
        --modes eager,exported --iters 2 --warmup 1 --json "$ART/bench_cpu.json" --md "$ART/bench_cpu.md" || exit 1
    $PY benchmarks/crane.py --device cpu --threads 2 --model crane_tiny --res 40 --batch 1 --dtype fp32 \
        --modes eager --iters 1 --warmup 0 --export-pt2 /tmp/crane_tiny_smoke.pt2 --json "$ART/export_vitl.json" \
        --md "$ART/export_vitl.md" || exit 1
    echo "smoke ok in $(el) s"; exit 0
fi
nvidia-smi -L 2>/dev/null || true
$PY -m zoo.tasks.anomaly offline --out "$ART" --device cuda --clip-epochs 30 --prompt-epochs 5 --per-class 100 || exit 1
echo "offline table done at $(el) s"
if [ "$(el)" -lt 100 ]; then
    $PY benchmarks/crane.py --device cuda --model crane_vit_l14_336 --res 518 --batch 8 --dtype bf16 \
        --modes eager,exported,compiled --iters 5 --warmup 1 --json "$ART/bench_gpu.json" --md "$ART/bench_gpu.md"
    echo "gpu bench done at $(el) s"
fi
if [ "$(el)" -lt 150 ]; then
    $PY benchmarks/crane.py --device cuda --model crane_vit_l14_336 --res 518 --batch 1 --dtype fp32 --modes eager \
        --iters 2 --warmup 1 --export-pt2 /tmp/crane_vitl.pt2 --json "$ART/export_vitl.json" --md "$ART/export_vitl.md"
    echo "vit-l export done at $(el) s"
fi
if [ "$(el)" -lt 180 ]; then
    $PY benchmarks/crane.py --device cpu --threads 2 --model crane_tiny --res 40 --batch 1 --dtype fp32 \
        --modes eager,exported,compiled --iters 20 --warmup 3 --json "$ART/bench_cpu.json" --md "$ART/bench_cpu.md"
fi
if [ "$(el)" -lt 190 ]; then
    $PY benchmarks/crane.py --device cpu --threads 2 --model crane_vit_l14_336 --res 518 --batch 1 --dtype fp32 \
        --modes eager --iters 1 --warmup 0 --json "$ART/bench_cpu_vitl.json" --md "$ART/bench_cpu_vitl.md"
fi
echo "crane suite done in $(el) s"
