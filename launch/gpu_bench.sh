#!/usr/bin/env bash
# The benchmark on a lent GPU host whose image has jax (CUDA) and flax but not grain,
# ml_collections or array-record, and no package index: bring them as wheels.
#
# Usage (from the repository root):
#   1. here (has PyPI):      launch/gpu_bench.sh wheels      # writes .wheels/ (Python 3.12)
#   2. on the GPU host:      launch/gpu_bench.sh run [--steps=N] [--config.x=y ...]
# "run" installs the carried wheels into a venv that sees the image's packages and runs this
# checkout (PYTHONPATH, nothing to build): the paper preset in float32 and bfloat16 and the default
# preset, one JSON line each (records/s, step-time percentiles, MFU, 47K-candidate latency).
# The device tool carries ignored paths with `carry=[".wheels"]`.
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."

run() { if [ "${DRY_RUN:-0}" = 1 ]; then echo "$*"; else "$@"; fi; }

case "${1:-}" in
  wheels)
    # A Python 3.12 pip (the project's venv by default), so the wheels match the GPU image.
    PY=${PYTHON:-.venv/bin/python}
    # With their dependencies: the image already has most of them (pip skips those there).
    run "$PY" -m pip download --only-binary=:all: -d .wheels grain ml_collections tensorboardX
    ;;
  run)
    shift
    PY=${PYTHON:-python3}
    run "$PY" -m venv --system-site-packages .venv-gpu
    run .venv-gpu/bin/pip install -q --no-index --find-links .wheels grain ml_collections \
      tensorboardX
    for args in "--preset=paper" "--preset=paper --config.model.compute_dtype=bfloat16" \
      "--preset=paper --config.optim.sparse_embeddings=True --config.model.compute_dtype=bfloat16" \
      "--preset=default"; do
      # shellcheck disable=SC2086
      run env PYTHONPATH="$PWD" JAX_PLATFORMS=cuda XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 \
        .venv-gpu/bin/python \
        -m modellens_jax.bench $args --config.input.groups_per_batch=256 \
        --config.input.list_size=128 "$@"
    done
    ;;
  *)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
