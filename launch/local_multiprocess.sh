#!/usr/bin/env bash
# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
# Runs N cooperating JAX processes on this machine, on CPU devices.
#
# The multi-host code path (jax.distributed, global arrays, per-host data,
# Orbax multi-process checkpoints) without a cluster: each process gets
# DEVICES_PER_PROCESS fake CPU devices and they meet at a coordinator on
# 127.0.0.1.
#
# Usage:
#   launch/local_multiprocess.sh N [main args...]
#
# Example:
#   launch/local_multiprocess.sh 2 --config=experiments/shakespeare.py:tiny \
#       --workdir=/tmp/rj_local --config.train.steps=20
#
# Environment:
#   PYTHON               interpreter (default: python3)
#   MODULE               module run with `python -m` (default: routing_jax.main)
#   DEVICES_PER_PROCESS  CPU devices per process (default: 1)
#   LOG_DIR              where proc_<i>.log go (default: a new temp dir)
#   PORT                 coordinator port (default: a free one)
#
# Exits 0 when every process exits 0. When one fails, the others are killed,
# the tail of each failed log is printed and the script exits non-zero.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
case "$1" in -h|--help) usage ;; esac
NUM_PROCESSES="$1"
shift
if ! [[ "${NUM_PROCESSES}" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: N (number of processes) must be a positive integer," \
       "got '${NUM_PROCESSES}'" >&2
  exit 2
fi

PYTHON="${PYTHON:-python3}"
MODULE="${MODULE:-routing_jax.main}"
DEVICES_PER_PROCESS="${DEVICES_PER_PROCESS:-1}"
if ! [[ "${DEVICES_PER_PROCESS}" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: DEVICES_PER_PROCESS must be a positive integer," \
       "got '${DEVICES_PER_PROCESS}'" >&2
  exit 2
fi
LOG_DIR="${LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/rj_local.XXXXXX")}"
mkdir -p "${LOG_DIR}"
# A fresh port per run: a stale coordinator on a reused port makes the new
# processes fail with "different incarnation".
PORT="${PORT:-$("${PYTHON}" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')}"

pids=()
cleanup() {
  local pid
  for pid in ${pids[@]+"${pids[@]}"}; do
    kill "${pid}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "local_multiprocess: ${NUM_PROCESSES} processes x" \
     "${DEVICES_PER_PROCESS} CPU devices, coordinator 127.0.0.1:${PORT}," \
     "logs in ${LOG_DIR}" >&2
device_flag="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="${XLA_FLAGS:-} ${device_flag}" \
    "${PYTHON}" -m "${MODULE}" "$@" \
      --distributed \
      --coordinator_address="127.0.0.1:${PORT}" \
      --num_processes="${NUM_PROCESSES}" \
      --process_id="${i}" \
      >"${LOG_DIR}/proc_${i}.log" 2>&1 &
  pids+=("$!")
done

# Poll rather than `wait` in order, so a late process's failure is seen
# while an earlier one still blocks on the coordinator.
remaining=${NUM_PROCESSES}
finished=()
failed=()
while ((remaining > 0)); do
  for i in "${!pids[@]}"; do
    [[ -z "${finished[$i]:-}" ]] || continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    rc=0
    wait "${pids[$i]}" || rc=$?
    finished[$i]=1
    remaining=$((remaining - 1))
    if ((rc != 0)); then
      failed+=("${i}")
      echo "local_multiprocess: process ${i} exited with status ${rc}" >&2
    fi
  done
  if ((${#failed[@]} > 0)); then
    break
  fi
  ((remaining == 0)) || sleep 0.2
done

if ((${#failed[@]} > 0)); then
  cleanup
  for i in "${failed[@]}"; do
    echo "----- tail of ${LOG_DIR}/proc_${i}.log -----" >&2
    tail -n 20 "${LOG_DIR}/proc_${i}.log" >&2 || true
  done
  exit 1
fi
echo "local_multiprocess: all ${NUM_PROCESSES} processes succeeded" >&2
