#!/usr/bin/env bash
# H200 batch 3 (device tool): the three trainings side by side on one GPU (each is small and input-bound):
# AASIST-L on spoof_speech (#5), the small Transformer Transducer on offline_speech (#6) and Orion-BiX on the prior
# (#7). Carry: .whl and data/spoof_speech; data/offline_speech is staged by an earlier call of the same lease
# (the two corpora together exceed the 64 MiB a call may carry). Results: $OUT/batch3.tgz.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PY=python3 PYTHON=python3 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT_DIR=${OUT:-/tmp/out}
[ -d data/offline_speech/train ] || cp -r /tmp/offline_speech data/offline_speech
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
du -sh data/spoof_speech data/offline_speech
rm -f /tmp/rc
(OUT=/tmp/o_aasist timeout 540 bash scripts/gpu/aasist_train.sh --trainer.max_time 00:00:05:30 \
    --data.init_args.num_workers 4 > /tmp/aasist.log 2>&1; echo "aasist rc=$?" >> /tmp/rc) &
(OUT=/tmp/o_tt timeout 540 bash scripts/gpu/transducer_train.sh --trainer.max_time 00:00:06:00 \
    --data.init_args.num_workers 4 > /tmp/tt.log 2>&1; echo "transducer rc=$?" >> /tmp/rc) &
(TRAIN_SECONDS=300 OUT=/tmp/o_orion timeout 540 bash scripts/gpu/orion_bix_pretrain.sh \
    --data.init_args.num_workers 6 > /tmp/orion.log 2>&1; echo "orion rc=$?" >> /tmp/rc) &
wait
cat /tmp/rc
for f in /tmp/aasist.log /tmp/tt.log /tmp/orion.log; do echo "=== $f"; tr '\r' '\n' < $f | grep -v "it/s\]$" | tail -30; done
tar czf "$OUT_DIR/batch3.tgz" -C / tmp/aasist.log tmp/tt.log tmp/orion.log tmp/o_aasist tmp/o_tt tmp/o_orion 2>/dev/null
ls -la "$OUT_DIR"
