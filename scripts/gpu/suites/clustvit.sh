#!/usr/bin/env bash
# ClustViT-T vs ViT-T on Fashion-MNIST mosaics (mIoU, hub folder clustvit_t.fmnist_mosaic) + the GPU speed table.
# limit: 240
# Budget: ~150 s on one H200 (bf16). Writes under $ART:
#   clustvit_t/results.json, vit_t/results.json   train.py results (test mIoU / pixel accuracy of the final weights)
#   eval/metrics.json, eval/metrics_float16.json  eval.py on ClustViT-T's last checkpoint (fp16 = the card's numbers)
#   hub/zoo-models/clustvit_t.fmnist_mosaic/       config.json + model.safetensors + README.md  -> copy to hub/
#   overlays/*.png                                 image | prediction | ground truth, 16 test mosaics
#   bench_{gpu,trained,cpu}.{json,md}              speed table rows (GPU T/B 512, trained T 256, 2 CPU threads T 512)
#                                                  -> docs/benchmarks/clustvit.md
#   summary.json                                   every number of the run in one file
set -euo pipefail
PY=${PY:-python3}
ART=${ART:-/tmp/clustvit_art}
mkdir -p "$ART"
CACHE=/tmp/clustvit_mosaic_cache
COMMON=(--data.init_args.cache_dir="$CACHE" --progress_refresh_rate=200)
STEPS=700
BENCH=(--device cuda --sizes t,b --res 512 --batch 32 --dtype bf16 --merge 0.45,0.65 --backends sdpa,triton --packed-backends triton --iters 20 --warmup 5)
BENCH_CPU=(--device cpu --sizes t --res 512 --batch 1 --dtype fp32 --threads 2 --merge 0.45,0.65 --backends sdpa --iters 5 --warmup 2)
BENCH_TRAINED=(--device cuda --sizes t --res 256 --batch 32 --dtype bf16 --backends sdpa,triton --packed-backends triton --iters 20 --warmup 5)
EVAL_EXTRA=(--precision bf16-mixed)
if [ "${SMOKE:-0}" = 1 ]; then
    STEPS=2
    COMMON+=(--trainer.accelerator=cpu --trainer.precision=32-true --trainer.benchmark=false
             --data.init_args.image_size=64 --data.init_args.num_train=64 --data.init_args.num_val=8
             --data.init_args.num_test=16 --data.init_args.batch_size=8 --data.init_args.num_workers=0
             )
    BENCH=(--device cpu --sizes t --res 64 --batch 2 --dtype fp32 --merge 0.5 --backends auto --packed-backends sdpa --iters 2 --warmup 1)
    BENCH_CPU=(--device cpu --sizes t --res 64 --batch 1 --dtype fp32 --threads 1 --merge 0.5 --backends sdpa --iters 2 --warmup 1)
    BENCH_TRAINED=(--device cpu --sizes t --res 64 --batch 2 --dtype fp32 --backends auto --iters 2 --warmup 1)
    EVAL_EXTRA=(--accelerator cpu --precision 32-true --num-workers 0)
fi
nvidia-smi -L 2>/dev/null || true
t0=$(date +%s)
$PY train.py --config configs/clustvit/fmnist_mosaic.yaml --trainer.max_steps=$STEPS "${COMMON[@]}" \
    --trainer.default_root_dir="$ART/clustvit_t"
t1=$(date +%s)
$PY train.py --config configs/clustvit/vit_t_fmnist_mosaic.yaml --trainer.max_steps=$STEPS "${COMMON[@]}" \
    --trainer.default_root_dir="$ART/vit_t"
t2=$(date +%s)
HUB="$ART/hub/zoo-models/clustvit_t.fmnist_mosaic"
DATA_ARGS=(--data-arg cache_dir="$CACHE")
[ "${SMOKE:-0}" = 1 ] && DATA_ARGS+=(--data-arg image_size=64 --data-arg num_train=64 --data-arg num_val=8 --data-arg num_test=16 --data-arg num_workers=0)
ZOO_PREDICTIONS_DIR="$ART/overlays" $PY eval.py --ckpt "$ART/clustvit_t/checkpoints/last.ckpt" "${DATA_ARGS[@]}" \
    --out "$ART/eval/metrics.json" --card-out "$HUB" --card-dtype float16 --card-name "ClustViT-T (Fashion-MNIST mosaics)" "${EVAL_EXTRA[@]}"
t3=$(date +%s)
$PY benchmarks/clustvit.py "${BENCH[@]}" --json "$ART/bench_gpu.json" --md "$ART/bench_gpu.md"
$PY benchmarks/clustvit.py "${BENCH_TRAINED[@]}" --pretrained "$HUB" --json "$ART/bench_trained.json" --md "$ART/bench_trained.md"
OMP_NUM_THREADS=2 $PY benchmarks/clustvit.py "${BENCH_CPU[@]}" --json "$ART/bench_cpu.json" --md "$ART/bench_cpu.md"
t4=$(date +%s)
rm -f "$ART"/clustvit_t/checkpoints/*.ckpt "$ART"/vit_t/checkpoints/*.ckpt  # large; the hub folder has the weights
$PY - "$ART" $((t1 - t0)) $((t2 - t1)) $((t3 - t2)) $((t4 - t3)) <<'PYEOF'
import json, sys, pathlib
art = pathlib.Path(sys.argv[1])
out = {"seconds": dict(zip(["train_clustvit_t", "train_vit_t", "eval_card", "bench"], map(int, sys.argv[2:6])))}
out["clustvit_t_eval"] = json.loads((art / "eval/metrics.json").read_text())
out["clustvit_t_test"] = json.loads((art / "clustvit_t/results.json").read_text()).get("test")
out["vit_t_test"] = json.loads((art / "vit_t/results.json").read_text()).get("test")
out["bench"] = json.loads((art / "bench_gpu.json").read_text()) + json.loads((art / "bench_trained.json").read_text()) + \
    json.loads((art / "bench_cpu.json").read_text())
(art / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=1))
PYEOF
