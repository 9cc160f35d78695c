#!/usr/bin/env bash
# Shared launcher of every recipes/<corpus>/<task>1/run.sh: finds the project's Python (.venv,
# or $S2S_PYTHON) and runs the stage engine s2s.cli.recipe on the calling recipe directory.
set -euo pipefail
recipe_dir="$1"; shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${S2S_PYTHON:-python3}"
[ -x "${root}/.venv/bin/python" ] && [ -z "${S2S_PYTHON:-}" ] && python="${root}/.venv/bin/python"
exec "${python}" -m s2s.cli.recipe --recipe-dir "${recipe_dir}" "$@"
