#!/bin/bash
# GPU check of every delta-rule head size (8 processes, merged) + ops_gpu.py with fla as a peer. Carry fla-core 0.5.2 (pure-Python wheel) in .whl/.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
python3 -m pip install -q --no-index --no-deps ${WHEELS:-.whl}/fla_core-0.5.2-py3-none-any.whl > $OUT/pip.log 2>&1
GIT=${GIT:-35a2367-wip}
STAGE=${STAGE:-all}
if [ "$STAGE" != bench ]; then
  mkdir -p /tmp/chk
  for i in 0 1 2 3 4 5 6 7; do
    timeout ${CHECK_S:-260} python3 benchmarks/check_triton_gpu.py /tmp/chk/part$i.json --git $GIT --part $i/8 > /tmp/chk/part$i.log 2>&1 &
  done
  wait
  cat /tmp/chk/part*.log > $OUT/check.log
  python3 - <<'PY'
import json, glob, os
parts = [json.load(open(p)) for p in sorted(glob.glob("/tmp/chk/part*.json"))]
if parts:
    merged = dict(parts[0]); merged["records"] = [r for p in parts for r in p["records"]]
    merged["command"] = "python benchmarks/check_triton_gpu.py --part i/8 (8 processes, merged)"
    json.dump(merged, open(os.environ["OUT"] + "/triton_check_gpu.json", "w"), indent=2)
print("parts written:", len(parts))
PY
  grep -c PASS $OUT/check.log; grep FAIL $OUT/check.log | head -40
fi
if [ "$STAGE" != check ]; then
  timeout ${BENCH_S:-240} python3 benchmarks/ops_gpu.py --out $OUT/ops_gpu.json --git $GIT $BENCH_ARGS > $OUT/ops.log 2>&1
  tail -40 $OUT/ops.log
fi
