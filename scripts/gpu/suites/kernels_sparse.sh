#!/usr/bin/env bash
# docs/benchmarks/sparse-h200.md MoC + NSA sections: benchmarks/sparse.py (MoC vs Flex end to end incl. routing; NSA vs dense cuDNN and fla-core; --breakdown stage table) -> $ART/sparse-h200.md. Needs the fla-core wheel in .whl/
# limit: 600
set -uo pipefail
if [ "$SMOKE" = 1 ]; then exec $PY benchmarks/sparse.py --device cpu --quick --out "$ART/sparse-h200.md"; fi
exec $PY benchmarks/sparse.py ${ONLY:+--only "$ONLY"} ${ROWS:+--rows "$ROWS"} --breakdown --out "$ART/sparse-h200.md"
