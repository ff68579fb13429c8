#!/usr/bin/env bash
# AASIST-L trained on spoof_speech + authors' AASIST zero-shot: hub/zoo-models/aasist_l.spoof_speech, metrics json, DET plots -> $ART (carry data/spoof_speech)
# limit: 420
# Thin wrapper: the recipe lives in scripts/gpu/aasist_train.sh (its header says what must be carried); outputs land in $ART.
set -uo pipefail
export OUT="$ART" PYTHON="$PY"
if [ "$SMOKE" = 1 ]; then exec bash scripts/gpu/aasist_train.sh --smoke; fi
exec bash scripts/gpu/aasist_train.sh ${TRAIN_ARGS:-}
