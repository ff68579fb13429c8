#!/usr/bin/env bash
# docs/benchmarks/transducer-loss-h200.md: benchmarks/transducer_loss.py, fused Triton RNN-T joint + loss vs torch joint + torchaudio rnnt_loss at B16 T250 U80 V1024 (time, extra peak memory, loss/grad agreement) -> $ART/transducer-loss-h200.md + .json
# limit: 120
set -uo pipefail
if [ "$SMOKE" = 1 ]; then exec $PY benchmarks/transducer_loss.py --smoke --out "$ART/transducer-loss-h200.md"; fi
exec $PY benchmarks/transducer_loss.py --variants 512x32 --out "$ART/transducer-loss-h200.md" --json "$ART/transducer-loss-h200.json"
