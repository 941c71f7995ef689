#!/bin/bash
# The GPU checks of the Triton kernels alone (no timing), for a device call whose GPU is busy with
# other work (a study window): correctness does not need a quiet GPU, timings do.
#  - delta rule: check_triton_gpu.py --round (the default path against float64 at the target shapes
#    and small odd ones, fp32 and bf16; 2 processes);
#  - Sessa's feedback solve: sessa_solve_gpu.py --round with no time left for timing, so it runs only
#    its checks (the default path, all switches, all switches + FUSED_DQDK) against the float64 solve.
# Run from the repo root; writes $OUT/checks.tgz and prints one line per case.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
GIT=${GIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
dir=/tmp/gpu-checks && mkdir -p $dir
for i in 0 1; do
  timeout 200 python3 benchmarks/check_triton_gpu.py $dir/delta_check$i.json --git "$GIT" --round --part $i/2 \
    > $dir/delta_check$i.log 2>&1 &
done
timeout 300 python3 benchmarks/sessa_solve_gpu.py --round --budget 1 --git "$GIT" --out $dir/sessa_check.json \
  > $dir/sessa_check.log 2>&1
wait
{ grep -hE "PASS|FAIL|Error" $dir/delta_check*.log | cut -c1-120
  grep -E "^check" $dir/sessa_check.log | cut -c1-140; } | tee $dir/summary.txt
tar czf "$OUT/checks.tgz" -C $dir .
