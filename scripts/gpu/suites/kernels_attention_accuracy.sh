#!/usr/bin/env bash
# docs/benchmarks/attention-h200.md "Accuracy against an fp64 reference": benchmarks/attention_accuracy.py, bf16 and fp16 vs fp64, FlashAttention's criterion -> $ART/attention-accuracy.md
# limit: 420
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    exec $PY benchmarks/attention_accuracy.py --device cpu --quick --dtypes float16 --only dense --out "$ART/attention-accuracy.md"
fi
exec $PY benchmarks/attention_accuracy.py ${ROWS:+--only "$ROWS"} --out "$ART/attention-accuracy.md"
