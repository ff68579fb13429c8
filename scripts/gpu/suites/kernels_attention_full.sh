#!/usr/bin/env bash
# docs/benchmarks/attention-h200.md "Full-size rows (N32768)": benchmarks/attention.py without --quick (N up to 32768/65536) -> $ART/attention-h200-full.md + .json
# limit: 600
set -uo pipefail
if [ "$SMOKE" = 1 ]; then exec $PY benchmarks/attention.py --device cpu --only "sliding" --out "$ART/attention-h200-full.md"; fi
exec $PY benchmarks/attention.py --only "${ROWS:-N32768|N65536}" --out "$ART/attention-h200-full.md" --json "$ART/attention-h200-full.json"
