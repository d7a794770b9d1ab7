"""Cached one-token decoding for RoutingAttention (the "cache" collection).

causal routing (design.md §2.4): per head and cluster a ring buffer of the
last w keys, values and positions. A new token computes its cluster from the
current centroids, writes itself into that cluster's ring and attends over
it: exactly the visible set of training (the w most recent same-cluster
tokens up to itself), in O(w·d) time and memory per token whatever the
context length.

topk routing decodes as the reference's fast decode (reference §4.2): a
full-length cache of normalised q/k and v; each step recomputes the balanced
top-w selection over the positions written so far and reads the output at
the step. Teacher-forced training instead selected among the *whole*
sequence, future included, so decoding does not reproduce training logits in
this mode: that mismatch is the reference's and is documented, not fixed.
"""

import jax
import jax.numpy as jnp

from routing_jax import attention_core as core
from routing_jax import routing_attention as ra


def decode_step(module, kmeans, qn, kn, v, positions):
  """One token. qn, kn, v: [batch, 1, heads, d]; positions: [batch]."""
  if qn.shape[1] != 1:
    raise ValueError(
        f"decode takes one token per call, got length {qn.shape[1]}")
  if module.mode == "causal":
    return _causal_step(module, kmeans, qn, kn, v, positions)
  return _topk_step(module, kmeans, qn, kn, v, positions)


def _causal_step(module, kmeans, qn, kn, v, positions):
  b, _, h, d = qn.shape
  c, w = module.num_clusters, module.window
  cache = lambda name, shape, dtype, fill: module.variable(
      "cache", name, lambda: jnp.full(shape, fill, dtype))
  keys = cache("ring_key", (b, h, c, w, d), module.dtype, 0)
  values = cache("ring_value", (b, h, c, w, d), module.dtype, 0)
  pos = cache("ring_position", (b, h, c, w), jnp.int32, -1)
  count = cache("cluster_count", (b, h, c), jnp.int32, 0)
  if module.is_initializing():
    kmeans.current()  # creates the centroid variables during init
    return jnp.zeros_like(qn)
  if positions is None:
    raise ValueError("decode=True needs positions [batch]")
  t = positions.astype(jnp.int32)
  cluster = jnp.argmax(
      jnp.einsum("bhd,hkd->bhk", kn[:, 0].astype(jnp.float32),
                 kmeans.current(), precision=jax.lax.Precision.HIGHEST),
      axis=-1)  # [b, h]
  q, k = qn, kn
  if module.position == "rope":
    q = core.rope(qn, t[:, None], module.rope_base)
    k = core.rope(kn, t[:, None], module.rope_base)
  bi, hi = jnp.arange(b)[:, None], jnp.arange(h)[None, :]
  slot = count.value[bi, hi, cluster] % w
  at = (bi, hi, cluster, slot)
  keys.value = keys.value.at[at].set(k[:, 0].astype(module.dtype))
  values.value = values.value.at[at].set(v[:, 0].astype(module.dtype))
  pos.value = pos.value.at[at].set(jnp.broadcast_to(t[:, None], (b, h)))
  count.value = count.value.at[bi, hi, cluster].add(1)
  ring_k = keys.value[bi, hi, cluster]  # [b, h, w, d]
  ring_v = values.value[bi, hi, cluster]
  valid = pos.value[bi, hi, cluster] >= 0  # [b, h, w]
  o = core.blocked_attention(
      q.transpose(0, 2, 1, 3)[:, :, None], ring_k[:, :, None],
      ring_v[:, :, None], valid[:, :, None, None, :],
      logit_scale=module.logit_scale, dtype=module.dtype)
  return o[:, :, 0].transpose(0, 2, 1, 3)  # [b, 1, h, d]


def _topk_step(module, kmeans, qn, kn, v, positions):
  b, _, h, d = qn.shape
  length = module.max_decode_length
  if length < module.window:
    raise ValueError(
        "topk decoding needs max_decode_length >= window, got "
        f"max_decode_length={length}, window={module.window}")
  cache = lambda name, dtype: module.variable(
      "cache", name, lambda: jnp.zeros((b, length, h, d), dtype))
  qc = cache("cached_query", jnp.float32)
  kc = qc if module.share_qk else cache("cached_key", jnp.float32)
  vc = cache("cached_value", module.dtype)
  if module.is_initializing():
    kmeans.current()
    return jnp.zeros_like(qn)
  if positions is None:
    raise ValueError("decode=True needs positions [batch]")
  t = positions.astype(jnp.int32)
  rows = jnp.arange(b)
  qc.value = qc.value.at[rows, t].set(qn[:, 0])
  if not module.share_qk:
    kc.value = kc.value.at[rows, t].set(kn[:, 0])
  vc.value = vc.value.at[rows, t].set(v[:, 0].astype(module.dtype))
  written = jnp.arange(length)[None] <= t[:, None]  # [b, length]
  mu = kmeans.current()
  qs = jnp.einsum("bnhd,hkd->bhnk", qc.value, mu,
                  precision=jax.lax.Precision.HIGHEST)
  ks = qs if module.share_qk else jnp.einsum(
      "bnhd,hkd->bhnk", kc.value, mu, precision=jax.lax.Precision.HIGHEST)
  q, k = qc.value, kc.value
  if module.position == "rope":
    p = jnp.arange(length)[None]
    q, k = core.rope(q, p, module.rope_base), core.rope(k, p, module.rope_base)
  o, _ = ra.topk_routing_attention(
      q, k, vc.value, qs, ks, written, window=module.window,
      causal=module.causal, logit_scale=module.logit_scale,
      dtype=module.dtype)
  return o[rows, t][:, None]  # [b, 1, h, d]
