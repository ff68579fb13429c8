#!/usr/bin/env bash
# H200 batch 5 (device tool): the transducer and Orion-BiX trainings again, side by side, after `auto` stopped
# sending variable-shape attention to compiled Flex (batch 3 spent 24 s per step recompiling it). Carry: .whl and
# data/offline_speech. Results: $OUT/batch5.tgz.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PY=python3 PYTHON=python3 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT_DIR=${OUT:-/tmp/out}
rm -f /tmp/rc
(OUT=/tmp/o_tt timeout ${T_TT:-450} bash scripts/gpu/transducer_train.sh --trainer.max_time 00:00:05:30 \
    --data.init_args.num_workers 6 > /tmp/tt.log 2>&1; echo "transducer rc=$?" >> /tmp/rc) &
(TRAIN_SECONDS=${ORION_SECONDS:-300} OUT=/tmp/o_orion timeout ${T_ORION:-450} bash scripts/gpu/orion_bix_pretrain.sh \
    --data.init_args.num_workers 8 > /tmp/orion.log 2>&1; echo "orion rc=$?" >> /tmp/rc) &
wait
cat /tmp/rc
timeout ${T_STEP:-45} python3 benchmarks/transducer.py --train-step > /tmp/tt_step.log 2>&1; echo "step rc=$?"
for f in /tmp/tt.log /tmp/orion.log /tmp/tt_step.log; do echo "=== $f"; tr '\r' '\n' < $f | grep -v "it/s\]$" | tail -22; done
tar czf "$OUT_DIR/batch5.tgz" -C / tmp/tt.log tmp/orion.log tmp/tt_step.log tmp/o_tt tmp/o_orion 2>/dev/null
ls -la "$OUT_DIR"
