#!/usr/bin/env bash
# CRASH offline comparison: render accident scenes + extract features on the GPU, train CRASH / CRASH quirks-fixed / DSA-style baseline at equal budget -> $ART/{table.md,results.json,train_log.txt,hub/zoo-models/crash.accident_scenes}
# limit: 120
# Nothing to carry: the scenes and their features (seeded random VGG-16, no download) are generated from the working
# tree. Outputs: $ART/table.md (the comparison), $ART/results.json (+ per-epoch history and scene meta), the hub
# folder (config.json + fp16 model.safetensors + card) to copy to hub/zoo-models/crash.accident_scenes/.
set -euo pipefail
export HF_HUB_OFFLINE=1
DATA=/tmp/crash_accident_scenes
if [ "${SMOKE:-0}" = 1 ]; then
  rm -rf "$DATA"
  $PY benchmarks/crash.py offline --data "$DATA" --preset tiny --device cpu --epochs 1 --batch 4 --time-budget 60 --out "$ART" \
    --hub-out "$ART/hub/zoo-models/crash.accident_scenes"
else
  rm -rf "$DATA"
  $PY benchmarks/crash.py offline --data "$DATA" --preset gpu --device cuda --epochs 10 --batch 64 --lr 1e-3 --time-budget 45 \
    --out "$ART" --hub-out "$ART/hub/zoo-models/crash.accident_scenes"
fi
$PY -c "import zoo.hub as h; m = h.from_pretrained('$ART/hub/zoo-models/crash.accident_scenes'); print('hub folder reloads strictly:', type(m).__name__, sum(p.numel() for p in m.parameters()))"
