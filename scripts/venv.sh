#!/usr/bin/env bash
# Create .venv when missing (or when requirements changed) and install everything.
# Uses Python 3.12 (the Lambda runtime) from pyenv where present, else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.installed
py=""
for candidate in "${RXGUARD_PYTHON:-}" "$(pyenv root 2>/dev/null)/versions/3.12"*/bin/python3.12 python3.12; do
  [ -n "$candidate" ] || continue
  if command -v "$candidate" >/dev/null 2>&1; then py=$candidate; break; fi
done
if [ -z "$py" ]; then
  py=python3
  echo "rxguard: Python 3.12 (the Lambda runtime) not found; falling back to $($py --version 2>&1)." >&2
fi
if [ ! -x $VENV/bin/python ]; then
  echo "rxguard: creating $VENV with $($py --version 2>&1)" >&2
  "$py" -m venv $VENV
fi
want=$(cat requirements-dev.txt layers/requirements.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f $STAMP ] || [ "$(cat $STAMP)" != "$want" ]; then
  echo "rxguard: installing dependencies into $VENV" >&2
  $VENV/bin/python -m pip install -q --upgrade pip >&2
  $VENV/bin/python -m pip install -q -r requirements-dev.txt >&2
  $VENV/bin/python -m pip install -q --no-deps -e . >&2
  echo "$want" > $STAMP
fi
# Byte-compile the project's own code (an editable install is not compiled by pip): where
# PYTHONDONTWRITEBYTECODE is set, every `rxguard run` and each of its worker processes would
# otherwise compile ~30k lines of source again (0.3-0.4 s of a run's wall time measured).
# Up to date, this only compares timestamps.
$VENV/bin/python -m compileall -q -j 0 layers tools functions >/dev/null || echo "rxguard: byte-compiling failed (runs still work, slower to start)" >&2
