#!/bin/bash
# The GPU checks of the Triton kernels alone (no timing), for a device call whose GPU is busy with
# other work: correctness does not need a quiet GPU, timings do. Not beside an MPS study stretch: a process
# outside MPS made every MPS client fail there (study-tuned/sessions.json, 2026-12-05).
#  - delta rule: delta_rule_gpu_round.sh with CHECK_ONLY=1 (check_triton_gpu.py --round in 2 processes,
#    merged into triton_check_gpu_round.json: the default path against float64, fp32 and bf16);
#  - Sessa's feedback solve: sessa_solve_gpu.py --round with no time left for timing, so it runs only
#    its checks (the default path, all switches, all switches + FUSED_DQDK) against the float64 solve.
# Run from the repo root; writes $OUT/checks.tgz and prints one line per case.
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
GIT=${GIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
dir=/tmp/gpu-checks && mkdir -p $dir
OUT=$dir CHECK_ONLY=1 CHECK_S=200 GIT=$GIT bash benchmarks/delta_rule_gpu_round.sh > $dir/delta.log 2>&1 &
timeout 300 python3 benchmarks/sessa_solve_gpu.py --round --budget 1 --git "$GIT" --out $dir/sessa_check.json \
  > $dir/sessa_check.log 2>&1
wait
{ grep -E "PASS|FAIL|INCOMPLETE" $dir/delta.log | cut -c1-120
  grep -E "^check" $dir/sessa_check.log | cut -c1-140; } | tee $dir/summary.txt
tar czf "$OUT/checks.tgz" -C $dir .
