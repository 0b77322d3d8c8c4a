#!/usr/bin/env bash
# The whole test suite, on CPU: `bash launch/test.sh [pytest args]`.
# Creates or reuses .venv, installs the project with the dev extra, runs pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh" dev
cd "$ROOT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true
python -m pytest -q -ra "$@"
