#!/usr/bin/env bash
# MoC kernel table: benchmarks/moc.py (MoCAttention routing + Triton block-sparse vs FlexAttention same routing vs dense cuDNN; 32K/64K/180K, fwd and fwd+bwd) -> docs/benchmarks/moc.md kernel section
# limit: 420
set -uo pipefail
PY=${PY:-python3}
if [ "${SMOKE:-0}" = 1 ]; then exec $PY benchmarks/moc.py --device cpu --quick --out "$ART/moc_kernels.md"; fi
exec $PY benchmarks/moc.py --sizes 32768 65536 180000 --deadline 360 --out "$ART/moc_kernels.md"
