#!/usr/bin/env bash
# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
# Cached decoding vs recompute on one GPU, plus the decode-equivalence test.
#
# For the lent GPU machine (jax 0.11.2 with CUDA preinstalled, no package
# registry): installs the project without dependencies, runs
# benchmarks/decode.py at contexts 512..8192 and the non-slow cached-decoding
# tests on the GPU. Everything lands in $OUT (default benchmarks/results);
# the whole script stays under 3 minutes.
#
#   OUT=/tmp/out bash benchmarks/gpu_decode.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log="$OUT/gpu_decode.log"

{
  echo "== $(date -Is) $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    || true
  python3 -m pip install -q --no-deps --no-build-isolation -e . \
    || python3 -m pip install -q --no-deps -e .
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"

  echo "== benchmark"
  timeout 130 python3 benchmarks/decode.py \
    --contexts 512,1024,2048,4096,8192 --reps 5 --step-reps 32 \
    --out "$OUT/decode_gpu" \
    --device-label "one GPU of the lent machine (uncontended)"
  echo "benchmark rc=$?"

  # conftest.py defaults JAX_PLATFORMS to cpu; run the tests on the GPU.
  # Full float32 matmuls: TF32 would blur the 1e-4 comparison.
  echo "== decode tests on the GPU"
  JAX_PLATFORMS=cuda JAX_DEFAULT_MATMUL_PRECISION=highest timeout 40 \
    python3 -m pytest -q -p no:cacheprovider tests/model_decode_test.py \
    -k "mixed_relative and not scan"
  echo "tests rc=$?"
  echo "== done $(date -Is)"
} 2>&1 | tee "$log"
