#!/usr/bin/env bash
# H200 batch 8 (device tool, 2026-11-29 third session): what batch 7 left, each speed step alone on the GPU under its
# own limit (~8 min); logs and tables in $OUT/batch8.tgz. Run batch9.sh right after it on the same warm machine.
#   1. transducer train step per backend, bf16 autocast (issue 6; the autocast dtype bug batch 7 hit is fixed)
#   2. attention block-sparse N65536 (issue 3)
#   3. sparse.py: MoC vs Flex at N65536 / N180000, NSA vs cuDNN dense causal / fla-core at T16384 / T65536 (issue 4)
# Carry: .whl. Env T_* override the limits (seconds).
O=/tmp/b8
source "$(dirname "$0")/batch_common.sh"
run transducer_step ${T_STEP:-50} python3 benchmarks/transducer.py --train-step
run attention_bs64k ${T_ATTN:-100} python3 benchmarks/attention.py --only "block-sparse.*N65536" \
    --out "$O/attention-bs64k.md" --json "$O/attention-bs64k.json"
run sparse ${T_SPARSE:-330} python3 benchmarks/sparse.py --out "$O/sparse-h200.md"
for f in "$O"/*.log; do echo "=== $f"; tail -8 "$f"; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch8.tgz" -C /tmp b8; ls -la "${OUT:-/tmp/out}"
