#!/usr/bin/env bash
# H200 batch 1 (device tool): RepNeXt-M0 on Fashion-MNIST, then Orion-BiX meta-training on the prior.
# Carry: .whl (jsonargparse & co. for the GPU image) and .device_carry/fmnist (the four Fashion-MNIST IDX files).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
OUT_DIR=${OUT:-/tmp/out}
FMNIST_DIR=$PWD/.device_carry/fmnist OUT=/tmp/r1 timeout 330 bash scripts/gpu/repnext_fmnist.sh > /tmp/repnext.log 2>&1
echo "repnext rc=$?"; grep -E "test/acc|best checkpoint|train wall" /tmp/repnext.log | tail -8
TRAIN_SECONDS=150 OUT=/tmp/r2 timeout 240 bash scripts/gpu/orion_bix_pretrain.sh > /tmp/orion.log 2>&1
echo "orion rc=$?"; tail -25 /tmp/orion.log
tar czf "$OUT_DIR/batch1.tgz" -C / tmp/repnext.log tmp/orion.log tmp/r1 tmp/r2 \
    -C "$PWD" hub/zoo-models/repnext_m0.fmnist hub/zoo-models/orion_bix_small.prior docs/benchmarks/tabular.md 2>/dev/null
ls -la "$OUT_DIR"
