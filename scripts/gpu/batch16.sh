#!/usr/bin/env bash
# H200 batch 16 (~5 min): the last of issue 4's GPU checks.
#   1. sparse_accuracy.py's last NSA row (VideoNSA causal, MLP compressor, Hq7/Hkv1 D64; bf16 and fp16 vs fp64),
#      which batch 15 did not reach within its limit
#   2. NSA T16384 with head packing on (the default since batch 15; batch 14 timed it off)
# Carry: .whl, .device_carry/compile_cache.tgz.* (untrack tests/fixtures for the 64 MiB limit). Logs in $OUT.
O=/tmp/b16
source "$(dirname "$0")/batch_common.sh"
run nsa_accuracy_videonsa_causal ${T_NACC:-200} python3 benchmarks/sparse_accuracy.py --only "nsa videonsa causal" \
    --out "$O/nsa-accuracy-videonsa-causal.md"
run nsa16k ${T_16K:-100} python3 benchmarks/sparse.py --only nsa --rows T16384 --out "$O/nsa-16k.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|" "$f" | tail -12; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch16.tgz" -C /tmp b16; save_compile_cache; ls -la "${OUT:-/tmp/out}"
