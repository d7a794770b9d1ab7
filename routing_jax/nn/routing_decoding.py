# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""The decode side of `RoutingAttention`: its caches, one-token steps and
prefill.

Causal routing keeps, per head and cluster, a ring of the last w members
(key, value, position, is-key flag), so one decode step reads w entries and
reproduces the teacher-forced outputs; top-k routing keeps every key and
re-selects among them at each step, as the reference's fast decode does.
The methods are mixed into `RoutingAttention` and read its fields.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from routing_jax.nn import attention_core as core
from routing_jax.nn import kmeans as km
from routing_jax.nn import routing_core


class RoutingDecoding:
  """Decode caches and steps of `RoutingAttention` (a mixin: it uses the
  module's `config`, heads, dtype and `_attend` / `_rotate`)."""

  def _poison_while_warming_up(self, kmeans, o):
    """NaN outputs when decoding a model still in its dense warm-up.

    The per-cluster decode cache cannot reproduce the warm-up's dense
    attention. `generation` refuses such a model on the host; inside jit the
    count is traced and only the outputs can say so, as NaN logits rather
    than plausible wrong ones.
    """
    if not self.config.warmup_steps:
      return o
    if self.warming_up:
      raise ValueError(
          "cannot decode with warming_up=True: the dense warm-up has no "
          "per-cluster decode cache"
      )
    if self.warming_up is False or self.is_initializing():
      return o
    warm = nn.unbox(kmeans.num_updates.value)[0] < self.config.warmup_steps
    return jnp.where(warm, jnp.nan, o).astype(o.dtype)

  def _ring_size(self) -> int:
    # With exclude_self the window is the w members before the query, so
    # the ring also holds the query's own (invisible) membership.
    return self.config.window + int(self.config.exclude_self)

  def _cache(self, b: int):
    """The decode cache variables for batch b (created on first use)."""
    h, d, c = self.num_heads, self.head_dim, self.config.num_clusters
    var = lambda name, shape, dtype, fill: self.variable(
        "cache", name, lambda: jnp.full(shape, fill, dtype)
    )
    if self.config.mode == "causal":
      s = self._ring_size()
      return dict(
          key=var("ring_key", (b, h, c, s, d), self.dtype, 0),
          value=var("ring_value", (b, h, c, s, d), self.dtype, 0),
          member=var("ring_member", (b, h, c, s), jnp.int32, -1),
          is_key=var("ring_is_key", (b, h, c, s), jnp.bool_, False),
          count=var("cluster_count", (b, h, c), jnp.int32, 0),
      )
    length = self.max_decode_length
    if length < self.config.window:
      raise ValueError(
          "topk decoding needs max_decode_length >= window, got "
          f"max_decode_length={length}, window={self.config.window}"
      )
    full = lambda name, dtype: var(name, (b, length, h, d), dtype, 0)
    cache = dict(
        query=full("cached_query", jnp.float32),
        value=full("cached_value", self.dtype),
    )
    cache["key"] = (
        cache["query"]
        if self.config.share_qk
        else full("cached_key", jnp.float32)
    )
    return cache

  def _decode(self, kmeans, qn, kn, v, rel, positions):
    """One token: qn, kn, v [batch, 1, heads, d]; positions [batch]."""
    b = qn.shape[0]
    if qn.shape[1] != 1:
      raise ValueError(
          f"decode takes one token per call, got length {qn.shape[1]}"
      )
    cache = self._cache(b)
    if self.is_initializing():
      kmeans.current()  # creates the centroid variables during init
      return jnp.zeros_like(qn)
    if positions is None:
      raise ValueError("decode=True needs positions [batch]")
    t = positions.astype(jnp.int32)
    mu = kmeans.current()
    key_cluster = km.assign(kn, mu)[:, :, 0]  # [b, h]
    query_cluster = (
        key_cluster if self.config.share_qk else km.assign(qn, mu)[:, :, 0]
    )
    qr, kr = self._rotate(qn, kn, t[:, None])
    if self.config.mode == "causal":
      return self._causal_step(
          cache, qr, kr, v, key_cluster, query_cluster, rel
      )
    return self._topk_step(cache, qn, kn, v, rel, mu, t)

  def _causal_step(self, cache, q, k, v, key_cluster, query_cluster, rel):
    """Writes the token's memberships, then attends over its query ring."""
    b, _, h, _ = q.shape
    size = self._ring_size()
    bi, hi = jnp.arange(b)[:, None], jnp.arange(h)[None, :]

    def join(cluster, key, value, is_key, active):
      """Appends one member to ring `cluster` of every (row, head)."""
      count = cache["count"].value[bi, hi, cluster]
      at = (bi, hi, cluster, count % size)
      keep = lambda new, old: jnp.where(
          active.reshape(active.shape + (1,) * (new.ndim - 2)), new, old
      )
      for name, new in (
          ("key", key),
          ("value", value),
          ("member", count),
          ("is_key", is_key),
      ):
        var = cache[name]
        var.value = var.value.at[at].set(
            keep(new.astype(var.value.dtype), var.value[at])
        )
      cache["count"].value = (
          cache["count"].value.at[bi, hi, cluster].add(active.astype(jnp.int32))
      )

    always = jnp.ones((b, h), bool)
    join(key_cluster, k[:, 0], v[:, 0], always, always)
    if not self.config.share_qk:
      # A query in another cluster than its key joins that cluster too.
      join(
          query_cluster,
          jnp.zeros_like(k[:, 0]),
          jnp.zeros_like(v[:, 0]),
          ~always,
          query_cluster != key_cluster,
      )
    ring = lambda name: cache[name].value[bi, hi, query_cluster]
    member = ring("member")  # [b, h, size]
    mine = cache["count"].value[bi, hi, query_cluster] - 1  # [b, h]
    back = mine[..., None] - member
    if self.config.exclude_self:
      band = (back >= 1) & (back <= self.config.window)
    else:
      band = (back >= 0) & (back < self.config.window)
    allowed = (member >= 0) & ring("is_key") & band
    rel_k = rel_v = None
    if rel is not None:
      idx = core.relative_index(-back, self.max_relative_position)
      rel_k, rel_v = (t[idx][:, :, None, None] for t in rel)
    o = core.blocked_attention(
        jnp.swapaxes(q, 1, 2)[:, :, None],
        ring("key")[:, :, None],
        ring("value")[:, :, None],
        allowed[:, :, None, None, :],
        rel_k=rel_k,
        rel_v=rel_v,
        logit_scale=self.config.logit_scale,
        dtype=self.dtype,
    )  # [b, h, 1, 1, d]
    o = o * jnp.any(allowed, -1)[:, :, None, None, None].astype(o.dtype)
    return jnp.swapaxes(o[:, :, 0], 1, 2)  # [b, 1, h, d]

  def _topk_step(self, cache, qn, kn, v, rel, mu, t):
    """The reference's fast decode: re-select among positions <= t."""
    rows = jnp.arange(qn.shape[0])
    for name, new in (("query", qn), ("key", kn), ("value", v)):
      if name == "key" and self.config.share_qk:
        continue
      var = cache[name]
      var.value = var.value.at[rows, t].set(new[:, 0].astype(var.value.dtype))
    return self._topk_read(
        *(cache[name].value for name in ("query", "key", "value")), rel, mu, t
    )

  def _topk_read(self, q, k, v, rel, mu, t):
    """Output at positions t [batch] of top-k routing over the cache <= t.

    q, k, v: the cached [batch, max_decode_length, heads, d] arrays.
    """
    length = q.shape[1]
    written = jnp.arange(length)[None] <= t[:, None]  # [b, length]
    qs = km.scores(q, mu)
    ks = qs if self.config.share_qk else km.scores(k, mu)
    qr, kr = self._rotate(q, k, jnp.arange(length)[None])
    o, _ = routing_core.topk_routing_attention(
        qr,
        kr,
        v,
        qs,
        ks,
        written,
        window=self.config.window,
        causal=self.causal,
        rel=rel,
        max_relative_position=self.max_relative_position,
        logit_scale=self.config.logit_scale,
        dtype=self.dtype,
    )
    return o[jnp.arange(o.shape[0]), t][:, None]  # [b, 1, h, d]

  def _prefill(self, kmeans, qn, kn, v, rel):
    """A whole prompt at once; leaves the cache as token-by-token decoding."""
    b, n = qn.shape[:2]
    cache = self._cache(b)
    if self.is_initializing():
      kmeans.current()
      return jnp.zeros_like(qn), {"loss": jnp.zeros((), jnp.float32)}
    if self.config.mode == "causal":
      o, aux = self._attend(kmeans, qn, kn, v, rel, None, train=False)
      mu = kmeans.current()
      key_cluster = km.assign(kn, mu)
      query_cluster = None if self.config.share_qk else km.assign(qn, mu)
      _, kr = self._rotate(qn, kn, jnp.arange(n)[None])
      state = routing_core.fill_rings(
          kr,
          v,
          key_cluster,
          query_cluster,
          num_clusters=self.config.num_clusters,
          size=self._ring_size(),
      )
      for name, value in state.items():
        cache[name].value = value.astype(cache[name].value.dtype)
      return o, aux
    # topk: decoding re-selects among the positions so far at every step,
    # which no parallel pass reproduces; write the prompt, then read each
    # position's output as its decode step would (O(n) reads of the cache).
    if n > self.max_decode_length:
      raise ValueError(
          f"prefill of {n} positions exceeds max_decode_length="
          f"{self.max_decode_length}"
      )
    pad = lambda a: jnp.pad(
        a, ((0, 0), (0, self.max_decode_length - n), (0, 0), (0, 0))
    )
    for name, new in (("query", qn), ("key", kn), ("value", v)):
      if name == "key" and self.config.share_qk:
        continue
      cache[name].value = pad(new).astype(cache[name].value.dtype)
    mu = kmeans.current()
    arrays = tuple(cache[name].value for name in ("query", "key", "value"))
    o = jax.lax.map(
        lambda t: self._topk_read(*arrays, rel, mu, jnp.full((b,), t))[:, 0],
        jnp.arange(n),
    )  # [n, b, h, d]
    return jnp.swapaxes(o, 0, 1), {"loss": jnp.zeros((), jnp.float32)}
