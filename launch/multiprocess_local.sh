#!/usr/bin/env bash
# N training processes on this machine talking through jax.distributed on 127.0.0.1: the
# multi-host code path (process-local batches, cross-process collectives, multi-process
# checkpoints) without a cluster. Each process gets DEVICES_PER_PROCESS fake CPU devices.
#
# Usage (from the repository root):
#   [NUM_PROCESSES=2] [DEVICES_PER_PROCESS=2] [PORT=<free port>] [WORKDIR=runs/multiprocess] \
#     [CONFIG=configs/default.py[:preset]] [PYTHON=python] launch/multiprocess_local.sh [--config.x=y ...]
# runs, for i in 0..N-1 (process 0 prints to the terminal, the others to $WORKDIR/process_$i.log):
#   env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \
#     python -m modellens_jax.train --config=$CONFIG --workdir=$WORKDIR \
#     --coordinator=127.0.0.1:$PORT --num_processes=N --process_id=i [--config.x=y ...] &
# If one process fails the others are stopped. input.groups_per_batch must divide by
# N * DEVICES_PER_PROCESS. Re-running resumes from the checkpoints in $WORKDIR.
# DRY_RUN=1 prints the commands (as a pasteable script) instead of running them.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

N=${NUM_PROCESSES:-2}
DEVICES=${DEVICES_PER_PROCESS:-2}
CONFIG=${CONFIG:-configs/default.py}
WORKDIR=${WORKDIR:-runs/multiprocess}
PYTHON=${PYTHON:-python}
if [[ -z "${PORT:-}" ]]; then
  PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi
xla="${XLA_FLAGS:+$XLA_FLAGS }--xla_force_host_platform_device_count=$DEVICES"

cmd_for() {  # sets cmd to the command of process $1 (more train flags follow)
  local id=$1
  shift
  cmd=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$xla" "$PYTHON" -m modellens_jax.train
    "--config=$CONFIG" "--workdir=$WORKDIR" "--coordinator=127.0.0.1:$PORT"
    "--num_processes=$N" "--process_id=$id" "$@")
}

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "mkdir -p $(sq "$WORKDIR")"
  for ((i = 0; i < N; i++)); do
    cmd_for "$i" "$@"
    if ((i == 0)); then
      echo "$(sq "${cmd[@]}") &"
    else
      echo "$(sq "${cmd[@]}") >$(sq "$WORKDIR/process_$i.log") 2>&1 &"
    fi
  done
  echo "wait"
  exit 0
fi

mkdir -p "$WORKDIR"
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
# SIGTERM / SIGINT to the launcher (a scheduler's preemption, Ctrl-C) is passed on to every
# process once (they run in their own sessions, so a terminal's Ctrl-C reaches them only
# through here); each finishes its step, saves the checkpoint and exits 75, and the launcher
# waits for them and exits 75 too (rerun to resume).
forward() {
  echo "$1: passing it on to the $N processes (they save a checkpoint and stop)" >&2
  trap '' INT TERM
  local p rc=0 r
  for p in "${pids[@]}"; do kill -s "$1" "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    r=0
    wait "$p" || r=$?
    if ((r != 0 && r != 75)); then rc=1; fi
  done
  if ((rc == 0)); then exit 75; fi
  exit "$rc"
}
trap 'forward TERM' TERM
trap 'forward INT' INT
for ((i = 0; i < N; i++)); do
  cmd_for "$i" "$@"
  if ((i == 0)); then
    setsid "${cmd[@]}" &
  else
    setsid "${cmd[@]}" >"$WORKDIR/process_$i.log" 2>&1 &
  fi
  pids+=("$!")
done
echo "started $N processes (coordinator 127.0.0.1:$PORT; logs of 1..$((N - 1)) in $WORKDIR/process_*.log)" >&2
status=0
for _ in "${pids[@]}"; do
  if ! wait -n; then
    if ((status == 0)); then
      echo "a process failed: stopping the others" >&2
      stop_all
    fi
    status=1
  fi
done
exit "$status"
