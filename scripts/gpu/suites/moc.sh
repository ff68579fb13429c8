#!/usr/bin/env bash
# MoC: small Wan-style DiT trained dense vs MoC at equal steps on the multi-shot task (metrics, samples, hub folder moc_dit_small.multishot_fmnist) + benchmarks/moc.py rows as time allows -> docs/benchmarks/moc.md
# limit: 200
# Budget ~190 s on one H200 (bf16). Writes under $ART:
#   exp/results.json, exp/moc_experiment.md          every number of the run; the tables of docs/benchmarks/moc.md
#   exp/samples/{real,dense,moc,dense_moc_zero-shot}.{png,gif}   sample strips (6 test captions, 16 frames)
#   exp/hub/zoo-models/moc_dit_small.multishot_fmnist/       config.json + model.safetensors + README.md -> hub/zoo-models/
#   moc_kernels.md                                   benchmarks/moc.py table (32K / 64K / 180K rows as time allows)
#   moc.md                                           both tables in one file -> docs/benchmarks/moc.md
set -uo pipefail
PY=${PY:-python3}
ART=${ART:-/tmp/moc_art}
mkdir -p "$ART"
t0=$(date +%s)
if [ "${SMOKE:-0}" = 1 ]; then
    $PY -m zoo.moc_cli experiment --out "$ART/exp" --smoke || exit 1
    $PY benchmarks/moc.py --device cpu --quick --out "$ART/moc_kernels.md" || exit 1
else
    nvidia-smi -L 2>/dev/null || true
    $PY -m zoo.moc_cli experiment --out "$ART/exp" --train-seconds 35 --max-moc-seconds 80 --sweep-seconds 15 \
        --sweep-frames 16 64 256 1024 || exit 1
    used=$(( $(date +%s) - t0 ))
    left=$(( 185 - used ))
    echo "experiment took ${used}s; ${left}s left for benchmarks/moc.py"
    if [ "$left" -gt 25 ]; then
        timeout $((left)) $PY benchmarks/moc.py --quick --sizes 32768 65536 180000 --deadline $((left - 25)) \
            --out "$ART/moc_kernels.md"
    fi
fi
{ echo "# MoC: dense vs Mixture-of-Contexts DiT (suite moc, $(date -u +%F))"; echo
  cat "$ART/exp/moc_experiment.md" 2>/dev/null; echo
  cat "$ART/moc_kernels.md" 2>/dev/null; } > "$ART/moc.md"
cat "$ART/moc.md"
