#!/usr/bin/env bash
# H200 batch 6 (device tool), for the next GPU session: what batch 4 and 5 left unmeasured, each alone on the GPU and
# under its own time limit (about 9.5 min in all); logs and tables in $OUT/batch6.tgz.
#   1. diagnose_transducer.sh: which attention path stalled the transducer's first training step (fp32? D != Dv?)
#   2. transducer train step per backend (bf16 autocast) - issue 6
#   3. attention rows not reached: varlen 16 x 2048 / ragged in N32768, block-sparse N65536; accuracy: ragged varlen,
#      block-sparse 64k - issue 3
#   4. sparse.py (NSA vs fla-core / cuDNN, MoC vs Flex) and gla.py (vs fla-core), full sizes - issue 4
# Carry: .whl (with fla_core and einops wheels). Env T_* override the limits (seconds).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1
O=/tmp/b6; mkdir -p "$O"
T_DIAG=${T_DIAG:-80} timeout ${T_DIAG:-80} bash scripts/gpu/diagnose_transducer.sh > "$O/diagnose.log" 2>&1; echo "diagnose rc=$?"
timeout ${T_STEP:-70} python3 benchmarks/transducer.py --train-step > "$O/transducer_step.log" 2>&1; echo "step rc=$?"
timeout ${T_ATTN:-130} python3 benchmarks/attention.py --only "varlen .*N32768|N65536" --out "$O/attention-rest.md" \
    --json "$O/attention-rest.json" > "$O/attention_rest.log" 2>&1; echo "attention rc=$?"
timeout ${T_ACC:-70} python3 benchmarks/attention_accuracy.py --only "ragged|block-sparse" \
    --out "$O/attention-accuracy-rest.md" > "$O/attention_acc_rest.log" 2>&1; echo "accuracy rc=$?"
timeout ${T_SPARSE:-130} python3 benchmarks/sparse.py --out "$O/sparse-h200.md" > "$O/sparse.log" 2>&1; echo "sparse rc=$?"
timeout ${T_GLA:-90} python3 benchmarks/gla.py > "$O/gla.log" 2>&1; echo "gla rc=$?"
for f in "$O"/*.log; do echo "=== $f"; tail -15 "$f"; done
tar czf "${OUT:-/tmp/out}/batch6.tgz" -C /tmp b6; ls -la "${OUT:-/tmp/out}"
