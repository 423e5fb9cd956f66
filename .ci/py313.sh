#!/usr/bin/env bash
# CI, Python 3.13 (what Colab runs since 2026-08): the package installed in a 3.13 venv, the unit tests, and the
# smoke run of notebooks 01-03 as a user starts it. Usage: bash .ci/py313.sh [VENV_DIR]   (default .venv-ci-313)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-ci-313}"
python="$(bash .ci/python.sh 3.13)"

# No CPU build of torch for 3.13 is on this machine's disk, so pip takes PyPI's CUDA build (about 4.7 GB with
# its NVIDIA libraries); no pip cache, and the venv is removed at the end, before the XLA venv needs 8 GB.
export PIP_NO_CACHE_DIR=1
rm -rf "$venv"
echo "disk free before the 3.13 venv: $(df -h . | awk 'NR==2 {print $4}')"
"$python" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -r requirements.txt
python -m pip install -q -e . --no-deps
python -c "import sys, torch, nbhelpers; print('Python', sys.version.split()[0], 'torch', torch.__version__)"

set +e
python -m pytest -q -m "not xla and not gpu and not notebooks"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests under Python 3.13: failing on purpose"; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"

runs="$(mktemp -d)"
python -m nbhelpers run --profile smoke --run-dir "$runs/smoke" --only 01,02,03
python - "$runs/smoke" <<'PY'
import json, sys
from pathlib import Path
metrics = json.loads((Path(sys.argv[1]) / "metrics.json").read_text())
missing = [stage for stage in ("tokenizer", "corpus", "pretrain") if stage not in metrics]
if missing:
    sys.exit(f"the smoke run under Python 3.13 recorded no figures for {missing}")
print("smoke 01-03 under Python 3.13:", ", ".join(sorted(metrics)))
PY
rm -rf "$runs"
deactivate
rm -rf "$venv"
