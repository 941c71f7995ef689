#!/bin/bash
# Issue #25 round of the delta rule's Triton kernels, on one GPU in about 4 minutes (repo root as the
# working directory, results under $OUT):
#  1. in parallel (nothing timed yet): the GPU check of the default path against float64 at the target
#     shapes and small odd ones, fp32 and bf16 (check_triton_gpu.py --round, 2 processes), and Triton's
#     compile cache filled for every variant (ops_gpu.py --round --warm i/6, 6 processes);
#  2. alone on the GPU: every variant timed at the three target shapes with triton.testing.do_bench
#     (median), its fp32/bf16 error on one case, fla as a peer where installed (ops_gpu.py --round).
# Writes $OUT/triton_check_gpu_round.json, $OUT/ops_gpu_round.json and .md, and the logs.
#     bash benchmarks/delta_rule_gpu_round.sh          (VARIANTS=a,b to time only those variants;
#                                                       CHECK_ONLY=1: step 1's check alone, no warm-up or timing)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
export OUT=${OUT:-/tmp/delta_rule_round}
mkdir -p "$OUT"
GIT=${GIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
WHL=$(ls ${WHEELS:-.whl}/fla_core-*.whl 2>/dev/null | head -1)
if [ -n "$WHL" ]; then  # optional peer: fla-core is pure Python, no network needed
  python3 -m pip install -q --no-index --no-deps "$WHL" > "$OUT/pip.log" 2>&1 || echo "fla not installed (see pip.log)"
fi
START=$(date +%s)
VARIANT_ARGS=()
[ -n "$VARIANTS" ] && VARIANT_ARGS=(--variants "$VARIANTS")

pids=()
for i in 0 1; do
  timeout ${CHECK_S:-170} python3 benchmarks/check_triton_gpu.py "$OUT/check_part$i.json" --git "$GIT" --round \
    --part $i/2 > "$OUT/check_part$i.log" 2>&1 &
  pids+=($!)
done
for i in 0 1 2 3 4 5; do
  [ -n "$CHECK_ONLY" ] && break
  timeout ${WARM_S:-100} python3 benchmarks/ops_gpu.py --round --warm $i/6 "${VARIANT_ARGS[@]}" \
    > "$OUT/warm$i.log" 2>&1 &
done
wait "${pids[@]}"
CHECK_RC=0
for i in 0 1; do
  cat "$OUT/check_part$i.log" >> "$OUT/check.log"
done
grep -q FAIL "$OUT/check.log" && CHECK_RC=1
EXPECTED=$(python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import check_triton_gpu as c; print(2 * len(c.ROUND_CASES))" 2>/dev/null || echo 20)
[ "$(grep -c -E "PASS|FAIL" "$OUT/check.log")" -lt "$EXPECTED" ] && CHECK_RC=2  # a part timed out or crashed
python3 - <<'PY'
import glob, json, os
parts = [json.load(open(p)) for p in sorted(glob.glob(os.environ["OUT"] + "/check_part*.json"))]
if parts:
    merged = dict(parts[0])
    merged["records"] = [r for p in parts for r in p["records"]]
    merged["command"] = "python benchmarks/check_triton_gpu.py OUT --round"  # as its parts --part 0/2, 1/2, merged
    merged["parts"] = f"{len(parts)} of 2"
    json.dump(merged, open(os.environ["OUT"] + "/triton_check_gpu_round.json", "w"), indent=2)
print("check parts written:", len(parts), "of 2")
PY
echo "== correctness of the default path (tolerances fp32 1e-3, bf16 2e-2): $(grep -c PASS "$OUT/check.log") PASS," \
  "$(grep -c FAIL "$OUT/check.log") FAIL"
grep -E "PASS|FAIL" "$OUT/check.log" | cut -c1-150
wait  # the warm-up processes
grep -h "warm " "$OUT"/warm*.log | head -20
echo "== check + compile warm-up took $(( $(date +%s) - START )) s"
[ -n "$CHECK_ONLY" ] && exit $CHECK_RC

timeout ${BENCH_S:-120} python3 benchmarks/ops_gpu.py --round --out "$OUT/ops_gpu_round.json" --git "$GIT" \
  "${VARIANT_ARGS[@]}" > "$OUT/round.log" 2>&1
echo "== timing (ms, do_bench median; fwd_bwd = forward + autograd.grad of q, k, v, g, beta)"
if [ -f "$OUT/ops_gpu_round.md" ]; then cat "$OUT/ops_gpu_round.md"; else tail -30 "$OUT/round.log"; fi
echo "== total $(( $(date +%s) - START )) s; correctness: $(case $CHECK_RC in 0) echo PASS;; 1) echo FAIL;; *) echo "INCOMPLETE (fewer than $EXPECTED results: see check_part*.log)";; esac)"
exit $CHECK_RC
