#!/bin/bash
# Issue 25, one GPU call (1×H200, ≤ 3 min): Sessa's feedback solve — the default path's check against the
# float64 dense solve (fp32, bf16; T = 1000 / 1337 / 4100), the same with every speed switch of
# sinkrec/ops/feedback_solve/triton_kernels.py on, then do_bench medians (fwd+bwd, bf16, D = 256) at 1×32768 and
# 2×8192 of: the current path, each switch alone, all switches, all at leaf 512, a per-kernel tile sweep at 1×32768,
# and the tuned set. Prints a table; JSON and log under $OUT. Run from the repo root:
#   GIT=<sha> bash benchmarks/sessa_gpu_round.sh
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/sessa_round}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw --format=csv > "$OUT/gpu.txt" 2>&1
timeout "${ROUND_S:-178}" python3 benchmarks/sessa_solve_gpu.py --round --budget "${BUDGET_S:-163}" \
  --git "${GIT:-unknown}" --out "$OUT/sessa_solve_round.json" 2>&1 | tee "$OUT/sessa_round.log" | grep -v Warning
exit "${PIPESTATUS[0]}"
