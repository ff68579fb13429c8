#!/usr/bin/env bash
# H200 batch 17 (~9 min): the flat block-sparse loop (SPARSE_FLAT_LOOP, on by default in this build) against the
# per-entry loops it replaces, and its correctness on the GPU.
#   1. NSA T65536 with the flat loop (+ stage breakdown), then with --no-flat-sparse-loop, same machine
#   2. the gpu-marked kernel tests (block-sparse bf16 cases, split dk/dv, packed NSA-shaped case) on the flat loop
#   3. MoC N65536 chunk 1024 top-3 (lists per query head, block 128) with the flat loop
#   4. NSA accuracy vs fp64, paper causal row, bf16
# Carry: .whl, .device_carry/compile_cache.tgz.* (untrack tests/fixtures for the 64 MiB limit). Logs in $OUT.
O=/tmp/b17
source "$(dirname "$0")/batch_common.sh"
run nsa_flat ${T_FLAT:-110} python3 benchmarks/sparse.py --only nsa --rows T65536 --breakdown --out "$O/nsa-flat.md"
run gpu_tests ${T_TESTS:-150} python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels
run nsa_per_entry ${T_OFF:-80} python3 benchmarks/sparse.py --only nsa --rows T65536 --no-flat-sparse-loop \
    --out "$O/nsa-per-entry.md"
run moc_flat ${T_MOC:-110} python3 benchmarks/sparse.py --only moc --rows "N65536 chunk1024 k3" --out "$O/moc-flat.md"
run nsa_accuracy ${T_NACC:-50} python3 benchmarks/sparse_accuracy.py --only "nsa paper causal" --dtypes bfloat16 \
    --out "$O/nsa-accuracy.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|\|passed\|failed\|Error" "$f" | tail -14; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch17.tgz" -C /tmp b17; save_compile_cache; ls -la "${OUT:-/tmp/out}"
