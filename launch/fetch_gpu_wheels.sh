#!/usr/bin/env bash
# Fetch, on a machine with the package registries, the wheels launch/gpu_check.sh needs on the
# H200 device machine (Python 3.12, torch 2.11, no network), into .whl/ (git-ignored):
#
#   bash launch/fetch_gpu_wheels.sh          # then: device run `bash launch/gpu_check.sh`, carry [".whl"]
#
# Only what that machine lacks (its package list: /work/.library/device/KINDS.md): deepspeed and
# its pydantic/hjson, soundfile and cffi, webdataset. Its own pytest, rich, torchaudio, scipy,
# ninja, msgpack, einops, psutil, py-cpuinfo and nvidia-ml-py are used as they are; carrying a
# second version of a package it has would shadow it. wandb is not needed there (W&B is off).
# Versions are the dev venv's. deepspeed publishes only an sdist: it is built here as a
# pure-Python wheel (DS_BUILD_OPS=0: its ops are JIT-compiled where used).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY="python3"; fi
DEST="$ROOT/.whl"
mkdir -p "$DEST"

PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
WHEELS=(soundfile==0.14.0 cffi==2.1.1 pycparser==3.12
        webdataset==1.0.2 braceexpand==0.1.7
        hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5)
DEEPSPEED=deepspeed==0.19.8

echo "[fetch_gpu_wheels] ${WHEELS[*]} -> $DEST"
"$PY" -m pip download -q --no-deps "${PLATFORM[@]}" -d "$DEST" "${WHEELS[@]}"
if ! compgen -G "$DEST/deepspeed-*.whl" >/dev/null; then
  echo "[fetch_gpu_wheels] building $DEEPSPEED as a pure-Python wheel"
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "$DEEPSPEED"
fi
# one version of each package, or the install there stops
wheels=("$DEST"/*.whl)
dupes=$(for w in "${wheels[@]}"; do basename "$w"; done | cut -d- -f1 | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then
  echo "[fetch_gpu_wheels] error: more than one wheel of: $dupes (remove the older from $DEST)" >&2
  exit 1
fi
echo "[fetch_gpu_wheels] ${#wheels[@]} wheels, $(du -sh "$DEST" | cut -f1) (the device tool carries at most 64 MiB in all)"
