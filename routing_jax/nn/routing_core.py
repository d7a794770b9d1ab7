# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Pure routing-attention cores: exactly-causal routing and balanced top-k.

No parameters and no Flax here: inputs are normalised queries and keys, values
and cluster ids (or centroid scores); outputs are attention results. The
module `routing_attention.RoutingAttention` owns the projections, the k-means
state and the decode caches and calls these. docs/causal_routing.md explains
the algorithms; shapes follow [batch, length, heads, head_dim].
"""

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from routing_jax.common_types import Array
from routing_jax.nn import attention_core as core


def take_along_length(a: Array, idx: Array) -> Array:
  """Gathers along axis 2: a [b, h, n, ...], idx [b, h, m] -> [b, h, m, ...]."""
  idx = idx.reshape(idx.shape + (1,) * (a.ndim - 3))
  return jnp.take_along_axis(a, idx, axis=2)


@jax.custom_vjp
def permute(a: Array, perm: Array, inverse: Array) -> Array:
  """a[:, :, perm] for a [b, h, N, ...]; its VJP gathers by `inverse`.

  The transpose of a gather is a scatter-add, which is slow on CPU; for a
  permutation it is simply the gather by the inverse permutation.
  """
  return take_along_length(a, perm)


def _permute_fwd(a, perm, inverse):
  return take_along_length(a, perm), (perm, inverse)


def _permute_bwd(res, g):
  perm, inverse = res
  return take_along_length(g, inverse), None, None


permute.defvjp(_permute_fwd, _permute_bwd)


def _inverse_permutation(perm: Array) -> Array:
  """inverse[perm[i]] = i along the last axis of [b, h, N]."""
  b, h, n = perm.shape
  rows = (jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None])
  pos = jnp.broadcast_to(jnp.arange(n, dtype=perm.dtype), perm.shape)
  return jnp.zeros_like(perm).at[rows + (perm,)].set(pos)


def query_block_size(window: int) -> int:
  """Queries per block in causal routing: w/2 (w when w is odd or 1).

  The w keys before a query then lie in its own block or the r = w / bq
  blocks before it, so each block attends to w + bq keys (1.5w).
  """
  return window // 2 if window % 2 == 0 and window > 1 else window


class RoutedEvents(NamedTuple):
  """Membership events stably sorted by cluster (causal routing).

  Attributes:
    perm: [b, h, npad] int32: the event held by each sorted slot. Event e is
      token e (shared routing) or, with separate query routing, token e // 2
      as key (e even) or as query only (e odd); events >= `events` pad.
    cluster: [b, h, npad] int32 cluster of each slot; padding tokens, unused
      query events and pad events hold the sentinel k and sort last.
    is_key: [b, h, npad] bool: the slot is a key membership of a real token.
    same: separate routing only: [b, h, n] bool, the token's query and key
      clusters agree (its output comes from the key event, else from the
      query event); None for shared routing.
    events: n, or 2n with separate query routing.
  """

  perm: Array
  cluster: Array
  is_key: Array
  same: Optional[Array]
  events: int


def sort_events(
    key_clusters: Array,
    mask: Optional[Array],
    query_clusters: Optional[Array],
    *,
    num_clusters: int,
    multiple: int,
) -> RoutedEvents:
  """Builds and sorts the membership events of causal routing.

  Args:
    key_clusters: [batch, heads, length] int32 in [0, num_clusters).
    mask: optional [batch, length] bool, False at padding.
    query_clusters: optional [batch, heads, length] (separate routing).
    num_clusters: k; the sentinel cluster is k.
    multiple: the events are padded to a multiple of this.

  Returns:
    The sorted events; npad = events rounded up to `multiple`.
  """
  b, h, n = key_clusters.shape
  separate = query_clusters is not None
  events = 2 * n if separate else n
  npad = -(-events // multiple) * multiple
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  vh = valid[:, None, :]  # [b, 1, n]
  sentinel = num_clusters  # sorts last, never a key
  key_cluster = jnp.where(vh, key_clusters.astype(jnp.int32), sentinel)
  same = None
  if separate:
    query_cluster = jnp.where(vh, query_clusters.astype(jnp.int32), sentinel)
    same = query_cluster == key_cluster  # one membership serves both roles
    # Events interleaved as (key event, query-only event) per token, so a
    # stable sort by cluster keeps position order inside every cluster.
    cluster = jnp.stack(
        [key_cluster, jnp.where(same, sentinel, query_cluster)], -1
    ).reshape(b, h, events)
    is_key_event = jnp.tile(jnp.array([True, False]), n)
  else:
    cluster = key_cluster
    is_key_event = jnp.ones((events,), bool)
  cluster = jnp.pad(
      cluster, ((0, 0), (0, 0), (0, npad - events)), constant_values=sentinel
  )
  is_key_event = jnp.pad(is_key_event, (0, npad - events))
  idx = jnp.broadcast_to(jnp.arange(npad, dtype=jnp.int32), cluster.shape)
  sorted_cluster, perm = jax.lax.sort(
      (cluster, idx), dimension=2, num_keys=1, is_stable=True
  )
  is_key = is_key_event[perm] & (sorted_cluster < sentinel)
  return RoutedEvents(perm, sorted_cluster, is_key, same, events)


def causal_routing_attention(
    q: Array,
    k: Array,
    v: Array,
    key_clusters: Array,
    mask: Optional[Array],
    *,
    num_clusters: int,
    window: int,
    query_clusters: Optional[Array] = None,
    exclude_self: bool = False,
    rel: Optional[tuple[Array, Array]] = None,
    max_relative_position: int = 0,
    logit_scale: float = 1.0,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    dtype: Any = jnp.float32,
) -> Array:
  """Exactly causal routing: attention among a cluster's recent members.

  Every token joins the cluster of its key (`key_clusters`) and, when
  queries are routed separately, the cluster of its query
  (`query_clusters`; one membership when the two agree). A cluster's members
  are kept in position order. The query of token t attends to the *keys*
  among the last `window` members of its query's cluster, up to and
  including t itself (with `exclude_self`, the `window` members before t).
  That set depends on tokens <= t only.

  Computed in O(n·w·d): member events are stably sorted by cluster, so each
  cluster's members are contiguous and in position order; the sorted order
  is cut into query blocks of w/2 and each block attends to its own slots
  and the w before it under a static band ∧ same-cluster ∧ is-a-key mask.
  A query with no visible key gets exactly 0.

  Args:
    q, k, v: [batch, length, heads, head_dim] (q, k normalised).
    key_clusters: [batch, heads, length] int32 in [0, num_clusters).
    mask: optional [batch, length] bool, False at padding.
    num_clusters: k.
    window: w, members per query's view.
    query_clusters: optional [batch, heads, length]: route queries by their
      own cluster (None: a token's query is in its key's cluster).
    exclude_self: a query never sees its own token's key.
    rel: optional Shaw tables (key, value) [2R+1, head_dim], indexed by the
      distance in members between key and query, clipped to ±R =
      max_relative_position.
    logit_scale, dropout_rate, dropout_rng, dtype: as `blocked_attention`.

  Returns:
    [batch, length, heads, head_dim]; zero at padding.
  """
  b, n, h, d = q.shape
  w = window
  bq = query_block_size(w)
  r = w // bq
  routed = sort_events(
      key_clusters, mask, query_clusters, num_clusters=num_clusters, multiple=bq
  )
  same, events = routed.same, routed.events
  separate = same is not None
  npad = routed.perm.shape[-1]
  nb = npad // bq
  perm, sorted_cluster, is_key = routed.perm, routed.cluster, routed.is_key
  inverse = _inverse_permutation(perm)
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  vh = valid[:, None, :]  # [b, 1, n]
  to_heads = lambda a: jnp.swapaxes(a, 1, 2)  # [b, n, h, d] -> [b, h, n, d]
  qh, kh, vhd = to_heads(q), to_heads(k), to_heads(v)
  if separate:
    repeat = lambda a: jnp.repeat(a, 2, axis=2)
    qh, kh, vhd = repeat(qh), repeat(kh), repeat(vhd)
  pad_len = lambda a: jnp.pad(a, ((0, 0), (0, 0), (0, npad - events), (0, 0)))
  to_blocks = lambda a: a.reshape(a.shape[:2] + (nb, bq) + a.shape[3:])
  qs, ks, vs = (
      to_blocks(permute(pad_len(a), perm, inverse)) for a in (qh, kh, vhd)
  )

  def with_previous(a, fill):
    """[b, h, nb, bq, ...] -> [b, h, nb, (r+1)·bq, ...]: r previous + own."""
    padded = jnp.pad(
        a,
        ((0, 0), (0, 0), (r, 0)) + ((0, 0),) * (a.ndim - 3),
        constant_values=fill,
    )
    return jnp.concatenate(
        [padded[:, :, j : j + nb] for j in range(r + 1)], axis=3
    )

  query_cluster = to_blocks(sorted_cluster)
  key_cluster = with_previous(query_cluster, -1)
  key_ok = with_previous(to_blocks(is_key), False)
  # Key slot j of query slot t is (t + w − j) members back (r·bq = w).
  slot = jnp.arange(bq)[:, None]
  key_slot = jnp.arange((r + 1) * bq)[None, :]
  back = slot + w - key_slot
  band = (back >= 1) & (back <= w) if exclude_self else (back >= 0) & (back < w)
  allowed = (
      (key_cluster[..., None, :] == query_cluster[..., :, None])
      & key_ok[..., None, :]
      & band
  )
  rel_k = rel_v = None
  if rel is not None:
    offsets = core.relative_index(-back, max_relative_position)
    rel_k, rel_v = rel[0][offsets], rel[1][offsets]
  keep = None
  if dropout_rate > 0.0 and dropout_rng is not None:
    # Draw the dropout bits per (query event, members back) in event order,
    # then sort them with the queries: the noise a query sees does not
    # depend on how later tokens shift the blocks.
    bits = jax.random.bernoulli(
        dropout_rng, 1.0 - dropout_rate, (b, h, npad, w + 1)
    )
    bits = to_blocks(take_along_length(bits, perm))  # [b, h, nb, bq, w+1]
    back_idx = jnp.broadcast_to(
        jnp.clip(back, 0, w), bits.shape[:-1] + back.shape[-1:]
    )
    keep = jnp.take_along_axis(bits, back_idx, axis=-1)
  o = core.blocked_attention(
      qs,
      with_previous(ks, 0),
      with_previous(vs, 0),
      allowed,
      rel_k=rel_k,
      rel_v=rel_v,
      logit_scale=logit_scale,
      dropout_rate=dropout_rate,
      dropout_keep=keep,
      dtype=dtype,
  )
  o = o * jnp.any(allowed, axis=-1, keepdims=True).astype(o.dtype)
  o = permute(o.reshape(b, h, npad, d), inverse, perm)[:, :, :events]
  if separate:
    o = o.reshape(b, h, n, 2, d)
    o = jnp.where(same[..., None], o[..., 0, :], o[..., 1, :])
  o = o * vh[..., None].astype(o.dtype)
  return jnp.swapaxes(o, 1, 2)


def topk_routing_attention(
    q: Array,
    k: Array,
    v: Array,
    q_scores: Array,
    k_scores: Array,
    mask: Optional[Array],
    *,
    window: int,
    causal: bool,
    rel: Optional[tuple[Array, Array]] = None,
    max_relative_position: int = 0,
    logit_scale: float = 1.0,
    dropout_rate: float = 0.0,
    dropout_rng: Optional[Array] = None,
    dtype: Any = jnp.float32,
) -> tuple[Array, Array]:
  """The paper's balanced routing: per-centroid top-w queries and keys.

  For every centroid the top-w positions by query score and (separately,
  unless `k_scores is q_scores`) by key score over the whole sequence are
  picked and sorted by position; the picked queries attend to the picked
  keys (causal: keys at or before the query's position); outputs are
  averaged over the clusters that picked a token with +0.01 smoothing, and
  unpicked tokens get 0. A picked query with no legal key (every picked key
  after it) also gets 0 from that cluster.

  Args:
    q, k, v: [batch, length, heads, head_dim] (q, k normalised).
    q_scores, k_scores: [batch, heads, length, clusters] centroid scores.
    mask: optional [batch, length] bool, False at padding.
    window: w, tokens per cluster (w <= length).
    causal: mask keys after the query by original position.
    rel: optional Shaw tables (key, value) [2R+1, head_dim] indexed by the
      slot difference j − i inside the cluster (the reference's
      cluster-relative positions), clipped to ±max_relative_position.

  Returns:
    out [batch, length, heads, head_dim] and the number of clusters that
    picked each token, [batch, heads, length].
  """
  b, n, h, d = q.shape
  valid = jnp.ones((b, n), bool) if mask is None else mask.astype(bool)
  vh = valid[:, None, :]  # [b, 1, n]

  def members(s):
    s = jnp.where(vh[..., None], s, core.MASK_VALUE)  # padding picked last
    _, idx = jax.lax.top_k(jnp.swapaxes(s, 2, 3), window)  # [b, h, k, w]
    return jnp.sort(idx, axis=-1).astype(jnp.int32)

  qi = members(q_scores)
  ki = qi if k_scores is q_scores else members(k_scores)
  num_clusters = qi.shape[2]
  flat = lambda i: i.reshape(b, h, num_clusters * window)
  gather = lambda a, i: take_along_length(
      jnp.swapaxes(a, 1, 2), flat(i)
  ).reshape(b, h, num_clusters, window, d)
  qg, kg, vg = gather(q, qi), gather(k, ki), gather(v, ki)
  key_valid = jnp.take_along_axis(
      jnp.broadcast_to(vh, (b, h, n)), flat(ki), axis=-1
  ).reshape(b, h, num_clusters, 1, window)
  allowed = key_valid
  if causal:
    allowed = allowed & (ki[..., None, :] <= qi[..., :, None])
  rel_k = rel_v = None
  if rel is not None:
    slots = jnp.arange(window)
    offsets = core.relative_index(
        slots[None, :] - slots[:, None], max_relative_position
    )
    rel_k, rel_v = rel[0][offsets], rel[1][offsets]
  o = core.blocked_attention(
      qg,
      kg,
      vg,
      allowed,
      rel_k=rel_k,
      rel_v=rel_v,
      logit_scale=logit_scale,
      dropout_rate=dropout_rate,
      dropout_rng=dropout_rng,
      dtype=dtype,
  )
  o = o * jnp.any(allowed, axis=-1, keepdims=True).astype(o.dtype)
  rows = (jnp.arange(b)[:, None, None], jnp.arange(h)[None, :, None])
  out = (
      jnp.zeros((b, h, n, d), jnp.float32)
      .at[rows + (flat(qi),)]
      .add(o.reshape(b, h, num_clusters * window, d).astype(jnp.float32))
  )
  count = jnp.zeros((b, h, n), jnp.float32).at[rows + (flat(qi),)].add(1.0)
  out = out / (count + 0.01)[..., None] * vh[..., None]
  return jnp.swapaxes(out, 1, 2).astype(dtype), count


def fill_rings(
    k: Array,
    v: Array,
    key_clusters: Array,
    query_clusters: Optional[Array],
    *,
    num_clusters: int,
    size: int,
) -> dict[str, Array]:
  """The causal-routing decode rings after a whole prompt, in one pass.

  Token-by-token decoding appends every membership of a token to its
  cluster's ring at slot (member index mod size). This computes the same
  final state directly: per cluster, the last `size` members of the prompt.

  Args:
    k, v: [batch, length, heads, head_dim] keys (as attended) and values.
    key_clusters: [batch, heads, length] int32.
    query_clusters: [batch, heads, length] or None (queries use the key's
      cluster).
    num_clusters: k.
    size: ring slots per cluster.

  Returns:
    dict of key, value [b, h, k, size, d]; member, is_key [b, h, k, size];
    count [b, h, k]: the cache layout of `RoutingAttention`.
  """
  b, n, h, d = k.shape
  kh, vh = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [b, h, n, d]
  key_cluster = key_clusters.astype(jnp.int32)
  if query_clusters is None:
    cluster, is_key, token = (
        key_cluster,
        jnp.ones((b, h, n), bool),
        jnp.arange(n),
    )
  else:
    query_cluster = query_clusters.astype(jnp.int32)
    cluster = jnp.stack(
        [
            key_cluster,
            jnp.where(
                query_cluster == key_cluster, num_clusters, query_cluster
            ),
        ],
        -1,
    ).reshape(b, h, 2 * n)
    is_key = jnp.broadcast_to(
        jnp.tile(jnp.array([True, False]), n), cluster.shape
    )
    token = jnp.repeat(jnp.arange(n), 2)
  events = cluster.shape[-1]
  onehot = jax.nn.one_hot(cluster, num_clusters + 1, dtype=jnp.int32)
  # Member index of every event: members of its cluster before it.
  member = jnp.sum((jnp.cumsum(onehot, axis=2) - onehot) * onehot, -1)
  count = jnp.sum(onehot, axis=2)[..., :num_clusters]  # [b, h, k]
  total = jnp.take_along_axis(
      jnp.pad(count, ((0, 0), (0, 0), (0, 1))), cluster, axis=2
  )
  keep = (cluster < num_clusters) & (member >= total - size)
  # Dropped events go to an out-of-range cluster; mode="drop" skips them.
  target = jnp.where(keep, cluster, num_clusters)
  slot = member % size
  bi = jnp.arange(b)[:, None, None]
  hi = jnp.arange(h)[None, :, None]
  at = (bi, hi, target, slot)
  tok = jnp.broadcast_to(token, (b, h, events))
  # Query-only memberships hold no key: zeros, as decoding writes them.
  gather = lambda a: jnp.take_along_axis(a, tok[..., None], axis=2) * (
      is_key[..., None].astype(a.dtype)
  )
  ring = lambda shape, dtype, fill: jnp.full(shape, fill, dtype)
  out = {
      "key": (
          ring((b, h, num_clusters, size, d), k.dtype, 0)
          .at[at]
          .set(gather(kh), mode="drop")
      ),
      "value": (
          ring((b, h, num_clusters, size, d), v.dtype, 0)
          .at[at]
          .set(gather(vh), mode="drop")
      ),
      "member": (
          ring((b, h, num_clusters, size), jnp.int32, -1)
          .at[at]
          .set(member, mode="drop")
      ),
      "is_key": (
          ring((b, h, num_clusters, size), jnp.bool_, False)
          .at[at]
          .set(is_key, mode="drop")
      ),
      "count": count,
  }
  return out
