#!/usr/bin/env bash
# The GPU check on a fresh GPU machine with torch and triton preinstalled and no network
# (docs/engine.md, "The GPU check"):
#   tools/gpu_check.sh fetch [WHEELS]        # here, with network: the missing packages' wheels
#   tools/gpu_check.sh run OUT [BUDGET_S] [WHEELS]   # there: install them, run the check
# `fetch` downloads, for CPython 3.12 on x86-64 Linux, the few runtime packages of s2s that such a
# machine lacks, at the versions of requirements/lock.txt (about 2 MB). `run` installs them into
# a folder of their own (torch and everything else preinstalled stay untouched), puts s2s on
# PYTHONPATH and runs `python -m s2s.bench.gpu_check OUT --budget BUDGET_S` (default 480).
# tools/gpu_image.py runs `run` here, in an environment of the GPU image's packages.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MISSING="omegaconf soundfile cffi pycparser"  # not in the GPU image; everything else s2s needs is
PY="${PYTHON:-python3}"
cmd="${1:-}"; shift || true
case "$cmd" in
  fetch)
    dest="${1:-$ROOT/.whl}"
    pins=()
    for name in $MISSING; do  # the lock's version (its Python >= 3.11 line where it has two)
      pins+=("$(grep -E "^$name==" "$ROOT/requirements/lock.txt" | tail -1 | cut -d' ' -f1)")
    done
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$dest" "${pins[@]}"
    du -sh "$dest"
    ;;
  run)
    out="${1:?usage: tools/gpu_check.sh run OUT [BUDGET_S] [WHEELS]}"
    budget="${2:-480}"
    wheels="${3:-$ROOT/.whl}"
    site="$(mktemp -d)/site"
    if compgen -G "$wheels/*.whl" > /dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
    fi
    export PYTHONPATH="$ROOT:$site${PYTHONPATH:+:$PYTHONPATH}"
    cd "$ROOT"
    # GPU_CHECK_FLAGS: more flags for s2s.bench.gpu_check (e.g. --dry-run, to try this on a CPU)
    exec "$PY" -m s2s.bench.gpu_check "$out" --budget "$budget" ${GPU_CHECK_FLAGS:-}
    ;;
  *)
    echo "usage: tools/gpu_check.sh fetch [WHEELS] | run OUT [BUDGET_S] [WHEELS]" >&2
    exit 2
    ;;
esac
