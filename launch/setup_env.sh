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
# The offline TTS engines behind `wakeword-dist synth` (Debian packages): espeak-ng, flite and festival
# with three English voices and eight Italian/Finnish/Czech ones (engine festival-l2, ~45 MB).
# One apt call for whatever is missing; a machine that has them all never runs apt.
TTS_PACKAGES="espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
festvox-italp16k festvox-itapc16k festvox-suopuhe-lj festvox-suopuhe-mv festvox-czech-dita \
festvox-czech-machac festvox-czech-ph festvox-czech-krb"
tts_missing() {
  command -v espeak-ng >/dev/null 2>&1 || return 0
  command -v flite >/dev/null 2>&1 || return 0
  command -v festival >/dev/null 2>&1 || return 0
  local v
  for v in english/kal_diphone english/ked_diphone us/cmu_us_slt_arctic_hts italian/lp_diphone \
      italian/pc_diphone finnish/suo_fi_lj_diphone finnish/hy_fi_mv_diphone czech/czech_dita \
      czech/czech_machac czech/czech_ph czech/czech_krb; do
    [ -d "/usr/share/festival/voices/$v" ] || return 0
  done
  return 1
}
if tts_missing; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing the TTS engines (apt): $TTS_PACKAGES"
    # shellcheck disable=SC2086  # the package list is meant to split into words
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $TTS_PACKAGES >/dev/null) \
      || echo "[setup] warning: could not install the TTS engines; synth will fail"
  else
    echo "[setup] warning: TTS engines missing; install them (apt-get install $TTS_PACKAGES) for synth"
  fi
fi
STAMP=".venv/.installed-${EXTRA:-base}-$(cat pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$STAMP" ]; then
  echo "[setup] installing wakeword-dist${EXTRA:+[$EXTRA]} into .venv (torch from local disk)"
  .venv/bin/python -m pip install -q -e ".${EXTRA:+[$EXTRA]}"
  touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
