# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""XLA:CPU flags the command-line tools set by default (no jax import here).

XLA reads XLA_FLAGS once, when jax starts its first backend, so these must be
in the environment before the first computation. `main`, `evaluate` and
`sample` call `apply_cpu_defaults` first thing; a program that imports the
modules itself can call it the same way, or set XLA_FLAGS itself.

The default, measured on the peer benchmark's model (6 layers, d_model 512,
one training step, 2-core AMD EPYC; docs/performance.md): by default
XLA:CPU hands matmuls, element-wise fusions and reductions to YNNPACK. Its
reductions over the token axis (the LayerNorm scale and bias gradients,
[tokens, 512] -> [512]) took about 90 ms each at 8k tokens, 1.2 s of a
9.5 s step, and its batched matmuls (the [64 x 192] attention blocks) ran
at 25-40 GFLOP/s against Eigen's 44-129. With YNNPACK off, 8k-token steps
took 6.0-7.4 s against 6.6-8.7 s with YNNPACK kept to matmuls (four
interleaved pairs; the first setting was 9.5 s); at 1k tokens the settings
are within noise of each other (0.79-0.88 s against 0.71-0.99 s). The flags
only concern the CPU backend.
"""

import os
from typing import MutableMapping

# No YNNPACK fusions: Eigen matmuls and XLA's own emitters for the rest.
CPU_DEFAULTS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def _flag_name(flag: str) -> str:
  return flag.split("=", 1)[0]


def apply_cpu_defaults(
    environ: MutableMapping[str, str] = os.environ,
) -> str:
  """Appends CPU_DEFAULTS to XLA_FLAGS, keeping any flag the user set.

  A flag already named in XLA_FLAGS (with any value) is left as it is, so
  `XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot python -m ...`
  still hands matmuls to YNNPACK.

  Args:
    environ: the environment to update (os.environ by default).

  Returns:
    The resulting XLA_FLAGS.
  """
  current = environ.get("XLA_FLAGS", "").split()
  named = {_flag_name(f) for f in current}
  added = [f for f in CPU_DEFAULTS if _flag_name(f) not in named]
  environ["XLA_FLAGS"] = " ".join(current + added)
  return environ["XLA_FLAGS"]
