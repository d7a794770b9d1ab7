# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Token cross-entropy, whole or in sequence chunks.

The chunked form never holds a [batch, length, vocab] logits array: a scan
over chunks of `chunk_len` positions applies the output projection, the
log-softmax and the NLL per chunk, under `jax.checkpoint`, so the backward
pass recomputes one chunk's logits at a time. Wikitext-103's float32 logits
would take 4.4 GB per 4096-token sequence; a 512-position chunk takes
0.55 GB. Padded vocabulary entries are masked out of the softmax.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from routing_jax.common_types import Array


def cross_entropy(
    logits: Array,
    targets: Array,
    weights: Array,
    vocab_size: Optional[int] = None,
) -> tuple[Array, Array]:
  """(sum of weighted token losses in nats, sum of weights).

  logits: [..., V] with V >= vocab_size; entries from vocab_size on are
  padding and get zero probability.
  """
  logits = logits.astype(jnp.float32)
  if vocab_size is not None and vocab_size < logits.shape[-1]:
    real = jnp.arange(logits.shape[-1]) < vocab_size
    logits = jnp.where(real, logits, -jnp.inf)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * weights), jnp.sum(weights)


def chunked_cross_entropy(
    project: Callable[[Array], Array],
    hidden: Array,
    targets: Array,
    weights: Array,
    *,
    vocab_size: int,
    chunk_len: int,
) -> tuple[Array, Array]:
  """`cross_entropy(project(hidden), ...)` without materialising all logits.

  Args:
    project: hidden [batch, chunk, E] -> logits [batch, chunk, V] float32.
    hidden: [batch, length, E].
    targets: [batch, length] int.
    weights: [batch, length] loss weights.
    vocab_size: entries of V from here on are padding.
    chunk_len: positions per chunk; 0 or >= length: one chunk. A length
      that is not a multiple is padded with zero-weight positions.

  Returns:
    (sum of weighted token losses in nats, sum of weights).
  """
  b, n = targets.shape
  c = n if chunk_len <= 0 else min(chunk_len, n)
  pad = -n % c
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
    weights = jnp.pad(weights, ((0, 0), (0, pad)))
  k = (n + pad) // c
  # [chunks, batch, c, ...]: the scan runs over the first axis.
  split = lambda a: jnp.swapaxes(a.reshape((b, k, c) + a.shape[2:]), 0, 1)

  @jax.checkpoint
  def chunk(h, t, w):
    return cross_entropy(project(h), t, w, vocab_size)

  def body(carry, xs):
    ce, w = chunk(*xs)
    return (carry[0] + ce, carry[1] + w), None

  zero = jnp.zeros((), jnp.float32)
  (ce, w), _ = jax.lax.scan(
      body,
      (zero, zero),
      (split(hidden), split(targets), split(weights.astype(jnp.float32))),
  )
  return ce, w
