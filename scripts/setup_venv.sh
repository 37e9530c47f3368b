#!/usr/bin/env bash
# Create .venv at the repo root if missing and install keras_interp (editable)
# into it. Safe to rerun.
#   scripts/setup_venv.sh          the runtime: requirements.txt + ".[cpu]"
#                                  (TensorFlow-CPU, Keras; no JAX, no PyTorch)
#   scripts/setup_venv.sh --test   also the test extras: requirements-ci.txt
#                                  + ".[cpu,test]" (pytest, JAX and PyTorch CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=requirements.txt
extras=cpu
case "${1:-}" in
  "") ;;
  --test) requirements=requirements-ci.txt; extras=cpu,test ;;
  *) echo "usage: scripts/setup_venv.sh [--test]" >&2; exit 2 ;;
esac

if [[ ! -x .venv/bin/python ]]; then
  echo "setup_venv: creating .venv"
  python3 -m venv .venv
fi
echo "setup_venv: pip install -r $requirements -e .[$extras]"
.venv/bin/pip install -q -r "$requirements" -e ".[$extras]"
