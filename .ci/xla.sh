#!/usr/bin/env bash
# CI, second environment: exactly torch 2.9.0 + torch_xla 2.9.0 with the project's requirements, then the
# xla-marked tests on the CPU PJRT device. Usage: bash .ci/xla.sh [VENV_DIR]   (default .venv-ci-xla)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv-ci-xla}"
TORCH=2.9.0
TORCH_XLA=2.9.0

export PIP_NO_CACHE_DIR=1   # torch 2.9.0's CUDA wheels would add 3.5 GB of cache to the 8 GB venv
rm -rf "$venv"
echo "disk free before the XLA venv: $(df -h . | awk 'NR==2 {print $4}')"
python3 -m venv "$venv"
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
