#!/usr/bin/env bash
# One GPU lease for issues #4 and #7, in consecutive device calls (each ≤ 10 minutes):
#   bash benchmarks/gpu_session.sh start   # kernel check, op + throughput timings on an idle GPU,
#                                          # then the quality studies start in the background
#   bash benchmarks/gpu_session.sh rerun    # restart the SASRec runs of two studies in the background
#   bash benchmarks/gpu_session.sh finish S # wait up to S seconds, stop what still trains, score each
#                                          # unfinished run's best checkpoint once, run the diagnostic, pack
# Data files are read from .data/ (copies of ../shared/datasets files, never committed).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
RES=/tmp/sinkrec-results
mkdir -p "$RES" "${OUT:-/tmp/out}"
case "$1" in
start)
  cd benchmarks
  python3 check_triton_gpu.py "$RES/triton_check_gpu.json" | tee "$RES/triton_check_gpu.log"
  if [ "${PIPESTATUS[0]}" = 0 ]; then IMPL=auto; else IMPL=chunked; fi
  echo "delta-rule path for training: $IMPL" | tee -a "$RES/triton_check_gpu.log"
  python3 ops_gpu.py --out "$RES/ops_gpu.json" 2>&1 | tail -20
  python3 throughput.py --out "$RES/throughput.json" 2>&1 | tail -8
  cd ..
  for study in sinkrec-ml1m synthetic-long ml1m-ts-half; do
    setsid nohup python3 benchmarks/quality.py --study "$study" --parallel 12 --device cuda --data-dir .data \
      --set "model.impl=$IMPL" --machine "1x NVIDIA H200 (device tool)" --git "${GIT:-}" \
      --results "$RES/quality-$study.json" > "$RES/quality-$study.log" 2>&1 < /dev/null &
  done
  sleep 5
  ;;
rerun)  # runs that need no delta-rule option (SASRec), started again in the background
  for study in synthetic-long ml1m-ts-half; do
    setsid nohup python3 benchmarks/quality.py --study "$study" --models sasrec --parallel 4 --device cuda \
      --data-dir .data --machine "1x NVIDIA H200 (device tool)" --git "${GIT:-}" \
      --results "$RES/quality-$study-sasrec.json" > "$RES/quality-$study-sasrec.log" 2>&1 < /dev/null &
  done
  sleep 2
  ;;
finish)  # wait, stop what still trains, score each unfinished run's best checkpoint on test once
  end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ] && pgrep -f "^[^ ]*python3 benchmarks/quality.py" > /dev/null; do sleep 10; done
  # patterns anchored at the start of the command line, so the shell that called this script
  # (whose command line mentions the same words) is not killed with them
  pkill -f "^[^ ]*python3 benchmarks/quality.py"; pkill -f "^[^ ]*python[0-9.]* -m sinkrec.cli train"; sleep 3
  mkdir -p "$RES/runs"
  for run in runs/quality/*/; do
    name=$(basename "$run")
    cp "$run/metrics.json" "$RES/runs/$name.metrics.json" 2>/dev/null
    if [ -f "$run/best.pt" ] && ! grep -q '"test": {' "$run/metrics.json"; then
      python3 -m sinkrec.cli evaluate "$run" --split test --device cuda --json "$RES/runs/$name.test.json" \
        > /dev/null 2>&1 && echo "scored unfinished $name"
    fi
  done
  g=runs/quality/synthetic-long-gdn-s0; s=runs/quality/synthetic-long-sinkrec-s0
  if [ -f "$g/best.pt" ] && [ -f "$s/best.pt" ]; then
    python3 -m sinkrec.cli diagnose "$s" --baseline "$g" --users 32 --device cuda --out "$RES/diagnose" 2>&1 | tail -6
  fi
  ;;
esac
grep -h "done\|FAILED" "$RES"/quality-*.log 2>/dev/null | tail -40
tar czf "${OUT:-/tmp/out}/results.tgz" -C "$RES" . && ls -la "$RES"
