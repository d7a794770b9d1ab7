# Copyright 2026 The routing-jax Authors.
# SPDX-License-Identifier: Apache-2.0
"""Online k-means, pure functions: scores, statistics and the EMA update.

The `KMeans` module (kmeans.py) holds the state; everything it computes is
here, as functions of arrays, so that a train step can also gather a batch's
statistics (`statistics`) over several microbatches (`merge_statistics`) and
apply them once (`apply_statistics`).

The update follows the paper's code: counts and sums are EMA'd with decay
λ, the counts get Laplace smoothing ε, and centroids = sums / counts, with
no zero-debiasing and no renormalisation. Statistics are sums over the
whole batch, so under `jax.jit` with a sharded batch they are global; when
the train step maps the model over data replicas (grad_accum.py),
`cross_replica` makes them sum over the replicas too. What we add to the
paper (a pseudo-count prior, data-initialised centroids, dead-cluster
revival) is described in docs/causal_routing.md.
"""

import contextlib
import contextvars
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from routing_jax.common_types import Array

LN_EPSILON = 1e-6


# The vmapped axis name whose replicas share one batch, while tracing a
# per-replica train step; None otherwise.
_REPLICA_AXIS = contextvars.ContextVar("kmeans_replica_axis", default=None)


@contextlib.contextmanager
def cross_replica(axis_name: str):
  """While tracing inside, batch statistics sum over `axis_name` too."""
  token = _REPLICA_AXIS.set(axis_name)
  try:
    yield
  finally:
    _REPLICA_AXIS.reset(token)


def _replica_sum(x: Array) -> Array:
  axis = _REPLICA_AXIS.get()
  return x if axis is None else jax.lax.psum(x, axis)


def top_candidates(values: Array, rows: Array, num: int) -> tuple[Array, Array]:
  """The `num` largest values per head and their rows, over all replicas.

  values [h, m], rows [h, m, d] -> ([h, num], [h, num, d]), largest first
  (ties: lower index, replicas in order), cycled when fewer than `num`
  exist. Candidates of several batches merge with `merge_candidates`.
  """
  take = min(num, values.shape[1])
  top, idx = jax.lax.top_k(values, take)
  picked = jnp.take_along_axis(rows, idx[..., None], axis=1)
  axis = _REPLICA_AXIS.get()
  if axis is not None:
    # The global top `num` lie among every replica's own top `num`.
    top = jax.lax.all_gather(top, axis, axis=1, tiled=True)
    picked = jax.lax.all_gather(picked, axis, axis=1, tiled=True)
    top, picked = merge_candidates(
        top[:, :0], picked[:, :0], top, picked, min(num, top.shape[1])
    )
    take = top.shape[1]
  reps = -(-num // take)
  return (
      jnp.tile(top, (1, reps))[:, :num],
      jnp.tile(picked, (1, reps, 1))[:, :num],
  )


def merge_candidates(
    values_a: Array, rows_a: Array, values_b: Array, rows_b: Array, num: int
) -> tuple[Array, Array]:
  """The `num` largest of two candidate sets (a's first on ties)."""
  values = jnp.concatenate([values_a, values_b], axis=1)
  rows = jnp.concatenate([rows_a, rows_b], axis=1)
  top, idx = jax.lax.top_k(values, num)
  return top, jnp.take_along_axis(rows, idx[..., None], axis=1)


def normalize(x: Array, epsilon: float = LN_EPSILON) -> Array:
  """Parameter-free LayerNorm over the last axis, in float32.

  The result has zero mean and norm ≈ √d: a sphere of radius √d, as in the
  reference (not the unit sphere).
  """
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + epsilon)


def init_centroids(
    key: Array, num_heads: int, num_clusters: int, head_dim: int
) -> Array:
  """Standard normal draws, normalised like the routing vectors."""
  return normalize(
      jax.random.normal(key, (num_heads, num_clusters, head_dim), jnp.float32)
  )


def scores(x: Array, centroids: Array) -> Array:
  """Inner products x·μ_c (maximum inner product, as the reference).

  Args:
    x: [batch, length, heads, head_dim] routing vectors.
    centroids: [heads, clusters, head_dim].

  Returns:
    [batch, heads, length, clusters] float32 scores.
  """
  return jnp.einsum(
      "bnhd,hkd->bhnk",
      x.astype(jnp.float32),
      centroids.astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
  )


def assign(x: Array, centroids: Array) -> Array:
  """Hard assignment argmax_c x·μ_c: [batch, heads, length] int32."""
  return jnp.argmax(scores(x, centroids), axis=-1).astype(jnp.int32)


class EMAState(NamedTuple):
  centroids: Array  # [heads, clusters, head_dim]
  ema_count: Array  # [heads, clusters]
  ema_sums: Array  # [heads, clusters, head_dim]


def batch_statistics(
    x: Array,
    assignments: Array,
    num_clusters: int,
    mask: Optional[Array] = None,
) -> tuple[Array, Array]:
  """Per-cluster counts and vector sums over batch and length.

  Args:
    x: [batch, length, heads, head_dim] routing vectors (gradients stopped).
    assignments: [batch, heads, length] cluster ids.
    num_clusters: k.
    mask: optional [batch, length] bool, False for padding (not counted).

  Returns:
    counts [heads, clusters] and sums [heads, clusters, head_dim], float32.
  """
  onehot = jax.nn.one_hot(assignments, num_clusters, dtype=jnp.float32)
  if mask is not None:
    onehot = onehot * mask[:, None, :, None].astype(jnp.float32)
  counts = jnp.sum(onehot, axis=(0, 2))
  sums = jnp.einsum(
      "bhnk,bnhd->hkd",
      onehot,
      jax.lax.stop_gradient(x).astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
  )
  return _replica_sum(counts), _replica_sum(sums)


def ema_update(
    state: EMAState,
    counts: Array,
    sums: Array,
    decay: float,
    epsilon: float = 1e-5,
) -> EMAState:
  """One EMA step of the reference's online k-means (no debias, no renorm).

  ema_count ← λ·ema_count + (1−λ)·count,  ema_sums ← λ·ema_sums + (1−λ)·sum,
  smoothed_c = (ema_count_c + ε) / (N + k·ε) · N with N = Σ_c ema_count_c,
  centroids = ema_sums / smoothed.
  """
  ema_count = decay * state.ema_count + (1.0 - decay) * counts
  ema_sums = decay * state.ema_sums + (1.0 - decay) * sums
  k = ema_count.shape[-1]
  total = jnp.sum(ema_count, axis=-1, keepdims=True)
  smoothed = (ema_count + epsilon) / (total + k * epsilon) * total
  centroids = ema_sums / smoothed[..., None]
  return EMAState(centroids, ema_count, ema_sums)


def commitment_loss(
    x: Array, centroids: Array, assignments: Array, mask: Optional[Array] = None
) -> Array:
  """mean ‖x − sg(μ_assigned)‖² over all valid elements (b·h·n·d).

  Gradients reach x only: the centroids are EMA state.
  """
  mu = jax.lax.stop_gradient(centroids.astype(jnp.float32))
  # [heads, clusters, d] gathered by [batch, heads, length] -> [b, n, h, d]
  picked = jax.vmap(lambda m, a: m[a], in_axes=(0, 1), out_axes=2)(
      mu, assignments
  )
  sq = jnp.square(x.astype(jnp.float32) - picked)
  if mask is None:
    return _replica_sum(jnp.sum(sq)) / _replica_sum(jnp.float32(sq.size))
  w = mask[:, :, None, None].astype(jnp.float32)
  denom = jnp.maximum(_replica_sum(jnp.sum(w)) * sq.shape[2] * sq.shape[3], 1.0)
  return _replica_sum(jnp.sum(sq * w)) / denom


def cluster_health(counts: Array) -> dict[str, Array]:
  """Cluster-health statistics from per-head counts [heads, clusters].

  Returns (each averaged over heads):
    entropy: assignment entropy in nats (log k when perfectly balanced).
    empty_fraction: fraction of clusters that received no token.
    max_share: share of tokens taken by the largest cluster.
  """
  total = jnp.maximum(jnp.sum(counts, axis=-1, keepdims=True), 1.0)
  p = counts / total
  entropy = -jnp.sum(
      jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1
  )
  return {
      "entropy": jnp.mean(entropy),
      "empty_fraction": jnp.mean((counts == 0).astype(jnp.float32)),
      "max_share": jnp.mean(jnp.max(p, axis=-1)),
  }


def sample_vectors(
    x: Array, mask: Optional[Array], num: int, seed: int = 0
) -> Array:
  """`num` distinct valid routing vectors per head, picked at random.

  Deterministic (a fixed key): the k-means state needs no PRNG stream.

  Args:
    x: [batch, length, heads, head_dim].
    mask: optional [batch, length] bool.
    num: how many vectors per head (tokens are reused when fewer are valid).

  Returns:
    [heads, num, head_dim] float32.
  """
  return seed_candidates(x, mask, num, seed)[1]


def seed_candidates(
    x: Array, mask: Optional[Array], num: int, seed: int = 0
) -> tuple[Array, Array]:
  """`sample_vectors` with the random keys they won by: (scores, rows)."""
  b, n, h, d = x.shape
  flat = jnp.swapaxes(x.reshape(b * n, h, d), 0, 1).astype(jnp.float32)
  axis = _REPLICA_AXIS.get()
  if axis is None:
    noise = jax.random.uniform(jax.random.key(seed), (h, b * n))
  else:
    # This replica's slice of the noise over the whole batch, so the draw
    # does not depend on how many replicas share it.
    total = jax.lax.axis_size(axis) * b * n
    noise = jax.lax.dynamic_slice_in_dim(
        jax.random.uniform(jax.random.key(seed), (h, total)),
        jax.lax.axis_index(axis) * b * n,
        b * n,
        axis=1,
    )
  if mask is not None:
    noise = jnp.where(mask.reshape(1, b * n), noise, -1.0)
  return top_candidates(noise, flat, num)


def worst_fit_vectors(
    x: Array, scores_: Array, mask: Optional[Array], num: int
) -> Array:
  """The `num` valid vectors per head farthest from every centroid.

  Far-away vectors are the k-means++ choice for re-seeding a dead cluster:
  they are where the current centroids serve the data worst.

  Args:
    x: [batch, length, heads, head_dim].
    scores_: [batch, heads, length, clusters] scores of x.
    mask: optional [batch, length] bool.

  Returns:
    [heads, num, head_dim] float32.
  """
  return worst_candidates(x, scores_, mask, num)[1]


def worst_candidates(
    x: Array, scores_: Array, mask: Optional[Array], num: int
) -> tuple[Array, Array]:
  """`worst_fit_vectors` with their negated best scores: (scores, rows)."""
  b, n, h, d = x.shape
  best = jnp.max(scores_, axis=-1)  # [b, h, n]
  if mask is not None:
    best = jnp.where(mask[:, None, :], best, jnp.inf)
  best = jnp.swapaxes(best, 0, 1).reshape(h, b * n)
  flat = jnp.swapaxes(x.reshape(b * n, h, d), 0, 1).astype(jnp.float32)
  return top_candidates(-best, flat, num)


def revive_dead(
    state: EMAState, candidates: Array, threshold: float, epsilon: float = 1e-5
) -> tuple[EMAState, Array]:
  """Re-seeds clusters whose EMA count fell below threshold × the mean.

  The i-th dead cluster of a head takes candidate i as its centroid, with an
  EMA count of 2·threshold × the mean count: a real cluster with a grace
  period (about ln 2 / (1 − λ) updates) to attract members before it could
  be revived again.

  Args:
    state: the EMA state after this step's update.
    candidates: [heads, clusters, head_dim] replacement centroids.
    threshold: fraction of the mean count below which a cluster is dead.
    epsilon: the Laplace smoothing of `ema_update`.

  Returns:
    (new state, dead [heads, clusters] bool).
  """
  mean = jnp.mean(state.ema_count, axis=-1, keepdims=True)
  dead = state.ema_count < threshold * mean
  rank = jnp.clip(jnp.cumsum(dead, axis=-1) - 1, 0, None)
  seed = jnp.take_along_axis(candidates, rank[..., None], axis=1)
  count = jnp.broadcast_to(2.0 * threshold * mean, dead.shape)
  new_count = jnp.where(dead, count, state.ema_count)
  new_sums = jnp.where(dead[..., None], seed * count[..., None], state.ema_sums)
  # The Laplace-smoothed centroid of the revived cluster is (almost) seed.
  k = new_count.shape[-1]
  total = jnp.sum(new_count, axis=-1, keepdims=True)
  smoothed = (new_count + epsilon) / (total + k * epsilon) * total
  centroids = jnp.where(
      dead[..., None], new_sums / smoothed[..., None], state.centroids
  )
  return EMAState(centroids, new_count, new_sums), dead


class Settings(NamedTuple):
  """The hyperparameters of one k-means state's update."""

  decay: float = 0.999
  epsilon: float = 1e-5
  prior_count: float = 0.0
  data_init: bool = False
  revive_threshold: float = 0.0


def statistics(
    xs: Sequence[Array],
    scores_: Array,
    mask: Optional[Array],
    num_clusters: int,
    assignments: Sequence[Array],
) -> dict[str, Array]:
  """What one batch contributes to the update.

  Args:
    xs: the routing vector sets the centroids learn from, in update order,
      each [batch, length, heads, head_dim].
    scores_: [batch, heads, length, clusters] scores of xs[0] (the old
      centroids), for the revival candidates.
    mask: optional [batch, length] bool.
    num_clusters: k.
    assignments: each set's [batch, heads, length] clusters.

  Returns:
    {"counts" [sets, h, k], "sums" [sets, h, k, d], "seed_score" [h, k],
    "seed_rows" [h, k, d], "worst_score" [h, k], "worst_rows" [h, k, d]}.
  """
  counts, sums = zip(*(
      batch_statistics(x, a, num_clusters, mask)
      for x, a in zip(xs, assignments)
  ))
  seed_score, seed_rows = seed_candidates(xs[0], mask, num_clusters)
  worst_score, worst_rows = worst_candidates(xs[0], scores_, mask, num_clusters)
  return {
      "counts": jnp.stack(counts),
      "sums": jnp.stack(sums),
      "seed_score": seed_score,
      "seed_rows": seed_rows,
      "worst_score": worst_score,
      "worst_rows": worst_rows,
  }


def merge_statistics(
    a: dict[str, Array], b: dict[str, Array]
) -> dict[str, Array]:
  """The statistics of two batches together (a's candidates win ties).

  Leading axes (e.g. scanned layers) are batched over.
  """

  def merge(a, b):
    k = a["seed_score"].shape[-1]
    out = {"counts": a["counts"] + b["counts"], "sums": a["sums"] + b["sums"]}
    for name in ("seed", "worst"):
      out[f"{name}_score"], out[f"{name}_rows"] = merge_candidates(
          a[f"{name}_score"],
          a[f"{name}_rows"],
          b[f"{name}_score"],
          b[f"{name}_rows"],
          k,
      )
    return out

  for _ in range(a["seed_score"].ndim - 2):
    merge = jax.vmap(merge)
  return merge(a, b)


def apply_statistics(
    state: dict[str, Array], stats: dict[str, Array], settings: Settings
) -> dict[str, Array]:
  """One k-means update of `state` from a batch's statistics.

  state holds centroids [h, k, d], ema_count [h, k], ema_sums [h, k, d] and
  num_updates [h] (leading axes, e.g. scanned layers, are batched over).
  In order: on a head's first update with data_init, the random centroids
  are replaced by the seed candidates; one EMA step per statistics set; with
  revive_threshold, dead clusters are re-seeded from the worst-served
  candidates.
  """

  def update(state, stats):
    ema = EMAState(state["centroids"], state["ema_count"], state["ema_sums"])
    if settings.data_init:
      seeds = stats["seed_rows"]
      prior = settings.prior_count if settings.prior_count > 0 else 1.0
      fresh = EMAState(
          seeds,
          jnp.full_like(ema.ema_count, settings.prior_count),
          seeds * prior,
      )
      first = state["num_updates"] == 0  # [h]
      ema = jax.tree.map(
          lambda old, new: jnp.where(
              first.reshape((-1,) + (1,) * (old.ndim - 1)), new, old
          ),
          ema,
          fresh,
      )
    for i in range(stats["counts"].shape[0]):
      ema = ema_update(
          ema,
          stats["counts"][i],
          stats["sums"][i],
          settings.decay,
          settings.epsilon,
      )
    if settings.revive_threshold > 0:
      ema, _ = revive_dead(
          ema, stats["worst_rows"], settings.revive_threshold, settings.epsilon
      )
    return {
        "centroids": ema.centroids,
        "ema_count": ema.ema_count,
        "ema_sums": ema.ema_sums,
        "num_updates": state["num_updates"] + 1,
    }

  for _ in range(state["centroids"].ndim - 3):
    update = jax.vmap(update)
  return update(state, stats)


def map_states(fn, tree: Any, *others: Any) -> Any:
  """Applies fn(state, *others' matching subtrees) to every k-means state or
  statistics dict in a nested dict (the dicts holding "centroids" or
  "counts")."""
  if isinstance(tree, dict) and ("centroids" in tree or "counts" in tree):
    return fn(tree, *others)
  if isinstance(tree, dict):
    return {
        k: map_states(fn, v, *(o[k] for o in others)) for k, v in tree.items()
    }
  return tree
