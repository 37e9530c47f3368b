#!/usr/bin/env bash
# The test command: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup_venv.sh
exec .venv/bin/python -m pytest -q "$@"
