#!/usr/bin/env bash
# The test command: scripts/test.sh [pytest args...]
# Installs the test extras into .venv (scripts/setup_venv.sh --test), then runs
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup_venv.sh --test
exec .venv/bin/python -m pytest -q "$@"
