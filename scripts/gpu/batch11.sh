#!/usr/bin/env bash
# H200 batch 11 (~8 min): NSA T65536 per-kernel profile and fwd+bwd rows, MoC accuracy vs fp64 (not reached before),
# GLA fwd+bwd on the current kernels (also fills the carried compile cache with fla-core's backward autotuning).
# Carry: .whl, .device_carry (compile cache of batch 10). Logs in $OUT/batch11.tgz.
O=/tmp/b11
source "$(dirname "$0")/batch_common.sh"
run nsa ${T_NSA:-190} python3 benchmarks/sparse.py --only nsa --rows T65536 --profile --out "$O/nsa-h200.md"
run moc_accuracy ${T_SACC:-60} python3 benchmarks/sparse_accuracy.py --only moc --out "$O/moc-accuracy-h200.md"
run gla ${T_GLA:-220} python3 benchmarks/gla.py --profile --out "$O/gla-h200.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|" "$f" | tail -8; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch11.tgz" -C /tmp b11; save_compile_cache; ls -la "${OUT:-/tmp/out}"
