#!/usr/bin/env bash
# docs/benchmarks/attention_triton_tuning.md: benchmarks/attention_triton_tune.py (block shapes / warps / stages of ours vs SDPA backends) -> $ART/attention_triton_tuning.md (stdout table) + .json
# limit: 420
set -uo pipefail
if [ "$SMOKE" = 1 ]; then $PY benchmarks/attention_triton_tune.py --help > /dev/null; exit $?; fi
$PY benchmarks/attention_triton_tune.py --out "$ART/attention_triton_tuning.json" | tee "$ART/attention_triton_tuning.md"
exit "${PIPESTATUS[0]}"
