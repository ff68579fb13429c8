#!/usr/bin/env bash
# Install the zoo into .venv, then train and evaluate RepNeXt-M0 on the Fashion-MNIST subset that ships in the repo
# (2 CPU cores, a few minutes). Prints the test accuracy and writes a hub folder with a model card under runs/.
#
#   bash scripts/demo.sh                  # the README's main job
#   ZOO_DEMO_SHORT=1 bash scripts/demo.sh # the same commands on a few batches (CI runs this on every submission)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
CONFIG=configs/repnext/m0_fashion_mnist_cpu.yaml
RUN=${ZOO_DEMO_RUN:-runs/repnext_m0_fashion_mnist_cpu}   # one folder for train, eval and the card
SHORT=() EVAL_SHORT=()
if [ "${ZOO_DEMO_SHORT:-0}" = 1 ]; then
    RUN=${ZOO_DEMO_RUN:-runs/demo_short}
    SHORT=(--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1
           --trainer.limit_test_batches 1)
    EVAL_SHORT=(--limit-batches 2)
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e .
rm -rf "$RUN"
.venv/bin/python train.py --config "$CONFIG" --trainer.default_root_dir "$RUN" "${SHORT[@]}"
.venv/bin/python eval.py --config "$CONFIG" --ckpt "$RUN/checkpoints/last.ckpt" --card-out "$RUN/hub" "${EVAL_SHORT[@]}"
for f in config.json model.safetensors README.md; do
    [ -s "$RUN/hub/$f" ] || { echo "demo: $RUN/hub/$f was not written" >&2; exit 1; }
done
echo "demo: model card and weights in $RUN/hub"
