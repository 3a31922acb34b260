#!/usr/bin/env bash
#SBATCH --job-name=modellens
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%j.out
#SBATCH --signal=TERM@120
##SBATCH --gpus-per-node=8   (remove one '#' on GPU nodes: each task then drives its node's GPUs)
# Multi-process training under SLURM: one task per process (srun), process 0's node is the
# coordinator, and --coordinator/--num_processes/--process_id come from SLURM's variables.
#
# Usage (from the repository root, on the login node; resources as #SBATCH lines above or
# sbatch options, which win):
#   WORKDIR=/shared/runs/slurm [CONFIG=configs/default.py[:preset]] [PORT=29500] [PYTHON=python] \
#     sbatch [--nodes=4] launch/slurm.sh [--config.x=y ...]
# each task runs:
#   python -m modellens_jax.train --config=$CONFIG --workdir=$WORKDIR \
#     --coordinator=<first node>:$PORT --num_processes=$SLURM_NTASKS --config.input.blocks=0 \
#     [--config.x=y ...] --process_id=$SLURM_PROCID
# WORKDIR must be on a filesystem every node sees. Resubmitting resumes from its checkpoints.
# Preemption: --signal=TERM@120 has SLURM send SIGTERM to every task 120 s before the time
# limit (scancel and preemption send it too); srun and each task exec the trainer, so the
# signal reaches it, and it finishes its step, saves a checkpoint and exits 75 (EX_TEMPFAIL).
# Resubmit (or add --requeue) to resume; no step is lost.
# DRY_RUN=1 bash launch/slurm.sh prints the srun command and each process's command (outside
# SLURM it assumes SLURM_NTASKS=2 and this host as the coordinator).
set -euo pipefail

usage() { awk 'NR > 1 && /^#( |$)/ { sub(/^# ?/, ""); print; next } NR > 1 && !/^#/ { exit }' "$0"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

# Shell-quotes each argument like Python's shlex.quote (the DRY_RUN output can be pasted).
sq() {
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\"\'\"\'}'"); fi
  done
  echo "${out[*]}"
}

DRY=${DRY_RUN:-0}
if [[ -z "${SLURM_JOB_ID:-}" && "$DRY" != 1 ]]; then
  echo "error: not inside a SLURM job: submit with sbatch (or DRY_RUN=1 to print)" >&2
  exit 2
fi
CONFIG=${CONFIG:-configs/default.py}
WORKDIR=${WORKDIR:-runs/slurm}
PYTHON=${PYTHON:-python}
NPROC=${SLURM_NTASKS:-2}
PORT=${PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 20000))}
if [[ -z "${COORD_HOST:-}" ]]; then
  if [[ -n "${SLURM_JOB_NODELIST:-}" ]] && command -v scontrol >/dev/null 2>&1; then
    COORD_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
  else
    COORD_HOST=$(hostname)
  fi
fi

task=("$PYTHON" -m modellens_jax.train "--config=$CONFIG" "--workdir=$WORKDIR"
  "--coordinator=$COORD_HOST:$PORT" "--num_processes=$NPROC" --config.input.blocks=0 "$@")
# SLURM_PROCID is only known inside each task, hence the inner bash (single quotes on purpose).
# shellcheck disable=SC2016
launch=(srun --kill-on-bad-exit=1 bash -c 'exec "$@" --process_id="$SLURM_PROCID"' bash "${task[@]}")

if [[ "$DRY" == 1 ]]; then
  sq "${launch[@]}"
  for ((i = 0; i < NPROC; i++)); do
    echo "# process $i: $(sq "${task[@]}" "--process_id=$i")"
  done
  exit 0
fi
echo "coordinator $COORD_HOST:$PORT, $NPROC processes, workdir $WORKDIR" >&2
exec "${launch[@]}"
