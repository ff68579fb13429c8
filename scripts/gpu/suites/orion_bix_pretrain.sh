#!/usr/bin/env bash
# Orion-BiX small meta-trained ~250 s on the GPU torch prior: hub/zoo-models/orion_bix_small.prior + docs/benchmarks/tabular.md -> $ART
# limit: 420
# Needs nothing carried beyond the working tree (jsonargparse wheel in .whl/ for train.py's CLI; penguins ships as
# benchmarks/tabular_penguins.csv). Writes under $ART:
#   hub/zoo-models/orion_bix_small.prior/   config.json + model.safetensors + README.md  -> copy to hub/zoo-models/
#   registry.txt                            sha256 + val metrics for zoo/models/orion_bix.py's "prior" PretrainedSource
#   train_results.json                      train.py results (steps, val metrics)
#   tabular.md / tabular.json               5 tables x {OrionBixClassifier(), HistGradientBoosting, RandomForest,
#                                           LogisticRegression}, fit / predict s per fold, KV-cache speed-up -> docs/benchmarks/tabular.md
# Env: TRAIN_SECONDS (default 250; startup + export + benchmark take ~120 s more).
set -euo pipefail
PY=${PY:-python3}
ART=${ART:-/tmp/orion_bix_art}
mkdir -p "$ART"
RUN=/tmp/orion_bix_prior_run
rm -rf "$RUN"
HUB=hub/zoo-models/orion_bix_small.prior
secs=${TRAIN_SECONDS:-250}
if [ "${SMOKE:-0}" = 1 ]; then
    CONFIG=configs/orion_bix/prior.yaml
    TRAIN=(--trainer.accelerator cpu --trainer.precision 32-true --trainer.max_steps 3 --trainer.max_epochs 1
           --data.init_args.max_rows 64 --data.init_args.max_features 8 --data.init_args.batch_size 4
           --data.init_args.val_batches 1 --data.init_args.steps_per_epoch 3 --model.init_args.time_budget_s 30)
    HUB="$ART/hub/zoo-models/orion_bix_small.prior"  # never overwrite the checkout's weights in a smoke run
    BENCH=(--weights "$HUB" --tables iris,penguins --folds 2 --n-estimators 2 --baselines LogisticRegression --kv-cache)
else
    CONFIG=configs/orion_bix/prior.yaml
    TRAIN=(--trainer.max_time "00:00:$(printf %02d:%02d $((secs / 60)) $((secs % 60)))" --model.init_args.time_budget_s "$secs")
    # the working tree is a copy: the fresh weights replace the checkout's, so OrionBixClassifier() (model="auto",
    # no hub on the device) falls back to them: the table measures the default estimator
    BENCH=(--weights auto --n-estimators 32 --kv-cache)
fi
nvidia-smi -L 2>/dev/null || true
t0=$(date +%s)
echo "== meta-training ($CONFIG, ${secs}s) =="
$PY train.py --config "$CONFIG" --trainer.default_root_dir "$RUN" "${TRAIN[@]}"
t1=$(date +%s)
echo "== export to $HUB =="
$PY - "$RUN" "$HUB" "$CONFIG" "$ART" <<'PYEOF'
import json, sys
from pathlib import Path
from zoo.cli import load_task_from_checkpoint
from zoo.hub import save_pretrained, sha256_file

run, hub, config, art = map(Path, sys.argv[1:5])
res = json.loads((run / "results.json").read_text())
ckpt = res.get("last_checkpoint") or res.get("best_checkpoint")
if not ckpt:
    raise SystemExit(f"no checkpoint in {run}/results.json")
task, _ = load_task_from_checkpoint(ckpt)
metrics = {k: round(v, 4) for k, v in (res.get("val") or {}).items()}
recipe = (f"Meta-trained with `python train.py --config {config}` for {res.get('global_step')} steps (wall-clock "
          "budget, bf16-mixed, one GPU) on the batched torch prior (`zoo.datasets.tabular_prior.sample_batch_torch`: "
          "MLP-SCM nodes with random activations, multinomial-logistic and feature-function targets, 2-10 classes, "
          "2-100 features, 32-1536 rows, curriculum from small to large tables). Validation metrics are on held-out "
          "prior episodes (test rows). Config:\n\n```yaml\n" + config.read_text() + "```\n")
extra = ("## Use\n\n```python\nfrom zoo.tabular import OrionBixClassifier\n"
         "clf = OrionBixClassifier(model=\"orion_bix_small.prior\").fit(X_train, y_train)\n"
         "proba = clf.predict_proba(X_test)\n```\n\n`OrionBixClassifier()` uses these weights when the released "
         "checkpoint cannot be had. Real-table results: docs/benchmarks/tabular.md.\n")
save_pretrained(task.model, hub, metrics=metrics, dataset="synthetic tabular prior (torch, TabICL-style)",
                recipe=recipe, extra_card=extra, name="orion_bix_small.prior")
sha = sha256_file(hub / "model.safetensors")
(art / "registry.txt").write_text(f"sha256={sha}\nmetrics={json.dumps(metrics)}\nsteps={res.get('global_step')}\n")
(art / "train_results.json").write_text(json.dumps(res, indent=2))
print("wrote", hub, sha, metrics, "steps", res.get("global_step"))
PYEOF
if [ "${SMOKE:-0}" != 1 ]; then mkdir -p "$ART/hub/zoo-models" && cp -r "$HUB" "$ART/hub/zoo-models/"; fi
t2=$(date +%s)
echo "== benchmark =="
$PY benchmarks/tabular.py "${BENCH[@]}" --name "OrionBixClassifier() (orion_bix_small.prior, this run)" \
    --official no --out "$ART/tabular.md" --json "$ART/tabular.json"
t3=$(date +%s)
echo "seconds: train $((t1 - t0)) export $((t2 - t1)) benchmark $((t3 - t2))" | tee "$ART/seconds.txt"
rm -rf "$RUN"/checkpoints
