#!/usr/bin/env bash
# H200 batch 13 (~5 min, last of the session): GLA with the segmented state passes (B1 T32768 was 1.10x fla-core),
# GLA accuracy vs fp64 again (its B2 H4 grid takes the segmented path), and every `gpu`-marked kernel test
# (incl. the split block-sparse dk/dv with autotuning, which the interpreter cannot exercise).
# Carry: .whl, .device_carry/compile_cache.tgz.* (tests/fixtures untracked for the size limit). Logs in $OUT.
O=/tmp/b13
source "$(dirname "$0")/batch_common.sh"
run gla ${T_GLA:-80} python3 benchmarks/gla.py --profile --out "$O/gla-h200.md"
run gla_accuracy ${T_GACC:-60} python3 benchmarks/sparse_accuracy.py --only gla --out "$O/gla-accuracy-h200.md"
run gpu_tests ${T_TESTS:-150} python3 -m pytest -m gpu tests/kernels -q -p no:cacheprovider -rs
for f in "$O"/*.log; do echo "=== $f"; grep "^|" "$f" | tail -10; done
tail -5 "$O/gpu_tests.log"
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch13.tgz" -C /tmp b13; ls -la "${OUT:-/tmp/out}"
