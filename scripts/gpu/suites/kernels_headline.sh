#!/usr/bin/env bash
# The attention-kernel issue's rows in one call (~4 min): fused RNN-T loss vs torchaudio; MoC N65536 chunk 1024 top-3 with the two-kernel and the one-kernel (atomic dq) block-sparse backward; dense causal D128 N8192 + sliding window W512 (ours, cuDNN, Flex); GPU checks of the new kernels -> $ART/*.md
# limit: 240
# Each step has its own time limit so a slow one cannot starve the rest; peers sit in the same process as ours.
# The GPU tests compile the fused RNN-T kernels at the benchmark's specialisation (J512 V1024): cache hits after.
set -uo pipefail
if [ "$SMOKE" = 1 ]; then
    $PY benchmarks/transducer_loss.py --smoke --out "$ART/transducer-loss.md" || exit 1
    ZOO_ATTN_ATOMIC_DQ=1 $PY benchmarks/sparse.py --device cpu --quick --only moc --out "$ART/moc-atomic-dq.md" || exit 1
    exec $PY benchmarks/attention.py --device cpu --quick --only "dense causal|sliding" --columns ours \
        --out "$ART/attention-headline.md"
fi
rc=0
step() { local t=$1; shift; timeout "$t" "$@" || { echo "step failed or timed out ($t s): $*"; rc=1; }; }
step 60 env ZOO_ATTN_TRITON_SINGLE_CONFIG=1 $PY -m pytest -q -p no:cacheprovider tests/kernels/test_rnnt.py tests/kernels/test_attention_triton.py \
    -k "(fused_gpu and not tf32) or atomic_dq"
step 40 $PY benchmarks/transducer_loss.py --dtypes bfloat16 --out "$ART/transducer-loss-h200.md" --json "$ART/transducer-loss-h200.json"
step 30 env ZOO_ATTN_ATOMIC_DQ=0 $PY benchmarks/sparse.py --only moc --rows "N65536 chunk1024 k3" --out "$ART/moc-two-kernel-dq.md"
step 30 env ZOO_ATTN_ATOMIC_DQ=1 $PY benchmarks/sparse.py --only moc --rows "N65536 chunk1024 k3" --out "$ART/moc-atomic-dq.md"
step 80 $PY benchmarks/attention.py --only "dense causal B2 H16 N8192 D128|sliding-causal W512" --columns ours,sdpa-cudnn,flex \
    --out "$ART/attention-headline.md" --json "$ART/attention-headline.json"
exit $rc
