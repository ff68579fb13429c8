#!/usr/bin/env bash
# H200 batch 4 (device tool): the measurements that must run alone on the GPU, in priority order, each under its
# own time limit: attention full-size rows (N32768 / N65536), accuracy of the masked cases vs fp64, NSA / MoC and
# GLA against their peers (fla-core carried as a wheel), transducer train step ours vs SDPA. Results: $OUT/batch4.tgz.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-/tmp/out}
R=/tmp/b4; mkdir -p $R
timeout ${T_ATTN:-230} python3 benchmarks/attention.py --only "N32768|N65536" --out $R/attention-h200-full.md \
    --json $R/attention-full.json > $R/attention_full.log 2>&1; echo "attention rc=$?"
timeout ${T_ACC:-130} python3 benchmarks/attention_accuracy.py --only "sliding|limited|varlen|block-sparse" \
    --out $R/attention-accuracy-masked.md > $R/attention_acc.log 2>&1; echo "accuracy rc=$?"
timeout ${T_SPARSE:-80} python3 benchmarks/sparse.py --quick --out $R/sparse-h200.md > $R/sparse.log 2>&1; echo "sparse rc=$?"
timeout ${T_GLA:-60} python3 benchmarks/gla.py --quick > $R/gla.log 2>&1; echo "gla rc=$?"
timeout ${T_TT:-50} python3 benchmarks/transducer.py --train-step > $R/transducer_step.log 2>&1; echo "transducer rc=$?"
for f in $R/*.log; do echo "=== $f"; tail -25 $f; done
tar czf "$OUT_DIR/batch4.tgz" -C /tmp b4
ls -la "$OUT_DIR"
