#!/usr/bin/env bash
# The whole test suite, on CPU: `bash launch/test.sh [pytest args]`.
# Creates or reuses .venv, installs the project with the dev extra, runs pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh" dev
cd "$ROOT"
# Chromium (Debian) renders runs/<exp>/report.html in tests/stages/test_html_report.py; the test
# skips only where it cannot be found.
if [[ ! -x /usr/bin/chromium && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing chromium (apt) for the report.html check"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "[test] warning: could not install chromium; the report.html check will skip"
fi
# SLURM tests (tests/slurm): start a local single-node cluster when none runs; stop it at exit.
if [[ ${WW_SLURM_CLUSTER:-1} == 1 && $(id -u) -eq 0 ]]; then
    if ! bash "$ROOT/launch/slurm_cluster.sh" status >/dev/null 2>&1; then
        bash "$ROOT/launch/slurm_cluster.sh" start && trap 'bash "$ROOT/launch/slurm_cluster.sh" stop' EXIT
    fi
    if bash "$ROOT/launch/slurm_cluster.sh" status >/dev/null 2>&1; then export WW_SLURM=1; fi
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" WANDB_MODE="${WANDB_MODE:-offline}" WANDB_SILENT=true
python -m pytest -q -ra "$@"
