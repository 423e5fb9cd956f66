#!/usr/bin/env bash
# CI, second environment: exactly the torch + torch_xla pair Kaggle's TPU v5e-8 image ships, on the Python it
# ships, with the project's requirements; then the xla-marked tests on the CPU PJRT device.
# Usage: bash .ci/xla.sh [VENV_DIR]   (default .venv-ci-xla)
#
# The pins are Kaggle's: github.com/Kaggle/docker-python, tpu/config.txt at commit 78aaa43f8cc8e6b01bbaa5a56c39b4a2f61a8277
# (2026-08-12): BASE_IMAGE=python:3.12, TORCH_VERSION=2.8.0; tpu/requirements.in installs
# torch_xla-${TORCH_VERSION} (and torch ${TORCH_VERSION}+cpu). nbhelpers.xla.KAGGLE_TPU_PAIR holds the same pair.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-ci-xla}"
TORCH=2.8.0
TORCH_XLA=2.8.0
PYTHON_VERSION=3.12

export PIP_NO_CACHE_DIR=1   # PyPI's torch 2.8.0 is the CUDA build: its wheels would add 3.5 GB of cache to the 8 GB venv
rm -rf "$venv"
echo "disk free before the XLA venv: $(df -h . | awk 'NR==2 {print $4}')"
if ! python="$(bash .ci/python.sh "$PYTHON_VERSION")"; then
  python=python3
  echo "Kaggle's TPU image runs Python $PYTHON_VERSION; none here, so the XLA venv uses $(python3 --version)"
fi
"$python" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "torch==$TORCH" "torch_xla==$TORCH_XLA"
# the constraint keeps requirements.txt (torch>=2.4, and whatever its packages ask for) from moving torch
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
printf 'torch==%s\ntorch_xla==%s\n' "$TORCH" "$TORCH_XLA" > "$constraints"
python -m pip install -q -r requirements.txt -c "$constraints"
python -m pip install -q -e . --no-deps
python - "$TORCH" "$TORCH_XLA" <<'PY'
import sys
import torch
import torch_xla
want_torch, want_xla = sys.argv[1], sys.argv[2]
print("torch", torch.__version__, "torch_xla", torch_xla.__version__)
if torch.__version__.split("+")[0] != want_torch or torch_xla.__version__.split("+")[0] != want_xla:
    sys.exit(f"expected torch {want_torch} and torch_xla {want_xla}: the requirements replaced one of them")
PY

# One CPU PJRT device in the pytest process; the SPMD tests start their own 4-device processes.
export PJRT_DEVICE=CPU
unset CPU_NUM_DEVICES XLA_USE_SPMD
set +e
python -m pytest -m xla tests -q  # tests/xla plus the xla-marked tests of evaluation and generate
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no xla tests: failing on purpose"; exit 1; fi
exit "$rc"
