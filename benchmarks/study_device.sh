#!/bin/bash
# One stretch of the tuned study (benchmarks/study.py) on a lent GPU machine, in two steps.
#
#   bash benchmarks/study_device.sh prepare     # here: wheels, datasets and a snapshot of HEAD, in ignored folders
#   MINUTES=8.6 bash benchmarks/study_device.sh run    # there (carry .snap .data .whl .resume); writes OUT/state.tgz,
#                                                       # study.log and resume.tgz.part-* (trials stopped at the deadline)
#   tar xzf state.tgz -C benchmarks/results/study-tuned && python benchmarks/study.py report    # here, then commit
#   bash benchmarks/study_device.sh resume FOLDER      # here: .resume from FOLDER/resume.tgz.part-*, for the next run
#
# The snapshot (git archive of HEAD plus the committed study state) keeps other uncommitted work off the machine.
# MPS=1 shares the GPU through MPS (about twice the trials per stretch), but a fault in any one process then
# reaches every process: 3 of the 5 MPS stretches (sessions.json, 2026-12-04/05) lost all 12-14 processes to
# one illegal memory access whose source the logs cannot tell; the 3 stretches without MPS had none. So MPS is
# off by default until a stretch without it names the faulting trial (its process alone records the fault).
# Run nothing else on the GPU meanwhile. STUDY_ARGS adds options of study.py run (e.g. --no-fill).
set -u
cd "$(dirname "$0")/.."
case "${1:-}" in
prepare)
  for path in /.whl/ /.data/ /.snap/ /.resume/; do grep -qx "$path" .git/info/exclude 2>/dev/null || echo "$path" >> .git/info/exclude; done
  mkdir -p .whl .data
  for wheel in optuna==5.1.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0; do  # not on the GPU image
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$wheel"
  done
  rm -rf .data && mkdir .data  # SINKREC_DATA_PATH layout: NAME/FILE; only what unfinished studies read (carry ≤ 64 MiB)
  for folder in "${DATASETS:-../shared/datasets}"/*/; do
    for file in $(python3 benchmarks/study.py plan --files-to-go); do
      [ -f "$folder$file" ] && cp -r "$folder" .data/ && break
    done
  done
  rm -rf .snap && mkdir .snap && git archive HEAD sinkrec benchmarks/study.py benchmarks/common.py \
    benchmarks/results/study-tuned | tar x -C .snap && git rev-parse --short HEAD > .snap/GITREV
  du -sh .whl .data .snap ;;
run)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  data=$PWD/.data
  # MPS lets the processes' kernels share the GPU at once instead of taking turns; without it, go on
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  rm -rf /tmp/keep  # a warm machine still holds the last stretch's kept folders
  if [ "${MPS:-0}" = 1 ] && nvidia-cuda-mps-control -d 2>/dev/null \
      && timeout 90 python3 -c 'import torch; torch.ones(1, device="cuda").sum().item()'; then
    echo "MPS on" | tee "$OUT/mps.txt"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null; unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off" | tee "$OUT/mps.txt"
  fi
  cd .snap || exit 1
  export PYTHONPATH=$PWD:/tmp/site SINKREC_DATA_PATH=$data SINKREC_CACHE=/tmp/sinkrec-cache PYTHONUNBUFFERED=1
  python3 benchmarks/study.py run --minutes "${MINUTES:-8.6}" --parallel "${PARALLEL:-14}" --device cuda \
    --out /tmp/state --git "$(cat GITREV)" --restore ../.resume --keep /tmp/keep --keep-mb "${KEEP_MB:-36}" \
    ${STUDY_ARGS:-} > "$OUT/study.log" 2>&1
  rc=$?
  [ -d /tmp/keep ] && tar cf - -C /tmp/keep . | gzip -1 | split -b 15m -d - "$OUT/resume.tgz.part-"  # ≤ 16 MiB a file
  tail -24 "$OUT/study.log"
  tar czf "$OUT/state.tgz" -C /tmp/state .
  tar czf "$OUT/logs.tgz" -C /tmp/sinkrec-study --exclude '*.db' --exclude '*.pt' --exclude '*.safetensors' . 2>/dev/null
  [ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control
  exit $rc ;;
resume)
  rm -rf .resume && mkdir .resume && cat "${2:?the folder holding resume.tgz.part-*}"/resume.tgz.part-* | tar xz -C .resume
  du -sh .resume ;;
*)
  echo "usage: bash benchmarks/study_device.sh prepare|run|resume FOLDER" >&2
  exit 2 ;;
esac
