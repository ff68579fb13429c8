#!/usr/bin/env bash
# H200 batch 14 (for the next session, ~9 min): what this session could not reach of issue 4.
#   1. NSA T65536 with GQA head packing off and on (the selected branch ran at ~170 TFLOP/s; packing is off by default
#      until this measures it): --breakdown gives the selected-attention stage of each
#   2. sparse_accuracy.py NSA (T 2048) on the reworked NSA path (importance kernel, strided compressed branch, fused
#      gates, split dk/dv), bf16 and fp16 vs fp64; MoC in fp16 (bf16 passed in batch 11)
#   3. NSA T16384 re-measured after the rework (batch 8 numbers predate it)
#   4. transducer train step per backend (issue 6 follow-up; narrow bands now also try small tiles)
# Carry: .whl, .device_carry/compile_cache.tgz.* (untrack tests/fixtures for the 64 MiB limit). Logs in $OUT.
O=/tmp/b14
source "$(dirname "$0")/batch_common.sh"
run nsa_pack_off ${T_OFF:-70} python3 benchmarks/sparse.py --only nsa --rows T65536 --breakdown --out "$O/nsa-off.md"
run nsa_pack_on ${T_ON:-90} python3 benchmarks/sparse.py --only nsa --rows T65536 --breakdown --pack-gqa-heads \
    --out "$O/nsa-on.md"
run nsa_accuracy ${T_NACC:-100} python3 benchmarks/sparse_accuracy.py --only nsa --out "$O/nsa-accuracy.md"
run moc_accuracy_fp16 ${T_MACC:-70} python3 benchmarks/sparse_accuracy.py --only moc --dtypes float16 \
    --out "$O/moc-accuracy-fp16.md"
run nsa16k ${T_16K:-130} python3 benchmarks/sparse.py --only nsa --rows T16384 --out "$O/nsa-16k.md"
run transducer_step ${T_STEP:-60} python3 benchmarks/transducer.py --train-step
for f in "$O"/*.log; do echo "=== $f"; grep "^|" "$f" | tail -12; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch14.tgz" -C /tmp b14; save_compile_cache; ls -la "${OUT:-/tmp/out}"
