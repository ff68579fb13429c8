#!/usr/bin/env bash
# Install the zoo into .venv, then train and evaluate RepNeXt-M0 on the Fashion-MNIST subset that ships in the repo
# (2 CPU cores, a few minutes). Prints the test accuracy and writes a hub folder with a model card under runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e .
.venv/bin/python train.py --config configs/repnext/m0_fashion_mnist_cpu.yaml
.venv/bin/python eval.py --config configs/repnext/m0_fashion_mnist_cpu.yaml \
    --ckpt runs/repnext_m0_fmnist_cpu/checkpoints/last.ckpt --card-out runs/repnext_m0_fmnist_cpu/hub
