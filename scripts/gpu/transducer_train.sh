#!/usr/bin/env bash
# Train the small Transformer Transducer on the offline speech corpus (one GPU, ~3 min of training, < 5 min in all),
# test CER/WER on the held-out human prompts for full context and left 10 / right 2 frames per layer (streaming
# masks), write the hub folder hub/zoo-models/transformer_transducer_small.offline_speech/ (config.json,
# model.safetensors, README.md card, tokenizer.json) and copy the numbers and the folder to $OUT.
#
#   scripts/gpu/transducer_train.sh            # GPU (carry data/offline_speech: ~33 MB, built on a Debian box with
#                                              #   python -m zoo.datasets.offline_speech prepare --out data/offline_speech)
#   scripts/gpu/transducer_train.sh --smoke    # CPU, 4 steps: checks the pipeline end to end
#   Further arguments go to train.py, e.g. --trainer.max_time 00:00:06:00
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-runs/transducer_out}
mkdir -p "$OUT"
PY=${PY:-python}
[ -x .venv/bin/python ] && [ "$PY" = python ] && PY=.venv/bin/python
DATA=data/offline_speech
if [ ! -d "$DATA/train" ]; then
  echo "error: $DATA is missing; build it where the Debian packages are installed:" >&2
  echo "  python -m zoo.datasets.offline_speech prepare --out $DATA   (and carry it to this machine)" >&2
  exit 2
fi
echo "corpus: $(du -sh $DATA | cut -f1)"
CFG=configs/transducer/small_offline_speech.yaml
ROOT=runs/transducer_small_offline_speech
EXTRA=()
if [ "${1:-}" = "--smoke" ]; then
  CFG=configs/transducer/small_offline_speech_cpu.yaml
  ROOT=runs/transducer_smoke
  EXTRA=(--trainer.max_steps=4 --trainer.val_check_interval=4 --trainer.limit_val_batches=1 --trainer.limit_test_batches=1)
  shift
fi
EXTRA+=("$@")  # any further arguments go to train.py
rm -rf "$ROOT"
start=$(date +%s)
$PY train.py --config "$CFG" --trainer.default_root_dir="$ROOT" "${EXTRA[@]}" 2>&1 | tee "$OUT/train.log" | grep -v "it/s" || true
echo "train + test wall: $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
test -f "$ROOT/results.json" || { echo "error: training wrote no results.json" >&2; exit 1; }
cp "$ROOT/results.json" "$OUT/results.json"
HUB=hub/zoo-models/transformer_transducer_small.offline_speech
[ "$ROOT" = runs/transducer_smoke ] && HUB="$OUT/smoke_hub/transformer_transducer_small.offline_speech"  # keep the published folder
$PY - "$ROOT/results.json" "$HUB" "$OUT" <<'PYEOF'
import json, shutil, sys
from pathlib import Path
import torch
from zoo import hub
from zoo.cli import load_task_from_checkpoint
from zoo.tasks.asr import CharTokenizer

res = json.loads(Path(sys.argv[1]).read_text())
folder, out = Path(sys.argv[2]), Path(sys.argv[3])
ckpt = res.get("best_checkpoint") or res.get("last_checkpoint")
loaded = load_task_from_checkpoint(ckpt)
task = loaded[0] if isinstance(loaded, tuple) else loaded
model = task.model.eval().cpu()
test = res.get("test", {})
metrics = {k.replace("test/", ""): float(v) for k, v in test.items() if k.startswith("test/") and ("er" in k)}
card = ("Trained on the offline speech corpus (Debian asterisk-core-sounds-en-wav prompts, pocketsphinx-testdata, "
        "espeak-ng renderings of the training texts); tested on held-out asterisk prompt texts (one human speaker). "
        "`wer_full`/`cer_full`: full attention; `wer_l10_r2`/`cer_l10_r2`: left 10 / right 2 frames per layer "
        "(streaming masks, decodable chunk by chunk with zoo.models.transducer.StreamingDecoder). "
        "Greedy decoding, no language model. Tokenizer: tokenizer.json (characters, blank = 0).")
info = task.model_card_info() if hasattr(task, "model_card_info") else {"recipe": {}}
hub.save_pretrained(model, folder, metrics=metrics, dataset="offline_speech", recipe=info.get("recipe"),
                    extra_card=card)
CharTokenizer.from_dict(getattr(task, "tokenizer", CharTokenizer()).to_dict()).save(folder)
(out / "metrics.json").write_text(json.dumps({"test": metrics, "global_step": res.get("global_step"),
                                              "best_checkpoint": ckpt}, indent=2) + "\n")
shutil.copytree(folder, out / folder.name, dirs_exist_ok=True)
print(json.dumps(metrics, indent=2))
PYEOF
ls -la "$HUB"
