#!/usr/bin/env bash
# RepNeXt-M0 trained on Fashion-MNIST: hub/zoo-models/repnext_m0.fmnist card + eval -> $ART (carry the FMNIST idx files, FMNIST_DIR)
# limit: 600
# Thin wrapper: the recipe lives in scripts/gpu/repnext_fmnist.sh (its header says what must be carried); outputs land in $ART.
set -uo pipefail
export OUT="$ART" PYTHON="$PY"
if [ "$SMOKE" = 1 ]; then exec bash scripts/gpu/repnext_fmnist.sh --smoke; fi
exec bash scripts/gpu/repnext_fmnist.sh ${TRAIN_ARGS:-}
