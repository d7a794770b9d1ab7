#!/usr/bin/env bash
# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
# Multi-node GPU training without SLURM: run this once on every node.
#
# Each invocation is one JAX process that drives all the GPUs it can see
# (CUDA_VISIBLE_DEVICES narrows that, e.g. for one process per GPU). Process 0
# hosts the coordinator at COORDINATOR_ADDRESS, which every node must reach.
#
# Usage (on node i of N, from the repository root, venv active):
#   COORDINATOR_ADDRESS=10.0.0.1:12345 NUM_PROCESSES=N PROCESS_ID=i \
#     launch/gpu_multinode.sh --config=experiments/<x>.py --workdir=<dir> \
#     [more main args...]
#
# Example (2 nodes; the same command with PROCESS_ID=1 on the second node):
#   COORDINATOR_ADDRESS=node0:12345 NUM_PROCESSES=2 PROCESS_ID=0 \
#   CONFIG=experiments/enwik8.py WORKDIR=/shared/runs/enwik8 \
#     launch/gpu_multinode.sh --config.train.steps=1000
#
# Environment:
#   COORDINATOR_ADDRESS  host:port of process 0 (required)
#   NUM_PROCESSES        total number of processes (required)
#   PROCESS_ID           this process, 0 <= PROCESS_ID < NUM_PROCESSES
#                        (required)
#   CONFIG               if set, passed as --config=$CONFIG (file[:arg])
#   WORKDIR              if set, passed as --workdir=$WORKDIR; it must be the
#                        same shared path on every node (NFS, GCS, ...)
#   PYTHON               interpreter (default: python3)
#   MODULE               module run with `python -m` (default: routing_jax.main)
#   GPU_XLA_FLAGS        XLA flags appended to XLA_FLAGS (default: the
#                        latency hiding scheduler; set it empty to add none)
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
  exit 2
}
case "${1:-}" in -h|--help) usage ;; esac

die() {
  echo "gpu_multinode.sh: error: $*" >&2
  echo "(run with --help for usage)" >&2
  exit 2
}

: "${COORDINATOR_ADDRESS:?must be set to host:port of process 0, \
e.g. 10.0.0.1:12345}"
: "${NUM_PROCESSES:?must be set to the total number of processes}"
: "${PROCESS_ID:?must be set to the index of this process, \
0 <= PROCESS_ID < NUM_PROCESSES}"

[[ "${NUM_PROCESSES}" =~ ^[1-9][0-9]*$ ]] ||
  die "NUM_PROCESSES must be a positive integer, got '${NUM_PROCESSES}'"
[[ "${PROCESS_ID}" =~ ^(0|[1-9][0-9]*)$ ]] ||
  die "PROCESS_ID must be a non-negative integer, got '${PROCESS_ID}'"
((PROCESS_ID < NUM_PROCESSES)) ||
  die "PROCESS_ID must be < NUM_PROCESSES (${NUM_PROCESSES}), got ${PROCESS_ID}"
# host:port or [ipv6]:port.
address_re='^([^]:[:space:][]+|\[[0-9a-fA-F:]+\]):([0-9]+)$'
[[ "${COORDINATOR_ADDRESS}" =~ ${address_re} ]] ||
  die "COORDINATOR_ADDRESS must be host:port, got '${COORDINATOR_ADDRESS}'"
port="${BASH_REMATCH[2]}"
((port >= 1 && port <= 65535)) ||
  die "COORDINATOR_ADDRESS port must be in 1..65535, got ${port}"

PYTHON="${PYTHON:-python3}"
MODULE="${MODULE:-routing_jax.main}"
# Overlap collectives with compute; the flag set that XLA accepts changes
# between releases, so it is one variable to override (GPU_XLA_FLAGS=).
if [[ -z "${GPU_XLA_FLAGS+set}" ]]; then
  GPU_XLA_FLAGS="--xla_gpu_enable_latency_hiding_scheduler=true"
fi
export XLA_FLAGS="${XLA_FLAGS:-} ${GPU_XLA_FLAGS}"

main_args=()
[[ -z "${CONFIG:-}" ]] || main_args+=("--config=${CONFIG}")
[[ -z "${WORKDIR:-}" ]] || main_args+=("--workdir=${WORKDIR}")

echo "gpu_multinode.sh: process ${PROCESS_ID} of ${NUM_PROCESSES}," \
     "coordinator ${COORDINATOR_ADDRESS}" >&2
exec "${PYTHON}" -m "${MODULE}" \
  "${main_args[@]}" \
  --distributed \
  --coordinator_address="${COORDINATOR_ADDRESS}" \
  --num_processes="${NUM_PROCESSES}" \
  --process_id="${PROCESS_ID}" \
  "$@"
