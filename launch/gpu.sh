#!/usr/bin/env bash
# One host, all of its GPUs, one process: JAX uses every visible device and the trainer's mesh
# (config.mesh.data=-1) spans them; input.groups_per_batch must divide by the GPU count, and
# input.blocks=0 makes each batch one shard-local block per GPU (gathers without communication).
#
# Usage (from the repository root):
#   [CONFIG=configs/default.py[:preset]] [WORKDIR=runs/gpu] [CUDA_VISIBLE_DEVICES=0,1,...] \
#     [MEM_FRACTION=0.9] [PYTHON=python] launch/gpu.sh [--config.x=y ...]
# runs:
#   env JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 \
#     python -m modellens_jax.train --config=$CONFIG --workdir=$WORKDIR --config.input.blocks=0 \
#       [--config.x=y ...]
# JAX_PLATFORMS=cuda makes a missing GPU an error instead of a silent CPU run; the memory
# fraction lets JAX preallocate 90% of each GPU (its default is 75%). XLA_FLAGS is passed on.
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

CONFIG=${CONFIG:-configs/default.py}
WORKDIR=${WORKDIR:-runs/gpu}
PYTHON=${PYTHON:-python}
MEM_FRACTION=${MEM_FRACTION:-0.9}

envs=(JAX_PLATFORMS=cuda "XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION")
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then envs+=("CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"); fi
if [[ -n "${XLA_FLAGS:-}" ]]; then envs+=("XLA_FLAGS=$XLA_FLAGS"); fi
cmd=(env "${envs[@]}" "$PYTHON" -m modellens_jax.train "--config=$CONFIG" "--workdir=$WORKDIR" \
  --config.input.blocks=0 "$@")
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  sq "${cmd[@]}"
  exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  echo "GPUs: $(nvidia-smi -L | wc -l) (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all})" >&2
fi
exec "${cmd[@]}"
