#!/usr/bin/env bash
# One prepared GPU check, <= 8 minutes on one H200:   bash launch/gpu_check.sh [OUT_DIR | FILE.json]
#
# 1. installs carried wheels from .whl/ (if any) into /tmp/site: no network, no deps, no compile;
# 2. runs `pytest -m gpu tests/gpu` (fp16/bf16 teacher vs fp32, optimize_teacher parity on CUDA,
#    ZeRO-3 placement at world size 1, CUDA vs CPU front end, a short real distillation run);
# 3. runs the benchmark at real shapes (wav2vec2-base teacher, batches 256 and 1024).
# Figures: OUT_DIR/gpu_check.json (summary), OUT_DIR/bench.json (all), OUT_DIR/gpu_check.log.
# OUT_DIR defaults to $OUT (the device tool's output folder), else bench_out/gpu_check.
# Without CUDA every GPU test skips, the benchmark runs its quick CPU preset, and the exit code is 0.
# Env: PYTHON (interpreter; default .venv/bin/python if present, else python3),
#      GPU_CHECK_BUDGET_S (tests + benchmark seconds, default 450), GPU_CHECK_BATCH (default 256,1024).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
TARGET="${1:-${OUT:-$ROOT/bench_out/gpu_check}}"
case "$TARGET" in *.json) OUT_DIR="$(dirname "$TARGET")" ;; *) OUT_DIR="$TARGET" ;; esac
mkdir -p "$OUT_DIR"
exec > >(tee -a "$OUT_DIR/gpu_check.log") 2>&1

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
echo "[gpu_check] $(date '+%F %T') host $(hostname) python $("$PY" --version 2>&1) -> $OUT_DIR"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  echo "[gpu_check] installing carried wheels: $(cd "$ROOT/.whl" && echo ./*.whl)"
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
       "$ROOT"/.whl/*.whl; then
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    echo "[gpu_check] warning: wheel install failed; going on without them"
  fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" WANDB_MODE=disabled WANDB_SILENT=true DS_BUILD_OPS=0

"$PY" "$ROOT/launch/gpu_check.py" --out "$TARGET" --budget-s "${GPU_CHECK_BUDGET_S:-450}" \
  --batch "${GPU_CHECK_BATCH:-256,1024}"
rc=$?
echo "[gpu_check] exit $rc"
exit $rc
