# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Test set-up: 8 fake CPU devices, the CLIs' XLA flags, a compile cache.

This must run before any test module imports jax: XLA reads XLA_FLAGS once,
when the backend starts. The tests run with the XLA:CPU flags that
`python -m routing_jax.main` sets, so that a run in this process and one in
a CLI subprocess compute bitwise the same (the resume tests compare them).
"""

import os

from routing_jax import xla_flags

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
)
xla_flags.apply_cpu_defaults()

import jax  # pylint: disable=g-import-not-at-top

jax.config.update("jax_enable_x64", False)
jax.config.update(
    "jax_compilation_cache_dir",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), ".jax_cache"),
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
