#!/usr/bin/env bash
# The one GPU runner (device tool): runs named suites, each a script in scripts/gpu/suites/<name>.sh that regenerates
# one published table or one trained model. A suite's first lines say what it writes and its time limit
# (`# limit: SECONDS`). Logs and artifacts come back as $OUT/gpu_results.tgz.[a-f] (15 MB parts; `cat | tar xz`)
# and $OUT/summary.txt, rewritten after every suite; $OUT/partial.tgz holds the suite in progress when a call is cut.
#
#   bash scripts/gpu/run.sh SUITE [SUITE...]          # on the device, e.g. via the device tool's `run`
#   bash scripts/gpu/run.sh --list                      # suites and what each regenerates
#   SMOKE=1 bash scripts/gpu/run.sh SUITE               # CPU smoke run of the same commands (tiny sizes)
#
# Inside a suite: $ART is its artifact folder (comes back in the tarball), $SMOKE is 1 for a CPU smoke run, $PY the
# python. Carry .whl (wheels installed to /tmp/site) and .device_carry/compile_cache.tgz.* when present; after a GPU run
# the Triton + Inductor caches come back as $OUT/compile_cache.tgz.* (copy them into .device_carry/ for the next call,
# which turns first-call autotuning into cache hits; SAVE_CACHE=0 skips this).
# Every markdown table a suite leaves in $ART gets a provenance line on top (date, card, torch/triton, the command),
# so the table copied into docs/benchmarks/ says how to regenerate it. Suite names and what they regenerate:
# docs/benchmarks/README.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
SUITES=scripts/gpu/suites
if [ "${1:-}" = "--list" ]; then
    for f in "$SUITES"/[!_]*.sh; do printf '%-22s %s\n' "$(basename "$f" .sh)" "$(sed -n 2p "$f" | sed 's/^# //')"; done
    exit 0
fi
[ $# -ge 1 ] || { echo "usage: $0 SUITE [SUITE...] | --list" >&2; exit 2; }
for s in "$@"; do [ -f "$SUITES/$s.sh" ] || { echo "unknown suite '$s' (see --list)" >&2; exit 2; }; done

export SMOKE=${SMOKE:-0} PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
export PY=${PY:-python3}
[ -x .venv/bin/python ] && [ "$SMOKE" = 1 ] && PY=.venv/bin/python
if [ "$SMOKE" != 1 ] && ls .whl/*.whl > /dev/null 2>&1; then  # the CPU venv has them; /tmp/site is shared here
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TRITON_CACHE_DIR=/tmp/compile_cache/triton TORCHINDUCTOR_CACHE_DIR=/tmp/compile_cache/inductor
if ls .device_carry/compile_cache.tgz.* > /dev/null 2>&1; then cat .device_carry/compile_cache.tgz.* | tar xzf - -C /tmp; fi
mkdir -p "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"

# private folders: several people may smoke-test suites on one machine at once
OUT=${OUT:-$(mktemp -d /tmp/zoo_gpu_out.XXXXXX)}; mkdir -p "$OUT"
RES=$(mktemp -d /tmp/zoo_gpu_results.XXXXXX)
{ date -u +%FT%TZ; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU";
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } > "$RES/machine.txt"
cat "$RES/machine.txt"
# A call cut by the device's limit mid-suite still returns that suite's rows so far: every 20 s the results folder is
# packed into $OUT/partial.tgz (removed again once the last suite has been packed whole).
( while sleep 20; do tar czf "$RES.partial.tgz" -C "$RES" . 2>/dev/null && mv -f "$RES.partial.tgz" "$OUT/partial.tgz"; done ) &
PACKER=$!
for s in "$@"; do
    limit=$(grep -m1 '^# limit:' "$SUITES/$s.sh" | awk '{print $3}'); limit=${limit:-300}
    [ "$SMOKE" = 1 ] && limit=$((limit * 4))
    export ART="$RES/$s"; mkdir -p "$ART"
    t0=$(date +%s)
    timeout "$limit" bash "$SUITES/$s.sh" > "$ART/log.txt" 2>&1; rc=$?
    echo "$s rc=$rc $(( $(date +%s) - t0 )) s (limit $limit)" | tee -a "$RES/summary.txt"
    tail -n 15 "$ART/log.txt"
    prov="<!-- regenerate: bash scripts/gpu/run.sh $s -->
_Regenerated $(date -u '+%F %H:%M') UTC by \`bash scripts/gpu/run.sh $s\` (limit $limit s, rc $rc) on $(sed -n 2p "$RES/machine.txt"), $(sed -n 3p "$RES/machine.txt")._
"
    for md in "$ART"/*.md; do
        [ -f "$md" ] || continue
        grep -q '^<!-- regenerate:' "$md" || { printf '%s\n' "$prov" | cat - "$md" > "$md.tmp" && mv "$md.tmp" "$md"; }
    done
    # after every suite, so a call cut by its limit still returns the suites that finished ($OUT: 8 files of 16 MB)
    cp "$RES/summary.txt" "$OUT/summary.txt"
    rm -f "$OUT"/gpu_results.tgz.*
    tar czf - -C "$RES" . | split -b 15m -a 1 - "$OUT/gpu_results.tgz."
done
kill "$PACKER" 2>/dev/null; wait "$PACKER" 2>/dev/null; rm -f "$OUT/partial.tgz"
if [ "$SMOKE" != 1 ] && [ "${SAVE_CACHE:-1}" = 1 ] && [ -d /tmp/compile_cache ]; then
    # kernels and autotune choices only (no IR dumps); at most 6 parts of 15 MB so $OUT stays within 8 files
    find /tmp/compile_cache \( -name '*.ptx' -o -name '*.ttir' -o -name '*.ttgir' -o -name '*.llir' -o -name '*.source' \) \
        -delete 2>/dev/null
    tar czf - -C /tmp compile_cache | split -b 15m -a 1 - "$OUT/compile_cache.tgz."
    n=$(ls "$OUT"/compile_cache.tgz.* | wc -l)
    [ "$n" -le 6 ] || { echo "compile cache too large ($n parts): not returned"; rm -f "$OUT"/compile_cache.tgz.*; }
fi
ls -la "$OUT"
