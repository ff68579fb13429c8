#!/usr/bin/env bash
# The gpu-marked kernel tests (bf16 cases of every kernel, the fused RNN-T loss vs torchaudio on CUDA) -> $ART/pytest.txt
# limit: 180
set -uo pipefail
if [ "$SMOKE" = 1 ]; then exec $PY -m pytest -q -p no:cacheprovider --co -m gpu tests/kernels > "$ART/pytest.txt"; fi
$PY -m pytest -q -m gpu -p no:cacheprovider tests/kernels 2>&1 | tee "$ART/pytest.txt"
exit "${PIPESTATUS[0]}"
