#!/usr/bin/env bash
# The device tool copies the tracked and untracked-unignored files plus the carried paths, 64 MiB in all. The GPU
# batches do not read tests/fixtures (~20 MB): `off` untracks it and ignores it locally for the copy, `on` puts it
# back. Do not commit between the two (the commit would record the fixtures as deleted).
# Usage: bash scripts/gpu/fixtures_carry.sh off|on
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-}" in
    off) git rm -r -q --cached tests/fixtures && echo '/tests/fixtures/' >> .git/info/exclude ;;
    on) git reset -q -- tests/fixtures && sed -i '/^\/tests\/fixtures\/$/d' .git/info/exclude ;;
    *) echo "usage: $0 off|on" >&2; exit 2 ;;
esac
git status --short -- tests/fixtures | head -3
