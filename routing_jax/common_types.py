# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Type aliases shared by the whole package (annotations only).

A leaf module: it imports no other routing_jax module, so any module may
import it.
"""

from typing import Any

import jax

Array = jax.Array
# A key from jax.random.key (typed) or jax.random.PRNGKey (raw uint32).
PRNGKey = jax.Array
Shape = tuple[int, ...]
# A jnp dtype or anything jnp.dtype() accepts.
DType = Any
# A nested structure of arrays (dicts, lists, tuples, NamedTuples).
PyTree = Any
