#!/usr/bin/env bash
# H200 batch 9, right after batch8.sh on the same warm machine: GLA ours (chunk, recurrent) vs fla-core chunk_gla /
# fused_recurrent_gla (issue 4), alone on the GPU (~4 min; fla-core's first calls autotune for a minute or more).
# Carry: .whl (fla_core, einops). Logs in $OUT/batch9.tgz.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
O=/tmp/b9; mkdir -p "$O"
t0=$(date +%s)
timeout ${T_GLA:-220} python3 benchmarks/gla.py --out "$O/gla-h200.md" > "$O/gla.log" 2>&1
echo "gla rc=$? $(( $(date +%s) - t0 )) s" | tee "$O/summary.txt"
cat "$O/gla.log"
tar czf "${OUT:-/tmp/out}/batch9.tgz" -C /tmp b9; ls -la "${OUT:-/tmp/out}"
