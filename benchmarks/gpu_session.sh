#!/usr/bin/env bash
# GPU calls of one session (each ≤ 10 minutes on the device tool; data files copied into .data/):
#   bash benchmarks/gpu_session.sh kernels          # on an idle GPU: op timings and model throughput
#   bash benchmarks/gpu_session.sh throughput       # on an idle GPU: model throughput, eager and compiled
#   bash benchmarks/gpu_session.sh check            # Triton vs reference (correctness: may share the GPU)
#   bash benchmarks/gpu_session.sh train S STUDY…   # run the studies in parallel for at most S seconds,
#                                                   # score each unfinished run's best checkpoint once
#   bash benchmarks/gpu_session.sh pack             # everything into $OUT/results.tgz
# GIT names the commit (the tree travels without .git); VARIANTS (train) keeps only those variant labels.
# RESUME=1 (train): runs/quality/ came back in (carried) from an earlier call: reuse its finished runs,
# continue the others from last.pt, and pack the unfinished ones into $OUT/runs.tgz.part-* for the next
# call (there: `cat runs.tgz.part-* | tar xz`, then carry runs/quality).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
RES=/tmp/sinkrec-results
OUTDIR=${OUT:-/tmp/out}
mkdir -p "$RES" "$OUTDIR"
GIT=${GIT:-}
case "$1" in
kernels)
  (cd benchmarks && timeout 200 python3 ops_gpu.py --git "$GIT" --out "$RES/ops_gpu.json" > "$RES/ops_gpu.log" 2>&1)
  tail -25 "$RES/ops_gpu.log"
  (cd benchmarks && timeout 120 python3 throughput.py --git "$GIT" --out "$RES/throughput.json" > "$RES/throughput.log" 2>&1)
  tail -12 "$RES/throughput.log"
  ;;
throughput)
  (cd benchmarks && timeout 420 python3 throughput.py --compile --git "$GIT" --out "$RES/throughput.json" \
    > "$RES/throughput.log" 2>&1; echo "throughput exit $?" >> "$RES/throughput.log")
  tail -8 "$RES/throughput.log"; cp "$RES"/throughput.* "$OUTDIR"/
  ;;
check)
  (cd benchmarks && timeout "${CHECK_S:-240}" python3 check_triton_gpu.py "$RES/triton_check_gpu.json" --git "$GIT" \
    > "$RES/triton_check_gpu.log" 2>&1; echo "check exit $?" >> "$RES/triton_check_gpu.log")
  grep -E "PASS|FAIL|exit" "$RES/triton_check_gpu.log" | cut -c1-60
  ;;
train)
  limit=$2; shift 2
  for study in "$@"; do
    python3 benchmarks/quality.py --study "$study" --parallel "${PARALLEL:-8}" --device cuda --data-dir .data \
      --machine "1x NVIDIA H200 (device tool)" --git "$GIT" --results "$RES/quality-$study.json" \
      ${VARIANTS:+--variants "$VARIANTS"} ${RESUME:+--resume} \
      > "$RES/quality-$study.log" 2>&1 &
  done
  end=$((SECONDS + limit))
  while [ $SECONDS -lt $end ] && pgrep -f "^[^ ]*python3 benchmarks/quality.py" > /dev/null; do sleep 10; done
  # patterns anchored at the command's start, so the calling shell (whose line has the same words) survives
  pkill -f "^[^ ]*python3 benchmarks/quality.py"; pkill -f "^[^ ]*python[0-9.]* -m sinkrec.cli train"; sleep 3
  tar czf "$OUTDIR/results.tgz" -C "$RES" .  # packed before scoring, in case the call runs out of time
  if [ -n "${RESUME:-}" ]; then  # unfinished runs only, in parts of 15 MB (a file from $OUT is at most 16 MiB)
    unfinished=$(for run in runs/quality/*/; do grep -q '"test": {' "$run/metrics.json" 2>/dev/null || echo "$run"; done)
    [ -n "$unfinished" ] && tar czf - $unfinished | split -b 15M - "$OUTDIR/runs.tgz.part-"
  fi
  mkdir -p "$RES/runs"
  for run in runs/quality/*/; do
    name=$(basename "$run")
    cp "$run/metrics.json" "$RES/runs/$name.metrics.json" 2>/dev/null
    if [ -f "$run/best.pt" ] && ! grep -q '"test": {' "$run/metrics.json" 2>/dev/null; then
      timeout 45 python3 -m sinkrec.cli evaluate "$run" --split test --device cuda --json "$RES/runs/$name.test.json" \
        > /dev/null 2>&1 && echo "scored unfinished $name"
    fi
  done
  grep -h "done\|FAILED" "$RES"/quality-*.log 2>/dev/null | tail -30
  tar czf "$OUTDIR/results.tgz" -C "$RES" .  # again, with the scores and metrics of every run
  ;;
pack)
  tar czf "$OUTDIR/results.tgz" -C "$RES" . && ls "$RES"
  ;;
esac
