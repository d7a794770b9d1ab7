# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The CLIs' default XLA:CPU flags: merged with the user's, and in effect."""

import json
import os
import subprocess
import sys

from routing_jax import xla_flags

YNN = "--xla_cpu_experimental_ynn_fusion_type"


def test_appends_defaults_and_keeps_other_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  out = xla_flags.apply_cpu_defaults(env)
  assert out.split() == [
      "--xla_force_host_platform_device_count=4",
      *xla_flags.CPU_DEFAULTS,
  ]
  assert env["XLA_FLAGS"] == out
  assert xla_flags.apply_cpu_defaults({}) == " ".join(xla_flags.CPU_DEFAULTS)


def test_a_users_own_setting_wins():
  env = {"XLA_FLAGS": f"{YNN}=dot"}  # YNNPACK for matmuls
  assert xla_flags.apply_cpu_defaults(env) == f"{YNN}=dot"
  # Applying twice adds nothing.
  env = {}
  once = xla_flags.apply_cpu_defaults(env)
  assert xla_flags.apply_cpu_defaults(env) == once


_PROBE = """
import json, sys
from routing_jax import xla_flags
if sys.argv[1] == "defaults":
  xla_flags.apply_cpu_defaults()
import jax, jax.numpy as jnp
x = jnp.ones((256, 64))
w = jnp.ones((64, 32))
kinds = lambda f, *a: [
    l.split("(")[0].split()[-1] for l in jax.jit(f).lower(*a).compile()
    .as_text().splitlines() if "__ynn_fusion" in l and " fusion(" in l]
print(json.dumps({
    # The LayerNorm-style reduction over tokens, and a matmul.
    "reduce": len(kinds(lambda x: jnp.sum(x * x, axis=0), x)),
    "dot": len(kinds(lambda x, w: x @ w, x, w)),
}))
"""


def _ynn_fusions(mode):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["JAX_PLATFORMS"] = "cpu"
  out = subprocess.run(
      [sys.executable, "-c", _PROBE, mode],
      capture_output=True,
      text=True,
      env=env,
      timeout=120,
      check=True,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_defaults_turn_ynnpack_fusions_off():
  """XLA accepts the flag and it takes reductions and dots from YNNPACK."""
  plain, ours = _ynn_fusions("plain"), _ynn_fusions("defaults")
  assert plain["reduce"] >= 1 and plain["dot"] >= 1  # XLA:CPU's default
  assert ours == {"reduce": 0, "dot": 0}
