#!/usr/bin/env bash
# docs/benchmarks/attention-h200.md speed sections: every row of benchmarks/attention.py --quick (dense, masked, varlen, block-sparse; ours vs SDPA flash/cuDNN, Flex, auto) -> $ART/attention-h200.md + .json (dispatch suggestion for zoo/kernels/attention/dispatch.py)
# limit: 600
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    exec $PY benchmarks/attention.py --device cpu --quick --only "dense causal" --out "$ART/attention-h200.md"
fi
exec $PY benchmarks/attention.py --quick ${ROWS:+--only "$ROWS"} --out "$ART/attention-h200.md" --json "$ART/attention-h200.json"
