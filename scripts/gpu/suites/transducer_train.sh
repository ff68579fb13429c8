#!/usr/bin/env bash
# Transformer Transducer small trained on offline_speech (full and L10/R2 CER/WER): hub/zoo-models/transformer_transducer_small.offline_speech + metrics.json -> $ART (carry data/offline_speech; trains with the fused Triton RNN-T joint + loss unless FUSED_LOSS=0)
# limit: 420
# Thin wrapper: the recipe lives in scripts/gpu/transducer_train.sh (its header says what must be carried); outputs land in $ART.
set -uo pipefail
export OUT="$ART" PYTHON="$PY"
ARGS=${TRAIN_ARGS:-}
[ "${FUSED_LOSS:-1}" = 1 ] && ARGS="$ARGS --model.init_args.fused_loss=true"
if [ "$SMOKE" = 1 ]; then exec bash scripts/gpu/transducer_train.sh --smoke $ARGS; fi
exec bash scripts/gpu/transducer_train.sh $ARGS
