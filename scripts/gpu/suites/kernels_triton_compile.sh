#!/usr/bin/env bash
# docs/benchmarks/triton_compile_sm90.md: benchmarks/triton_compile.py compiles every autotune config of every kernel for sm_90 (no GPU needed; run it here or on the CPU) -> $ART/triton_compile_sm90.md
# limit: 420
set -uo pipefail
ONLY=${ONLY:-}; [ "$SMOKE" = 1 ] && ONLY=rnnt
$PY benchmarks/triton_compile.py ${ONLY:+--only "$ONLY"} | tee "$ART/triton_compile_sm90.md"
exit "${PIPESTATUS[0]}"
