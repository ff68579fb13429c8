#!/usr/bin/env bash
# Train AASIST-L on the offline spoof_speech task, evaluate it and the authors' AASIST (zero-shot), publish our hub
# folder. Runs offline (no internet, no Debian packages): the prepared corpus must be carried in data/spoof_speech
# (`python -m zoo.datasets.spoof_speech prepare --out data/spoof_speech`, ~42 MB, 1,637 FLAC clips).
#   bash scripts/gpu/aasist_train.sh            # GPU recipe (configs/aasist/aasist_l_spoof_speech.yaml)
#   bash scripts/gpu/aasist_train.sh --smoke    # CPU smoke: one tiny epoch
#   Further arguments go to train.py, e.g. --trainer.max_time 00:00:05:00
# Results go to $OUT (default runs/aasist_gpu_out): metrics_*.json, scores/DET plots, results.json, summary.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-python}
OUT=${OUT:-runs/aasist_gpu_out}
DATA=${DATA:-data/spoof_speech}
CFG=configs/aasist/aasist_l_spoof_speech.yaml
EVAL_ARGS=()
CARD_OUT=hub/zoo-models/aasist_l.spoof_speech
if [[ "${1:-}" == "--smoke" ]]; then
  CARD_OUT="$OUT/smoke_hub/aasist_l.spoof_speech"  # keep the published folder
  CFG=configs/aasist/aasist_l_spoof_speech_cpu.yaml
  EVAL_ARGS=(--accelerator cpu --data-arg limit_test=16 --num-workers 0)
  shift
fi
TRAIN_ARGS=("$@")  # any further arguments go to train.py (e.g. --trainer.max_time 00:00:05:00)
mkdir -p "$OUT"
if [[ ! -f "$DATA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.train.trn.txt" ]]; then
  echo "error: $DATA is missing; build it where the Debian packages are: python -m zoo.datasets.spoof_speech prepare --out $DATA" >&2
  exit 1
fi
export HF_HUB_OFFLINE=1
RUN=$(grep -E '^\s*default_root_dir:' "$CFG" | awk '{print $2}')

# 1. train AASIST-L (fit, then validate + test the best checkpoint; writes $RUN/results.json)
$PY train.py --config "$CFG" --data.init_args.root "$DATA" "${TRAIN_ARGS[@]}" 2>&1 | tee "$OUT/train.log"
cp "$RUN/results.json" "$OUT/results.json"
BEST=$($PY -c "import json; print(json.load(open('$RUN/results.json'))['best_checkpoint'])")

# 2. eval.py on the held-out eval split: our model (+ hub folder with card) and the authors' AASIST, zero-shot
mkdir -p "$OUT/ours" "$OUT/authors_aasist"
$PY eval.py --ckpt "$BEST" --data-arg root="$DATA" "${EVAL_ARGS[@]}" --out "$OUT/metrics_aasist_l_spoof_speech.json" \
  --card-out "$CARD_OUT" --card-name aasist_l.spoof_speech 2>&1 | tee "$OUT/eval_ours.log"
cat > "$OUT/zero_shot.yaml" <<YAML
model:
  class_path: zoo.tasks.antispoof.AntiSpoofingTask
  init_args: {model: aasist, output_dir: $OUT/authors_aasist}
data:
  class_path: zoo.datasets.asvspoof.ASVspoofDataModule
  init_args: {root: $DATA, dataset_name: spoof_speech, batch_size: 24, num_workers: 8}
YAML
$PY eval.py --pretrained hub/zoo-models/aasist.asvspoof2019 --config "$OUT/zero_shot.yaml" "${EVAL_ARGS[@]}" \
  --out "$OUT/metrics_aasist_asvspoof2019_zero_shot.json" 2>&1 | tee "$OUT/eval_authors.log"

# 3. collect score files / DET plots, the hub folder and a summary
cp "$RUN"/version_*/scores_test_*.txt "$RUN"/version_*/det_test_*.png "$OUT/ours/" 2>/dev/null || true
mv scores_test_aasist_l*.txt det_test_aasist_l*.png "$OUT/ours/" 2>/dev/null || true
cp -r "$CARD_OUT" "$OUT/hub_aasist_l.spoof_speech"
$PY - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
ours = json.loads((out / "metrics_aasist_l_spoof_speech.json").read_text())
auth = json.loads((out / "metrics_aasist_asvspoof2019_zero_shot.json").read_text())
summary = {"aasist_l_trained_eer_percent": ours.get("test/eer"), "aasist_authors_zero_shot_eer_percent": auth.get("test/eer"),
           "dataset": "spoof_speech eval split (sentences unseen in training)"}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
PYEOF
