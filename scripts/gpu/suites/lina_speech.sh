#!/usr/bin/env bash
# Lina-Speech small trained on the offline espeak-ng token corpus (zoo/datasets/data/lina_offline, built on the CPU): hub/zoo-models/lina_speech_small.lina_offline + generations for held-out sentences + IST vs full fine-tune on a held-out voice + streaming RTF on the GPU -> $ART (then on the CPU: python benchmarks/lina_speech.py cpu --art $ART for the pocketsphinx WER table)
# limit: 150
# Needs zoo/datasets/data/lina_offline/{tokens.npz,codec.safetensors,codec.json} in the working tree (a few MB; the GPU
# image has no espeak-ng). Training time is fixed in seconds (--train-seconds), the step count follows from speed.
set -euo pipefail
DATA=${LINA_DATA:-zoo/datasets/data/lina_offline}
if [ "$SMOKE" = 1 ]; then
    if [ ! -f "$DATA/tokens.npz" ]; then
        DATA=/tmp/lina_smoke_data
        $PY -c "from zoo.datasets.lina_speech import prepare; prepare('$DATA', max_sentences=40, n_ist=4, human=False, codebook_size=32, test_fraction=0.2)"
    fi
    export TRITON_INTERPRET=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    exec $PY benchmarks/lina_speech.py gpu --data "$DATA" --out "$ART" --smoke --n-test 3 --n-ist-test 2
fi
test -f "$DATA/tokens.npz" || { echo "error: $DATA/tokens.npz missing: python -m zoo.datasets.lina_speech prepare" >&2; exit 2; }
$PY benchmarks/lina_speech.py gpu --data "$DATA" --out "$ART" --train-seconds ${LINA_TRAIN_SECONDS:-55} \
    --ist-steps ${LINA_IST_STEPS:-60} ${LINA_ARGS:-}
