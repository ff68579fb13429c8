#!/usr/bin/env bash
# Block-sparse backward, two kernels (dq kernel recomputes QK^T and dO V^T) vs one kernel (dq by fp32 atomics in the dk/dv kernel): MoC rows of sparse.py and the block-sparse rows of attention.py, each under ZOO_ATTN_ATOMIC_DQ=0 and =1 -> $ART/*-dq{0,1}.md
# limit: 420
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    for a in 0 1; do ZOO_ATTN_ATOMIC_DQ=$a $PY benchmarks/sparse.py --device cpu --quick --only moc --out "$ART/moc-dq$a.md" || exit 1; done
    exit 0
fi
rc=0
for a in 0 1; do
    ZOO_ATTN_ATOMIC_DQ=$a timeout 150 $PY benchmarks/sparse.py --only moc ${ROWS:+--rows "$ROWS"} --out "$ART/moc-dq$a.md" || rc=1
    ZOO_ATTN_ATOMIC_DQ=$a timeout 60 $PY benchmarks/attention.py --quick --only block-sparse --columns ours,flex \
        --out "$ART/attention-block-sparse-dq$a.md" || rc=1
done
exit $rc
