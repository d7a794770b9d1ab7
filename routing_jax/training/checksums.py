# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Checksums of a state pytree, independent of how its arrays are sharded.

Orbax stores no checksums, so a flipped bit in a checkpoint file restores
silently (an optimizer moment of 1.8e38, say). `Checkpointer.save` records
`state_checksums(state)` in the step's meta item and `restore` recomputes
them on the restored arrays: a difference is damage.

Each array's checksum is a sum over its elements of a hash of (the element's
bits, its flat index), modulo 2**32, computed twice with different seeds.
Sums modulo 2**32 do not depend on the order of addition, so the value is
the same on any mesh, any sharding and any number of processes: a state
saved on 8 devices and restored onto 2 has the same checksums. The hash of
one element is a bijection of its bits (for a given index), so any change
of a single element always changes the checksum; several changes cancel
with probability about 2**-64.

The computation runs on the devices that hold the arrays (one jitted
reduction, no copy to the host); with several processes it is a collective,
so every process must call it with the same pytree.
"""

from typing import Any

import jax
import jax.numpy as jnp

# Two independent 32-bit sums give a 64-bit checksum without jax_enable_x64.
_SEEDS = (0x9E3779B9, 0x85EBCA6B)


def _fmix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's finaliser: a bijection of uint32 that mixes every bit."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words (one per element, or two for 64 bits)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}
  if x.dtype.itemsize in unsigned:
    bits = jax.lax.bitcast_convert_type(x, unsigned[x.dtype.itemsize])
    return bits.astype(jnp.uint32)
  # 8-byte elements (only with jax_enable_x64): a trailing axis of 2 words.
  return jax.lax.bitcast_convert_type(x, jnp.uint32)


def _array_checksum(x: jax.Array) -> jax.Array:
  words = _words(x)
  # The row-major flat index, from per-axis iotas (no reshape, so no
  # resharding; wraps modulo 2**32 past 4G elements).
  index = jnp.zeros(words.shape, jnp.uint32)
  for axis, size in enumerate(words.shape):
    iota = jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
    index = index * jnp.uint32(size) + iota
  sums = [
      jnp.sum(_fmix32(words ^ _fmix32(index ^ jnp.uint32(seed))))
      for seed in _SEEDS
  ]
  return jnp.stack(sums).astype(jnp.uint32)


@jax.jit
def _checksums(leaves: list[jax.Array]) -> list[jax.Array]:
  return [_array_checksum(x) for x in leaves]


def state_checksums(state: Any) -> dict[str, str]:
  """{key path: 16 hex digits} for every array of `state`.

  Args:
    state: pytree of jax.Arrays (any sharding, also several processes).

  Returns:
    A JSON-serialisable dict; two states with bitwise equal arrays (and the
    same structure) give equal dicts.
  """
  paths_leaves = jax.tree_util.tree_leaves_with_path(state)
  if not paths_leaves:
    return {}
  paths, leaves = zip(*paths_leaves)
  values = jax.device_get(_checksums(list(leaves)))
  return {
      jax.tree_util.keystr(path): f"{int(v[0]):08x}{int(v[1]):08x}"
      for path, v in zip(paths, values)
  }


def mismatches(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
  """Key paths whose checksum differs (or is missing) between the two."""
  return sorted(
      path
      for path in set(expected) | set(actual)
      if expected.get(path) != actual.get(path)
  )
