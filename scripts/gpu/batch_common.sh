# Sourced by the scripts/gpu/batch*.sh scripts (device tool): installs the carried wheels, exports the environment,
# records the card and versions, and defines `run NAME LIMIT COMMAND...` (output to $O/NAME.log, one summary line
# with exit status and seconds to $O/summary.txt). The caller sets O (its log folder) first.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
# Compile and autotune results outlive the machine: Triton's cache (kernels + autotune choices; absolute paths, so
# always /tmp) and Inductor's (Flex) come back as $OUT/compile_cache.tgz.* and travel in .device_carry/ next time,
# which turns the peers' 75-100 s first-call autotuning into a cache hit.
export TRITON_CACHE_DIR=/tmp/compile_cache/triton TORCHINDUCTOR_CACHE_DIR=/tmp/compile_cache/inductor
if ls .device_carry/compile_cache.tgz.* > /dev/null 2>&1; then cat .device_carry/compile_cache.tgz.* | tar xzf - -C /tmp; fi
mkdir -p "$TRITON_CACHE_DIR" "$TORCHINDUCTOR_CACHE_DIR"
save_compile_cache() {  # at most 7 parts of 15 MB: $OUT takes 8 files
  find /tmp/compile_cache -name '*.ptx' -o -name '*.ttir' -o -name '*.ttgir' -o -name '*.llir' -o -name '*.source' \
    | xargs -r rm -f
  du -sh /tmp/compile_cache
  tar czf - -C /tmp compile_cache | split -b 15m -a 1 - "${OUT:-/tmp/out}/compile_cache.tgz."
}
mkdir -p "$O"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$O/gpu.txt" 2>&1
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$O/gpu.txt"
run() {  # name limit command...
  local name=$1 limit=$2; shift 2
  local t0
  t0=$(date +%s)
  timeout "$limit" "$@" > "$O/$name.log" 2>&1; local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 )) s (limit $limit)" | tee -a "$O/summary.txt"
}
