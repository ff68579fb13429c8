#!/usr/bin/env bash
# H200 batch 9, right after batch8.sh on the same warm machine: GLA ours (chunk, recurrent) vs fla-core chunk_gla /
# fused_recurrent_gla (issue 4), alone on the GPU (fla-core's first calls autotune for a minute or more); then, side
# by side (no timing), accuracy vs fp64: attention block-sparse 64k (issue 3) and sparse_accuracy.py for NSA / MoC /
# GLA (issue 4). ~6 min.
# Carry: .whl (fla_core, einops). Logs in $OUT/batch9.tgz.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
O=/tmp/b9; mkdir -p "$O"
t0=$(date +%s)
timeout ${T_GLA:-200} python3 benchmarks/gla.py --out "$O/gla-h200.md" > "$O/gla.log" 2>&1
echo "gla rc=$? $(( $(date +%s) - t0 )) s" | tee "$O/summary.txt"
cat "$O/gla.log"
t0=$(date +%s)
timeout ${T_ACC:-140} python3 benchmarks/attention_accuracy.py --only "block-sparse" --out "$O/attention-accuracy-bs.md" \
    > "$O/attention_acc_bs.log" 2>&1 &
timeout ${T_SACC:-140} python3 benchmarks/sparse_accuracy.py --out "$O/sparse-accuracy-h200.md" \
    > "$O/sparse_accuracy.log" 2>&1 &
wait
echo "accuracy pair done $(( $(date +%s) - t0 )) s" | tee -a "$O/summary.txt"
tail -12 "$O/attention_acc_bs.log" "$O/sparse_accuracy.log"
tar czf "${OUT:-/tmp/out}/batch9.tgz" -C /tmp b9; ls -la "${OUT:-/tmp/out}"
