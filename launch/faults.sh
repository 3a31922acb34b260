#!/usr/bin/env bash
# The long fault-injection run (kill -9, SIGTERM, corrupted checkpoints, two runs on one
# workdir, a full disk, malformed inputs); prints a table (tests/faults/run.py has the details).
#
# Usage (from the repository root):
#   [PYTHON=python] [TRIALS=20] [FUZZ=60] launch/faults.sh [--out=tests/faults/RESULTS.md] [--only=kill,term]
# runs:
#   python -m tests.faults.run --trials=$TRIALS --fuzz=$FUZZ [...]
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

PYTHON=${PYTHON:-python}
cmd=("$PYTHON" -m tests.faults.run "--trials=${TRIALS:-20}" "--fuzz=${FUZZ:-60}" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  sq "${cmd[@]}"
  exit 0
fi
exec "${cmd[@]}"
