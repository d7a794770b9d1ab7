# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Blocked local attention (docs/paper.md §2): query blocks with a memory flange.

The sequence is cut into query blocks of q positions. Causal: block i sees
the m positions before it and itself causally, so a query at position t sees
[⌊t/q⌋·q − m, t]. Bidirectional: block i sees m positions before and m after
it. Cost O(n·(q+m)·d), memory O(n·(q+m)) per head.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import attention_core as core


class LocalAttention(nn.Module):
  """Local (sliding-block) multi-head attention with its own projections.

  Attributes:
    num_heads: number of heads h.
    head_dim: per-head depth d.
    query_block: query block q.
    memory_flange: memory flange m (a multiple of q, or 0).
    causal: decoder (causal) or encoder (bidirectional) masking.
    position: "none", "relative" (Shaw, the paper's `local_relative`) or
      "rope".
    max_relative_position: Shaw offsets are clipped to ±this.
    attention_dropout: dropout on the attention weights (train only).
    rope_base: RoPE frequency base.
    dtype: activation / matmul dtype; softmax is float32.
    param_dtype: parameter dtype.
    kernel_init: projection initialiser (the reference's gain 0.2 uniform).
  """

  num_heads: int
  head_dim: int
  query_block: int = 256
  memory_flange: int = 256
  causal: bool = True
  position: str = "none"
  max_relative_position: int = 513
  attention_dropout: float = 0.0
  rope_base: float = 10000.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable[..., Array] = core.default_kernel_init()

  def validate(self):
    if self.num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {self.num_heads}")
    if self.head_dim < 1:
      raise ValueError(f"head_dim must be >= 1, got {self.head_dim}")
    if self.query_block < 1:
      raise ValueError(f"query_block must be >= 1, got {self.query_block}")
    if self.memory_flange < 0 or self.memory_flange % self.query_block:
      raise ValueError(
          "memory_flange must be a non-negative multiple of query_block, got "
          f"memory_flange={self.memory_flange}, query_block={self.query_block}"
      )
    core.check_head_options(
        self.position, self.max_relative_position, self.attention_dropout
    )

  def _relative_tables(self):
    rows = 2 * self.max_relative_position + 1
    init = nn.with_logical_partitioning(
        nn.initializers.normal(self.head_dim**-0.5), ("relpos", "kv")
    )
    return (
        self.param("rel_key", init, (rows, self.head_dim), self.param_dtype),
        self.param("rel_value", init, (rows, self.head_dim), self.param_dtype),
    )

  def _project(self, x):
    h, d = self.num_heads, self.head_dim
    proj = lambda name: core.head_projection(
        h * d,
        ("embed", "heads"),
        self.dtype,
        self.param_dtype,
        self.kernel_init,
        name,
    )
    q = core.split_heads(proj("query")(x), h) * (d**-0.5)
    k = core.split_heads(proj("key")(x), h)
    v = core.split_heads(proj("value")(x), h)
    return q, k, v

  def _output(self, o, features):
    """[batch, length, heads, d] -> [batch, length, features]."""
    b, n = o.shape[:2]
    return core.head_projection(
        features,
        ("heads", "embed"),
        self.dtype,
        self.param_dtype,
        self.kernel_init,
        "out",
    )(o.reshape(b, n, -1))

  @nn.compact
  def __call__(
      self,
      x: Array,
      mask: Optional[Array] = None,
      train: bool = False,
      decode: bool = False,
      positions: Optional[Array] = None,
      prefill: bool = False,
  ) -> Array:
    """Attends locally.

    Args:
      x: [batch, length, features].
      mask: optional [batch, length] bool, False at padding (padding keys are
        never attended; padding queries get zero output).
      train: enables attention dropout.
      decode: one cached step (length 1) using the "cache" collection (see
        `_decode`).
      positions: only for decode: [batch] int32 position of the new token.
      prefill: a whole unpadded prompt (positions 0 .. length−1) at once,
        filling a fresh "cache" collection for decoding to continue.

    Returns:
      [batch, length, features].
    """
    self.validate()
    core.check_input(x)
    core.check_mask(mask, x)
    q, k, v = self._project(x)
    rel = self._relative_tables() if self.position == "relative" else None
    if decode and prefill:
      raise ValueError("decode and prefill exclude each other")
    if decode:
      o = self._decode(q, k, v, rel, positions)
      return self._output(o, x.shape[-1])
    b, n = x.shape[:2]
    if self.position == "rope":
      pos = jnp.arange(n)[None]
      q, k = (core.rope(t, pos, self.rope_base) for t in (q, k))
    if prefill:
      if mask is not None:
        raise ValueError("prefill takes an unpadded prompt (mask=None)")
      self._fill_cache(k, v)
    rng = (
        self.make_rng("dropout")
        if train and self.attention_dropout > 0
        else None
    )
    o = local_attention(
        q,
        k,
        v,
        mask,
        query_block=self.query_block,
        memory_flange=self.memory_flange,
        causal=self.causal,
        rel=rel,
        max_relative_position=self.max_relative_position,
        dropout_rate=self.attention_dropout if train else 0.0,
        dropout_rng=rng,
        dtype=self.dtype,
    )
    return self._output(o, x.shape[-1])

  def _cache(self, b: int, h: int, d: int):
    """The ring of the last q+m keys, values and their positions."""
    size = self.query_block + self.memory_flange
    zeros = lambda: jnp.zeros((b, size, h, d), self.dtype)
    return (
        self.variable("cache", "cached_key", zeros),
        self.variable("cache", "cached_value", zeros),
        self.variable(
            "cache",
            "cached_position",
            lambda: jnp.full((b, size), -1, jnp.int32),
        ),
    )

  def _fill_cache(self, k, v):
    """The ring after positions 0 .. n−1: the last q+m of them."""
    if not self.causal:
      raise ValueError("prefill needs causal=True")
    b, n, h, d = k.shape
    key_cache, value_cache, position_cache = self._cache(b, h, d)
    if self.is_initializing():
      return
    size = self.query_block + self.memory_flange
    pos = jnp.arange(n)
    # Positions older than the ring go to an out-of-range slot (dropped).
    slot = jnp.where(pos >= n - size, pos % size, size)
    key_cache.value = (
        jnp.zeros_like(key_cache.value)
        .at[:, slot]
        .set(k.astype(self.dtype), mode="drop")
    )
    value_cache.value = (
        jnp.zeros_like(value_cache.value)
        .at[:, slot]
        .set(v.astype(self.dtype), mode="drop")
    )
    position_cache.value = (
        jnp.full_like(position_cache.value, -1)
        .at[:, slot]
        .set(jnp.broadcast_to(pos, (b, n)), mode="drop")
    )

  def _decode(self, q, k, v, rel, positions):
    """One token per call: a ring buffer of the last q+m keys and values.

    The query at position t sees keys at [⌊t/q⌋·q − m, t], at most q+m of
    them, so a ring of q+m slots indexed by position mod (q+m) holds exactly
    what training would show it. Memory and time per token do not depend on
    how much has been generated.
    """
    if not self.causal:
      raise ValueError("decode=True needs causal=True")
    if q.shape[1] != 1:
      raise ValueError(
          f"decode takes one token per call, got length {q.shape[1]}"
      )
    b, _, h, d = q.shape
    size = self.query_block + self.memory_flange
    key_cache, value_cache, position_cache = self._cache(b, h, d)
    if self.is_initializing():
      return jnp.zeros_like(q)
    if positions is None:
      raise ValueError("decode=True needs positions [batch]")
    t = positions.astype(jnp.int32)
    if self.position == "rope":
      q = core.rope(q, t[:, None], self.rope_base)
      k = core.rope(k, t[:, None], self.rope_base)
    slot = t % size
    rows = jnp.arange(b)
    key_cache.value = key_cache.value.at[rows, slot].set(
        k[:, 0].astype(self.dtype)
    )
    value_cache.value = value_cache.value.at[rows, slot].set(
        v[:, 0].astype(self.dtype)
    )
    position_cache.value = position_cache.value.at[rows, slot].set(t)
    key_pos = position_cache.value  # [b, size]
    start = (t // self.query_block) * self.query_block - self.memory_flange
    valid = (
        (key_pos >= 0) & (key_pos <= t[:, None]) & (key_pos >= start[:, None])
    )
    # Blocks of one query: [b, h, 1, 1, d] against [b, h, 1, size, d].
    to_block = lambda a: jnp.swapaxes(a, 1, 2)[:, :, None]
    rel_k = rel_v = None
    if rel is not None:
      idx = core.relative_index(
          key_pos - t[:, None], self.max_relative_position
      )
      # Per-row tables [b, 1, 1, 1, size, d].
      rel_k, rel_v = (table[idx][:, None, None, None] for table in rel)
    o = core.blocked_attention(
        to_block(q),
        to_block(key_cache.value),
        to_block(value_cache.value),
        valid[:, None, None, None, :],
        rel_k=rel_k,
        rel_v=rel_v,
        dtype=self.dtype,
    )
    return jnp.swapaxes(o[:, :, 0], 1, 2)  # [b, 1, h, d]


def local_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: Optional[Array] = None,
    *,
    query_block: int,
    memory_flange: int,
    causal: bool = True,
    rel: Optional[tuple[Array, Array]] = None,
    max_relative_position: int = 0,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    dtype: Any = jnp.float32,
) -> Array:
  """The blocked local attention core, without projections.

  Args:
    q, k, v: [batch, length, heads, head_dim] (q already scaled).
    mask: optional [batch, length] bool, False at padding.
    query_block, memory_flange: q and m (m a multiple of q).
    causal: causal or bidirectional.
    rel: optional Shaw (key, value) tables [2R+1, d], R=max_relative_position.
    dropout_rate, dropout_rng: attention dropout.
    dtype: matmul dtype.

  Returns:
    [batch, length, heads, head_dim]; zero at padding queries.
  """
  b, n, h, d = q.shape
  qb, m = query_block, memory_flange
  nb = -(-n // qb)
  pad = nb * qb - n
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  valid = jnp.pad(valid, ((0, 0), (0, pad)))
  to_blocks = lambda a: jnp.swapaxes(
      jnp.pad(a, ((0, 0), (0, pad), (0, 0), (0, 0))), 1, 2
  ).reshape(b, h, nb, qb, d)
  qblk = to_blocks(q)
  r = m // qb
  after = 0 if causal else r  # memory blocks after the query block
  span = r + 1 + after

  def windows(a, fill):
    """[b, nb, qb, ...] -> [b, nb, span·qb, ...]: the keys of each block."""
    widths = [(0, 0), (r, after)] + [(0, 0)] * (a.ndim - 2)
    a = jnp.pad(a, widths, constant_values=fill)
    parts = [a[:, j : j + nb] for j in range(span)]
    return jnp.concatenate(parts, axis=2)

  kblk = windows(to_blocks(k).transpose(0, 2, 3, 1, 4), 0)  # [b,nb,J,h,d]
  vblk = windows(to_blocks(v).transpose(0, 2, 3, 1, 4), 0)
  kblk = kblk.transpose(0, 3, 1, 2, 4)  # [b, h, nb, J, d]
  vblk = vblk.transpose(0, 3, 1, 2, 4)
  kvalid = windows(valid.reshape(b, nb, qb), False)  # [b, nb, J]
  qvalid = valid.reshape(b, nb, qb)
  # Offsets key - query are the same in every block: j - m - i.
  offs = jnp.arange(span * qb)[None, :] - m - jnp.arange(qb)[:, None]
  allowed = jnp.ones_like(offs, bool) if not causal else offs <= 0
  msk = kvalid[:, None, :, None, :] & allowed
  rel_k = rel_v = None
  if rel is not None:
    idx = core.relative_index(offs, max_relative_position)
    rel_k, rel_v = rel[0][idx], rel[1][idx]
  o = core.blocked_attention(
      qblk,
      kblk,
      vblk,
      msk,
      rel_k=rel_k,
      rel_v=rel_v,
      dropout_rate=dropout_rate,
      dropout_rng=dropout_rng,
      dtype=dtype,
  )
  o = o * qvalid[:, None, :, :, None].astype(o.dtype)
  o = o.reshape(b, h, nb * qb, d)[:, :, :n]
  return jnp.swapaxes(o, 1, 2)
