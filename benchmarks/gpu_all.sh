#!/usr/bin/env bash
# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
# The session's one GPU run (a lent H100/H200, jax 0.11 preinstalled, no
# network): attention (bf16 with cuDNN flash as the dense baseline, and
# f32) and cached decoding, in about 5 minutes. Writes to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results/gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.9
log="$OUT/gpu_all.log"
{
  date -Is
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
  label="$(python3 -c 'import jax; print(jax.devices()[0].device_kind)')"
  common=(--mem-cap-gb 0 --predict-cap-gb 60 --reps 10 --point-timeout 60
          --matmul-sizes 4096,8192 --device-label "$label")
  timeout 170 python3 benchmarks/attention.py "${common[@]}" --dtype bfloat16 \
    --dense-impl cudnn --impls dense_cudnn,local,routing_causal,routing_topk \
    --sizes 1024,4096,16384,65536 --time-budget 150 \
    --out "$OUT/attention_gpu_bf16"
  echo "attention bf16 rc=$?"
  timeout 80 python3 benchmarks/attention.py "${common[@]}" --dtype float32 \
    --dense-impl xla --impls dense_xla,local,routing_causal \
    --sizes 4096,16384 --time-budget 65 --out "$OUT/attention_gpu_f32"
  echo "attention f32 rc=$?"
  timeout 90 python3 benchmarks/decode.py --contexts 512,2048,4096 --reps 3 \
    --step-reps 32 --out "$OUT/decode_gpu" --device-label "$label"
  echo "decode rc=$?"
  date -Is
} 2>&1 | tee "$log"
