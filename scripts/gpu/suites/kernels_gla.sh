#!/usr/bin/env bash
# docs/benchmarks/sparse-h200.md GLA section: benchmarks/gla.py (ours vs fla-core chunk_gla, fwd and fwd+bwd) -> $ART/gla-h200.md. Needs the fla-core wheel in .whl/
# limit: 300
set -uo pipefail
if [ "$SMOKE" = 1 ]; then $PY benchmarks/gla.py --help > /dev/null; exit $?; fi
exec $PY benchmarks/gla.py --out "$ART/gla-h200.md"
