#!/usr/bin/env bash
# Create .venv (if missing) and install the project into it. Sourced by quickstart.sh and test.sh.
# Usage: source launch/setup_env.sh [extra]   e.g. `source launch/setup_env.sh dev`
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXTRA="${1:-}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# espeak-ng (Debian) is the deterministic TTS behind `wakeword-dist synth`.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing espeak-ng (apt)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
      || echo "[setup] warning: could not install espeak-ng; synth will fail"
  else
    echo "[setup] warning: espeak-ng not found; install it (apt-get install espeak-ng) for synth"
  fi
fi
STAMP=".venv/.installed-${EXTRA:-base}-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "[setup] installing wakeword-dist${EXTRA:+[$EXTRA]} into .venv (torch from local disk)"
  .venv/bin/python -m pip install -q -e ".${EXTRA:+[$EXTRA]}"
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
