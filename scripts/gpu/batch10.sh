#!/usr/bin/env bash
# H200 batch 10 (for the next GPU session): what batches 8 and 9 left of issue 4, in one call of ~9.5 min.
#   1. gla.py: both rows, forward and forward+backward (fla-core's backward autotuning alone took > 100 s)
#   2. sparse.py --only nsa --rows T65536 (ours vs cuDNN dense causal vs fla-core parallel_nsa; T16384 is measured)
#   3. sparse.py --only moc --rows N180000: re-run with static-shape compiled Flex (a fair N180000 peer)
#   4. sparse_accuracy.py: GLA, MoC, NSA (T 2048) against fp64 (the 60 s limit reaches GLA and MoC)
#   5. transducer train step per backend (issue 6 follow-up: narrow bands now also autotune small tiles)
# --profile prints, per row, the kernel-time table of ours (where the time goes) into the logs.
# Carry: .whl (fla_core, einops). Logs in $OUT/batch10.tgz.
O=/tmp/b10
source "$(dirname "$0")/batch_common.sh"
run gla ${T_GLA:-180} python3 benchmarks/gla.py --profile --out "$O/gla-h200.md"
run nsa ${T_NSA:-130} python3 benchmarks/sparse.py --only nsa --rows T65536 --profile --out "$O/nsa-h200.md"
run moc ${T_MOC:-100} python3 benchmarks/sparse.py --only moc --rows N180000 --profile --out "$O/moc-h200.md"
run sparse_accuracy ${T_SACC:-60} python3 benchmarks/sparse_accuracy.py --out "$O/sparse-accuracy-h200.md"
run transducer_step ${T_STEP:-50} python3 benchmarks/transducer.py --train-step
for f in "$O"/*.log; do echo "=== $f"; grep "^|" "$f" | tail -8; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch10.tgz" -C /tmp b10; save_compile_cache; ls -la "${OUT:-/tmp/out}"
