#!/usr/bin/env bash
# VideoNSA: tiny VLM trained dense vs VideoNSA at equal steps on synthetic needle video QA (accuracy + prefill vs length) -> $ART/videonsa_demo.{md,json}; one 7B-shape decoder layer prefill at 8K/32K/64K(/128K) vs dense cuDNN/Flash with branch breakdown -> $ART/videonsa-h200.md
# limit: 240
# Budget: ~180 s on an H200: fixture parity ~10 s (when shared/reference/videonsa travels), dense training 40 s,
# VideoNSA the same number of steps, evaluation, then the layer benchmark with a 45 s budget (later lengths are
# skipped once it is spent; the table is rewritten after every length). Copy $ART/videonsa_demo.md,
# $ART/videonsa-h200.md and $ART/videonsa-parity-h200.md into docs/benchmarks/. Needs only the working tree (the
# Fashion-MNIST subset is embedded). Knobs: DEMO_BUDGET, BENCH_BUDGET, LENGTHS.
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    $PY benchmarks/videonsa_demo.py --device cpu --smoke --out-dir "$ART" || exit 1
    exec $PY benchmarks/videonsa.py --device cpu --quick --out "$ART/videonsa-h200.md"
fi
# 1. fixture parity on the GPU (Triton kernels, fp32 and bf16), when the fixture travelled with the tree (~10 s)
for d in "${ZOO_REFERENCE_DIR:-}" shared/reference ../shared/reference tests/fixtures/reference; do
    if [ -n "$d" ] && [ -f "$d/videonsa/videonsa_h448_io.safetensors" ]; then
        $PY benchmarks/videonsa.py --parity "$d/videonsa" --out "$ART/videonsa-parity-h200.md"; break
    fi
done
# 2. trained comparison, 3. layer benchmark
$PY benchmarks/videonsa_demo.py --budget "${DEMO_BUDGET:-40}" --out-dir "$ART"
rc=$?
$PY benchmarks/videonsa.py --lengths "${LENGTHS:-8192,32768,65536,131072}" --budget "${BENCH_BUDGET:-45}" \
    --reps 3 --out "$ART/videonsa-h200.md" || rc=$?
exit $rc
