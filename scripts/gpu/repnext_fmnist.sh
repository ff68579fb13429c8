#!/usr/bin/env bash
# Train RepNeXt-M0 on full Fashion-MNIST on one GPU, confirm the test accuracy with eval.py, and write the hub folder
# (config.json + fp16 model.safetensors + README.md card) to hub/zoo-models/repnext_m0.fmnist/.
#
#   FMNIST_DIR=/path/with/idx/files OUT=/some/dir bash scripts/gpu/repnext_fmnist.sh           # GPU job
#   bash scripts/gpu/repnext_fmnist.sh --smoke                                                   # CPU check, ~1 min
#   ... repnext_fmnist.sh --trainer.max_epochs=60                           # extra args are passed to train.py
#
# FMNIST_DIR: folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (default: the Debian package's
# /usr/share/datasets/fashion-mnist). OUT: where results are copied (default out/repnext_fmnist).
# Needs jsonargparse[signatures] for train.py: installed from ./.whl (or $WHEELS_DIR) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
SMOKE=0
PASS=()  # any other arguments go to train.py, e.g. --trainer.max_epochs=60
for a in "$@"; do if [[ "$a" == "--smoke" ]]; then SMOKE=1; else PASS+=("$a"); fi; done
OUT=${OUT:-out/repnext_fmnist}
FMNIST_DIR=${FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
PY=${PYTHON:-python}
mkdir -p "$OUT"

if ! $PY -c "import jsonargparse, docstring_parser, typeshed_client" 2>/dev/null; then
  $PY -m pip install --no-index --find-links "${WHEELS_DIR:-.whl}" jsonargparse docstring_parser typeshed_client
fi

CONFIG=configs/repnext/m0_fashion_mnist.yaml
RUN=runs/repnext_m0_fashion_mnist
CARD=hub/zoo-models/repnext_m0.fmnist
EXTRA=()
EVAL_EXTRA=(--precision 32-true)
if [[ $SMOKE == 1 ]]; then
  RUN="$OUT/smoke_run"
  CARD="$OUT/smoke_hub/zoo-models/repnext_m0.fmnist"
  rm -rf "$RUN" "$CARD"
  [[ -d "$FMNIST_DIR" ]] || FMNIST_DIR=embedded
  EXTRA=(--trainer.accelerator=cpu --trainer.precision=32-true --trainer.max_epochs=1 --trainer.benchmark=false
         --data.init_args.max_train_samples=512 --data.init_args.max_val_samples=200
         --data.init_args.max_test_samples=200 --data.init_args.image_size=32 --data.init_args.batch_size=64
         --data.init_args.num_workers=1 --progress_refresh_rate=4)
  EVAL_EXTRA=(--accelerator cpu --precision 32-true --num-workers 1)
fi
if [[ "$FMNIST_DIR" == embedded ]]; then DATA=(--data.init_args.source=embedded); else DATA=(--data.init_args.root="$FMNIST_DIR"); fi

nvidia-smi -L 2>/dev/null || true
start=$(date +%s)
$PY train.py --config "$CONFIG" "${DATA[@]}" --trainer.default_root_dir="$RUN" "${EXTRA[@]}" "${PASS[@]}" 2>&1 | tee "$OUT/train.log"
train_s=$(( $(date +%s) - start ))
BEST=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['best_checkpoint'])" "$RUN/results.json")
echo "best checkpoint: $BEST (train wall time ${train_s}s)"

# eval.py rebuilds task + data from the checkpoint, writes metrics.json, and the hub folder with fp16 weights whose
# own test metrics (weights rounded to fp16) go into the card.
$PY eval.py --ckpt "$BEST" --out "$OUT/eval" --card-out "$CARD" --card-dtype float16 \
  --card-name "RepNeXt-M0 (Fashion-MNIST)" "${EVAL_EXTRA[@]}" 2>&1 | tee "$OUT/eval.log"
# and the published folder itself through the zoo's loader:
$PY eval.py --pretrained "$CARD" --config "$CONFIG" "${DATA[@]/--data.init_args./--data-arg=}" \
  --out "$OUT/eval_hub_folder" "${EVAL_EXTRA[@]}" $( [[ $SMOKE == 1 ]] && echo "--data-arg max_test_samples=200 --data-arg image_size=32" ) \
  2>&1 | tee "$OUT/eval_hub.log"

cp "$RUN/results.json" "$OUT/results.json"
mkdir -p "$OUT/logs" "$OUT/hub"
cp -r "$RUN"/version_* "$OUT/logs/" 2>/dev/null || true
cp -r "$CARD" "$OUT/hub/"
echo "{\"train_wall_s\": $train_s}" > "$OUT/timing.json"
echo "done: results in $OUT"
