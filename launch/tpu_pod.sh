#!/usr/bin/env bash
# A TPU pod slice: the same training command on every TPU VM worker, one process per host.
# jax.distributed.initialize() auto-detects the pod (--distributed), and the workdir must be
# one directory that every worker sees (checkpoints are written by all hosts, the corpus and
# metrics by host 0).
#
# Usage (from the repository root, on a machine with gcloud set up for the project):
#   TPU=my-v5e-32 ZONE=us-west4-a WORKDIR=/mnt/shared/runs/pod \
#     [PROJECT=my-project] [CONFIG=configs/default.py[:preset]] [SKIP_INSTALL=1] \
#     launch/tpu_pod.sh [--config.x=y ...]
# runs (step 1 ships the committed tree, HEAD, not uncommitted edits):
#   git archive --format=tar.gz -o /tmp/modellens_jax_src.tar.gz HEAD
#   gcloud compute tpus tpu-vm scp /tmp/modellens_jax_src.tar.gz $TPU:~/ --zone=$ZONE --worker=all
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="<install>"
#   gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="cd ~/modellens-jax &&
#     python3 -m modellens_jax.train --config=$CONFIG --workdir=$WORKDIR --distributed \
#     --config.input.blocks=0 ..."   (blocks=0: one shard-local batch block per data shard)
# <install> unpacks into ~/modellens-jax and runs pip install "jax[tpu]" -e . there.
# WORKDIR: an NFS / Filestore mount or a gcsfuse mount of a bucket (e.g. /gcs/BUCKET/run) on
# every worker. gs:// URLs are refused: the trainer writes its workdir with local file I/O
# (ALLOW_GS=1 skips the check once the trainer supports them).
# SKIP_INSTALL=1 reuses the install of an earlier launch (re-running resumes the run).
# Preemption / maintenance: the TPU VM sends SIGTERM to the trainer on each worker; it finishes
# its step, saves a checkpoint (all hosts agree on the step) and exits 75: re-run to resume.
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

: "${TPU:?set TPU=<tpu-vm name> (see launch/tpu_pod.sh --help)}"
: "${ZONE:?set ZONE=<zone of the TPU VM>}"
: "${WORKDIR:?set WORKDIR=<directory shared by all workers>}"
CONFIG=${CONFIG:-configs/default.py}
PYTHON=${PYTHON:-python3}
REMOTE_DIR=${REMOTE_DIR:-modellens-jax}  # relative to each worker's home
TARBALL=${TARBALL:-/tmp/modellens_jax_src.tar.gz}
if [[ "$WORKDIR" == gs://* && "${ALLOW_GS:-0}" != 1 ]]; then
  echo "error: WORKDIR=$WORKDIR: mount the bucket with gcsfuse on every worker and pass the" \
    "mount path (the trainer writes its workdir with local file I/O); ALLOW_GS=1 overrides" >&2
  exit 2
fi

gc=(gcloud compute tpus tpu-vm)
where=("--zone=$ZONE" --worker=all)
if [[ -n "${PROJECT:-}" ]]; then where+=("--project=$PROJECT"); fi

run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    sq "$@"
  else
    "$@"
  fi
}

install="mkdir -p ~/$REMOTE_DIR && tar xzf ~/$(basename "$TARBALL") -C ~/$REMOTE_DIR"
install+=" && cd ~/$REMOTE_DIR && $PYTHON -m pip install -q \"jax[tpu]\" -e ."
train="cd ~/$REMOTE_DIR && $(sq "$PYTHON" -m modellens_jax.train "--config=$CONFIG" \
  "--workdir=$WORKDIR" --distributed --config.input.blocks=0 "$@")"

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  if [[ "${DRY_RUN:-0}" != 1 ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    echo "warning: uncommitted changes are not shipped (git archive HEAD)" >&2
  fi
  run git archive --format=tar.gz -o "$TARBALL" HEAD
  run "${gc[@]}" scp "$TARBALL" "$TPU:~/" "${where[@]}"
  run "${gc[@]}" ssh "$TPU" "${where[@]}" "--command=$install"
fi
run "${gc[@]}" ssh "$TPU" "${where[@]}" "--command=$train"
