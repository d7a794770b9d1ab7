# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Attention arithmetic shared by local and routing attention.

Everything here is pure jax: masked softmax attention over blocks, rotary
embeddings, Shaw relative-position tables and the Q/K/V projections with
logical axis names. Block layouts are [batch, heads, blocks, slots, head_dim].
"""

from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from routing_jax.common_types import Array, DType
from routing_jax.nn import layers
from routing_jax.nn.modes import ATTENTION_POSITIONS

# Finite, so fully masked rows (padding queries) give uniform weights instead
# of NaNs; their outputs are zeroed by the callers.
MASK_VALUE = -1e9


def default_kernel_init(
    scale: float = 0.2, mode: str = "fan_avg"
) -> Callable[..., Array]:
  """Uniform variance scaling; the defaults are the reference's
  uniform_unit_scaling (fan_avg, gain 0.2)."""
  return nn.initializers.variance_scaling(scale, mode, "uniform")


def head_projection(
    features: int,
    axes: tuple[str, str],
    dtype: DType,
    param_dtype: DType,
    kernel_init: Callable[..., Array],
    name: str,
    use_bias: bool = False,
) -> nn.Dense:
  """A bias-free dense layer with logical axis names on its kernel.

  A 2-D kernel reshaped by the caller, rather than DenseGeneral with tuple
  features: under jax.set_mesh the latter breaks logical partitioning on
  flax 0.12.
  """
  return layers.dense(
      features,
      axes,
      use_bias=use_bias,
      kernel_init=kernel_init,
      dtype=dtype,
      param_dtype=param_dtype,
      name=name,
  )


def rope(x: Array, positions: Array, base: float = 10000.0) -> Array:
  """Rotary position embedding over the last axis (even head_dim).

  Args:
    x: [..., length, heads, head_dim].
    positions: integer positions broadcastable to [..., length].

  Returns:
    x rotated, same shape and dtype.
  """
  d = x.shape[-1]
  if d % 2:
    raise ValueError(f"RoPE needs an even head_dim, got {d}")
  inv = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
  ang = positions.astype(jnp.float32)[..., None] * inv  # [..., length, d/2]
  sin, cos = jnp.sin(ang)[..., None, :], jnp.cos(ang)[..., None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = xf[..., 0::2], xf[..., 1::2]
  out = jnp.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def relative_index(offsets: Array, max_distance: int) -> Array:
  """Table row of a key−query offset, clipped to ±max_distance."""
  return jnp.clip(offsets, -max_distance, max_distance) + max_distance


def blocked_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Array,
    *,
    rel_k: Optional[Array] = None,
    rel_v: Optional[Array] = None,
    logit_scale: float = 1.0,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    dropout_keep: Optional[Array] = None,
    dtype: DType = jnp.float32,
) -> Array:
  """Softmax attention of query blocks over their key blocks.

  Args:
    q: [batch, heads, blocks, i, d].
    k, v: [batch, heads, blocks, j, d].
    mask: bool, broadcastable to [batch, heads, blocks, i, j].
    rel_k, rel_v: optional Shaw tables already gathered per (i, j):
      [i, j, d] (the same offsets in every block), or per block and row,
      broadcastable to [batch, heads, blocks, i, j, d] (decoding).
    logit_scale: multiplies the logits.
    dropout_rate, dropout_rng: attention dropout on the weights.
    dropout_keep: optional precomputed keep mask (bool, the logits' shape)
      used instead of drawing one from dropout_rng; callers whose block
      layout depends on the data pass one drawn in a data-independent
      layout, so that the noise a query sees does not depend on the future.
    dtype: matmul dtype; logits and softmax are float32.

  Returns:
    [batch, heads, blocks, i, d] in `dtype`.
  """
  q_cast, k_cast = q.astype(dtype), k.astype(dtype)
  logits = jnp.einsum(
      "bhnid,bhnjd->bhnij", q_cast, k_cast, preferred_element_type=jnp.float32
  )
  if rel_k is not None:
    # Shaw terms in float32: XLA:CPU has no bf16 x bf16 -> f32 kernel for
    # the probs-by-table contraction, and the tables are small.
    logits += _relative_logits(q, rel_k)
  logits = jnp.where(mask, logits * logit_scale, MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1)
  if dropout_rate > 0.0 and dropout_keep is None and dropout_rng is not None:
    dropout_keep = jax.random.bernoulli(
        dropout_rng, 1.0 - dropout_rate, probs.shape
    )
  if dropout_rate > 0.0 and dropout_keep is not None:
    probs = jnp.where(dropout_keep, probs / (1.0 - dropout_rate), 0.0)
  probs = probs.astype(dtype)
  out = jnp.einsum(
      "bhnij,bhnjd->bhnid",
      probs,
      v.astype(dtype),
      preferred_element_type=jnp.float32,
  )
  if rel_v is not None:
    out += _relative_values(probs, rel_v)
  return out.astype(dtype)


def _relative_logits(q: Array, rel_k: Array) -> Array:
  q = q.astype(jnp.float32)
  rel_k = rel_k.astype(jnp.float32)
  if rel_k.ndim == 3:
    return jnp.einsum("bhnid,ijd->bhnij", q, rel_k)
  return jnp.sum(q[..., :, None, :] * rel_k, axis=-1)


def _relative_values(probs: Array, rel_v: Array) -> Array:
  probs = probs.astype(jnp.float32)
  rel_v = rel_v.astype(jnp.float32)
  if rel_v.ndim == 3:
    return jnp.einsum("bhnij,ijd->bhnid", probs, rel_v)
  return jnp.sum(probs[..., None] * rel_v, axis=-2)


# Attention activations [batch, length, heads, head_dim]: heads follow the
# "tensor" mesh axis like the projection kernels, so that XLA keeps each
# head's attention on the devices holding its weights instead of choosing
# a layout that needs all-gathers (a no-op without logical axis rules).
HEAD_ACTIVATION_AXES = (
    "activation_batch",
    "activation_length",
    "activation_heads",
    "activation_kv",
)


def split_heads(x: Array, num_heads: int) -> Array:
  """[batch, length, heads·d] -> [batch, length, heads, d], constrained to
  HEAD_ACTIVATION_AXES."""
  y = x.reshape(x.shape[:-1] + (num_heads, x.shape[-1] // num_heads))
  return nn.with_logical_constraint(y, HEAD_ACTIVATION_AXES)


def check_input(x: Array, name: str = "x") -> None:
  if x.ndim != 3:
    raise ValueError(
        f"{name} must have rank 3 [batch, length, features], got shape "
        f"{x.shape}"
    )


def check_head_options(
    position: str, max_relative_position: int, attention_dropout: float
) -> None:
  """The options local and routing heads share, checked alike."""
  if position not in ATTENTION_POSITIONS:
    raise ValueError(
        f"position must be one of {ATTENTION_POSITIONS}, got {position!r}"
    )
  if position == "relative" and max_relative_position < 1:
    raise ValueError(
        f"max_relative_position must be >= 1, got {max_relative_position}"
    )
  if not 0.0 <= attention_dropout < 1.0:
    raise ValueError(
        f"attention_dropout must be in [0, 1), got {attention_dropout}"
    )


def check_mask(mask: Optional[Array], x: Array) -> None:
  if mask is not None and mask.shape != x.shape[:2]:
    raise ValueError(
        f"mask must have shape [batch, length] = {x.shape[:2]}, got "
        f"{mask.shape}"
    )
