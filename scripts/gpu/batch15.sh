#!/usr/bin/env bash
# H200 batch 15 (~9 min): issue 4's checks after head packing became the default (batch 14 measured it on).
#   1. the gpu-marked kernel tests, now with a packed NSA-shaped bf16 case (GROUP 16, block 64, D 128)
#   2. sparse_accuracy.py NSA, every row (T 2048, bf16 and fp16 vs fp64) on the packed path; batch 14 reached two
#      rows with packing off before its limit
#   3. NSA T65536 forward+backward with packing off, for the same-card comparison (batch 14 timed only its forward)
# Carry: .whl, .device_carry/compile_cache.tgz.* (untrack tests/fixtures for the 64 MiB limit). Logs in $OUT.
O=/tmp/b15
source "$(dirname "$0")/batch_common.sh"
run gpu_tests ${T_TESTS:-150} python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels
run nsa_accuracy ${T_NACC:-250} python3 benchmarks/sparse_accuracy.py --only nsa --out "$O/nsa-accuracy.md"
run nsa_pack_off ${T_OFF:-120} python3 benchmarks/sparse.py --only nsa --rows T65536 --no-pack-gqa-heads \
    --out "$O/nsa-off.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|\|passed\|failed" "$f" | tail -12; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch15.tgz" -C /tmp b15; save_compile_cache; ls -la "${OUT:-/tmp/out}"
