# Sourced by the scripts/gpu/batch*.sh scripts (device tool): installs the carried wheels, exports the environment,
# records the card and versions, and defines `run NAME LIMIT COMMAND...` (output to $O/NAME.log, one summary line
# with exit status and seconds to $O/summary.txt). The caller sets O (its log folder) first.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHON=python3 PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1
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
