#!/usr/bin/env bash
# docs/benchmarks/sparse-h200.md "Accuracy against fp64": benchmarks/sparse_accuracy.py (MoC, NSA, GLA; bf16 and fp16 vs fp64) -> $ART/sparse-accuracy.md
# limit: 480
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    exec $PY benchmarks/sparse_accuracy.py --device cpu --quick --only moc --out "$ART/sparse-accuracy.md"
fi
exec $PY benchmarks/sparse_accuracy.py ${ROWS:+--only "$ROWS"} --out "$ART/sparse-accuracy.md"
