#!/usr/bin/env bash
# The GPU check in one device call, <= 8 minutes on one H200:   bash launch/gpu_check.sh [OUT_DIR] [gpu_check.py args]
#
# 1. installs carried wheels from .whl/ (if any) into /tmp/site: no network, no deps, no compile;
# 2. runs launch/gpu_check.py: each section (GPU tests, benchmark parts, short recipe runs, NCCL
#    and ZeRO-3 through `accelerate launch`) in its own process under its own time limit;
# 3. the whole of it under a hard limit (GPU_CHECK_HARD_S), so nothing can outlive the device call.
# Figures: OUT_DIR/gpu_check.json (rewritten after every section), bench.json, distill.json,
# *_launch.json, gpu_tests.xml, logs/<section>.log, gpu_check.log. OUT_DIR: $OUT (the device tool's
# output folder), else bench_out/gpu_check.
# Rehearsal on a CPU machine:  bash launch/gpu_check.sh bench_out/dry --dry-run
# One section again:           bash launch/gpu_check.sh "$OUT" --sections bench_online_kd
# Env: PYTHON (default .venv/bin/python if present, else python3), GPU_CHECK_BUDGET_S (seconds for all
#      sections; default 440, dry run 1800), GPU_CHECK_HARD_S (kill everything after; default 455,
#      dry run 1900), GPU_CHECK_BATCH (default 256,1024).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUT_DIR="${OUT:-$ROOT/bench_out/gpu_check}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then OUT_DIR="$1"; shift; fi
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
echo "[gpu_check] $(date '+%F %T') host $(hostname) python $("$PY" --version 2>&1) -> $OUT_DIR"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
t0=$SECONDS
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  echo "[gpu_check] installing carried wheels: $(cd "$ROOT/.whl" && echo ./*.whl)"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
       "$ROOT"/.whl/*.whl; then
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "[gpu_check] warning: wheel install failed; going on without them"
  fi
fi
wheel_s=$((SECONDS - t0))
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" WANDB_MODE=disabled WANDB_SILENT=true DS_BUILD_OPS=0

hard=455  # s: gpu_check.py's own 440 s budget and its last report; + wheels <= 8 min
case " $* " in *" --dry-run "*) hard=1900 ;; esac  # a CPU rehearsal: caps x 4, budget 1800 s
budget=()
[ -n "${GPU_CHECK_BUDGET_S:-}" ] && budget=(--budget-s "$GPU_CHECK_BUDGET_S")
timeout --signal=TERM --kill-after=10 "${GPU_CHECK_HARD_S:-$hard}" \
  "$PY" "$ROOT/launch/gpu_check.py" --out "$OUT_DIR" "${budget[@]}" \
  --batch "${GPU_CHECK_BATCH:-256,1024}" --wheel-install-s "$wheel_s" "$@"
rc=$?
echo "[gpu_check] exit $rc (wheel install ${wheel_s} s, total $((SECONDS - t0)) s)"
exit $rc
