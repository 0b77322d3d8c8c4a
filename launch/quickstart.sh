#!/usr/bin/env bash
# Fresh clone -> the whole pipeline on the synthetic demo data:
# synth -> teacher -> baseline + distill students over seeds -> evaluate -> compare -> export.
# Usage: bash launch/quickstart.sh [--config configs/demo.yaml] [key=value ...]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/launch/setup_env.sh"
cd "$ROOT"
export WANDB_SILENT=true
if [ "$#" -eq 0 ]; then set -- --config configs/demo.yaml; fi
wakeword-dist pipeline "$@"
