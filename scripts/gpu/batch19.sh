#!/usr/bin/env bash
# H200 batch 19 (~3.5 min, the session's last device time): the flat block-list loop's accuracy on long block-sparse
# lists, and where the MoC / NSA forward+backward time goes now (kernel tables, for the issue-4 closing note).
#   1. attention_accuracy.py block-sparse N65536 (split dk/dv lists), bf16 and fp16 vs fp64
#   2. sparse.py --profile: MoC N65536 chunk 1024 top-3, NSA T65536
# Carry: .whl, .device_carry/compile_cache.tgz.* (untrack tests/fixtures for the 64 MiB limit). Logs in $OUT.
O=/tmp/b19
source "$(dirname "$0")/batch_common.sh"
run attn_bs_accuracy ${T_BACC:-80} python3 benchmarks/attention_accuracy.py --only block-sparse \
    --out "$O/attn-bs-accuracy.md"
run moc_profile ${T_MOC:-50} python3 benchmarks/sparse.py --only moc --rows "N65536 chunk1024 k3" --profile \
    --out "$O/moc-profile.md"
run nsa_profile ${T_NSA:-60} python3 benchmarks/sparse.py --only nsa --rows T65536 --profile --out "$O/nsa-profile.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|\|Error" "$f" | tail -6; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch19.tgz" -C /tmp b19; ls -la "${OUT:-/tmp/out}"
