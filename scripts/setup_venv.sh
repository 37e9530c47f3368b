#!/usr/bin/env bash
# Create .venv at the repo root if missing, then install CI requirements and
# keras_interp (editable). Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x .venv/bin/python ]]; then
  echo "setup_venv: creating .venv"
  python3 -m venv .venv
fi
echo "setup_venv: pip install -r requirements-ci.txt -e ."
.venv/bin/pip install -q -r requirements-ci.txt -e .
