#!/usr/bin/env bash
# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
# Trains on a Cloud TPU VM slice (single host or pod): create, copy, install,
# run on every worker.
#
# Steps (each can be skipped):
#   1. create the TPU VM unless it already exists (gcloud ... tpu-vm create);
#   2. copy this checkout to every worker (gcloud ... scp --recurse
#      --worker=all), without .git, venvs, workdirs and caches;
#   3. install on every worker: a venv with `pip install -e .[gcs]` (gcsfs,
#      for a gs:// workdir) and jax[tpu];
#   4. run `python -m routing_jax.main --distributed` on every worker at once
#      (ssh --worker=all), detached (nohup, log in REMOTE_DIR/train.log) so
#      that it outlives your terminal; jax.distributed auto-detects the slice
#      topology. A previous run on the workers is stopped first (a live one
#      holds the TPU: "TPU in use").
#
# Usage:
#   launch/tpu_pod.sh [options] [-- main args...]
#
# Example:
#   TPU_NAME=rj-v4-32 TPU_ZONE=us-central2-b TPU_TYPE=v4-32 \
#   WORKDIR=gs://my-bucket/runs/enwik8 \
#     launch/tpu_pod.sh -- --config.train.steps=100000
#   launch/tpu_pod.sh --dry-run --name=rj --zone=us-central2-b \
#     --workdir=gs://b/r     # print the gcloud commands only
#
# Options (each also settable by the environment variable in brackets):
#   --name=NAME          TPU VM name [TPU_NAME] (required)
#   --zone=ZONE          zone [TPU_ZONE] (required)
#   --type=TYPE          accelerator type [TPU_TYPE] (default: v4-8)
#   --version=VERSION    TPU VM runtime image [TPU_VERSION] (default: by
#                        accelerator type: v2/v3/v4 tpu-ubuntu2204-base,
#                        v5litepod/v5e v2-alpha-tpuv5-lite, v5p
#                        v2-alpha-tpuv5, v6e v2-alpha-tpuv6e)
#   --project=PROJECT    GCP project [TPU_PROJECT] (default: gcloud's)
#   --spot               create a spot VM [TPU_SPOT=1]
#   --queued             create it through a queued resource (waits for
#                        capacity; with --spot, the way to get spot pods)
#                        [TPU_QUEUED=1]
#   --restarts=N         rerun the trainer up to N times after it fails
#                        (it resumes from the workdir's last checkpoint)
#                        [RESTARTS] (default: 3)
#   --restart-delay=S    seconds between restarts [RESTART_DELAY] (default: 30)
#   --config=FILE[:ARG]  experiment config [CONFIG]
#                        (default: experiments/enwik8.py)
#   --workdir=DIR        checkpoints/logs, a gs:// path every worker shares
#                        [WORKDIR] (required unless --no-run)
#   --remote-dir=DIR     code directory on the workers, relative to home
#                        [REMOTE_DIR] (default: routing-jax)
#   --no-create --no-copy --no-install --no-run   skip a step
#   --foreground         stay attached to the workers' output (the run then
#                        dies with this terminal); default: detached
#   --no-cleanup         do not stop a previous run on the workers
#   --dry-run            print the commands instead of running them
#   -h, --help           this text
#
# Delete the VM when done:
#   gcloud compute tpus tpu-vm delete NAME --zone=ZONE
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
  exit "${1:-0}"
}
die() {
  echo "tpu_pod.sh: error: $*" >&2
  echo "(run with --help for usage)" >&2
  exit 2
}

NAME="${TPU_NAME:-}"
ZONE="${TPU_ZONE:-}"
TYPE="${TPU_TYPE:-v4-8}"
VERSION="${TPU_VERSION:-}"
PROJECT="${TPU_PROJECT:-}"
SPOT="${TPU_SPOT:-0}"
QUEUED="${TPU_QUEUED:-0}"
RESTARTS="${RESTARTS:-3}"
RESTART_DELAY="${RESTART_DELAY:-30}"
CONFIG="${CONFIG:-experiments/enwik8.py}"
WORKDIR="${WORKDIR:-}"
REMOTE_DIR="${REMOTE_DIR:-routing-jax}"
DRY_RUN=0 DETACH=1 CLEANUP=1 DO_CREATE=1 DO_COPY=1 DO_INSTALL=1 DO_RUN=1

while (($# > 0)); do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --type=*) TYPE="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --queued) QUEUED=1 ;;
    --restarts=*) RESTARTS="${1#*=}" ;;
    --restart-delay=*) RESTART_DELAY="${1#*=}" ;;
    --foreground) DETACH=0 ;;
    --no-cleanup) CLEANUP=0 ;;
    --project=*) PROJECT="${1#*=}" ;;
    --spot) SPOT=1 ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --remote-dir=*) REMOTE_DIR="${1#*=}" ;;
    --no-create) DO_CREATE=0 ;;
    --no-copy) DO_COPY=0 ;;
    --no-install) DO_INSTALL=0 ;;
    --no-run) DO_RUN=0 ;;
    --detach) DETACH=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h|--help) usage 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (main args go after --)" ;;
  esac
  shift
done

[[ "${RESTARTS}" =~ ^[0-9]+$ ]] ||
  die "--restarts must be a non-negative integer, got '${RESTARTS}'"
[[ "${RESTART_DELAY}" =~ ^[0-9]+$ ]] ||
  die "--restart-delay must be a non-negative integer, got '${RESTART_DELAY}'"
[[ -n "${NAME}" ]] || die "the TPU name is required: --name=NAME or TPU_NAME"
[[ -n "${ZONE}" ]] || die "the zone is required: --zone=ZONE or TPU_ZONE"
if ((DO_RUN)) && [[ -z "${WORKDIR}" ]]; then
  die "the workdir is required: --workdir=gs://... or WORKDIR"
fi
[[ "${REMOTE_DIR}" =~ ^[A-Za-z0-9._/-]+$ && "${REMOTE_DIR}" != /* ]] ||
  die "--remote-dir must be a plain path relative to home, got '${REMOTE_DIR}'"

# Each TPU generation boots its own runtime image; the Ubuntu base image
# serves v2-v4 only.
if [[ -z "${VERSION}" ]]; then
  case "${TYPE}" in
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
common=(--zone="${ZONE}")
[[ -z "${PROJECT}" ]] || common+=(--project="${PROJECT}")

# Single-quotes one word for the shell (bash 3.2 on macOS lacks ${x@Q}).
single_quote() {
  local q="'"
  printf "'%s'" "${1//$q/$q\\$q$q}"
}

# Joins words into one shell command line, quoting only the words that need
# it (so --dry-run output stays readable and copy-pasteable).
quote_words() {
  local word line=""
  for word in "$@"; do
    if [[ "${word}" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      line+="${word} "
    else
      line+="$(single_quote "${word}") "
    fi
  done
  printf '%s' "${line% }"
}

# Prints a command, then runs it unless --dry-run.
run() {
  quote_words "$@"
  echo
  if ((!DRY_RUN)); then
    "$@"
  fi
}

on_all_workers() {
  run "${gcloud_tpu[@]}" ssh "${NAME}" "${common[@]}" --worker=all \
    --command="$1"
}

if ((DO_CREATE)); then
  if ((DRY_RUN)) || ! "${gcloud_tpu[@]}" describe "${NAME}" "${common[@]}" \
      >/dev/null 2>&1; then
    if ((DRY_RUN)); then
      echo "# (skipped when ${NAME} already exists)"
    fi
    if ((QUEUED)); then
      # A queued resource waits for capacity instead of failing at once.
      queued=(gcloud compute tpus queued-resources)
      create=(create "${NAME}" --node-id="${NAME}" "${common[@]}"
              --accelerator-type="${TYPE}" --runtime-version="${VERSION}")
      if ((SPOT)); then
        create+=(--spot)
      fi
      run "${queued[@]}" "${create[@]}"
      if ((!DRY_RUN)); then
        echo "# waiting for ${NAME} to become ACTIVE (capacity permitting)"
        until [[ "$("${queued[@]}" describe "${NAME}" "${common[@]}" \
                    --format='value(state.state)')" == ACTIVE ]]; do
          sleep 60
        done
      fi
    else
      create=(create "${NAME}" "${common[@]}" --accelerator-type="${TYPE}"
              --version="${VERSION}")
      if ((SPOT)); then
        create+=(--spot)
      fi
      run "${gcloud_tpu[@]}" "${create[@]}"
    fi
  else
    echo "# ${NAME} exists in ${ZONE}; not creating it"
  fi
fi

if ((DO_COPY)); then
  repo="$(cd "$(dirname "$0")/.." && pwd)"
  base="${REMOTE_DIR##*/}"
  parent="${REMOTE_DIR%/*}"
  [[ "${parent}" != "${REMOTE_DIR}" ]] || parent="."
  if ((DRY_RUN)); then
    stage="/tmp/rj_stage"
  else
    stage="$(mktemp -d "${TMPDIR:-/tmp}/rj_stage.XXXXXX")"
    trap 'rm -rf "${stage}"' EXIT
  fi
  # A clean copy: the workers get the sources, not local venvs or runs.
  run mkdir -p "${stage}/${base}"
  run tar -C "${repo}" -cf "${stage}/code.tar" --exclude=./.git \
    --exclude=./venv --exclude=./.venv --exclude=./.ci/venv \
    --exclude='./workdir*' --exclude=.jax_cache --exclude=__pycache__ \
    --exclude='*.egg-info' --exclude=.pytest_cache .
  run tar -C "${stage}/${base}" -xf "${stage}/code.tar"
  if [[ "${parent}" != "." ]]; then
    on_all_workers "mkdir -p ${parent}"
  fi
  run "${gcloud_tpu[@]}" scp --recurse "${stage}/${base}" "${NAME}:${parent}/" \
    "${common[@]}" --worker=all
fi

if ((DO_INSTALL)); then
  # jax 0.10 needs Python >= 3.11, but Ubuntu 22.04 runtime images ship 3.10:
  # use the newest python3.x present, else install python3.11 from apt.
  # One line for ssh --command; each piece carries its own separator.
  install=(
    "set -e; cd ${REMOTE_DIR};"
    'py=""; for c in python3.13 python3.12 python3.11 python3; do'
    'if command -v $c >/dev/null &&'
    '$c -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null;'
    'then py=$c; break; fi; done;'
    'if [ -z "$py" ]; then sudo apt-get update -q &&'
    'sudo apt-get install -y -q python3.11 python3.11-venv;'
    'py=python3.11; fi;'
    '[ -x .venv/bin/python ] || $py -m venv .venv ||'
    '{ sudo apt-get install -y -q $py-venv && $py -m venv .venv; };'
    '. .venv/bin/activate && pip install -q -U pip &&'
    'pip install -q -e ".[gcs]" "jax[tpu]>=0.10.2,<0.12"'
    '-f https://storage.googleapis.com/jax-releases/libtpu_releases.html'
  )
  on_all_workers "${install[*]}"
fi

if ((DO_RUN)); then
  main=$(quote_words python -m routing_jax.main --config="${CONFIG}" \
    --workdir="${WORKDIR}" --distributed "$@")
  cmd=". .venv/bin/activate && ${main}"
  if ((RESTARTS > 0)); then
    # A failed run resumes from the last checkpoint; every worker restarts
    # and they meet again at the coordinator.
    cmd=". .venv/bin/activate && for attempt in \$(seq 0 ${RESTARTS}); do"
    cmd+=" ${main} && exit 0;"
    cmd+=" echo \"tpu_pod: run failed (attempt \$attempt), restarting\" >&2;"
    cmd+=" sleep ${RESTART_DELAY}; done; exit 1"
  fi
  if ((DETACH)); then
    # Its own process group, recorded, so that the next launch can stop it.
    cmd="setsid nohup bash -c $(single_quote "${cmd}") > train.log 2>&1"
    cmd+=" < /dev/null & echo \$! > train.pid"
  else
    cmd="bash -c $(single_quote "${cmd}")"
  fi
  if ((CLEANUP)); then
    # A live earlier run keeps the TPU open ("TPU in use"). SIGTERM first:
    # the trainer saves a checkpoint and exits; KILL after two minutes.
    cleanup="if [ -f train.pid ]; then pg=\$(cat train.pid);"
    cleanup+=" kill -TERM -- -\$pg 2>/dev/null || true;"
    cleanup+=" for i in \$(seq 120); do kill -0 -- -\$pg 2>/dev/null || break;"
    cleanup+=" sleep 1; done; kill -KILL -- -\$pg 2>/dev/null || true;"
    cleanup+=" rm -f train.pid; fi;"
    cleanup+=" pkill -f '^[^ ]*python[0-9.]* -m routing_jax[.]main' || true;"
    cleanup+=" sudo rm -f /tmp/libtpu_lockfile || true"
    cmd="${cleanup}; ${cmd}"
  fi
  on_all_workers "cd ${REMOTE_DIR} && ${cmd}"
fi
