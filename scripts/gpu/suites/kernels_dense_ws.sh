#!/usr/bin/env bash
# Dense forward, plain software-pipelined loop vs Triton warp specialisation (ZOO_ATTN_FWD_WS=0/1, 8-warp configs) with cuDNN alongside: the dense rows of attention.py --quick -> $ART/attention-dense-ws{0,1}.md
# limit: 300
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    exec $PY benchmarks/attention.py --device cpu --quick --only "dense causal" --columns ours --out "$ART/attention-dense-ws0.md"
fi
rc=0
ZOO_ATTN_FWD_WS=0 timeout 140 $PY benchmarks/attention.py --quick --only "${ROWS:-dense (full|causal) B2 H16 N8192}" \
    --columns ours,sdpa-cudnn --out "$ART/attention-dense-ws0.md" || rc=1
ZOO_ATTN_FWD_WS=1 timeout 140 $PY benchmarks/attention.py --quick --only "${ROWS:-dense (full|causal) B2 H16 N8192}" \
    --columns ours,sdpa-cudnn --out "$ART/attention-dense-ws1.md" || rc=1
exit $rc
