#!/usr/bin/env bash
# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
# One-shot attention benchmark for a lent GPU machine (about 6 minutes).
#
# Runs benchmarks/attention.py twice, one subprocess per (impl, n) point:
#   bf16: dense cuDNN flash attention (the dense baseline), dense XLA (until
#         its n^2 memory no longer fits), LocalAttention, RoutingAttention
#         causal and topk, n = 1k .. 128k;
#   f32:  dense XLA (cuDNN takes only fp16/bf16), local, both routings,
#         n = 1k .. 64k.
# Each run has a time budget, after which its remaining points are recorded
# as skipped, so the outputs are always written.
#
# Usage, from the repository root (python 3.12 with jax[cuda] preinstalled,
# no network needed; matplotlib optional):
#   bash benchmarks/gpu_attention.sh            # writes to $OUT, else
#                                               # benchmarks/results/gpu
# Outputs: attention_gpu_{bf16,f32}.{json,md,png} and gpu_attention.log.
# SIZES_BF16 / SIZES_F32 (comma lists) override the sizes, e.g. for a smoke
# test on CPU: JAX_PLATFORMS=cpu SIZES_BF16=512 SIZES_F32=512 \
#   MATMUL_SIZES=256 OUT=/tmp/gpu_smoke bash benchmarks/gpu_attention.sh

set -u -o pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
py="${PYTHON:-python3}"
# The checkout is importable without `pip install -e .`.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# One point per process: let each take most of the card.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"
log="$out/gpu_attention.log"

"$py" -c 'import jax, flax' || { echo "no jax/flax for $py" >&2; exit 1; }
{
  date
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
    2>&1 || true
  "$py" -c 'import jax, flax; print("jax", jax.__version__, "flax",
            flax.__version__, jax.devices())'
} 2>&1 | tee "$log"

label="$("$py" -c 'import jax; print(jax.devices()[0].device_kind)')"
common=(--mem-cap-gb 0 --predict-cap-gb 60 --reps 10 --point-timeout 90
        --matmul-sizes "${MATMUL_SIZES:-2048,4096,8192}"
        --device-label "$label")

"$py" benchmarks/attention.py "${common[@]}" --dtype bfloat16 \
  --dense-impl cudnn \
  --impls dense_cudnn,dense_xla,local,routing_causal,routing_topk \
  --sizes "${SIZES_BF16:-1024,4096,16384,65536,131072}" --time-budget 200 \
  --out "$out/attention_gpu_bf16" 2>&1 | tee -a "$log"

"$py" benchmarks/attention.py "${common[@]}" --dtype float32 \
  --dense-impl xla --impls dense_xla,local,routing_causal,routing_topk \
  --sizes "${SIZES_F32:-1024,4096,16384,65536}" --time-budget 110 \
  --out "$out/attention_gpu_f32" 2>&1 | tee -a "$log"

date | tee -a "$log"
