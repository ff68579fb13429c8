#!/usr/bin/env bash
# Install the zoo with its test extras (pinned to the tested stack) into .venv and run the default test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
exec .venv/bin/python -m pytest -q "$@"
