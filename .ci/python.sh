#!/usr/bin/env bash
# Print the path of a working Python X.Y interpreter: `pythonX.Y` on PATH, else pyenv's newest X.Y.* (read from
# its versions folder: pyenv's shims fail for a version that is not selected). Exit 1 saying what to install when
# there is none. Usage: bash .ci/python.sh 3.13
set -uo pipefail
want="${1:?usage: python.sh X.Y}"
root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
candidates=("$(command -v "python$want" 2>/dev/null)")
for dir in $(ls -d "$root/versions/$want".* 2>/dev/null | sort -V -r); do candidates+=("$dir/bin/python$want"); done
for python in "${candidates[@]}"; do
  if [ -n "$python" ] && [ "$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" = "$want" ]; then
    echo "$python"
    exit 0
  fi
done
echo "no Python $want here: install it (pyenv install $want) or put python$want on PATH" >&2
exit 1
