# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Test set-up: 8 fake CPU devices, the CLIs' XLA flags, a compile cache.

This must run before any test module imports jax: XLA reads XLA_FLAGS once,
when the backend starts. The tests run with the XLA:CPU flags that
`python -m routing_jax.main` sets, so that a run in this process and one in
a CLI subprocess compute bitwise the same (the resume tests compare them).

The persistent compilation cache is set through the environment, so that
the CLI subprocesses the tests start (they inherit it; jax reads
JAX_COMPILATION_CACHE_DIR and JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS)
reuse what this process or an earlier subprocess compiled, and the other
way round. A cache hit returns the executable the same compile produced:
results are unchanged. A test that checks the cache itself overrides them.
"""

import os

from routing_jax import xla_flags

CACHE_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), ".jax_cache"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
)
xla_flags.apply_cpu_defaults()
os.environ["JAX_COMPILATION_CACHE_DIR"] = CACHE_DIR
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_enable_x64", False)
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(name="tiny_run", scope="session")
def fixture_tiny_run(tmp_path_factory):
  """A finished run of `helpers.tiny_run.config()` (4 steps, checkpoints at
  2 and 4): (workdir, final state). Tests that change the workdir copy it
  first."""
  from helpers import tiny_run  # pylint: disable=g-import-not-at-top
  from routing_jax.training import train_loop  # pylint: disable=g-import-not-at-top

  workdir = tmp_path_factory.mktemp("tiny_run")
  result = train_loop.train_and_evaluate(tiny_run.config(), str(workdir))
  return workdir, result.state
