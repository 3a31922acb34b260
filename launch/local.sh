#!/usr/bin/env bash
# The main training job on this machine (CPU, or the one local accelerator JAX finds).
#
# Usage (from the repository root):
#   [CONFIG=configs/default.py[:preset]] [WORKDIR=runs/default] [PYTHON=python] \
#     launch/local.sh [--config.x=y ...]
# runs:
#   python -m modellens_jax.train --config=$CONFIG --workdir=$WORKDIR [--config.x=y ...]
# Re-running the same command resumes from the latest checkpoint in $WORKDIR.
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

CONFIG=${CONFIG:-configs/default.py}
WORKDIR=${WORKDIR:-runs/default}
PYTHON=${PYTHON:-python}

cmd=("$PYTHON" -m modellens_jax.train "--config=$CONFIG" "--workdir=$WORKDIR" "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  sq "${cmd[@]}"
  exit 0
fi
exec "${cmd[@]}"
