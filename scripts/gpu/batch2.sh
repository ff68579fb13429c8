#!/usr/bin/env bash
# H200 batch 2: resume RepNeXt-M0 from its last checkpoint (batch 1 hit its time limit at epoch 20 of 24) and
# evaluate/publish, then the attention benchmark (full rows, fwd and fwd+bwd) and the accuracy script.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1
OUT_DIR=${OUT:-/tmp/out}
ls runs/repnext_m0_fashion_mnist/checkpoints/ 2>&1 | head
FMNIST_DIR=$PWD/.device_carry/fmnist OUT=/tmp/r1 timeout 200 bash scripts/gpu/repnext_fmnist.sh --ckpt_path last > /tmp/repnext2.log 2>&1
echo "repnext rc=$?"; tr '\r' '\n' < /tmp/repnext2.log | grep -E "test/acc|best checkpoint|train wall|Error" | tail -8
timeout 240 python3 benchmarks/attention.py --quick --out /tmp/attention-h200.md --json /tmp/dispatch.json > /tmp/attn_bench.log 2>&1
echo "bench rc=$?"; tail -45 /tmp/attn_bench.log
timeout 100 python3 benchmarks/attention_accuracy.py --out /tmp/attention-accuracy-h200.md > /tmp/attn_acc.log 2>&1
echo "acc rc=$?"; tail -25 /tmp/attn_acc.log
tar czf "$OUT_DIR/batch2.tgz" -C / tmp/repnext2.log tmp/r1 tmp/attention-h200.md tmp/dispatch.json tmp/attn_bench.log \
    tmp/attention-accuracy-h200.md tmp/attn_acc.log -C "$PWD" hub/zoo-models/repnext_m0.fmnist runs/repnext_m0_fashion_mnist/results.json 2>/dev/null
ls -la "$OUT_DIR"
