#!/usr/bin/env bash
# H200 batch 7 (device tool, 2026-11-29 third session): batch 6 with first-call (compile/autotune) times logged, so a
# row that runs out of time still says where the time went. Each step alone on the GPU under its own limit
# (~8.5 min in all); logs and tables in $OUT/batch7.tgz.
#   1. diagnose_transducer.sh: per-backend first step of the transducer (issue 6)
#   2. transducer train step per backend, bf16 autocast (issue 6)
#   3. attention rows not reached: varlen / ragged at N32768, block-sparse N65536; accuracy: ragged, block-sparse 64k
#   4. sparse.py (MoC vs Flex, NSA vs cuDNN / fla-core) and gla.py (vs fla-core) (issue 4)
# Carry: .whl (fla_core, einops, jsonargparse...). TRITON_CACHE_AUTOTUNING keeps tuning results for later calls on
# the same warm machine. Env T_* override the limits (seconds).
O=/tmp/b7
source "$(dirname "$0")/batch_common.sh"
T_DIAG=${T_DIAG:-60} run diagnose ${T_DIAG:-60} bash scripts/gpu/diagnose_transducer.sh
run transducer_step ${T_STEP:-60} python3 benchmarks/transducer.py --train-step
run attention_rest ${T_ATTN:-120} python3 benchmarks/attention.py --only "varlen .*N32768|N65536" \
    --out "$O/attention-rest.md" --json "$O/attention-rest.json"
run attention_acc_rest ${T_ACC:-60} python3 benchmarks/attention_accuracy.py --only "ragged|block-sparse" \
    --out "$O/attention-accuracy-rest.md"
run sparse ${T_SPARSE:-150} python3 benchmarks/sparse.py --out "$O/sparse-h200.md"
run gla ${T_GLA:-60} python3 benchmarks/gla.py
for f in "$O"/*.log; do echo "=== $f"; tail -12 "$f"; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch7.tgz" -C /tmp b7; ls -la "${OUT:-/tmp/out}"
