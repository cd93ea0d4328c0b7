#!/usr/bin/env bash
# The accuracy grid on a borrowed GPU machine, in one command of at most ~9 minutes.
#
#   OUT=/some/dir bash research/accuracy/device.sh           # the device run (reads .devdata/)
#   SMOKE=1 OUT=/tmp/out PY=.venv/bin/python bash research/accuracy/device.sh   # plumbing test
#
# Runs from the repository root of a copy of the working tree. Needs python3 with torch,
# numpy, scipy, scikit-learn, pillow, matplotlib, tqdm; no network. CIFAR-10 comes from the
# ignored in-repo folder .devdata/ (cifar10-jpg.zip + climbq-splits/), carried with the call;
# so is research/accuracy/starts/ (the kept fp32 starts: their checkpoints are git-ignored and
# the copy has no .git to restore them from; run `python -m research.accuracy.runner
# restore-starts` here first), or each QAT run's fp32 start is trained again.
# Every 30 s, and at the end, it packs the runs into $OUT/accuracy_runs.tar.gz (all results,
# histories, logs) plus $OUT/accuracy_ckpt_K.tar.gz (checkpoints, by priority), under the
# transfer limits (8 files, 16 MiB each, 64 MiB in all). Unpack here with
# `python -m research.accuracy.collect --from-tar DIR`.
#
# Knobs (environment): DEADLINE wall seconds after which the runner is stopped (the last pack
# follows), JOBS runs at a time on the one GPU, FP_SECONDS the time a fp32 pretraining may take
# (its epochs are chosen from two timed epochs, FP_MIN..FP_EPOCHS), QAT_EPOCHS, FILTER.
set -u
cd "$(dirname "$0")/../.."
START=$(date +%s)
OUT=${OUT:-/tmp/out}
PY=${PY:-python3}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
  export CLIMBQ_ACC_RUNS=${CLIMBQ_ACC_RUNS:-runs/accuracy-smoke}
  export CLIMBQ_ACC_STARTS=${CLIMBQ_ACC_STARTS:-runs/accuracy-smoke/starts}  # not the kept ones
fi
DEADLINE=${DEADLINE:-505}
JOBS=${JOBS:-12}
FP_SECONDS=${FP_SECONDS:-170}
FP_EPOCHS=${FP_EPOCHS:-200}
FP_MIN=${FP_MIN:-40}
QAT_EPOCHS=${QAT_EPOCHS:-50}
FILTER=${FILTER:-}
mkdir -p "$OUT"
LOG="$OUT/device.log"
exec > >(tee -a "$LOG") 2>&1
elapsed() { echo $(($(date +%s) - START)); }
echo "== device.sh start $(date -u +%FT%TZ) smoke=$SMOKE jobs=$JOBS deadline=$DEADLINE fp_seconds=$FP_SECONDS"

# Import the package without installing it: a shadow tree maps the top-level folders into the
# climbq_deploy namespace as pyproject.toml's package-dir does (plain PYTHONPATH=. would not),
# beside the research and bench packages. PYTHONSAFEPATH keeps `python -m` (and the runner's
# own `python -m` children) from putting the repository root, with its bare climbq_deploy/,
# ahead of the shadow tree.
SHADOW=$(mktemp -d /tmp/climbq_shadow.XXXX)
mkdir -p "$SHADOW/climbq_deploy"
for entry in "$PWD"/climbq_deploy/*; do ln -s "$entry" "$SHADOW/climbq_deploy/"; done
for sub in calibration kernels targets; do ln -s "$PWD/$sub" "$SHADOW/climbq_deploy/$sub"; done
for top in research bench; do ln -s "$PWD/$top" "$SHADOW/$top"; done
export PYTHONPATH="$SHADOW${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
export PYTHONDONTWRITEBYTECODE=1 PYTHONSAFEPATH=1
"$PY" -P - <<'EOF' || { echo "import check failed"; exit 1; }
import os, platform, torch
import climbq_deploy.calibration.calibrate, climbq_deploy.data.pipeline, climbq_deploy.train.loop
import research.accuracy.runner
print("package", climbq_deploy.__file__)
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      "cpus", os.cpu_count())
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv,noheader

PACKLOG=/tmp/climbq_pack.log  # not in $OUT: at most 8 files come back
PACK=("$PY" -m research.accuracy.runner pack --out "$OUT" --log "$LOG" --log "$PACKLOG" --max-tars 5)
STOP=$(mktemp -u /tmp/climbq_pack_stop.XXXX)
( while true; do
    for _ in $(seq 30); do [ -e "$STOP" ] && exit 0; sleep 1; done
    "${PACK[@]}" >>"$PACKLOG" 2>&1
    command -v nvidia-smi >/dev/null && echo "gpu util, mem: $(nvidia-smi \
      --query-gpu=utilization.gpu,memory.used --format=csv,noheader) at $(elapsed) s"
  done ) &
PACKER=$!

ARGS=(--jobs "$JOBS" --device auto --source .devdata --fp-seconds "$FP_SECONDS"
      --fp-epochs "$FP_EPOCHS" --fp-min-epochs "$FP_MIN" --qat-epochs "$QAT_EPOCHS")
if [ "$SMOKE" = 1 ]; then
  # plumbing only: the CIFAR build from .devdata, then fp32 + one QAT run of 1 epoch on digits-LT
  "$PY" -m research.accuracy.runner one data:cifar10-lt-g50 --source .devdata || echo "cifar build FAILED"
  ARGS+=(--smoke --filter "digits-lt-g50-resnet20-fp32|digits-lt-g50-resnet20-climbq+-w4a4-ours")
elif [ -n "$FILTER" ]; then
  ARGS+=(--filter "$FILTER")
fi
LEFT=$((DEADLINE - $(elapsed)))
echo "== runner for at most $LEFT s (elapsed $(elapsed) s)"
timeout --signal=TERM --kill-after=5 "$LEFT" "$PY" -m research.accuracy.runner run "${ARGS[@]}"
echo "== runner exit $? at $(elapsed) s"
touch "$STOP"; wait "$PACKER" 2>/dev/null  # the packer ends its current pack first
"$PY" -m research.accuracy.runner list | grep -v "  -  " | head -120
"${PACK[@]}"
echo "== device.sh end at $(elapsed) s"
ls -la "$OUT"
