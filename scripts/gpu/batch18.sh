#!/usr/bin/env bash
# H200 batch 18 (~5 min): the remaining issue-4 rows on the flat block-sparse loop (batch 17 measured NSA T65536 and
# MoC N65536 chunk 1024 top-3 with it): NSA T16384, MoC N65536 chunk 1560 top-5, MoC N180000 chunk 1560 top-5.
# Carry: .whl, .device_carry/compile_cache.tgz.* (untrack tests/fixtures for the 64 MiB limit). Logs in $OUT.
O=/tmp/b18
source "$(dirname "$0")/batch_common.sh"
run nsa16k ${T_16K:-60} python3 benchmarks/sparse.py --only nsa --rows T16384 --out "$O/nsa-16k.md"
run moc1560 ${T_MOC:-70} python3 benchmarks/sparse.py --only moc --rows "N65536 chunk1560 k5" --out "$O/moc-65k.md"
run moc180k ${T_180K:-150} python3 benchmarks/sparse.py --only moc --rows "N180000" --out "$O/moc-180k.md"
for f in "$O"/*.log; do echo "=== $f"; grep "^|\|Error" "$f" | tail -6; done
cat "$O/summary.txt"
tar czf "${OUT:-/tmp/out}/batch18.tgz" -C /tmp b18; ls -la "${OUT:-/tmp/out}"
