#!/usr/bin/env bash
# Install the zoo with its test extras (pinned to the tested stack) into .venv and run the default test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# ExecuTorch for the .pte export tests. Its own pins (pytest<9, scikit-learn==1.7.1, dev tools) would downgrade the
# tested stack, so install it without them plus the few packages its lowering and runtime import.
if [ "${ZOO_SKIP_MOBILE:-0}" != 1 ]; then
    .venv/bin/python -m pip install -q -c constraints.txt --no-deps executorch==1.2.0 torchao==0.18.0
    .venv/bin/python -m pip install -q -c constraints.txt flatbuffers ruamel.yaml tabulate
fi
exec .venv/bin/python -m pytest -q "$@"
