#!/usr/bin/env bash
# H200 batch 12 (~9.5 min, the session's last call): issue 4 after the GLA / NSA / block-sparse backward rework.
#   1. gla.py: both rows, fwd and fwd+bwd, with kernel-time profiles (fla-core's tuning comes from the carried cache)
#   2. sparse_accuracy.py --only gla: the dg fix (mild gates failed in batch 10) and harsh gates, vs fp64
#   3. sparse.py NSA T65536: ours / cuDNN dense / fla-core, fwd and fwd+bwd, per-stage forward breakdown, profile
#   4. sparse.py MoC N65536 chunk 1024 top-3: the split dk/dv backward on MoC lists
#   5. attention_accuracy.py block-sparse N65536 (its lists split): bf16 / fp16 vs fp64
# Carry: .whl, .device_carry/compile_cache.tgz.a. Logs in $OUT/batch12.tgz, compile cache back in $OUT.
O=/tmp/b12
source "$(dirname "$0")/batch_common.sh"
run gla ${T_GLA:-130} python3 benchmarks/gla.py --profile --out "$O/gla-h200.md"
run gla_accuracy ${T_GACC:-75} python3 benchmarks/sparse_accuracy.py --only gla --out "$O/gla-accuracy-h200.md"
run nsa ${T_NSA:-170} python3 benchmarks/sparse.py --only nsa --rows T65536 --breakdown --profile --out "$O/nsa-h200.md"
run moc ${T_MOC:-100} python3 benchmarks/sparse.py --only moc --rows "N65536 chunk1024" --out "$O/moc-h200.md"
run attn_bs_accuracy ${T_BACC:-60} python3 benchmarks/attention_accuracy.py --only block-sparse \
    --out "$O/attention-bs-accuracy-h200.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|" "$f" | tail -10; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch12.tgz" -C /tmp b12; save_compile_cache; ls -la "${OUT:-/tmp/out}"
